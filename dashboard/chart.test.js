// node --test dashboard/: the chart's scale and paths.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chartSpan, niceMax, paths } from './chart.js';

test('niceMax rounds up to 1-2-5 steps in the unit family', () => {
  assert.equal(niceMax(0, true), 1024);
  assert.equal(niceMax(0, false), 1);
  assert.equal(niceMax(3, false), 5);
  assert.equal(niceMax(1500, false), 2000);
  assert.equal(niceMax(700 * 1024, true), 1024 * 1024, '1000 KiB/s reads better as 1 MiB/s');
  assert.equal(niceMax(300 * 1024, true), 500 * 1024);
  assert.equal(niceMax(3 * 1024 * 1024, true), 5 * 1024 * 1024);
  for (const v of [1, 7, 99, 12345, 3e9]) assert.ok(niceMax(v, false) >= v && niceMax(v, true) >= v, String(v));
});

test('the span grows from a minute to fifteen with the history', () => {
  const now = 10_000_000;
  assert.equal(chartSpan([], now), 60_000);
  assert.equal(chartSpan([{ t: now - 120_000 }], now), 121_000);
  assert.equal(chartSpan([{ t: now - 3_600_000 }], now), 15 * 60_000);
});

test('paths: one segment per run of samples, broken by a gap or a missing value', () => {
  const now = 60_000;
  const span = 60_000;
  const s = (t, v) => ({ t, v });
  const one = paths([s(30_000, 50)], 'v', now, 100, span);
  assert.equal(one.line, 'M297.0,50.0L303.0,50.0', 'a lone sample is a short dash');
  assert.equal(one.points, 1);
  const two = paths([s(0, 0), s(1_000, 100), s(60_000, 100)], 'v', now, 100, span);
  assert.equal((two.line.match(/M/g) || []).length, 2, 'a gap of over five seconds breaks the line');
  assert.ok(two.area.endsWith('Z'));
  const holes = paths([s(1_000, 10), s(2_000, null), s(3_000, 20), s(4_000, 30)], 'v', now, 100, span);
  assert.equal((holes.line.match(/M/g) || []).length, 2, 'a second without the value breaks the line');
  assert.equal(holes.points, 3);
  assert.deepEqual(paths([], 'v', now, 100, span), { line: '', area: '', points: 0 });
});
