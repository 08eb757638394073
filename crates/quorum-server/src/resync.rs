//! The resync worker: one thread per volume that copies the voted data over
//! the ranges its children missed ([`Volume::resync_step`]), a piece at a
//! time, at a bounded rate so that client I/O is not starved.
//!
//! It runs from start-up (the stale maps survive restarts, so a resync
//! interrupted by a crash goes on) until shutdown. When nothing is stale it
//! polls a few times a second; when a step fails (the stale child is still
//! down, or the others cannot reach the threshold) it backs off, doubling up
//! to a few seconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use quorum_core::{ChildState, Event, EventSink, JobKind, ResyncStep, Volume};

use crate::telemetry::Telemetry;

/// The most bytes one step copies (and holds locked against client I/O).
const STEP: u64 = 1 << 20;
/// How often an idle worker looks for stale ranges.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The longest back-off after failed steps.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the worker has done, for the jobs list.
#[derive(Default)]
struct Progress {
    copied: AtomicU64,
    /// When the current busy spell began, and `copied` then.
    spell: Mutex<Option<(Instant, u64)>>,
}

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

/// A running resync worker.
pub struct Resync {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    handle: Option<JoinHandle<()>>,
}

impl Resync {
    /// Starts the worker of `volume`, copying at most `config.rate` bytes a
    /// second.
    pub fn start(
        volume: Arc<Volume>,
        telemetry: Arc<Telemetry>,
        sink: Arc<dyn EventSink>,
        config: ResyncConfig,
    ) -> std::io::Result<Resync> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let (flag, p) = (stop.clone(), progress.clone());
        let handle = thread::Builder::new()
            .name(format!("resync-{}", volume.name()))
            .spawn(move || run(&volume, &telemetry, &*sink, &config, &flag, &p))?;
        Ok(Resync {
            stop,
            progress,
            handle: Some(handle),
        })
    }

    /// Bytes copied since start, and the rate of the current busy spell
    /// (bytes a second, 0 when idle).
    pub fn progress(&self) -> (u64, f64) {
        let copied = self.progress.copied.load(Ordering::Relaxed);
        let spell = *self
            .progress
            .spell
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rate = spell.map_or(0.0, |(since, from)| {
            let secs = since.elapsed().as_secs_f64();
            if secs > 0.0 {
                (copied - from) as f64 / secs
            } else {
                0.0
            }
        });
        (copied, rate)
    }

    /// Stops the worker after its current step.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    volume: &Volume,
    telemetry: &Telemetry,
    sink: &dyn EventSink,
    config: &ResyncConfig,
    stop: &AtomicBool,
    progress: &Progress,
) {
    let rate = config.rate.max(4096);
    let mut backoff = IDLE_POLL;
    let mut failures = 0u32;
    // Where to look next: past each range tried, so that a range that cannot
    // be copied yet does not hold up the others.
    let mut from = 0;
    let mut behind = lagging(volume);
    while !stop.load(Ordering::Acquire) {
        behind = announce_caught_up(volume, sink, &config.on_synced, behind);
        let started = Instant::now();
        let pause = match volume.resync_step(STEP, from) {
            ResyncStep::Copied { child, range, next } => {
                backoff = IDLE_POLL;
                failures = 0;
                from = next;
                let bytes = range.end - range.start;
                let before = progress.copied.fetch_add(bytes, Ordering::Relaxed);
                progress
                    .spell
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert((started, before));
                telemetry.job_bytes(volume.name(), JobKind::Resync, bytes);
                tracing::debug!(volume = volume.name(), %child, bytes, "resynced");
                pace(bytes, rate, started)
            }
            ResyncStep::Idle => {
                from = 0;
                *progress
                    .spell
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                IDLE_POLL
            }
            ResyncStep::Failed {
                child,
                range,
                error,
            } => {
                tracing::warn!(volume = volume.name(), %child, offset = range.start, bytes = range.end - range.start, %error, "a resync step failed; retrying later");
                from = range.end;
                // Go round the other ranges at once; back off only when
                // failures keep coming.
                failures += 1;
                if failures < 4 {
                    Duration::from_millis(20)
                } else {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            }
        };
        sleep_unless(&[stop], pause);
    }
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
/// stale any more (copied by the resync, or rewritten by clients), and
/// returns the children still behind.
fn announce_caught_up(
    volume: &Volume,
    sink: &dyn EventSink,
    on_synced: &OnSynced,
    before: Vec<(String, ChildState)>,
) -> Vec<(String, ChildState)> {
    let now = volume.children();
    for (child, state) in before {
        if now.iter().any(|c| c.name == child && c.stale_bytes == 0) {
            let from = if volume.done_syncing(&child) {
                on_synced(volume);
                ChildState::Syncing
            } else {
                state
            };
            tracing::info!(volume = volume.name(), %child, %from, "child caught up");
            sink.emit(
                volume.name(),
                Event::ChildStateChange {
                    child,
                    from,
                    to: ChildState::Healthy,
                },
            );
        }
    }
    lagging(volume)
}

/// The rate limit: how long to pause after a step of `bytes` begun at
/// `started`, so that steps go at `rate` bytes a second at most.
pub(crate) fn pace(bytes: u64, rate: u64, started: Instant) -> Duration {
    Duration::from_secs_f64(bytes as f64 / rate as f64).saturating_sub(started.elapsed())
}

/// Sleeps for `d`, waking early when any of `flags` is set.
pub(crate) fn sleep_unless(flags: &[&AtomicBool], d: Duration) {
    let until = Instant::now() + d;
    while !flags.iter().any(|f| f.load(Ordering::Acquire)) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}
