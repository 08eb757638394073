//! Background jobs of a volume: scrubs, and the resync worker.
//!
//! A scrub reads the whole volume through the vote, a piece at a time
//! ([`Volume::scrub`]), reports every lost vote (the usual
//! `QUORUM_REPORT_BAD` events) and repairs when asked; blocks without a
//! majority are listed as unrecoverable, never "repaired". Each job is an
//! explicit state machine (`running` → `completed` | `cancelled` |
//! `failed`) whose state and checkpoint are saved in
//! `data_dir/jobs/<volume>.json` at every progress report, so a scrub
//! running when the server stops (or crashes) resumes from its checkpoint
//! on the next start. A rate limit keeps jobs from starving client I/O.
//!
//! The resync worker ([`crate::resync`]) is listed among the jobs as job 0,
//! kind `resync`: it runs whenever a child has stale ranges and cannot be
//! cancelled.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{Event, EventSink, JobKind, JobState, Scrubbed, Volume};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::resync::{Resync, ResyncConfig, pace, sleep_unless};
use crate::telemetry::Telemetry;

/// Bytes one scrub step reads (and holds against overlapping writes).
const STEP: u64 = 1 << 20;
/// How often a running job reports progress and saves its checkpoint.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What is saved of a job, and what the API shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    repair: bool,
    state: JobState,
    bytes_done: u64,
    bytes_total: u64,
    bytes_repaired: u64,
    started: String,
    mismatches: Vec<(String, u64)>,
    unrecoverable: Vec<(u64, u64)>,
    error: Option<String>,
}

