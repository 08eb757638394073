//! The error policy of a volume (SPEC 11, QEMU's `werror=stop` and DRBD's
//! `on-no-quorum suspend-io`): what a request that fails for lack of
//! quorum does.
//!
//! With `on_quorum_failure = "report"` (the default) it fails, as SPEC 5
//! says. With `"suspend"` it is held instead, the volume becomes
//! `suspended` (event `VOLUME_SUSPENDED`, with the failure as its cause),
//! and every later request of the volume is held too, before it reaches
//! the engine. Then either:
//!
//! - an operator resumes the volume (`POST .../resume`, event
//!   `VOLUME_RESUMED` by `operator`): the held requests are retried one
//!   after the other, in the order they were held (the failed ones were
//!   held first); requests that arrive meanwhile queue behind them. A retry
//!   that fails for lack of quorum again suspends the volume again, with
//!   that request first in line. Once the line is empty the volume runs as
//!   before; or
//! - `suspend_timeout` passes (`VOLUME_RESUMED` by `timeout`): every held
//!   request fails, those that ran with their own error, those that never
//!   ran with an error that names the suspension's cause, and the volume
//!   runs again (the next failure suspends it again).
//!
//! At shutdown ([`Suspension::shut_down`]) no resume can come: the held
//! requests fail at once, as at the timeout (`VOLUME_RESUMED` by
//! `shutdown`), and a request that fails for lack of quorum from then on
//! fails instead of being held, so that the server stops within its drain
//! deadline and every client gets an answer.
//!
//! So a client never sees an I/O error for a replica outage that ends
//! within the timeout. Only an outage suspends: a vote whose children
//! answered but disagree (no version reached the threshold) is reported,
//! since no retry would change it.
//!
//! A held request holds nothing but its memory (its budget reservation):
//! no thread, no lock, no gate; membership changes go on meanwhile, so a
//! replica can be replaced while the volume is suspended. A held request
//! whose client goes away leaves the line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use quorum_core::{Event, EventSink, QuorumError, ResumedBy};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};
use tokio::sync::oneshot;

pub use errors::{NotSuspended, Unresumed};

/// `suspend_timeout` when the config does not say.
pub const DEFAULT_SUSPEND_TIMEOUT: Duration = Duration::from_secs(300);

/// What a request that fails for lack of quorum does; its one string form
/// is the config's `on_quorum_failure`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorPolicy {
    /// It fails (SPEC 5).
    #[default]
    Report,
    /// It is held, and the volume suspended.
    Suspend,
}

impl ErrorPolicy {
    /// `report` or `suspend`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether a volume serves; its one string form is the `state` of
/// `GET /v1/volumes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum VolumeState {
    /// Requests go to the engine.
    Running,
    /// Requests are held.
    Suspended,
    /// Resumed: the held requests are being retried in order, and new ones
    /// queue behind them.
    Resuming,
}

impl VolumeState {
    /// `running`, `suspended` or `resuming`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A suspension as the API shows it.
#[derive(Debug, Clone)]
pub struct Suspended {
    /// The failure that suspended the volume.
    pub cause: Arc<str>,
    /// When.
    pub since: SystemTime,
    /// When the held requests fail unless the volume is resumed.
    pub fails_at: SystemTime,
    /// How many requests are held.
    pub held: usize,
}

/// What a held request is told.
enum Verdict {
    /// Run again; the holder of the [`Turn`] is the one request that runs
    /// while the line is retried.
    Retry(Turn),
    /// Fail: the volume was not resumed in time after this cause.
    Fail(Arc<str>),
    /// Fail: the server is shutting down (the volume was suspended after
    /// this cause).
    ShutDown(Arc<str>),
}

/// What [`Suspension::hold`] and [`Suspension::admit`] come back with.
pub enum Released {
    /// Run (again), holding the turn until done.
    Retry(Turn),
    /// Fail; the error says why.
    Failed(Unresumed),
}

/// The right to run while the held requests are retried in order. Dropped
/// (the request done, or its client gone), it passes to the next in line.
pub struct Turn {
    suspension: Arc<Suspension>,
    armed: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.armed {
            self.suspension.release_next();
        }
    }
}

enum Phase {
    Running,
    Suspended {
        cause: Arc<str>,
        since: SystemTime,
        /// Tells the timer which suspension it was set for.
        generation: u64,
    },
    Resuming,
}

struct Inner {
    phase: Phase,
    held: VecDeque<oneshot::Sender<Verdict>>,
    generation: u64,
    timer: Option<tokio::task::AbortHandle>,
    /// The server is shutting down: nothing is held any more.
    closing: bool,
}

