// The rate limits view: every limit with its algorithm, parameters and
// mode, and its owner's counts of decisions; and a peek at a key of a
// limit (Take with peek: what the key could take now, taking nothing).

import * as api from '../api.js';
import { h, set, icon, badge, message, errorText, fmtNum, fmtDec, fmtSeconds } from '../dom.js';
import { mapLimit } from './leases.js';

const POLL_MS = 5000;
const MAX_STATS = 100; // limits whose counts are read

// The gateway sends 64-bit integers as strings and leaves out zeros (and
// so the first value of an enum: GCRA, STRICT).
function num(v) {
  return Number(v || 0);
}

function algorithm(l) {
  return l.algorithm || 'GCRA';
}

function mode(l) {
  return l.mode || 'STRICT';
}

// per names a period: "second", "5 minutes", "1,500 ms".
function per(ms) {
  for (const [unit, label] of [
    [86400000, 'day'],
    [3600000, 'hour'],
    [60000, 'minute'],
    [1000, 'second'],
  ]) {
    if (ms >= unit && ms % unit === 0) {
      const n = ms / unit;
      return n === 1 ? label : `${fmtNum(n)} ${label}s`;
    }
  }
  return `${fmtNum(ms)} ms`;
}

function fmtMs(ms) {
  ms = num(ms);
  if (ms < 1000) return `${fmtNum(ms)} ms`;
  if (ms < 10000) return `${fmtDec(ms / 1000)}s`;
  return fmtSeconds(ms / 1000);
}

// params describes a limit's parameters as its algorithm reads them.
export function params(l) {
  const limit = fmtNum(num(l.limit));
  switch (algorithm(l)) {
    case 'GCRA':
      return `${limit} per ${per(num(l.period_ms))}, burst ${fmtNum(num(l.burst) || num(l.limit))}`;
    case 'SLIDING_WINDOW':
      return `${limit} per ${per(num(l.period_ms))}, sliding window`;
    case 'FIXED_WINDOW':
      return `${limit} per ${per(num(l.period_ms))}, fixed window`;
    case 'CALENDAR_WINDOW':
      return `${limit} per calendar ${(l.calendar_unit || 'UNIT_NONE').toLowerCase()} (${l.time_zone || 'UTC'})`;
    case 'CONCURRENCY':
      return `${fmtNum(num(l.max))} permits at once`;
  }
  return algorithm(l);
}

const ALGORITHMS = { GCRA: 'token bucket (GCRA)', SLIDING_WINDOW: 'sliding window', FIXED_WINDOW: 'fixed window', CALENDAR_WINDOW: 'calendar window', CONCURRENCY: 'concurrency' };
const MODES = { STRICT: 'accent', LOCAL: '', SHADOW: 'muted' };

function limitsHref(name, key, cost) {
  const q = [];
  if (name) q.push(`name=${encodeURIComponent(name)}`);
  if (key) q.push(`key=${encodeURIComponent(key)}`);
  if (cost && cost !== 1) q.push(`cost=${cost}`);
  return '#/limits' + (q.length ? `?${q.join('&')}` : '');
}

