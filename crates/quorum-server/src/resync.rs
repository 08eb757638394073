//! The resync worker: it copies the voted data over the ranges a volume's
//! children missed ([`Volume::resync_step`]), a piece at a time, at a
//! bounded rate so that client I/O is not starved. It is a
//! [`Worker`], driven by a runner per volume.
//!
//! It runs from start-up (the stale maps survive restarts, so a resync
//! interrupted by a crash goes on) until shutdown. When nothing is stale it
//! waits for work: the volume rings its bell whenever a range is marked
//! stale ([`Volume::set_resync_bell`]). When a step fails (the stale child
//! is still down, or the others cannot reach the threshold) it goes round
//! the other ranges, then backs off, doubling up to a few seconds; a region
//! that a reconcile could not finish is retried the same way. It is listed
//! among the jobs as job 0, kind `resync`, and cannot be cancelled; it can
//! be paused and resumed ([`ResyncCommand`], not on the HTTP API yet).
//! A child that could not be opened ([`Unopened`]) has nothing to copy
//! onto: while only such children are behind, the resync waits (the
//! reopening starts a new one when the child opens).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum_backends::Unopened;
use quorum_core::{ChildState, Event, EventSink, JobKind, JobState, ResyncStep, Volume};
use serde::Serialize;

use crate::background::{Inbox, Pace, Throughput, Wake, Worker, WorkerState};
use crate::telemetry::Telemetry;

/// The most bytes a step copies at the least (and holds locked against
/// client I/O while it copies them): the step at the default rate and
/// below, whose copies go through the children's caches as client writes
/// do ([`Volume::resync_step`]).
const MIN_STEP: u64 = 256 << 10;
/// The most bytes a step copies at the most, when the rate allows it: a
/// step's flush and round of the children's workers are paid once for all
/// of it, while no client request waits for it longer than the step takes
/// (about 10 ms on a file child). Steps larger than [`MIN_STEP`] copy
/// uncached ([`Volume::resync_step_uncached`]).
const MAX_STEP: u64 = 16 << 20;
/// Steps a second at the rate limit, at the least: a limited resync copies
/// in short bursts with pauses between, which client I/O barely notices.
const STEPS_PER_SECOND: u64 = 256;
/// The first back-off after failed steps, and the retry of a region left
/// unreconciled.
const BACKOFF: Duration = Duration::from_millis(200);
/// The longest back-off after failed steps.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The pause after a failed step while failures are few: the others are
/// tried at once.
const RETRY_OTHERS: Duration = Duration::from_millis(20);
/// The failed steps in a row before the back-off grows.
const FAILURES_BEFORE_BACKOFF: u32 = 4;

/// The resync's id among the jobs.
pub const RESYNC_ID: u64 = 0;

/// Called with the volume when a syncing child has caught up, so that the
/// membership's list of syncing children can be saved.
pub type OnSynced = Arc<dyn Fn(&Volume) + Send + Sync>;

/// How a volume's resync runs.
#[derive(Clone)]
pub struct ResyncConfig {
    /// Bytes a second it copies at most.
    pub rate: u64,
    /// Called when a syncing child caught up.
    pub on_synced: OnSynced,
}

/// What can be sent to the resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncCommand {
    /// Copy nothing until resumed.
    Pause,
    /// Go on after a pause.
    Resume,
}

/// The resync as the jobs API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ResyncStatus {
    /// Always [`RESYNC_ID`].
    pub id: u64,
    /// Always [`JobKind::Resync`].
    #[schema(value_type = crate::schema::JobKind)]
    pub kind: JobKind,
    /// Running while anything is stale, idle otherwise.
    #[schema(value_type = crate::schema::JobState)]
    pub state: JobState,
    /// Bytes copied since start.
    pub bytes_done: u64,
    /// Bytes copied, and still stale.
    pub bytes_total: u64,
    /// Bytes a second in the current spell of work (0 when idle or
    /// paused).
    pub rate_bytes_per_sec: f64,
    /// Seconds until nothing is stale at that rate, when it is known.
    pub eta_seconds: Option<f64>,
}

/// The resync of one volume.
pub struct ResyncWorker {
    volume: Arc<Volume>,
    telemetry: Arc<Telemetry>,
    sink: Arc<dyn EventSink>,
    on_synced: OnSynced,
    pace: Pace,
    /// The most bytes a step copies, and whether uncached (see
    /// [`step_for`]).
    step: (u64, bool),
    /// Where to look next: past each range tried, so that a range that
    /// cannot be copied yet does not hold up the others.
    from: u64,
    /// The children behind at the last look, with their state then.
    behind: Vec<(String, ChildState)>,
    failures: u32,
    backoff: Duration,
    /// The pause before a region a reconcile could not finish is tried
    /// again; it grows apart from [`ResyncWorker::backoff`].
    reconcile_backoff: Duration,
    /// Bytes copied since start.
    copied: u64,
    /// Since when it has been copying without going idle.
    spell: Option<Throughput>,
    /// When the pause after the last step ends.
    resume_at: Instant,
    paused: bool,
}

