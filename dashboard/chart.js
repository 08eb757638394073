// A volume's sparkline charts, in inline SVG, drawn from its I/O history
// (history.js: one sample a second, kept by the server): throughput and
// operations (read and write), the bytes the scrubs scanned and the resync
// copied, and the latency of reads and writes (median and 99th
// percentile). niceMax, chartSpan and paths are pure (tested by
// chart.test.js); buildChart and drawChart work on the DOM.

import { h, s } from './dom.js';
import { fmtLatency, fmtOps, fmtRate, fmtSpan } from './format.js';
import { HISTORY_WINDOW_MS } from './history.js';

const CW = 600;
const CH = 100;
const MIN_SPAN_MS = 60 * 1000;
// Each sample covers one second.
const SAMPLE_MS = 1000;
// Samples further apart than this (the page could not poll, the server
// restarted) are not joined by a line.
const GAP_MS = 5 * SAMPLE_MS;
// Half the width of a lone sample's dash, in the chart's units.
const LONE = 3;

// The charts of a volume: the key of each series in a sample (history.js
// chartSample), its legend, and its colour class; `area`: whether the
// series are filled below.
const CHARTS = [
  {
    name: 'bytes', title: 'throughput', binary: true, area: true, fmt: fmtRate,
    series: [['rb', 'read', 'read'], ['wb', 'write', 'write']],
  },
  {
    name: 'ops', title: 'operations', binary: false, area: true, fmt: (v) => `${fmtOps(v)}/s`,
    series: [['ro', 'read', 'read'], ['wo', 'write', 'write']],
  },
  {
    name: 'jobs', title: 'scrub and resync', binary: true, area: true, fmt: fmtRate,
    series: [['sb', 'scrub', 'scrub'], ['yb', 'resync', 'resync']],
  },
  {
    name: 'latency', title: 'latency p50 / p99', binary: false, area: false, fmt: fmtLatency,
    series: [['rl50', 'read p50', 'read'], ['rl99', 'p99', 'read p99'],
      ['wl50', 'write p50', 'write'], ['wl99', 'p99', 'write p99']],
  },
];

/** The axis maximum at or above v: 1-2-5 steps, in KiB/MiB (binary) or k/M. */
export function niceMax(v, binary) {
  if (!(v > 0)) return binary ? 1024 : 1;
  let scale = 1;
  if (binary) { while (v / scale >= 1024) scale *= 1024; } else { while (v / scale >= 1000) scale *= 1000; }
  const x = v / scale;
  const mag = 10 ** Math.floor(Math.log10(x));
  const f = x / mag;
  const step = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  // 1000 KiB/s reads better as 1 MiB/s.
  if (binary && step * mag >= 1000) return 1024 * scale;
  return step * mag * scale;
}

/**
 * The span a chart shows: what the history holds, from one minute up to
 * HISTORY_WINDOW_MS, so that it says something from the first seconds on.
 */
