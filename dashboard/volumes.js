// The Volumes panel: a card per volume (counters, replicas, the warning
// banner, jobs and charts) and the header's summary, drawn from what
// model.applyVolumes() returns. Cards are kept by volume and updated in
// place; a card is rebuilt only when its children change.

import { $, agoEl, h, similarEl, updateAgos } from './dom.js';
import { buildChart, drawChart } from './chart.js';
import { buildJobs, renderJobs } from './jobs.js';
import { exactRange, fmtBytes, fmtCount, fmtExact, fmtFullTime, fmtRange, plural } from './format.js';
import { BAD_WINDOW_MS, REPORTS_KEEP, acknowledge } from './model.js';

// key in stats, label, format
const VOL_COUNTERS = [
  ['reads', 'reads', fmtCount],
  ['writes', 'writes', fmtCount],
  ['read_bytes', 'read', fmtBytes],
  ['write_bytes', 'written', fmtBytes],
  ['failures', 'quorum failures', fmtCount],
];

// key in stats, label, format, title
const CHILD_COUNTERS = [
  ['errors', 'errors', fmtCount, 'I/O errors this child returned'],
  ['bad_reports', 'bad reports', fmtCount, 'QUORUM_REPORT_BAD events about this child'],
  ['corrupted_bytes', 'lost votes', fmtBytes, 'bytes on which this child lost the vote (corrupted data)'],
  ['repaired_bytes', 'repaired', fmtBytes, 'bytes rewritten with the winning data'],
];

function buildChild(vol, c) {
  const row = { name: c.name, counters: {} };
  row.badge = h('span', { class: 'badge', 'data-badge': '' });
  row.stateText = h('span', { class: 'state-text' });
  row.stale = h('div', { class: 'stale-bytes', 'data-counter': 'stale_bytes', hidden: true });
  row.last = h('td', { class: 'c-last' });
  row.uri = h('div', { class: 'uri' });
  const nums = CHILD_COUNTERS.map(([key]) => {
    const el = h('span', { class: 'num', 'data-counter': key });
    row.counters[key] = el;
    return h('td', { class: `c-num c-${key}` }, el);
  });
  row.el = h('tr', { class: 'child', 'data-child': `${vol}/${c.name}`, 'data-name': c.name },
    h('td', { class: 'c-name' },
      h('div', { class: 'name' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), c.name), row.uri),
    h('td', { class: 'c-state' }, row.badge, row.stateText, row.stale),
    nums, row.last);
  return row;
}

function buildVolume(app, v, childKey) {
  const view = { name: v.name, childKey, children: new Map(), counters: {} };
  view.health = h('span', { class: 'health', 'data-health': 'ok' }, 'healthy');
  view.meta = h('span', { class: 'vol-meta' });
  view.banner = h('div', { class: 'banner', role: 'alert', hidden: true });
  const counterEls = VOL_COUNTERS.map(([key, label]) => {
    const val = h('span', { class: 'num', 'data-counter': key });
    view.counters[key] = val;
    return h('div', { class: `stat stat-${key}` }, h('span', { class: 'label' }, label), val);
  });
  const thead = h('thead', null, h('tr', null,
    h('th', { class: 'c-name' }, 'replica'),
    h('th', { class: 'c-state' }, 'state'),
    CHILD_COUNTERS.map(([key, label, , title]) => h('th', { class: `c-num c-${key}`, title }, label)),
    h('th', { class: 'c-last' }, 'last bad report')));
  const tbody = h('tbody');
  for (const c of v.children || []) {
    const row = buildChild(v.name, c);
    view.children.set(c.name, row);
    tbody.append(row.el);
  }
  view.chart = buildChart();
  view.jobs = buildJobs(app, v.name);
  view.el = h('article', { class: 'volume', 'data-volume': v.name, id: `volume-${v.name}` },
    h('header', { class: 'vol-head' }, h('h3', { class: 'vol-name' }, v.name), view.meta, view.health),
    view.banner,
    h('div', { class: 'vol-stats' }, counterEls),
    h('table', { class: 'children' }, thead, tbody),
    view.jobs.el,
    view.chart.el);
  return view;
}

// The volume's card, built anew when its children changed (the jobs list
// carries over).
function ensureView(app, v) {
  let view = app.views.get(v.name);
  const childKey = (v.children || []).map((c) => c.name).join('\u0000');
  if (view && view.childKey === childKey) return view;
  const old = view;
  view = buildVolume(app, v, childKey);
  if (old) {
    if (old.jobs.list) renderJobs(app, view.jobs, old.jobs.list);
    old.el.replaceWith(view.el);
  } else {
    $('volumes').append(view.el);
  }
  app.views.set(v.name, view);
  app.hooks.pollJobsSoon();
  return view;
}

