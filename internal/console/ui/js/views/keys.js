// The keys view: browse by prefix ("/" separates levels), view a value and
// its versions, put and delete (when the user may), and a live tail of a
// watch on the prefix.

import * as api from '../api.js';
import { h, set, icon, badge, message, errorText, fmtNum, fmtBytes, fmtTime, dialog, confirm, toast } from '../dom.js';

const PAGE = 100; // entries per page
const LIMIT = 200; // keys per range request
const MAX_REQUESTS = 10; // range requests per page at most
const TAIL_ROWS = 200;
const TAIL_MAX_RATE = 1000; // events a second past which the tail pauses itself
const MAX_WATCHES = 8;
const SLASH = 0x2f;

function keyHref(prefix, key) {
  return `#/keys/${api.keyToPath(prefix)}` + (key ? `?key=${api.keyToPath(key)}` : '');
}

function breadcrumbs(prefix) {
  const crumbs = [h('a', { href: '#/keys/', class: 'crumb' }, 'all keys')];
  let start = 0;
  for (let i = 0; i < prefix.length; i++) {
    if (prefix[i] === SLASH) {
      const p = prefix.slice(0, i + 1);
      crumbs.push(h('span', { class: 'crumb-sep' }, '›'), h('a', { href: keyHref(p), class: 'crumb' }, api.show(prefix.slice(start, i + 1))));
      start = i + 1;
    }
  }
  if (start < prefix.length) {
    crumbs.push(h('span', { class: 'crumb-sep' }, '›'), h('span', { class: 'crumb current' }, api.show(prefix.slice(start)) + '…'));
  }
  return h('nav', { class: 'crumbs', 'aria-label': 'Prefix' }, crumbs);
}

// parent is the prefix a key is listed under: up to its last "/".
function parent(key) {
  const i = key.lastIndexOf(SLASH);
  return i < 0 ? new Uint8Array(0) : key.slice(0, i + 1);
}

// Lister pages through the keys under a prefix within the intervals the
// user may read, folding every deeper level into one folder entry: a
// folder costs one request however many keys it holds (the next request
// starts past it).
class Lister {
  constructor(prefix, parts) {
    this.prefix = prefix;
    this.queue = parts.map((p) => ({ start: p.start, end: p.end }));
  }

  get done() {
    return this.queue.length === 0;
  }

  async page(signal) {
    const out = [];
    let requests = 0;
    while (out.length < PAGE && this.queue.length && requests < MAX_REQUESTS) {
      const iv = this.queue[0];
      const resp = await api.call('/v3/kv/range', { ...api.rangeOf(iv.start, iv.end), keys_only: true, limit: LIMIT }, { signal });
      requests++;
      if (this.revision === undefined) this.revision = Number((resp.header || {}).revision || 0);
      let next = iv.start; // where the rest of the interval starts
      let all = true; // every key of the answer was taken (or is in a folder taken)
      for (const kv of resp.kvs || []) {
        const key = api.unb64(kv.key);
        if (api.cmp(key, next) < 0) continue; // in the folder just listed
        if (out.length >= PAGE) {
          all = false;
          break;
        }
        const rel = key.subarray(this.prefix.length);
        const slash = rel.indexOf(SLASH);
        if (slash >= 0 && slash < rel.length - 1) {
          const dir = key.slice(0, this.prefix.length + slash + 1);
          out.push({ dir: true, key: dir });
          next = api.prefixEnd(dir);
          if (next === null) break; // the folder runs to the end of the keyspace
        } else {
          out.push({ dir: false, key, kv });
          next = api.after(key);
        }
      }
      const finished = next === null || (iv.end !== null && api.cmp(next, iv.end) >= 0) || (all && !resp.more);
      if (finished) {
        this.queue.shift();
      } else {
        iv.start = next;
      }
    }
    return out;
  }
}

