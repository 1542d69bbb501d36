// The leases view: every lease with its TTL counting down and its keys.

import * as api from '../api.js';
import { h, icon, message, errorText, fmtNum, fmtSeconds } from '../dom.js';

const POLL_MS = 5000;
const MAX_LEASES = 200;
const SHOWN_KEYS = 5;

export function keyLink(key) {
  const i = key.lastIndexOf(0x2f);
  const parent = i < 0 ? new Uint8Array(0) : key.slice(0, i + 1);
  return h('a', { href: `#/keys/${api.keyToPath(parent)}?key=${api.keyToPath(key)}`, class: 'keylink' }, api.show(key));
}

// timeToLive asks for a lease's TTL and keys; a user who may not read
// every key of the lease gets the TTL alone.
export async function timeToLive(id, signal) {
  try {
    return await api.call('/v3/lease/timetolive', { ID: id, keys: true }, { signal });
  } catch (e) {
    if (!e.denied) throw e;
    const r = await api.call('/v3/lease/timetolive', { ID: id }, { signal });
    r.keysHidden = true;
    return r;
  }
}

// mapLimit runs fn over items, n at a time.
export async function mapLimit(items, n, fn) {
  const out = new Array(items.length);
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const j = i++;
      try {
        out[j] = await fn(items[j]);
      } catch (e) {
        out[j] = { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

// countdown is a TTL that counts down between two polls.
export function countdown(ttl, granted, fetchedAt) {
  const text = h('span', { class: 'ttl-text' });
  const fill = h('span', { class: 'bar-fill' });
  const bar = h('span', { class: 'bar' }, fill);
  const el = h('span', { class: 'ttl' }, text, bar);
  const tick = () => {
    if (ttl < 0) {
      text.textContent = 'expired';
      el.classList.add('expired');
      fill.style.width = '0%';
      return;
    }
    const left = Math.max(0, ttl - (Date.now() - fetchedAt) / 1000);
    text.textContent = fmtSeconds(left);
    const pct = granted > 0 ? Math.min(100, (left / granted) * 100) : 0;
    fill.style.width = `${pct.toFixed(1)}%`;
    bar.classList.toggle('hot', pct < 20);
  };
  tick();
  return { el, tick };
}

export function mount(el, ctx) {
  const focus = ctx.query.get('id') || '';
  const ctl = new AbortController();
  let stopped = false;
  let timer = null;
  let ticker = null;
  let countdowns = [];

  const countEl = h('span', { class: 'muted small' });
  let card = null;
  const note = h('div');
  const body = h('tbody');
  const lookup = h('input', { class: 'goto', placeholder: 'Lease ID (hex)…', 'aria-label': 'Look up a lease by ID', spellcheck: 'false', value: focus });
  lookup.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') location.hash = lookup.value ? `#/leases?id=${encodeURIComponent(lookup.value.trim().toLowerCase())}` : '#/leases';
  });
  el.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Leases'), countEl), h('div', { class: 'actions' }, lookup)),
    note,
    (card = h(
      'section',
      { class: 'card' },
      h(
        'div',
        { class: 'table-wrap' },
        h('table', { class: 'table', 'data-test': 'leases' }, h('thead', {}, h('tr', {}, ['Lease', 'Time left', 'Granted TTL', 'Keys'].map((c) => h('th', {}, c)))), body),
      ),
    )),
  );

  function row(id, r, fetchedAt) {
    const hex = api.leaseHex(id);
    const cd = countdown(Number(r.TTL ?? -1), Number(r.grantedTTL || 0), fetchedAt);
    countdowns.push(cd);
    const keys = (r.keys || []).map(api.unb64);
    return h(
      'tr',
      { 'data-lease': hex, class: hex === focus ? 'selected' : '' },
      h('td', { class: 'strong' }, icon('clock', 'icon muted-icon'), h('code', {}, hex)),
      h('td', {}, cd.el),
      h('td', { class: 'num' }, r.grantedTTL ? fmtSeconds(Number(r.grantedTTL)) : '–'),
      h(
        'td',
        { class: 'keys-cell' },
        r.keysHidden
          ? h('span', { class: 'muted' }, 'hidden: you may not read all of them')
          : keys.length
            ? [keys.slice(0, SHOWN_KEYS).map(keyLink), keys.length > SHOWN_KEYS ? h('span', { class: 'muted' }, ` and ${fmtNum(keys.length - SHOWN_KEYS)} more`) : null]
            : h('span', { class: 'muted' }, 'no keys'),
      ),
    );
  }

  async function load() {
    let ids = [];
    let listed = true;
    try {
      const r = await api.call('/v3/lease/leases', {}, { signal: ctl.signal });
      ids = (r.leases || []).map((l) => l.ID);
      note.replaceChildren();
    } catch (e) {
      if (stopped) return;
      listed = false;
      note.replaceChildren(
        message('info', e.denied ? 'Listing every lease needs read permission on every key attached to one; look a lease up by its ID instead.' : `Cannot list the leases: ${errorText(e)}`),
      );
    }
    if (focus && !ids.some((id) => api.leaseHex(id) === focus)) {
      try {
        ids.unshift(api.leaseDec(focus));
      } catch {
        note.append(message('error', `“${focus}” is not a lease ID in hex.`));
      }
    }
    countEl.textContent = listed ? `${fmtNum(ids.length)} lease${ids.length === 1 ? '' : 's'}` + (ids.length > MAX_LEASES ? ` (showing ${MAX_LEASES})` : '') : '';
    const shown = ids.slice(0, MAX_LEASES);
    const fetchedAt = Date.now();
    const ttls = await mapLimit(shown, 4, (id) => timeToLive(id, ctl.signal));
    if (stopped) return;
    countdowns = [];
    const rows = shown.map((id, i) => (ttls[i].error ? h('tr', { 'data-lease': api.leaseHex(id) }, h('td', {}, h('code', {}, api.leaseHex(id))), h('td', { colspan: 3 }, message('error', errorText(ttls[i].error)))) : row(id, ttls[i], fetchedAt)));
    body.replaceChildren(...rows);
    if (!rows.length) body.append(h('tr', {}, h('td', { colspan: 4, class: 'muted empty' }, 'No leases.')));
    card.hidden = !listed && !rows.length;
  }

  async function poll() {
    await load();
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  ticker = setInterval(() => countdowns.forEach((c) => c.tick()), 250);

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
    ctl.abort();
  };
}

