//! The scrub worker: the whole volume read through the vote, a piece at a
//! time, at a bounded rate.

use std::sync::Arc;
use std::time::Instant;

use quorum_core::{JobKind, JobState, Scrubbed, Volume};

use super::status::{ScrubStatus, Unrecoverable};
use crate::background::{Inbox, Pace, Throughput, Worker, WorkerState};
use crate::telemetry::Telemetry;

/// Bytes one scrub step reads (and holds against overlapping writes).
const STEP: u64 = 1 << 20;

/// What can be sent to a scrub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubCommand {
    /// Scan nothing until resumed (it still shows as running).
    Pause,
    /// Go on after a pause.
    Resume,
    /// End now, as cancelled.
    Cancel,
}

/// One scrub: an explicit state machine, `running` (maybe paused) →
/// `completed` | `cancelled` | `failed`.
pub(super) struct ScrubWorker {
    volume: Arc<Volume>,
    telemetry: Arc<Telemetry>,
    pace: Pace,
    id: u64,
    repair: bool,
    started: String,
    total: u64,
    /// Bytes scanned: where the next step starts (the checkpoint).
    done: u64,
    found: Scrubbed,
    state: JobState,
    error: Option<String>,
    paused: bool,
    /// Since when it has run (started, resumed), for the rate.
    run: Throughput,
    /// When the pause after the last step ends.
    resume_at: Instant,
}

impl ScrubWorker {
    /// The scrub `status` says (new, or saved and resumed), on `volume`, at
    /// most `rate` bytes a second.
    pub(super) fn new(
        volume: Arc<Volume>,
        telemetry: Arc<Telemetry>,
        rate: u64,
        status: ScrubStatus,
    ) -> ScrubWorker {
        let now = Instant::now();
        ScrubWorker {
            volume,
            telemetry,
            pace: Pace::new(rate),
            id: status.id,
            repair: status.repair,
            started: status.started,
            total: status.bytes_total,
            done: status.bytes_done,
            found: Scrubbed {
                lost: status.mismatches,
                repaired: status.bytes_repaired,
                unrecoverable: status
                    .unrecoverable
                    .iter()
                    .map(|u| u.offset..u.offset + u.bytes)
                    .collect(),
                unreached: Vec::new(),
            },
            state: status.state,
            error: status.error,
            paused: false,
            run: Throughput::since(now, status.bytes_done),
            resume_at: now,
        }
    }

    fn end(&mut self, state: JobState, error: Option<String>) -> WorkerState {
        self.state = state;
        self.error = error;
        WorkerState::Done
    }
}

impl Worker for ScrubWorker {
    type Command = ScrubCommand;
    type Status = ScrubStatus;

    fn name(&self) -> String {
        format!("scrub-{}-{}", self.volume.name(), self.id)
    }

    fn status(&self) -> ScrubStatus {
        let running = self.state == JobState::Running && !self.paused;
        let rate = if running {
            self.run.rate(self.done, self.resume_at.max(Instant::now()))
        } else {
            0.0
        };
        ScrubStatus {
            id: self.id,
            kind: JobKind::Scrub,
            state: self.state,
            repair: self.repair,
            bytes_done: self.done,
            bytes_total: self.total,
            rate_bytes_per_sec: rate,
            eta_seconds: (running && rate > 0.0)
                .then(|| self.total.saturating_sub(self.done) as f64 / rate),
            started: self.started.clone(),
            bytes_repaired: self.found.repaired,
            mismatches: self.found.lost.clone(),
            unrecoverable: self
                .found
                .unrecoverable
                .iter()
                .map(|r| Unrecoverable {
                    offset: r.start,
                    bytes: r.end - r.start,
                })
                .collect(),
            error: self.error.clone(),
        }
    }

    fn work(&mut self) -> WorkerState {
        if self.state != JobState::Running {
            return WorkerState::Done;
        }
        if self.paused {
            return WorkerState::Idle;
        }
        if self.done >= self.total {
            return self.end(JobState::Completed, None);
        }
        let started = Instant::now();
        let n = STEP.min(self.total - self.done);
        match self.volume.scrub(self.done, n, self.repair) {
            Ok(found) => {
                self.found.merge(found);
                self.done += n;
            }
            Err(e) => return self.end(JobState::Failed, Some(e.to_string())),
        }
        self.telemetry
            .job_bytes(self.volume.name(), JobKind::Scrub, n);
        if self.done >= self.total {
            return self.end(JobState::Completed, None);
        }
        let pause = self.pace.pause(n, started);
        self.resume_at = Instant::now() + pause;
        WorkerState::Throttled(pause)
    }

    fn wait_for_work(&mut self, inbox: &Inbox<ScrubCommand>) -> WorkerState {
        // Paused: only a command (or the stop) makes it go on.
        inbox.wait(None);
        WorkerState::Idle
    }

    fn command(&mut self, command: ScrubCommand) -> Option<WorkerState> {
        if self.state != JobState::Running {
            return None;
        }
        match command {
            ScrubCommand::Pause => {
                self.paused = true;
                Some(WorkerState::Idle)
            }
            ScrubCommand::Resume if self.paused => {
                self.paused = false;
                self.run = Throughput::since(Instant::now(), self.done);
                self.resume_at = Instant::now();
                Some(WorkerState::Busy)
            }
            ScrubCommand::Resume => None,
            ScrubCommand::Cancel => Some(self.end(JobState::Cancelled, None)),
        }
    }
}
