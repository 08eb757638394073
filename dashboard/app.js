// quorum dashboard: volumes, replicas, I/O rates and the live event feed.
//
// No build step and no libraries: plain DOM and inline SVG. Three sources:
//   GET /v1/volumes                polled every 2 s (state and counters; the
//                                  rates are the deltas between polls)
//   GET /v1/events?since=..        the stored history, paged, once at start
//   GET /v1/events/stream?since=.. Server-Sent Events, read with fetch so
//                                  that the Authorization header can be sent,
//                                  reconnected with backoff from the last id
//   GET /v1/volumes/{vol}/jobs     polled every 2 s, and at once on JOB_*
//                                  events and after a button (scrub, cancel)
// A replica is marked BAD when it had a QUORUM_REPORT_BAD, or its error or
// bad-report counters grew, within the last BAD_WINDOW_MS; FAILED when the
// server says its state is failed; STALE (not an alarm) while it has bytes a
// resync has not copied back yet.
'use strict';

(() => {
  const POLL_MS = 2000;
  const CHART_WINDOW_MS = 5 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000;
  const BAD_WINDOW_MS = 5 * 60 * 1000;
  const FEED_MAX = 200;
  const KEEP_EVENTS = 1000;
  const REPORTS_KEEP = 1000; // per child, for the banner's counts
  const HISTORY_PAGE = 10000;
  const HISTORY_MAX_PAGES = 20;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const TOKEN_KEY = 'quorum.token';
  const JOBS_FINISHED_SHOWN = 3; // finished scrubs listed per volume
  const JOBS_MSG_MS = 8000;

  // name, css kind, short label
  const EVENT_TYPES = [
    ['QUORUM_REPORT_BAD', 'bad', 'REPORT_BAD'],
    ['QUORUM_FAILURE', 'failure', 'FAILURE'],
    ['QUORUM_REWRITE', 'rewrite', 'REWRITE'],
    ['BLKVERIFY_MISMATCH', 'mismatch', 'BLKVERIFY'],
    ['JOB_STARTED', 'job', 'JOB_STARTED'],
    ['JOB_PROGRESS', 'job', 'JOB_PROGRESS'],
    ['JOB_COMPLETED', 'job', 'JOB_DONE'],
  ];
  const JOB_EVENTS = new Set(['JOB_STARTED', 'JOB_PROGRESS', 'JOB_COMPLETED']);

  // The feed's filter buttons: label, css kind, the event types they show.
  const FILTERS = [
    ['report bad', 'bad', ['QUORUM_REPORT_BAD']],
    ['failure', 'failure', ['QUORUM_FAILURE']],
    ['rewrite', 'rewrite', ['QUORUM_REWRITE']],
    ['blkverify', 'mismatch', ['BLKVERIFY_MISMATCH']],
    ['jobs', 'job', ['JOB_STARTED', 'JOB_PROGRESS', 'JOB_COMPLETED']],
  ];

  const state = {
    token: readToken(),
    authNeeded: false,
    volumes: new Map(), // name -> volume view (see ensureVolume)
    volumeOrder: [],
    events: [], // oldest first, at most KEEP_EVENTS
    lastEventId: 0,
    historyLoaded: false,
    hidden: new Set(), // event types filtered out of the feed
    marks: new Map(), // "vol/child" -> {reports: [], lastBadAt, counterBumpAt, counterNote}
    volMarks: new Map(), // vol -> {failures: [], mismatches: []}
    acks: new Map(), // vol -> time (ms) up to which warnings were acknowledged
    tokenWaiters: [],
    progress: new Map(), // "vol\0job" -> the feed's JOB_PROGRESS record of that job
  };

  // ---------------------------------------------------------------- helpers

  function readToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }

  function $(id) { return document.getElementById(id); }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

  // 4096 -> "4 KiB", 1536 -> "1.5 KiB", 100 -> "100 B".
  function fmtBytes(n) {
    if (n === undefined || n === null || !Number.isFinite(n)) return '—';
    let v = Math.abs(n);
    let u = 0;
    while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    const sign = n < 0 ? '-' : '';
    if (u === 0) return `${sign}${Math.round(v)} B`;
    const digits = v >= 100 || Number.isInteger(v) ? 0 : v >= 10 ? 1 : 2;
    return `${sign}${trimZeros(v.toFixed(digits))} ${UNITS[u]}`;
  }

  function trimZeros(str) {
    return str.includes('.') ? str.replace(/\.?0+$/, '') : str;
  }

  function fmtRate(bytesPerSec) {
    return `${fmtBytes(bytesPerSec)}/s`;
  }

  function fmtCount(n) {
    if (n === undefined || n === null || !Number.isFinite(n)) return '—';
    if (Math.abs(n) < 10000) return String(Math.round(n));
    const k = ['', 'k', 'M', 'G', 'T'];
    let v = n;
    let i = 0;
    while (Math.abs(v) >= 1000 && i < k.length - 1) { v /= 1000; i++; }
    return `${trimZeros(v.toFixed(v >= 100 ? 0 : 1))}${k[i]}`;
  }

  function fmtOps(n) {
    if (!Number.isFinite(n)) return '—';
    if (n === 0) return '0';
    if (n < 10) return trimZeros(n.toFixed(1));
    return fmtCount(n);
  }

  function fmtExact(n) {
    return Number.isFinite(n) ? n.toLocaleString('en-US') : '';
  }

  // "4 KiB at 8 KiB": what an operator reads first; the exact bytes go in
  // the title.
  function fmtRange(offset, bytes) {
    if (!Number.isFinite(offset)) return '';
    const at = offset === 0 ? '0' : fmtBytes(offset);
    if (!Number.isFinite(bytes)) return `at ${at}`;
    return `${fmtBytes(bytes)} at ${at}`;
  }

  function exactRange(offset, bytes) {
    if (!Number.isFinite(offset)) return '';
    if (!Number.isFinite(bytes) || bytes <= 0) return `byte ${fmtExact(offset)}`;
    return `bytes ${fmtExact(offset)}–${fmtExact(offset + bytes - 1)} (${fmtExact(bytes)} bytes)`;
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtTime(ms) {
    if (!Number.isFinite(ms)) return '—';
    const d = new Date(ms);
    const now = new Date();
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }

  function fmtFullTime(ms) {
    if (!Number.isFinite(ms)) return '';
    const d = new Date(ms);
    const off = -d.getTimezoneOffset();
    const tz = `${off >= 0 ? '+' : '-'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${tz}`;
  }

  function fmtAgo(ms) {
    const sec = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (sec < 60) return `${sec} s ago`;
    const min = Math.floor(sec / 60);
    if (min < 60) return `${min} min ago`;
    const hr = Math.floor(min / 60);
    if (hr < 48) return `${hr} h ago`;
    return `${Math.floor(hr / 24)} d ago`;
  }

  // "12 s ago" that moves: refresh() updates every [data-at] in place.
  function agoEl(ms) {
    return h('span', { class: 'when', 'data-at': ms, title: fmtFullTime(ms) }, fmtAgo(ms));
  }

  function updateAgos() {
    for (const el of document.querySelectorAll('[data-at]')) el.textContent = fmtAgo(Number(el.dataset.at));
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ------------------------------------------------------------------- API

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    const sent = state.token;
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const res = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store' }));
    if (res.status === 401) {
      // An answer to an older token says nothing about the current one.
      if (sent === state.token) needAuth();
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

  function needAuth() {
    const form = $('auth');
    const note = $('auth-note');
    if (!state.authNeeded) {
      state.authNeeded = true;
      form.hidden = false;
      note.textContent = state.token
        ? 'The server refused the stored token. Enter the right one.'
        : "It is kept in this browser's local storage and sent as \u201cAuthorization: Bearer \u2026\u201d.";
      if (document.activeElement !== $('token')) $('token').focus();
    }
  }

  function onToken(ev) {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    state.token = value;
    try { localStorage.setItem(TOKEN_KEY, value); } catch (_) { /* private mode */ }
    state.authNeeded = false;
    $('auth').hidden = true;
    $('token').value = '';
    const waiters = state.tokenWaiters.splice(0);
    waiters.forEach((w) => w());
    poll();
    pollJobsSoon();
  }

  // Resolves when a new token is entered, or after ms.
  function tokenOrTimeout(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      state.tokenWaiters.push(() => { clearTimeout(t); resolve(); });
    });
  }

  function setPill(id, st, text, title) {
    const el = $(id);
    el.dataset.state = st;
    el.textContent = text;
    if (title !== undefined) el.title = title;
  }

  // ------------------------------------------------------------ bad marks

  function markOf(vol, child) {
    const key = `${vol}/${child}`;
    let m = state.marks.get(key);
    if (!m) {
      m = { reports: [], lastBadAt: 0, counterBumpAt: 0, counterNote: '', lastRewriteAt: 0 };
      state.marks.set(key, m);
    }
    return m;
  }

  function volMarkOf(vol) {
    let m = state.volMarks.get(vol);
    if (!m) {
      m = { failures: [], mismatches: [] };
      state.volMarks.set(vol, m);
    }
    return m;
  }

  function pushCapped(list, item, cap) {
    list.push(item);
    if (list.length > cap) list.splice(0, list.length - cap);
  }

  // When an event happened, on this browser's clock: the server's timestamp
  // corrected by the clock skew seen in the Date header of the polls, and
  // never in the future.
  let skewMs = 0;
  function noteServerDate(res) {
    const d = Date.parse(res.headers.get('Date') || '');
    if (!Number.isFinite(d)) return;
    const skew = d + 500 - Date.now(); // the header has whole seconds
    skewMs = Math.abs(skew) > 2000 ? skew : 0;
  }

  function eventTime(ev) {
    const ts = Date.parse(ev.timestamp);
    const now = Date.now();
    if (!Number.isFinite(ts)) return now;
    return Math.min(ts - skewMs, now);
  }

  function ingest(ev, source) {
    if (!ev || typeof ev.id !== 'number') return;
    if (ev.id <= state.lastEventId) return;
    state.lastEventId = ev.id;
    const at = eventTime(ev);
    const rec = { ev, at, source };
    const d = ev.data || {};
    // A job's progress reports replace each other, and its completion
    // replaces the last one: a long scrub is two rows in the feed, not one
    // every two seconds.
    if (ev.event === 'JOB_PROGRESS' || ev.event === 'JOB_COMPLETED') {
      const key = `${ev.volume}\u0000${d.job}`;
      const old = state.progress.get(key);
      if (old) {
        old.superseded = true;
        const i = state.events.lastIndexOf(old); // near the end, usually
        if (i >= 0) state.events.splice(i, 1);
      }
      if (ev.event === 'JOB_PROGRESS') state.progress.set(key, rec); else state.progress.delete(key);
    }
    pushCapped(state.events, rec, KEEP_EVENTS);

    if (ev.event === 'QUORUM_REPORT_BAD' && d['node-name']) {
      const m = markOf(ev.volume, d['node-name']);
      pushCapped(m.reports, {
        at, offset: d.offset, bytes: d.bytes, type: d.type, error: d.error, suppressed: d.suppressed, id: ev.id,
      }, REPORTS_KEEP);
      m.lastBadAt = Math.max(m.lastBadAt, at);
    } else if (ev.event === 'QUORUM_REWRITE' && d['node-name']) {
      const m = markOf(ev.volume, d['node-name']);
      m.lastRewriteAt = Math.max(m.lastRewriteAt, at);
    } else if (ev.event === 'QUORUM_FAILURE') {
      pushCapped(volMarkOf(ev.volume).failures, { at, offset: d.offset, bytes: d.bytes, type: d.type, id: ev.id }, 50);
    } else if (ev.event === 'BLKVERIFY_MISMATCH') {
      pushCapped(volMarkOf(ev.volume).mismatches,
        { at, offset: d.offset, reqOffset: d['request-offset'], reqBytes: d['request-bytes'], id: ev.id }, 50);
    }
    return rec;
  }

  function acked(vol) { return state.acks.get(vol) || 0; }

  function recentReports(vol, child) {
    const m = state.marks.get(`${vol}/${child}`);
    if (!m) return [];
    const since = Math.max(Date.now() - BAD_WINDOW_MS, acked(vol));
    return m.reports.filter((r) => r.at > since);
  }

  // 'failed', 'bad' or '' for one child.
  function childBadness(vol, c) {
    if (c.state === 'failed') return 'failed';
    const m = state.marks.get(`${vol}/${c.name}`);
    if (!m) return '';
    const since = Math.max(Date.now() - BAD_WINDOW_MS, acked(vol));
    if (m.lastBadAt > since || m.counterBumpAt > since) return 'bad';
    return '';
  }

  // ---------------------------------------------------------------- volumes

  const VOL_COUNTERS = [
    ['reads', 'reads', fmtCount],
    ['writes', 'writes', fmtCount],
    ['read_bytes', 'read', fmtBytes],
    ['write_bytes', 'written', fmtBytes],
    ['failures', 'quorum failures', fmtCount],
  ];

  const CHILD_COUNTERS = [
    ['errors', 'errors', fmtCount, 'I/O errors this child returned'],
    ['bad_reports', 'bad reports', fmtCount, 'QUORUM_REPORT_BAD events about this child'],
    ['corrupted_bytes', 'lost votes', fmtBytes, 'bytes on which this child lost the vote (corrupted data)'],
    ['repaired_bytes', 'repaired', fmtBytes, 'bytes rewritten with the winning data'],
  ];

  function ensureVolume(v) {
    let view = state.volumes.get(v.name);
    const childKey = (v.children || []).map((c) => c.name).join('\u0000');
    if (view && view.childKey === childKey) return view;
    const old = view;
    view = buildVolume(v, childKey);
    if (old) {
      view.samples = old.samples;
      view.prev = old.prev;
      if (old.jobs.list) renderJobs(view.jobs, old.jobs.list);
      old.el.replaceWith(view.el);
    } else {
      $('volumes').append(view.el);
    }
    pollJobsSoon();
    state.volumes.set(v.name, view);
    return view;
  }

  function buildVolume(v, childKey) {
    const view = { name: v.name, childKey, samples: [], prev: null, children: new Map(), counters: {} };

    view.health = h('span', { class: 'health', 'data-health': 'ok' }, 'healthy');
    view.meta = h('span', { class: 'vol-meta' });
    view.banner = h('div', { class: 'banner', role: 'alert', hidden: true });

    const counterEls = VOL_COUNTERS.map(([key, label]) => {
      const val = h('span', { class: 'num', 'data-counter': key });
      view.counters[key] = val;
      return h('div', { class: `stat stat-${key}` }, h('span', { class: 'label' }, label), val);
    });

    const thead = h('thead', null, h('tr', null,
      h('th', { class: 'c-name' }, 'replica'),
      h('th', { class: 'c-state' }, 'state'),
      CHILD_COUNTERS.map(([key, label, , title]) => h('th', { class: `c-num c-${key}`, title }, label)),
      h('th', { class: 'c-last' }, 'last bad report')));
    const tbody = h('tbody');
    for (const c of v.children || []) {
      const row = buildChild(v.name, c);
      view.children.set(c.name, row);
      tbody.append(row.el);
    }

    view.chart = buildChart();
    view.jobs = buildJobs(v.name);

    view.el = h('article', { class: 'volume', 'data-volume': v.name, id: `volume-${v.name}` },
      h('header', { class: 'vol-head' },
        h('h3', { class: 'vol-name' }, v.name),
        view.meta,
        view.health),
      view.banner,
      h('div', { class: 'vol-stats' }, counterEls),
      h('table', { class: 'children' }, thead, tbody),
      view.jobs.el,
      view.chart.el);
    return view;
  }

  function buildChild(vol, c) {
    const row = { name: c.name, counters: {} };
    row.badge = h('span', { class: 'badge', 'data-badge': '' });
    row.stateText = h('span', { class: 'state-text' });
    row.stale = h('div', { class: 'stale-bytes', 'data-counter': 'stale_bytes', hidden: true });
    row.last = h('td', { class: 'c-last' });
    row.uri = h('div', { class: 'uri' });
    const nums = CHILD_COUNTERS.map(([key]) => {
      const el = h('span', { class: 'num', 'data-counter': key });
      row.counters[key] = el;
      return h('td', { class: `c-num c-${key}` }, el);
    });
    row.el = h('tr', { class: 'child', 'data-child': `${vol}/${c.name}`, 'data-name': c.name },
      h('td', { class: 'c-name' },
        h('div', { class: 'name' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), c.name), row.uri),
      h('td', { class: 'c-state' }, row.badge, row.stateText, row.stale),
      nums, row.last);
    return row;
  }

  function updateVolume(v, now, dtMs) {
    const view = ensureVolume(v);
    const threshold = v.vote_threshold;
    const n = (v.children || []).length;
    const flags = [
      fmtBytes(v.size),
      `votes ${threshold} of ${n}`,
      `read ${v.read_pattern || '?'}`,
      v.rewrite_corrupted ? 'rewrite on' : 'rewrite off',
    ];
    if (v.blkverify) flags.push('blkverify');
    view.meta.textContent = flags.join(' · ');
    view.meta.title = `size ${fmtExact(v.size)} bytes`;

    // Volume counters and the rate sample.
    const st = v.stats;
    for (const [key, , fmt] of VOL_COUNTERS) {
      const el = view.counters[key];
      const val = st ? st[key] : undefined;
      el.textContent = fmt(val);
      el.dataset.value = val === undefined ? '' : String(val);
      el.title = Number.isFinite(val) ? fmtExact(val) : 'not reported by this server';
    }
    if (st && view.prev && dtMs > 0) {
      const p = view.prev;
      const keys = ['reads', 'writes', 'read_bytes', 'write_bytes'];
      if (keys.every((k) => Number.isFinite(st[k]) && st[k] >= p[k])) {
        const sec = dtMs / 1000;
        view.samples.push({
          t: now,
          rb: (st.read_bytes - p.read_bytes) / sec,
          wb: (st.write_bytes - p.write_bytes) / sec,
          ro: (st.reads - p.reads) / sec,
          wo: (st.writes - p.writes) / sec,
        });
      }
    }
    view.prev = st ? Object.assign({}, st) : null;
    while (view.samples.length && view.samples[0].t < now - CHART_WINDOW_MS - POLL_MS) view.samples.shift();
    drawChart(view.chart, view.samples, now, !!st);

    // Children.
    let bad = [];
    let stale = 0;
    for (const c of v.children || []) {
      const row = view.children.get(c.name);
      if (!row) continue;
      const cs = c.stats;
      const m = markOf(v.name, c.name);
      if (cs && row.prevStats) {
        const grewErr = cs.errors - row.prevStats.errors;
        const grewBad = cs.bad_reports - row.prevStats.bad_reports;
        const grewLost = cs.corrupted_bytes - row.prevStats.corrupted_bytes;
        if (grewErr > 0 || grewBad > 0 || grewLost > 0) {
          m.counterBumpAt = now;
          const notes = [];
          if (grewErr > 0) notes.push(`${grewErr} new error${grewErr === 1 ? '' : 's'}`);
          if (grewLost > 0) notes.push(`${fmtBytes(grewLost)} more lost votes`);
          else if (grewBad > 0) notes.push(`${grewBad} new bad report${grewBad === 1 ? '' : 's'}`);
          m.counterNote = notes.join(', ');
        }
      }
      row.prevStats = cs ? Object.assign({}, cs) : null;
      for (const [key, , fmt] of CHILD_COUNTERS) {
        const el = row.counters[key];
        const val = cs ? cs[key] : undefined;
        el.textContent = fmt(val);
        el.dataset.value = val === undefined ? '' : String(val);
        el.title = Number.isFinite(val) ? fmtExact(val) : 'not reported by this server';
        el.classList.toggle('nonzero', Number.isFinite(val) && val > 0 && key !== 'repaired_bytes');
        el.classList.toggle('good', Number.isFinite(val) && val > 0 && key === 'repaired_bytes');
      }
      const badness = childBadness(v.name, c);
      row.el.dataset.state = c.state || 'unknown';
      if (badness) row.el.dataset.bad = badness; else delete row.el.dataset.bad;
      const label = badness === 'failed' ? 'FAILED' : badness === 'bad' ? 'BAD' : (c.state || '?').toUpperCase();
      const kind = badness || (c.state === 'healthy' ? 'ok' : c.state || 'unknown');
      row.badge.textContent = label;
      row.badge.dataset.badge = kind;
      row.badge.className = `badge badge-${kind}`;
      // Bytes this child missed that the resync has not copied back yet.
      const sb = Number.isFinite(c.stale_bytes) ? c.stale_bytes : 0;
      row.stateText.textContent = badness === 'bad' && c.state && c.state !== 'healthy' &&
        !(c.state === 'stale' && sb > 0) ? c.state : '';
      row.stale.dataset.value = c.stale_bytes === undefined ? '' : String(c.stale_bytes);
      row.stale.hidden = !(sb > 0);
      row.stale.textContent = sb > 0 ? `${fmtBytes(sb)} stale` : '';
      row.stale.title = sb > 0
        ? `${fmtExact(sb)} bytes of writes this replica missed; they are left out of its votes until the resync copies them back`
        : '';
      row.el.dataset.staleBytes = String(sb);
      if (!badness && (sb > 0 || c.state === 'stale' || c.state === 'syncing')) stale++;
      const lastReport = m.reports[m.reports.length - 1];
      row.last.textContent = '';
      if (lastReport) {
        row.last.append(
          h('div', { class: 'range' }, fmtRange(lastReport.offset, lastReport.bytes)),
          h('div', { class: 'ago muted' }, `${lastReport.type || ''}${lastReport.error ? ' error' : ''}, `, agoEl(lastReport.at)));
        row.last.title = `${exactRange(lastReport.offset, lastReport.bytes)}, ${lastReport.type || ''}` +
          `${lastReport.error ? `, error: ${lastReport.error}` : ''}, ${fmtFullTime(lastReport.at)}`;
      } else {
        row.last.append(h('span', { class: 'muted' }, 'none seen'));
        row.last.title = '';
      }
      row.uri.textContent = [c.backend, c.uri].filter(Boolean).join(' \u00b7 ');
      row.uri.title = row.uri.textContent;
      if (badness) bad.push({ c, badness, m });
    }

    // Volume-level warnings and the banner.
    const vm = state.volMarks.get(v.name);
    const since = Math.max(now - BAD_WINDOW_MS, acked(v.name));
    const failures = vm ? vm.failures.filter((f) => f.at > since) : [];
    const mismatches = vm ? vm.mismatches.filter((f) => f.at > since) : [];
    renderBanner(view, v.name, bad, failures, mismatches);

    const health = failures.length || mismatches.length ? 'failing'
      : bad.length ? 'degraded' : stale ? 'resyncing' : 'ok';
    view.el.dataset.health = health;
    view.health.dataset.health = health;
    view.health.textContent = health === 'failing' ? (failures.length ? 'QUORUM FAILURES' : 'BLKVERIFY MISMATCH')
      : health === 'degraded' ? `DEGRADED: ${bad.length} bad replica${bad.length === 1 ? '' : 's'}`
        : health === 'resyncing' ? `RESYNCING: ${stale} stale replica${stale === 1 ? '' : 's'}` : 'healthy';
    view.volume = v;
    return { bad: bad.length, stale, children: n, failing: health === 'failing' };
  }

  function renderBanner(view, vol, bad, failures, mismatches) {
    const b = view.banner;
    const sig = JSON.stringify([bad.map((x) => [x.c.name, x.badness, x.m.reports.length, x.m.counterBumpAt,
      x.m.lastRewriteAt, recentReports(vol, x.c.name).length]), failures.length, mismatches.length]);
    if (!bad.length && !failures.length && !mismatches.length) {
      b.hidden = true;
      b.textContent = '';
      delete b.dataset.sig;
      b.removeAttribute('data-bad-children');
      return;
    }
    if (b.dataset.sig === sig && !b.hidden) return;
    b.dataset.sig = sig;
    b.hidden = false;
    b.textContent = '';
    b.dataset.badChildren = bad.map((x) => x.c.name).join(' ');
    b.dataset.level = failures.length || mismatches.length || bad.some((x) => x.badness === 'failed') ? 'critical' : 'warning';

    const lines = [];
    for (const f of failures.slice(-1)) {
      lines.push(h('li', { class: 'warn-failure' },
        h('strong', null, 'Quorum failure: '),
        `${failures.length} request${failures.length === 1 ? '' : 's'} could not reach the vote threshold`,
        ` (latest: ${f.type || 'request'} of `, h('span', { class: 'range' }, fmtRange(f.offset, f.bytes)),
        ', ', agoEl(f.at), '). Clients got errors.'));
    }
    for (const f of mismatches.slice(-1)) {
      lines.push(h('li', { class: 'warn-failure' },
        h('strong', null, 'blkverify mismatch: '),
        `the replicas differ at byte ${fmtExact(f.offset)} (${fmtBytes(f.offset)}), `, agoEl(f.at), '.'));
    }
    for (const { c, badness, m } of bad) {
      const reports = recentReports(vol, c.name);
      const li = h('li', { class: `warn-child warn-${badness}`, 'data-bad-child': c.name });
      li.append(h('strong', null, `Replica ${c.name} `),
        h('span', { class: `badge badge-${badness}` }, badness === 'failed' ? 'FAILED' : 'BAD'), ' ');
      if (badness === 'failed') li.append('out of the vote. ');
      if (reports.length) {
        const r = reports[reports.length - 1];
        const range = h('span', { class: 'range', title: exactRange(r.offset, r.bytes) }, fmtRange(r.offset, r.bytes));
        if (badness === 'failed') li.append('Last: ');
        if (r.error) {
          li.append(`${r.type || 'request'} of `, range, ` failed (${r.error})`);
          if (r.suppressed > 0) li.append(similarEl(r.suppressed));
        }
        else li.append(`lost the ${r.type ? `${r.type} ` : ''}vote on `, range);
        li.append(', ', agoEl(r.at));
        if (m.lastRewriteAt >= r.at) li.append(h('span', { class: 'repaired' }, ' \u2014 rewritten with the winning data'));
        // Folded reports ("suppressed") count too.
        const total = reports.reduce((sum, x) => sum + 1 + (x.suppressed > 0 ? x.suppressed : 0), 0);
        if (total > 1) {
          const ranges = new Set(reports.map((x) => `${x.offset}+${x.bytes}`));
          const n = reports.length >= REPORTS_KEEP ? `over ${fmtCount(total)}` : fmtCount(total);
          li.append(h('span', { class: 'muted' },
            `; ${n} reports on ${ranges.size} range${ranges.size === 1 ? '' : 's'} in the last ${BAD_WINDOW_MS / 60000} min`));
        }
        li.append('.');
      } else if (m.counterNote && badness !== 'failed') {
        li.append(`${m.counterNote}, `, agoEl(m.counterBumpAt), '.');
      }
      lines.push(li);
    }
    const ack = h('button', {
      type: 'button', class: 'ack', title: 'hide these warnings until something new happens',
      onclick: () => { state.acks.set(vol, Date.now()); refresh(); },
    }, 'acknowledge');
    b.append(h('div', { class: 'banner-head' }, h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
      h('ul', null, lines), ack));
  }

  // ------------------------------------------------------------------- jobs

  // 75 -> "1 min 15 s".
  function fmtDuration(sec) {
    if (!Number.isFinite(sec) || sec < 0) return '';
    const t = Math.round(sec);
    if (t < 60) return `${t} s`;
    const m = Math.floor(t / 60);
    if (m < 60) return `${m} min ${pad(t % 60)} s`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr} h ${pad(m % 60)} min`;
    return `${Math.floor(hr / 24)} d ${hr % 24} h`;
  }

  function buildJobs(vol) {
    const jobs = { vol, rows: new Map(), list: null, busy: false, msgTimer: null };
    const btn = (action, label, title, repair) => h('button', {
      type: 'button', class: `job-btn job-btn-${action}`, 'data-action': action, title,
      onclick: () => startScrub(jobs, repair),
    }, label);
    jobs.scrubBtn = btn('scrub', 'Scrub',
      'Read the whole volume through the vote and report every replica that loses it. Writes nothing.', false);
    jobs.repairBtn = btn('scrub-repair', 'Scrub + repair',
      'Read the whole volume through the vote, report the replicas that lose it, ' +
      'and rewrite their bytes with the winning data.', true);
    jobs.summary = h('span', { class: 'jobs-summary' });
    jobs.msg = h('div', { class: 'jobs-msg', role: 'status', hidden: true });
    jobs.listEl = h('div', { class: 'job-list' });
    jobs.empty = h('p', { class: 'jobs-empty' },
      'No scrubs yet. A scrub reads every block of every replica and checks that they agree.');
    jobs.el = h('section', { class: 'jobs', 'data-volume': vol, 'aria-label': `jobs of volume ${vol}` },
      h('div', { class: 'jobs-head' },
        h('h4', { class: 'jobs-title' }, 'Jobs'), jobs.summary,
        h('span', { class: 'jobs-actions' }, jobs.scrubBtn, jobs.repairBtn)),
      jobs.msg, jobs.listEl, jobs.empty);
    return jobs;
  }

  function showJobsMsg(jobs, level, text) {
    clearTimeout(jobs.msgTimer);
    jobs.msg.dataset.level = level;
    jobs.msg.textContent = text;
    jobs.msg.hidden = false;
    jobs.msgTimer = setTimeout(() => { jobs.msg.hidden = true; }, JOBS_MSG_MS);
  }

  function jobsPath(vol, rest) {
    return `/v1/volumes/${encodeURIComponent(vol)}/${rest}`;
  }

  function actionError(e, what) {
    if (e instanceof AuthError) return `${what}: the server needs an API token. Enter it above and try again.`;
    return `${what}: ${e && e.message ? e.message : e}`;
  }

  async function startScrub(jobs, repair) {
    if (jobs.busy) return;
    jobs.busy = true;
    jobs.scrubBtn.disabled = true;
    jobs.repairBtn.disabled = true;
    try {
      const res = await api(jobsPath(jobs.vol, 'scrub'), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ repair }),
      });
      let job = null;
      try { job = await res.json(); } catch (_) { /* the poll shows it */ }
      if (job && Number.isFinite(job.id)) {
        // Show it now rather than at the next poll.
        const list = (jobs.list || []).filter((j) => !(j.kind === job.kind && j.id === job.id));
        list.push(job);
        renderJobs(jobs, list);
      }
    } catch (e) {
      showJobsMsg(jobs, 'error', actionError(e, `Could not start the scrub${repair ? ' with repair' : ''}`));
    } finally {
      jobs.busy = false;
      jobs.scrubBtn.disabled = false;
      jobs.repairBtn.disabled = false;
      pollJobsSoon();
    }
  }

  async function cancelJob(jobs, job, btn) {
    btn.disabled = true;
    btn.textContent = 'Cancelling\u2026';
    const name = jobName(job.kind, job.id, job.repair);
    try {
      await api(jobsPath(jobs.vol, `jobs/${encodeURIComponent(job.id)}`), { method: 'DELETE' });
    } catch (e) {
      if (e instanceof HttpError && e.status === 409) {
        showJobsMsg(jobs, 'info', `${name} cannot be cancelled: it has ended.`);
      } else {
        showJobsMsg(jobs, 'error', actionError(e, `Could not cancel ${name}`));
        btn.disabled = false;
        btn.textContent = 'Cancel';
      }
    } finally {
      pollJobsSoon();
    }
  }

  // The resync first (while it runs), then running jobs, then the last
  // finished ones, newest first. Rows are kept by job and updated in place,
  // so that a poll does not take the pointer or the focus off a button.
  function renderJobs(jobs, list) {
    jobs.list = list;
    const resync = list.filter((j) => j && j.kind === 'resync' && j.state === 'running');
    const others = list.filter((j) => j && j.kind !== 'resync');
    const running = others.filter((j) => j.state === 'running').sort((a, b) => b.id - a.id);
    const finished = others.filter((j) => j.state !== 'running').sort((a, b) => b.id - a.id)
      .slice(0, JOBS_FINISHED_SHOWN);
    const shown = [...resync, ...running, ...finished];
    const els = [];
    const keep = new Set();
    for (const j of shown) {
      const key = `${j.kind}:${j.id}`;
      keep.add(key);
      let row = jobs.rows.get(key);
      const sig = `${j.state}|${!!j.repair}`;
      if (!row || row.sig !== sig) {
        row = buildJobRow(jobs, j);
        row.sig = sig;
        jobs.rows.set(key, row);
      }
      updateJobRow(jobs, row, j);
      els.push(row.el);
    }
    for (const key of [...jobs.rows.keys()]) if (!keep.has(key)) jobs.rows.delete(key);
    const cur = [...jobs.listEl.children];
    if (cur.length !== els.length || cur.some((el, i) => el !== els[i])) jobs.listEl.replaceChildren(...els);
    jobs.empty.hidden = shown.length > 0 || others.length > 0;

    const parts = [];
    if (running.length) parts.push(`${running.length} scrub${running.length === 1 ? '' : 's'} running`);
    if (resync.length) parts.push('resync running');
    if (!parts.length) parts.push('idle');
    if (!running.length && others.length > JOBS_FINISHED_SHOWN) {
      parts.push(`the last ${JOBS_FINISHED_SHOWN} of ${others.length} scrubs`);
    }
    jobs.summary.textContent = parts.join(' \u00b7 ');
    jobs.el.dataset.running = String(running.length + resync.length);
  }

  function stateTag(st, level) {
    return h('span', { class: `job-state job-state-${level || st}` }, String(st || '?').toUpperCase());
  }

  function buildJobRow(jobs, j) {
    const row = { el: null };
    const running = j.state === 'running';
    const name = h('span', { class: 'job-name' },
      h('span', { class: 'job-kind' }, j.kind === 'resync' ? 'resync' : `${j.kind || 'job'} #${j.id}`),
      j.repair ? h('span', { class: 'job-flag', title: 'rewrites the losers with the winning data' }, 'repair') : null);
    row.el = h('div', {
      class: `job job-${running ? 'running' : 'done'} job-kind-${j.kind || 'job'}`,
      'data-job-id': j.id, 'data-kind': j.kind || '', 'data-state': j.state || '',
      'data-repair': j.repair ? 'true' : 'false',
    });
    if (running) {
      row.pct = h('span', { class: 'job-pct num' });
      row.nums = h('span', { class: 'job-nums' });
      row.note = h('div', { class: 'job-note' });
      row.fill = h('div', { class: 'fill' });
      row.bar = h('div', {
        class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
        'aria-label': `${jobName(j.kind, j.id, j.repair)} progress`,
      }, row.fill);
      let action;
      if (j.kind === 'resync') {
        action = h('span', { class: 'job-action muted', title: 'the resync runs whenever a replica has stale ranges' }, 'automatic');
      } else {
        const btn = h('button', {
          type: 'button', class: 'job-cancel', 'data-action': 'cancel',
          title: 'stop this scrub after its current step',
          onclick: () => cancelJob(jobs, row.job, btn),
        }, 'Cancel');
        action = h('span', { class: 'job-action' }, btn);
      }
      row.el.append(
        h('div', { class: 'job-line' }, stateTag('running'), name, row.pct, row.nums, action),
        row.bar, row.note);
      return row;
    }

    // A finished job: what it found.
    const mm = Object.entries(j.mismatches || {}).filter(([, b]) => b > 0)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const unrec = Array.isArray(j.unrecoverable) ? j.unrecoverable : [];
    const lost = mm.reduce((sum, [, b]) => sum + b, 0);
    const level = j.state === 'failed' || unrec.length ? 'bad'
      : j.state === 'completed' ? (mm.length && !(j.repair && j.bytes_repaired >= lost) ? 'warn' : 'ok') : j.state;
    const result = h('span', { class: 'job-result' });
    if (j.state === 'cancelled') {
      result.append(h('span', { class: 'res muted' }, `stopped at ${fmtPct(pct(j.bytes_done, j.bytes_total))}`));
    }
    if (j.state === 'failed') {
      result.append(h('span', { class: 'res res-bad', title: j.error || '' }, j.error || 'failed'));
    }
    if (mm.length) {
      result.append(h('span', { class: 'res' }, h('span', { class: 'res-label' }, 'mismatches'),
        mm.map(([c, b]) => h('span', {
          class: 'mm', 'data-mismatch-child': c, 'data-bytes': b,
          title: `replica ${c} lost the vote on ${fmtExact(b)} bytes`,
        }, h('span', { class: 'mm-child' }, c), ' ', h('span', { class: 'num' }, fmtBytes(b))))));
    } else if (j.state === 'completed') {
      result.append(h('span', { class: 'res res-ok' }, 'no mismatches'));
    } else {
      result.append(h('span', { class: 'res muted' }, 'no mismatches so far'));
    }
    if (j.repair) {
      result.append(h('span', {
        class: `res${j.bytes_repaired > 0 ? ' res-ok' : ''}`, 'data-repaired': j.bytes_repaired,
        title: `${fmtExact(j.bytes_repaired)} bytes rewritten with the winning data`,
      }, h('span', { class: 'res-label' }, 'repaired'), h('span', { class: 'num' }, fmtBytes(j.bytes_repaired))));
    } else if (mm.length) {
      result.append(h('span', { class: 'res muted', 'data-repaired': 0 }, 'not repaired (scan only)'));
    }
    const unrecTitle = unrec.length
      ? unrec.slice(0, 20).map((u) => fmtRange(u.offset, u.bytes)).join('\n') +
        (unrec.length > 20 ? `\n\u2026 and ${unrec.length - 20} more` : '') +
        '\nno majority of replicas agreed on these blocks: nothing was repaired there'
      : 'every block had a majority';
    result.append(h('span', {
      class: `res${unrec.length ? ' res-bad' : ''}`, 'data-unrecoverable': unrec.length, title: unrecTitle,
    }, h('span', { class: 'res-label' }, 'unrecoverable'), h('span', { class: 'num' }, String(unrec.length))));

    const started = Date.parse(j.started || '');
    const at = Number.isFinite(started) ? Math.min(started - skewMs, Date.now()) : NaN;
    const when = h('div', { class: 'job-when' },
      Number.isFinite(at) ? ['started ', agoEl(at)] : null,
      h('span', { class: 'job-scanned', title: `${fmtExact(j.bytes_done)} of ${fmtExact(j.bytes_total)} bytes` },
        `${Number.isFinite(at) ? ' \u00b7 ' : ''}${fmtBytes(j.bytes_done)} scanned`));
    row.el.dataset.level = level;
    row.el.append(h('div', { class: 'job-line' }, stateTag(j.state, level), h('div', { class: 'job-id' }, name, when), result));
    return row;
  }

  function updateJobRow(jobs, row, j) {
    row.job = j;
    const el = row.el;
    el.dataset.bytesDone = Number.isFinite(j.bytes_done) ? String(j.bytes_done) : '';
    el.dataset.bytesTotal = Number.isFinite(j.bytes_total) ? String(j.bytes_total) : '';
    const p = pct(j.bytes_done, j.bytes_total);
    el.dataset.progress = p.toFixed(1);
    if (!row.bar) return;
    row.bar.dataset.progress = p.toFixed(1);
    row.bar.setAttribute('aria-valuenow', p.toFixed(1));
    row.fill.style.width = `${p}%`;
    row.pct.textContent = fmtPct(p);
    const rate = j.rate_bytes_per_sec;
    const eta = j.eta_seconds;
    const parts = [];
    if (j.kind === 'resync') {
      const left = Math.max(0, (j.bytes_total || 0) - (j.bytes_done || 0));
      parts.push(`${fmtBytes(left)} stale left`);
    } else {
      parts.push(`${fmtBytes(j.bytes_done)} of ${fmtBytes(j.bytes_total)}`);
    }
    parts.push(rate > 0 ? fmtRate(rate) : 'starting');
    if (Number.isFinite(eta) && eta >= 0) parts.push(`${fmtDuration(eta)} left`);
    row.nums.textContent = parts.join(' \u00b7 ');
    row.nums.title = `${fmtExact(j.bytes_done)} of ${fmtExact(j.bytes_total)} bytes` +
      (rate > 0 ? `, ${fmtExact(Math.round(rate))} bytes/s` : '');
    if (j.kind === 'resync') {
      const view = state.volumes.get(jobs.vol);
      const v = view && view.volume;
      const stale = v ? (v.children || []).filter((c) => c.stale_bytes > 0) : [];
      row.note.textContent = stale.length
        ? `copying back writes that ${stale.map((c) => `${c.name} (${fmtBytes(c.stale_bytes)})`).join(', ')} missed`
        : 'copying back writes that replicas missed';
      row.note.hidden = false;
    } else {
      row.note.hidden = true;
    }
  }

  let jobsPolling = false;
  let jobsAgain = false;
  let jobsTimer = null;
  let jobsSoonTimer = null;

  async function pollJobs() {
    if (jobsPolling) { jobsAgain = true; return; }
    jobsPolling = true;
    clearTimeout(jobsTimer);
    try {
      await Promise.all([...state.volumes.values()].map(async (view) => {
        const jobs = view.jobs;
        try {
          const res = await api(jobsPath(view.name, 'jobs'));
          const list = await res.json();
          if (view.jobs !== jobs) return; // rebuilt meanwhile
          jobs.el.hidden = false;
          jobs.el.dataset.stale = 'no';
          renderJobs(jobs, Array.isArray(list) ? list : []);
        } catch (e) {
          // A server without jobs: no section. Otherwise keep what was
          // shown, dimmed.
          if (e instanceof HttpError && (e.status === 404 || e.status === 405)) jobs.el.hidden = true;
          else jobs.el.dataset.stale = 'yes';
        }
      }));
    } finally {
      jobsPolling = false;
      const again = jobsAgain;
      jobsAgain = false;
      jobsTimer = setTimeout(pollJobs, again ? 0 : POLL_MS);
    }
  }

  // On a JOB_* event or after a button: soon, once for a burst.
  function pollJobsSoon() {
    if (jobsSoonTimer) return;
    jobsSoonTimer = setTimeout(() => { jobsSoonTimer = null; pollJobs(); }, 150);
  }

  // ------------------------------------------------------------------ chart

  const CW = 600;
  const CH = 100;

  function buildChart() {
    const mk = (title, unit) => {
      const svg = s('svg', { viewBox: `0 0 ${CW} ${CH}`, preserveAspectRatio: 'none', class: 'spark', role: 'img' });
      const grid = s('g', { class: 'grid' });
      for (const y of [0.25, 0.5, 0.75]) grid.append(s('line', { x1: 0, x2: CW, y1: CH * y, y2: CH * y }));
      for (let i = 1; i < 5; i++) grid.append(s('line', { x1: (CW * i) / 5, x2: (CW * i) / 5, y1: 0, y2: CH, class: 'v' }));
      const readArea = s('path', { class: 'area area-read' });
      const writeArea = s('path', { class: 'area area-write' });
      const readLine = s('path', { class: 'line line-read' });
      const writeLine = s('path', { class: 'line line-write' });
      svg.append(grid, readArea, writeArea, readLine, writeLine);
      const max = h('span', { class: 'axis axis-max' });
      const readNow = h('span', { class: 'num', 'data-now': 'read' }, '—');
      const writeNow = h('span', { class: 'num', 'data-now': 'write' }, '—');
      const note = h('span', { class: 'chart-note muted', hidden: true });
      const left = h('span', { class: 'axis axis-left' });
      const el = h('figure', { class: 'chart', 'data-chart': unit },
        h('figcaption', null,
          h('span', { class: 'chart-title' }, title),
          h('span', { class: 'legend' },
            h('span', { class: 'key key-read' }, 'read '), readNow,
            h('span', { class: 'key key-write' }, 'write '), writeNow)),
        h('div', { class: 'plot' }, svg, max, note,
          left,
          h('span', { class: 'axis axis-right' }, 'now')));
      return { el, readArea, writeArea, readLine, writeLine, max, readNow, writeNow, note, left };
    };
    const bytes = mk('throughput', 'bytes');
    const ops = mk('operations', 'ops');
    return { el: h('div', { class: 'charts' }, bytes.el, ops.el), bytes, ops };
  }

  // 1-2-5 steps, in the unit family of fmt.
  function niceMax(v, binary) {
    if (!(v > 0)) return binary ? 1024 : 1;
    let scale = 1;
    if (binary) { while (v / scale >= 1024) scale *= 1024; } else { while (v / scale >= 1000) scale *= 1000; }
    const x = v / scale;
    const mag = 10 ** Math.floor(Math.log10(x));
    const f = x / mag;
    const step = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    // 1000 KiB/s reads better as 1 MiB/s.
    if (binary && step * mag >= 1000) return 1024 * scale;
    return step * mag * scale;
  }

  function paths(samples, key, now, max, span) {
    const x = (t) => ((t - (now - span)) / span) * CW;
    const y = (v) => CH - Math.min(1, v / max) * (CH - 2) - 1;
    let line = '';
    let area = '';
    let seg = [];
    const flush = () => {
      if (!seg.length) return;
      const pts = seg.length === 1 ? [seg[0], [seg[0][0] + 2, seg[0][1]]] : seg;
      line += `M${pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join('L')}`;
      area += `M${pts[0][0].toFixed(1)},${CH}L${pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join('L')}` +
        `L${pts[pts.length - 1][0].toFixed(1)},${CH}Z`;
      seg = [];
    };
    let prevT = null;
    for (const smp of samples) {
      if (prevT !== null && smp.t - prevT > POLL_MS * 3) flush();
      seg.push([x(smp.t), y(smp[key])]);
      prevT = smp.t;
    }
    flush();
    return { line, area };
  }

  function drawOne(c, samples, now, span, rk, wk, binary, fmt, haveStats) {
    const peak = samples.reduce((m, smp) => Math.max(m, smp[rk], smp[wk]), 0);
    const max = niceMax(peak, binary);
    const r = paths(samples, rk, now, max, span);
    const w = paths(samples, wk, now, max, span);
    c.left.textContent = `\u2212${fmtSpan(span)}`;
    c.readLine.setAttribute('d', r.line);
    c.readArea.setAttribute('d', r.area);
    c.writeLine.setAttribute('d', w.line);
    c.writeArea.setAttribute('d', w.area);
    c.max.textContent = fmt(max);
    const last = samples[samples.length - 1];
    c.readNow.textContent = last ? fmt(last[rk]) : '—';
    c.writeNow.textContent = last ? fmt(last[wk]) : '—';
    c.note.hidden = samples.length > 0;
    c.note.textContent = haveStats ? 'collecting…' : 'this server reports no I/O counters';
  }

  // The chart spans what this page has seen, from one minute up to
  // CHART_WINDOW_MS, so that it says something from the first polls on.
  function drawChart(chart, samples, now, haveStats) {
    const first = samples.length ? samples[0].t - POLL_MS : now;
    const span = Math.min(CHART_WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
    drawOne(chart.bytes, samples, now, span, 'rb', 'wb', true, fmtRate, haveStats);
    drawOne(chart.ops, samples, now, span, 'ro', 'wo', false, (v) => `${fmtOps(v)}/s`, haveStats);
  }

  function fmtSpan(ms) {
    const sec = Math.round(ms / 1000);
    if (sec < 120) return `${sec} s`;
    return `${trimZeros((sec / 60).toFixed(1))} min`;
  }

  // ------------------------------------------------------------------ poll

  let lastPollAt = 0;
  let lastVolumes = null;
  let downSince = 0;
  let polling = false;
  let pollTimer = null;

  async function poll() {
    if (polling) return;
    polling = true;
    clearTimeout(pollTimer);
    const t0 = performance.now();
    try {
      const res = await api('/v1/volumes');
      noteServerDate(res);
      const body = await res.json();
      const vols = Array.isArray(body) ? body : [];
      lastVolumes = vols;
      const now = Date.now();
      const dt = lastPollAt ? t0 - lastPollAt : 0;
      lastPollAt = t0;
      renderVolumes(vols, now, dt);
      downSince = 0;
      document.body.dataset.stale = 'no';
      setPill('poll-status', 'ok', `stats ${fmtTime(now)}`, `volumes polled every ${POLL_MS / 1000} s; last answer ${fmtFullTime(now)}`);
    } catch (e) {
      if (e instanceof AuthError) {
        setPill('poll-status', 'auth', 'stats: token needed');
      } else {
        // Keep what was shown, dimmed, and say since when it is old.
        if (!downSince) downSince = Date.now();
        document.body.dataset.stale = 'yes';
        setPill('poll-status', 'down', `stats: unreachable since ${fmtTime(downSince)}`, String(e.message || e));
      }
    } finally {
      polling = false;
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  function renderVolumes(vols, now, dt) {
    const seen = new Set();
    let badTotal = 0;
    let staleTotal = 0;
    let childTotal = 0;
    let failing = 0;
    for (const v of vols) {
      if (!v || !v.name) continue;
      seen.add(v.name);
      const r = updateVolume(v, now, dt);
      badTotal += r.bad;
      staleTotal += r.stale;
      childTotal += r.children;
      if (r.failing) failing++;
    }
    for (const [name, view] of state.volumes) {
      if (!seen.has(name)) { view.el.remove(); state.volumes.delete(name); }
    }
    // Keep the server's order.
    const container = $('volumes');
    for (const v of vols) {
      const view = v && state.volumes.get(v.name);
      if (view) container.append(view.el);
    }
    const empty = $('volumes-empty');
    empty.hidden = seen.size > 0;
    empty.textContent = 'This server has no volumes.';

    const sum = $('summary');
    sum.textContent = '';
    sum.append(
      h('span', null, `${seen.size} volume${seen.size === 1 ? '' : 's'}`),
      h('span', null, `${childTotal} replica${childTotal === 1 ? '' : 's'}`));
    if (badTotal) sum.append(h('span', { class: 'sum-bad' }, `${badTotal} bad replica${badTotal === 1 ? '' : 's'}`));
    if (failing) sum.append(h('span', { class: 'sum-bad' }, `${failing} volume${failing === 1 ? '' : 's'} with quorum failures`));
    if (staleTotal) sum.append(h('span', { class: 'sum-stale' }, `${staleTotal} replica${staleTotal === 1 ? '' : 's'} resyncing`));
    if (!badTotal && !failing && !staleTotal && seen.size) sum.append(h('span', { class: 'sum-ok' }, 'all replicas agree'));
    document.body.dataset.alert = badTotal || failing ? 'yes' : 'no';
    updateAgos();
    document.title = badTotal || failing
      ? `\u26a0 ${badTotal ? `${badTotal} bad replica${badTotal === 1 ? '' : 's'}` : 'quorum failures'} \u2014 quorum`
      : 'quorum';
  }

  // ---------------------------------------------------------------- events

  function eventChild(ev) {
    const d = ev.data || {};
    return d['node-name'] || '';
  }

  function eventRange(ev) {
    const d = ev.data || {};
    if (ev.event === 'BLKVERIFY_MISMATCH') return [d['request-offset'], d['request-bytes']];
    if (JOB_EVENTS.has(ev.event)) return [undefined, undefined];
    return [d.offset, d.bytes];
  }

  // "+49 similar": identical error reports the server folded into this one.
  function similarEl(n) {
    return h('span', {
      class: 'similar', 'data-suppressed': n,
      title: `${fmtExact(n)} more identical error report${n === 1 ? '' : 's'} within a second, folded into this one`,
    }, ` +${fmtCount(n)} similar`);
  }

  function jobName(kind, id, repair) {
    return `${kind || 'job'} #${id}${repair ? ' + repair' : ''}`;
  }

  function pct(done, total) {
    if (!(total > 0) || !Number.isFinite(done)) return 0;
    return Math.max(0, Math.min(100, (done / total) * 100));
  }

  function fmtPct(p) {
    return p > 0 && p < 1 ? `${p.toFixed(1)}%` : `${Math.floor(p)}%`;
  }

  // {"c": 4096} -> "c lost 4 KiB" (sorted by child name).
  function mismatchText(mm) {
    const list = Object.entries(mm || {}).filter(([, b]) => b > 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return list.map(([c, b]) => `${c} lost ${fmtBytes(b)}`).join(', ');
  }

  // The range and detail cells of a JOB_* event: [range text, detail, class].
  function jobEventText(ev) {
    const d = ev.data || {};
    const name = jobName(d.kind, d.job, d.repair);
    switch (ev.event) {
      case 'JOB_STARTED':
        return [`${fmtBytes(d.bytes_total)} to scan`, `${name} started`, 'info'];
      case 'JOB_PROGRESS':
        return [`${fmtBytes(d.bytes_done)} of ${fmtBytes(d.bytes_total)}`,
          `${name}: ${fmtPct(pct(d.bytes_done, d.bytes_total))}`, 'info'];
      default: {
        const parts = [];
        const lost = mismatchText(d.mismatches);
        if (lost) parts.push(lost);
        if (d.bytes_repaired > 0) parts.push(`${fmtBytes(d.bytes_repaired)} repaired`);
        const unrec = Array.isArray(d.unrecoverable) ? d.unrecoverable.length : 0;
        if (unrec) parts.push(`${unrec} unrecoverable range${unrec === 1 ? '' : 's'}`);
        const st = d.state || 'completed';
        let cls = 'good';
        if (st === 'failed' || unrec) cls = 'err';
        else if (lost) cls = d.bytes_repaired > 0 && d.bytes_repaired >= Object.values(d.mismatches || {}).reduce((a, b) => a + b, 0) ? 'good' : 'warn';
        else if (st !== 'completed') cls = 'muted';
        const result = parts.length ? parts.join(', ') : st === 'completed' ? 'all replicas agree' : '';
        return [`${fmtBytes(d.bytes_scanned)} scanned`, `${d.kind || 'job'} #${d.job} ${st}${result ? `: ${result}` : ''}`, cls];
      }
    }
  }

  function eventRow(rec) {
    const { ev, at, source } = rec;
    const d = ev.data || {};
    const child = eventChild(ev);
    const [off, len] = eventRange(ev);
    const [, kind, label] = EVENT_TYPES.find(([n]) => n === ev.event) || [ev.event, 'other', ev.event];
    let detail;
    let detailClass = '';
    let rangeText = fmtRange(off, len);
    switch (ev.event) {
      case 'QUORUM_REPORT_BAD':
        if (d.error) { detail = d.error; detailClass = 'err'; } else { detail = 'lost the vote'; detailClass = 'warn'; }
        break;
      case 'JOB_STARTED':
      case 'JOB_PROGRESS':
      case 'JOB_COMPLETED':
        [rangeText, detail, detailClass] = jobEventText(ev);
        break;
      case 'QUORUM_FAILURE': detail = 'below vote threshold'; detailClass = 'err'; break;
      case 'QUORUM_REWRITE': detail = 'repaired'; detailClass = 'good'; break;
      case 'BLKVERIFY_MISMATCH':
        detail = `differs at byte ${fmtExact(d.offset)}`; detailClass = 'err'; break;
      default: detail = JSON.stringify(d);
    }
    const tr = h('tr', {
      class: `event ev-${kind}${source === 'stream' ? ' live' : ''}`,
      'data-id': ev.id,
      'data-event': ev.event,
      'data-volume': ev.volume,
      'data-child': child || null,
      'data-offset': Number.isFinite(off) ? off : null,
      'data-bytes': Number.isFinite(len) ? len : null,
      'data-source': source,
      'data-job': JOB_EVENTS.has(ev.event) ? d.job : null,
      'data-suppressed': d.suppressed > 0 ? d.suppressed : null,
      title: `#${ev.id} ${ev.event}\n${fmtFullTime(at)}\n${JSON.stringify(d)}`,
    },
    h('td', { class: 'c-time', title: `${fmtFullTime(Date.parse(ev.timestamp))} (server: ${ev.timestamp})` }, fmtTime(Date.parse(ev.timestamp))),
    h('td', { class: 'c-type' }, h('span', { class: `tag tag-${kind}`, title: ev.event }, label)),
    h('td', { class: 'c-where' }, ev.volume, child ? h('span', { class: 'sep' }, ' / ') : '', child ? h('strong', { class: 'child-name' }, child) : ''),
    h('td', { class: 'c-range', title: exactRange(off, len) },
      d.type ? h('span', { class: 'op' }, `${d.type} `) : '', rangeText),
    h('td', { class: `c-detail ${detailClass}`, title: detail }, detail,
      d.suppressed > 0 ? similarEl(d.suppressed) : null));
    if (ev.event === 'QUORUM_REPORT_BAD' && !d.error) tr.dataset.lost = 'true';
    return tr;
  }

  function renderFeed() {
    // Everything queued is in state.events already.
    pending = [];
    const body = $('events-body');
    body.textContent = '';
    const shown = [];
    for (let i = state.events.length - 1; i >= 0 && shown.length < FEED_MAX; i--) {
      const rec = state.events[i];
      if (state.hidden.has(rec.ev.event)) continue;
      shown.push(eventRow(rec));
    }
    body.append(...shown);
    updateFeedMeta();
  }

  // Live events are rendered in batches, so that a burst (a replica that
  // fails every request) costs one re-render, not one per event.
  let pending = [];
  let flushTimer = null;
  function queueEvent(rec) {
    pending.push(rec);
    if (!flushTimer) flushTimer = setTimeout(flushEvents, 100);
  }

  function flushEvents() {
    flushTimer = null;
    const batch = pending.slice(-FEED_MAX).filter((r) => !r.superseded);
    pending = [];
    const body = $('events-body');
    // The progress rows these events replace.
    for (const r of batch) {
      if (r.ev.event !== 'JOB_PROGRESS' && r.ev.event !== 'JOB_COMPLETED') continue;
      for (const row of body.querySelectorAll(`tr[data-event="JOB_PROGRESS"][data-job="${Number(r.ev.data && r.ev.data.job)}"]`)) {
        if (row.dataset.volume === r.ev.volume) row.remove();
      }
    }
    const rows = [];
    for (let i = batch.length - 1; i >= 0; i--) {
      if (state.hidden.has(batch[i].ev.event)) continue;
      const row = eventRow(batch[i]);
      row.classList.add('fresh');
      rows.push(row);
    }
    body.prepend(...rows);
    while (body.rows.length > FEED_MAX) body.deleteRow(body.rows.length - 1);
    updateFeedMeta();
    // Show the marks now rather than at the next poll.
    if (batch.some((r) => r.ev.event !== 'QUORUM_REWRITE' && !JOB_EVENTS.has(r.ev.event))) refresh();
    // And the jobs; a finished scrub with repair changed the counters too.
    if (batch.some((r) => JOB_EVENTS.has(r.ev.event))) pollJobsSoon();
    if (batch.some((r) => r.ev.event === 'JOB_COMPLETED')) poll();
  }

  function updateFeedMeta() {
    const rows = $('events-body').rows.length;
    $('events-empty').hidden = rows > 0;
    $('events-empty').textContent = state.events.length && !rows
      ? 'All events are filtered out.'
      : 'No events yet. Replicas that lose a vote or fail show up here as it happens.';
    $('events-count').textContent = state.lastEventId ? `latest #${state.lastEventId}` : '';
    const counts = new Map();
    for (const r of state.events) counts.set(r.ev.event, (counts.get(r.ev.event) || 0) + 1);
    for (const btn of $('event-filters').children) {
      const n = btn.dataset.type.split(' ').reduce((sum, t) => sum + (counts.get(t) || 0), 0);
      btn.querySelector('.n').textContent = n ? fmtCount(n) : '';
    }
  }

  function buildFilters() {
    const box = $('event-filters');
    for (const [label, kind, names] of FILTERS) {
      const btn = h('button', {
        type: 'button', class: `filter tag-${kind}`, 'data-type': names.join(' '), 'aria-pressed': 'true',
        title: `show or hide ${names.join(', ')} (the count is of the last ${KEEP_EVENTS} events)`,
        onclick: () => {
          const hide = !state.hidden.has(names[0]);
          for (const n of names) { if (hide) state.hidden.add(n); else state.hidden.delete(n); }
          btn.setAttribute('aria-pressed', hide ? 'false' : 'true');
          renderFeed();
        },
      }, label, h('span', { class: 'n' }));
      box.append(btn);
    }
  }

  // The stored history, paged, oldest first.
  async function loadHistory() {
    let since = state.lastEventId;
    for (let page = 0; page < HISTORY_MAX_PAGES; page++) {
      const res = await api(`/v1/events?since=${since}&limit=${HISTORY_PAGE}`);
      const list = await res.json();
      if (!Array.isArray(list) || !list.length) break;
      for (const ev of list) ingest(ev, 'history');
      since = list[list.length - 1].id;
      if (list.length < HISTORY_PAGE) break;
    }
    state.historyLoaded = true;
    renderFeed();
  }

  // Server-Sent Events over fetch: "id:" and "data:" lines, a blank line
  // ends an event, ":" lines are keep-alives.
  async function streamOnce(signal) {
    const res = await api(`/v1/events/stream?since=${state.lastEventId}`, {
      signal, headers: { Accept: 'text/event-stream' },
    });
    if (!res.body) throw new Error('no stream body');
    setPill('stream-status', 'live', 'events: live', 'connected to /v1/events/stream');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length) dispatch(data.join('\n'));
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line[5] === ' ' ? 6 : 5));
        }
        // "id:", "event:", "retry:" and ":" comments need nothing: the id
        // is in the JSON too.
      }
    }
  }

  function dispatch(text) {
    let ev;
    try { ev = JSON.parse(text); } catch (_) { return; }
    const rec = ingest(ev, 'stream');
    if (rec) queueEvent(rec);
  }

  // Re-renders from the last poll's answer: marks and relative times move
  // without new data.
  function refresh() {
    if (lastVolumes && !polling) renderVolumes(lastVolumes, Date.now(), 0);
  }

  async function streamLoop() {
    let backoff = BACKOFF_MIN_MS;
    for (;;) {
      const ctl = new AbortController();
      const started = Date.now();
      const tokenUsed = state.token;
      try {
        // The stored history first, once, then the stream from its last id.
        if (!state.historyLoaded) await loadHistory();
        await streamOnce(ctl.signal);
        // The server ended the stream (it restarted or shut down).
      } catch (e) {
        if (e instanceof AuthError) {
          setPill('stream-status', 'auth', 'events: token needed');
          if (tokenUsed === state.token) await tokenOrTimeout(BACKOFF_MAX_MS);
          backoff = BACKOFF_MIN_MS;
          continue;
        }
        console.warn('quorum: event stream:', e);
      } finally {
        ctl.abort();
      }
      if (Date.now() - started > 30000) backoff = BACKOFF_MIN_MS;
      const wait = backoff + Math.floor(Math.random() * 250);
      setPill('stream-status', 'down', `events: reconnecting in ${Math.round(wait / 1000)} s`,
        `the event stream dropped; reconnecting from #${state.lastEventId}`);
      await sleep(wait);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    $('host').textContent = location.host;
    $('auth').addEventListener('submit', onToken);
    buildFilters();
    poll();
    pollJobs();
    streamLoop();
    setInterval(refresh, 5000);
  }

  start();
})();
