// Browser test of the quorum dashboard, in Debian's headless Chromium.
//
//   QUORUM_URL=http://127.0.0.1:PORT      a running quorum-server (loopback only)
//   QUORUM_CHILD_FILE=/path/vm-c.img      the image file of the child to corrupt
//   QUORUM_VOLUME=vm QUORUM_CHILD=c       which volume and child that is
//   QUORUM_CHILD_URI=c.img                its uri, as GET /v1/volumes gives it
//   QUORUM_NEW_CHILD=d                    a child the test adds and removes
//   QUORUM_NEW_CHILD_URI=d.img            its uri (under the server's child_roots)
//   SCREENSHOT=/path/dashboard.png        where the last screenshot goes (after
//                                         the reload); those of the damaged and
//                                         the repaired replica and of the added
//                                         one go beside it, as
//                                         dashboard-damaged.png,
//                                         dashboard-repaired.png and
//                                         dashboard-replica.png
//   QUORUM_TOKEN=...                      optional: the server's API token; the
//                                         test then enters it in the page's form
//   node tests/dashboard/dashboard.test.mjs
//
// It opens the page, waits until the volume and the child are rendered and
// the live event stream is connected, THEN overwrites 100 bytes of the
// child's file at 1,049,576 and reads that 4 KiB block through the API. The
// page, loaded before the event existed, must show it: from the stream, a
// QUORUM_REPORT_BAD row for the child with its exact range and a
// CHILD_STATE_CHANGE to damaged; from the server's state, the child's
// DAMAGED badge and banner, its corrupted_bytes counter above 0, and its
// damage map: a bar with one mark where those bytes lie on the volume and
// their exact range in text. Then it clicks the volume's "Scrub + repair"
// button and waits until the Jobs section lists that scrub as completed
// with the child's mismatch bytes above 0, and the child is healthy again:
// its badge, no banner, no damage map, a live CHILD_STATE_CHANGE back to
// healthy. Screenshots of the damaged and the repaired replica are saved on
// the way. Then, from the page's replica form (with the page's token), it
// adds a replica outside child_roots and sees the server's refusal as the
// server wrote it, adds one under them and sees it syncing (its state, the
// resync's progress in Jobs) and then healthy, and removes it with its
// button, which asks first (no keeps it, yes removes it): the feed must show
// CHILD_ADDED, CHILD_STATE_CHANGE and CHILD_REMOVED live, each with its own
// label (the kinds come from the server's GET /v1/event-kinds, which also
// gives the feed a filter button for them). Last it reloads the page: the
// charts must hold at once the seconds the server's history holds, with
// the scrub's and the resync's bytes, the reads and writes and their
// latency. Every wait is bounded; all
// traffic goes to the loopback server. Exit 0 on success, 1 with the list
// of what was missing.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Shared memory in /tmp rather than /dev/shm, which a container may cap
  // at 64 MiB: a full-page screenshot there can crash the renderer.
  '--disable-dev-shm-usage',
];
const WAIT_MS = 15000;
const SCRUB_WAIT_MS = 20000;
const TOTAL_MS = 80000; // under the 90 s the Rust e2e test allows
const CORRUPT_OFFSET = 1049576;
const CORRUPT_BYTES = 100;
const CORRUPT_BYTE = 0x42;
// The vote block that holds them, read through the API.
const BLOCK_OFFSET = CORRUPT_OFFSET - (CORRUPT_OFFSET % 4096);
const BLOCK_BYTES = 4096;
// How the page must write the range: exact, the end exclusive.
const EXACT_RANGE = `bytes ${CORRUPT_OFFSET}..${CORRUPT_OFFSET + CORRUPT_BYTES} (${CORRUPT_BYTES} B)`;

function env(name, fallback) {
  const v = process.env[name] || fallback;
  if (!v) fail0(`missing environment variable ${name}`);
  return v;
}

function fail0(msg) {
  console.error(`dashboard test: ${msg}`);
  process.exit(1);
}

