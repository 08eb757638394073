// The Volumes panel: a card per volume (counters, replicas with their
// damage maps and remove buttons, the form that adds one, the warning
// banner, jobs and charts) and the header's
// summary, drawn from what model.applyVolumes() returns. Cards are kept by
// volume and updated in place; a card is rebuilt only when its children
// change.

import { $, agoEl, h, similarEl, updateAgos } from './dom.js';
import { buildChart, drawChart } from './chart.js';
import { buildDamageMap, renderDamageMap } from './damage.js';
import { buildJobs, renderJobs } from './jobs.js';
import { buildReplicas, removeButton } from './replicas.js';
import { exactRange, fmtBytes, fmtCount, fmtExact, fmtFullTime, fmtRange, plural } from './format.js';
import { FAILURE_WINDOW_MS, badStates, badSummary } from './model.js';

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

// Columns of the children table: name, state, the counters, last report.
const CHILD_COLUMNS = 3 + CHILD_COUNTERS.length;

function buildChild(app, vol, c, replicas) {
  const row = { name: c.name, counters: {} };
  row.badge = h('span', { class: 'badge', 'data-badge': '' });
  row.stale = h('div', { class: 'stale-bytes', 'data-counter': 'stale_bytes', hidden: true });
  row.damaged = h('div', { class: 'damaged-bytes', 'data-counter': 'damaged_bytes', hidden: true });
  row.last = h('td', { class: 'c-last' });
  row.uri = h('div', { class: 'uri' });
  const nums = CHILD_COUNTERS.map(([key]) => {
    const el = h('span', { class: 'num', 'data-counter': key });
    row.counters[key] = el;
    return h('td', { class: `c-num c-${key}` }, el);
  });
  row.el = h('tr', { class: 'child', 'data-child': `${vol}/${c.name}`, 'data-name': c.name },
    h('td', { class: 'c-name' },
      h('div', { class: 'name' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), c.name,
        removeButton(app, replicas, c.name)),
      row.uri),
    h('td', { class: 'c-state' }, row.badge, row.damaged, row.stale),
    nums, row.last);
  row.map = buildDamageMap(vol, c.name);
  row.mapRow = h('tr', { class: 'damage-row', 'data-child': `${vol}/${c.name}`, hidden: true },
    h('td', { colspan: CHILD_COLUMNS }, row.map.el));
  return row;
}

function buildVolume(app, v, childKey, replicas) {
  const view = { name: v.name, childKey, children: new Map(), counters: {}, replicas };
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
    const row = buildChild(app, v.name, c, replicas);
    view.children.set(c.name, row);
    tbody.append(row.el, row.mapRow);
  }
  view.chart = buildChart();
  view.jobs = buildJobs(app, v.name);
  view.el = h('article', { class: 'volume', 'data-volume': v.name, id: `volume-${v.name}` },
    h('header', { class: 'vol-head' }, h('h3', { class: 'vol-name' }, v.name), view.meta, view.health),
    view.banner,
    h('div', { class: 'vol-stats' }, counterEls),
    h('table', { class: 'children' }, thead, tbody),
    replicas.el,
    view.jobs.el,
    view.chart.el);
  return view;
}

