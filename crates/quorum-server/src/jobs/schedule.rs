//! Scheduled scrubs (`scrub_interval = "7d"`), like mdadm's monthly
//! `checkarray` or a ZFS scrub timer.
//!
//! A volume's [`ScrubClock`] knows when its last scrub completed: it
//! watches the jobs' events ([`ClockedSink`] sits between the jobs and the
//! event log) and saves the time in `data_dir/scrubs/<volume>.json`, so a
//! restart does not reset it. Any scrub that completes counts, one started
//! through the API too; a cancelled or failed one does not.
//!
//! The [`ScrubScheduler`] is a background [`Worker`] of the usual shape: it
//! waits on its inbox with a deadline (when the next scrub is due), never
//! polling; at the deadline it starts a scrub that repairs (as a ZFS scrub
//! does: quorum knows the right data wherever a majority agrees), then
//! waits, with no deadline, for the end of that scrub (the clock rings it).
//! A scrub is due one interval after the last completed one; with none
//! yet, one interval after the schedule was first seen (also saved). A
//! scrub that ends without completing is tried again a retry interval
//! later (the interval, at most an hour), not at once. One already running
//! when a scrub is due (started through the API) is waited for instead.
//!
//! `quorum_last_scrub_timestamp_seconds{volume}` is the last completed
//! scrub's time, or, on a scheduled volume that has completed none yet,
//! when the schedule began: so an alert on
//! `time() - quorum_last_scrub_timestamp_seconds > 2 *
//! quorum_scrub_interval_seconds` fires for a volume whose scrubs never
//! complete as well as for one whose scrubs stopped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{Event, EventSink, JobKind, JobState};
use serde::{Deserialize, Serialize};

use super::{Jobs, StartError};
use crate::background::{Bell, Inbox, Wake, Worker, WorkerState};

/// The longest wait before a scrub that did not complete is tried again.
const RETRY_AT_MOST: Duration = Duration::from_secs(3600);
/// The wait before trying again while the jobs are being restarted (a
/// membership change).
const STOPPING_RETRY: Duration = Duration::from_secs(1);

/// What is saved of a volume's scrubs.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Saved {
    /// When the last scrub completed (RFC 3339).
    #[serde(default)]
    last_completed: Option<String>,
    /// When the schedule was first seen (RFC 3339).
    #[serde(default)]
    scheduled_since: Option<String>,
}

struct Times {
    last_completed: Option<SystemTime>,
    scheduled_since: Option<SystemTime>,
    bell: Option<Bell>,
}

/// When a volume's scrubs last completed, saved under `data_dir`.
pub struct ScrubClock {
    volume: String,
    path: PathBuf,
    interval: Option<Duration>,
    times: Mutex<Times>,
}