export function chartSpan(samples, now) {
  const first = samples.length ? samples[0].t - SAMPLE_MS : now;
  return Math.min(HISTORY_WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
}

/**
 * The SVG path data of one series (`key` of each sample): {line, area,
 * points}. A gap of over GAP_MS, or a sample without the value (a second
 * without such requests has no latency), breaks the line.
 */
export function paths(samples, key, now, max, span) {
  const x = (t) => ((t - (now - span)) / span) * CW;
  const y = (v) => CH - Math.min(1, v / max) * (CH - 2) - 1;
  const xy = (p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`;
  let line = '';
  let area = '';
  let points = 0;
  let seg = [];
  const flush = () => {
    if (!seg.length) return;
    // A lone sample (a second of I/O between idle ones) is a short dash.
    const pts = seg.length === 1 ? [[seg[0][0] - LONE, seg[0][1]], [seg[0][0] + LONE, seg[0][1]]] : seg;
    line += `M${pts.map(xy).join('L')}`;
    area += `M${pts[0][0].toFixed(1)},${CH}L${pts.map(xy).join('L')}L${pts[pts.length - 1][0].toFixed(1)},${CH}Z`;
    seg = [];
  };
  let prevT = null;
  for (const smp of samples) {
    const v = smp[key];
    if (!Number.isFinite(v) || (prevT !== null && smp.t - prevT > GAP_MS)) flush();
    if (Number.isFinite(v)) {
      seg.push([x(smp.t), y(v)]);
      points++;
    }
    prevT = smp.t;
  }
  flush();
  return { line, area, points };
}

function buildOne(spec) {
  const svg = s('svg', { viewBox: `0 0 ${CW} ${CH}`, preserveAspectRatio: 'none', class: 'spark', role: 'img' });
  const grid = s('g', { class: 'grid' });
  for (const y of [0.25, 0.5, 0.75]) grid.append(s('line', { x1: 0, x2: CW, y1: CH * y, y2: CH * y }));
  for (let i = 1; i < 5; i++) grid.append(s('line', { x1: (CW * i) / 5, x2: (CW * i) / 5, y1: 0, y2: CH, class: 'v' }));
  svg.append(grid);
  const c = {
    spec,
    series: [],
    max: h('span', { class: 'axis axis-max' }),
    note: h('span', { class: 'chart-note muted', hidden: true }),
    left: h('span', { class: 'axis axis-left' }),
  };
  const legend = h('span', { class: 'legend' });
  for (const [key, label, cls] of spec.series) {
    const cl = cls.replace(/ /g, '-');
    const one = {
      key,
      area: spec.area ? s('path', { class: `area area-${cl}`, 'data-series': key }) : null,
      line: s('path', { class: `line line-${cl}`, 'data-series': key }),
      now: h('span', { class: 'num', 'data-now': key }, '\u2014'),
    };
    c.series.push(one);
    legend.append(h('span', { class: `key key-${cl}` }, `${label} `), one.now);
  }
  for (const one of c.series) if (one.area) svg.append(one.area);
  for (const one of c.series) svg.append(one.line);
  c.el = h('figure', { class: 'chart', 'data-chart': spec.name },
    h('figcaption', null, h('span', { class: 'chart-title' }, spec.title), legend),
    h('div', { class: 'plot' }, svg, c.max, c.note, c.left, h('span', { class: 'axis axis-right' }, 'now')));
  return c;
}

/** The charts of one volume: {el, charts}. */
export function buildChart() {
  const charts = CHARTS.map(buildOne);
  return { el: h('div', { class: 'charts' }, charts.map((c) => c.el)), charts };
}

const NOTES = {
  loading: 'loading the history\u2026',
  ok: 'no samples yet',
  missing: 'this server keeps no I/O history',
};

function drawOne(c, samples, now, span, state) {
  const { spec } = c;
  let peak = 0;
  for (const smp of samples) {
    for (const one of c.series) {
      const v = smp[one.key];
      if (Number.isFinite(v) && v > peak) peak = v;
    }
  }
  const max = niceMax(peak, spec.binary);
  const last = samples[samples.length - 1];
  for (const one of c.series) {
    const p = paths(samples, one.key, now, max, span);
    one.line.setAttribute('d', p.line);
    one.line.dataset.points = String(p.points);
    one.line.dataset.peak = String(samples.reduce((m, smp) =>
      (Number.isFinite(smp[one.key]) && smp[one.key] > m ? smp[one.key] : m), 0));
    if (one.area) one.area.setAttribute('d', p.area);
    one.now.textContent = last ? spec.fmt(last[one.key]) : '\u2014';
  }
  c.left.textContent = `\u2212${fmtSpan(span)}`;
  c.max.textContent = spec.fmt(max);
  c.note.hidden = samples.length > 0;
  c.note.textContent = NOTES[state] || '';
  c.el.dataset.samples = String(samples.length);
}

/** Draws a volume's history (history.js) up to now. */
export function drawChart(chart, hist, now) {
  const span = chartSpan(hist.samples, now);
  for (const c of chart.charts) drawOne(c, hist.samples, now, span, hist.state);
}
