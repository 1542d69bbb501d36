// The queues view: the job queues the user may read with their jobs by
// state; a queue's rates, workers and settings, its jobs (paged, by
// state) and a job's details; and what the user may do, each after a
// confirmation: cancel a job (read and write on the queue's name), and as
// root redrive and purge dead jobs, pause and resume the queue.

import * as api from '../api.js';
import { h, set, icon, badge, message, errorText, fmtNum, fmtDec, fmtSeconds, fmtTime, confirm, toast } from '../dom.js';
import { mapLimit } from './leases.js';
import { valueView } from './keys.js';

const POLL_MS = 5000;
const MAX_QUEUES = 100; // queues whose counts are read
const PAGE = 50; // jobs per page
// The permissions of queue Q are those of the key synod/queues/Q.
const NAMES = 'synod/queues/';
const COUNTS = [
  ['available', 'Available'],
  ['scheduled', 'Scheduled'],
  ['waiting', 'Waiting'],
  ['running', 'Running'],
  ['completed', 'Completed'],
  ['dead', 'Dead'],
  ['cancelled', 'Cancelled'],
];
const STATES = [
  ['', 'All'],
  ['PENDING', 'Pending'],
  ['RUNNING', 'Running'],
  ['COMPLETED', 'Completed'],
  ['DEAD', 'Dead'],
  ['CANCELLED', 'Cancelled'],
];
const STATE_KIND = { PENDING: '', RUNNING: 'accent', COMPLETED: 'good', DEAD: 'bad', CANCELLED: 'muted' };

// The gateway sends 64-bit integers as strings and leaves out zeros.
function num(v) {
  return Number(v || 0);
}

function queueHref(name, state, job) {
  const q = [];
  if (state) q.push(`state=${state}`);
  if (job) q.push(`job=${job}`);
  return `#/queues/${encodeURIComponent(name)}` + (q.length ? `?${q.join('&')}` : '');
}

function stateBadge(state) {
  return badge((state || 'unknown').toLowerCase(), STATE_KIND[state] ?? 'muted');
}

// fmtMs is a duration in milliseconds for people.
function fmtMs(ms) {
  ms = num(ms);
  if (ms < 1000) return `${fmtNum(Math.round(ms))} ms`;
  if (ms < 10000) return `${fmtDec(ms / 1000)}s`;
  if (ms >= 2 * 86400000) return `${fmtDec(ms / 86400000)} days`;
  return fmtSeconds(ms / 1000);
}

// when is a time (Unix milliseconds) with how long ago or from now.
function when(ms) {
  ms = num(ms);
  if (!ms) return h('span', { class: 'muted' }, '–');
  const d = new Date(ms);
  const delta = ms - Date.now();
  const rel = Math.abs(delta) < 1000 ? 'now' : delta > 0 ? `in ${fmtMs(delta)}` : `${fmtMs(-delta)} ago`;
  const day = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  return h('span', { title: d.toISOString() }, `${day} ${fmtTime(d)}`, h('span', { class: 'muted small' }, ` (${rel})`));
}

function retention(ms) {
  ms = num(ms);
  return ms < 0 ? 'not kept' : fmtMs(ms);
}