const base = env('QUORUM_URL').replace(/\/+$/, '');
const childFile = env('QUORUM_CHILD_FILE');
const volume = env('QUORUM_VOLUME', 'vm');
const child = env('QUORUM_CHILD', 'c');
const screenshot = env('SCREENSHOT');
const token = process.env.QUORUM_TOKEN || '';
const newChild = env('QUORUM_NEW_CHILD', 'd');
const childUri = env('QUORUM_CHILD_URI');
const newChildUri = env('QUORUM_NEW_CHILD_URI');

const origin = (() => {
  let u;
  try { u = new URL(base); } catch (_) { fail0(`QUORUM_URL is not a URL: ${base}`); }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    fail0(`QUORUM_URL must be a loopback address, not ${u.hostname}`);
  }
  return u.origin;
})();
if (!fs.existsSync(childFile)) fail0(`QUORUM_CHILD_FILE does not exist: ${childFile}`);

const missing = [];
const notes = [];
const log = (msg) => console.log(`dashboard test: ${msg}`);
const css = (s) => s.replace(/["\\]/g, '\\$&');

const childSel = `#volumes .child[data-child="${css(`${volume}/${child}`)}"]`;
const volumeSel = `#volumes .volume[data-volume="${css(volume)}"]`;
const rowSel = `#events .event[data-event="QUORUM_REPORT_BAD"][data-volume="${css(volume)}"]` +
  `[data-child="${css(child)}"][data-offset="${CORRUPT_OFFSET}"][data-bytes="${CORRUPT_BYTES}"]`;
const mapSel = `#volumes .damage-map[data-child="${css(`${volume}/${child}`)}"]`;
const stateRowSel = `#events .event[data-event="CHILD_STATE_CHANGE"][data-volume="${css(volume)}"]` +
  `[data-child="${css(child)}"][data-source="stream"]`;

// SCREENSHOT with a suffix before its extension: dashboard-damaged.png.
function besideScreenshot(suffix) {
  const ext = path.extname(screenshot);
  return `${screenshot.slice(0, screenshot.length - ext.length)}-${suffix}${ext || '.png'}`;
}

async function saveScreenshot(page, file) {
  try {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    await page.screenshot({ path: file, timeout: WAIT_MS, fullPage: true });
    log(`screenshot: ${file}`);
  } catch (e) {
    missing.push(`a screenshot at ${file}: ${e.message || e}`);
  }
}

// The whole run has a deadline, whatever hangs.
let context = null;
let userDataDir = null;
// GET /v1/volumes answers the page had (its polls).
let volumesPolls = 0;
const deadline = setTimeout(async () => {
  console.error(`dashboard test: FAILED: no result within ${TOTAL_MS / 1000} s`);
  await cleanup();
  process.exit(1);
}, TOTAL_MS);

async function cleanup() {
  try { if (context) await context.close(); } catch (_) { /* already gone */ }
  context = null;
  try { if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true }); } catch (_) { /* best effort */ }
}

// Waits for a condition in the page; records what was missing on timeout.
async function expect(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 200 });
    log(`ok: ${what}`);
    return true;
  } catch (e) {
    missing.push(what);
    log(`MISSING: ${what}`);
    return false;
  }
}

// A live feed row of a CHILD_* event about the new child, with its own tag
// (its label, the child colour: not an unknown event's), and its detail.
function expectChildEvent(page, event, label, detail) {
  return expect(page, `a live ${event} row for ${volume}/${newChild} labelled ${label}`,
    ({ sel, label, detail }) => {
      const row = document.querySelector(sel);
      const tag = row && row.querySelector('.c-type .tag');
      return !!tag && tag.textContent.trim() === label && tag.classList.contains('tag-child') &&
        row.classList.contains('ev-child') && row.querySelector('.c-detail').textContent.includes(detail) &&
        tag.checkVisibility();
    },
    {
      sel: `#events .event[data-event="${event}"][data-volume="${css(volume)}"][data-child="${css(newChild)}"]` +
        '[data-source="stream"]',
      label,
      detail,
    });
}

function apiHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function fetchWithTimeout(url, opts = {}, ms = WAIT_MS) {
  return fetch(url, { ...opts, signal: AbortSignal.timeout(ms) });
}

// The selector of a replica's row of the volume.
const rowOf = (name) => `#volumes .child[data-child="${css(`${volume}/${name}`)}"]`;

// Opens the volume's "Add a replica" part if it is closed.
async function openReplicaForm(page) {
  const open = await page.evaluate((sel) => {
    const d = document.querySelector(sel);
    return !!d && d.open;
  }, `${volumeSel} .replica-add`);
  if (!open) await page.click(`${volumeSel} .replica-add summary`, { timeout: WAIT_MS });
}

// Submits the volume's replica form with these fields; returns the
// server's answer to the page's POST (status and body).
async function submitReplicaForm(page, fields) {
  const form = `${volumeSel} .replica-form`;
  await openReplicaForm(page);
  await page.fill(`${form} input[name="name"]`, fields.name, { timeout: WAIT_MS });
  await page.fill(`${form} input[name="uri"]`, fields.uri, { timeout: WAIT_MS });
  await page.fill(`${form} textarea[name="options"]`, fields.options || '', { timeout: WAIT_MS });
  const answer = page.waitForResponse((r) => r.request().method() === 'POST' &&
    new URL(r.url()).pathname === `/v1/volumes/${encodeURIComponent(volume)}/children`, { timeout: WAIT_MS });
  await page.click(`${form} button[data-action="add-replica"]`, { timeout: WAIT_MS });
  const res = await answer;
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  return { status: res.status(), body };
}

