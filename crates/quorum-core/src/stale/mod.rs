//! Stale ranges: what each child missed, like md's write-intent bitmap or
//! ZFS's dirty time log.
//!
//! A write that succeeds at the threshold while failing on some children
//! records its range as stale on those children. A stale range is never
//! served from that child (quorum leaves it out of the vote, fifo skips the
//! child) until a resync has copied the voted data onto it, or a later write
//! has succeeded on it. The maps survive a crash: every change is appended
//! to a journal (one JSON line per mark or clear) before the request that
//! caused it is answered, and a volume flush syncs the journal, so a crash
//! of the process loses no record and a power loss none from before the
//! last flush. A mark that cannot be appended fails the write that needed
//! it. A clear is appended only once the child's data that allows it has
//! been flushed, so after a power loss a child never looks fresh where its
//! data is not. The journal is replayed and compacted when the volume opens
//! and compacted again whenever it has grown well past the live state.
//!
//! The same journal keeps each child's damaged ranges (the `damage` module
//! of the volume: ranges it lost a vote on or could not read, not repaired
//! yet) and the write-intent regions, with ops of their own, so that one
//! file, one replay and one compaction serve all three.

mod journal;
mod range_set;
mod store;

#[cfg(test)]
pub(crate) use journal::COMPACT_SLACK;
pub(crate) use journal::{ChildKey, Journal, Live, Replayed};
pub use range_set::RangeSet;
pub use store::{FileStore, JournalStore};
