//! A child: as given to [`Volume::open`], as the volume keeps it, and as
//! the API lists it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize};

use crate::backend::Backend;
use crate::breaker::Breaker;
use crate::child_state::ChildState;
use crate::worker::Workers;

#[cfg(doc)]
use super::Volume;

/// One child as given to [`Volume::open`].
pub struct ChildSpec {
    /// Its name in events and metrics.
    pub name: String,
    /// Where its copy lives.
    pub backend: Arc<dyn Backend>,
    /// Its calls abandoned past `child_timeout` that have not returned,
    /// shared by every volume opened over this backend (a membership change
    /// opens a new one), so that none sends it anything meanwhile.
    pub(super) late: Arc<AtomicUsize>,
    /// Its flushes that failed with an I/O error, shared the same way (see
    /// [`Workers::flush_errors`]).
    pub(super) flush_errors: Arc<AtomicU64>,
}

impl ChildSpec {
    /// A child named `name` over `backend`.
    pub fn new(name: impl Into<String>, backend: Arc<dyn Backend>) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            backend,
            late: Arc::default(),
            flush_errors: Arc::default(),
        }
    }
}

/// A child as the API lists it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Its name.
    pub name: String,
    /// Its backend kind.
    pub backend: &'static str,
    /// Its state.
    pub state: ChildState,
    /// Bytes it has stale (missed writes not yet resynced).
    pub stale_bytes: u64,
    /// Bytes it has damaged (lost votes or failed reads, not repaired
    /// yet; see [`Volume::damage`]).
    pub damaged_bytes: u64,
}

/// A child as the volume keeps it.
pub(super) struct Child {
    pub(super) name: String,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) workers: Workers,
    /// [`HEALTHY`] or [`FAILED`], as its last request went.
    pub(super) state: AtomicU8,
    pub(super) breaker: Breaker,
}

pub(super) const HEALTHY: u8 = 0;

pub(super) const FAILED: u8 = 1;