// 5. A replica added and removed from the page, with the page's token: a
// refused one shows the server's message; the added one syncs (its state
// and the resync's progress in Jobs) to healthy; its remove button asks
// first, and does nothing when the answer is no.
async function replicaFromThePage(page) {
  await expect(page, 'the feed has a filter button for the CHILD_* events of GET /v1/event-kinds',
    () => {
      const b = document.querySelector('#event-filters button[data-type~="CHILD_ADDED"]');
      return !!b && b.dataset.type.split(' ').includes('CHILD_STATE_CHANGE') &&
        b.dataset.type.split(' ').includes('CHILD_REMOVED') && b.checkVisibility();
    });
  const msgSel = `${volumeSel} .replicas-msg`;

  // The form keeps the focus while the page polls the volumes (every 2 s):
  // what is typed into it goes into it.
  await openReplicaForm(page);
  const nameSel = `${volumeSel} .replica-form input[name="name"]`;
  await page.focus(nameSel, { timeout: WAIT_MS });
  const pollsBefore = volumesPolls;
  const focusDeadline = Date.now() + WAIT_MS;
  while (volumesPolls < pollsBefore + 2 && Date.now() < focusDeadline) await new Promise((r) => setTimeout(r, 100));
  const focused = await page.evaluate((sel) => document.activeElement === document.querySelector(sel), nameSel);
  if (volumesPolls < pollsBefore + 2 || !focused) {
    missing.push(`the replica form keeps the focus across polls (${volumesPolls - pollsBefore} polls, focused: ${focused})`);
  } else {
    log(`ok: the replica form kept the focus across ${volumesPolls - pollsBefore} polls`);
  }

  // Outside child_roots: the server refuses, the page says what it said.
  const refused = await submitReplicaForm(page, { name: newChild, uri: '../outside-the-roots.img' });
  const said = refused.body && refused.body.error && refused.body.error.message;
  if (refused.status !== 403 || !said) {
    missing.push(`a replica outside child_roots refused with 403 and a message, not ${refused.status} ${JSON.stringify(refused.body)}`);
  } else {
    await expect(page, `the refusal shows the server's message: "${said}"`,
      ({ msgSel, said }) => {
        const m = document.querySelector(msgSel);
        return !!m && !m.hidden && m.dataset.level === 'error' && m.textContent.includes(said) &&
          m.textContent.split('\n').length === 1 && m.checkVisibility();
      }, { msgSel, said });
  }

  const added = await submitReplicaForm(page, { name: newChild, uri: newChildUri, options: '# none needed\n' });
  if (added.status !== 201) {
    missing.push(`adding child ${newChild} from the page answered ${added.status}, not 201: ${JSON.stringify(added.body)}`);
    return;
  }
  log(`added child ${newChild} (${newChildUri}) from the page`);
  await Promise.all([
    expectChildEvent(page, 'CHILD_ADDED', 'CHILD_ADDED', `added (${newChildUri})`),
    expectChildEvent(page, 'CHILD_STATE_CHANGE', 'CHILD_STATE', 'syncing \u2192 healthy'),
    expect(page, `the new child ${volume}/${newChild} is shown syncing`,
      (sel) => { const r = document.querySelector(sel); return !!r && r.dataset.state === 'syncing'; },
      rowOf(newChild)),
    expect(page, `the Jobs section of ${volume} shows the resync running, with its progress`,
      (sel) => [...document.querySelectorAll(sel)].some((r) =>
        Number(r.dataset.bytesTotal) > 0 && r.querySelector('.bar[role="progressbar"]') && r.checkVisibility()),
      `${volumeSel} .jobs [data-kind="resync"][data-state="running"]`),
    expect(page, 'the form is empty again and says the replica was added',
      ({ msgSel, form, name }) => {
        const m = document.querySelector(msgSel);
        return !!m && m.dataset.level === 'info' && m.textContent.includes(`Replica ${name} added`) &&
          document.querySelector(`${form} input[name="name"]`).value === '';
      }, { msgSel, form: `${volumeSel} .replica-form`, name: newChild }),
  ]);
  await expect(page, `the new child ${volume}/${newChild} is healthy once synced`,
    (sel) => { const r = document.querySelector(sel); return !!r && r.dataset.state === 'healthy' && !r.dataset.bad; },
    rowOf(newChild), SCRUB_WAIT_MS);
  await saveScreenshot(page, besideScreenshot('replica'));

  // Its remove button asks first: "no" keeps it, "yes" removes it.
  const removeSel = `${rowOf(newChild)} button[data-action="remove-child"]`;
  const asked = [];
  const answer = (accept) => page.once('dialog', async (d) => {
    asked.push(d.message());
    if (accept) await d.accept(); else await d.dismiss();
  });
  answer(false);
  await page.click(removeSel, { timeout: WAIT_MS });
  await new Promise((r) => setTimeout(r, 500));
  const kept = await page.evaluate((sel) => !!document.querySelector(sel), rowOf(newChild));
  if (asked.length !== 1 || !asked[0].includes(`Remove replica ${newChild} from volume ${volume}`)) {
    missing.push(`the remove button asks first, naming the replica; it asked: ${JSON.stringify(asked)}`);
  }
  if (!kept) missing.push(`answering no to the confirmation keeps ${newChild}`);
  answer(true);
  await page.click(removeSel, { timeout: WAIT_MS });
  log(`removed child ${newChild} from the page`);
  await Promise.all([
    expectChildEvent(page, 'CHILD_REMOVED', 'CHILD_REMOVED', 'removed'),
    expect(page, `the child ${volume}/${newChild} is gone from the page`,
      (sel) => !document.querySelector(sel), rowOf(newChild)),
  ]);
}

