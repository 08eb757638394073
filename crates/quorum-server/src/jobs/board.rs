//! Where the jobs' runners post their statuses: the table the API lists,
//! saved to the volume's job file, and the job events, which follow from
//! what is posted (a scrub that was running and is not any more has ended).
//!
//! Like garage's `worker_info` map, written by the runners after every
//! step. A change of a scrub's state and the pruning of the finished ones
//! happen under one lock, so no one sees a job ended and the list not yet
//! pruned; the file is saved, then the event emitted.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{Event, EventSink, JobKind, JobState};

use super::StartError;
use super::status::{JobStatus, Record, ScrubStatus};
use crate::resync::ResyncStatus;

/// How often a running scrub's checkpoint is saved (and its progress
/// reported).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The most finished jobs kept (and saved) per volume; older ones are
/// forgotten.
pub const KEPT_FINISHED: usize = 100;

/// The statuses of one volume's jobs.
pub(super) struct Board {
    volume: String,
    sink: Arc<dyn EventSink>,
    path: PathBuf,
    table: Mutex<Table>,
    /// Held while the file is written, so that two saves never interleave
    /// and the last written is the newest.
    saving: Mutex<()>,
}

struct Table {
    resync: Option<ResyncStatus>,
    scrubs: Vec<Posted>,
    /// Set when the jobs stop: what a worker that did not stop in time
    /// posts later is dropped, and no scrub starts.
    closed: bool,
}

struct Posted {
    status: ScrubStatus,
    /// When its checkpoint was last saved.
    saved: Instant,
}

/// What a post leads to, once the table is unlocked.
enum Then {
    Nothing,
    Checkpoint(Event),
    Ended(Event),
}

impl Board {
    /// The board of `volume`, with the scrubs saved at `path`.
    ///
    /// # Errors
    /// The file exists and cannot be read (an unparsable one is ignored,
    /// with a warning).
    pub(super) fn load(
        volume: &str,
        sink: Arc<dyn EventSink>,
        path: PathBuf,
    ) -> std::io::Result<Board> {
        let saved: Vec<Record> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable jobs file");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let mut table = Table {
            resync: None,
            scrubs: saved
                .into_iter()
                .map(|r| Posted {
                    status: ScrubStatus::from_record(r),
                    saved: now,
                })
                .collect(),
            closed: false,
        };
        table.prune();
        Ok(Board {
            volume: volume.to_owned(),
            sink,
            path,
            table: Mutex::new(table),
            saving: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The scrubs still running (to resume after a start).
    pub(super) fn running(&self) -> Vec<ScrubStatus> {
        self.lock()
            .scrubs
            .iter()
            .filter(|p| p.status.is_running())
            .map(|p| p.status.clone())
            .collect()
    }

    /// Adds a scrub of `bytes_total` bytes, saves, and says it started.
    ///
    /// # Errors
    /// A scrub is running (one at a time), or the jobs are stopping.
    pub(super) fn add_scrub(
        &self,
        repair: bool,
        bytes_total: u64,
    ) -> Result<ScrubStatus, StartError> {
        let status = {
            let mut table = self.lock();
            if table.closed {
                return Err(StartError::Stopping);
            }
            if let Some(running) = table.scrubs.iter().find(|p| p.status.is_running()) {
                return Err(StartError::Running(running.status.id));
            }
            let id = table.scrubs.iter().map(|p| p.status.id).max().unwrap_or(0) + 1;
            let status = ScrubStatus {
                id,
                kind: JobKind::Scrub,
                state: JobState::Running,
                repair,
                bytes_done: 0,
                bytes_total,
                rate_bytes_per_sec: 0.0,
                eta_seconds: None,
                started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                bytes_repaired: 0,
                mismatches: Vec::new(),
                unrecoverable: Vec::new(),
                error: None,
            };
            table.scrubs.push(Posted {
                status: status.clone(),
                saved: Instant::now(),
            });
            table.prune();
            status
        };
        self.save();
        self.sink.emit(
            &self.volume,
            Event::JobStarted {
                id: status.id,
                kind: JobKind::Scrub,
                repair,
                bytes_total,
            },
        );
        Ok(status)
    }

    /// Takes what a scrub's runner posted: saves its checkpoint every few
    /// seconds, and when it has ended prunes the list (under the same
    /// lock), saves and says so.
    pub(super) fn post_scrub(&self, status: ScrubStatus) {
        let then = {
            let mut table = self.lock();
            if table.closed {
                return;
            }
            let Some(posted) = table.scrubs.iter_mut().find(|p| p.status.id == status.id) else {
                return;
            };
            let was_running = posted.status.is_running();
            posted.status = status;
            let s = &posted.status;
            if was_running && !s.is_running() {
                let event = Event::JobCompleted {
                    id: s.id,
                    kind: JobKind::Scrub,
                    state: s.state,
                    bytes_scanned: s.bytes_done,
                    bytes_repaired: s.bytes_repaired,
                    mismatches: s.mismatches.clone(),
                    unrecoverable: s
                        .unrecoverable
                        .iter()
                        .map(|u| u.offset..u.offset + u.bytes)
                        .collect(),
                };
                table.prune();
                Then::Ended(event)
            } else if s.is_running() && posted.saved.elapsed() >= PROGRESS_EVERY {
                posted.saved = Instant::now();
                Then::Checkpoint(Event::JobProgress {
                    id: s.id,
                    kind: JobKind::Scrub,
                    bytes_done: s.bytes_done,
                    bytes_total: s.bytes_total,
                })
            } else {
                Then::Nothing
            }
        };
        match then {
            Then::Nothing => {}
            Then::Checkpoint(event) | Then::Ended(event) => {
                self.save();
                self.sink.emit(&self.volume, event);
            }
        }
    }

    /// Takes what the resync's runner posted.
    pub(super) fn post_resync(&self, status: ResyncStatus) {
        let mut table = self.lock();
        if !table.closed {
            table.resync = Some(status);
        }
    }

    /// One scrub.
    pub(super) fn scrub(&self, id: u64) -> Option<ScrubStatus> {
        self.lock()
            .scrubs
            .iter()
            .find(|p| p.status.id == id)
            .map(|p| p.status.clone())
    }

    /// Every job, the resync first (while it runs).
    pub(super) fn list(&self) -> Vec<JobStatus> {
        let table = self.lock();
        table
            .resync
            .iter()
            .cloned()
            .map(JobStatus::Resync)
            .chain(
                table
                    .scrubs
                    .iter()
                    .map(|p| JobStatus::Scrub(p.status.clone())),
            )
            .collect()
    }

    /// Takes no more posts (the workers have stopped, or are left behind)
    /// and saves: running scrubs stay running in the file, to resume.
    pub(super) fn close(&self) {
        {
            let mut table = self.lock();
            table.closed = true;
            table.resync = None;
        }
        self.save();
    }

    /// Writes every scrub's record, atomically.
    fn save(&self) {
        let _saving = self.saving.lock().unwrap_or_else(PoisonError::into_inner);
        let records: Vec<Record> = self
            .lock()
            .scrubs
            .iter()
            .map(|p| p.status.record())
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

impl Table {
    /// Forgets the oldest finished scrubs beyond [`KEPT_FINISHED`].
    fn prune(&mut self) {
        let finished = self
            .scrubs
            .iter()
            .filter(|p| !p.status.is_running())
            .count();
        let mut excess = finished.saturating_sub(KEPT_FINISHED);
        self.scrubs.retain(|p| {
            let forget = excess > 0 && !p.status.is_running();
            excess -= usize::from(forget);
            !forget
        });
    }
}
