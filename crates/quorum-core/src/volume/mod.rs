//! A volume: one virtual disk kept on N children, voted on every read.
//!
//! One type, [`Volume`], whose `impl` is spread over this module by
//! concern, as Mayastor spreads its nexus over `nexus_bdev.rs`,
//! `nexus_bdev_children.rs` and `nexus_io.rs`:
//!
//! - `options.rs`: the settings and their checks.
//! - `child.rs`: a child as given, as kept, and as the API lists it.
//! - `open.rs`: the checks that come before any thread starts, then the start.
//! - `fanout.rs`: sending one request to the children's workers and
//!   gathering their answers, bounded by `child_timeout`.
//! - `tally.rs`: counting the children's answers against the threshold, the
//!   one place a quorum failure is built, and `Voted`, what a vote gives the
//!   volume's own callers (an answer, or the block without a majority).
//! - `read.rs`: reads, quorum or fifo, and the rewrite of corrupted copies.
//! - `write.rs`: writes, write zeroes, discards and flushes, with the
//!   write-intent log.
//! - `start.rs`: reads and writes started without blocking the caller,
//!   completed by the last child's answer.
//! - `stale_maps.rs`: which ranges each child missed, and their journal.
//! - `damage.rs`: which ranges of each child are known bad (lost a vote,
//!   could not be read) and not repaired yet, kept in the same journal.
//! - `block_status.rs`: the zero map, merged from the children's.
//! - `scrub.rs`, `resync.rs`, `reconcile.rs`: the background repairs.
//! - `membership.rs`: what a membership change needs of the old volume.

mod block_status;
mod child;
mod damage;
mod fanout;
mod membership;
mod open;
mod options;
mod read;
mod reconcile;
mod resync;
mod scrub;
mod stale_maps;
mod start;
mod tally;
mod unflushed;
mod write;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::buffer::BufferPool;
use crate::error::VolumeError;
use crate::event::EventSink;
use crate::ordering::RangeLock;
use crate::report::Reports;

use crate::watchdog::Watchdog;
#[cfg(test)]
pub(crate) use write::ZERO_JOB;

use child::Child;
pub use child::{ChildInfo, ChildSpec};
pub use damage::Damage;
pub use options::{ReadPattern, VolumeOptions};
pub use resync::ResyncStep;
pub use scrub::Scrubbed;
use stale_maps::StaleMaps;
pub use start::{Completion, Rest, WouldBlock};
use unflushed::Unflushed;

/// One virtual disk on N children.
///
/// Every method blocks the calling thread until the children have answered
/// but [`Volume::start_read`] and [`Volume::start_write`], which return at
/// once and complete on the thread of the last answer; the children work in
/// parallel on their own threads. Requests that overlap are ordered (see
/// the `ordering` module); others run concurrently.
pub struct Volume {
    options: VolumeOptions,
    size: u64,
    children: Vec<Child>,
    ranges: RangeLock,
    buffers: Arc<BufferPool>,
    stale: Mutex<StaleMaps>,
    syncing: Mutex<HashSet<String>>,
    /// Whether any child has a stale range: lets requests skip the lock.
    any_stale: AtomicBool,
    /// Whether any child has a damaged range: lets writes skip the lock.
    any_damaged: AtomicBool,
    /// What each child took since its last good flush (coarsened, see
    /// `UNFLUSHED_GRAIN` in `write.rs`): where a child whose flush fails may
    /// have lost data, so it is marked stale there.
    unflushed: Mutex<Vec<Unflushed>>,
    sink: Arc<dyn EventSink>,
    /// Rung when a range is marked stale (see [`Volume::set_resync_bell`]).
    resync_bell: Mutex<Option<ResyncBell>>,
    /// Gives up on the children of requests started with a continuation
    /// at `child_timeout`; started by the first one.
    watchdog: OnceLock<Watchdog>,
}

/// What a volume calls when it gains work for the resync: a range marked
/// stale on some child. The server's resync worker waits on a condition
/// variable between spells of work; this is what wakes it, so that it never
/// polls the stale maps.
pub type ResyncBell = Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("options", &self.options)
            .field("size", &self.size)
            .field(
                "children",
                &self
                    .children
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// The volume's settings.
    pub fn options(&self) -> &VolumeOptions {
        &self.options
    }

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Stops every child's workers after the work already queued, waiting
    /// `timeout` at most. Returns the names of children whose workers did
    /// not stop in time (stuck in their backend).
    pub fn close(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        self.children
            .iter()
            .filter(|c| c.workers.stop(deadline) > 0)
            .map(|c| c.name.clone())
            .collect()
    }

    /// How many requests wait for a range held by another.
    #[cfg(test)]
    pub(crate) fn waiting_for_ranges(&self) -> usize {
        self.ranges.waiting()
    }

    /// How many client writes the write-intent log counts in flight.
    #[cfg(test)]
    pub(crate) fn intents_in_flight(&self) -> usize {
        self.stale_maps().intent.in_flight()
    }

    /// Holds the stale maps' lock until the guard drops, as a journal
    /// record in progress does.
    #[cfg(test)]
    pub(crate) fn lock_stale_maps(&self) -> impl Sized + '_ {
        self.stale_maps()
    }

    /// Counts a failed flush of child `index`, as its worker does when a
    /// flush fails: late, after another flush may have succeeded.
    #[cfg(test)]
    pub(crate) fn count_a_failed_flush(&self, index: usize) {
        self.children[index]
            .workers
            .flush_errors_shared()
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether child `index`'s breaker refuses requests now.
    #[cfg(test)]
    pub(crate) fn breaker_open(&self, index: usize) -> bool {
        self.children[index].breaker.is_open()
    }

    pub(super) fn check_range(&self, offset: u64, length: u64) -> Result<u64, VolumeError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.size => Ok(end),
            _ => Err(VolumeError::OutOfRange {
                offset,
                length,
                size: self.size,
            }),
        }
    }

    pub(super) fn reports(&self) -> Reports<'_> {
        Reports::new(&self.options.name, &*self.sink)
    }
}
