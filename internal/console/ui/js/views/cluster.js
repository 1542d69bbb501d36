// The cluster view: members, leader, alarms, ranges, and charts of the
// serving node's traffic.

import * as api from '../api.js';
import { h, icon, badge, message, errorText, fmtBytes, fmtNum } from '../dom.js';
import { Chart } from '../chart.js';

const POLL_MS = 2000;

function stat(label, value, sub, kind = '') {
  return h('div', { class: `stat ${kind}` }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value), sub ? h('div', { class: 'stat-sub' }, sub) : null);
}

function roleBadge(role) {
  const kind = { leader: 'accent', follower: '', learner: 'muted', unknown: 'bad' }[role] ?? '';
  return badge(role, kind);
}

function health(m) {
  if (m.healthy) return h('span', { class: 'health ok' }, h('i', {}), 'healthy');
  if (!m.answered) return h('span', { class: 'health bad' }, h('i', {}), 'unreachable');
  return h('span', { class: 'health warn' }, h('i', {}), 'degraded');
}

function quotaBar(used, quota) {
  if (!quota) return null;
  const pct = Math.min(100, (used / quota) * 100);
  const bar = h('span', { class: 'bar-fill' });
  bar.style.width = `${pct.toFixed(1)}%`;
  return h('span', { class: `bar ${pct > 80 ? 'hot' : ''}`, title: `${pct.toFixed(1)}% of the ${fmtBytes(quota)} quota` }, bar);
}

function keySpan(r) {
  if (r.system) return h('span', { class: 'muted' }, 'system: members, auth, alarms');
  const start = api.unb64(r.start);
  const end = r.end == null ? null : api.unb64(r.end);
  if (!start.length && end === null) return h('span', { class: 'muted' }, 'all keys');
  return h('code', {}, `[${api.show(start)}, ${end === null ? '∞' : api.show(end)})`);
}

