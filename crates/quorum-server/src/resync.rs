//! The resync worker: one thread per volume that copies the voted data over
//! the ranges its children missed ([`Volume::resync_step`]), a piece at a
//! time, at a bounded rate so that client I/O is not starved.
//!
//! It runs from start-up (the stale maps survive restarts, so a resync
//! interrupted by a crash goes on) until shutdown. When nothing is stale it
//! polls a few times a second; when a step fails (the stale child is still
//! down, or the others cannot reach the threshold) it backs off, doubling up
//! to a few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use quorum_core::Volume;

/// The most bytes one step copies (and holds locked against client I/O).
const STEP: u64 = 1 << 20;
/// How often an idle worker looks for stale ranges.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The longest back-off after failed steps.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A running resync worker.
pub struct Resync {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Resync {
    /// Starts the worker of `volume`, copying at most `rate` bytes a second.
    pub fn start(volume: Arc<Volume>, rate: u64) -> std::io::Result<Resync> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name(format!("resync-{}", volume.name()))
            .spawn(move || run(&volume, rate.max(1), &flag))?;
        Ok(Resync {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the worker after its current step.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(volume: &Volume, rate: u64, stop: &AtomicBool) {
    let mut backoff = IDLE_POLL;
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        let pause = match volume.resync_step(STEP) {
            Ok(Some((child, bytes))) => {
                backoff = IDLE_POLL;
                tracing::debug!(volume = volume.name(), %child, bytes, "resynced");
                // The rate limit: this step's bytes at `rate`, less its time.
                Duration::from_secs_f64(bytes as f64 / rate as f64)
                    .saturating_sub(started.elapsed())
            }
            Ok(None) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(volume = volume.name(), error = %e, "a resync step failed; retrying later");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        sleep_unless(stop, pause);
    }
}

/// Sleeps for `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}
