// Each damaged replica's damage map: the volume's extent drawn as a bar
// with the damaged ranges marked, and the exact ranges in text, from
// GET /v1/volumes/{vol}/children/{name}/damage. A map is fetched when
// model.js damageWanted() says so (the child's damaged bytes changed, or
// the map is old), and drawn under the child's row while the server says
// the child has damaged bytes.

import { fetchDamage } from './api.js';
import { h } from './dom.js';
import { exactRange, fmtBytes, fmtExact, fmtRange, plural } from './format.js';
import { damageMarks, damageWanted, setDamage } from './model.js';

// Ranges listed in text; the bar marks every range the server listed.
const RANGES_SHOWN = 20;

/** The elements of one child's damage map (drawn by renderDamageMap). */
export function buildDamageMap(vol, child) {
  const map = { sig: '' };
  map.head = h('div', { class: 'damage-head' });
  map.bar = h('div', { class: 'damage-bar', role: 'img' });
  map.scaleEnd = h('span', { class: 'damage-scale-end' });
  map.list = h('ul', { class: 'damage-ranges' });
  map.el = h('div', { class: 'damage-map', 'data-child': `${vol}/${child}` },
    map.head, map.bar,
    h('div', { class: 'damage-scale' }, h('span', null, '0'), map.scaleEnd),
    map.list);
  return map;
}

/**
 * Draws child record `ch` (model.js volumeView) on a volume of `size`
 * bytes; redraws nothing when nothing changed.
 */
export function renderDamageMap(map, ch, size) {
  const d = ch.damage;
  const sig = JSON.stringify([ch.damagedBytes, size, d ? [d.bytes, d.truncated, d.ranges] : null]);
  if (sig === map.sig) return;
  map.sig = sig;
  map.el.dataset.bytes = String(ch.damagedBytes);
  map.el.dataset.size = String(size);
  map.el.dataset.loaded = d ? 'yes' : 'no';
  map.scaleEnd.textContent = fmtBytes(size);
  map.scaleEnd.title = `${fmtExact(size)} bytes: the volume's end`;
  const name = ch.c.name;
  map.head.replaceChildren(
    h('span', { class: 'damage-title' }, 'Damage map'), ' ',
    h('strong', null, fmtBytes(ch.damagedBytes)),
    ` of replica ${name} lost a vote or could not be read`,
    d ? `, in ${plural(d.ranges.length, 'range')}${d.truncated ? ' (the first ones listed by the server)' : ''}` : '',
    '. The other replicas still serve them; a scrub with repair rewrites them.');
  map.bar.setAttribute('aria-label',
    `${fmtExact(ch.damagedBytes)} damaged bytes of replica ${name} on a volume of ${fmtExact(size)} bytes`);
  const marks = d ? damageMarks(d.ranges, size) : [];
  map.bar.replaceChildren(...marks.map((m) => h('span', {
    class: 'damage-mark',
    'data-offset': m.offset,
    'data-length': m.length,
    style: `left: ${m.left}%; width: max(3px, ${m.width}%)`,
    title: exactRange(m.offset, m.length),
  })));
  const items = d ? d.ranges.slice(0, RANGES_SHOWN).map((r) => h('li', {
    class: 'damage-range', 'data-offset': r.offset, 'data-length': r.length, title: exactRange(r.offset, r.length),
  }, fmtRange(r.offset, r.length))) : [h('li', { class: 'muted' }, 'loading the ranges\u2026')];
  if (d && d.ranges.length > RANGES_SHOWN) {
    items.push(h('li', { class: 'muted' }, `and ${plural(d.ranges.length - RANGES_SHOWN, 'more range')}` +
      `${d.truncated ? ', and more the server did not list' : ''}`));
  } else if (d && d.truncated) {
    items.push(h('li', { class: 'muted' }, 'and more the server did not list'));
  }
  map.list.replaceChildren(...items);
}

/**
 * Fetches the damage maps that `result` (model.js applyVolumes) wants, one
 * request at a time per child; redraws once any arrived.
 */
export async function pollDamage(app, result, now) {
  const wanted = [];
  for (const vm of result.volumes) {
    for (const ch of vm.children) {
      const key = `${vm.name}\u0000${ch.c.name}`;
      if (app.damageFetching.has(key) || !damageWanted(app.model, vm.name, ch.c, now)) continue;
      app.damageFetching.add(key);
      wanted.push([key, vm.name, ch.c.name, ch.c.damaged_bytes]);
    }
  }
  if (!wanted.length) return;
  const got = await Promise.all(wanted.map(async ([key, vol, child, forBytes]) => {
    try {
      setDamage(app.model, vol, child, await fetchDamage(app, vol, child), forBytes, Date.now());
      return true;
    } catch (e) {
      console.warn(`quorum: the damage of ${vol}/${child}:`, e);
      return false;
    } finally {
      app.damageFetching.delete(key);
    }
  }));
  if (got.some(Boolean)) app.hooks.refresh();
}