export function mount(el, ctx) {
  const perms = ctx.perms;
  let name = '';
  try {
    name = decodeURIComponent(ctx.path);
  } catch {
    name = ctx.path;
  }
  let state = STATES.some(([s]) => s === ctx.query.get('state')) ? ctx.query.get('state') : '';
  const ctl = new AbortController();
  let stopped = false;
  let timer = null;

  // What the user may do to the queue shown (the server checks anyway).
  const nameKey = api.utf8(NAMES + name);
  const mayWork = perms.canRead(nameKey) && perms.canWrite(nameKey);
  const mayAdmin = perms.root;

  const countEl = h('span', { class: 'muted small' });
  const note = h('div');
  const listBody = h('tbody');
  const refreshBtn = h('button', { class: 'btn ghost', type: 'button', title: 'Reload the queues and jobs', 'data-action': 'refresh', onclick: () => refresh() }, icon('refresh'), 'Refresh');
  const goto = h('input', { class: 'goto', placeholder: 'Open a queue by name…', 'aria-label': 'Open a queue by name', spellcheck: 'false', value: name });
  goto.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') location.hash = goto.value.trim() ? queueHref(goto.value.trim()) : '#/queues';
  });
  el.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Queues'), countEl), h('div', { class: 'actions' }, goto, refreshBtn)),
    note,
    h(
      'section',
      { class: 'card' },
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'table', 'data-test': 'queues' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Queue'), COUNTS.map(([, label]) => h('th', {}, label)), h('th', {}, 'Oldest available'), h('th', {}, 'Workers'))),
          listBody,
        ),
      ),
    ),
  );

  // The list of queues, with their counts.
  function queueRow(q, st) {
    if (st.error) {
      return h('tr', { 'data-queue': q }, h('td', { class: 'strong' }, q), h('td', { colspan: COUNTS.length + 2 }, message('error', errorText(st.error))));
    }
    const paused = !!(st.config || {}).paused;
    return h(
      'tr',
      { class: `row-key ${q === name ? 'selected' : ''}`, 'data-queue': q, tabindex: 0, onclick: () => (location.hash = queueHref(q)), onkeydown: (e) => e.key === 'Enter' && (location.hash = queueHref(q)) },
      h('td', { class: 'strong' }, h('a', { href: queueHref(q), class: 'name' }, icon('queue', 'icon muted-icon'), q), paused ? badge('paused', 'bad') : null),
      COUNTS.map(([k]) => h('td', { class: `num ${k === 'dead' && num(st[k]) > 0 ? 'hot' : ''}`, 'data-count': k }, fmtNum(num(st[k])))),
      h('td', { class: 'num' }, num(st.available) ? fmtMs(st.oldest_available_ms) : '–'),
      h('td', { class: 'num' }, num(st.workers) ? `${fmtNum(num(st.workers))} (capacity ${fmtNum(num(st.capacity))})` : h('span', { class: 'muted' }, 'none')),
    );
  }

  async function loadList() {
    let names;
    try {
      names = (await api.get('api/queues', { signal: ctl.signal })).queues || [];
    } catch (e) {
      if (!stopped) note.replaceChildren(message('error', `Cannot list the queues: ${errorText(e)}`));
      return;
    }
    const shown = names.slice(0, MAX_QUEUES);
    const stats = await mapLimit(shown, 4, (q) => api.call('/v3/synod/queue/stats', { queue: q }, { signal: ctl.signal }));
    if (stopped) return;
    note.replaceChildren();
    countEl.textContent = `${fmtNum(names.length)} queue${names.length === 1 ? '' : 's'}` + (names.length > MAX_QUEUES ? ` (showing ${MAX_QUEUES})` : '');
    listBody.replaceChildren(...shown.map((q, i) => queueRow(q, stats[i])));
    if (!shown.length) {
      listBody.append(
        h('tr', {}, h('td', { colspan: COUNTS.length + 3, class: 'muted empty' }, perms.authEnabled && !perms.root ? 'No queue you may read.' : 'No queues yet: a queue exists once a job is pushed to it.')),
      );
    }
  }

  async function poll() {
    await Promise.all([loadList(), name ? loadQueue() : null]);
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function refresh() {
    loadList();
    if (name) {
      loadQueue();
      reloadJobs();
      if (selected) showJob(selected);
    }
  }

  if (!name) {
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
      ctl.abort();
    };
  }

  // The queue shown: its rates, workers and settings, and what root may do.
  const queueActions = h('div', { class: 'actions' });
  const queueBadge = h('span');
  const queueMeta = h('dl', { class: 'meta queue-meta' });
  const queueNote = h('div');
  el.append(
    h(
      'section',
      { class: 'card', 'data-test': 'queue', 'data-queue': name },
      h('div', { class: 'card-head' }, h('h2', {}, icon('queue'), ' ', name), queueBadge, h('div', { class: 'actions push' }, queueActions)),
      queueNote,
      h('div', { class: 'card-body' }, queueMeta),
    ),
  );

  let stats = null;

  // maxAttempts is a job's, or the queue's default for a job without one.
  function maxAttempts(j) {
    return num(j.max_attempts) || num(((stats || {}).config || {}).default_max_attempts) || 25;
  }

  function renderQueue(st) {
    const cfg = st.config || {};
    const paused = !!cfg.paused;
    set(queueBadge, paused ? badge('paused', 'bad') : badge('active', 'good'));
    const dead = num(st.dead);
    set(
      queueActions,
      mayAdmin
        ? [
            paused
              ? h('button', { class: 'btn small', type: 'button', 'data-action': 'resume', onclick: () => pause(false) }, icon('play'), 'Resume')
              : h('button', { class: 'btn small', type: 'button', 'data-action': 'pause', onclick: () => pause(true) }, icon('pause'), 'Pause'),
            dead ? h('button', { class: 'btn small', type: 'button', 'data-action': 'redrive-all', onclick: () => redrive(null) }, icon('refresh'), `Redrive ${fmtNum(dead)} dead`) : null,
            dead ? h('button', { class: 'btn small danger', type: 'button', 'data-action': 'purge-all', onclick: () => purge(null) }, icon('trash'), 'Purge dead') : null,
          ]
        : null,
    );
    const rates = [
      `${fmtDec(st.pushed_per_second || 0)} pushed`,
      `${fmtDec(st.completed_per_second || 0)} completed`,
      `${fmtDec(st.failed_per_second || 0)} failed`,
      `${fmtDec(st.dead_per_second || 0)} dead`,
    ].join(' · ');
    const settings = [
      num(cfg.max_running) ? `at most ${fmtNum(num(cfg.max_running))} running` : 'no limit on running jobs',
      `${fmtNum(num(cfg.group_max_running) || 1)} running per group`,
      `${fmtNum(num(cfg.default_max_attempts) || 25)} attempts`,
      `timeout ${fmtMs(num(cfg.default_timeout_ms) || 300000)}`,
    ].join(' · ');
    set(
      queueMeta,
      h('dt', {}, 'Jobs'),
      h('dd', { 'data-test': 'queue-counts' }, COUNTS.map(([k, label]) => h('span', { class: 'count', 'data-count': k }, h('b', {}, fmtNum(num(st[k]))), ` ${label.toLowerCase()}`))),
      h('dt', {}, 'Per second'),
      h('dd', {}, rates, h('span', { class: 'muted small' }, ' (last minute, as this node applied them)')),
      h('dt', {}, 'Pickup time'),
      h('dd', {}, st.pickup_p50_ms || st.pickup_p99_ms ? `p50 ${fmtMs(st.pickup_p50_ms)} · p99 ${fmtMs(st.pickup_p99_ms)}` : h('span', { class: 'muted' }, 'no claim on this node in the last minute')),
      h('dt', {}, 'Oldest available'),
      h('dd', {}, num(st.available) ? `waiting for ${fmtMs(st.oldest_available_ms)}` : h('span', { class: 'muted' }, 'none available')),
      h('dt', {}, 'Workers'),
      h('dd', {}, num(st.workers) ? `${fmtNum(num(st.workers))}, capacity ${fmtNum(num(st.capacity))}` : h('span', { class: 'muted' }, 'none connected')),
      h('dt', {}, 'Settings'),
      h('dd', {}, settings),
      h('dt', {}, 'Retention'),
      h('dd', {}, `completed and cancelled ${retention(num(cfg.completed_retention_ms) || 86400000)} · dead ${retention(num(cfg.dead_retention_ms) || 2592000000)}`),
      h('dt', {}, 'Schedules'),
      h('dd', {}, num(st.schedules) ? fmtNum(num(st.schedules)) : h('span', { class: 'muted' }, 'none')),
    );
  }

  async function loadQueue() {
    try {
      const st = await api.call('/v3/synod/queue/stats', { queue: name }, { signal: ctl.signal });
      if (stopped) return;
      stats = st;
      queueNote.replaceChildren();
      renderQueue(st);
    } catch (e) {
      if (!stopped) queueNote.replaceChildren(message('error', errorText(e)));
    }
  }

  // The queue's jobs, a page at a time, and the job selected.
  const jobsBody = h('tbody');
  const jobsFoot = h('div', { class: 'list-foot' });
  const detail = h('section', { class: 'card detail', 'data-test': 'job' }, h('div', { class: 'empty-detail' }, icon('queue', 'icon big'), h('p', {}, 'Select a job to see its payload, attempts and errors.')));
  const filters = {};
  for (const [s, label] of STATES) {
    filters[s] = h('button', { type: 'button', class: `seg ${s === state ? 'active' : ''}`, 'data-state': s || 'all', onclick: () => filter(s) }, label);
  }
  el.append(
    h(
      'div',
      { class: 'keys-grid' },
      h(
        'section',
        { class: 'card list' },
        h('div', { class: 'card-head' }, h('h2', {}, 'Jobs'), h('div', { class: 'segmented filter' }, Object.values(filters))),
        h(
          'div',
          { class: 'table-wrap' },
          h('table', { class: 'table', 'data-test': 'jobs' }, h('thead', {}, h('tr', {}, ['Job', 'State', 'Priority', 'Attempts', 'Group', 'Note'].map((c) => h('th', {}, c)))), jobsBody),
        ),
        jobsFoot,
      ),
      detail,
    ),
  );

  let after = '0';
  let listSeq = 0;
  let selected = ctx.query.get('job') || '';

  function jobNote(j) {
    if (j.cancel_requested) return h('span', { class: 'muted' }, 'cancel requested');
    if (j.last_error) return h('span', { class: 'bad-text' }, j.last_error.length > 80 ? j.last_error.slice(0, 80) + '…' : j.last_error);
    if (j.waiting) return h('span', { class: 'muted' }, 'waits for its dependencies');
    if (j.state === 'PENDING' && num(j.run_at_ms) > Date.now()) return h('span', { class: 'muted' }, `runs in ${fmtMs(num(j.run_at_ms) - Date.now())}`);
    if (j.state === 'RUNNING') return h('span', { class: 'muted' }, j.worker ? `on ${j.worker}` : '');
    return '';
  }

  async function more() {
    const seq = listSeq;
    jobsFoot.replaceChildren(h('span', { class: 'muted' }, 'Loading…'));
    let r;
    try {
      r = await api.call('/v3/synod/queue/list', { queue: name, state: state || undefined, after, limit: PAGE }, { signal: ctl.signal });
    } catch (e) {
      if (!stopped && seq === listSeq) jobsFoot.replaceChildren(message('error', errorText(e)));
      return;
    }
    if (stopped || seq !== listSeq) return;
    const jobs = r.jobs || [];
    for (const j of jobs) {
      const row = h(
        'tr',
        { class: `row-key ${j.id === selected ? 'selected' : ''}`, 'data-job': j.id, tabindex: 0, onclick: () => select(j.id, row), onkeydown: (e) => e.key === 'Enter' && select(j.id, row) },
        h('td', { class: 'strong num' }, j.id),
        h('td', {}, stateBadge(j.state)),
        h('td', { class: 'num' }, fmtNum(num(j.priority))),
        h('td', { class: 'num' }, `${fmtNum(num(j.attempt))} / ${fmtNum(maxAttempts(j))}`),
        h('td', { class: 'nowrap' }, j.group ? h('code', {}, j.group) : ''),
        h('td', {}, jobNote(j)),
      );
      jobsBody.append(row);
    }
    if (jobs.length) after = jobs[jobs.length - 1].id;
    if (!jobsBody.children.length) {
      jobsFoot.replaceChildren(h('div', { class: 'muted empty', 'data-test': 'no-jobs' }, state ? `No ${state.toLowerCase()} jobs.` : 'No jobs.'));
    } else if (r.more) {
      jobsFoot.replaceChildren(h('button', { class: 'btn', type: 'button', 'data-action': 'more', onclick: () => more() }, 'Load more'));
    } else {
      jobsFoot.replaceChildren();
    }
  }

  function reloadJobs() {
    listSeq++;
    after = '0';
    jobsBody.replaceChildren();
    more();
  }

  function filter(s) {
    state = s;
    for (const [k, b] of Object.entries(filters)) b.classList.toggle('active', k === s);
    history.replaceState(null, '', queueHref(name, state, selected));
    reloadJobs();
  }

  async function select(id, row) {
    selected = id;
    for (const r of jobsBody.querySelectorAll('tr.selected')) r.classList.remove('selected');
    if (row) row.classList.add('selected');
    history.replaceState(null, '', queueHref(name, state, id));
    await showJob(id);
  }

  function bytesSection(title, testid, b64) {
    const bytes = api.unb64(b64);
    if (!bytes.length) return null;
    return [h('h3', {}, title), h('div', { 'data-test': testid }, valueView(bytes))];
  }

  async function showJob(id) {
    detail.replaceChildren(h('div', { class: 'muted' }, 'Loading…'));
    let j;
    try {
      j = (await api.call('/v3/synod/queue/get', { queue: name, id }, { signal: ctl.signal })).job;
    } catch (e) {
      if (selected === id) detail.replaceChildren(message('error', errorText(e)));
      return;
    }
    if (stopped || selected !== id) return;
    if (!j) {
      detail.replaceChildren(message('info', `Job ${id} does not exist (now).`));
      return;
    }
    const finished = j.state === 'COMPLETED' || j.state === 'DEAD' || j.state === 'CANCELLED';
    const cancellable = (j.state === 'PENDING' || (j.state === 'RUNNING' && !j.cancel_requested)) && mayWork;
    const retry = j.retry || {};
    set(
      detail,
      h(
        'div',
        { class: 'detail-head' },
        h('h2', { class: 'keyname' }, `Job ${j.id}`),
        h(
          'div',
          { class: 'actions' },
          cancellable ? h('button', { class: 'btn small danger', type: 'button', 'data-action': 'cancel-job', onclick: () => cancelJob(j) }, icon('ban'), 'Cancel') : null,
          j.state === 'DEAD' && mayAdmin ? h('button', { class: 'btn small', type: 'button', 'data-action': 'redrive-job', onclick: () => redrive(j.id) }, icon('refresh'), 'Redrive') : null,
          finished && mayAdmin ? h('button', { class: 'btn small danger', type: 'button', 'data-action': 'purge-job', onclick: () => purge(j.id) }, icon('trash'), 'Purge') : null,
        ),
      ),
      j.last_error ? message('error', h('span', { 'data-test': 'job-error' }, j.last_error)) : null,
      h(
        'dl',
        { class: 'meta' },
        h('dt', {}, 'State'),
        h('dd', { 'data-test': 'job-state' }, stateBadge(j.state), j.cancel_requested ? badge('cancel requested', 'muted') : null, j.waiting ? badge('waiting for dependencies', 'muted') : null),
        h('dt', {}, 'Attempts'),
        h('dd', {}, `${fmtNum(num(j.attempt))} of ${fmtNum(maxAttempts(j))}`, h('span', { class: 'muted small' }, ` (${fmtNum(num(j.failures))} failed, ${fmtNum(num(j.lost))} lost to ended leases)`)),
        h('dt', {}, 'Fencing token'),
        h('dd', { 'data-test': 'job-token' }, num(j.token) ? fmtNum(num(j.token)) : h('span', { class: 'muted' }, 'never claimed')),
        j.worker ? [h('dt', {}, 'Worker'), h('dd', {}, h('code', {}, j.worker), j.lease ? [' on lease ', h('a', { href: `#/leases?id=${api.leaseHex(j.lease)}` }, h('code', {}, api.leaseHex(j.lease)))] : null)] : null,
        h('dt', {}, 'Priority'),
        h('dd', {}, fmtNum(num(j.priority))),
        j.group ? [h('dt', {}, 'Group'), h('dd', {}, h('code', {}, j.group))] : null,
        j.idempotency_key ? [h('dt', {}, 'Idempotency key'), h('dd', {}, h('code', {}, j.idempotency_key))] : null,
        (j.depends_on || []).length ? [h('dt', {}, 'Depends on'), h('dd', {}, j.depends_on.map((d) => h('code', { class: 'dep' }, d)))] : null,
        h('dt', {}, 'Created'),
        h('dd', {}, when(j.created_at_ms)),
        j.state === 'PENDING' ? [h('dt', {}, 'Runs at'), h('dd', {}, num(j.run_at_ms) > Date.now() ? when(j.run_at_ms) : 'as soon as a worker is free')] : null,
        num(j.claimed_at_ms) ? [h('dt', {}, 'Claimed'), h('dd', {}, when(j.claimed_at_ms))] : null,
        j.state === 'RUNNING' ? [h('dt', {}, 'Times out'), h('dd', {}, when(j.deadline_ms))] : null,
        num(j.finished_at_ms) ? [h('dt', {}, 'Finished'), h('dd', {}, when(j.finished_at_ms))] : null,
        h('dt', {}, 'Timeout'),
        h('dd', {}, num(j.timeout_ms) ? `${fmtMs(j.timeout_ms)} an attempt` : h('span', { class: 'muted' }, "the queue's default")),
        h('dt', {}, 'Retries'),
        h(
          'dd',
          {},
          j.retry
            ? `back off ${fmtMs(num(retry.initial_backoff_ms) || 1000)}, × ${fmtDec(retry.multiplier || 2)} each time, up to ${fmtMs(num(retry.max_backoff_ms) || 3600000)}`
            : h('span', { class: 'muted' }, "the queue's policy"),
        ),
      ),
      bytesSection('Payload', 'job-payload', j.payload) || [h('h3', {}, 'Payload'), h('p', { class: 'muted' }, 'empty')],
      bytesSection('Progress', 'job-progress', j.progress),
      bytesSection('Result', 'job-result', j.result),
    );
  }

  // after runs once an action succeeded: everything shown is read again.
  function changed(what) {
    toast(what, 'good');
    loadQueue();
    loadList();
    reloadJobs();
    if (selected) showJob(selected);
  }

  async function cancelJob(j) {
    const text =
      j.state === 'RUNNING'
        ? `Ask the worker running job ${j.id} of “${name}” to stop? The job ends cancelled once the worker answers or its lease ends.`
        : `Cancel job ${j.id} of “${name}”? It will not run.`;
    if (!(await confirm('Cancel job', text, 'Cancel job', 'danger'))) return;
    try {
      const r = await api.call('/v3/synod/queue/cancel', { queue: name, id: j.id });
      changed(r.state === 'RUNNING' ? `Asked the worker of job ${j.id} to stop` : `Cancelled job ${j.id}`);
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  // redrive makes dead jobs pending again: one (id), or all of them.
  async function redrive(id) {
    const dead = stats ? num(stats.dead) : 0;
    const text = id ? `Make dead job ${id} of “${name}” pending again, with fresh attempts?` : `Make the ${fmtNum(dead)} dead jobs of “${name}” pending again, with fresh attempts (1,000 a second at most)?`;
    if (!(await confirm('Redrive', text, 'Redrive'))) return;
    try {
      const r = await api.call('/v3/synod/queue/redrive', { queue: name, ids: id ? [id] : [] });
      changed(`Redrove ${fmtNum(num(r.redriven))} job${num(r.redriven) === 1 ? '' : 's'}`);
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  // purge deletes finished jobs: one (id), or every dead one.
  async function purge(id) {
    const text = id ? `Delete job ${id} of “${name}”? This cannot be undone.` : `Delete the dead jobs of “${name}”? This cannot be undone.`;
    if (!(await confirm('Purge', text, 'Purge', 'danger'))) return;
    try {
      const r = await api.call('/v3/synod/queue/purge', { queue: name, ids: id ? [id] : [] });
      if (id) {
        selected = '';
        history.replaceState(null, '', queueHref(name, state));
      }
      changed(`Purged ${fmtNum(num(r.purged))} job${num(r.purged) === 1 ? '' : 's'}`);
      if (id) detail.replaceChildren(message('info', `Purged job ${id}.`));
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  async function pause(on) {
    const ok = on
      ? await confirm('Pause queue', `Pause “${name}”? Workers get no new job from it until it is resumed; running jobs go on.`, 'Pause')
      : await confirm('Resume queue', `Resume “${name}”? Workers get its jobs again.`, 'Resume');
    if (!ok) return;
    try {
      await api.call('/v3/synod/queue/configure', { queue: name, paused: on });
      changed(on ? `Paused ${name}` : `Resumed ${name}`);
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  reloadJobs();
  if (selected) showJob(selected);
  poll();

  return () => {
    stopped = true;
    clearTimeout(timer);
    ctl.abort();
  };
}
