// node --test dashboard/: the state and its reducers.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  DAMAGE_REFRESH_MS, FAILURE_WINDOW_MS, KEEP_EVENTS, applyVolumes, arrangeJobs, badSummary, childBadness, createModel,
  damageMarks, damageWanted, eventCounts, eventTime, feedRecords, ingestEvent, jobOutcome, localTime, noteServerDate,
  historyOf, setDamage, setKinds, setStates, stateLook, toggleHidden,
} from './model.js';
import { mergeHistory } from './history.js';

const T0 = Date.parse('2024-05-01T12:00:00Z');
let nextId = 1;
const ev = (event, data, at = T0, volume = 'vm') =>
  ({ id: nextId++, timestamp: new Date(at).toISOString(), event, volume, data });
const bad = (child, offset, at) => ev('QUORUM_REPORT_BAD', { 'node-name': child, type: 'read', offset, bytes: 4096 }, at);

const child = (name, stats = {}, extra = {}) => ({
  name, state: 'healthy', stale_bytes: 0, damaged_bytes: 0,
  stats: { errors: 0, bad_reports: 0, corrupted_bytes: 0, repaired_bytes: 0, ...stats }, ...extra,
});
const volume = (children, stats = {}) => ({
  name: 'vm', size: 1 << 20, vote_threshold: 2,
  stats: { reads: 0, writes: 0, read_bytes: 0, write_bytes: 0, failures: 0, ...stats }, children,
});

// What GET /v1/child-states answers; the page knows no state but these.
const STATES = [
  { state: 'healthy', serves: true, needs_operator: false },
  { state: 'failed', serves: false, needs_operator: true },
  { state: 'stale', serves: false, needs_operator: false },
  { state: 'syncing', serves: false, needs_operator: false },
  { state: 'damaged', serves: true, needs_operator: true },
];
const withStates = () => {
  const m = createModel();
  setStates(m, STATES);
  return m;
};

test('events are taken once, in id order, and capped', () => {
  const m = createModel();
  const a = ev('QUORUM_REWRITE', { 'node-name': 'c', offset: 0, bytes: 512 });
  assert.ok(ingestEvent(m, a, 'history', T0));
  assert.equal(ingestEvent(m, a, 'stream', T0), undefined, 'the same id again');
  assert.equal(ingestEvent(m, { ...a, id: a.id - 1 }, 'stream', T0), undefined, 'an older id');
  assert.equal(ingestEvent(m, { event: 'X' }, 'stream', T0), undefined, 'no id');
  assert.equal(m.lastEventId, a.id);
  for (let i = 0; i < KEEP_EVENTS + 10; i++) ingestEvent(m, ev('QUORUM_FAILURE', { offset: 0, bytes: 1 }), 'stream', T0);
  assert.equal(m.events.length, KEEP_EVENTS);
  assert.equal(m.events.at(-1).ev.id, m.lastEventId);
});

test('a job is two records: its last progress report, then its completion', () => {
  const m = createModel();
  const started = ingestEvent(m, ev('JOB_STARTED', { job: 1, kind: 'scrub' }), 'stream', T0);
  const p1 = ingestEvent(m, ev('JOB_PROGRESS', { job: 1, bytes_done: 1 }), 'stream', T0);
  const p2 = ingestEvent(m, ev('JOB_PROGRESS', { job: 1, bytes_done: 2 }), 'stream', T0);
  ingestEvent(m, ev('JOB_PROGRESS', { job: 1, bytes_done: 1 }, T0, 'other'), 'stream', T0);
  assert.ok(p1.superseded && !p2.superseded);
  assert.deepEqual(m.events.map((r) => r.ev.event), ['JOB_STARTED', 'JOB_PROGRESS', 'JOB_PROGRESS']);
  const done = ingestEvent(m, ev('JOB_COMPLETED', { job: 1, state: 'completed' }), 'stream', T0);
  assert.ok(p2.superseded);
  assert.deepEqual(m.events, [started, m.events[1], done]);
  assert.equal(m.events[1].ev.volume, 'other', 'the other volume\'s job 1 stays');
});

