// The dashboard's state, and the reducers that change it: events in
// (ingestEvent), volume snapshots in (applyVolumes), and what the views
// draw out. Pure: no DOM, no fetch, the time passed in; tested by
// model.test.js under `node --test`.
//
// A replica is BAD when it had a QUORUM_REPORT_BAD, or its error,
// bad-report or lost-vote counters grew, within the last BAD_WINDOW_MS and
// after the volume's warnings were last acknowledged; FAILED when the
// server says its state is failed; stale (not an alarm) while it has bytes a
// resync has not copied back yet.

import { fmtBytes, lostBytes } from './format.js';

export const POLL_MS = 2000;
export const CHART_WINDOW_MS = 5 * 60 * 1000;
export const BAD_WINDOW_MS = 5 * 60 * 1000;
export const KEEP_EVENTS = 1000;
export const REPORTS_KEEP = 1000; // per child, for the banner's counts
const VOLUME_MARKS_KEEP = 50; // failures and mismatches per volume
export const JOBS_FINISHED_SHOWN = 3; // finished scrubs listed per volume

/** A fresh state. */
export function createModel() {
  return {
    kinds: null, // the server's event names (GET /v1/event-kinds), once read
    events: [], // feed records {ev, at, source, superseded}, oldest first, at most KEEP_EVENTS
    lastEventId: 0,
    historyLoaded: false,
    hidden: new Set(), // event names filtered out of the feed
    progress: new Map(), // "vol\0job" -> the feed's JOB_PROGRESS record of that job
    marks: new Map(), // "vol/child" -> {reports, lastBadAt, counterBumpAt, counterNote, lastRewriteAt}
    volMarks: new Map(), // vol -> {failures, mismatches}
    acks: new Map(), // vol -> time (ms) up to which its warnings were acknowledged
    vols: new Map(), // vol -> {snapshot, samples, prev, childPrev}: what the polls saw
    skewMs: 0, // the server's clock minus this browser's, when it matters
  };
}

// ------------------------------------------------------------------ clock

/**
 * Notes the server's clock from a Date header (whole seconds): a skew of
 * over 2 s is corrected in the times shown, a smaller one is noise.
 */
export function noteServerDate(model, dateHeader, now) {
  const d = Date.parse(dateHeader || '');
  if (!Number.isFinite(d)) return;
  const skew = d + 500 - now;
  model.skewMs = Math.abs(skew) > 2000 ? skew : 0;
}

/** A server time (ms) on this browser's clock, never in the future. */
export function localTime(model, serverMs, now) {
  if (!Number.isFinite(serverMs)) return NaN;
  return Math.min(serverMs - model.skewMs, now);
}

/** When an event happened, on this browser's clock. */
export function eventTime(model, ev, now) {
  const at = localTime(model, Date.parse(ev.timestamp), now);
  return Number.isFinite(at) ? at : now;
}

// ----------------------------------------------------------------- events

function markOf(model, vol, child) {
  const key = `${vol}/${child}`;
  let m = model.marks.get(key);
  if (!m) {
    m = { reports: [], lastBadAt: 0, counterBumpAt: 0, counterNote: '', lastRewriteAt: 0 };
    model.marks.set(key, m);
  }
  return m;
}

function volMarkOf(model, vol) {
  let m = model.volMarks.get(vol);
  if (!m) {
    m = { failures: [], mismatches: [] };
    model.volMarks.set(vol, m);
  }
  return m;
}

function pushCapped(list, item, cap) {
  list.push(item);
  if (list.length > cap) list.splice(0, list.length - cap);
}

/**
 * Takes one event (from the history or the stream): returns its feed
 * record, or undefined for a malformed event or one already seen (an id not
 * above the last). A job's progress reports replace each other and its
 * completion replaces the last one, so that a long scrub is two records,
 * not one every few seconds: the replaced record is marked `superseded`.
 */
export function ingestEvent(model, ev, source, now) {
  if (!ev || typeof ev.id !== 'number') return undefined;
  if (ev.id <= model.lastEventId) return undefined;
  model.lastEventId = ev.id;
  const at = eventTime(model, ev, now);
  const rec = { ev, at, source, superseded: false };
  const d = ev.data || {};
  if (ev.event === 'JOB_PROGRESS' || ev.event === 'JOB_COMPLETED') {
    const key = `${ev.volume}\u0000${d.job}`;
    const old = model.progress.get(key);
    if (old) {
      old.superseded = true;
      const i = model.events.lastIndexOf(old); // near the end, usually
      if (i >= 0) model.events.splice(i, 1);
    }
    if (ev.event === 'JOB_PROGRESS') model.progress.set(key, rec); else model.progress.delete(key);
  }
  pushCapped(model.events, rec, KEEP_EVENTS);

  if (ev.event === 'QUORUM_REPORT_BAD' && d['node-name']) {
    const m = markOf(model, ev.volume, d['node-name']);
    pushCapped(m.reports, {
      at, offset: d.offset, bytes: d.bytes, type: d.type, error: d.error, suppressed: d.suppressed, id: ev.id,
    }, REPORTS_KEEP);
    m.lastBadAt = Math.max(m.lastBadAt, at);
  } else if (ev.event === 'QUORUM_REWRITE' && d['node-name']) {
    const m = markOf(model, ev.volume, d['node-name']);
    m.lastRewriteAt = Math.max(m.lastRewriteAt, at);
  } else if (ev.event === 'QUORUM_FAILURE') {
    pushCapped(volMarkOf(model, ev.volume).failures,
      { at, offset: d.offset, bytes: d.bytes, type: d.type, id: ev.id }, VOLUME_MARKS_KEEP);
  } else if (ev.event === 'BLKVERIFY_MISMATCH') {
    pushCapped(volMarkOf(model, ev.volume).mismatches,
      { at, offset: d.offset, reqOffset: d['request-offset'], reqBytes: d['request-bytes'], id: ev.id },
      VOLUME_MARKS_KEEP);
  }
  return rec;
}