impl ResyncWorker {
    /// The resync of `volume`, copying at most `config.rate` bytes a second.
    pub fn new(
        volume: Arc<Volume>,
        telemetry: Arc<Telemetry>,
        sink: Arc<dyn EventSink>,
        config: ResyncConfig,
    ) -> ResyncWorker {
        let behind = lagging(&volume);
        ResyncWorker {
            volume,
            telemetry,
            sink,
            on_synced: config.on_synced,
            pace: Pace::new(config.rate),
            step: step_for(config.rate),
            from: 0,
            behind,
            failures: 0,
            backoff: BACKOFF,
            reconcile_backoff: BACKOFF,
            copied: 0,
            spell: None,
            resume_at: Instant::now(),
            paused: false,
        }
    }

    /// A pause of `pause` after the step, noted for the rate.
    fn throttled(&mut self, pause: Duration) -> WorkerState {
        self.resume_at = Instant::now() + pause;
        WorkerState::Throttled(pause)
    }
}

impl Worker for ResyncWorker {
    type Command = ResyncCommand;
    type Status = ResyncStatus;

    fn name(&self) -> String {
        format!("resync-{}", self.volume.name())
    }

    fn status(&self) -> ResyncStatus {
        let stale: u64 = self.volume.stale_bytes().iter().sum();
        let at = self.resume_at.max(Instant::now());
        let rate = match self.spell {
            Some(spell) if !self.paused => spell.rate(self.copied, at),
            _ => 0.0,
        };
        ResyncStatus {
            id: RESYNC_ID,
            kind: JobKind::Resync,
            state: if stale > 0 {
                JobState::Running
            } else {
                JobState::Idle
            },
            bytes_done: self.copied,
            bytes_total: self.copied + stale,
            rate_bytes_per_sec: rate,
            eta_seconds: (rate > 0.0 && stale > 0).then(|| stale as f64 / rate),
        }
    }

    fn work(&mut self) -> WorkerState {
        if self.paused {
            return WorkerState::Idle;
        }
        let volume = &*self.volume;
        self.behind = announce_caught_up(
            volume,
            &*self.sink,
            &self.on_synced,
            std::mem::take(&mut self.behind),
        );
        if only_unopened_behind(volume) {
            self.from = 0;
            self.spell = None;
            return WorkerState::Idle;
        }
        let started = Instant::now();
        let step = match self.step {
            (max, true) => volume.resync_step_uncached(max, self.from),
            (max, false) => volume.resync_step(max, self.from),
        };
        match step {
            ResyncStep::Copied {
                child,
                range,
                refreshed,
                next,
            } => {
                self.backoff = BACKOFF;
                self.failures = 0;
                self.from = next;
                // A child marked stale after the look above, and copied in
                // this one step, is said caught up at the next look too.
                if !self.behind.iter().any(|(name, _)| *name == child) {
                    self.behind.push((child.clone(), ChildState::Stale));
                }
                // Progress counts the stale bytes made fresh; the pace, the
                // bytes moved.
                let moved = range.end - range.start;
                self.spell
                    .get_or_insert(Throughput::since(started, self.copied));
                self.copied += refreshed;
                self.telemetry
                    .job_bytes(volume.name(), JobKind::Resync, refreshed);
                tracing::debug!(volume = volume.name(), %child, refreshed, moved, "resynced");
                let pause = self.pace.pause(moved, started);
                self.throttled(pause)
            }
            ResyncStep::Idle => {
                self.from = 0;
                self.spell = None;
                // Nothing is stale now: whoever caught up since the look
                // above (a client rewrote its last stale range) is said so
                // before the wait, which only a new stale range ends.
                self.behind = announce_caught_up(
                    volume,
                    &*self.sink,
                    &self.on_synced,
                    std::mem::take(&mut self.behind),
                );
                if volume.awaits_reconcile() {
                    // A region a reconcile could not finish: the next step
                    // tries it again, after a back-off of its own.
                    let pause = self.reconcile_backoff;
                    self.reconcile_backoff = (self.reconcile_backoff * 2).min(MAX_BACKOFF);
                    self.throttled(pause)
                } else {
                    // All done: the next streak of failures starts from
                    // the shortest back-off again.
                    self.backoff = BACKOFF;
                    self.reconcile_backoff = BACKOFF;
                    self.failures = 0;
                    WorkerState::Idle
                }
            }
            ResyncStep::Failed {
                child,
                range,
                error,
            } => {
                tracing::warn!(volume = volume.name(), %child, offset = range.start, bytes = range.end - range.start, %error, "a resync step failed; retrying later");
                self.from = range.end;
                // Go round the other ranges at once; back off only when
                // failures keep coming.
                self.failures += 1;
                let pause = if self.failures < FAILURES_BEFORE_BACKOFF {
                    RETRY_OTHERS
                } else {
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.backoff
                };
                self.throttled(pause)
            }
        }
    }

