// Small time-series line charts drawn as inline SVG.

import { h, fmtTime } from './dom.js';

const W = 420;
const H = 170;
const PAD = { left: 40, right: 10, top: 10, bottom: 22 };

// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 8, 10]) {
    if (v <= m * p) return m * p;
  }
  return 10 * p;
}

function fmtAxis(v) {
  if (v === 0) return '0';
  if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
  if (v < 1) return String(Math.round(v * 100) / 100);
  return String(Math.round(v * 10) / 10);
}

// Chart is one chart: series are {name, cls, key} where key picks a
// sample's value (null: no value at that time).
export class Chart {
  constructor({ title, unit, series, testid }) {
    this.title = title;
    this.unit = unit;
    this.series = series;
    this.samples = [];
    this.span = 5 * 60 * 1000;
    this.hover = null;
    this.legend = h('div', { class: 'chart-legend' });
    this.svg = h('svg:svg', { class: 'chart-svg', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
    this.svg.addEventListener('mousemove', (e) => this.onMove(e));
    this.svg.addEventListener('mouseleave', () => {
      this.hover = null;
      this.draw();
    });
    this.el = h('section', { class: 'card chart', 'data-test': testid || null }, h('div', { class: 'chart-head' }, h('h3', {}, title), this.legend), this.svg);
  }

  update(samples, span) {
    this.samples = samples;
    if (span) this.span = span;
    this.draw();
  }

  onMove(e) {
    if (!this.samples.length) return;
    const r = this.svg.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * W;
    const t = this.t0 + ((x - PAD.left) / (W - PAD.left - PAD.right)) * this.span;
    let best = null;
    for (const s of this.samples) {
      if (!best || Math.abs(s.t - t) < Math.abs(best.t - t)) best = s;
    }
    this.hover = best;
    this.draw();
  }

  draw() {
    const now = this.samples.length ? this.samples[this.samples.length - 1].t : Date.now();
    this.t0 = now - this.span;
    const iw = W - PAD.left - PAD.right;
    const ih = H - PAD.top - PAD.bottom;
    let max = 0;
    for (const s of this.samples) {
      for (const se of this.series) {
        const v = s[se.key];
        if (v != null && v > max) max = v;
      }
    }
    max = niceMax(max);
    const x = (t) => PAD.left + ((t - this.t0) / this.span) * iw;
    const y = (v) => PAD.top + ih - (v / max) * ih;
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      parts.push(h('svg:line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      parts.push(h('svg:text', { class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtAxis(v)));
    }
    for (let m = 0; m <= Math.floor(this.span / 60000); m++) {
      const t = now - m * 60000;
      const label = m === 0 ? 'now' : `-${m}m`;
      parts.push(h('svg:text', { class: 'axis', x: x(t), y: H - 6, 'text-anchor': m === 0 ? 'end' : 'middle' }, label));
    }
    this.series.forEach((se, idx) => {
      // Split the line where a sample has no value.
      let seg = [];
      const segs = [];
      for (const s of this.samples) {
        const v = s[se.key];
        if (v == null || s.t < this.t0) {
          if (seg.length) segs.push(seg);
          seg = [];
          continue;
        }
        seg.push([x(s.t), y(v)]);
      }
      if (seg.length) segs.push(seg);
      for (const pts of segs) {
        const d = pts.map((p, i) => (i ? 'L' : 'M') + p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join('');
        if (idx === 0 && pts.length > 1) {
          const area = d + `L${pts[pts.length - 1][0].toFixed(1)} ${y(0)}L${pts[0][0].toFixed(1)} ${y(0)}Z`;
          parts.push(h('svg:path', { class: `area ${se.cls}`, d: area }));
        }
        parts.push(h('svg:path', { class: `line ${se.cls}`, d: pts.length > 1 ? d : d + 'l0.1 0' }));
      }
    });
    if (this.hover) {
      const hx = x(this.hover.t);
      parts.push(h('svg:line', { class: 'guide', x1: hx, x2: hx, y1: PAD.top, y2: PAD.top + ih }));
    }
    if (!this.samples.length) {
      parts.push(h('svg:text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'collecting samples…'));
    }
    this.svg.replaceChildren(...parts);
    const at = this.hover || this.samples[this.samples.length - 1];
    this.legend.replaceChildren(
      ...this.series.map((se) => {
        const v = at ? at[se.key] : null;
        return h('span', { class: `legend-item ${se.cls}` }, h('i', {}), `${se.name} `, h('b', {}, v == null ? '–' : `${fmtAxis(v)}${this.unit}`));
      }),
      ...(at && this.hover ? [h('span', { class: 'legend-time' }, fmtTime(new Date(at.t)))] : []),
    );
  }
}
