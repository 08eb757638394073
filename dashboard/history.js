// A volume's I/O history, as the charts draw it. The server keeps the last
// minutes of each volume second by second (GET /v1/volumes/{vol}/history):
// the page loads all of it once, so that a reload does not empty the
// charts, then with each poll only the seconds after the last one it has
// (?since=). Pure: no DOM, no fetch, the time passed in; tested by
// history.test.js under `node --test`.

/** The longest the charts look back: what the server keeps, 15 minutes. */
export const HISTORY_WINDOW_MS = 15 * 60 * 1000;

/** A volume's history before its first answer. */
export function createHistory() {
  // state: 'loading' (no answer yet), 'ok', or 'missing' (the server has
  // no history route); last: the last second (Unix seconds) taken.
  return { samples: [], last: null, state: 'loading' };
}

/** The path that asks for what `hist` does not have yet. */
export function historyPath(vol, hist) {
  const base = `/v1/volumes/${encodeURIComponent(vol)}/history`;
  return hist.last === null ? base : `${base}?since=${hist.last}`;
}

const num = (v) => (Number.isFinite(v) ? v : 0);
const maybe = (v) => (Number.isFinite(v) ? v : null);

/**
 * One second of the server's as the charts take it: its end (when its
 * rates are known) on this browser's clock (`skewMs`: the server's clock
 * minus this one's), and one short key per series. A latency is null in a
 * second without such requests.
 */
export function chartSample(s, skewMs) {
  return {
    t: (s.t + 1) * 1000 - skewMs,
    rb: num(s.read_bytes),
    wb: num(s.write_bytes),
    ro: num(s.reads),
    wo: num(s.writes),
    sb: num(s.scrub_bytes),
    yb: num(s.resync_bytes),
    rl50: maybe(s.read_p50_ns),
    rl99: maybe(s.read_p99_ns),
    wl50: maybe(s.write_p50_ns),
    wl99: maybe(s.write_p99_ns),
  };
}

/**
 * Takes an answer of GET .../history: appends the seconds after the last
 * one taken, in order (a malformed one, or one already taken, is left
 * out), and forgets those older than HISTORY_WINDOW_MS before `now`.
 */
export function mergeHistory(hist, body, skewMs, now) {
  const list = body && Array.isArray(body.samples) ? body.samples : [];
  for (const s of list) {
    if (!s || !Number.isSafeInteger(s.t) || (hist.last !== null && s.t <= hist.last)) continue;
    hist.samples.push(chartSample(s, skewMs));
    hist.last = s.t;
  }
  const from = now - HISTORY_WINDOW_MS;
  let drop = 0;
  while (drop < hist.samples.length && hist.samples[drop].t < from) drop++;
  if (drop) hist.samples.splice(0, drop);
  hist.state = 'ok';
  return hist;
}

/** The server has no history route: the charts say so. */
export function historyMissing(hist) {
  hist.state = 'missing';
  return hist;
}
