//! The `Backend` trait: what a child must do to hold one copy of a volume.

use std::fmt;
use std::io;
use std::time::Duration;

/// A run of bytes that a child reports as all zeros or as (possibly) data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset of the run.
    pub offset: u64,
    /// Length of the run in bytes.
    pub length: u64,
    /// `true` when every byte of the run is known to read as zero.
    pub zero: bool,
}

impl Extent {
    /// Where the run ends (exclusive).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    /// Appends `next` to a map being built in order, merging it into the
    /// last extent when both are zero or both data and they touch.
    pub fn append(map: &mut Vec<Extent>, next: Extent) {
        if next.length == 0 {
            return;
        }
        match map.last_mut() {
            Some(last) if last.zero == next.zero && last.offset + last.length == next.offset => {
                last.length += next.length;
            }
            _ => map.push(next),
        }
    }
}

/// Why one child failed one request.
///
/// Errors stay typed so that the engine can vote on them (the most common
/// error of a failed quorum wins) and decide what a rewrite can repair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The child's storage reported an I/O error (a bad sector, a short file,
    /// a failed object). Rewriting the range may repair it.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The request lies outside the child. The engine checks ranges first, so
    /// this means the child shrank under it.
    #[error("bytes {offset}..{end} lie outside the child's {size} bytes", end = offset.saturating_add(*length))]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        length: u64,
        /// Size of the child.
        size: u64,
    },
    /// The child did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The child cannot be reached (connection refused, worker gone).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The child refused the request itself: wrong credentials, bad answer.
    #[error("refused: {0}")]
    Refused(String),
}

impl BackendError {
    /// An I/O error from an errno, as fault injection and tests produce it.
    pub fn from_errno(errno: i32) -> Self {
        BackendError::Io(io::Error::from_raw_os_error(errno))
    }

    /// `Ok` when `offset..offset+length` lies within a child of `size`
    /// bytes, else [`BackendError::OutOfRange`]: the check every backend
    /// makes before it touches its storage.
    pub fn check_range(offset: u64, length: u64, size: u64) -> Result<(), BackendError> {
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(BackendError::OutOfRange {
                offset,
                length,
                size,
            }),
        }
    }

    /// Whether writing good data over the range may repair the child: true
    /// for media errors, false for a child that is unreachable or hung.
    pub fn is_repairable(&self) -> bool {
        matches!(self, BackendError::Io(_))
    }
}

/// One replica of a volume: a file, an object-store prefix, a remote volume.
///
/// The engine calls these methods from a small pool of worker threads per
/// child, so an implementation is shared (`&self`) and must allow several
/// calls in flight at once; [`Backend::max_in_flight`] sizes that pool.
///
/// # Contract
/// - Every method is synchronous and may block; it must give up after a
///   bounded time (a hung replica becomes [`BackendError::Timeout`]), because
///   a quorum read waits for every child.
/// - Offsets and lengths are bytes with no alignment; the engine never asks
///   for a range past [`Backend::size`].
/// - `write_at` followed by `read_at` of the same range returns the written
///   bytes; after `flush` succeeds they survive a crash of the host.
/// - Overlapping calls are never issued concurrently by the engine.
///
/// # Errors
/// Each method returns a [`BackendError`] that says why this child failed;
/// the engine turns it into an event and a vote, never a panic.
pub trait Backend: Send + Sync + fmt::Display {
    /// A short name of the backend kind (`file`, `faulty`, `s3`, `http`).
    fn kind(&self) -> &'static str;

    /// The child's size in bytes.
    fn size(&self) -> Result<u64, BackendError>;

    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError>;

    /// Fills `buf` with the bytes at `offset` only if that cannot block (a
    /// file's page cache holds them); says whether it did. `false` when it
    /// could block, when the backend cannot tell, or when the read failed:
    /// the engine then asks one of the child's workers ([`Backend::read_at`]).
    ///
    /// The engine calls it on the thread that makes the request, which
    /// must never wait on a child (a hung child costs `child_timeout` and
    /// no more), so an implementation must never block. It spares a small
    /// read the hand-off to a worker thread and back, which costs more
    /// than reading cached data. The default says `false`.
    fn read_now(&self, _buf: &mut [u8], _offset: u64) -> bool {
        false
    }

    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError>;

    /// Writes `buf` at `offset` as [`write_at`](Backend::write_at) does, for
    /// a bulk copy that is flushed right after and not read back soon (a
    /// resync's copy onto a stale child): a child may keep it out of its
    /// caches and start writing it out at once, so that the copy neither
    /// evicts what clients read nor leaves a long write-out to the flush.
    /// The default is `write_at`, which is always correct.
    fn write_copy(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.write_at(buf, offset)
    }

    /// Makes `length` bytes at `offset` read as zero, deallocating them where
    /// the storage allows it.
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError>;

    /// Discards `length` bytes at `offset` (NBD `TRIM`, SPEC section 10):
    /// the range reads as zero afterwards, as after
    /// [`write_zeroes`](Backend::write_zeroes), so that the children stay
    /// identical, and the child frees the space where it can (a file
    /// punches a hole, an object store deletes whole objects, a remote
    /// volume forwards the discard). The default writes zeroes, which is
    /// always correct.
    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.write_zeroes(offset, length)
    }

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BackendError>;

    /// Which parts of `offset..offset+length` read as zero, in at most
    /// `limit` extents (`limit` is at least 1).
    ///
    /// The extents are in order: the first starts at `offset` and each
    /// starts where the one before ends. They cover the whole range or,
    /// when that takes more than `limit` extents, a prefix of it that ends
    /// where its last extent really ends (the caller asks again from
    /// there), so that the work and the answer stay bounded by `limit`
    /// whatever the number of extents of the child. The default says
    /// "data" for the whole range, which is always correct.
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        _limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        Ok(vec![Extent {
            offset,
            length,
            zero: false,
        }])
    }

    /// How many requests this child should have in flight at once.
    fn max_in_flight(&self) -> usize {
        4
    }

    /// The unit this child stores in (an S3 chunk): a write that covers
    /// only part of a unit reads the rest of it first, so it fails while
    /// that unit is unreadable. Repair and resync write whole units where
    /// they can, so that a broken unit is rebuilt from the vote rather than
    /// patched. The default, 1, means any range can be written on its own.
    fn write_unit(&self) -> u64 {
        1
    }

    /// What names the storage this child holds its copy in: two children
    /// with the same identity are one copy with two votes, which a volume
    /// refuses. The default is the child's display form.
    fn identity(&self) -> String {
        self.to_string()
    }

    /// Whether [`Backend::identity`] names the storage this child holds its
    /// copy in: false for a stand-in of a child whose storage could not be
    /// opened yet. The stale-map journal then knows the child by the
    /// identity it recorded for its name, so that what it knows of the
    /// storage (its damaged ranges) waits for the child to open.
    fn identity_known(&self) -> bool {
        true
    }
}