    fn wait_for_work(&mut self, inbox: &Inbox<ResyncCommand>) -> WorkerState {
        match inbox.wait(None) {
            Wake::Rung if !self.paused => WorkerState::Busy,
            _ => WorkerState::Idle,
        }
    }

    fn command(&mut self, command: ResyncCommand) -> Option<WorkerState> {
        match command {
            ResyncCommand::Pause => {
                self.paused = true;
                self.spell = None;
                Some(WorkerState::Idle)
            }
            ResyncCommand::Resume if self.paused => {
                self.paused = false;
                Some(WorkerState::Busy)
            }
            ResyncCommand::Resume => None,
        }
    }
}

/// The most bytes a step copies at `rate` bytes a second (a
/// [`STEPS_PER_SECOND`]th of the rate, between [`MIN_STEP`] and
/// [`MAX_STEP`]), and whether it copies uncached: a step larger than
/// [`MIN_STEP`] does, as a resync faster than the default rate would fill
/// the page cache with a copy that nobody reads, and copies onto a new
/// file child several times faster so (BENCHMARKS.md, "Resync").
fn step_for(rate: u64) -> (u64, bool) {
    let max = (rate / STEPS_PER_SECOND).clamp(MIN_STEP, MAX_STEP);
    (max, max > MIN_STEP)
}

/// Whether every child with stale ranges is [`Unopened`] (and no region
/// waits for a reconcile): then no step could copy anything.
fn only_unopened_behind(volume: &Volume) -> bool {
    let stale = volume.stale_bytes();
    let specs = volume.child_specs();
    stale.iter().any(|&b| b > 0)
        && !volume.awaits_reconcile()
        && specs
            .iter()
            .zip(&stale)
            .all(|(c, &b)| b == 0 || c.backend.kind() == Unopened::KIND)
}

/// The children that are syncing or stale, with that state.
fn lagging(volume: &Volume) -> Vec<(String, ChildState)> {
    volume
        .children()
        .into_iter()
        .filter(|c| matches!(c.state, ChildState::Syncing | ChildState::Stale) || c.stale_bytes > 0)
        .map(|c| (c.name, c.state))
        .collect()
}

/// Emits `CHILD_STATE_CHANGE` for each child of `before` that has nothing
/// stale any more (copied by the resync, or rewritten by clients), from the
/// state it had to the state it has now (`healthy`, or `damaged` when it
/// still holds ranges known bad), and returns the children still behind.
fn announce_caught_up(
    volume: &Volume,
    sink: &dyn EventSink,
    on_synced: &OnSynced,
    before: Vec<(String, ChildState)>,
) -> Vec<(String, ChildState)> {
    let now = volume.children();
    for (child, state) in before {
        let Some(to) = now
            .iter()
            .find(|c| c.name == child && c.stale_bytes == 0)
            .map(|c| c.state)
        else {
            continue;
        };
        let from = if volume.done_syncing(&child) {
            on_synced(volume);
            ChildState::Syncing
        } else {
            state
        };
        if from == to {
            continue;
        }
        tracing::info!(volume = volume.name(), %child, %from, %to, "child caught up");
        sink.emit(volume.name(), Event::ChildStateChange { child, from, to });
    }
    lagging(volume)
}

#[cfg(test)]
mod tests {
    use quorum_core::{ChildSpec, NullSink};

    use super::*;
    use crate::test_volume;

    /// Only an unopened child behind: nothing to copy; a file child behind
    /// too, or none at all: the resync steps (or idles as ever).
    #[test]
    fn an_unopened_child_alone_behind_gives_the_resync_nothing_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 1 << 20;
        let mut children = test_volume::file_children(dir.path(), &["a", "b"], size);
        let far = Unopened::new("far", "http://127.0.0.1:9/v1/volumes/x", "down", size);
        children.push(ChildSpec::new("far", Arc::new(far)));
        let volume = test_volume::open(children, Arc::new(NullSink));
        assert!(!only_unopened_behind(&volume), "nothing is stale");
        volume
            .mark_stale("far", std::slice::from_ref(&(0..size)))
            .expect("mark far");
        assert!(only_unopened_behind(&volume));
        volume
            .mark_stale("b", std::slice::from_ref(&(0..4096)))
            .expect("mark b");
        assert!(!only_unopened_behind(&volume), "b can be copied onto");
        volume.close(Duration::from_secs(5));
    }

    #[test]
    fn steps_grow_with_the_rate_and_go_uncached_past_the_default_one() {
        const MIB: u64 = 1 << 20;
        assert_eq!(step_for(4096), (MIB / 4, false));
        assert_eq!(step_for(64 * MIB), (MIB / 4, false), "the default rate");
        assert_eq!(step_for(256 * MIB), (MIB, true));
        assert_eq!(step_for(100 << 30), (16 * MIB, true));
    }
}
