//! Background jobs of a volume: scrubs, and the resync worker.
//!
//! A scrub reads the whole volume through the vote, a piece at a time
//! ([`Volume::scrub`]), reports every lost vote (the usual
//! `QUORUM_REPORT_BAD` events) and repairs when asked; blocks without a
//! majority are listed as unrecoverable, never "repaired". Each job is an
//! explicit state machine (`running` → `completed` | `cancelled` |
//! `failed`) whose state and checkpoint are saved in
//! `data_dir/jobs/<volume>.json` every few seconds and when it ends, so a
//! scrub running when the server stops (or crashes) resumes from its
//! checkpoint on the next start. A rate limit keeps jobs from starving
//! client I/O. One scrub runs per volume at a time; the last
//! [`KEPT_FINISHED`] finished ones are kept.
//!
//! The resync worker ([`crate::resync`]) is listed among the jobs as job 0,
//! kind `resync`: it runs whenever a child has stale ranges and cannot be
//! cancelled.
//!
//! Both are [`Worker`](crate::background::Worker)s, each driven by its own
//! [`Runner`]; commands (cancel, pause, resume) go to them through the
//! runner. The parts:
//!
//! - `mod.rs`: [`Jobs`], what the API and the membership call.
//! - `scrub.rs`: the scrub worker.
//! - `board.rs`: where the runners post statuses: the list the API shows,
//!   the job file and the job events.
//! - `status.rs`: the statuses as the API shows them, and the saved record.
//! - `metrics.rs`: the bytes the running jobs have left, for Prometheus.
//! - `schedule.rs`: scheduled scrubs (`scrub_interval`): the clock of the
//!   last completed scrub, and the worker that starts them when due.

mod board;
pub mod metrics;
pub mod schedule;
mod scrub;
mod status;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use quorum_core::{EventSink, JobState, Volume};

use crate::background::{NotStopped, Runner};
use crate::resync::{RESYNC_ID, ResyncCommand, ResyncConfig, ResyncWorker};
use crate::telemetry::Telemetry;
use board::Board;
pub use board::KEPT_FINISHED;
pub use scrub::ScrubCommand;
use scrub::ScrubWorker;
pub use status::{JobStatus, ScrubStatus, Unrecoverable};

/// How many of the volume's `child_timeout` a stop waits for a worker's
/// step: a step makes a few rounds of child calls, each bounded by it.
const STOP_STEPS: u32 = 4;
/// The shortest wait for a worker's step at a stop.
const MIN_STOP_WAIT: Duration = Duration::from_secs(10);

/// Why a scrub did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A scrub is already running on the volume.
    #[error("scrub {0} is running on this volume; one scrub at a time")]
    Running(u64),
    /// The jobs are stopping (a membership change, or shutdown).
    #[error("the volume's jobs are stopping; try again")]
    Stopping,
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
    telemetry: Arc<Telemetry>,
    rate: u64,
    board: Arc<Board>,
    resync: Mutex<Option<Runner<ResyncCommand>>>,
    /// The scrubs' runners, by job id (finished ones are dropped as new
    /// ones start).
    scrubs: Mutex<Vec<(u64, Runner<ScrubCommand>)>>,
}