// 6. The charts after a reload, from the server's history: as many
// seconds as the server keeps (it started before this run), with the
// scrub's and the resync's bytes and the reads' latency in them.
async function chartsFromHistory(page, loadedAt) {
  const res = await fetchWithTimeout(`${base}/v1/volumes/${encodeURIComponent(volume)}/history`,
    { headers: apiHeaders() });
  const hist = await res.json();
  const kept = Array.isArray(hist.samples) ? hist.samples.length : 0;
  const sum = (key) => (hist.samples || []).reduce((a, smp) => a + (smp[key] || 0), 0);
  log(`the server's history: ${kept} seconds, scrub ${sum('scrub_bytes')} B, resync ${sum('resync_bytes')} B`);
  if (kept < 3 || !(sum('scrub_bytes') > 0) || !(sum('resync_bytes') > 0)) {
    missing.push(`the server's history holds this run (${kept} seconds, scrub and resync bytes): ${JSON.stringify(hist).slice(0, 300)}`);
    return;
  }
  const chart = (name, key) => `${volumeSel} figure.chart[data-chart="${name}"] path.line[data-series="${key}"]`;
  await expect(page, `after a reload, the charts of ${volume} hold the server's ${kept} seconds at once ` +
    'with the scrub, the resync, the reads and writes and their latency',
  ({ kept, sel }) => {
    const fig = document.querySelector(sel.fig);
    if (!fig || Number(fig.dataset.samples) < kept || !fig.checkVisibility()) return false;
    const peak = (s) => { const p = document.querySelector(s); return p ? Number(p.dataset.peak) : 0; };
    const drawn = (s) => { const p = document.querySelector(s); return !!p && p.getAttribute('d').startsWith('M'); };
    return [sel.scrub, sel.resync, sel.read, sel.write, sel.latency].every((s) => peak(s) > 0 && drawn(s));
  }, {
    kept,
    sel: {
      fig: `${volumeSel} figure.chart[data-chart="bytes"]`,
      scrub: chart('jobs', 'sb'),
      resync: chart('jobs', 'yb'),
      read: chart('bytes', 'rb'),
      write: chart('bytes', 'wb'),
      latency: chart('latency', 'rl99'),
    },
  }, Math.max(1000, WAIT_MS - (Date.now() - loadedAt)));
}

