// A volume's Jobs section: the running resync and scrubs with their
// progress, the last finished scrubs with what they found, and the buttons
// that start a scrub or cancel one. GET /v1/volumes/{vol}/jobs is polled
// every POLL_MS, and soon after a JOB_* event or a button.

import { AuthError, HttpError, api } from './api.js';
import { agoEl, h } from './dom.js';
import { fmtBytes, fmtDuration, fmtExact, fmtPct, fmtRange, fmtRate, jobName, pct } from './format.js';
import { POLL_MS, arrangeJobs, jobOutcome, localTime } from './model.js';

const JOBS_MSG_MS = 8000;

function jobsPath(vol, rest) {
  return `/v1/volumes/${encodeURIComponent(vol)}/${rest}`;
}

/** The Jobs section of volume `vol`: {el, vol, list, rows, ...}. */
export function buildJobs(app, vol) {
  const jobs = { vol, rows: new Map(), list: null, busy: false, msgTimer: null };
  const btn = (action, label, title, repair) => h('button', {
    type: 'button', class: `job-btn job-btn-${action}`, 'data-action': action, title,
    onclick: () => startScrub(app, jobs, repair),
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

function actionError(e, what) {
  if (e instanceof AuthError) return `${what}: the server needs an API token. Enter it above and try again.`;
  return `${what}: ${e && e.message ? e.message : e}`;
}

async function startScrub(app, jobs, repair) {
  if (jobs.busy) return;
  jobs.busy = true;
  jobs.scrubBtn.disabled = true;
  jobs.repairBtn.disabled = true;
  try {
    const res = await api(app, jobsPath(jobs.vol, 'scrub'), {
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
      renderJobs(app, jobs, list);
    }
  } catch (e) {
    showJobsMsg(jobs, 'error', actionError(e, `Could not start the scrub${repair ? ' with repair' : ''}`));
  } finally {
    jobs.busy = false;
    jobs.scrubBtn.disabled = false;
    jobs.repairBtn.disabled = false;
    pollJobsSoon(app);
  }
}

async function cancelJob(app, jobs, job, btn) {
  btn.disabled = true;
  btn.textContent = 'Cancelling\u2026';
  const name = jobName(job.kind, job.id, job.repair);
  try {
    await api(app, jobsPath(jobs.vol, `jobs/${encodeURIComponent(job.id)}`), { method: 'DELETE' });
  } catch (e) {
    if (e instanceof HttpError && e.status === 409) {
      showJobsMsg(jobs, 'info', `${name} cannot be cancelled: it has ended.`);
    } else {
      showJobsMsg(jobs, 'error', actionError(e, `Could not cancel ${name}`));
      btn.disabled = false;
      btn.textContent = 'Cancel';
    }
  } finally {
    pollJobsSoon(app);
  }
}

/**
 * Shows a volume's job list (model.arrangeJobs() picks and orders). Rows
 * are kept by job and updated in place, so that a poll does not take the
 * pointer or the focus off a button.
 */
export function renderJobs(app, jobs, list) {
  jobs.list = list;
  const { shown, running, any, summary } = arrangeJobs(list);
  const els = [];
  const keep = new Set();
  for (const j of shown) {
    const key = `${j.kind}:${j.id}`;
    keep.add(key);
    let row = jobs.rows.get(key);
    const sig = `${j.state}|${!!j.repair}`;
    if (!row || row.sig !== sig) {
      row = buildJobRow(app, jobs, j);
      row.sig = sig;
      jobs.rows.set(key, row);
    }
    updateJobRow(app, jobs, row, j);
    els.push(row.el);
  }
  for (const key of [...jobs.rows.keys()]) if (!keep.has(key)) jobs.rows.delete(key);
  const cur = [...jobs.listEl.children];
  if (cur.length !== els.length || cur.some((el, i) => el !== els[i])) jobs.listEl.replaceChildren(...els);
  jobs.empty.hidden = shown.length > 0 || any;
  jobs.summary.textContent = summary;
  jobs.el.dataset.running = String(running);
}

function stateTag(st, level) {
  return h('span', { class: `job-state job-state-${level || st}` }, String(st || '?').toUpperCase());
}

function buildRunningRow(app, jobs, j, row, name) {
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
      onclick: () => cancelJob(app, jobs, row.job, btn),
    }, 'Cancel');
    action = h('span', { class: 'job-action' }, btn);
  }
  row.el.append(h('div', { class: 'job-line' }, stateTag('running'), name, row.pct, row.nums, action), row.bar, row.note);
}

// A finished job: what it found.
function buildFinishedRow(app, j, row, name) {
  const { mismatches: mm, unrecoverable: unrec, level } = jobOutcome(j);
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

  const at = localTime(app.model, Date.parse(j.started || ''), Date.now());
  const when = h('div', { class: 'job-when' },
    Number.isFinite(at) ? ['started ', agoEl(at)] : null,
    h('span', { class: 'job-scanned', title: `${fmtExact(j.bytes_done)} of ${fmtExact(j.bytes_total)} bytes` },
      `${Number.isFinite(at) ? ' \u00b7 ' : ''}${fmtBytes(j.bytes_done)} scanned`));
  row.el.dataset.level = level;
  row.el.append(h('div', { class: 'job-line' }, stateTag(j.state, level), h('div', { class: 'job-id' }, name, when), result));
}

function buildJobRow(app, jobs, j) {
  const running = j.state === 'running';
  const name = h('span', { class: 'job-name' },
    h('span', { class: 'job-kind' }, j.kind === 'resync' ? 'resync' : `${j.kind || 'job'} #${j.id}`),
    j.repair ? h('span', { class: 'job-flag', title: 'rewrites the losers with the winning data' }, 'repair') : null);
  const row = {
    el: h('div', {
      class: `job job-${running ? 'running' : 'done'} job-kind-${j.kind || 'job'}`,
      'data-job-id': j.id, 'data-kind': j.kind || '', 'data-state': j.state || '',
      'data-repair': j.repair ? 'true' : 'false',
    }),
  };
  if (running) buildRunningRow(app, jobs, j, row, name); else buildFinishedRow(app, j, row, name);
  return row;
}

function updateJobRow(app, jobs, row, j) {
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
    parts.push(`${fmtBytes(Math.max(0, (j.bytes_total || 0) - (j.bytes_done || 0)))} stale left`);
  } else {
    parts.push(`${fmtBytes(j.bytes_done)} of ${fmtBytes(j.bytes_total)}`);
  }
  parts.push(rate > 0 ? fmtRate(rate) : 'starting');
  if (Number.isFinite(eta) && eta >= 0) parts.push(`${fmtDuration(eta)} left`);
  row.nums.textContent = parts.join(' \u00b7 ');
  row.nums.title = `${fmtExact(j.bytes_done)} of ${fmtExact(j.bytes_total)} bytes` +
    (rate > 0 ? `, ${fmtExact(Math.round(rate))} bytes/s` : '');
  if (j.kind === 'resync') {
    const vs = app.model.vols.get(jobs.vol);
    const v = vs && vs.snapshot;
    const stale = v ? (v.children || []).filter((c) => c.stale_bytes > 0) : [];
    row.note.textContent = stale.length
      ? `copying back writes that ${stale.map((c) => `${c.name} (${fmtBytes(c.stale_bytes)})`).join(', ')} missed`
      : 'copying back writes that replicas missed';
    row.note.hidden = false;
  } else {
    row.note.hidden = true;
  }
}