test('the server clock: a skew over 2 s is corrected, and no event is in the future', () => {
  const m = createModel();
  noteServerDate(m, new Date(T0).toUTCString(), T0 + 1000);
  assert.equal(m.skewMs, 0, 'within 2 s is noise');
  noteServerDate(m, new Date(T0 + 60_000).toUTCString(), T0);
  assert.equal(m.skewMs, 60_500);
  assert.equal(eventTime(m, { timestamp: new Date(T0 + 60_000).toISOString() }, T0 + 10_000), T0 - 500);
  assert.equal(eventTime(m, { timestamp: new Date(T0 + 600_000).toISOString() }, T0), T0);
  assert.equal(eventTime(m, { timestamp: 'garbage' }, T0), T0);
  assert.ok(Number.isNaN(localTime(m, NaN, T0)));
  noteServerDate(m, 'not a date', T0);
  assert.equal(m.skewMs, 60_500, 'a bad header changes nothing');
});

test('what a state means is what the server says of it', () => {
  const m = createModel();
  assert.equal(stateLook(m, 'healthy').level, 'unknown', 'before the server said anything');
  setStates(m, [...STATES, { state: 'new_one', serves: true, needs_operator: false }, null, { state: 7 }, 'x']);
  assert.deepEqual([...m.states.keys()], ['healthy', 'failed', 'stale', 'syncing', 'damaged', 'new_one']);
  assert.deepEqual(
    ['healthy', 'failed', 'stale', 'syncing', 'damaged', 'new_one', 'never_heard_of'].map((s) => stateLook(m, s).level),
    ['ok', 'bad', 'catching-up', 'catching-up', 'bad', 'ok', 'unknown']);
  assert.equal(childBadness(m, child('c', {}, { state: 'damaged' })), 'damaged');
  assert.equal(childBadness(m, child('c', {}, { state: 'failed' })), 'failed');
  assert.equal(childBadness(m, child('c', {}, { state: 'stale' })), '');
  assert.equal(childBadness(m, child('c')), '');
  assert.equal(setStates(m, 'nonsense').size, 0);
});

test('a replica is bad exactly while the server says so: no timer, no acknowledgement', () => {
  const m = withStates();
  // A report alone marks nothing: the server's state does.
  ingestEvent(m, bad('c', 8192, T0), 'stream', T0);
  let r = applyVolumes(m, [volume([child('a'), child('b'), child('c')])], T0 + 1000);
  assert.equal(r.volumes[0].health, 'ok');
  assert.equal(r.volumes[0].children[2].lastReport.offset, 8192, 'the report is still shown as the last one');
  // Damaged: bad for as long as the server says, long past any window.
  const damaged = volume([child('a'), child('b'), child('c', {}, { state: 'damaged', damaged_bytes: 100 })]);
  for (const at of [T0, T0 + FAILURE_WINDOW_MS * 10]) {
    r = applyVolumes(m, [damaged], at);
    const vm = r.volumes[0];
    assert.equal(vm.health, 'degraded');
    assert.deepEqual(vm.bad.map((ch) => [ch.c.name, ch.badness, ch.badge, ch.kind, ch.damagedBytes]),
      [['c', 'damaged', 'DAMAGED', 'bad', 100]]);
    assert.deepEqual(r.bad.map((ch) => ch.c.name), ['c']);
  }
  assert.equal(badSummary(r.bad), '1 replica damaged');
  // Repaired on the server: good again at the next poll.
  r = applyVolumes(m, [volume([child('a'), child('b'), child('c')])], T0 + 1);
  assert.equal(r.volumes[0].health, 'ok');
  assert.deepEqual(r.bad, []);
  assert.equal(badSummary(r.bad), '');
  const two = volume([child('a', {}, { state: 'failed' }), child('b', {}, { state: 'damaged' }),
    child('c', {}, { state: 'damaged' })]);
  assert.equal(badSummary(applyVolumes(m, [two], T0).bad), '3 replicas need attention (1 failed, 2 damaged)');
});

test('a volume snapshot: the children as the server says, and the volume\'s history', () => {
  const m = withStates();
  let r = applyVolumes(m, [volume([child('a'), child('b'), child('c')])], T0);
  assert.equal(r.volumes.length, 1);
  assert.deepEqual([r.bad.length, r.stale, r.children, r.failing], [0, 0, 3, 0]);
  assert.equal(r.volumes[0].health, 'ok');
  assert.equal(r.volumes[0].history.state, 'loading', 'no history answer yet');
  assert.deepEqual(r.volumes[0].history.samples, []);

  // Its history, loaded meanwhile, is what the charts draw.
  const hist = historyOf(m, 'vm');
  mergeHistory(hist, { samples: [{ t: T0 / 1000, reads: 8, read_bytes: 32768 }] }, 0, T0 + 2000);
  const v2 = volume([child('a'), child('b'), child('c', { bad_reports: 1, corrupted_bytes: 4096 })],
    { reads: 8, read_bytes: 32768 });
  r = applyVolumes(m, [v2], T0 + 2000);
  const vm = r.volumes[0];
  assert.equal(vm.history, hist);
  assert.deepEqual(vm.history.samples.map((smp) => [smp.t, smp.ro, smp.rb]), [[T0 + 1000, 8, 32768]]);
  assert.equal(vm.health, 'ok', 'counters that grew mark nothing: the state does');

  // A volume no longer listed is forgotten, its history with it.
  applyVolumes(m, [], T0 + 4000);
  assert.equal(m.history.size, 0);
  assert.equal(m.vols.size, 0);
});