/** The records the feed shows, newest first: at most `max`, none hidden. */
export function feedRecords(model, max) {
  const shown = [];
  for (let i = model.events.length - 1; i >= 0 && shown.length < max; i--) {
    const rec = model.events[i];
    if (!model.hidden.has(rec.ev.event)) shown.push(rec);
  }
  return shown;
}

/** How many of the kept events have each name. */
export function eventCounts(model) {
  const counts = new Map();
  for (const r of model.events) counts.set(r.ev.event, (counts.get(r.ev.event) || 0) + 1);
  return counts;
}

/** Hides a filter group's names, or shows them again; returns whether they are shown. */
export function toggleHidden(model, names) {
  const hide = !model.hidden.has(names[0]);
  for (const n of names) { if (hide) model.hidden.add(n); else model.hidden.delete(n); }
  return !hide;
}

/** Keeps the server's list of event names (anything else is ignored). */
export function setKinds(model, names) {
  model.kinds = Array.isArray(names) ? names.filter((n) => typeof n === 'string' && n) : [];
  return model.kinds;
}

// ------------------------------------------------------------------ marks

/** Hides a volume's warnings until something new happens. */
export function acknowledge(model, vol, now) {
  model.acks.set(vol, now);
}

function since(model, vol, now) {
  return Math.max(now - BAD_WINDOW_MS, model.acks.get(vol) || 0);
}

/** The child's QUORUM_REPORT_BAD reports in the window, oldest first. */
export function recentReports(model, vol, child, now) {
  const m = model.marks.get(`${vol}/${child}`);
  if (!m) return [];
  const t = since(model, vol, now);
  return m.reports.filter((r) => r.at > t);
}

/** 'failed', 'bad' or '' for one child `c` of a volume snapshot. */
export function childBadness(model, vol, c, now) {
  if (c.state === 'failed') return 'failed';
  const m = model.marks.get(`${vol}/${c.name}`);
  if (!m) return '';
  const t = since(model, vol, now);
  return m.lastBadAt > t || m.counterBumpAt > t ? 'bad' : '';
}

// ---------------------------------------------------------------- volumes

const RATE_KEYS = ['reads', 'writes', 'read_bytes', 'write_bytes'];

// A child whose error, bad-report or lost-vote counter grew since the last
// poll is marked, with a note of what grew.
function noteCounters(m, cs, prev, now) {
  if (!cs || !prev) return;
  const grewErr = cs.errors - prev.errors;
  const grewBad = cs.bad_reports - prev.bad_reports;
  const grewLost = cs.corrupted_bytes - prev.corrupted_bytes;
  if (!(grewErr > 0 || grewBad > 0 || grewLost > 0)) return;
  m.counterBumpAt = now;
  const notes = [];
  if (grewErr > 0) notes.push(`${grewErr} new error${grewErr === 1 ? '' : 's'}`);
  if (grewLost > 0) notes.push(`${fmtBytes(grewLost)} more lost votes`);
  else if (grewBad > 0) notes.push(`${grewBad} new bad report${grewBad === 1 ? '' : 's'}`);
  m.counterNote = notes.join(', ');
}

