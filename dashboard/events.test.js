// node --test dashboard/: how the feed labels and groups events.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  describeEvent, eventRange, filterGroups, groupRepeats, isChildEvent, isJobEvent, kindStyle, repeatText, reportCount,
} from './events.js';

// What GET /v1/event-kinds answers (the server's order).
const SERVER_KINDS = [
  'CHILD_ADDED', 'CHILD_REMOVED', 'CHILD_STATE_CHANGE', 'QUORUM_REPORT_BAD', 'QUORUM_FAILURE',
  'QUORUM_REWRITE', 'JOB_STARTED', 'JOB_PROGRESS', 'JOB_COMPLETED', 'BLKVERIFY_MISMATCH',
];

test('every kind the server lists has its own label, none "other"', () => {
  const labels = SERVER_KINDS.map((n) => kindStyle(n).label);
  assert.deepEqual(labels, [
    'CHILD_ADDED', 'CHILD_REMOVED', 'CHILD_STATE', 'REPORT_BAD', 'FAILURE',
    'REWRITE', 'JOB_STARTED', 'JOB_PROGRESS', 'JOB_DONE', 'BLKVERIFY',
  ]);
  assert.equal(new Set(labels).size, labels.length);
  for (const n of SERVER_KINDS) assert.notEqual(kindStyle(n).css, 'other', n);
  assert.deepEqual(kindStyle('CHILD_REMOVED'), { css: 'child', label: 'CHILD_REMOVED', group: 'children' });
  assert.deepEqual(kindStyle('QUORUM_REPORT_BAD'), { css: 'bad', label: 'REPORT_BAD', group: 'report bad' });
});

test('a kind this page has never heard of still gets a label and a group of its own', () => {
  assert.deepEqual(kindStyle('QUORUM_SOMETHING_NEW'), { css: 'event', label: 'SOMETHING_NEW', group: 'something new' });
  assert.deepEqual(kindStyle('JOB_PAUSED'), { css: 'job', label: 'JOB_PAUSED', group: 'jobs' });
});

test('filter groups follow the server list: one button per group, families together', () => {
  const groups = filterGroups(SERVER_KINDS);
  assert.deepEqual(groups.map((g) => [g.label, g.css, g.names]), [
    ['children', 'child', ['CHILD_ADDED', 'CHILD_REMOVED', 'CHILD_STATE_CHANGE']],
    ['report bad', 'bad', ['QUORUM_REPORT_BAD']],
    ['failure', 'failure', ['QUORUM_FAILURE']],
    ['rewrite', 'rewrite', ['QUORUM_REWRITE']],
    ['jobs', 'job', ['JOB_STARTED', 'JOB_PROGRESS', 'JOB_COMPLETED']],
    ['blkverify', 'mismatch', ['BLKVERIFY_MISMATCH']],
  ]);
  assert.deepEqual(filterGroups([]), []);
  assert.equal(filterGroups(['JOB_STARTED', 'JOB_STARTED'])[0].names.length, 1);
});

test('families', () => {
  assert.ok(isJobEvent('JOB_COMPLETED'));
  assert.ok(!isJobEvent('QUORUM_REWRITE'));
  assert.ok(isChildEvent('CHILD_STATE_CHANGE'));
  assert.ok(!isChildEvent('QUORUM_REPORT_BAD'));
});

const ev = (event, data) => ({ id: 1, timestamp: '2024-01-01T00:00:00Z', event, volume: 'vm', data });

test('membership events say what happened to which child', () => {
  const added = describeEvent(ev('CHILD_ADDED', { 'node-name': 'd', uri: 'd.img' }));
  assert.equal(added.label, 'CHILD_ADDED');
  assert.equal(added.css, 'child');
  assert.equal(added.child, 'd');
  assert.equal(added.rangeText, '');
  assert.match(added.detail, /added \(d\.img\)/);
  const removed = describeEvent(ev('CHILD_REMOVED', { 'node-name': 'd' }));
  assert.deepEqual([removed.label, removed.child, removed.detail], ['CHILD_REMOVED', 'd', 'removed from the volume']);
  // What a state means is the server's word (model.js stateLook), passed in.
  const levels = { healthy: 'ok', damaged: 'bad', stale: 'catching-up' };
  const change = (from, to) =>
    describeEvent(ev('CHILD_STATE_CHANGE', { 'node-name': 'd', from, to }), (s) => levels[s] || 'unknown');
  const st = change('syncing', 'healthy');
  assert.deepEqual([st.label, st.detail, st.detailClass], ['CHILD_STATE', 'syncing \u2192 healthy', 'good']);
  assert.equal(change('healthy', 'damaged').detailClass, 'err');
  assert.equal(change('healthy', 'stale').detailClass, 'info');
  assert.equal(change('healthy', 'brand_new').detailClass, 'info');
  assert.equal(describeEvent(ev('CHILD_STATE_CHANGE', { from: 'a', to: 'healthy' })).detailClass, 'info',
    'without the server\'s states nothing is called good');
});

