// quorum dashboard: volumes, replicas, I/O rates, jobs and the live event
// feed. ES modules served as they are (no build step, no libraries: plain
// DOM and inline SVG); this one wires them together.
//
//   api.js      fetch with the token, the token form, history and stream
//   sse.js      the Server-Sent Events parser                      (pure)
//   model.js    the state and its reducers over events and volumes (pure)
//   history.js  a volume's I/O history, as the charts take it      (pure)
//   events.js   what the feed says of an event, filter groups      (pure)
//   format.js   numbers, sizes, ranges and times                   (pure)
//   volumes.js  the volume cards and the header's summary
//   damage.js   each damaged replica's damage map, and its fetch
//   jobs.js     each volume's Jobs section and its buttons
//   replicas.js each volume's form that adds a replica, and the
//               buttons that remove one
//   chart.js    the I/O charts
//   feed.js     the event feed and its filters
//   dom.js      element builders and small DOM helpers
//
// Its sources:
//   GET /v1/volumes                polled every 2 s (state and counters)
//   GET /v1/volumes/{vol}/history  each volume's last 15 minutes of I/O, one
//                                  sample a second (the charts): all of it
//                                  once, then with each poll the seconds
//                                  after the last one the page has
//   GET /v1/event-kinds            the event names this server emits, once
//   GET /v1/child-states           the states a replica can be in and what
//                                  each means (serves, needs an operator),
//                                  once, before the first volumes are drawn
//   GET /v1/volumes/{vol}/children/{name}/damage
//                                  a damaged replica's ranges, when its
//                                  damaged bytes change (and every 10 s)
//   GET /v1/events?since=..        the stored history, paged, once at start
//   GET /v1/events/stream          Server-Sent Events, read with fetch so
//                                  that the Authorization header can be sent,
//                                  resumed with Last-Event-ID after a drop
//   GET /v1/volumes/{vol}/jobs     polled every 2 s, and at once on JOB_*
//                                  events and after a button (scrub, cancel)
//   POST /v1/volumes/{vol}/children, DELETE .../children/{name}
//                                  the replica form and remove buttons

import { AuthError, HttpError, api, createAuth, fetchChildStates, fetchEventKinds, fetchHistory, streamEvents, wireTokenForm } from './api.js';
import { pollDamage } from './damage.js';
import { $, setPill } from './dom.js';
import { buildFilters, createFeed, queueEvent, renderFeed } from './feed.js';
import { fmtFullTime, fmtTime } from './format.js';
import { createJobsPoll, pollJobs, pollJobsSoon } from './jobs.js';
import { historyMissing, mergeHistory } from './history.js';
import { POLL_MS, applyVolumes, createModel, historyOf, ingestEvent, noteServerDate, setKinds, setStates } from './model.js';
import { renderVolumes } from './volumes.js';

// Relative times move without new data this often.
const REFRESH_MS = 5000;

// The page's whole state. `model` is the data (model.js, pure); the rest is
// what the page needs to draw it and to talk to the server. Every module
// gets this object; none keeps state of its own.
const app = {
  model: createModel(),
  auth: createAuth(), // the token and the form's waiters (api.js)
  views: new Map(), // volume name -> its card's elements (volumes.js)
  feed: createFeed(), // live events not drawn yet (feed.js)
  jobsPoll: createJobsPoll(), // (jobs.js)
  volumesPoll: { busy: false, timer: null, last: null, downSince: 0 },
  damageFetching: new Set(), // "vol\0child" of the damage maps being fetched (damage.js)
  // What one view asks of the others.
  hooks: {
    refresh: () => refresh(),
    poll: () => poll(),
    pollJobsSoon: () => pollJobsSoon(app),
  },
};

// The server's event names, for the filters: once, after a poll answered
// (so with a good token). An older server without the route gets none.
async function loadKinds() {
  try {
    setKinds(app.model, await fetchEventKinds(app));
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) setKinds(app.model, []);
    else return; // the next poll tries again
  }
  buildFilters(app);
}

// The server's child states and what each means: once, before the first
// volumes are drawn (a state is then never judged by a copy of its name).
// An older server without the route gets none: every state is then shown as
// the server names it, neither good nor bad.
async function loadStates() {
  try {
    setStates(app.model, await fetchChildStates(app));
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) setStates(app.model, []);
    else throw e;
  }
}

// The seconds of each volume's history that the page does not have yet.
// A server without the route says so once; any other failure keeps what
// was drawn, and the next poll asks again from the same second.
async function pollHistory(vols) {
  await Promise.all(vols.map(async (v) => {
    if (!v || typeof v.name !== 'string') return;
    const hist = historyOf(app.model, v.name);
    if (hist.state === 'missing') return;
    try {
      mergeHistory(hist, await fetchHistory(app, v.name, hist), app.model.skewMs, Date.now());
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) historyMissing(hist);
    }
  }));
}

async function poll() {
  const p = app.volumesPoll;
  if (p.busy) return;
  p.busy = true;
  clearTimeout(p.timer);
  try {
    if (app.model.states === null) await loadStates();
    const res = await api(app, '/v1/volumes');
    noteServerDate(app.model, res.headers.get('Date'), Date.now());
    const body = await res.json();
    p.last = Array.isArray(body) ? body : [];
    await pollHistory(p.last);
    const now = Date.now();
    const result = applyVolumes(app.model, p.last, now);
    renderVolumes(app, result, now);
    pollDamage(app, result, now);
    p.downSince = 0;
    document.body.dataset.stale = 'no';
    setPill('poll-status', 'ok', `stats ${fmtTime(now)}`,
      `volumes polled every ${POLL_MS / 1000} s; last answer ${fmtFullTime(now)}`);
    if (app.model.kinds === null) await loadKinds();
  } catch (e) {
    if (e instanceof AuthError) {
      setPill('poll-status', 'auth', 'stats: token needed');
    } else {
      // Keep what was shown, dimmed, and say since when it is old.
      if (!p.downSince) p.downSince = Date.now();
      document.body.dataset.stale = 'yes';
      setPill('poll-status', 'down', `stats: unreachable since ${fmtTime(p.downSince)}`, String(e.message || e));
    }
  } finally {
    p.busy = false;
    p.timer = setTimeout(poll, POLL_MS);
  }
}

// Redraws from the last poll's answer: relative times move without new
// data, and damage maps that arrived are drawn.
function refresh() {
  const p = app.volumesPoll;
  if (!p.last || p.busy) return;
  const now = Date.now();
  renderVolumes(app, applyVolumes(app.model, p.last, now), now);
}

function onEvent(ev, source) {
  const rec = ingestEvent(app.model, ev, source, Date.now());
  if (rec && source === 'stream') queueEvent(app, rec);
}

function start() {
  $('host').textContent = location.host;
  wireTokenForm(app, () => { poll(); pollJobsSoon(app); });
  poll();
  pollJobs(app);
  streamEvents(app, { onEvent, onHistory: () => renderFeed(app) });
  setInterval(refresh, REFRESH_MS);
}

start();
