// What the feed shows of an event: its tag (css kind and short label), the
// filter group it belongs to, and the text of its range and detail cells.
// Pure: tested by events.test.js.
//
// The event names are not listed here: the server says which exist
// (GET /v1/event-kinds, read by main.js) and every event carries its own.
// What is here is presentation only: a colour for some names, a shorter
// label for three, and a group for the families. A name this file has never
// heard of still gets its own label (the name without "QUORUM_") and its
// own filter button.

import { fmtBytes, fmtCount, fmtDuration, fmtExact, fmtPct, fmtRange, jobName, mismatchText, pct } from './format.js';

// name -> [css kind, label]; only where the generic rule would not do.
const LOOKS = {
  QUORUM_REPORT_BAD: ['bad'],
  QUORUM_FAILURE: ['failure'],
  QUORUM_REWRITE: ['rewrite'],
  BLKVERIFY_MISMATCH: ['mismatch', 'BLKVERIFY'],
  JOB_COMPLETED: [undefined, 'JOB_DONE'],
  CHILD_STATE_CHANGE: [undefined, 'CHILD_STATE'],
};

// The families whose events share a colour and one filter button.
const FAMILIES = {
  JOB: ['job', 'jobs'],
  CHILD: ['child', 'children'],
};

/** JOB_STARTED -> "JOB", CHILD_ADDED -> "CHILD", any other name -> itself. */
export function familyOf(name) {
  const first = String(name).split('_')[0];
  return FAMILIES[first] ? first : String(name);
}

/**
 * How an event type looks: {css, label, group}. `css` picks the tag's
 * colour (tag-bad, tag-job, ...; "event" for a name with no colour of its
 * own), `label` is the tag's text, `group` the filter button's label.
 */
export function kindStyle(name) {
  const n = String(name);
  const [css, label] = LOOKS[n] || [];
  const family = FAMILIES[familyOf(n)];
  const text = label || n.replace(/^QUORUM_/, '');
  return {
    css: css || (family ? family[0] : 'event'),
    label: text,
    group: family ? family[1] : text.toLowerCase().replace(/_/g, ' '),
  };
}

/**
 * The feed's filter buttons for the server's list of event names, in its
 * order: [{label, css, names}], one per group (all JOB_* events share one).
 */
export function filterGroups(names) {
  const groups = [];
  const byLabel = new Map();
  for (const name of names) {
    const st = kindStyle(name);
    let g = byLabel.get(st.group);
    if (!g) {
      g = { label: st.group, css: st.css, names: [] };
      byLabel.set(st.group, g);
      groups.push(g);
    }
    if (!g.names.includes(name)) g.names.push(name);
  }
  return groups;
}

export const isJobEvent = (name) => familyOf(name) === 'JOB';
export const isChildEvent = (name) => familyOf(name) === 'CHILD';

/** The child an event is about ("" when it is about the volume). */
export function eventChild(ev) {
  return (ev.data || {})['node-name'] || '';
}

/** The byte range an event is about: [offset, bytes], either undefined. */
export function eventRange(ev) {
  const d = ev.data || {};
  if (ev.event === 'BLKVERIFY_MISMATCH') return [d['request-offset'], d['request-bytes']];
  if (isJobEvent(ev.event) || isChildEvent(ev.event)) return [undefined, undefined];
  return [d.offset, d.bytes];
}

/** The range and detail cells of a JOB_* event: [range text, detail, class]. */
export function jobEventText(ev) {
  const d = ev.data || {};
  const name = jobName(d.kind, d.job, d.repair);
  switch (ev.event) {
    case 'JOB_STARTED':
      return [`${fmtBytes(d.bytes_total)} to scan`, `${name} started`, 'info'];
    case 'JOB_PROGRESS':
      return [`${fmtBytes(d.bytes_done)} of ${fmtBytes(d.bytes_total)}`,
        `${name}: ${fmtPct(pct(d.bytes_done, d.bytes_total))}`, 'info'];
    default: {
      const parts = [];
      const lost = mismatchText(d.mismatches);
      if (lost) parts.push(lost);
      if (d.bytes_repaired > 0) parts.push(`${fmtBytes(d.bytes_repaired)} repaired`);
      const unrec = Array.isArray(d.unrecoverable) ? d.unrecoverable.length : 0;
      if (unrec) parts.push(`${unrec} unrecoverable range${unrec === 1 ? '' : 's'}`);
      const st = d.state || 'completed';
      const lostTotal = Object.values(d.mismatches || {}).reduce((a, b) => a + b, 0);
      let cls = 'good';
      if (st === 'failed' || unrec) cls = 'err';
      else if (lost) cls = d.bytes_repaired > 0 && d.bytes_repaired >= lostTotal ? 'good' : 'warn';
      else if (st !== 'completed') cls = 'muted';
      const result = parts.length ? parts.join(', ') : st === 'completed' ? 'all replicas agree' : '';
      return [`${fmtBytes(d.bytes_scanned)} scanned`, `${d.kind || 'job'} #${d.job} ${st}${result ? `: ${result}` : ''}`, cls];
    }
  }
}