// valueView shows bytes as text, JSON pretty-printed or hex (the queues
// view shows a job's payload with it too).
export function valueView(value) {
  const txt = api.text(value);
  let json = null;
  if (txt !== null && /^\s*[[{"]/.test(txt)) {
    try {
      json = JSON.stringify(JSON.parse(txt), null, 2);
    } catch {
      json = null;
    }
  }
  const views = {
    text: () => (txt === null ? h('div', { class: 'muted' }, 'Not valid UTF-8: see Hex.') : h('pre', { class: 'value', 'data-test': 'value-text' }, txt)),
    json: () => (json === null ? h('div', { class: 'muted' }, 'Not JSON.') : h('pre', { class: 'value json', 'data-test': 'value-json' }, json)),
    hex: () => {
      const lines = [];
      const n = Math.min(value.length, 64 * 1024);
      for (let off = 0; off < n; off += 16) {
        const row = value.subarray(off, Math.min(off + 16, n));
        const hx = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
        const asc = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
        lines.push(`${off.toString(16).padStart(8, '0')}  ${hx.padEnd(47)}  ${asc}`);
      }
      if (value.length > n) lines.push(`… ${fmtNum(value.length - n)} more bytes`);
      return h('pre', { class: 'value hex', 'data-test': 'value-hex' }, lines.join('\n'));
    },
  };
  const body = h('div', { class: 'value-body' });
  const tabs = {};
  const pick = (name) => {
    for (const [k, t] of Object.entries(tabs)) t.classList.toggle('active', k === name);
    body.replaceChildren(views[name]());
  };
  for (const [name, label] of [['text', 'Text'], ['json', 'JSON'], ['hex', 'Hex']]) {
    tabs[name] = h('button', { type: 'button', class: 'seg', 'data-view': name, onclick: () => pick(name) }, label);
  }
  pick(json !== null ? 'json' : txt !== null ? 'text' : 'hex');
  return h('div', { class: 'value-view' }, h('div', { class: 'segmented' }, Object.values(tabs), h('span', { class: 'muted small' }, fmtBytes(value.length))), body);
}

export function mount(el, ctx) {
  const perms = ctx.perms;
  const prefix = api.pathToKey(ctx.path);
  const end = api.prefixEnd(prefix);
  const parts = perms.readable(prefix, end);
  const ctl = new AbortController();
  let stopped = false;

  const countEl = h('span', { class: 'muted small', 'data-test': 'key-count' });
  const listBody = h('tbody');
  const listFoot = h('div', { class: 'list-foot' });
  const detail = h('section', { class: 'card detail', 'data-test': 'detail' }, h('div', { class: 'empty-detail' }, icon('key', 'icon big'), h('p', {}, 'Select a key to see its value and versions.')));
  const refreshBtn = h('button', { class: 'btn ghost', type: 'button', title: 'Reload the list', 'data-action': 'refresh', onclick: () => reload() }, icon('refresh'), 'Refresh');
  const canPut = perms.writesSome(prefix, end);
  const goto = h('input', { class: 'goto', placeholder: 'Go to prefix or key…', 'aria-label': 'Go to prefix or key', spellcheck: 'false' });
  goto.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && goto.value) {
      const k = api.utf8(goto.value);
      location.hash = goto.value.endsWith('/') ? keyHref(k) : keyHref(parent(k), k);
    }
  });

  const tailBody = h('tbody', { 'data-test': 'tail' }, h('tr', { class: 'tail-empty' }, h('td', { colspan: 5, class: 'muted empty' }, 'Changes under this prefix appear here as they happen.')));
  const tailStatus = h('span', { class: 'tail-status', 'data-tail-status': 'connecting', 'data-prefix': api.show(prefix) });
  const pauseBtn = h('button', { class: 'btn ghost small', type: 'button', 'data-action': 'pause', onclick: () => togglePause() });

  el.append(
    h(
      'div',
      { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Keys'), breadcrumbs(prefix)),
      h(
        'div',
        { class: 'actions' },
        goto,
        refreshBtn,
        canPut ? h('button', { class: 'btn primary', type: 'button', 'data-action': 'put', onclick: () => openPut(prefix, null) }, icon('plus'), 'Put key') : null,
      ),
    ),
  );
  if (!parts.length) {
    el.append(message('error', h('span', { 'data-test': 'no-access' }, `You may not read any key under “${api.show(prefix) || 'all keys'}”.`)));
    return () => ctl.abort();
  }
  el.append(
    h(
      'div',
      { class: 'keys-grid' },
      h(
        'section',
        { class: 'card list' },
        h('div', { class: 'card-head' }, h('h2', {}, prefix.length ? api.show(prefix) : 'All keys'), countEl),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table keys', 'data-test': 'keys' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Version'), h('th', {}, 'Modified at'), h('th', {}, 'Lease'))), listBody)),
        listFoot,
      ),
      detail,
    ),
    h(
      'section',
      { class: 'card tail' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Live tail'), h('span', { class: 'muted small' }, `watching ${prefix.length ? api.show(prefix) + '…' : 'all keys'}`), tailStatus, pauseBtn),
      h('div', { class: 'table-wrap tail-wrap' }, h('table', { class: 'table compact' }, h('thead', {}, h('tr', {}, ['Time', 'Event', 'Key', 'Revision', 'Value'].map((c) => h('th', {}, c)))), tailBody)),
    ),
  );
  if (!perms.readsAll(prefix, end)) {
    countEl.textContent = 'only the keys you may read';
  }

  // The list.
  let lister = null;
  let selected = null;
  let listSeq = 0;
  let marked = false;
  // The tail starts after the revision of the first list, so that no
  // change between the list and the watch goes unseen.
  let listedAt;
  const listed = new Promise((resolve) => (listedAt = resolve));

  async function countDirs(rows) {
    for (const { key, cell } of rows) {
      if (stopped) return;
      const dend = api.prefixEnd(key);
      if (!perms.readsAll(key, dend)) continue;
      try {
        const r = await api.call('/v3/kv/range', { ...api.rangeOf(key, dend), count_only: true }, { signal: ctl.signal });
        const n = Number(r.count || 0);
        cell.textContent = `${fmtNum(n)} key${n === 1 ? '' : 's'}`;
      } catch {
        /* the count is a nicety */
      }
    }
  }

  async function more() {
    const seq = listSeq;
    listFoot.replaceChildren(h('span', { class: 'muted' }, 'Loading…'));
    let entries;
    try {
      entries = await lister.page(ctl.signal);
    } catch (e) {
      listedAt(0);
      if (!stopped) listFoot.replaceChildren(message('error', errorText(e)));
      return;
    }
    listedAt(lister.revision || 0);
    if (seq !== listSeq) return;
    const dirs = [];
    for (const e of entries) {
      const rel = e.key.subarray(prefix.length);
      if (e.dir) {
        const cell = h('td', { class: 'muted small' });
        dirs.push({ key: e.key, cell });
        listBody.append(
          h(
            'tr',
            { class: 'row-dir', 'data-dir': api.show(e.key) },
            h('td', {}, h('a', { href: keyHref(e.key), class: 'name' }, icon('folder', 'icon folder'), api.show(rel))),
            cell,
            h('td'),
            h('td'),
          ),
        );
      } else {
        const kv = e.kv;
        const row = h(
          'tr',
          { class: 'row-key', 'data-key': api.show(e.key), tabindex: 0, onclick: () => select(e.key, row), onkeydown: (ev) => ev.key === 'Enter' && select(e.key, row) },
          h('td', {}, h('span', { class: 'name' }, icon('key', 'icon keyicon'), rel.length ? api.show(rel) : h('span', { class: 'muted' }, '(the prefix itself)'))),
          h('td', { class: 'num' }, `v${kv.version || 0}`),
          h('td', { class: 'num' }, fmtNum(Number(kv.mod_revision || 0))),
          h('td', {}, kv.lease ? h('a', { href: `#/leases?id=${api.leaseHex(kv.lease)}`, onclick: (ev) => ev.stopPropagation() }, h('code', {}, api.leaseHex(kv.lease))) : ''),
        );
        if (selected && api.equal(selected, e.key)) row.classList.add('selected');
        listBody.append(row);
      }
    }
    if (!listBody.children.length) {
      listFoot.replaceChildren(h('div', { class: 'muted empty', 'data-test': 'no-keys' }, 'No keys here.'));
    } else if (!lister.done) {
      listFoot.replaceChildren(h('button', { class: 'btn', type: 'button', 'data-action': 'more', onclick: () => more() }, 'Load more'));
    } else {
      listFoot.replaceChildren();
    }
    if (!marked) {
      // For load-time measurements: the first page of the list is shown.
      marked = true;
      performance.mark('synod:keys-listed');
    }
    countDirs(dirs);
  }

  async function count() {
    if (!perms.readsAll(prefix, end)) return;
    try {
      const r = await api.call('/v3/kv/range', { ...api.rangeOf(prefix, end), count_only: true }, { signal: ctl.signal });
      const n = Number(r.count || 0);
      countEl.textContent = `${fmtNum(n)} key${n === 1 ? '' : 's'}`;
    } catch {
      countEl.textContent = '';
    }
  }

  function reload() {
    listSeq++;
    refreshBtn.classList.remove('pulse');
    lister = new Lister(prefix, parts);
    listBody.replaceChildren();
    more();
    count();
  }

  // The detail panel.
  async function select(key, row) {
    selected = key;
    for (const r of listBody.querySelectorAll('tr.selected')) r.classList.remove('selected');
    if (row) row.classList.add('selected');
    history.replaceState(null, '', keyHref(prefix, key));
    await showKey(key);
  }

  async function showKey(key) {
    detail.replaceChildren(h('div', { class: 'muted' }, 'Loading…'));
    let kv;
    try {
      const r = await api.call('/v3/kv/range', { key: api.b64(key) }, { signal: ctl.signal });
      kv = (r.kvs || [])[0];
    } catch (e) {
      detail.replaceChildren(message('error', errorText(e)));
      return;
    }
    if (!selected || !api.equal(selected, key)) return;
    const writable = perms.canWrite(key);
    const head = h(
      'div',
      { class: 'detail-head' },
      h('h2', { class: 'keyname', title: api.show(key) }, api.show(key)),
      h(
        'div',
        { class: 'actions' },
        writable && kv ? h('button', { class: 'btn small', type: 'button', 'data-action': 'edit', onclick: () => openPut(key, api.unb64(kv.value)) }, icon('edit'), 'Edit') : null,
        writable && kv ? h('button', { class: 'btn small danger', type: 'button', 'data-action': 'delete', onclick: () => remove(key) }, icon('trash'), 'Delete') : null,
      ),
    );
    if (!kv) {
      detail.replaceChildren(head, message('info', 'This key does not exist (now).'));
      return;
    }
    const versions = [{ rev: Number(kv.mod_revision), version: Number(kv.version), value: api.unb64(kv.value), current: true }];
    const valueBox = h('div');
    const versionsList = h('ol', { class: 'versions', 'data-test': 'versions' });
    const versionsFoot = h('div');
    let next = Number(kv.mod_revision) - 1;
    const created = Number(kv.create_revision);
    const showValue = (v) => {
      for (const li of versionsList.children) li.classList.toggle('active', Number(li.dataset.rev) === v.rev);
      set(valueBox, v.current ? null : message('info', `Version ${v.version}, written at revision ${fmtNum(v.rev)}.`), valueView(v.value));
    };
    const renderVersions = () => {
      versionsList.replaceChildren(
        ...versions.map((v) =>
          h(
            'li',
            { 'data-rev': v.rev, onclick: () => showValue(v) },
            h('span', { class: 'strong' }, `v${v.version}`),
            h('span', { class: 'muted' }, ` rev ${fmtNum(v.rev)}`),
            v.current ? badge('current', 'accent') : null,
          ),
        ),
      );
      versionsFoot.replaceChildren(
        next >= created ? h('button', { class: 'btn small ghost', type: 'button', 'data-action': 'older', onclick: () => older() }, 'Older versions') : h('span', { class: 'muted small' }, versions.length > 1 || created === Number(kv.mod_revision) ? 'No older version since the key was created.' : ''),
      );
    };
    // older walks back through the key's versions: each read at the
    // revision before the previous version finds the one before it.
    const older = async () => {
      versionsFoot.replaceChildren(h('span', { class: 'muted small' }, 'Loading…'));
      for (let i = 0; i < 10 && next >= created; i++) {
        try {
          const r = await api.call('/v3/kv/range', { key: api.b64(key), revision: next }, { signal: ctl.signal });
          const old = (r.kvs || [])[0];
          if (!old) {
            next = 0;
            break;
          }
          versions.push({ rev: Number(old.mod_revision), version: Number(old.version), value: api.unb64(old.value) });
          next = Number(old.mod_revision) - 1;
        } catch (e) {
          next = 0;
          renderVersions();
          versionsFoot.replaceChildren(h('span', { class: 'muted small' }, e.compacted ? 'Older versions were compacted.' : errorText(e)));
          return;
        }
      }
      renderVersions();
    };
    renderVersions();
    detail.replaceChildren(
      head,
      h(
        'dl',
        { class: 'meta' },
        h('dt', {}, 'Version'),
        h('dd', {}, fmtNum(Number(kv.version))),
        h('dt', {}, 'Created at'),
        h('dd', {}, `revision ${fmtNum(created)}`),
        h('dt', {}, 'Modified at'),
        h('dd', {}, `revision ${fmtNum(Number(kv.mod_revision))}`),
        h('dt', {}, 'Lease'),
        h('dd', {}, kv.lease ? h('a', { href: `#/leases?id=${api.leaseHex(kv.lease)}` }, h('code', {}, api.leaseHex(kv.lease))) : 'none'),
      ),
      valueBox,
      h('h3', {}, 'Versions'),
      versionsList,
      versionsFoot,
    );
    showValue(versions[0]);
  }

  async function remove(key) {
    const ok = await confirm('Delete key', `Delete “${api.show(key)}”? Its history stays readable until it is compacted.`, 'Delete', 'danger');
    if (!ok) return;
    try {
      await api.call('/v3/kv/deleterange', { key: api.b64(key) });
      toast(`Deleted ${api.show(key)}`, 'good');
      selected = null;
      detail.replaceChildren(message('info', `Deleted “${api.show(key)}”.`));
      reload();
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  async function openPut(key, value) {
    const keyIn = h('input', { id: 'put-key', value: api.text(key) ?? '', spellcheck: 'false' });
    const valIn = h('textarea', { id: 'put-value', rows: 8, spellcheck: 'false' });
    valIn.value = value ? api.text(value) ?? '' : '';
    const err = h('div', { class: 'form-error', role: 'alert' });
    const choice = await dialog({
      title: value ? 'Edit key' : 'Put key',
      testid: 'put-dialog',
      body: [h('label', { for: 'put-key' }, 'Key'), keyIn, h('label', { for: 'put-value' }, 'Value (text)'), valIn, err],
      buttons: [
        { label: 'Cancel', value: null, action: 'cancel' },
        {
          label: 'Put…',
          value: 'put',
          kind: 'primary',
          action: 'put-review',
          check: () => {
            if (!keyIn.value) {
              err.textContent = 'The key is empty.';
              return false;
            }
            if (!perms.canWrite(api.utf8(keyIn.value))) {
              err.textContent = 'Your roles do not allow writing this key.';
              return false;
            }
            return true;
          },
        },
      ],
    });
    if (choice !== 'put') return;
    const k = api.utf8(keyIn.value);
    const v = api.utf8(valIn.value);
    let existing = null;
    try {
      const r = await api.call('/v3/kv/range', { key: api.b64(k), keys_only: true });
      existing = (r.kvs || [])[0] || null;
    } catch {
      existing = null;
    }
    const what = existing ? `This replaces version ${existing.version} of “${keyIn.value}”.` : `This creates “${keyIn.value}”.`;
    if (!(await confirm('Put key', `${what} Value: ${fmtBytes(v.length)}.`, 'Put', 'primary'))) return;
    try {
      await api.call('/v3/kv/put', { key: api.b64(k), value: api.b64(v) });
      toast(`Put ${keyIn.value}`, 'good');
      if (api.startsWith(k, prefix)) {
        reload();
        selected = k;
        showKey(k);
      } else {
        location.hash = keyHref(parent(k), k);
      }
    } catch (e) {
      toast(errorText(e), 'bad');
    }
  }

  // The live tail: one watch stream with a watch per readable interval.
  let paused = false;
  let tailCtl = null;
  let lastRev = 0;
  let tailStarted = false;
  let second = 0;
  let inSecond = 0;

  // tooFast counts an event and reports whether the tail should pause: a
  // browser cannot show, nor should it pull, a firehose.
  function tooFast() {
    const now = Math.floor(Date.now() / 1000);
    if (now !== second) {
      second = now;
      inSecond = 0;
    }
    return ++inSecond > TAIL_MAX_RATE;
  }

  function setStatus(s, text) {
    tailStatus.dataset.tailStatus = s;
    tailStatus.className = `tail-status ${s}`;
    tailStatus.replaceChildren(h('i'), text || { connecting: 'connecting…', live: 'live', paused: 'paused', error: 'disconnected' }[s]);
  }

  function addEvent(ev) {
    const kv = ev.kv || {};
    const key = api.unb64(kv.key);
    const del = ev.type === 'DELETE';
    const value = api.unb64(kv.value);
    const txt = api.text(value);
    const preview = del ? '' : txt !== null ? (txt.length > 80 ? txt.slice(0, 80) + '…' : txt) : `${fmtBytes(value.length)} binary`;
    const row = h(
      'tr',
      { class: 'tail-row fresh', 'data-tail-key': api.show(key) },
      h('td', { class: 'muted' }, fmtTime(new Date())),
      h('td', {}, badge(del ? 'DELETE' : 'PUT', del ? 'bad' : 'good')),
      h('td', {}, h('a', { href: keyHref(parent(key), key) }, api.show(key))),
      h('td', { class: 'num' }, fmtNum(Number(kv.mod_revision || 0))),
      h('td', { class: 'preview' }, preview),
    );
    const empty = tailBody.querySelector('.tail-empty');
    if (empty) empty.remove();
    tailBody.prepend(row);
    setTimeout(() => row.classList.remove('fresh'), 1500);
    while (tailBody.children.length > TAIL_ROWS) tailBody.lastChild.remove();
    if (api.startsWith(key, prefix)) refreshBtn.classList.add('pulse');
  }

  async function tail() {
    let backoff = 500;
    if (!tailStarted) {
      tailStarted = true;
      lastRev = await listed;
    }
    while (!stopped && !paused) {
      tailCtl = new AbortController();
      const watched = parts.slice(0, MAX_WATCHES);
      const reqs = watched.map((p) => ({ create_request: { ...api.rangeOf(p.start, p.end), ...(lastRev ? { start_revision: lastRev + 1 } : {}) } }));
      let created = 0;
      setStatus('connecting');
      try {
        await api.stream(
          '/v3/watch',
          reqs,
          (res) => {
            if (res.created) {
              created++;
              if (res.canceled) {
                if (Number(res.compact_revision || 0) > 0) lastRev = 0;
                setStatus('error', res.cancel_reason || 'refused');
              } else if (created === reqs.length) {
                setStatus('live', parts.length > MAX_WATCHES ? `live (first ${MAX_WATCHES} ranges)` : 'live');
              }
              return;
            }
            if (res.canceled) {
              // Compacted past where the tail would resume: go on from now.
              if (Number(res.compact_revision || 0) > 0) lastRev = 0;
              setStatus('error', res.cancel_reason || 'watch cancelled');
              return;
            }
            for (const ev of res.events || []) {
              if (tooFast()) {
                togglePause(`paused: more than ${fmtNum(TAIL_MAX_RATE)} changes a second`);
                return;
              }
              addEvent(ev);
              lastRev = Math.max(lastRev, Number((ev.kv || {}).mod_revision || 0));
            }
            backoff = 500;
          },
          { signal: tailCtl.signal },
        );
        if (!stopped && !paused) setStatus('error', 'stream ended');
      } catch (e) {
        if (stopped || paused) return;
        setStatus('error', `disconnected: ${errorText(e)}`);
        if (e.status === 401 || e.status === 403) return;
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  function togglePause(why) {
    paused = !paused;
    pauseBtn.replaceChildren(icon(paused ? 'play' : 'pause'), paused ? 'Resume' : 'Pause');
    if (paused) {
      if (tailCtl) tailCtl.abort();
      setStatus('paused', typeof why === 'string' ? why : undefined);
    } else {
      // Resume from now: what happened while paused is not replayed.
      lastRev = 0;
      tail();
    }
  }

  pauseBtn.replaceChildren(icon('pause'), 'Pause');
  reload();
  tail();
  if (ctx.query.has('key')) {
    const k = api.pathToKey(ctx.query.get('key'));
    if (perms.canRead(k)) {
      selected = k;
      showKey(k);
    }
  }

  return () => {
    stopped = true;
    ctl.abort();
    if (tailCtl) tailCtl.abort();
  };
}