impl ScrubClock {
    /// The clock of `volume`, read from `data_dir`; `interval` is its
    /// schedule, if it has one (its start is saved the first time).
    ///
    /// # Errors
    /// The file exists and cannot be read, or the start of a new schedule
    /// cannot be saved.
    pub fn load(
        data_dir: &Path,
        volume: &str,
        interval: Option<Duration>,
    ) -> std::io::Result<ScrubClock> {
        let path = data_dir.join("scrubs").join(format!("{volume}.json"));
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable scrub clock");
                Saved::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        // A time ahead of the clock (saved before the clock was set back)
        // is taken as now, and saved so: scrubs would otherwise stop until
        // the clock passes it, with the staleness alert quiet meanwhile.
        let now = to_millis(SystemTime::now());
        let mut changed = false;
        let mut time = |t: &Option<String>| {
            let t = t
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())?;
            if t > now {
                tracing::warn!(file = %path.display(), saved = %humantime::format_rfc3339_millis(t), "a scrub time is ahead of the clock; taking it as now");
                changed = true;
            }
            Some(t.min(now))
        };
        let times = Times {
            last_completed: time(&saved.last_completed),
            scheduled_since: time(&saved.scheduled_since),
            bell: None,
        };
        let clock = ScrubClock {
            volume: volume.to_owned(),
            path,
            interval,
            times: Mutex::new(times),
        };
        if interval.is_some() && clock.lock().scheduled_since.is_none() {
            clock.lock().scheduled_since = Some(to_millis(SystemTime::now()));
            changed = true;
        }
        if changed {
            clock.save()?;
        }
        Ok(clock)
    }

    fn lock(&self) -> MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schedule, if the volume has one.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// When the last scrub completed.
    pub fn last_completed(&self) -> Option<SystemTime> {
        self.lock().last_completed
    }

    /// What `quorum_last_scrub_timestamp_seconds` says: the last completed
    /// scrub, or the start of the schedule if none has completed.
    pub fn last_or_since(&self) -> Option<SystemTime> {
        let times = self.lock();
        times.last_completed.or(times.scheduled_since)
    }

    /// When the next scheduled scrub is due, if the volume has a schedule.
    pub fn next_due(&self) -> Option<SystemTime> {
        Some(self.last_or_since()? + self.interval?)
    }

    /// Rings `bell` whenever a scrub ends (the scheduler's, while it runs).
    pub fn listen(&self, bell: Option<Bell>) {
        self.lock().bell = bell;
    }

    /// Takes the end of a scrub: saves the time if it completed, and tells
    /// the scheduler either way.
    fn scrub_ended(&self, state: JobState) {
        let bell = {
            let mut times = self.lock();
            if state == JobState::Completed {
                times.last_completed = Some(to_millis(SystemTime::now()));
            }
            times.bell.clone()
        };
        if state == JobState::Completed {
            if let Err(e) = self.save() {
                tracing::error!(volume = self.volume, file = %self.path.display(), error = %e, "cannot save the time of the last scrub; a restart would think it older");
            }
        }
        if let Some(bell) = bell {
            bell.ring();
        }
    }

    /// Writes the clock atomically.
    fn save(&self) -> std::io::Result<()> {
        let format =
            |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_millis(t).to_string());
        let saved = {
            let times = self.lock();
            Saved {
                last_completed: format(times.last_completed),
                scheduled_since: format(times.scheduled_since),
            }
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// `t` to the millisecond, as the file keeps it: what the metric says
/// before a restart it says after.
fn to_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The sink of a volume's jobs: forwards every event, and tells the clock
/// when a scrub ends.
pub struct ClockedSink {
    /// Where the events go.
    pub inner: Arc<dyn EventSink>,
    /// The clock told.
    pub clock: Arc<ScrubClock>,
}

impl EventSink for ClockedSink {
    fn emit(&self, volume: &str, event: Event) {
        if let Event::JobCompleted {
            kind: JobKind::Scrub,
            state,
            ..
        } = &event
        {
            self.clock.scrub_ended(*state);
        }
        self.inner.emit(volume, event);
    }
}

/// Starts a volume's scrubs when they are due. See the module docs.
pub struct ScrubScheduler {
    clock: Arc<ScrubClock>,
    interval: Duration,
    jobs: Arc<Mutex<Arc<Jobs>>>,
    /// When it last started a scrub.
    last_attempt: Option<SystemTime>,
    /// A scrub runs: wait for its end, with no deadline.
    waiting_for_scrub: bool,
}

impl ScrubScheduler {
    /// The scheduler of the volume whose clock is `clock` and whose
    /// current jobs are in `jobs` (swapped by membership changes).
    pub fn new(clock: Arc<ScrubClock>, interval: Duration, jobs: Arc<Mutex<Arc<Jobs>>>) -> Self {
        ScrubScheduler {
            clock,
            interval,
            jobs,
            last_attempt: None,
            waiting_for_scrub: false,
        }
    }

    /// When the next scrub is due.
    fn due(&self) -> SystemTime {
        let on_schedule = self
            .clock
            .next_due()
            .unwrap_or_else(|| SystemTime::now() + self.interval);
        match self.last_attempt {
            Some(at) => on_schedule.max(at + self.interval.min(RETRY_AT_MOST)),
            None => on_schedule,
        }
    }
}

impl Worker for ScrubScheduler {
    type Command = ();
    type Status = ();

    fn name(&self) -> String {
        format!("scrub-schedule-{}", self.clock.volume)
    }

    fn status(&self) {}

    fn work(&mut self) -> WorkerState {
        if SystemTime::now() < self.due() {
            return WorkerState::Idle;
        }
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match jobs.start_scrub(true) {
            Ok(job) => {
                tracing::info!(volume = self.clock.volume, job = job.id, interval = ?self.interval, "scheduled scrub started");
                self.last_attempt = Some(SystemTime::now());
                self.waiting_for_scrub = true;
                WorkerState::Idle
            }
            Err(StartError::Running(id)) => {
                tracing::debug!(
                    volume = self.clock.volume,
                    job = id,
                    "a scrub is due and one runs: waiting for it"
                );
                self.waiting_for_scrub = true;
                WorkerState::Idle
            }
            Err(StartError::Stopping) => WorkerState::Throttled(STOPPING_RETRY),
        }
    }

    fn wait_for_work(&mut self, inbox: &Inbox<()>) -> WorkerState {
        let until = (!self.waiting_for_scrub).then(|| {
            let left = self
                .due()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        match inbox.wait(until) {
            Wake::TimedOut => WorkerState::Busy,
            Wake::Rung => {
                self.waiting_for_scrub = false;
                WorkerState::Busy
            }
            Wake::Command | Wake::Stop => WorkerState::Idle,
        }
    }

    fn command(&mut self, (): ()) -> Option<WorkerState> {
        None
    }
}

impl Drop for ScrubScheduler {
    fn drop(&mut self) {
        self.clock.listen(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_survives_a_reload_and_counts_completed_scrubs_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let week = Duration::from_secs(7 * 86400);
        let clock = ScrubClock::load(dir.path(), "vm", Some(week)).expect("load");
        let since = clock.last_or_since().expect("the schedule's start");
        assert_eq!(clock.last_completed(), None);
        assert_eq!(clock.next_due(), Some(since + week));
        clock.scrub_ended(JobState::Cancelled);
        assert_eq!(clock.last_completed(), None);
        clock.scrub_ended(JobState::Completed);
        let last = clock.last_completed().expect("completed");
        assert!(last >= since);
        let again = ScrubClock::load(dir.path(), "vm", Some(week)).expect("reload");
        assert_eq!(again.last_completed(), Some(last));
        assert_eq!(again.next_due(), Some(last + week));
        let unscheduled = ScrubClock::load(dir.path(), "other", None).expect("load");
        assert_eq!(unscheduled.last_or_since(), None);
        assert_eq!(unscheduled.next_due(), None);
    }

    /// Times saved while the clock was ahead (then set back) are taken as
    /// now: otherwise no scrub would be due until the clock passes them
    /// again, and the staleness alert, which subtracts them from now,
    /// could not fire meanwhile.
    #[test]
    fn a_time_saved_ahead_of_the_clock_counts_as_now() {
        let dir = tempfile::tempdir().expect("temp dir");
        let week = Duration::from_secs(7 * 86400);
        std::fs::create_dir_all(dir.path().join("scrubs")).expect("mkdir");
        std::fs::write(
            dir.path().join("scrubs/vm.json"),
            r#"{"last_completed": "2100-01-01T00:00:00.000Z", "scheduled_since": "2099-01-01T00:00:00.000Z"}"#,
        )
        .expect("write");
        let before = SystemTime::now();
        let clock = ScrubClock::load(dir.path(), "vm", Some(week)).expect("load");
        let after = SystemTime::now() + Duration::from_millis(1);
        let last = clock.last_or_since().expect("a time");
        assert!(last >= to_millis(before) && last <= after, "{last:?}");
        let due = clock.next_due().expect("due");
        assert!(due <= after + week, "{due:?}");
        let reloaded = ScrubClock::load(dir.path(), "vm", Some(week)).expect("reload");
        assert_eq!(reloaded.last_or_since(), Some(last), "saved as now");
        // A time in the past stays as it was.
        clock.scrub_ended(JobState::Completed);
        let done = clock.last_completed().expect("completed");
        let again = ScrubClock::load(dir.path(), "vm", Some(week)).expect("reload");
        assert_eq!(again.last_completed(), Some(done));
    }

    #[test]
    fn an_unscheduled_volume_has_no_times() {
        let dir = tempfile::tempdir().expect("temp dir");
        let unscheduled = ScrubClock::load(dir.path(), "other", None).expect("load");
        assert_eq!(unscheduled.last_or_since(), None);
        assert_eq!(unscheduled.next_due(), None);
    }
}
