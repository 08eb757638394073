//! The one path of a data request through a volume, HTTP and NBD alike:
//! [`VolumeEntry::io`].
//!
//! In order: the I/O limits (the request waits on a tokio timer until its
//! buckets allow it, [`crate::throttle`]; an HTTP write waits there before
//! its body is read, then comes in by [`VolumeEntry::io_admitted`]); the error policy (while the
//! volume is suspended the request is held, [`crate::suspend`]); the engine
//! call with the membership gate held (a read or write that the engine can
//! start without a blocking thread through [`bridge::started`], anything else on
//! the blocking pool through [`blocking`] and [`VolumeEntry::run`]); then, if it failed for lack of quorum on a
//! volume that suspends, the hold and the retry; and last the request is
//! counted in the volume's statistics ([`crate::stats`]). Nothing here
//! blocks an async worker: every wait is a future, and the engine call is
//! the bridge's.

use std::sync::Arc;
use std::time::Instant;

use quorum_core::{Op, Volume, VolumeError};

use crate::bridge::{self, Start, blocking};
use crate::error::ApiError;
use crate::membership::VolumeEntry;
use crate::stats::Outcome;
use crate::suspend::{Released, Unresumed};

/// Why a data request failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The engine's error (for a request that was held and never resumed,
    /// the error it failed with first).
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The request was held while the volume was suspended and never ran:
    /// the volume was not resumed in time.
    #[error(transparent)]
    Unresumed(#[from] Unresumed),
    /// The engine call could not run (it panicked).
    #[error(transparent)]
    Bridge(#[from] ApiError),
}

impl IoError {
    /// How the statistics count the request that failed with it.
    fn outcome(&self) -> Outcome {
        if self.is_invalid() {
            Outcome::Invalid
        } else {
            Outcome::Failed
        }
    }

    /// Whether the request was refused before it reached a child (outside
    /// the volume): its claimed length moved no byte, so no metric counts
    /// it as bytes.
    pub fn is_invalid(&self) -> bool {
        matches!(self, IoError::Volume(VolumeError::OutOfRange { .. }))
    }
}

/// The bytes a finished request of `bytes` moved, as metrics count them:
/// none when it was refused before it reached a child.
pub fn moved<T>(result: &Result<T, IoError>, bytes: u64) -> u64 {
    match result {
        Err(e) if e.is_invalid() => 0,
        _ => bytes,
    }
}

impl VolumeEntry {
    /// Serves one data request of `op` and `bytes`: `f` on the current
    /// volume, after the throttle and the suspension (see the module docs).
    /// `f` may run more than once: again after a resume, when its first
    /// run failed for lack of quorum on a volume that suspends.
    ///
    /// # Errors
    /// The engine's error, or a held request that the timeout failed.
    pub async fn io<T, F>(self: &Arc<Self>, op: Op, bytes: u64, f: F) -> Result<T, IoError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        self.controls().throttle.admit(op, bytes).await;
        self.serve(op, bytes, started, None, f).await
    }

    /// [`VolumeEntry::io`] of a read or write that the engine starts with
    /// `start` where it can do so without waiting, so that no thread of
    /// the blocking pool waits on it; `f` is the same request as a
    /// blocking call, made where it cannot.
    ///
    /// # Errors
    /// As [`VolumeEntry::io`].
    pub async fn io_started<T, F>(
        self: &Arc<Self>,
        op: Op,
        bytes: u64,
        start: Start<'_, T>,
        f: F,
    ) -> Result<T, IoError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        self.controls().throttle.admit(op, bytes).await;
        self.serve(op, bytes, started, Some(start), f).await
    }

    /// [`VolumeEntry::io_started`] of a request that arrived at `started`
    /// and that the throttle has let through already (an HTTP write,
    /// admitted before its body is read so that it waits holding no
    /// memory).
    ///
    /// # Errors
    /// As [`VolumeEntry::io`].
    pub async fn io_admitted<T, F>(
        self: &Arc<Self>,
        op: Op,
        bytes: u64,
        started: Instant,
        start: Start<'_, T>,
        f: F,
    ) -> Result<T, IoError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        self.serve(op, bytes, started, Some(start), f).await
    }

    /// The request past the throttle: the suspension, the engine call
    /// (started with `start` where it can be), the hold and retry, and the
    /// statistics.
    async fn serve<T, F>(
        self: &Arc<Self>,
        op: Op,
        bytes: u64,
        started: Instant,
        start: Option<Start<'_, T>>,
        f: F,
    ) -> Result<T, IoError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let controls = self.controls();
        let suspension = &controls.suspension;
        let mut turn = match suspension.admit().await {
            None => None,
            Some(Released::Retry(turn)) => Some(turn),
            Some(Released::Failed(e)) => {
                controls
                    .stats
                    .record(op, bytes, started.elapsed(), Outcome::Failed);
                return Err(e.into());
            }
        };
        let f = Arc::new(f);
        let result = loop {
            let call = {
                let f = f.clone();
                move |v: &Volume| f(v)
            };
            let attempt = match start {
                Some(start) => bridge::started(self, start, call).await,
                None => {
                    let entry = self.clone();
                    blocking(move || entry.run(call)).await
                }
            };
            match attempt {
                Ok(Err(VolumeError::Quorum(q))) if suspension.holds(&q) => {
                    match suspension.hold(turn.take(), &q).await {
                        Released::Retry(next) => turn = Some(next),
                        Released::Failed(_) => break Err(VolumeError::Quorum(q).into()),
                    }
                }
                Ok(result) => break result.map_err(IoError::from),
                Err(e) => break Err(e.into()),
            }
        };
        // The next held request goes once this one is done.
        drop(turn);
        let outcome = result
            .as_ref()
            .map_or_else(IoError::outcome, |_| Outcome::Done);
        controls.stats.record(op, bytes, started.elapsed(), outcome);
        result
    }
}