async function main() {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-dashboard-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 },
    timeout: 30000,
  });

  // Nothing leaves the loopback server: anything else is refused and fails
  // the test (the page must work offline: no CDN, no fonts).
  const offsite = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    let ok = false;
    try { ok = new URL(url).origin === origin || url.startsWith('data:'); } catch (_) { ok = false; }
    if (ok) return route.continue();
    offsite.push(url);
    return route.abort('blockedbyclient');
  });

  const page = context.pages()[0] || await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message ? e.message : e)));
  page.on('crash', () => missing.push('a page that does not crash, but its renderer crashed'));
  page.on('response', (r) => {
    if (r.request().method() === 'GET' && new URL(r.url()).pathname === '/v1/volumes') volumesPolls += 1;
  });
  page.on('console', (m) => { if (m.type() === 'error') notes.push(`console: ${m.text()}`); });

  const resp = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });
  if (!resp || resp.status() !== 200) {
    missing.push(`GET / answered ${resp ? resp.status() : 'nothing'}, not 200`);
    return page;
  }

  if (token) {
    const asked = await expect(page, 'the page asks for the API token',
      () => { const f = document.getElementById('auth'); return f && !f.hidden; });
    if (asked) {
      await page.fill('#token', token);
      await page.click('#auth button[type="submit"]');
    }
  }

  // 1. Before the fault: the volume and the child render, and the live
  // stream is connected (waited for together, within one WAIT_MS).
  const [, childShown] = await Promise.all([
    expect(page, `volume ${volume} rendered`, (sel) => !!document.querySelector(sel), volumeSel),
    expect(page, `child ${volume}/${child} rendered with its counters`,
      (sel) => {
        const row = document.querySelector(sel);
        const c = row && row.querySelector('[data-counter="corrupted_bytes"]');
        return !!(c && c.dataset.value !== undefined && c.dataset.value !== '');
      }, childSel),
    expect(page, 'the live event stream is connected',
      () => document.getElementById('stream-status').dataset.state === 'live'),
  ]);
  if (!childShown) return page;

  const before = await page.evaluate(({ childSel, rowSel }) => {
    const row = document.querySelector(childSel);
    return {
      rows: document.querySelectorAll(rowSel).length,
      bad: row.dataset.bad || '',
      lost: Number(row.querySelector('[data-counter="corrupted_bytes"]').dataset.value),
    };
  }, { childSel, rowSel });
  log(`before the fault: ${before.rows} matching event rows, child bad="${before.bad}", corrupted_bytes=${before.lost}`);
  if (before.rows !== 0) missing.push('no QUORUM_REPORT_BAD row for that range before the fault (the image was not fresh)');

  // 2. The fault: overwrite 100 bytes of the child's image, then read the
  // block that holds them.
  const fd = fs.openSync(childFile, 'r+');
  try {
    fs.writeSync(fd, Buffer.alloc(CORRUPT_BYTES, CORRUPT_BYTE), 0, CORRUPT_BYTES, CORRUPT_OFFSET);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  log(`wrote ${CORRUPT_BYTES} bytes of 0x${CORRUPT_BYTE.toString(16)} at ${CORRUPT_OFFSET} of ${childFile}`);

  const range = `bytes=${BLOCK_OFFSET}-${BLOCK_OFFSET + BLOCK_BYTES - 1}`;
  const res = await fetchWithTimeout(`${base}/v1/volumes/${encodeURIComponent(volume)}/data`,
    { headers: apiHeaders({ Range: range }) });
  const body = Buffer.from(await res.arrayBuffer());
  const at = CORRUPT_OFFSET - BLOCK_OFFSET;
  if (res.status !== 206) {
    missing.push(`the Range read answered ${res.status}, not 206`);
  } else if (body.length !== BLOCK_BYTES) {
    missing.push(`the Range read returned ${body.length} bytes, not ${BLOCK_BYTES}`);
  } else if (body.subarray(at, at + CORRUPT_BYTES).some((b) => b === CORRUPT_BYTE)) {
    missing.push('the Range read returned corrupted bytes: the vote did not outvote the child');
  } else {
    log(`read ${range}: 206, the healthy children's data`);
  }

  // 3. What the page must show now (waited for together, within WAIT_MS).
  await Promise.all([
    expect(page, `a live QUORUM_REPORT_BAD row for ${child} reading "${EXACT_RANGE}" in the feed`,
      ({ sel, exact }) => {
        const row = document.querySelector(`${sel}[data-source="stream"]`);
        if (!row || !row.checkVisibility()) return false;
        const text = row.textContent;
        return text.includes(exact) && text.includes('REPORT_BAD');
      }, { sel: rowSel, exact: EXACT_RANGE }),
    expect(page, `a live CHILD_STATE_CHANGE row for ${child}: healthy \u2192 damaged`,
      (sel) => [...document.querySelectorAll(sel)].some((r) =>
        r.querySelector('.c-detail').textContent.includes('healthy \u2192 damaged') && r.checkVisibility()),
      stateRowSel),
    expect(page, `the corrupted_bytes counter of ${volume}/${child} is above 0 and shown`,
      (sel) => {
        const el = document.querySelector(`${sel} [data-counter="corrupted_bytes"]`);
        return !!el && Number(el.dataset.value) > 0 && /[1-9]/.test(el.textContent) && el.checkVisibility();
      }, childSel),
    expect(page, `the child ${volume}/${child} is marked DAMAGED, as the server says, with its damaged bytes`,
      ({ sel, bytes }) => {
        const row = document.querySelector(sel);
        const badge = row && row.querySelector('.badge');
        const damaged = row && row.querySelector('[data-counter="damaged_bytes"]');
        return !!row && row.dataset.bad === 'damaged' && row.dataset.state === 'damaged' && !!badge &&
          badge.textContent.trim() === 'DAMAGED' && badge.checkVisibility() &&
          !!damaged && damaged.dataset.value === String(bytes) && damaged.checkVisibility();
      }, { sel: childSel, bytes: CORRUPT_BYTES }),
    expect(page, `the volume ${volume} shows a warning banner naming ${child} and the exact range`,
      ({ volumeSel, child, exact }) => {
        const b = document.querySelector(`${volumeSel} .banner`);
        if (!b || b.hidden || !b.checkVisibility()) return false;
        const li = b.querySelector(`[data-bad-child="${CSS.escape(child)}"]`);
        return !!li && li.textContent.includes(`Replica ${child}`) && li.textContent.includes('DAMAGED') &&
          li.textContent.includes(exact);
      }, { volumeSel, child, exact: EXACT_RANGE }),
    expect(page, `the damage map of ${child} marks bytes ${CORRUPT_OFFSET}..${CORRUPT_OFFSET + CORRUPT_BYTES} ` +
      'where they lie on the volume, and lists them exactly',
      ({ mapSel, offset, bytes, exact }) => {
        const map = document.querySelector(mapSel);
        if (!map || !map.checkVisibility()) return false;
        const marks = map.querySelectorAll('.damage-mark');
        const items = map.querySelectorAll('.damage-range');
        if (marks.length !== 1 || items.length !== 1) return false;
        const mark = marks[0];
        if (mark.dataset.offset !== String(offset) || mark.dataset.length !== String(bytes)) return false;
        if (items[0].textContent.trim() !== exact || !items[0].checkVisibility()) return false;
        // Where the mark is drawn: its left edge at offset/size of the bar.
        const size = Number(map.dataset.size);
        const bar = map.querySelector('.damage-bar').getBoundingClientRect();
        const box = mark.getBoundingClientRect();
        const want = bar.left + (offset / size) * bar.width;
        // The whole bar is inside the volume's card (nothing cut off).
        const card = map.closest('.volume').getBoundingClientRect();
        return size > 0 && box.width >= 2 && Math.abs(box.left - want) <= 2 && box.height > 0 &&
          bar.left >= card.left && bar.right <= card.right + 1;
      }, { mapSel, offset: CORRUPT_OFFSET, bytes: CORRUPT_BYTES, exact: EXACT_RANGE }),
    expect(page, `the child ${child} shows its whole location (the uri the server gives)`,
      ({ sel, uri }) => {
        const el = document.querySelector(`${sel} .uri`);
        return !!el && el.textContent.includes(uri) && el.scrollWidth <= el.clientWidth + 1 && el.checkVisibility();
      }, { sel: childSel, uri: childUri }),
  ]);

  // The other children stay unmarked, and have no map.
  const others = await page.evaluate(({ volume, child }) =>
    [...document.querySelectorAll('#volumes .child')]
      .filter((r) => r.dataset.child.startsWith(`${volume}/`) && r.dataset.child !== `${volume}/${child}` &&
        (r.dataset.bad || document.querySelector(`.damage-row[data-child="${CSS.escape(r.dataset.child)}"]`).checkVisibility()))
      .map((r) => r.dataset.child), { volume, child });
  if (others.length) missing.push(`only ${child} is marked, but so are: ${others.join(', ')}`);
  await saveScreenshot(page, besideScreenshot('damaged'));

  // 4. A scrub with repair, started from the page: the Jobs section lists
  // it as completed, with the bytes the child lost, and the child is
  // healthy again, as the server says.
  const jobsSel = `${volumeSel} .jobs`;
  const buttonSel = `${jobsSel} button[data-action="scrub-repair"]`;
  const hasButton = await expect(page, `the volume ${volume} has a visible "Scrub + repair" button`,
    (sel) => {
      const b = document.querySelector(sel);
      return !!b && !b.disabled && b.textContent.trim() === 'Scrub + repair' && b.checkVisibility();
    }, buttonSel);
  if (hasButton) {
    const before = await page.evaluate((sel) =>
      [...document.querySelectorAll(`${sel} [data-job-id][data-kind="scrub"]`)].map((r) => Number(r.dataset.jobId)),
    jobsSel);
    const maxBefore = before.length ? Math.max(...before) : 0;
    await page.click(buttonSel, { timeout: WAIT_MS });
    log(`clicked "Scrub + repair" (scrub rows before: ${before.length})`);
    await expect(page, `a new scrub of ${volume} shows as completed with ${child}'s mismatch bytes above 0`,
      ({ jobsSel, child, maxBefore }) => {
        for (const row of document.querySelectorAll(`${jobsSel} [data-job-id][data-kind="scrub"][data-state="completed"]`)) {
          if (Number(row.dataset.jobId) <= maxBefore || row.dataset.repair !== 'true') continue;
          const mm = row.querySelector(`[data-mismatch-child="${CSS.escape(child)}"]`);
          if (mm && Number(mm.dataset.bytes) > 0 && /[1-9]/.test(mm.textContent) && mm.checkVisibility()) return true;
        }
        return false;
      }, { jobsSel, child, maxBefore }, SCRUB_WAIT_MS);
    const shown = await page.evaluate((sel) => {
      const row = document.querySelector(`${sel} [data-kind="scrub"][data-state="completed"]`);
      return row ? row.innerText.replace(/\s+/g, ' ').trim() : '(none)';
    }, jobsSel);
    log(`the scrub row reads: ${shown}`);
    await Promise.all([
      expect(page, `the child ${volume}/${child} is HEALTHY again, with no damage map and no banner`,
        ({ sel, mapSel, volumeSel }) => {
          const row = document.querySelector(sel);
          const badge = row && row.querySelector('.badge');
          const map = document.querySelector(mapSel);
          const banner = document.querySelector(`${volumeSel} .banner`);
          return !!row && !row.dataset.bad && row.dataset.state === 'healthy' && !!badge &&
            badge.textContent.trim() === 'HEALTHY' && (!map || !map.checkVisibility()) &&
            !!banner && banner.hidden && document.body.dataset.alert === 'no';
        }, { sel: childSel, mapSel, volumeSel }, SCRUB_WAIT_MS),
      expect(page, `a live CHILD_STATE_CHANGE row for ${child}: damaged \u2192 healthy`,
        (sel) => [...document.querySelectorAll(sel)].some((r) =>
          r.querySelector('.c-detail').textContent.includes('damaged \u2192 healthy') && r.checkVisibility()),
        stateRowSel, SCRUB_WAIT_MS),
    ]);
    await saveScreenshot(page, besideScreenshot('repaired'));
  }

  await replicaFromThePage(page);

  // 6. A reload draws the charts again from the server's history, at once:
  // the scrub, the resync and the reads and writes of this run, which a
  // page that only kept what it saw live would have lost.
  await page.reload({ waitUntil: 'domcontentloaded', timeout: WAIT_MS });
  const loadedAt = Date.now();
  await chartsFromHistory(page, loadedAt);

  if (pageErrors.length) missing.push(`no script errors in the page, but: ${pageErrors.join(' | ')}`);
  if (offsite.length) missing.push(`no requests beyond ${origin}, but: ${offsite.join(', ')}`);
  return page;
}

let page = null;
try {
  page = await main();
} catch (e) {
  missing.push(`the test itself failed: ${e && e.stack ? e.stack : e}`);
}
if (page) await saveScreenshot(page, screenshot);
await cleanup();
clearTimeout(deadline);

for (const n of notes) log(n);
if (missing.length) {
  console.error(`dashboard test: FAILED, missing:\n${missing.map((m) => `  - ${m}`).join('\n')}`);
  process.exit(1);
}
log('PASSED: the page showed the live events, the counter, the damaged replica with its damage map, the scrub ' +
  'it started, the replica healthy again, and the membership events with their own labels');
process.exit(0);
