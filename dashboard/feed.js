// The Events panel: the live feed (newest first, at most FEED_MAX events)
// and its filter buttons, one per group of the server's event kinds.
// Repeats of one kind for one child share a row ("×37 in 2 s", see
// groupRepeats), placed by the newest. Live events are drawn in batches,
// so that a burst (a replica that fails every request) costs one redraw,
// not one per event.

import { $, h } from './dom.js';
import { describeEvent, filterGroups, groupRepeats, isChildEvent, isJobEvent, repeatText } from './events.js';
import { exactRange, fmtCount, fmtFullTime, fmtTime } from './format.js';
import { KEEP_EVENTS, eventCounts, feedRecords, stateLook, toggleHidden } from './model.js';

const FEED_MAX = 200;
const FLUSH_MS = 100;

/** The feed part of the page's state: live records not drawn yet. */
export function createFeed() {
  return { pending: [], timer: null };
}

function eventRow(app, group) {
  const { ev, at, source } = group.rec;
  const d = ev.data || {};
  const e = describeEvent(ev, (state) => stateLook(app.model, state).level);
  const ts = Date.parse(ev.timestamp);
  const repeats = repeatText(group);
  const tr = h('tr', {
    class: `event ev-${e.css}${source === 'stream' ? ' live' : ''}`,
    'data-id': ev.id,
    'data-event': ev.event,
    'data-volume': ev.volume,
    'data-child': e.child || null,
    'data-offset': Number.isFinite(e.offset) ? e.offset : null,
    'data-bytes': Number.isFinite(e.bytes) ? e.bytes : null,
    'data-source': source,
    'data-job': isJobEvent(ev.event) ? d.job : null,
    'data-suppressed': d.suppressed > 0 ? d.suppressed : null,
    'data-repeats': group.count > 1 ? group.count : null,
    title: `#${ev.id} ${ev.event}\n${fmtFullTime(at)}\n${JSON.stringify(d)}`,
  },
  h('td', { class: 'c-time', title: `${fmtFullTime(ts)} (server: ${ev.timestamp})` }, fmtTime(ts)),
  h('td', { class: 'c-type' }, h('span', { class: `tag tag-${e.css}`, title: ev.event }, e.label)),
  h('td', { class: 'c-where' }, ev.volume,
    e.child ? h('span', { class: 'sep' }, ' / ') : '', e.child ? h('strong', { class: 'child-name' }, e.child) : ''),
  h('td', { class: 'c-range', title: exactRange(e.offset, e.bytes) },
    d.type ? h('span', { class: 'op' }, `${d.type} `) : '', e.rangeText),
  h('td', { class: `c-detail ${e.detailClass}`, title: e.detail }, e.detail,
    repeats ? h('span', {
      class: 'similar',
      title: `${fmtCount(group.count)} reports in ${group.records.length} event${group.records.length === 1 ? '' : 's'}` +
        ' (the server folds what comes within a second of a report into one event)',
    }, ` ${repeats}`) : null));
  if (ev.event === 'QUORUM_REPORT_BAD' && !d.error) tr.dataset.lost = 'true';
  return tr;
}

function updateFeedMeta(app) {
  const rows = $('events-body').rows.length;
  const m = app.model;
  $('events-empty').hidden = rows > 0;
  $('events-empty').textContent = m.events.length && !rows
    ? 'All events are filtered out.'
    : 'No events yet. Replicas that lose a vote or fail show up here as it happens.';
  $('events-count').textContent = m.lastEventId ? `latest #${m.lastEventId}` : '';
  const counts = eventCounts(m);
  for (const btn of $('event-filters').children) {
    const n = btn.dataset.type.split(' ').reduce((sum, t) => sum + (counts.get(t) || 0), 0);
    btn.querySelector('.n').textContent = n ? fmtCount(n) : '';
  }
}

/**
 * Draws the whole feed from the model (after the history, a filter, or a
 * batch of live events); the rows whose newest event is in `fresh` are
 * marked so.
 */
export function renderFeed(app, fresh = new Set()) {
  // Everything queued is in the model already.
  app.feed.pending = [];
  const body = $('events-body');
  body.replaceChildren(...groupRepeats(feedRecords(app.model, FEED_MAX)).map((g) => {
    const row = eventRow(app, g);
    if (fresh.has(g.rec)) row.classList.add('fresh');
    return row;
  }));
  updateFeedMeta(app);
}

function flushEvents(app) {
  const feed = app.feed;
  feed.timer = null;
  const batch = feed.pending;
  renderFeed(app, new Set(batch));
  const names = batch.map((r) => r.ev.event);
  // Show the marks now rather than at the next poll.
  if (names.some((n) => n !== 'QUORUM_REWRITE' && !isJobEvent(n))) app.hooks.refresh();
  // And the jobs; a finished scrub with repair changed the counters too,
  // and a child added or removed changes the volume's card.
  if (names.some(isJobEvent)) app.hooks.pollJobsSoon();
  if (names.some((n) => n === 'JOB_COMPLETED' || isChildEvent(n))) app.hooks.poll();
}

/** A live event's record: drawn within FLUSH_MS, with the others that came. */
export function queueEvent(app, rec) {
  app.feed.pending.push(rec);
  if (!app.feed.timer) app.feed.timer = setTimeout(() => flushEvents(app), FLUSH_MS);
}

/** The filter buttons, one per group of the server's event kinds. */
export function buildFilters(app) {
  const box = $('event-filters');
  box.replaceChildren(...filterGroups(app.model.kinds || []).map(({ label, css, names }) => {
    const btn = h('button', {
      type: 'button', class: `filter tag-${css}`, 'data-type': names.join(' '),
      'aria-pressed': names.some((n) => app.model.hidden.has(n)) ? 'false' : 'true',
      title: `show or hide ${names.join(', ')} (the count is of the last ${KEEP_EVENTS} events)`,
      onclick: () => {
        btn.setAttribute('aria-pressed', toggleHidden(app.model, names) ? 'true' : 'false');
        renderFeed(app);
      },
    }, label, h('span', { class: 'n' }));
    return btn;
  }));
  updateFeedMeta(app);
}