impl Jobs {
    /// Loads the saved jobs of `volume` from `data_dir`, resumes the running
    /// ones, and starts the resync worker. Jobs go at most `rate` bytes a
    /// second, the resync as `resync` says.
    ///
    /// # Errors
    /// The job file cannot be read, or the resync's thread cannot start.
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
        let board = Arc::new(Board::load(volume.name(), sink.clone(), path)?);
        let worker = ResyncWorker::new(volume.clone(), telemetry.clone(), sink, resync);
        let posts = board.clone();
        let runner = Runner::spawn(worker, move |status| posts.post_resync(status))?;
        let bell = runner.bell();
        volume.set_resync_bell(Some(Arc::new(move || bell.ring())));
        let jobs = Arc::new(Jobs {
            volume,
            telemetry,
            rate,
            board,
            resync: Mutex::new(Some(runner)),
            scrubs: Mutex::new(Vec::new()),
        });
        let mut scrubs = jobs.runners();
        for status in jobs.board.running() {
            tracing::info!(
                volume = jobs.volume.name(),
                job = status.id,
                "resuming a scrub"
            );
            jobs.spawn_scrub(&mut scrubs, status);
        }
        drop(scrubs);
        Ok(jobs)
    }

    fn runners(&self) -> MutexGuard<'_, Vec<(u64, Runner<ScrubCommand>)>> {
        self.scrubs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a scrub of the whole volume; returns it as the API shows it.
    ///
    /// # Errors
    /// A scrub is running (one at a time per volume), or the jobs are
    /// stopping.
    pub fn start_scrub(&self, repair: bool) -> Result<ScrubStatus, StartError> {
        // Held from the scrub's listing to its runner's start, so that a
        // cancel in between finds the runner.
        let mut scrubs = self.runners();
        scrubs.retain(|(_, runner)| !runner.is_finished());
        let status = self.board.add_scrub(repair, self.volume.size())?;
        self.spawn_scrub(&mut scrubs, status.clone());
        Ok(status)
    }

    fn spawn_scrub(&self, scrubs: &mut Vec<(u64, Runner<ScrubCommand>)>, status: ScrubStatus) {
        let id = status.id;
        let worker = ScrubWorker::new(
            self.volume.clone(),
            self.telemetry.clone(),
            self.rate,
            status.clone(),
        );
        let posts = self.board.clone();
        match Runner::spawn(worker, move |status| posts.post_scrub(status)) {
            Ok(runner) => scrubs.push((id, runner)),
            Err(e) => self.board.post_scrub(ScrubStatus {
                state: JobState::Failed,
                error: Some(format!("cannot start the job's thread: {e}")),
                ..status
            }),
        }
    }

    /// Sends `command` to scrub `id`'s runner, if it runs.
    fn send(&self, id: u64, command: ScrubCommand) {
        if let Some((_, runner)) = self.runners().iter().find(|(job, _)| *job == id) {
            runner.send(command);
        }
    }

    /// Cancels job `id`; it stops after its current step.
    ///
    /// # Errors
    /// No such job, or one that cannot be cancelled (the resync, or a job
    /// that has ended).
    pub fn cancel(&self, id: u64) -> Result<(), CancelError> {
        if id == RESYNC_ID {
            return Err(CancelError::NotCancellable(
                RESYNC_ID,
                "the resync runs whenever a child has stale ranges",
            ));
        }
        let status = self.board.scrub(id).ok_or(CancelError::NoSuchJob(id))?;
        if !status.is_running() {
            return Err(CancelError::NotCancellable(id, "it has ended"));
        }
        self.send(id, ScrubCommand::Cancel);
        Ok(())
    }

    /// Pauses job `id` (a scrub, or the resync) after its current step; it
    /// still shows as running. Says whether there was such a job running.
    /// Not on the HTTP API yet.
    pub fn pause(&self, id: u64) -> bool {
        self.pause_or_resume(id, true)
    }

    /// Resumes job `id` after [`Jobs::pause`]. Says whether there was such a
    /// job running.
    pub fn resume(&self, id: u64) -> bool {
        self.pause_or_resume(id, false)
    }

    fn pause_or_resume(&self, id: u64, pause: bool) -> bool {
        if id == RESYNC_ID {
            let resync = self.resync.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(runner) = resync.as_ref() else {
                return false;
            };
            runner.send(if pause {
                ResyncCommand::Pause
            } else {
                ResyncCommand::Resume
            });
            return true;
        }
        if !self.board.scrub(id).is_some_and(|s| s.is_running()) {
            return false;
        }
        self.send(
            id,
            if pause {
                ScrubCommand::Pause
            } else {
                ScrubCommand::Resume
            },
        );
        true
    }

    /// Every job, the resync first, as the API shows them.
    pub fn list(&self) -> Vec<JobStatus> {
        self.board.list()
    }

    /// One scrub, as the API shows it.
    pub fn get(&self, id: u64) -> Option<ScrubStatus> {
        self.board.scrub(id)
    }

    /// Stops every job after its current step, keeping running scrubs
    /// running in the saved state so that they resume on the next start.
    /// Waits for the steps a few `child_timeout`s at most; returns the
    /// workers that had not stopped by then (stuck in the engine; what they
    /// post later is dropped).
    pub fn stop(&self) -> Vec<NotStopped> {
        let deadline = Instant::now() + self.stop_wait();
        self.volume.set_resync_bell(None);
        let resync = self
            .resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let scrubs = std::mem::take(&mut *self.runners());
        // Every worker is told first, so that they stop together.
        if let Some(runner) = &resync {
            runner.signal_stop();
        }
        for (_, runner) in &scrubs {
            runner.signal_stop();
        }
        let mut stuck = Vec::new();
        let resync = resync.map(|r| r.join(deadline));
        for joined in resync
            .into_iter()
            .chain(scrubs.into_iter().map(|(_, r)| r.join(deadline)))
        {
            if let Err(e) = joined {
                tracing::error!(volume = self.volume.name(), error = %e, "a job did not stop in time");
                stuck.push(e);
            }
        }
        self.board.close();
        stuck
    }

    /// How long [`Jobs::stop`] waits for a step at most.
    pub fn stop_wait(&self) -> Duration {
        (self.volume.options().child_timeout * STOP_STEPS).max(MIN_STOP_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Receiver, Sender};

    use quorum_core::{ChildState, Event};

    use super::*;
    use crate::test_volume;

    const MIB: u64 = 1 << 20;
    /// A generous bound for what should take a fraction of a second.
    const PROMPTLY: Duration = Duration::from_secs(20);

    /// Sends every event it gets.
    struct Events(Mutex<Sender<Event>>);

    impl EventSink for Events {
        fn emit(&self, _volume: &str, event: Event) {
            let _ = self.0.lock().expect("sender").send(event);
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        volume: Arc<Volume>,
        jobs: Arc<Jobs>,
        events: Receiver<Event>,
    }

    /// A volume of `size` bytes on three files, with its jobs going at
    /// `rate` bytes a second.
    fn setup(size: u64, rate: u64) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, events) = mpsc::channel();
        let sink: Arc<dyn EventSink> = Arc::new(Events(Mutex::new(tx)));
        let children = test_volume::file_children(dir.path(), &["a", "b", "c"], size);
        let volume = Arc::new(test_volume::open(children, sink.clone()));
        let telemetry = Arc::new(Telemetry::new([("vm", vec!["a", "b", "c"])]));
        let resync = ResyncConfig {
            rate,
            on_synced: Arc::new(|_: &Volume| {}),
        };
        let jobs = Jobs::start(volume.clone(), sink, telemetry, dir.path(), rate, resync)
            .expect("start the jobs");
        Setup {
            _dir: dir,
            volume,
            jobs,
            events,
        }
    }

    /// The next event `pick` takes, waiting `PROMPTLY` at most.
    fn next<T>(events: &Receiver<Event>, what: &str, pick: impl Fn(Event) -> Option<T>) -> T {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(e) => panic!("no {what} within {PROMPTLY:?}: {e}"),
            }
        }
    }

    fn completed(events: &Receiver<Event>, job: u64) -> (JobState, u64) {
        next(events, "JOB_COMPLETED", |e| match e {
            Event::JobCompleted {
                id,
                state,
                bytes_scanned,
                ..
            } if id == job => Some((state, bytes_scanned)),
            _ => None,
        })
    }

    #[test]
    fn a_cancel_ends_a_paused_scrub_at_once() {
        // 1 MiB a second: after its first step the scrub pauses for about
        // a second, and the whole would take eight.
        let s = setup(8 * MIB, MIB);
        let scrub = s.jobs.start_scrub(false).expect("a scrub starts");
        assert_eq!((scrub.id, scrub.state), (1, JobState::Running));
        assert!(matches!(
            s.jobs.start_scrub(true),
            Err(StartError::Running(1))
        ));
        assert!(s.jobs.pause(1), "a running scrub pauses");
        let asked = Instant::now();
        s.jobs.cancel(1).expect("a paused scrub can be cancelled");
        let (state, scanned) = completed(&s.events, 1);
        assert_eq!(state, JobState::Cancelled);
        assert!(scanned < 8 * MIB, "it went on: {scanned}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        let shown = s.jobs.get(1).expect("listed");
        assert_eq!(shown.state, JobState::Cancelled);
        assert_eq!(shown.rate_bytes_per_sec, 0.0);
        assert!(matches!(
            s.jobs.cancel(1),
            Err(CancelError::NotCancellable(1, _))
        ));
        assert!(matches!(s.jobs.cancel(7), Err(CancelError::NoSuchJob(7))));
        assert!(matches!(
            s.jobs.cancel(0),
            Err(CancelError::NotCancellable(0, _))
        ));
        assert!(!s.jobs.pause(1), "an ended scrub does not pause");
        assert!(s.jobs.stop().is_empty());
    }

    #[test]
    fn a_paused_scrub_shows_running_and_completes_once_resumed() {
        let s = setup(2 * MIB, 64 * MIB);
        let scrub = s.jobs.start_scrub(true).expect("a scrub starts");
        assert!(s.jobs.pause(scrub.id));
        assert!(s.jobs.resume(scrub.id));
        let (state, scanned) = completed(&s.events, scrub.id);
        assert_eq!((state, scanned), (JobState::Completed, 2 * MIB));
        let list = s.jobs.list();
        assert!(
            matches!(&list[0], JobStatus::Resync(r) if r.id == 0),
            "{list:?}"
        );
        assert!(
            matches!(&list[1], JobStatus::Scrub(j) if j.state == JobState::Completed),
            "{list:?}"
        );
        assert!(s.jobs.stop().is_empty());
        assert_eq!(s.jobs.list().len(), 1, "the resync is listed while it runs");
        assert!(matches!(
            s.jobs.start_scrub(false),
            Err(StartError::Stopping)
        ));
    }

    #[test]
    fn a_stopped_scrub_resumes_from_its_checkpoint() {
        let s = setup(8 * MIB, MIB);
        let scrub = s.jobs.start_scrub(false).expect("a scrub starts");
        // The checkpoint is saved every two seconds, with a progress event.
        let done = next(&s.events, "JOB_PROGRESS", |e| match e {
            Event::JobProgress { bytes_done, .. } => Some(bytes_done),
            _ => None,
        });
        assert!(done > 0);
        assert!(s.jobs.stop().is_empty(), "a pausing scrub stops at once");
        let saved = s.jobs.get(scrub.id).expect("listed");
        assert_eq!(saved.state, JobState::Running);
        let again = Jobs::start(
            s.volume.clone(),
            Arc::new(quorum_core::NullSink),
            Arc::new(Telemetry::new([("vm", vec!["a", "b", "c"])])),
            s._dir.path(),
            64 * MIB,
            ResyncConfig {
                rate: MIB,
                on_synced: Arc::new(|_: &Volume| {}),
            },
        )
        .expect("start again");
        let resumed = again.get(scrub.id).expect("the scrub is still there");
        assert_eq!(resumed.state, JobState::Running);
        assert!(resumed.bytes_done >= done, "it started over: {resumed:?}");
        assert!(again.stop().is_empty());
    }

    #[test]
    fn the_resync_wakes_for_a_new_stale_range() {
        let s = setup(MIB, 64 * MIB);
        let list = s.jobs.list();
        assert!(
            matches!(&list[0], JobStatus::Resync(r) if r.state == JobState::Idle),
            "{list:?}"
        );
        // Idle, the resync waits for work with no timeout: only the
        // volume's bell can start it.
        s.volume
            .mark_stale("b", std::slice::from_ref(&(0..64 * 1024)))
            .expect("mark stale");
        let (child, to) = next(&s.events, "CHILD_STATE_CHANGE", |e| match e {
            Event::ChildStateChange { child, to, .. } => Some((child, to)),
            _ => None,
        });
        assert_eq!((child.as_str(), to), ("b", ChildState::Healthy));
        assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
        let list = s.jobs.list();
        assert!(
            matches!(&list[0], JobStatus::Resync(r) if r.bytes_done == 64 * 1024),
            "{list:?}"
        );
        // A pause and a resume on the way do not lose the ring.
        assert!(s.jobs.pause(RESYNC_ID));
        s.volume
            .mark_stale("c", std::slice::from_ref(&(0..4096)))
            .expect("mark stale");
        assert!(s.jobs.resume(RESYNC_ID));
        let (child, _) = next(&s.events, "CHILD_STATE_CHANGE", |e| match e {
            Event::ChildStateChange { child, to, .. } => Some((child, to)),
            _ => None,
        });
        assert_eq!(child, "c");
        assert!(s.jobs.stop().is_empty());
    }
}