test('vote events: range and detail', () => {
  const lost = describeEvent(ev('QUORUM_REPORT_BAD', { 'node-name': 'c', type: 'read', offset: 8192, bytes: 4096 }));
  assert.deepEqual([lost.label, lost.child, lost.offset, lost.bytes, lost.rangeText, lost.detail, lost.detailClass],
    ['REPORT_BAD', 'c', 8192, 4096, 'bytes 8192..12288 (4 KiB)', 'lost the vote', 'warn']);
  const failed = describeEvent(ev('QUORUM_REPORT_BAD', { 'node-name': 'c', offset: 0, bytes: 512, error: 'EIO' }));
  assert.deepEqual([failed.detail, failed.detailClass], ['EIO', 'err']);
  const mm = ev('BLKVERIFY_MISMATCH', { offset: 5000, 'request-offset': 4096, 'request-bytes': 4096 });
  assert.deepEqual(eventRange(mm), [4096, 4096]);
  assert.equal(describeEvent(mm).detail, 'differs at byte 5,000');
  const other = describeEvent(ev('SOMETHING_ELSE', { x: 1 }));
  assert.deepEqual([other.label, other.css, other.detail], ['SOMETHING_ELSE', 'event', '{"x":1}']);
});

test('job events: progress and what a finished scrub found', () => {
  const started = describeEvent(ev('JOB_STARTED', { job: 3, kind: 'scrub', repair: true, bytes_total: 1 << 20 }));
  assert.deepEqual([started.rangeText, started.detail, started.detailClass], ['1 MiB to scan', 'scrub #3 + repair started', 'info']);
  const prog = describeEvent(ev('JOB_PROGRESS', { job: 3, kind: 'scrub', bytes_done: 1 << 19, bytes_total: 1 << 20 }));
  assert.deepEqual([prog.rangeText, prog.detail], ['512 KiB of 1 MiB', 'scrub #3: 50%']);
  const done = (data) => describeEvent(ev('JOB_COMPLETED', { job: 3, kind: 'scrub', bytes_scanned: 1 << 20, ...data }));
  assert.deepEqual([done({ state: 'completed' }).detail, done({ state: 'completed' }).detailClass],
    ['scrub #3 completed: all replicas agree', 'good']);
  const repaired = done({ state: 'completed', mismatches: { c: 4096 }, bytes_repaired: 4096 });
  assert.deepEqual([repaired.detail, repaired.detailClass], ['scrub #3 completed: c lost 4 KiB, 4 KiB repaired', 'good']);
  assert.equal(done({ state: 'completed', mismatches: { c: 4096 } }).detailClass, 'warn');
  assert.equal(done({ state: 'completed', unrecoverable: [[0, 4096]] }).detailClass, 'err');
  assert.equal(done({ state: 'cancelled' }).detailClass, 'muted');
});

// Feed records as the model keeps them, newest first: `at` in ms.
const rec = (at, event, data, volume = 'vm') => ({ ev: { id: at, timestamp: '', event, volume, data }, at, source: 'stream' });
const lostAt = (at, child, volume = 'vm') =>
  rec(at, 'QUORUM_REPORT_BAD', { 'node-name': child, type: 'read', offset: 8192, bytes: 4096 }, volume);

test('repeats of one kind for one child share a row, placed by the newest', () => {
  const records = [
    lostAt(5000, 'c'),
    rec(4500, 'QUORUM_REPORT_BAD', { 'node-name': 'c', type: 'read', offset: 0, bytes: 512, error: 'EIO' }),
    lostAt(4000, 'b'),
    rec(3000, 'QUORUM_REPORT_BAD', { 'node-name': 'c', type: 'read', offset: 8192, bytes: 4096, suppressed: 35 }),
    rec(2500, 'JOB_PROGRESS', { job: 1, kind: 'scrub' }),
    rec(2400, 'JOB_PROGRESS', { job: 1, kind: 'scrub' }),
    lostAt(2000, 'c'),
    lostAt(1500, 'c', 'other'),
  ];
  const groups = groupRepeats(records);
  assert.deepEqual(groups.map((g) => [g.rec.at, g.records.length, g.count]), [
    [5000, 3, 37], // c lost votes: one, a fold of 35, one
    [4500, 1, 1], // c failed: another kind
    [4000, 1, 1], // b
    [2500, 1, 1], // jobs are never grouped
    [2400, 1, 1],
    [1500, 1, 1], // another volume
  ]);
  // The fold's reports came in the second before it: from 2000 to 5000.
  assert.deepEqual([groups[0].firstAt, groups[0].lastAt], [2000, 5000]);
  assert.equal(repeatText(groups[0]), '\u00d737 in 3 s');
  assert.equal(repeatText(groups[1]), '');
});

test('a repeat after a long quiet starts a row of its own', () => {
  const groups = groupRepeats([lostAt(100_000, 'c'), lostAt(60_000, 'c'), lostAt(50_000, 'c')]);
  assert.deepEqual(groups.map((g) => g.count), [1, 2]);
  assert.equal(repeatText(groups[1]), '\u00d72 in 10 s');
  assert.deepEqual(groupRepeats([]), []);
});

test('a lone folded event stands for its count within its second', () => {
  const [g] = groupRepeats([rec(9000, 'QUORUM_REPORT_BAD',
    { 'node-name': 'c', type: 'read', offset: 0, bytes: 4096, suppressed: 499 })]);
  assert.equal(g.count, 499);
  assert.equal(repeatText(g), '\u00d7499 in 1 s');
  assert.equal(reportCount({ data: {} }), 1);
  assert.equal(reportCount({ data: { suppressed: 12 } }), 12);
  assert.equal(repeatText({ count: 3, firstAt: 0, lastAt: 400 }), '\u00d73 in under 1 s');
});
