//! Children that could not be opened at start, opened again in the
//! background.
//!
//! A volume starts without a child it cannot open when the others reach
//! its `vote_threshold` (`server.rs` says which children may be missing: a
//! remote of the config file that cannot be reached, or a child added at
//! run time). The missing child stands as an
//! [`Unopened`](quorum_backends::Unopened) backend: failed,
//! every call to it refused, every write it misses marked stale.
//!
//! A [`Reopener`] per volume tries to open such children again: the first
//! time a second after the start, then after a back-off that doubles while
//! it fails, up to [`LONGEST_RETRY`]. It is a [`Worker`]: between attempts
//! it pauses on its inbox (a wait with a deadline that a stop ends), one
//! attempt a step. An opened child takes the unopened one's place (a
//! membership change that keeps the membership, made between requests),
//! its stale ranges carry over, and the resync copies them. It is said by
//! `CHILD_STATE_CHANGE` from `failed` to `stale` (then the resync's
//! `stale` to `healthy`), or to `healthy` at once when it missed nothing.
//! A child removed meanwhile is forgotten.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use quorum_backends::{ChildSource, OpenError};
use quorum_core::{ChildInfo, ChildState, Event};

use crate::background::{Inbox, Runner, Wake, Worker, WorkerState};
use crate::membership::{MembershipError, VolumeEntry};

/// The wait before the first attempt after the start.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// A child that could not be opened at start.
#[derive(Debug, Clone)]
pub struct Unreached {
    /// Its name.
    pub child: String,
    /// Whether the config file names it (it is trusted, and created where
    /// missing), or it was added at run time (it is opened confined, and
    /// never created again).
    pub from_config: bool,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum ReopenError {
    /// It still cannot be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// It opened on storage another child uses.
    #[error(
        "volume {volume:?}, child {child:?} already uses that storage: one copy cannot have two votes"
    )]
    Claimed {
        /// The volume of the child that uses it.
        volume: String,
        /// That child.
        child: String,
    },
    /// It could not take the unopened one's place.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// A child waiting for its next attempt.
#[derive(Debug)]
struct Attempt {
    unreached: Unreached,
    /// Attempts that failed since the start.
    failures: u32,
    /// When the next one is due.
    at: Instant,
}

/// Opens a volume's unopened children again. See the module doc.
pub struct Reopener {
    volume: String,
    entry: Weak<VolumeEntry>,
    /// Every volume of the server, whose children's storage an opened
    /// child must not be.
    volumes: Vec<Weak<VolumeEntry>>,
    pending: Vec<Attempt>,
}

impl Reopener {
    /// Starts opening `children` of `entry` again, on a thread of their own
    /// that `entry` keeps until it stops. `volumes` are every volume of the
    /// server.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        entry: &Arc<VolumeEntry>,
        volumes: Vec<Weak<VolumeEntry>>,
        children: Vec<Unreached>,
    ) -> std::io::Result<()> {
        if children.is_empty() {
            return Ok(());
        }
        let at = Instant::now() + FIRST_RETRY;
        let worker = Reopener {
            volume: entry.volume().name().to_owned(),
            entry: Arc::downgrade(entry),
            volumes,
            pending: children
                .into_iter()
                .map(|unreached| Attempt {
                    unreached,
                    failures: 0,
                    at,
                })
                .collect(),
        };
        entry.set_reopener(Runner::spawn(worker, |()| {})?);
        Ok(())
    }

    /// Opens the child of `attempt` and puts it in place of its unopened
    /// one.
    fn open(&self, entry: &VolumeEntry, attempt: &Unreached) -> Result<ChildInfo, ReopenError> {
        let name = &attempt.child;
        let config = entry
            .child_config(name)
            .ok_or_else(|| MembershipError::NoSuchChild(name.clone()))?;
        let r = entry.rebuild();
        let backend = quorum_backends::open(ChildSource {
            uri: &config.uri,
            options: &config.options,
            base_dir: &r.base_dir,
            size: Some(entry.volume().size()),
            faults: &config.faults,
            mark: &r.mark,
            confine: (!attempt.from_config).then_some(&*r.confine),
            create: attempt.from_config,
        })?;
        let identity = backend.identity();
        for other in self.volumes.iter().filter_map(Weak::upgrade) {
            let volume = other.volume();
            if let Some(c) = volume
                .child_specs()
                .into_iter()
                .find(|c| c.backend.identity() == identity)
            {
                return Err(ReopenError::Claimed {
                    volume: volume.name().to_owned(),
                    child: c.name,
                });
            }
        }
        Ok(entry.replace_unopened(name, backend)?)
    }

    /// What comes after a step: a pause until the next attempt, or the end.
    fn next(&self) -> WorkerState {
        match self.pending.iter().map(|a| a.at).min() {
            Some(at) => WorkerState::Throttled(at.saturating_duration_since(Instant::now())),
            None => WorkerState::Done,
        }
    }
}

/// The wait after `failures` failed attempts: doubling from
/// [`FIRST_RETRY`], at most [`LONGEST_RETRY`].
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.min(8))
        .min(LONGEST_RETRY)
}

impl Worker for Reopener {
    type Command = ();
    type Status = ();

    fn name(&self) -> String {
        format!("reopen-{}", self.volume)
    }

    fn status(&self) {}

    fn work(&mut self) -> WorkerState {
        let Some(entry) = self.entry.upgrade() else {
            return WorkerState::Done;
        };
        let now = Instant::now();
        let due = (0..self.pending.len())
            .filter(|&i| self.pending[i].at <= now)
            .min_by_key(|&i| self.pending[i].at);
        let Some(i) = due else {
            return self.next();
        };
        let child = self.pending[i].unreached.child.clone();
        match self.open(&entry, &self.pending[i].unreached) {
            Ok(info) => {
                self.pending.remove(i);
                tracing::info!(volume = %self.volume, %child, state = %info.state, stale_bytes = info.stale_bytes, "a child that could not be opened at start is open; the resync copies what it missed");
                entry.rebuild().sink.emit(
                    &self.volume,
                    Event::ChildStateChange {
                        child,
                        from: ChildState::Failed,
                        to: info.state,
                    },
                );
            }
            Err(ReopenError::Membership(MembershipError::NoSuchChild(_))) => {
                self.pending.remove(i);
                tracing::info!(volume = %self.volume, %child, "a child that could not be opened at start was removed or replaced; no longer opened again");
            }
            Err(ReopenError::Membership(MembershipError::Closing)) => return WorkerState::Done,
            Err(e) => {
                let attempt = &mut self.pending[i];
                attempt.failures += 1;
                let wait = backoff(attempt.failures);
                attempt.at = Instant::now() + wait;
                tracing::warn!(volume = %self.volume, %child, error = %e, retry_in = ?wait, "a child still cannot be opened; the volume serves without it");
            }
        }
        self.next()
    }

    fn wait_for_work(&mut self, inbox: &Inbox<()>) -> WorkerState {
        match inbox.wait(None) {
            Wake::Rung => WorkerState::Busy,
            _ => WorkerState::Idle,
        }
    }

    fn command(&mut self, (): ()) -> Option<WorkerState> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_longest() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), LONGEST_RETRY);
    }
}