/// The error policy of one volume and its suspension, if any.
pub struct Suspension {
    volume: String,
    policy: ErrorPolicy,
    timeout: Duration,
    sink: Arc<dyn EventSink>,
    inner: Mutex<Inner>,
}

impl Suspension {
    /// The policy of `volume`; its events go to `sink`.
    pub fn new(
        volume: &str,
        policy: ErrorPolicy,
        timeout: Duration,
        sink: Arc<dyn EventSink>,
    ) -> Suspension {
        Suspension {
            volume: volume.to_owned(),
            policy,
            timeout,
            sink,
            inner: Mutex::new(Inner {
                phase: Phase::Running,
                held: VecDeque::new(),
                generation: 0,
                timer: None,
                closing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The line without the requests whose client went away: they are
    /// neither counted nor kept (a client that retries while the volume is
    /// suspended would otherwise add one each time).
    fn line(inner: &mut Inner) -> &mut VecDeque<oneshot::Sender<Verdict>> {
        inner.held.retain(|tx| !tx.is_closed());
        &mut inner.held
    }

    /// The volume's error policy.
    pub fn policy(&self) -> ErrorPolicy {
        self.policy
    }

    /// How long held requests wait for a resume.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `error` holds the request under this policy: a quorum that
    /// too few children answered (an outage), on a volume that suspends.
    pub fn holds(&self, error: &QuorumError) -> bool {
        self.policy == ErrorPolicy::Suspend && error.no_majority.is_none()
    }

    /// The volume's state.
    pub fn state(&self) -> VolumeState {
        match self.lock().phase {
            Phase::Running => VolumeState::Running,
            Phase::Suspended { .. } => VolumeState::Suspended,
            Phase::Resuming => VolumeState::Resuming,
        }
    }

    /// The suspension, while there is one.
    pub fn suspended(&self) -> Option<Suspended> {
        let mut inner = self.lock();
        let held = Self::line(&mut inner).len();
        match &inner.phase {
            Phase::Suspended { cause, since, .. } => Some(Suspended {
                cause: cause.clone(),
                since: *since,
                fails_at: *since + self.timeout,
                held,
            }),
            Phase::Running | Phase::Resuming => None,
        }
    }

    /// Lets a new request through at once while the volume runs;
    /// otherwise holds it at the end of the line.
    pub async fn admit(self: &Arc<Self>) -> Option<Released> {
        let rx = {
            let mut inner = self.lock();
            if matches!(inner.phase, Phase::Running) {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            Self::line(&mut inner).push_back(tx);
            rx
        };
        Some(self.wait(rx).await)
    }

    /// Holds a request that failed with `error` (which [`Self::holds`]):
    /// suspends the volume if it is not suspended, and puts the request
    /// in line: first if it held the `turn` (it is the oldest), else last.
    pub async fn hold(self: &Arc<Self>, turn: Option<Turn>, error: &QuorumError) -> Released {
        let (tx, rx) = oneshot::channel();
        let suspended = {
            let mut inner = self.lock();
            if inner.closing {
                // The turn, if any, passes on as the request ends.
                return Released::Failed(Unresumed::ShuttingDown {
                    volume: self.volume.clone(),
                    cause: error.to_string().into(),
                });
            }
            let first = turn.is_some();
            if let Some(mut turn) = turn {
                turn.armed = false;
            }
            let suspended = !matches!(inner.phase, Phase::Suspended { .. });
            if suspended {
                inner.generation += 1;
                let generation = inner.generation;
                inner.phase = Phase::Suspended {
                    cause: error.to_string().into(),
                    since: SystemTime::now(),
                    generation,
                };
                let weak = Arc::downgrade(self);
                let timeout = self.timeout;
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    if let Some(s) = Weak::upgrade(&weak) {
                        s.expire(generation);
                    }
                });
                if let Some(old) = inner.timer.replace(timer.abort_handle()) {
                    old.abort();
                }
            }
            let line = Self::line(&mut inner);
            if first {
                line.push_front(tx);
            } else {
                line.push_back(tx);
            }
            suspended
        };
        if suspended {
            tracing::warn!(volume = self.volume, cause = %error, timeout = ?self.timeout, "quorum failure: the volume is suspended; its requests are held until POST /v1/volumes/{}/resume or the timeout", self.volume);
            self.sink.emit(
                &self.volume,
                Event::VolumeSuspended {
                    op: error.op,
                    offset: error.offset,
                    bytes: error.bytes,
                    cause: error.to_string(),
                },
            );
        }
        self.wait(rx).await
    }

    async fn wait(self: &Arc<Self>, rx: oneshot::Receiver<Verdict>) -> Released {
        let cause = match rx.await {
            Ok(Verdict::Retry(turn)) => return Released::Retry(turn),
            Ok(Verdict::Fail(cause)) => cause,
            Ok(Verdict::ShutDown(cause)) => {
                return Released::Failed(Unresumed::ShuttingDown {
                    volume: self.volume.clone(),
                    cause,
                });
            }
            // Not told: the volume is gone.
            Err(_) => "the volume closed".into(),
        };
        Released::Failed(Unresumed::Timeout {
            volume: self.volume.clone(),
            cause,
            timeout: self.timeout,
        })
    }

    /// Resumes a suspended volume: its held requests are retried in
    /// order. Returns how many were held.
    ///
    /// # Errors
    /// The volume is not suspended.
    pub fn resume(self: &Arc<Self>) -> Result<usize, NotSuspended> {
        let held = {
            let mut inner = self.lock();
            if !matches!(inner.phase, Phase::Suspended { .. }) {
                drop(inner);
                return Err(NotSuspended {
                    volume: self.volume.clone(),
                    state: self.state(),
                });
            }
            inner.phase = Phase::Resuming;
            if let Some(timer) = inner.timer.take() {
                timer.abort();
            }
            Self::line(&mut inner).len()
        };
        tracing::info!(
            volume = self.volume,
            held,
            "resumed: retrying the held requests in order"
        );
        self.sink.emit(
            &self.volume,
            Event::VolumeResumed {
                by: ResumedBy::Operator,
                held: held as u64,
            },
        );
        self.release_next();
        Ok(held)
    }

    /// While resuming, hands the turn to the next request in line whose
    /// client is still there; with none left, the volume runs.
    fn release_next(self: &Arc<Self>) {
        loop {
            let next = {
                let mut inner = self.lock();
                if !matches!(inner.phase, Phase::Resuming) {
                    return;
                }
                match inner.held.pop_front() {
                    Some(next) => next,
                    None => {
                        inner.phase = Phase::Running;
                        tracing::info!(
                            volume = self.volume,
                            "the held requests are done; the volume runs"
                        );
                        return;
                    }
                }
            };
            let turn = Turn {
                suspension: self.clone(),
                armed: true,
            };
            match next.send(Verdict::Retry(turn)) {
                Ok(()) => return,
                Err(Verdict::Retry(mut turn)) => turn.armed = false,
                Err(Verdict::Fail(_) | Verdict::ShutDown(_)) => {}
            }
        }
    }

    /// At shutdown: the held requests fail at once (a resume cannot come),
    /// and from now on a request that fails for lack of quorum fails
    /// rather than being held.
    pub fn shut_down(&self) {
        let (cause, held) = {
            let mut inner = self.lock();
            inner.closing = true;
            if let Some(timer) = inner.timer.take() {
                timer.abort();
            }
            let cause = match std::mem::replace(&mut inner.phase, Phase::Running) {
                Phase::Suspended { cause, .. } => cause,
                Phase::Resuming => "a quorum failure before the resume".into(),
                Phase::Running => return,
            };
            let held = std::mem::take(Self::line(&mut inner));
            let n = held.len();
            for tx in held {
                let _ = tx.send(Verdict::ShutDown(cause.clone()));
            }
            (cause, n)
        };
        tracing::warn!(volume = self.volume, held, %cause, "shutting down while suspended: the held requests fail");
        self.sink.emit(
            &self.volume,
            Event::VolumeResumed {
                by: ResumedBy::Shutdown,
                held: held as u64,
            },
        );
    }

    /// The timeout of suspension `generation`: if it still holds, every
    /// held request fails and the volume runs again.
    fn expire(&self, generation: u64) {
        let held = {
            let mut inner = self.lock();
            let cause = match &inner.phase {
                Phase::Suspended {
                    cause,
                    generation: g,
                    ..
                } if *g == generation => cause.clone(),
                _ => return,
            };
            inner.timer = None;
            inner.phase = Phase::Running;
            let held = std::mem::take(Self::line(&mut inner));
            let n = held.len();
            for tx in held {
                let _ = tx.send(Verdict::Fail(cause.clone()));
            }
            n
        };
        tracing::error!(volume = self.volume, held, timeout = ?self.timeout, "the suspended volume was not resumed in time: its held requests fail");
        self.sink.emit(
            &self.volume,
            Event::VolumeResumed {
                by: ResumedBy::Timeout,
                held: held as u64,
            },
        );
    }
}

mod errors;
#[cfg(test)]
mod tests;