// The detail class of a CHILD_STATE_CHANGE, by the level of the state it
// went to (model.js stateLook: what the server says of that state).
const STATE_DETAIL = { ok: 'good', bad: 'err' };

/**
 * Everything a feed row says about an event: {css, label, child, offset,
 * bytes, rangeText, detail, detailClass}. `levelOf(state)` says what the
 * server says of a child state ('ok', 'bad', 'catching-up', 'unknown').
 */
export function describeEvent(ev, levelOf = () => 'unknown') {
  const d = ev.data || {};
  const { css, label } = kindStyle(ev.event);
  const [offset, bytes] = eventRange(ev);
  let rangeText = fmtRange(offset, bytes);
  let detail;
  let detailClass = '';
  switch (ev.event) {
    case 'QUORUM_REPORT_BAD':
      if (d.error) { detail = d.error; detailClass = 'err'; } else { detail = 'lost the vote'; detailClass = 'warn'; }
      break;
    case 'QUORUM_FAILURE': detail = 'below vote threshold'; detailClass = 'err'; break;
    case 'QUORUM_REWRITE': detail = 'repaired'; detailClass = 'good'; break;
    case 'BLKVERIFY_MISMATCH': detail = `differs at byte ${fmtExact(d.offset)}`; detailClass = 'err'; break;
    case 'CHILD_ADDED':
      detail = `added${d.uri ? ` (${d.uri})` : ''}, syncing before it votes`; detailClass = 'info'; break;
    case 'CHILD_REMOVED': detail = 'removed from the volume'; detailClass = 'muted'; break;
    case 'CHILD_STATE_CHANGE':
      detail = `${d.from || '?'} \u2192 ${d.to || '?'}`; detailClass = STATE_DETAIL[levelOf(d.to)] || 'info'; break;
    default:
      if (isJobEvent(ev.event)) [rangeText, detail, detailClass] = jobEventText(ev);
      else detail = JSON.stringify(d);
  }
  return { css, label, child: eventChild(ev), offset, bytes, rangeText, detail, detailClass };
}

// ---------------------------------------------------------------- repeats

/** Events of one kind and child this close together share a feed row. */
export const REPEAT_GAP_MS = 30 * 1000;
/**
 * The server folds the reports (and the rewrites) of a child that come
 * within a second of the first into one event at the end of that second;
 * `suppressed` says how many it stands for.
 */
export const FOLD_WINDOW_MS = 1000;

/**
 * What makes events repeats of each other: the same name, volume and
 * child, and for reports the same type and whether the child failed or
 * lost a vote. Jobs and membership events are never grouped (null).
 */
export function repeatKey(ev) {
  if (isJobEvent(ev.event) || isChildEvent(ev.event)) return null;
  const d = ev.data || {};
  return [ev.volume, ev.event, eventChild(ev), d.type || '', d.error ? 'failed' : ''].join('\u0000');
}

/** How many reports an event stands for: a folded one, its `suppressed`. */
export function reportCount(ev) {
  const n = (ev.data || {}).suppressed;
  return Number.isFinite(n) && n > 0 ? n : 1;
}

/**
 * Groups feed records (newest first, as feedRecords gives them) into rows:
 * a record joins the last group of its repeatKey when it came at most
 * `gapMs` after that group's newest. Returns the groups newest first, each
 * placed by its newest record: {rec (the newest), records (newest first),
 * count (reports it stands for), firstAt, lastAt}. A folded event's reports
 * came in the second before it, so its group starts a second earlier.
 */
export function groupRepeats(records, gapMs = REPEAT_GAP_MS) {
  const groups = [];
  const open = new Map();
  let order = 0;
  for (let i = records.length - 1; i >= 0; i--) {
    const rec = records[i];
    const key = repeatKey(rec.ev);
    const folded = (rec.ev.data || {}).suppressed > 0;
    const from = rec.at - (folded ? FOLD_WINDOW_MS : 0);
    const g = key === null ? undefined : open.get(key);
    if (g && rec.at - g.lastAt <= gapMs) {
      g.rec = rec;
      g.records.unshift(rec);
      g.count += reportCount(rec.ev);
      g.firstAt = Math.min(g.firstAt, from);
      g.lastAt = Math.max(g.lastAt, rec.at);
      g.order = order++;
      continue;
    }
    const fresh = { rec, records: [rec], count: reportCount(rec.ev), firstAt: from, lastAt: rec.at, order: order++ };
    groups.push(fresh);
    if (key !== null) open.set(key, fresh);
  }
  groups.sort((a, b) => b.order - a.order);
  return groups.map(({ order: _, ...g }) => g);
}

/** "×37 in 2 s" for a row that stands for several reports, else "". */
export function repeatText(group) {
  if (!(group.count > 1)) return '';
  const ms = group.lastAt - group.firstAt;
  const span = ms < 1000 ? 'under 1 s' : fmtDuration(ms / 1000);
  return `\u00d7${fmtCount(group.count)} in ${span}`;
}
