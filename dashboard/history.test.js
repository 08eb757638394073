// node --test dashboard/: the I/O history the charts draw.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HISTORY_WINDOW_MS, chartSample, createHistory, historyMissing, historyPath, mergeHistory } from './history.js';

const T = 1_714_564_800; // a second, in Unix seconds
const second = (t, extra = {}) => ({
  t, reads: 0, writes: 0, read_bytes: 0, write_bytes: 0, scrub_bytes: 0, resync_bytes: 0,
  read_p50_ns: null, read_p99_ns: null, write_p50_ns: null, write_p99_ns: null, ...extra,
});

test('the first call asks for everything, the next ones for the seconds after the last', () => {
  const hist = createHistory();
  assert.equal(hist.state, 'loading');
  assert.equal(historyPath('vm 1', hist), '/v1/volumes/vm%201/history');
  mergeHistory(hist, { now: T + 2, samples: [second(T), second(T + 1)] }, 0, (T + 2) * 1000);
  assert.equal(hist.state, 'ok');
  assert.equal(historyPath('vm 1', hist), `/v1/volumes/vm%201/history?since=${T + 1}`);
});

test('a second becomes a chart sample at its end, on this clock, latencies null when idle', () => {
  const smp = chartSample(second(T, {
    reads: 8, read_bytes: 32768, writes: 2, write_bytes: 8192, scrub_bytes: 1 << 20, resync_bytes: 4096,
    read_p50_ns: 250_000, read_p99_ns: 900_000,
  }), 3000);
  assert.deepEqual(smp, {
    t: (T + 1) * 1000 - 3000,
    rb: 32768, wb: 8192, ro: 8, wo: 2, sb: 1 << 20, yb: 4096,
    rl50: 250_000, rl99: 900_000, wl50: null, wl99: null,
  });
});

test('seconds are taken once, in order; malformed ones are left out', () => {
  const hist = createHistory();
  const now = (T + 10) * 1000;
  mergeHistory(hist, { samples: [second(T), second(T + 1, { writes: 3 })] }, 0, now);
  // An answer that overlaps (a poll that raced another) adds only the new.
  mergeHistory(hist, { samples: [second(T + 1, { writes: 99 }), second(T + 2), null, { t: 'x' }] }, 0, now);
  assert.deepEqual(hist.samples.map((s) => [s.t, s.wo]), [[(T + 1) * 1000, 0], [(T + 2) * 1000, 3], [(T + 3) * 1000, 0]]);
  assert.equal(hist.last, T + 2);
  // Nonsense changes nothing but the state.
  mergeHistory(hist, 'nonsense', 0, now);
  assert.equal(hist.samples.length, 3);
});

test('seconds older than the window are forgotten', () => {
  const hist = createHistory();
  const samples = [];
  for (let t = T; t < T + 1000; t++) samples.push(second(t));
  const now = (T + 1000) * 1000;
  mergeHistory(hist, { samples }, 0, now);
  assert.equal(hist.samples.length, HISTORY_WINDOW_MS / 1000 + 1);
  assert.ok(hist.samples.every((s) => s.t >= now - HISTORY_WINDOW_MS));
  assert.equal(hist.last, T + 999);
});

test('a server without the route says so', () => {
  assert.equal(historyMissing(createHistory()).state, 'missing');
});
