// node --test dashboard/: the formatting functions.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  exactRange, fmtAgo, fmtBytes, fmtCount, fmtDuration, fmtExact, fmtLatency, fmtOps, fmtPct, fmtRange, fmtSpan,
  jobName, lostBytes, mismatchText, pct, plural, trimZeros,
} from './format.js';

test('fmtBytes uses binary units and at most three significant digits', () => {
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(100), '100 B');
  assert.equal(fmtBytes(1023), '1023 B');
  assert.equal(fmtBytes(1024), '1 KiB');
  assert.equal(fmtBytes(1536), '1.5 KiB');
  assert.equal(fmtBytes(4096), '4 KiB');
  assert.equal(fmtBytes(10.25 * 1024), '10.3 KiB');
  assert.equal(fmtBytes(150 * 1024 * 1024), '150 MiB');
  assert.equal(fmtBytes(2 ** 40), '1 TiB');
  assert.equal(fmtBytes(-2048), '-2 KiB');
  assert.equal(fmtBytes(undefined), '—');
  assert.equal(fmtBytes(NaN), '—');
});

test('fmtLatency picks the unit of the nanoseconds it is given', () => {
  assert.equal(fmtLatency(800), '800 ns');
  assert.equal(fmtLatency(250_000), '250 \u00b5s');
  assert.equal(fmtLatency(1_500_000), '1.5 ms');
  assert.equal(fmtLatency(12_345_678), '12.3 ms');
  assert.equal(fmtLatency(2e9), '2 s');
  assert.equal(fmtLatency(null), '\u2014');
  assert.equal(fmtLatency(NaN), '\u2014');
});

test('fmtCount abbreviates from 10,000 on', () => {
  assert.equal(fmtCount(9999), '9999');
  assert.equal(fmtCount(12345), '12.3k');
  assert.equal(fmtCount(2500000), '2.5M');
  assert.equal(fmtCount(100000), '100k');
  assert.equal(fmtCount(null), '—');
  assert.equal(fmtOps(0), '0');
  assert.equal(fmtOps(2.25), '2.3');
  assert.equal(fmtOps(42), '42');
  assert.equal(fmtExact(1234567), '1,234,567');
  assert.equal(fmtExact(undefined), '');
  assert.equal(trimZeros('1.50'), '1.5');
  assert.equal(trimZeros('2.00'), '2');
  assert.equal(trimZeros('100'), '100');
});

test('ranges are exact: the bytes, the end exclusive, and the size', () => {
  assert.equal(fmtRange(1049576, 100), 'bytes 1049576..1049676 (100 B)');
  assert.equal(fmtRange(8192, 4096), 'bytes 8192..12288 (4 KiB)');
  assert.equal(fmtRange(0, 512), 'bytes 0..512 (512 B)');
  assert.equal(fmtRange(4096, undefined), 'byte 4096');
  assert.equal(fmtRange(undefined, 4096), '');
  assert.equal(exactRange(8192, 4096), 'bytes 8,192–12,287 (4,096 bytes)');
  assert.equal(exactRange(10, 0), 'byte 10');
});

test('durations, ages and spans', () => {
  assert.equal(fmtDuration(75), '1 min 15 s');
  assert.equal(fmtDuration(59.6), '1 min 00 s');
  assert.equal(fmtDuration(3 * 3600 + 120), '3 h 02 min');
  assert.equal(fmtDuration(50 * 3600), '2 d 2 h');
  assert.equal(fmtDuration(-1), '');
  const now = 1_000_000_000;
  assert.equal(fmtAgo(now - 12_000, now), '12 s ago');
  assert.equal(fmtAgo(now + 5_000, now), '0 s ago');
  assert.equal(fmtAgo(now - 3 * 60_000, now), '3 min ago');
  assert.equal(fmtAgo(now - 5 * 3_600_000, now), '5 h ago');
  assert.equal(fmtAgo(now - 72 * 3_600_000, now), '3 d ago');
  assert.equal(fmtSpan(60_000), '60 s');
  assert.equal(fmtSpan(150_000), '2.5 min');
});

test('progress shows 100% only when done', () => {
  assert.equal(pct(50, 200), 25);
  assert.equal(pct(5, 0), 0);
  assert.equal(pct(300, 200), 100);
  assert.equal(fmtPct(pct(1, 300)), '0.3%');
  assert.equal(fmtPct(99.9), '99%');
  assert.equal(fmtPct(100), '100%');
});

test('job names, plurals and lost bytes', () => {
  assert.equal(jobName('scrub', 3, true), 'scrub #3 + repair');
  assert.equal(jobName(undefined, 1, false), 'job #1');
  assert.equal(plural(1, 'replica'), '1 replica');
  assert.equal(plural(0, 'replica'), '0 replicas');
  assert.deepEqual(lostBytes({ c: 4096, a: 512, b: 0 }), [['a', 512], ['c', 4096]]);
  assert.equal(mismatchText({ c: 4096, a: 512 }), 'a lost 512 B, c lost 4 KiB');
  assert.equal(mismatchText(undefined), '');
});