test('stale and syncing children make a volume resyncing, not degraded', () => {
  const m = withStates();
  const r = applyVolumes(m, [volume([
    child('a'), child('b', {}, { state: 'stale', stale_bytes: 8192 }), child('d', {}, { state: 'syncing', stale_bytes: 0 }),
  ])], T0);
  const vm = r.volumes[0];
  assert.equal(vm.health, 'resyncing');
  assert.equal(vm.stale, 2);
  assert.deepEqual(vm.children.map((ch) => [ch.badge, ch.kind, ch.staleBytes]),
    [['HEALTHY', 'ok', 0], ['STALE', 'catching-up', 8192], ['SYNCING', 'catching-up', 0]]);
  // Without the server's states, nothing is judged.
  const blind = applyVolumes(createModel(), [volume([child('b', {}, { state: 'failed' })])], T0).volumes[0];
  assert.deepEqual([blind.health, blind.children[0].kind, blind.children[0].badge], ['ok', 'unknown', 'FAILED']);
});

test('quorum failures and blkverify mismatches make a volume failing for a while', () => {
  const m = withStates();
  ingestEvent(m, ev('QUORUM_FAILURE', { type: 'write', offset: 0, bytes: 4096 }), 'stream', T0);
  let r = applyVolumes(m, [volume([child('a')])], T0 + 1000);
  assert.equal(r.volumes[0].health, 'failing');
  assert.equal(r.failing, 1);
  assert.equal(r.volumes[0].failures.length, 1);
  r = applyVolumes(m, [volume([child('a')])], T0 + FAILURE_WINDOW_MS + 1);
  assert.equal(r.volumes[0].health, 'ok', 'an event of the past');
  const later = T0 + FAILURE_WINDOW_MS + 3000;
  ingestEvent(m, ev('BLKVERIFY_MISMATCH', { offset: 5, 'request-offset': 0, 'request-bytes': 512 }, later), 'stream', later);
  r = applyVolumes(m, [volume([child('a')])], later + 1000);
  assert.equal(r.volumes[0].mismatches.length, 1);
  assert.equal(r.volumes[0].health, 'failing');
});

test('damage maps: fetched when the damaged bytes change or age, dropped once repaired', () => {
  const m = withStates();
  const c = child('c', {}, { state: 'damaged', damaged_bytes: 100 });
  assert.equal(damageWanted(m, 'vm', child('a'), T0), false, 'nothing damaged');
  assert.equal(damageWanted(m, 'vm', c, T0), true, 'never fetched');
  setDamage(m, 'vm', 'c', {
    child: 'c', damaged_bytes: 100, truncated: false,
    ranges: [{ offset: 1049576, length: 100 }, { offset: 'x', length: 1 }, null, { offset: 0, length: 0 }],
  }, 100, T0);
  assert.equal(damageWanted(m, 'vm', c, T0 + 1000), false);
  assert.equal(damageWanted(m, 'vm', { ...c, damaged_bytes: 200 }, T0 + 1000), true, 'the bytes changed');
  assert.equal(damageWanted(m, 'vm', c, T0 + DAMAGE_REFRESH_MS), true, 'old');
  let r = applyVolumes(m, [volume([child('a'), c])], T0 + 1000);
  const ch = r.volumes[0].children[1];
  assert.deepEqual(ch.damage.ranges, [{ offset: 1049576, length: 100 }], 'malformed ranges are left out');
  assert.equal(r.volumes[0].children[0].damage, undefined);
  // Repaired: the map goes with the damage.
  r = applyVolumes(m, [volume([child('a'), child('c')])], T0 + 2000);
  assert.equal(r.volumes[0].children[1].damage, undefined);
  assert.equal(m.damage.size, 0);
  // And with the child, or the volume.
  setDamage(m, 'vm', 'c', { damaged_bytes: 1, ranges: [{ offset: 0, length: 1 }] }, 1, T0);
  applyVolumes(m, [volume([child('a')])], T0);
  assert.equal(m.damage.size, 0);
  setDamage(m, 'vm', 'c', { damaged_bytes: 1, ranges: [] }, 1, T0);
  applyVolumes(m, [], T0);
  assert.equal(m.damage.size, 0);
});