export function mount(el) {
  const updated = h('span', { class: 'muted small' });
  const summary = h('div', { class: 'stats' });
  const alarms = h('div');
  const membersBody = h('tbody');
  const membersTable = h(
    'table',
    { class: 'table', 'data-test': 'members' },
    h('thead', {}, h('tr', {}, ['Member', 'ID', 'Role', 'Health', 'Version', 'DB size', 'Term', 'Index', 'Applied', 'Lag', 'Client URLs'].map((c) => h('th', {}, c)))),
    membersBody,
  );
  const rangesBody = h('tbody');
  const rangesTable = h(
    'table',
    { class: 'table', 'data-test': 'ranges' },
    h('thead', {}, h('tr', {}, ['Range', 'Keys', 'Leader', 'Replicas'].map((c) => h('th', {}, c)))),
    rangesBody,
  );
  const charts = {
    writes: new Chart({ title: 'Writes', unit: '/s', testid: 'chart-writes', series: [{ name: 'put, delete, txn', cls: 's1', key: 'writes' }] }),
    reads: new Chart({ title: 'Reads', unit: '/s', testid: 'chart-reads', series: [{ name: 'range', cls: 's2', key: 'reads' }] }),
    latency: new Chart({
      title: 'Latency',
      unit: ' ms',
      testid: 'chart-latency',
      series: [
        { name: 'write p99', cls: 's1 dashed', key: 'write_p99' },
        { name: 'write p50', cls: 's1', key: 'write_p50' },
        { name: 'read p99', cls: 's2 dashed', key: 'read_p99' },
        { name: 'read p50', cls: 's2', key: 'read_p50' },
      ],
    }),
  };
  const metricsNote = h('div');
  const err = h('div');
  el.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Cluster'), updated),
    err,
    summary,
    alarms,
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Members')), h('div', { class: 'table-wrap' }, membersTable)),
    h('div', { class: 'section-head' }, h('h2', {}, 'Traffic on this node'), h('span', { class: 'muted small' }, 'last 5 minutes, sampled every second')),
    metricsNote,
    h('div', { class: 'charts' }, charts.writes.el, charts.reads.el, charts.latency.el),
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Ranges')), h('div', { class: 'table-wrap' }, rangesTable)),
  );
  for (const c of Object.values(charts)) c.draw();

  let stopped = false;
  let timer = null;
  const ctl = new AbortController();

  function renderOverview(ov) {
    const names = new Map(ov.members.map((m) => [m.id, m.name || m.id]));
    const leader = ov.members.find((m) => m.id === ov.leader);
    const self = names.get(ov.member_id) || ov.member_id;
    updated.textContent = `served by ${self} · updated ${new Date(ov.time).toLocaleTimeString('en-GB')}`;
    const dbSrc = leader && leader.answered ? leader : ov.members.find((m) => m.answered);
    summary.replaceChildren(
      stat('Leader', ov.leader ? names.get(ov.leader) || ov.leader : 'none', ov.leader ? `ID ${ov.leader}` : 'no leader known', ov.leader ? '' : 'bad'),
      stat('Members', `${ov.health.healthy} / ${ov.health.total}`, 'healthy', ov.health.healthy < ov.health.total ? 'warn' : 'good'),
      stat('Revision', fmtNum(ov.revision), ov.compact_revision ? `compacted at ${fmtNum(ov.compact_revision)}` : 'no compaction yet'),
      stat('Raft term', fmtNum(ov.raft_term), `cluster ${ov.cluster_id}`),
      stat('DB size', dbSrc ? fmtBytes(dbSrc.db_size) : '–', dbSrc && dbSrc.db_size_quota ? `quota ${fmtBytes(dbSrc.db_size_quota)}` : ''),
      stat('Alarms', ov.alarms.length ? String(ov.alarms.length) : 'none', ov.alarms.length ? 'see below' : 'all clear', ov.alarms.length ? 'bad' : 'good'),
    );
    alarms.replaceChildren(
      ...ov.alarms.map((a) => message('error', badge(a.alarm, 'bad'), ` raised by ${names.get(a.member_id) || a.member_id}: `, a.alarm === 'NOSPACE' ? 'the storage quota is reached; writes are refused until an operator compacts, defragments and disarms the alarm.' : 'see `synod alarm list`.')),
    );
    membersBody.replaceChildren(
      ...ov.members.map((m) => {
        const row = h(
          'tr',
          { 'data-member': m.name || m.id, class: m.healthy ? '' : 'row-warn' },
          h('td', { class: 'strong' }, m.role === 'leader' ? icon('crown', 'icon crown') : null, m.name || h('span', { class: 'muted' }, '(not started)'), m.id === ov.member_id ? h('div', { class: 'muted small' }, 'serving this page') : null),
          h('td', {}, h('code', {}, m.id)),
          h('td', {}, roleBadge(m.role)),
          h('td', {}, health(m)),
          h('td', { class: 'nowrap' }, m.synod_version || (m.version ? '' : '–'), m.version ? h('div', { class: 'muted small' }, `etcd API ${m.version}`) : null),
          h('td', {}, m.answered ? [fmtBytes(m.db_size), quotaBar(m.db_size, m.db_size_quota)] : '–'),
          h('td', { class: 'num' }, m.answered ? fmtNum(m.raft_term) : '–'),
          h('td', { class: 'num' }, m.answered ? fmtNum(m.raft_index) : '–'),
          h('td', { class: 'num' }, m.answered ? fmtNum(m.raft_applied_index) : '–'),
          h('td', { class: `num ${m.lag > 100 ? 'hot' : ''}` }, m.lag >= 0 ? fmtNum(m.lag) : '–'),
          h('td', { class: 'urls' }, m.client_urls.map((u) => h('div', {}, u))),
        );
        if (!m.errors.length) return row;
        return [row, h('tr', { class: 'row-errors' }, h('td', { colspan: 11 }, m.errors.map((e) => h('div', {}, e))))];
      }).flat(),
    );
    rangesBody.replaceChildren(
      ...ov.ranges.map((r) =>
        h(
          'tr',
          { 'data-range': r.id },
          h('td', { class: 'strong' }, `r${r.id}`),
          h('td', {}, keySpan(r)),
          h('td', {}, r.leader ? names.get(r.leader) || r.leader : h('span', { class: 'bad-text' }, 'none')),
          h(
            'td',
            {},
            r.voters.map((id) => badge(names.get(id) || id, id === r.leader ? 'accent' : '')),
            r.learners.map((id) => badge(`${names.get(id) || id} (learner)`, 'muted')),
          ),
        ),
      ),
    );
  }

  async function loadOverview() {
    try {
      renderOverview(await api.get('api/overview', { signal: ctl.signal }));
      err.replaceChildren();
    } catch (e) {
      if (!stopped) err.replaceChildren(message('error', `Cannot load the cluster overview: ${errorText(e)}`));
    }
  }

  async function loadMetrics() {
    try {
      const m = await api.get('api/metrics', { signal: ctl.signal });
      const span = Math.max(60000, (m.interval_ms || 1000) * 300);
      for (const c of Object.values(charts)) c.update(m.samples, span);
      metricsNote.replaceChildren();
    } catch (e) {
      if (!stopped) metricsNote.replaceChildren(message('error', `Cannot load the node's metrics: ${errorText(e)}`));
    }
  }

  async function poll() {
    await Promise.all([loadOverview(), loadMetrics()]);
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();

  return () => {
    stopped = true;
    clearTimeout(timer);
    ctl.abort();
  };
}
