// The coordination view: locks and elections (etcd's layout: a participant
// in name N on lease L holds the key N/<L in hex>; the first by create
// revision holds the lock or leads), with holders, fencing tokens and
// waiters; and Synod's groups with their members and their leases' health.

import * as api from '../api.js';
import { h, set, icon, badge, message, errorText, fmtNum } from '../dom.js';
import { timeToLive, mapLimit, countdown, keyLink } from './leases.js';

const POLL_MS = 5000;
const MAX_NAMES = 50;
const MAX_GROUPS = 50;
const SCAN_LIMIT = 1000;
const SCAN_REQUESTS = 20;
const GROUPS = api.utf8('synod/groups/');
const SLASH = 0x2f;

// participant returns the name prefix ("N/") of a lock or election key,
// or null when key is not N/<its lease in hex>.
function participant(key, lease) {
  const hex = api.leaseHex(lease);
  if (!hex) return null;
  const i = key.lastIndexOf(SLASH);
  if (i <= 0 || api.text(key.subarray(i + 1)) !== hex) return null;
  return key.slice(0, i + 1);
}

// namesFromLeases finds the lock and election names among the keys of
// every lease (one call per lease), or returns null when the user may not
// list the leases.
async function namesFromLeases(signal) {
  let ids;
  try {
    const r = await api.call('/v3/lease/leases', {}, { signal });
    ids = (r.leases || []).map((l) => l.ID);
  } catch (e) {
    if (e.denied) return null;
    throw e;
  }
  const ttls = await mapLimit(ids, 4, (id) => api.call('/v3/lease/timetolive', { ID: id, keys: true }, { signal }));
  const names = new Map();
  ttls.forEach((r, i) => {
    if (r.error) return;
    for (const k of r.keys || []) {
      const p = participant(api.unb64(k), ids[i]);
      if (p) names.set(api.show(p), p);
    }
  });
  return names;
}

// namesFromScan finds them by reading the keys the user may read (keys
// only, a bounded number).
async function namesFromScan(perms, signal) {
  const names = new Map();
  let requests = 0;
  let truncated = false;
  for (const iv of perms.readable(new Uint8Array(0), null)) {
    let start = iv.start;
    for (;;) {
      if (requests >= SCAN_REQUESTS) {
        truncated = true;
        break;
      }
      const r = await api.call('/v3/kv/range', { ...api.rangeOf(start, iv.end), keys_only: true, limit: SCAN_LIMIT }, { signal });
      requests++;
      const kvs = r.kvs || [];
      for (const kv of kvs) {
        const p = participant(api.unb64(kv.key), kv.lease);
        if (p) names.set(api.show(p), p);
      }
      if (!r.more || !kvs.length) break;
      start = api.after(api.unb64(kvs[kvs.length - 1].key));
    }
  }
  return { names, truncated };
}

// queue reads the participants of one name, in create revision order.
async function queue(prefix, signal) {
  const r = await api.call(
    '/v3/kv/range',
    { ...api.rangeOf(prefix, api.prefixEnd(prefix)), sort_target: 'CREATE', sort_order: 'ASCEND', limit: 500 },
    { signal },
  );
  return (r.kvs || []).filter((kv) => {
    const key = api.unb64(kv.key);
    const p = participant(key, kv.lease);
    return p && api.equal(p, prefix);
  });
}

// groupNames lists the groups under synod/groups/ the user may read.
async function groupNames(perms, signal) {
  const names = [];
  for (const iv of perms.readable(GROUPS, api.prefixEnd(GROUPS))) {
    let start = iv.start;
    while (names.length < MAX_GROUPS) {
      const r = await api.call('/v3/kv/range', { ...api.rangeOf(start, iv.end), keys_only: true, limit: 1 }, { signal });
      const kv = (r.kvs || [])[0];
      if (!kv) break;
      const key = api.unb64(kv.key);
      const rel = key.subarray(GROUPS.length);
      const slash = rel.indexOf(SLASH);
      if (slash <= 0) {
        start = api.after(key);
        continue;
      }
      names.push(api.text(rel.subarray(0, slash)) ?? api.show(rel.subarray(0, slash)));
      start = api.prefixEnd(key.slice(0, GROUPS.length + slash + 1));
      if (start === null || (iv.end && api.cmp(start, iv.end) >= 0)) break;
    }
  }
  return names;
}