function setNum(el, val, fmt) {
  el.textContent = fmt(val);
  el.dataset.value = val === undefined ? '' : String(val);
  el.title = Number.isFinite(val) ? fmtExact(val) : 'not reported by this server';
}

function renderChild(row, ch) {
  const { c, badness } = ch;
  for (const [key, , fmt] of CHILD_COUNTERS) {
    const el = row.counters[key];
    const val = c.stats ? c.stats[key] : undefined;
    setNum(el, val, fmt);
    el.classList.toggle('nonzero', Number.isFinite(val) && val > 0 && key !== 'repaired_bytes');
    el.classList.toggle('good', Number.isFinite(val) && val > 0 && key === 'repaired_bytes');
  }
  row.el.dataset.state = c.state || 'unknown';
  if (badness) row.el.dataset.bad = badness; else delete row.el.dataset.bad;
  row.badge.textContent = ch.badge;
  row.badge.dataset.badge = ch.kind;
  row.badge.className = `badge badge-${ch.kind}`;
  row.stateText.textContent = ch.stateText;
  // Bytes this child missed that the resync has not copied back yet.
  const sb = ch.staleBytes;
  row.stale.dataset.value = c.stale_bytes === undefined ? '' : String(c.stale_bytes);
  row.stale.hidden = !(sb > 0);
  row.stale.textContent = sb > 0 ? `${fmtBytes(sb)} stale` : '';
  row.stale.title = sb > 0
    ? `${fmtExact(sb)} bytes of writes this replica missed; they are left out of its votes until the resync copies them back`
    : '';
  row.el.dataset.staleBytes = String(sb);
  const r = ch.lastReport;
  row.last.textContent = '';
  if (r) {
    row.last.append(
      h('div', { class: 'range' }, fmtRange(r.offset, r.bytes)),
      h('div', { class: 'ago muted' }, `${r.type || ''}${r.error ? ' error' : ''}, `, agoEl(r.at)));
    row.last.title = `${exactRange(r.offset, r.bytes)}, ${r.type || ''}` +
      `${r.error ? `, error: ${r.error}` : ''}, ${fmtFullTime(r.at)}`;
  } else {
    row.last.append(h('span', { class: 'muted' }, 'none seen'));
    row.last.title = '';
  }
  row.uri.textContent = [c.backend, c.uri].filter(Boolean).join(' \u00b7 ');
  row.uri.title = row.uri.textContent;
}

// One line of the banner about a bad or failed replica.
function badChildLine(ch) {
  const { c, badness, mark: m, reports } = ch;
  const li = h('li', { class: `warn-child warn-${badness}`, 'data-bad-child': c.name });
  li.append(h('strong', null, `Replica ${c.name} `),
    h('span', { class: `badge badge-${badness}` }, badness === 'failed' ? 'FAILED' : 'BAD'), ' ');
  if (badness === 'failed') li.append('out of the vote. ');
  if (reports.length) {
    const r = reports[reports.length - 1];
    const range = h('span', { class: 'range', title: exactRange(r.offset, r.bytes) }, fmtRange(r.offset, r.bytes));
    if (badness === 'failed') li.append('Last: ');
    if (r.error) {
      li.append(`${r.type || 'request'} of `, range, ` failed (${r.error})`);
      if (r.suppressed > 0) li.append(similarEl(r.suppressed));
    } else {
      li.append(`lost the ${r.type ? `${r.type} ` : ''}vote on `, range);
    }
    li.append(', ', agoEl(r.at));
    if (m.lastRewriteAt >= r.at) li.append(h('span', { class: 'repaired' }, ' \u2014 rewritten with the winning data'));
    // A folded event stands for its `suppressed` reports.
    const total = reports.reduce((sum, x) => sum + (x.suppressed > 0 ? x.suppressed : 1), 0);
    if (total > 1) {
      const ranges = new Set(reports.map((x) => `${x.offset}+${x.bytes}`));
      const n = reports.length >= REPORTS_KEEP ? `over ${fmtCount(total)}` : fmtCount(total);
      li.append(h('span', { class: 'muted' },
        `; ${n} reports on ${plural(ranges.size, 'range')} in the last ${BAD_WINDOW_MS / 60000} min`));
    }
    li.append('.');
  } else if (m.counterNote && badness !== 'failed') {
    li.append(`${m.counterNote}, `, agoEl(m.counterBumpAt), '.');
  }
  return li;
}