test('damage marks sit where their bytes are on the volume', () => {
  const size = 4 << 20;
  assert.deepEqual(damageMarks([{ offset: 1049576, length: 100 }, { offset: 0, length: size }], size), [
    { offset: 1049576, length: 100, left: (1049576 / size) * 100, width: (100 / size) * 100 },
    { offset: 0, length: size, left: 0, width: 100 },
  ]);
  assert.deepEqual(damageMarks([{ offset: 0, length: 1 }], 0), [], 'a volume of no size');
});

test('the feed: newest first, filtered by name, with counts', () => {
  const m = createModel();
  setKinds(m, ['QUORUM_REPORT_BAD', 'CHILD_ADDED', 'CHILD_REMOVED', 7, '']);
  assert.deepEqual(m.kinds, ['QUORUM_REPORT_BAD', 'CHILD_ADDED', 'CHILD_REMOVED']);
  ingestEvent(m, bad('c', 0, T0), 'history', T0);
  ingestEvent(m, ev('CHILD_ADDED', { 'node-name': 'd', uri: 'd.img' }), 'stream', T0);
  ingestEvent(m, ev('CHILD_REMOVED', { 'node-name': 'd' }), 'stream', T0);
  assert.deepEqual(feedRecords(m, 10).map((r) => r.ev.event), ['CHILD_REMOVED', 'CHILD_ADDED', 'QUORUM_REPORT_BAD']);
  assert.deepEqual(feedRecords(m, 1).map((r) => r.ev.event), ['CHILD_REMOVED']);
  assert.equal(toggleHidden(m, ['CHILD_ADDED', 'CHILD_REMOVED']), false);
  assert.deepEqual(feedRecords(m, 10).map((r) => r.ev.event), ['QUORUM_REPORT_BAD']);
  assert.equal(toggleHidden(m, ['CHILD_ADDED', 'CHILD_REMOVED']), true);
  assert.equal(feedRecords(m, 10).length, 3);
  assert.deepEqual([...eventCounts(m)], [['QUORUM_REPORT_BAD', 1], ['CHILD_ADDED', 1], ['CHILD_REMOVED', 1]]);
  assert.deepEqual(setKinds(m, null), []);
});

test('jobs: the resync, running scrubs, then the last finished ones, newest first', () => {
  const list = [
    { kind: 'scrub', id: 1, state: 'completed' }, { kind: 'scrub', id: 2, state: 'cancelled' },
    { kind: 'scrub', id: 3, state: 'completed' }, { kind: 'scrub', id: 4, state: 'failed' },
    { kind: 'scrub', id: 5, state: 'running' }, { kind: 'resync', id: 0, state: 'running' }, null,
  ];
  const a = arrangeJobs(list);
  assert.deepEqual(a.shown.map((j) => `${j.kind}${j.id}`), ['resync0', 'scrub5', 'scrub4', 'scrub3', 'scrub2']);
  assert.equal(a.running, 2);
  assert.equal(a.summary, '1 scrub running \u00b7 resync running');
  const idle = arrangeJobs(list.filter((j) => j && j.state !== 'running'));
  assert.equal(idle.summary, 'idle \u00b7 the last 3 of 4 scrubs');
  assert.deepEqual(arrangeJobs([]), { shown: [], running: 0, any: false, summary: 'idle' });
});

test('what a finished job found', () => {
  assert.equal(jobOutcome({ state: 'completed' }).level, 'ok');
  assert.equal(jobOutcome({ state: 'completed', mismatches: { c: 4096 } }).level, 'warn');
  assert.equal(jobOutcome({ state: 'completed', repair: true, bytes_repaired: 4096, mismatches: { c: 4096 } }).level, 'ok');
  assert.equal(jobOutcome({ state: 'completed', unrecoverable: [{ offset: 0, bytes: 512 }] }).level, 'bad');
  assert.equal(jobOutcome({ state: 'failed' }).level, 'bad');
  assert.equal(jobOutcome({ state: 'cancelled' }).level, 'cancelled');
  assert.deepEqual(jobOutcome({ state: 'completed', mismatches: { c: 4096, a: 0 } }).mismatches, [['c', 4096]]);
});