function queryValue(ctx, k) {
  const v = ctx.query.get(k) || '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

export function mount(el, ctx) {
  const ctl = new AbortController();
  let stopped = false;
  let timer = null;
  const known = new Map(); // name: limit, as last listed

  const countEl = h('span', { class: 'muted small' });
  const note = h('div');
  const body = h('tbody');
  let card = null;
  const names = h('datalist', { id: 'limit-names' });
  const nameIn = h('input', { id: 'peek-limit', list: 'limit-names', placeholder: 'api', spellcheck: 'false', autocomplete: 'off', value: queryValue(ctx, 'name') });
  const keyIn = h('input', { id: 'peek-key', placeholder: 'tenant-42', spellcheck: 'false', autocomplete: 'off', value: queryValue(ctx, 'key') });
  const costIn = h('input', { id: 'peek-cost', type: 'number', min: 1, step: 1, value: queryValue(ctx, 'cost') || '1' });
  const result = h('div', { class: 'peek-result', 'data-test': 'peek-result' });
  const peekBtn = h('button', { class: 'btn primary', type: 'submit', 'data-action': 'peek' }, icon('search'), 'Peek');

  el.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Rate limits'), countEl)),
    note,
    (card = h(
      'section',
      { class: 'card' },
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'table', 'data-test': 'limits' },
          h('thead', {}, h('tr', {}, ['Limit', 'Algorithm', 'Parameters', 'Mode', 'Keys', 'Allowed', 'Refused', ''].map((c) => h('th', {}, c)))),
          body,
        ),
      ),
    )),
    h(
      'section',
      { class: 'card peek' },
      h('div', { class: 'card-head' }, h('h2', {}, icon('search'), ' Peek'), h('span', { class: 'muted small' }, 'what a key could take now; nothing is taken')),
      h(
        'form',
        { class: 'peek-form', onsubmit: (e) => (e.preventDefault(), peek()) },
        h('div', {}, h('label', { for: 'peek-limit' }, 'Limit'), nameIn, names),
        h('div', {}, h('label', { for: 'peek-key' }, 'Key'), keyIn),
        h('div', { class: 'narrow' }, h('label', { for: 'peek-cost' }, 'Cost'), costIn),
        h('div', { class: 'submit' }, peekBtn),
      ),
      result,
    ),
  );

  function row(l, st) {
    const stats = st && !st.error ? st : null;
    const shadow = mode(l) === 'SHADOW';
    return h(
      'tr',
      { 'data-limit': l.name },
      h('td', { class: 'strong' }, icon('gauge', 'icon muted-icon'), l.name),
      h('td', {}, ALGORITHMS[algorithm(l)] || algorithm(l)),
      h('td', { 'data-test': 'params' }, params(l)),
      h('td', {}, badge(mode(l).toLowerCase(), MODES[mode(l)] ?? ''), l.fail_open ? badge('fail open', 'bad') : null, mode(l) === 'LOCAL' ? h('span', { class: 'muted small' }, ` shares ≤ ${num(l.local_share_percent) || 5}%`) : null),
      h('td', { class: 'num' }, stats ? fmtNum(num(stats.keys)) : '–', stats && algorithm(l) === 'CONCURRENCY' ? h('div', { class: 'muted small' }, `${fmtNum(num(stats.permits))} permits held`) : null),
      h('td', { class: 'num' }, stats ? fmtNum(num(stats.allowed)) : '–'),
      h('td', { class: `num ${stats && num(stats.refused) ? 'hot' : ''}` }, stats ? fmtNum(num(shadow ? stats.would_refuse : stats.refused)) : '–', shadow && stats ? h('div', { class: 'muted small' }, 'would refuse') : null),
      h(
        'td',
        {},
        algorithm(l) === 'CONCURRENCY'
          ? null
          : h(
              'button',
              {
                class: 'btn small ghost',
                type: 'button',
                'data-action': 'peek-limit',
                onclick: () => {
                  nameIn.value = l.name;
                  keyIn.focus();
                },
              },
              'Peek…',
            ),
      ),
    );
  }

  async function load() {
    let limits;
    try {
      limits = (await api.call('/v3/synod/limits/list', {}, { signal: ctl.signal })).limits || [];
    } catch (e) {
      if (stopped) return;
      card.hidden = true;
      countEl.textContent = '';
      note.replaceChildren(message('info', e.denied ? 'Listing the limits needs read permission on every one of them; peek at a limit by its name instead.' : `Cannot list the limits: ${errorText(e)}`));
      return;
    }
    const stats = await mapLimit(limits.slice(0, MAX_STATS), 4, (l) => api.call('/v3/synod/limits/stats', { name: l.name }, { signal: ctl.signal }));
    if (stopped) return;
    note.replaceChildren();
    card.hidden = false;
    known.clear();
    for (const l of limits) known.set(l.name, l);
    countEl.textContent = `${fmtNum(limits.length)} limit${limits.length === 1 ? '' : 's'}`;
    body.replaceChildren(...limits.map((l, i) => row(l, stats[i])));
    if (!limits.length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted empty' }, 'No limits. Define one with synod limit set NAME --rate 100/s.')));
    set(names, limits.map((l) => h('option', { value: l.name })));
  }

  // peek asks what the key could take now (Take with peek: nothing is
  // taken, so peeking twice gives the same answer).
  async function peek() {
    const name = nameIn.value.trim();
    const key = keyIn.value;
    const cost = Math.max(1, Math.floor(Number(costIn.value) || 1));
    if (!name) {
      set(result, message('error', 'Name a limit.'));
      return;
    }
    history.replaceState(null, '', limitsHref(name, key, cost));
    peekBtn.disabled = true;
    set(result, h('div', { class: 'muted' }, 'Asking…'));
    try {
      let l = known.get(name);
      if (!l) l = (await api.call('/v3/synod/limits/get', { name }, { signal: ctl.signal })).limit || { name };
      if (algorithm(l) === 'CONCURRENCY') {
        const st = await api.call('/v3/synod/limits/stats', { name }, { signal: ctl.signal });
        set(result, message('info', `“${name}” is a concurrency limit: it hands out permits on leases (Acquire), ${fmtNum(num(st.permits))} held of ${fmtNum(num(l.max))} per key; a peek does not apply.`));
        return;
      }
      const r = await api.call('/v3/synod/limits/take', { items: [{ limit: name, key: api.b64(api.utf8(key)), cost }], peek: true }, { signal: ctl.signal });
      const d = (r.decisions || [])[0] || {};
      const allowed = !!d.allowed;
      set(
        result,
        h(
          'div',
          { class: 'peek-answer', 'data-limit': name, 'data-key': key, 'data-allowed': String(allowed), 'data-remaining': String(num(d.remaining)), 'data-retry-after': String(num(d.retry_after_ms)) },
          h('div', { class: 'peek-verdict' }, badge(allowed ? 'would be allowed' : 'would be refused', allowed ? 'good' : 'bad'), h('span', { class: 'muted small' }, `${fmtNum(cost)} token${cost === 1 ? '' : 's'} of “${name}” for key “${key}” · ${params(l)}`)),
          h(
            'dl',
            { class: 'meta' },
            h('dt', {}, 'Remaining'),
            h(
              'dd',
              {},
              h('span', { 'data-test': 'remaining' }, `${fmtNum(num(d.remaining))} of ${fmtNum(num(d.limit))}`),
              h('span', { class: 'muted small' }, allowed ? ` once these ${fmtNum(cost)} are taken` : ' now'),
            ),
            h('dt', {}, 'Retry after'),
            h('dd', { 'data-test': 'retry-after' }, allowed ? h('span', { class: 'muted' }, 'no need to wait') : fmtMs(d.retry_after_ms)),
            h('dt', {}, 'Full again in'),
            h('dd', {}, num(d.reset_after_ms) ? fmtMs(d.reset_after_ms) : h('span', { class: 'muted' }, 'full now')),
          ),
          d.would_refuse ? message('info', 'A shadow limit: a strict one would refuse this.') : null,
          d.unavailable ? message('error', `No decision could be made in time (the owner is unreachable): the limit ${l.fail_open ? 'fails open' : 'refuses'}.`) : null,
        ),
      );
    } catch (e) {
      if (!stopped) set(result, message('error', errorText(e)));
    } finally {
      peekBtn.disabled = false;
    }
  }

  async function poll() {
    await load();
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  if (nameIn.value) peek();

  return () => {
    stopped = true;
    clearTimeout(timer);
    ctl.abort();
  };
}
