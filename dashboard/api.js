// Everything that talks to the server: fetch with the token, the token form
// (shown when the API answers 401), the event kinds, the child states, a
// child's damage, a volume's I/O history, the stored history of events,
// and the live stream (Server-Sent Events over fetch, so that the
// Authorization header can be sent, resumed from the last event with
// Last-Event-ID and reconnected with backoff).

import { $, setPill } from './dom.js';
import { historyPath } from './history.js';
import { SseParser } from './sse.js';

const TOKEN_KEY = 'quorum.token';
const HISTORY_PAGE = 10000;
const HISTORY_MAX_PAGES = 20;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
// A stream that stayed up this long was healthy: the next wait starts small.
const STREAM_HEALTHY_MS = 30000;

/** The API answered 401: the page asks for a token. */
export class AuthError extends Error {}

/** Any other answer that is not 2xx; `message` has the server's. */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
}

/** The auth part of the page's state. */
export function createAuth() {
  return { token: readToken(), needed: false, waiters: [] };
}

/**
 * fetch(path) with the token; throws AuthError on 401 (and shows the token
 * form), HttpError on any other failure status.
 */
export async function api(app, path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const sent = app.auth.token;
  if (sent) headers.Authorization = `Bearer ${sent}`;
  const res = await fetch(path, { ...opts, headers, cache: 'no-store' });
  if (res.status === 401) {
    // An answer to an older token says nothing about the current one.
    if (sent === app.auth.token) needAuth(app);
    throw new AuthError('unauthorized');
  }
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) msg += `: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    throw new HttpError(res.status, msg);
  }
  return res;
}

function needAuth(app) {
  if (app.auth.needed) return;
  app.auth.needed = true;
  $('auth').hidden = false;
  $('auth-note').textContent = app.auth.token
    ? 'The server refused the stored token. Enter the right one.'
    : "It is kept in this browser's local storage and sent as \u201cAuthorization: Bearer \u2026\u201d.";
  if (document.activeElement !== $('token')) $('token').focus();
}

/** Wires the token form: a new token is stored, then onToken() runs. */
export function wireTokenForm(app, onToken) {
  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    app.auth.token = value;
    try { localStorage.setItem(TOKEN_KEY, value); } catch (_) { /* private mode */ }
    app.auth.needed = false;
    $('auth').hidden = true;
    $('token').value = '';
    for (const w of app.auth.waiters.splice(0)) w();
    onToken();
  });
}

/** Resolves when a new token is entered, or after ms. */
export function tokenOrTimeout(app, ms) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    app.auth.waiters.push(() => { clearTimeout(t); resolve(); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The names of the events this server emits (GET /v1/event-kinds). */
export async function fetchEventKinds(app) {
  const res = await api(app, '/v1/event-kinds');
  return res.json();
}

/** The states a child can be in, and what each means (GET /v1/child-states). */
export async function fetchChildStates(app) {
  const res = await api(app, '/v1/child-states');
  return res.json();
}

/** The damaged ranges of a child (GET /v1/volumes/{vol}/children/{name}/damage). */
export async function fetchDamage(app, vol, child) {
  const res = await api(app, `/v1/volumes/${encodeURIComponent(vol)}/children/${encodeURIComponent(child)}/damage`);
  return res.json();
}

/** A volume's I/O history after what `hist` has (GET /v1/volumes/{vol}/history). */
export async function fetchHistory(app, vol, hist) {
  const res = await api(app, historyPath(vol, hist));
  return res.json();
}

// The stored history after the last event seen, paged, oldest first.
async function loadHistory(app, onEvent) {
  let since = app.model.lastEventId;
  for (let page = 0; page < HISTORY_MAX_PAGES; page++) {
    const res = await api(app, `/v1/events?since=${since}&limit=${HISTORY_PAGE}`);
    const list = await res.json();
    if (!Array.isArray(list) || !list.length) break;
    for (const ev of list) onEvent(ev, 'history');
    since = list[list.length - 1].id;
    if (list.length < HISTORY_PAGE) break;
  }
  app.model.historyLoaded = true;
}

// One connection to the stream, from the last event this page has (the
// history's or an earlier connection's), until the server ends it.
async function streamOnce(app, signal, onEvent) {
  const lastId = String(app.model.lastEventId);
  const res = await api(app, '/v1/events/stream', {
    signal, headers: { Accept: 'text/event-stream', 'Last-Event-ID': lastId },
  });
  if (!res.body) throw new Error('no stream body');
  setPill('stream-status', 'live', 'events: live', 'connected to /v1/events/stream');
  const parser = new SseParser((msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (_) { return; }
    onEvent(ev, 'stream');
  }, lastId);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(value);
  }
  parser.end();
}

/**
 * The events, for ever: the stored history once, then the live stream,
 * reconnected with exponential backoff (and at once after a new token).
 * onEvent(ev, 'history' | 'stream') gets each event, onHistory() runs once
 * the history is in.
 */
export async function streamEvents(app, { onEvent, onHistory }) {
  let backoff = BACKOFF_MIN_MS;
  for (;;) {
    const ctl = new AbortController();
    const started = Date.now();
    const tokenUsed = app.auth.token;
    try {
      if (!app.model.historyLoaded) {
        await loadHistory(app, onEvent);
        onHistory();
      }
      await streamOnce(app, ctl.signal, onEvent);
      // The server ended the stream (it restarted or shut down).
    } catch (e) {
      if (e instanceof AuthError) {
        setPill('stream-status', 'auth', 'events: token needed');
        if (tokenUsed === app.auth.token) await tokenOrTimeout(app, BACKOFF_MAX_MS);
        backoff = BACKOFF_MIN_MS;
        continue;
      }
      console.warn('quorum: event stream:', e);
    } finally {
      ctl.abort();
    }
    if (Date.now() - started > STREAM_HEALTHY_MS) backoff = BACKOFF_MIN_MS;
    const wait = backoff + Math.floor(Math.random() * 250);
    setPill('stream-status', 'down', `events: reconnecting in ${Math.round(wait / 1000)} s`,
      `the event stream dropped; reconnecting from #${app.model.lastEventId}`);
    await sleep(wait);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}
