// The dashboard's state, and the reducers that change it: events in
// (ingestEvent), volume snapshots in (applyVolumes), damage maps in
// (setDamage), and what the views draw out. Pure: no DOM, no fetch, the
// time passed in; tested by model.test.js under `node --test`.
//
// What a replica's state means comes from the server, never from a copy
// here: GET /v1/child-states says of each state whether the child serves
// (takes its part in every vote) and whether it needs an operator. A
// replica is marked bad while the server says its state needs an operator
// (e.g. damaged: it holds bytes that lost a vote; failed: it cannot be
// reached), catching up while its state neither serves nor needs one
// (e.g. stale, syncing), ok when it serves and needs nothing. The mark lasts
// exactly as long as the server's state: no timer, no acknowledgement.
// Quorum failures and blkverify mismatches are events of a volume, not
// state: they are shown for FAILURE_WINDOW_MS after the last one.

import { lostBytes } from './format.js';
import { createHistory } from './history.js';

export const POLL_MS = 2000;
export const FAILURE_WINDOW_MS = 5 * 60 * 1000;
export const KEEP_EVENTS = 1000;
export const REPORTS_KEEP = 100; // per child, for the last bad report
const VOLUME_MARKS_KEEP = 50; // failures and mismatches per volume
export const JOBS_FINISHED_SHOWN = 3; // finished scrubs listed per volume
// A damaged child's damage map is fetched again when its damaged bytes
// change, and at least this often while it has any.
export const DAMAGE_REFRESH_MS = 10 * 1000;