/// A scrub.
struct Job {
    record: Mutex<Record>,
    cancel: AtomicBool,
    /// Since when, and from which byte, this run has gone: for the rate.
    run: (Instant, u64),
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The most finished jobs kept (and saved) per volume; older ones are
/// forgotten.
const KEPT_FINISHED: usize = 100;

/// A scrub is already running on the volume.
#[derive(Debug, thiserror::Error)]
#[error("scrub {0} is running on this volume; one scrub at a time")]
pub struct ScrubRunning(pub u64);

/// Adds a job to `jobs`, forgetting the oldest finished ones beyond
/// [`KEPT_FINISHED`].
fn add_to(jobs: &mut Vec<Arc<Job>>, record: Record) -> Arc<Job> {
    let done = record.bytes_done;
    let job = Arc::new(Job {
        record: Mutex::new(record),
        cancel: AtomicBool::new(false),
        run: (Instant::now(), done),
        thread: Mutex::new(None),
    });
    jobs.push(job.clone());
    prune(jobs);
    job
}

/// Forgets the oldest finished jobs beyond [`KEPT_FINISHED`].
fn prune(jobs: &mut Vec<Arc<Job>>) {
    let finished = jobs
        .iter()
        .filter(|j| job_state(j) != JobState::Running)
        .count();
    let mut excess = finished.saturating_sub(KEPT_FINISHED);
    jobs.retain(|j| {
        let forget = excess > 0 && job_state(j) != JobState::Running;
        excess -= usize::from(forget);
        !forget
    });
}

fn job_state(job: &Job) -> JobState {
    job.record
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .state
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// There is no such job.
    #[error("no job {0}")]
    NoSuchJob(u64),
    /// The job is not one that can be cancelled.
    #[error("job {0} cannot be cancelled: {1}")]
    NotCancellable(u64, &'static str),
}

/// The jobs of one volume.
pub struct Jobs {
    volume: Arc<Volume>,
    sink: Arc<dyn EventSink>,
    telemetry: Arc<Telemetry>,
    path: PathBuf,
    rate: u64,
    jobs: Mutex<Vec<Arc<Job>>>,
    stopping: Arc<AtomicBool>,
    resync: Mutex<Option<Resync>>,
}

impl Jobs {
    /// Loads the saved jobs of `volume` from `data_dir`, resumes the running
    /// ones, and starts the resync worker. Jobs go at most `rate` bytes a
    /// second, the resync as `resync` says.
    pub fn start(
        volume: Arc<Volume>,
        sink: Arc<dyn EventSink>,
        telemetry: Arc<Telemetry>,
        data_dir: &Path,
        rate: u64,
        resync: ResyncConfig,
    ) -> std::io::Result<Arc<Jobs>> {
        let path = data_dir
            .join("jobs")
            .join(format!("{}.json", volume.name()));
        let saved: Vec<Record> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable jobs file");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let resync = Resync::start(volume.clone(), telemetry.clone(), sink.clone(), resync)?;
        let jobs = Arc::new(Jobs {
            volume,
            sink,
            telemetry,
            path,
            rate: rate.max(4096),
            jobs: Mutex::new(Vec::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            resync: Mutex::new(Some(resync)),
        });
        for record in saved {
            let running = record.state == JobState::Running;
            let job = jobs.add(record);
            if running {
                tracing::info!(
                    volume = jobs.volume.name(),
                    job = job_id(&job),
                    "resuming a scrub"
                );
                jobs.spawn(job);
            }
        }
        Ok(jobs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, record: Record) -> Arc<Job> {
        let mut jobs = self.lock();
        add_to(&mut jobs, record)
    }

    /// Starts a scrub of the whole volume; returns its JSON.
    ///
    /// # Errors
    /// The scrub already running: one at a time per volume.
    pub fn start_scrub(self: &Arc<Self>, repair: bool) -> Result<Value, ScrubRunning> {
        let total = self.volume.size();
        let mut jobs = self.lock();
        if let Some(running) = jobs.iter().find(|j| job_state(j) == JobState::Running) {
            return Err(ScrubRunning(job_id(running)));
        }
        let id = jobs.iter().map(|j| job_id(j)).max().unwrap_or(0) + 1;
        let job = add_to(
            &mut jobs,
            Record {
                id,
                repair,
                state: JobState::Running,
                bytes_done: 0,
                bytes_total: total,
                bytes_repaired: 0,
                started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                mismatches: Vec::new(),
                unrecoverable: Vec::new(),
                error: None,
            },
        );
        drop(jobs);
        self.save();
        self.sink.emit(
            self.volume.name(),
            Event::JobStarted {
                id,
                kind: JobKind::Scrub,
                repair,
                bytes_total: total,
            },
        );
        let view = view(&job);
        self.spawn(job);
        Ok(view)
    }

    fn spawn(self: &Arc<Self>, job: Arc<Job>) {
        let jobs = self.clone();
        let runner = job.clone();
        let spawned = thread::Builder::new()
            .name(format!("scrub-{}", self.volume.name()))
            .spawn(move || jobs.run(&runner));
        match spawned {
            Ok(handle) => *job.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle),
            Err(e) => self.finish(
                &job,
                JobState::Failed,
                Some(format!("cannot start the job's thread: {e}")),
            ),
        }
    }

    fn run(&self, job: &Job) {
        let (id, repair, mut offset, total) = {
            let r = job.record.lock().unwrap_or_else(PoisonError::into_inner);
            (r.id, r.repair, r.bytes_done, r.bytes_total)
        };
        let mut reported = Instant::now();
        while offset < total {
            if self.stopping.load(Ordering::Acquire) {
                self.save();
                return;
            }
            if job.cancel.load(Ordering::Acquire) {
                self.finish(job, JobState::Cancelled, None);
                return;
            }
            let started = Instant::now();
            let n = STEP.min(total - offset);
            match self.volume.scrub(offset, n, repair) {
                Ok(found) => {
                    let mut r = job.record.lock().unwrap_or_else(PoisonError::into_inner);
                    merge(&mut r, found);
                    offset += n;
                    r.bytes_done = offset;
                }
                Err(e) => {
                    self.finish(job, JobState::Failed, Some(e.to_string()));
                    return;
                }
            }
            self.telemetry
                .job_bytes(self.volume.name(), JobKind::Scrub, n);
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                self.save();
                self.sink.emit(
                    self.volume.name(),
                    Event::JobProgress {
                        id,
                        kind: JobKind::Scrub,
                        bytes_done: offset,
                        bytes_total: total,
                    },
                );
            }
            sleep_unless(&[&self.stopping, &job.cancel], pace(n, self.rate, started));
        }
        self.finish(job, JobState::Completed, None);
    }

    fn finish(&self, job: &Job, state: JobState, error: Option<String>) {
        // The list is held across the change, so that no one sees the job
        // ended and the list not yet pruned.
        let mut jobs = self.lock();
        let event = {
            let mut r = job.record.lock().unwrap_or_else(PoisonError::into_inner);
            r.state = state;
            r.error = error;
            Event::JobCompleted {
                id: r.id,
                kind: JobKind::Scrub,
                state,
                bytes_scanned: r.bytes_done,
                bytes_repaired: r.bytes_repaired,
                mismatches: r.mismatches.clone(),
                unrecoverable: r.unrecoverable.iter().map(|&(o, b)| o..o + b).collect(),
            }
        };
        prune(&mut jobs);
        drop(jobs);
        self.save();
        self.sink.emit(self.volume.name(), event);
    }

    /// Cancels job `id`; it stops after its current step.
    pub fn cancel(&self, id: u64) -> Result<(), CancelError> {
        if id == 0 {
            return Err(CancelError::NotCancellable(
                0,
                "the resync runs whenever a child has stale ranges",
            ));
        }
        let job = self
            .lock()
            .iter()
            .find(|j| job_id(j) == id)
            .cloned()
            .ok_or(CancelError::NoSuchJob(id))?;
        let state = job
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state;
        if state != JobState::Running {
            return Err(CancelError::NotCancellable(id, "it has ended"));
        }
        job.cancel.store(true, Ordering::Release);
        Ok(())
    }

    /// Every job, the resync first, as the API shows them.
    pub fn list(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(resync) = self
            .resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let stale: u64 = self.volume.stale_bytes().iter().sum();
            let (copied, rate) = resync.progress();
            let eta = (rate > 0.0 && stale > 0).then(|| stale as f64 / rate);
            out.push(json!({
                "id": 0,
                "kind": JobKind::Resync,
                "state": if stale > 0 { JobState::Running } else { JobState::Idle },
                "bytes_done": copied,
                "bytes_total": copied + stale,
                "rate_bytes_per_sec": rate,
                "eta_seconds": eta,
            }));
        }
        out.extend(self.lock().iter().map(|j| view(j)));
        out
    }

    /// One job's JSON.
    pub fn get(&self, id: u64) -> Option<Value> {
        self.lock()
            .iter()
            .find(|j| job_id(j) == id)
            .map(|j| view(j))
    }

    /// Stops every job after its current step, keeping running scrubs
    /// running in the saved state so that they resume on the next start.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(resync) = self
            .resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            resync.stop();
        }
        let jobs: Vec<Arc<Job>> = self.lock().clone();
        for job in jobs {
            if let Some(h) = job
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                let _ = h.join();
            }
        }
        self.save();
    }

    /// Writes every job's record, atomically.
    fn save(&self) {
        let records: Vec<Record> = self
            .lock()
            .iter()
            .map(|j| {
                j.record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("json.tmp");
            fs::write(
                &tmp,
                serde_json::to_vec_pretty(&records).map_err(std::io::Error::other)?,
            )?;
            fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::error!(file = %self.path.display(), error = %e, "cannot save the jobs");
        }
    }
}