function renderBanner(app, view, vm) {
  const b = view.banner;
  const { bad, failures, mismatches } = vm;
  if (!bad.length && !failures.length && !mismatches.length) {
    b.hidden = true;
    b.textContent = '';
    delete b.dataset.sig;
    b.removeAttribute('data-bad-children');
    return;
  }
  const sig = JSON.stringify([bad.map((x) => [x.c.name, x.badness, x.mark.reports.length, x.mark.counterBumpAt,
    x.mark.lastRewriteAt, x.reports.length]), failures.length, mismatches.length]);
  if (b.dataset.sig === sig && !b.hidden) return;
  b.dataset.sig = sig;
  b.hidden = false;
  b.textContent = '';
  b.dataset.badChildren = bad.map((x) => x.c.name).join(' ');
  b.dataset.level = failures.length || mismatches.length || bad.some((x) => x.badness === 'failed') ? 'critical' : 'warning';

  const lines = [];
  for (const f of failures.slice(-1)) {
    lines.push(h('li', { class: 'warn-failure' },
      h('strong', null, 'Quorum failure: '),
      `${plural(failures.length, 'request')} could not reach the vote threshold`,
      ` (latest: ${f.type || 'request'} of `, h('span', { class: 'range' }, fmtRange(f.offset, f.bytes)),
      ', ', agoEl(f.at), '). Clients got errors.'));
  }
  for (const f of mismatches.slice(-1)) {
    lines.push(h('li', { class: 'warn-failure' },
      h('strong', null, 'blkverify mismatch: '),
      `the replicas differ at byte ${fmtExact(f.offset)} (${fmtBytes(f.offset)}), `, agoEl(f.at), '.'));
  }
  for (const ch of bad) lines.push(badChildLine(ch));
  const ack = h('button', {
    type: 'button', class: 'ack', title: 'hide these warnings until something new happens',
    onclick: () => { acknowledge(app.model, vm.name, Date.now()); app.hooks.refresh(); },
  }, 'acknowledge');
  b.append(h('div', { class: 'banner-head' }, h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
    h('ul', null, lines), ack));
}

const HEALTH_TEXT = {
  failing: (vm) => (vm.failures.length ? 'QUORUM FAILURES' : 'BLKVERIFY MISMATCH'),
  degraded: (vm) => `DEGRADED: ${plural(vm.bad.length, 'bad replica')}`,
  resyncing: (vm) => `RESYNCING: ${plural(vm.stale, 'stale replica')}`,
  ok: () => 'healthy',
};

function renderVolume(app, vm, now) {
  const v = vm.volume;
  const view = ensureView(app, v);
  const flags = [
    fmtBytes(v.size),
    `votes ${v.vote_threshold} of ${vm.children.length}`,
    `read ${v.read_pattern || '?'}`,
    v.rewrite_corrupted ? 'rewrite on' : 'rewrite off',
  ];
  if (v.blkverify) flags.push('blkverify');
  view.meta.textContent = flags.join(' · ');
  view.meta.title = `size ${fmtExact(v.size)} bytes`;
  for (const [key, , fmt] of VOL_COUNTERS) setNum(view.counters[key], v.stats ? v.stats[key] : undefined, fmt);
  drawChart(view.chart, vm.samples, now, vm.haveStats);
  for (const ch of vm.children) {
    const row = view.children.get(ch.c.name);
    if (row) renderChild(row, ch);
  }
  renderBanner(app, view, vm);
  view.el.dataset.health = vm.health;
  view.health.dataset.health = vm.health;
  view.health.textContent = HEALTH_TEXT[vm.health](vm);
}

/** Draws the volumes and the header's summary from model.applyVolumes()'s answer. */
export function renderVolumes(app, result, now) {
  for (const vm of result.volumes) renderVolume(app, vm, now);
  const seen = new Set(result.volumes.map((vm) => vm.name));
  for (const [name, view] of app.views) {
    if (!seen.has(name)) { view.el.remove(); app.views.delete(name); }
  }
  // Keep the server's order.
  const container = $('volumes');
  for (const vm of result.volumes) container.append(app.views.get(vm.name).el);
  const empty = $('volumes-empty');
  empty.hidden = seen.size > 0;
  empty.textContent = 'This server has no volumes.';

  const { bad, failing, stale } = result;
  const sum = $('summary');
  sum.textContent = '';
  sum.append(h('span', null, plural(seen.size, 'volume')), h('span', null, plural(result.children, 'replica')));
  if (bad) sum.append(h('span', { class: 'sum-bad' }, plural(bad, 'bad replica')));
  if (failing) sum.append(h('span', { class: 'sum-bad' }, `${plural(failing, 'volume')} with quorum failures`));
  if (stale) sum.append(h('span', { class: 'sum-stale' }, `${plural(stale, 'replica')} resyncing`));
  if (!bad && !failing && !stale && seen.size) sum.append(h('span', { class: 'sum-ok' }, 'all replicas agree'));
  document.body.dataset.alert = bad || failing ? 'yes' : 'no';
  updateAgos();
  document.title = bad || failing
    ? `\u26a0 ${bad ? plural(bad, 'bad replica') : 'quorum failures'} \u2014 quorum`
    : 'quorum';
}