/** A fresh state. */
export function createModel() {
  return {
    kinds: null, // the server's event names (GET /v1/event-kinds), once read
    states: null, // Map: the server's child states (GET /v1/child-states) -> {serves, needsOperator}, once read
    events: [], // feed records {ev, at, source, superseded}, oldest first, at most KEEP_EVENTS
    lastEventId: 0,
    historyLoaded: false,
    hidden: new Set(), // event names filtered out of the feed
    progress: new Map(), // "vol\0job" -> the feed's JOB_PROGRESS record of that job
    marks: new Map(), // "vol/child" -> {reports, lastRewriteAt}
    volMarks: new Map(), // vol -> {failures, mismatches}
    damage: new Map(), // "vol\0child" -> {bytes, ranges, truncated, forBytes, at}: GET .../damage
    vols: new Map(), // vol -> {snapshot}: what the polls saw
    history: new Map(), // vol -> its I/O history for the charts (history.js)
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
    m = { reports: [], lastRewriteAt: 0 };
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

// ----------------------------------------------------------------- states

/**
 * Keeps the server's list of child states: [{state, serves,
 * needs_operator}] (anything else is ignored).
 */
export function setStates(model, list) {
  model.states = new Map();
  for (const s of Array.isArray(list) ? list : []) {
    if (!s || typeof s.state !== 'string' || !s.state) continue;
    model.states.set(s.state, { serves: s.serves === true, needsOperator: s.needs_operator === true });
  }
  return model.states;
}

/**
 * What the server says of a state: {level, serves, needsOperator}, where
 * level is 'bad' (it needs an operator), 'catching-up' (it does not serve
 * and needs no operator: it heals by itself), 'ok' (it serves and needs
 * nothing), or 'unknown' (a state the server did not list).
 */
export function stateLook(model, state) {
  const s = model.states && model.states.get(state);
  if (!s) return { level: 'unknown', serves: false, needsOperator: false };
  const level = s.needsOperator ? 'bad' : s.serves ? 'ok' : 'catching-up';
  return { level, serves: s.serves, needsOperator: s.needsOperator };
}

/** The state of child `c` of a volume snapshot if it needs an operator, else ''. */
export function childBadness(model, c) {
  return stateLook(model, c.state).level === 'bad' ? c.state : '';
}

// ----------------------------------------------------------------- damage

const damageKey = (vol, child) => `${vol}\u0000${child}`;

/**
 * Whether child `c` of volume `vol` wants its damage map (GET
 * .../children/{name}/damage) fetched now: it has damaged bytes, and the
 * map was never fetched, was fetched for other damaged bytes, or is older
 * than DAMAGE_REFRESH_MS.
 */
export function damageWanted(model, vol, c, now) {
  if (!(c.damaged_bytes > 0)) return false;
  const d = model.damage.get(damageKey(vol, c.name));
  return !d || d.forBytes !== c.damaged_bytes || now - d.at >= DAMAGE_REFRESH_MS;
}

/**
 * Keeps an answer of GET .../damage for child `child` of `vol`, asked
 * while the child had `forBytes` damaged bytes: {bytes, ranges:
 * [{offset, length}], truncated}. Malformed ranges are left out.
 */
export function setDamage(model, vol, child, body, forBytes, now) {
  const ranges = (body && Array.isArray(body.ranges) ? body.ranges : [])
    .filter((r) => r && Number.isFinite(r.offset) && Number.isFinite(r.length) && r.length > 0);
  const d = {
    bytes: body && Number.isFinite(body.damaged_bytes) ? body.damaged_bytes : 0,
    ranges,
    truncated: !!(body && body.truncated),
    forBytes,
    at: now,
  };
  model.damage.set(damageKey(vol, child), d);
  return d;
}

/**
 * Where the damaged ranges lie on a volume of `size` bytes, for the map's
 * bar: [{offset, length, left, width}] with left and width in percent of
 * the bar (the view gives every mark a minimum width, so that 100 bytes of
 * a terabyte still show).
 */
export function damageMarks(ranges, size) {
  if (!(size > 0)) return [];
  return ranges.map((r) => ({
    offset: r.offset,
    length: r.length,
    left: Math.min(100, (r.offset / size) * 100),
    width: Math.min(100, (r.length / size) * 100),
  }));
}

// ---------------------------------------------------------------- volumes

function failuresSince(now) {
  return now - FAILURE_WINDOW_MS;
}

/** A volume's I/O history (history.js), made when first asked for. */
export function historyOf(model, vol) {
  let hist = model.history.get(vol);
  if (!hist) {
    hist = createHistory();
    model.history.set(vol, hist);
  }
  return hist;
}

// One volume of a snapshot: the children's marks, and what the view shows
// (the charts draw the volume's history, which the polls of its own route
// keep).
function volumeView(model, v, now) {
  let vs = model.vols.get(v.name);
  if (!vs) {
    vs = { snapshot: null };
    model.vols.set(v.name, vs);
  }
  vs.snapshot = v;
  const hist = historyOf(model, v.name);

  const children = [];
  let stale = 0;
  for (const c of v.children || []) {
    const m = markOf(model, v.name, c.name);
    const look = stateLook(model, c.state);
    const badness = look.level === 'bad' ? c.state : '';
    const staleBytes = Number.isFinite(c.stale_bytes) ? c.stale_bytes : 0;
    const damagedBytes = Number.isFinite(c.damaged_bytes) ? c.damaged_bytes : 0;
    if (!badness && (staleBytes > 0 || look.level === 'catching-up')) stale++;
    const key = damageKey(v.name, c.name);
    if (!(damagedBytes > 0)) model.damage.delete(key);
    children.push({
      c,
      look,
      badness,
      badge: (c.state || '?').toUpperCase(),
      kind: look.level,
      staleBytes,
      damagedBytes,
      damage: damagedBytes > 0 ? model.damage.get(key) : undefined,
      lastReport: m.reports[m.reports.length - 1],
      mark: m,
    });
  }
  const names = new Set(children.map((ch) => ch.c.name));
  for (const key of [...model.damage.keys()]) {
    const [vol, child] = key.split('\u0000');
    if (vol === v.name && !names.has(child)) model.damage.delete(key);
  }

  const vm = model.volMarks.get(v.name);
  const t = failuresSince(now);
  const failures = vm ? vm.failures.filter((f) => f.at > t) : [];
  const mismatches = vm ? vm.mismatches.filter((f) => f.at > t) : [];
  const bad = children.filter((ch) => ch.badness);
  const health = failures.length || mismatches.length ? 'failing'
    : bad.length ? 'degraded' : stale ? 'resyncing' : 'ok';
  return { name: v.name, volume: v, history: hist, children, bad, stale, failures, mismatches, health };
}

/**
 * "1 damaged, 2 failed": the states of the children of `bad` (records of
 * volumeView) that need an operator, counted, in the order first seen.
 */
export function badStates(bad) {
  const counts = new Map();
  for (const ch of bad) counts.set(ch.badness, (counts.get(ch.badness) || 0) + 1);
  return [...counts].map(([state, n]) => `${n} ${state}`).join(', ');
}

/**
 * "1 replica damaged", "3 replicas need attention (1 damaged, 2 failed)":
 * the children of `bad` for the header, '' without any.
 */
export function badSummary(bad) {
  if (!bad.length) return '';
  const states = new Set(bad.map((ch) => ch.badness));
  const n = `${bad.length} replica${bad.length === 1 ? '' : 's'}`;
  return states.size === 1 ? `${n} ${[...states][0]}` : `${n} need attention (${badStates(bad)})`;
}

/**
 * Takes one answer of GET /v1/volumes (or the same answer again, to move
 * the marks with the time): returns what the views show, {volumes: [...],
 * bad: [children], stale, children, failing} with the totals. A volume no
 * longer listed is forgotten, its history with it.
 */
export function applyVolumes(model, vols, now) {
  const out = { volumes: [], bad: [], stale: 0, children: 0, failing: 0 };
  const seen = new Set();
  for (const v of Array.isArray(vols) ? vols : []) {
    if (!v || !v.name || seen.has(v.name)) continue;
    seen.add(v.name);
    const vm = volumeView(model, v, now);
    out.volumes.push(vm);
    out.bad.push(...vm.bad);
    out.stale += vm.stale;
    out.children += vm.children.length;
    if (vm.health === 'failing') out.failing++;
  }
  for (const name of [...model.vols.keys()]) if (!seen.has(name)) model.vols.delete(name);
  for (const name of [...model.history.keys()]) if (!seen.has(name)) model.history.delete(name);
  for (const key of [...model.damage.keys()]) if (!seen.has(key.split('\u0000')[0])) model.damage.delete(key);
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
