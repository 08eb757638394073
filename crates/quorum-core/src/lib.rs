//! The quorum engine: one virtual disk kept on N replicas, voted on every read.
//!
//! This crate is synchronous and knows no HTTP, no async runtime and no
//! storage protocol. Its parts:
//!
//! - [`Backend`] (`backend.rs`): the small trait a replica ("child")
//!   implements: read, write, write zeroes, discard, flush, size, block
//!   status.
//! - [`Volume`] (`volume/`): drives the children of one disk. Every
//!   request fans out to every child in parallel, through each child's
//!   worker pool (`worker.rs`, `queue.rs`), and its answers gather in one
//!   place (`gather.rs`): the caller waits for the last one, or a request
//!   started without blocking completes on the thread of the last one
//!   (`volume/start.rs`; its `child_timeout` kept by `watchdog.rs`).
//! - Zero maps (`extents.rs`): block status, the children's extent lists
//!   merged in one pass and in bounded pages.
//! - The vote (`vote.rs`): a pure function from the children's copies and
//!   the threshold to the answer and the losers, per 4 KiB block.
//! - Ordering (`ordering.rs`): overlapping requests never run concurrently
//!   when one of them writes.
//! - [`Event`] and [`EventSink`] (`event.rs`): what bad replicas did, for the
//!   server to number, store and stream.
//!
//! It re-creates QEMU's `quorum` block driver and goes beyond it where QEMU
//! is weak: per-block votes, exact loser ranges, rewrites of children whose
//! read failed, parallel flushes, and a blkverify that reports instead of
//! exiting.

#![deny(missing_docs)]

mod backend;
mod breaker;
mod buffer;
mod child_state;
mod error;
mod event;
mod extents;
mod gather;
mod intent;
mod job;
mod ordering;
mod queue;
mod report;
pub mod stale;
mod volume;
pub mod vote;
mod watchdog;
mod words;
mod worker;

#[cfg(test)]
mod tests;

pub use backend::{Backend, BackendError, Extent};
pub use child_state::ChildState;
pub use error::{ChildFailure, OpenError, QuorumError, VolumeError};
pub use event::{Event, EventKind, EventSink, NullSink, Op, RecordingSink, ResumedBy};
pub use job::{JobKind, JobState};
pub use strum::VariantArray;
pub use volume::{
    ChildInfo, ChildSpec, Completion, Damage, ReadPattern, Rest, ResyncBell, ResyncStep, Scrubbed,
    Volume, VolumeOptions, WouldBlock,
};
