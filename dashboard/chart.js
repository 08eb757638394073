// A volume's two sparkline charts (throughput and operations, read and
// write), in inline SVG. niceMax, chartSpan and paths are pure (tested by
// chart.test.js); buildChart and drawChart work on the DOM.

import { h, s } from './dom.js';
import { fmtOps, fmtRate, fmtSpan } from './format.js';
import { CHART_WINDOW_MS, POLL_MS } from './model.js';

const CW = 600;
const CH = 100;
const MIN_SPAN_MS = 60 * 1000;

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
 * The span a chart shows: what this page has seen, from one minute up to
 * CHART_WINDOW_MS, so that it says something from the first polls on.
 */
export function chartSpan(samples, now) {
  const first = samples.length ? samples[0].t - POLL_MS : now;
  return Math.min(CHART_WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
}

/**
 * The SVG path data of one series (`key` of each sample): {line, area}.
 * A gap of over three polls breaks the line.
 */
export function paths(samples, key, now, max, span) {
  const x = (t) => ((t - (now - span)) / span) * CW;
  const y = (v) => CH - Math.min(1, v / max) * (CH - 2) - 1;
  const xy = (p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`;
  let line = '';
  let area = '';
  let seg = [];
  const flush = () => {
    if (!seg.length) return;
    const pts = seg.length === 1 ? [seg[0], [seg[0][0] + 2, seg[0][1]]] : seg;
    line += `M${pts.map(xy).join('L')}`;
    area += `M${pts[0][0].toFixed(1)},${CH}L${pts.map(xy).join('L')}L${pts[pts.length - 1][0].toFixed(1)},${CH}Z`;
    seg = [];
  };
  let prevT = null;
  for (const smp of samples) {
    if (prevT !== null && smp.t - prevT > POLL_MS * 3) flush();
    seg.push([x(smp.t), y(smp[key])]);
    prevT = smp.t;
  }
  flush();
  return { line, area };
}

function buildOne(title, unit) {
  const svg = s('svg', { viewBox: `0 0 ${CW} ${CH}`, preserveAspectRatio: 'none', class: 'spark', role: 'img' });
  const grid = s('g', { class: 'grid' });
  for (const y of [0.25, 0.5, 0.75]) grid.append(s('line', { x1: 0, x2: CW, y1: CH * y, y2: CH * y }));
  for (let i = 1; i < 5; i++) grid.append(s('line', { x1: (CW * i) / 5, x2: (CW * i) / 5, y1: 0, y2: CH, class: 'v' }));
  const c = {
    readArea: s('path', { class: 'area area-read' }),
    writeArea: s('path', { class: 'area area-write' }),
    readLine: s('path', { class: 'line line-read' }),
    writeLine: s('path', { class: 'line line-write' }),
    max: h('span', { class: 'axis axis-max' }),
    readNow: h('span', { class: 'num', 'data-now': 'read' }, '—'),
    writeNow: h('span', { class: 'num', 'data-now': 'write' }, '—'),
    note: h('span', { class: 'chart-note muted', hidden: true }),
    left: h('span', { class: 'axis axis-left' }),
  };
  svg.append(grid, c.readArea, c.writeArea, c.readLine, c.writeLine);
  c.el = h('figure', { class: 'chart', 'data-chart': unit },
    h('figcaption', null,
      h('span', { class: 'chart-title' }, title),
      h('span', { class: 'legend' },
        h('span', { class: 'key key-read' }, 'read '), c.readNow,
        h('span', { class: 'key key-write' }, 'write '), c.writeNow)),
    h('div', { class: 'plot' }, svg, c.max, c.note, c.left, h('span', { class: 'axis axis-right' }, 'now')));
  return c;
}

/** The charts of one volume: {el, bytes, ops}. */
export function buildChart() {
  const bytes = buildOne('throughput', 'bytes');
  const ops = buildOne('operations', 'ops');
  return { el: h('div', { class: 'charts' }, bytes.el, ops.el), bytes, ops };
}

function drawOne(c, samples, now, span, rk, wk, binary, fmt, haveStats) {
  const peak = samples.reduce((m, smp) => Math.max(m, smp[rk], smp[wk]), 0);
  const max = niceMax(peak, binary);
  const r = paths(samples, rk, now, max, span);
  const w = paths(samples, wk, now, max, span);
  c.left.textContent = `\u2212${fmtSpan(span)}`;
  c.readLine.setAttribute('d', r.line);
  c.readArea.setAttribute('d', r.area);
  c.writeLine.setAttribute('d', w.line);
  c.writeArea.setAttribute('d', w.area);
  c.max.textContent = fmt(max);
  const last = samples[samples.length - 1];
  c.readNow.textContent = last ? fmt(last[rk]) : '—';
  c.writeNow.textContent = last ? fmt(last[wk]) : '—';
  c.note.hidden = samples.length > 0;
  c.note.textContent = haveStats ? 'collecting…' : 'this server reports no I/O counters';
}

/** Draws a volume's rate samples ({t, rb, wb, ro, wo}) up to now. */
export function drawChart(chart, samples, now, haveStats) {
  const span = chartSpan(samples, now);
  drawOne(chart.bytes, samples, now, span, 'rb', 'wb', true, fmtRate, haveStats);
  drawOne(chart.ops, samples, now, span, 'ro', 'wo', false, (v) => `${fmtOps(v)}/s`, haveStats);
}