fn job_id(job: &Job) -> u64 {
    job.record.lock().unwrap_or_else(PoisonError::into_inner).id
}

fn merge(r: &mut Record, found: Scrubbed) {
    for (child, bytes) in found.lost {
        match r.mismatches.iter_mut().find(|(c, _)| *c == child) {
            Some((_, b)) => *b += bytes,
            None => r.mismatches.push((child, bytes)),
        }
    }
    r.bytes_repaired += found.repaired;
    r.unrecoverable.extend(
        found
            .unrecoverable
            .into_iter()
            .map(|u| (u.start, u.end - u.start)),
    );
}

fn view(job: &Job) -> Value {
    let r = job
        .record
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (since, from) = job.run;
    let secs = since.elapsed().as_secs_f64();
    let rate = if r.state == JobState::Running && secs > 0.0 {
        r.bytes_done.saturating_sub(from) as f64 / secs
    } else {
        0.0
    };
    let eta = (r.state == JobState::Running && rate > 0.0)
        .then(|| (r.bytes_total - r.bytes_done) as f64 / rate);
    let mismatches: serde_json::Map<String, Value> = r
        .mismatches
        .iter()
        .map(|(c, b)| (c.clone(), json!(b)))
        .collect();
    let unrecoverable: Vec<Value> = r
        .unrecoverable
        .iter()
        .map(|(o, b)| json!({ "offset": o, "bytes": b }))
        .collect();
    json!({
        "id": r.id,
        "kind": JobKind::Scrub,
        "state": r.state.as_str(),
        "repair": r.repair,
        "bytes_done": r.bytes_done,
        "bytes_total": r.bytes_total,
        "rate_bytes_per_sec": rate,
        "eta_seconds": eta,
        "started": r.started,
        "bytes_repaired": r.bytes_repaired,
        "mismatches": mismatches,
        "unrecoverable": unrecoverable,
        "error": r.error,
    })
}
