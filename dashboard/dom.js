// The few DOM helpers every view uses: element builders, relative times
// that move, and the header's status pills. Nothing here runs on import.

import { fmtAgo, fmtCount, fmtExact, fmtFullTime } from './format.js';

export function $(id) { return document.getElementById(id); }

/**
 * h('div', {class: 'x', onclick: f, 'data-y': 1}, child, [more], 'text'):
 * attributes that are undefined, null or false are left out, children
 * that are too; arrays of children are flattened.
 */
export function h(tag, attrs, ...children) {
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

/** An SVG element with its attributes. */
export function s(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

/** "12 s ago" that moves: updateAgos() rewrites every [data-at] in place. */
export function agoEl(ms) {
  return h('span', { class: 'when', 'data-at': ms, title: fmtFullTime(ms) }, fmtAgo(ms));
}

export function updateAgos() {
  for (const el of document.querySelectorAll('[data-at]')) el.textContent = fmtAgo(Number(el.dataset.at));
}

/** A header pill: `st` is its data-state (live, ok, auth, down, connecting). */
export function setPill(id, st, text, title) {
  const el = $(id);
  el.dataset.state = st;
  el.textContent = text;
  if (title !== undefined) el.title = title;
}

/** "×49 in 1 s": the reports the server folded into one event. */
export function similarEl(n) {
  return h('span', {
    class: 'similar', 'data-suppressed': n,
    title: `${fmtExact(n)} report${n === 1 ? '' : 's'} of this kind within a second, folded by the server into this event`,
  }, ` \u00d7${fmtCount(n)} in 1 s`);
}