/** The polling part of the page's state. */
export function createJobsPoll() {
  return { busy: false, again: false, timer: null, soonTimer: null };
}

/** Polls every volume's jobs now, then every POLL_MS. */
export async function pollJobs(app) {
  const p = app.jobsPoll;
  if (p.busy) { p.again = true; return; }
  p.busy = true;
  clearTimeout(p.timer);
  try {
    await Promise.all([...app.views.values()].map(async (view) => {
      const jobs = view.jobs;
      try {
        const res = await api(app, jobsPath(view.name, 'jobs'));
        const list = await res.json();
        if (view.jobs !== jobs) return; // rebuilt meanwhile
        jobs.el.hidden = false;
        jobs.el.dataset.stale = 'no';
        renderJobs(app, jobs, Array.isArray(list) ? list : []);
      } catch (e) {
        // A server without jobs: no section. Otherwise keep what was
        // shown, dimmed.
        if (e instanceof HttpError && (e.status === 404 || e.status === 405)) jobs.el.hidden = true;
        else jobs.el.dataset.stale = 'yes';
      }
    }));
  } finally {
    p.busy = false;
    const again = p.again;
    p.again = false;
    p.timer = setTimeout(() => pollJobs(app), again ? 0 : POLL_MS);
  }
}

/** On a JOB_* event or after a button: soon, once for a burst. */
export function pollJobsSoon(app) {
  const p = app.jobsPoll;
  if (p.soonTimer) return;
  p.soonTimer = setTimeout(() => { p.soonTimer = null; pollJobs(app); }, 150);
}