export function mount(el, ctx) {
  const perms = ctx.perms;
  const ctl = new AbortController();
  let stopped = false;
  let timer = null;
  let countdowns = [];

  const locksNote = h('div');
  const locksBody = h('tbody');
  const groupsBox = h('div', { class: 'groups' });
  el.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Coordination'), h('span', { class: 'muted small' }, 'locks, elections and groups'))),
    h(
      'section',
      { class: 'card' },
      h('div', { class: 'card-head' }, h('h2', {}, icon('lock'), ' Locks and elections')),
      locksNote,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'table', 'data-test': 'locks' },
          h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Holder', 'Fencing token', 'Holder lease', 'Waiters'].map((c) => h('th', {}, c)))),
          locksBody,
        ),
      ),
    ),
    h('div', { class: 'section-head' }, h('h2', {}, icon('users'), ' Groups')),
    groupsBox,
  );

  async function leaseCell(lease) {
    try {
      const r = await timeToLive(lease, ctl.signal);
      const cd = countdown(Number(r.TTL ?? -1), Number(r.grantedTTL || 0), Date.now());
      countdowns.push(cd);
      return cd.el;
    } catch (e) {
      return h('span', { class: 'muted' }, errorText(e));
    }
  }

  async function loadLocks() {
    let names = await namesFromLeases(ctl.signal);
    let truncated = false;
    if (names === null) {
      ({ names, truncated } = await namesFromScan(perms, ctl.signal));
    }
    const list = [...names.values()].slice(0, MAX_NAMES);
    const queues = await mapLimit(list, 4, (p) => queue(p, ctl.signal));
    const rows = [];
    for (let i = 0; i < list.length; i++) {
      const q = queues[i];
      if (q.error || !q.length) continue;
      const holder = q[0];
      const value = api.unb64(holder.value);
      const election = q.some((kv) => kv.value);
      const waiters = q.slice(1);
      rows.push(
        h(
          'tr',
          { 'data-lock': api.show(list[i]) },
          h('td', { class: 'strong' }, keyLink(list[i])),
          h('td', {}, badge(election ? 'election' : 'lock', election ? 'accent' : '')),
          h(
            'td',
            {},
            h('code', {}, api.leaseHex(holder.lease)),
            election ? h('div', { class: 'muted small' }, 'leader value: ', h('code', {}, api.show(value.subarray(0, 120)))) : null,
          ),
          h('td', { class: 'num', 'data-test': 'token' }, fmtNum(Number(holder.create_revision))),
          h('td', {}, await leaseCell(holder.lease)),
          h(
            'td',
            {},
            waiters.length
              ? h(
                  'ol',
                  { class: 'waiters' },
                  waiters.map((kv) => h('li', {}, h('code', {}, api.leaseHex(kv.lease)), h('span', { class: 'muted small' }, ` since rev ${fmtNum(Number(kv.create_revision))}`))),
                )
              : h('span', { class: 'muted' }, 'none'),
          ),
        ),
      );
    }
    if (stopped) return;
    locksBody.replaceChildren(...rows);
    if (!rows.length) locksBody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted empty' }, 'No lock is held and no election has a leader.')));
    set(
      locksNote,
      truncated ? message('info', 'Only part of the keys you may read were scanned for locks.') : null,
      names.size > MAX_NAMES ? message('info', `Showing ${MAX_NAMES} of ${fmtNum(names.size)} names.`) : null,
    );
  }

  async function loadGroups() {
    const names = await groupNames(perms, ctl.signal);
    const cards = [];
    for (const g of names) {
      let r;
      try {
        r = await api.call('/v3/synod/groups/list', { group: g }, { signal: ctl.signal });
      } catch (e) {
        cards.push(h('section', { class: 'card' }, h('h3', {}, g), message('error', errorText(e))));
        continue;
      }
      const members = r.members || [];
      const rows = await Promise.all(
        members.map(async (m) => {
          const meta = api.unb64(m.metadata);
          return h(
            'tr',
            { 'data-group-member': m.id },
            h('td', { class: 'strong' }, m.id),
            h('td', {}, meta.length ? h('code', {}, api.show(meta.subarray(0, 160))) : h('span', { class: 'muted' }, 'none')),
            h('td', {}, h('code', {}, api.leaseHex(m.lease))),
            h('td', { class: 'num' }, fmtNum(Number(m.create_revision || 0))),
            h('td', {}, await leaseCell(m.lease)),
          );
        }),
      );
      cards.push(
        h(
          'section',
          { class: 'card', 'data-group': g },
          h('div', { class: 'card-head' }, h('h3', {}, g), badge(`${members.length} member${members.length === 1 ? '' : 's'}`, members.length ? 'good' : 'muted')),
          h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'table' },
              h('thead', {}, h('tr', {}, ['Member', 'Metadata', 'Lease', 'Joined at', 'Lease time left'].map((c) => h('th', {}, c)))),
              h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted empty' }, 'No members.'))),
            ),
          ),
        ),
      );
    }
    if (stopped) return;
    groupsBox.replaceChildren(...cards);
    if (!cards.length) groupsBox.append(h('section', { class: 'card' }, h('p', { class: 'muted empty' }, 'No groups.')));
  }

  async function poll() {
    countdowns = [];
    await Promise.all([
      loadLocks().catch((e) => !stopped && locksNote.replaceChildren(message('error', errorText(e)))),
      loadGroups().catch((e) => !stopped && groupsBox.replaceChildren(message('error', errorText(e)))),
    ]);
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  const ticker = setInterval(() => countdowns.forEach((c) => c.tick()), 250);

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
    ctl.abort();
  };
}