// The volume's card, built anew when its children changed (the jobs list
// carries over, and the replica form as it is, with what is typed in it).
function ensureView(app, v) {
  let view = app.views.get(v.name);
  const childKey = (v.children || []).map((c) => c.name).join('\u0000');
  if (view && view.childKey === childKey) return view;
  const old = view;
  view = buildVolume(app, v, childKey, old ? old.replicas : buildReplicas(app, v.name));
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

function renderChild(row, ch, size) {
  const { c, badness } = ch;
  for (const [key, , fmt] of CHILD_COUNTERS) {
    const el = row.counters[key];
    const val = c.stats ? c.stats[key] : undefined;
    setNum(el, val, fmt);
    el.classList.toggle('nonzero', Number.isFinite(val) && val > 0 && key !== 'repaired_bytes');
    el.classList.toggle('good', Number.isFinite(val) && val > 0 && key === 'repaired_bytes');
  }
  row.el.dataset.state = c.state || 'unknown';
  row.el.dataset.level = ch.kind;
  if (badness) row.el.dataset.bad = badness; else delete row.el.dataset.bad;
  row.badge.textContent = ch.badge;
  row.badge.dataset.badge = ch.kind;
  row.badge.className = `badge badge-${ch.kind}`;
  row.badge.title = ch.kind === 'unknown' ? 'a state this page was not told about by the server'
    : `${ch.look.serves ? 'takes its part in every vote' : 'left out of the vote where it is behind or down'}` +
      `${ch.look.needsOperator ? '; needs an operator' : ''}`;
  // Bytes this child missed that the resync has not copied back yet.
  const sb = ch.staleBytes;
  row.stale.dataset.value = c.stale_bytes === undefined ? '' : String(c.stale_bytes);
  row.stale.hidden = !(sb > 0);
  row.stale.textContent = sb > 0 ? `${fmtBytes(sb)} stale` : '';
  row.stale.title = sb > 0
    ? `${fmtExact(sb)} bytes of writes this replica missed; they are left out of its votes until the resync copies them back`
    : '';
  row.el.dataset.staleBytes = String(sb);
  // Bytes the server keeps as damaged: lost votes and failed reads, not
  // repaired yet; the map under the row shows where.
  const db = ch.damagedBytes;
  row.damaged.dataset.value = c.damaged_bytes === undefined ? '' : String(c.damaged_bytes);
  row.damaged.hidden = !(db > 0);
  row.damaged.textContent = db > 0 ? `${fmtBytes(db)} damaged` : '';
  row.damaged.title = db > 0 ? `${fmtExact(db)} bytes lost a vote or could not be read, not repaired yet` : '';
  row.el.dataset.damagedBytes = String(db);
  row.mapRow.hidden = !(db > 0);
  if (db > 0) renderDamageMap(row.map, ch, size);
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
  // The whole location, as the server gives it (credentials removed).
  row.uri.textContent = [c.backend, c.uri].filter(Boolean).join(' \u00b7 ');
  row.uri.title = row.uri.textContent;
}

// One line of the banner about a replica whose state needs an operator.
function badChildLine(ch) {
  const { c, badness, damage, mark: m } = ch;
  const li = h('li', { class: `warn-child warn-${badness}`, 'data-bad-child': c.name, 'data-state': c.state });
  li.append(h('strong', null, `Replica ${c.name} `), h('span', { class: 'badge badge-bad' }, ch.badge), ' ');
  if (!ch.look.serves) li.append('out of the vote. ');
  if (ch.damagedBytes > 0) {
    li.append(h('span', { class: 'damaged' }, `${fmtBytes(ch.damagedBytes)} damaged`));
    if (damage && damage.ranges.length) {
      const first = damage.ranges[0];
      li.append(damage.ranges.length === 1 ? ': ' : `, in ${plural(damage.ranges.length, 'range')}, first `,
        h('span', { class: 'range', title: exactRange(first.offset, first.length) }, fmtRange(first.offset, first.length)));
    }
    li.append('. A scrub with repair rewrites it. ');
  }
  const r = ch.lastReport;
  if (r) {
    const range = h('span', { class: 'range', title: exactRange(r.offset, r.bytes) }, fmtRange(r.offset, r.bytes));
    li.append('Last report: ');
    if (r.error) {
      li.append(`${r.type || 'request'} of `, range, ` failed (${r.error})`);
      if (r.suppressed > 0) li.append(similarEl(r.suppressed));
    } else {
      li.append(`lost the ${r.type ? `${r.type} ` : ''}vote on `, range);
    }
    li.append(', ', agoEl(r.at));
    if (m.lastRewriteAt >= r.at) li.append(h('span', { class: 'repaired' }, ' \u2014 rewritten with the winning data'));
    li.append('.');
  }
  return li;
}

function renderBanner(view, vm) {
  const b = view.banner;
  const { bad, failures, mismatches } = vm;
  if (!bad.length && !failures.length && !mismatches.length) {
    b.hidden = true;
    b.textContent = '';
    delete b.dataset.sig;
    b.removeAttribute('data-bad-children');
    return;
  }
  const sig = JSON.stringify([bad.map((x) => [x.c.name, x.badness, x.damagedBytes, x.damage && x.damage.ranges[0],
    x.damage && x.damage.ranges.length, x.mark.reports.length, x.mark.lastRewriteAt]), failures.length, mismatches.length]);
  if (b.dataset.sig === sig && !b.hidden) return;
  b.dataset.sig = sig;
  b.hidden = false;
  b.textContent = '';
  b.dataset.badChildren = bad.map((x) => x.c.name).join(' ');
  b.dataset.level = failures.length || mismatches.length || bad.some((x) => !x.look.serves) ? 'critical' : 'warning';

  const lines = [];
  const window = `in the last ${FAILURE_WINDOW_MS / 60000} min`;
  for (const f of failures.slice(-1)) {
    lines.push(h('li', { class: 'warn-failure' },
      h('strong', null, 'Quorum failure: '),
      `${plural(failures.length, 'request')} could not reach the vote threshold ${window}`,
      ` (latest: ${f.type || 'request'} of `, h('span', { class: 'range' }, fmtRange(f.offset, f.bytes)),
      ', ', agoEl(f.at), '). Clients got errors.'));
  }
  for (const f of mismatches.slice(-1)) {
    lines.push(h('li', { class: 'warn-failure' },
      h('strong', null, 'blkverify mismatch: '),
      `the replicas differ at byte ${fmtExact(f.offset)} (${fmtBytes(f.offset)}), `, agoEl(f.at), '.'));
  }
  for (const ch of bad) lines.push(badChildLine(ch));
  b.append(h('div', { class: 'banner-head' }, h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
    h('ul', null, lines)));
}

const HEALTH_TEXT = {
  failing: (vm) => (vm.failures.length ? 'QUORUM FAILURES' : 'BLKVERIFY MISMATCH'),
  degraded: (vm) => `DEGRADED: ${badStates(vm.bad)}`,
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
  drawChart(view.chart, vm.history, now);
  for (const ch of vm.children) {
    const row = view.children.get(ch.c.name);
    if (row) renderChild(row, ch, v.size);
  }
  renderBanner(view, vm);
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
  // Keep the server's order, moving cards only when it changed: moving an
  // element takes the focus from whatever is in it (a replica form being
  // typed into), and this runs at every poll.
  const container = $('volumes');
  const want = result.volumes.map((vm) => app.views.get(vm.name).el);
  const cur = [...container.children].filter((el) => el.classList.contains('volume'));
  if (cur.length !== want.length || cur.some((el, i) => el !== want[i])) container.append(...want);
  const empty = $('volumes-empty');
  empty.hidden = seen.size > 0;
  empty.textContent = 'This server has no volumes.';

  const { bad, failing, stale } = result;
  const sum = $('summary');
  sum.textContent = '';
  sum.append(h('span', null, plural(seen.size, 'volume')), h('span', null, plural(result.children, 'replica')));
  const badText = badSummary(bad);
  if (bad.length) sum.append(h('span', { class: 'sum-bad' }, badText));
  if (failing) sum.append(h('span', { class: 'sum-bad' }, `${plural(failing, 'volume')} with quorum failures`));
  if (stale) sum.append(h('span', { class: 'sum-stale' }, `${plural(stale, 'replica')} resyncing`));
  if (!bad.length && !failing && !stale && seen.size) sum.append(h('span', { class: 'sum-ok' }, 'all replicas agree'));
  document.body.dataset.alert = bad.length || failing ? 'yes' : 'no';
  updateAgos();
  document.title = bad.length || failing
    ? `\u26a0 ${bad.length ? badText : 'quorum failures'} \u2014 quorum`
    : 'quorum';
}