// One volume of a snapshot: the rate sample, the children's marks, and
// what the view shows.
function volumeView(model, v, now, dtMs) {
  let vs = model.vols.get(v.name);
  if (!vs) {
    vs = { snapshot: null, samples: [], prev: null, childPrev: new Map() };
    model.vols.set(v.name, vs);
  }
  vs.snapshot = v;

  // The rates are the deltas between polls; a counter that went down (the
  // server restarted) gives no sample.
  const st = v.stats;
  const p = vs.prev;
  if (st && p && dtMs > 0 && RATE_KEYS.every((k) => Number.isFinite(st[k]) && st[k] >= p[k])) {
    const sec = dtMs / 1000;
    vs.samples.push({
      t: now,
      rb: (st.read_bytes - p.read_bytes) / sec,
      wb: (st.write_bytes - p.write_bytes) / sec,
      ro: (st.reads - p.reads) / sec,
      wo: (st.writes - p.writes) / sec,
    });
  }
  vs.prev = st ? { ...st } : null;
  while (vs.samples.length && vs.samples[0].t < now - CHART_WINDOW_MS - POLL_MS) vs.samples.shift();

  const children = [];
  let stale = 0;
  const names = new Set();
  for (const c of v.children || []) {
    names.add(c.name);
    const m = markOf(model, v.name, c.name);
    noteCounters(m, c.stats, vs.childPrev.get(c.name), now);
    vs.childPrev.set(c.name, c.stats ? { ...c.stats } : null);
    const badness = childBadness(model, v.name, c, now);
    const staleBytes = Number.isFinite(c.stale_bytes) ? c.stale_bytes : 0;
    if (!badness && (staleBytes > 0 || c.state === 'stale' || c.state === 'syncing')) stale++;
    children.push({
      c,
      badness,
      badge: badness === 'failed' ? 'FAILED' : badness === 'bad' ? 'BAD' : (c.state || '?').toUpperCase(),
      kind: badness || (c.state === 'healthy' ? 'ok' : c.state || 'unknown'),
      // The state beside a BAD badge, unless the stale bytes say it.
      stateText: badness === 'bad' && c.state && c.state !== 'healthy' &&
        !(c.state === 'stale' && staleBytes > 0) ? c.state : '',
      staleBytes,
      lastReport: m.reports[m.reports.length - 1],
      mark: m,
      reports: badness ? recentReports(model, v.name, c.name, now) : [],
    });
  }
  for (const name of [...vs.childPrev.keys()]) if (!names.has(name)) vs.childPrev.delete(name);

  const vm = model.volMarks.get(v.name);
  const t = since(model, v.name, now);
  const failures = vm ? vm.failures.filter((f) => f.at > t) : [];
  const mismatches = vm ? vm.mismatches.filter((f) => f.at > t) : [];
  const bad = children.filter((ch) => ch.badness);
  const health = failures.length || mismatches.length ? 'failing'
    : bad.length ? 'degraded' : stale ? 'resyncing' : 'ok';
  return { name: v.name, volume: v, samples: vs.samples, haveStats: !!st, children, bad, stale, failures, mismatches, health };
}

/**
 * Takes one answer of GET /v1/volumes, `dtMs` after the last (0: the same
 * answer again, to move the marks with the time): returns what the views
 * show, {volumes: [...], bad, stale, children, failing} with the totals.
 */
export function applyVolumes(model, vols, now, dtMs) {
  const out = { volumes: [], bad: 0, stale: 0, children: 0, failing: 0 };
  const seen = new Set();
  for (const v of Array.isArray(vols) ? vols : []) {
    if (!v || !v.name || seen.has(v.name)) continue;
    seen.add(v.name);
    const vm = volumeView(model, v, now, dtMs);
    out.volumes.push(vm);
    out.bad += vm.bad.length;
    out.stale += vm.stale;
    out.children += vm.children.length;
    if (vm.health === 'failing') out.failing++;
  }
  for (const name of [...model.vols.keys()]) if (!seen.has(name)) model.vols.delete(name);
  return out;
}

// ------------------------------------------------------------------- jobs

/**
 * A volume's jobs as the Jobs section lists them: the resync first (while
 * it runs), then running scrubs, then the last finished ones, newest first;
 * with the one-line summary.
 */
export function arrangeJobs(list, finishedShown = JOBS_FINISHED_SHOWN) {
  const all = Array.isArray(list) ? list.filter(Boolean) : [];
  const resync = all.filter((j) => j.kind === 'resync' && j.state === 'running');
  const others = all.filter((j) => j.kind !== 'resync');
  const running = others.filter((j) => j.state === 'running').sort((a, b) => b.id - a.id);
  const finished = others.filter((j) => j.state !== 'running').sort((a, b) => b.id - a.id)
    .slice(0, finishedShown);
  const parts = [];
  if (running.length) parts.push(`${running.length} scrub${running.length === 1 ? '' : 's'} running`);
  if (resync.length) parts.push('resync running');
  if (!parts.length) parts.push('idle');
  if (!running.length && others.length > finishedShown) parts.push(`the last ${finishedShown} of ${others.length} scrubs`);
  return {
    shown: [...resync, ...running, ...finished],
    running: running.length + resync.length,
    any: others.length > 0,
    summary: parts.join(' \u00b7 '),
  };
}

/**
 * What a finished job found: {mismatches: [[child, bytes]], unrecoverable,
 * level}: 'bad' (failed, or blocks without a majority), 'warn' (replicas
 * lost votes and were not all repaired), 'ok', or the state.
 */
export function jobOutcome(j) {
  const mismatches = lostBytes(j.mismatches);
  const unrecoverable = Array.isArray(j.unrecoverable) ? j.unrecoverable : [];
  const lost = mismatches.reduce((sum, [, b]) => sum + b, 0);
  const repaired = j.repair && j.bytes_repaired >= lost;
  const level = j.state === 'failed' || unrecoverable.length ? 'bad'
    : j.state === 'completed' ? (mismatches.length && !repaired ? 'warn' : 'ok') : j.state;
  return { mismatches, unrecoverable, level };
}
