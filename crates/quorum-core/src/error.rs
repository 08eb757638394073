//! The errors of a volume: opening it, and serving a request.

use std::fmt;

use crate::backend::BackendError;
use crate::event::Op;
use crate::vote::VoteError;

/// Why a volume could not be opened. Each message names the child at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No children were given.
    #[error("a volume needs at least one child")]
    NoChildren,
    /// The threshold is 0 or above the number of children.
    #[error(
        "vote_threshold must be between 1 and the number of children ({children}), not {threshold}"
    )]
    Threshold {
        /// The configured threshold.
        threshold: usize,
        /// The number of children.
        children: usize,
    },
    /// blkverify without exactly two children and threshold 2.
    #[error(
        "blkverify needs exactly 2 children and vote_threshold 2 (it has {children} children, vote_threshold {threshold})"
    )]
    Blkverify {
        /// The configured threshold.
        threshold: usize,
        /// The number of children.
        children: usize,
    },
    /// blkverify together with rewrite_corrupted.
    #[error("rewrite_corrupted cannot be used with blkverify")]
    BlkverifyRewrite,
    /// Two children share a name.
    #[error("child {child:?}: the name is used twice")]
    DuplicateChild {
        /// The repeated name.
        child: String,
    },
    /// Two children hold their copies in the same storage (one file under
    /// two names, one object prefix): one copy would get two votes.
    #[error(
        "child {child:?} uses the same storage as child {other:?}: one copy cannot have two votes"
    )]
    SameStorage {
        /// The later child.
        child: String,
        /// The earlier child with that storage.
        other: String,
    },
    /// A child could not tell its size.
    #[error("child {child:?}: cannot read its size: {source}")]
    Size {
        /// The child.
        child: String,
        /// Why.
        source: BackendError,
    },
    /// The children differ in size.
    #[error(
        "child {child:?} has {size} bytes but child {first:?} has {expected}: all children must be the same size"
    )]
    SizeMismatch {
        /// The child whose size differs.
        child: String,
        /// Its size.
        size: u64,
        /// The first child, whose size sets the volume's.
        first: String,
        /// The first child's size.
        expected: u64,
    },
    /// The stale-map journal could not be read or written.
    #[error("stale-map journal {}: {source}", path.display())]
    Journal {
        /// The journal.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The worker threads of a child could not be started.
    #[error("child {child:?}: cannot start its worker threads: {source}")]
    Spawn {
        /// The child.
        child: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a request on a volume failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The request lies wholly or partly outside the volume; nothing was done.
    #[error("bytes {offset}..{} lie outside the volume's {size} bytes", offset.saturating_add(*length))]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        length: u64,
        /// Size of the volume.
        size: u64,
    },
    /// Too few children succeeded, or no version won the vote.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The stale-map journal could not record which children missed a
    /// write, or could not be synced by a flush. The write may have landed
    /// on some children; the children that missed it are not read there
    /// until the server restarts.
    #[error("the stale-map journal cannot be written: {0}")]
    Journal(#[source] std::io::Error),
    /// blkverify found the two children different.
    #[error(
        "blkverify: the children differ at byte {offset} (read of {request_bytes} bytes at {request_offset})"
    )]
    BlkverifyMismatch {
        /// The first differing byte, as a volume offset.
        offset: u64,
        /// Start of the read.
        request_offset: u64,
        /// Length of the read.
        request_bytes: u64,
    },
}

/// One child's failure within a request.
#[derive(Debug)]
pub struct ChildFailure {
    /// The child's name.
    pub child: String,
    /// What went wrong.
    pub error: BackendError,
}

/// A request that did not reach its quorum, with every child's failure.
#[derive(Debug)]
pub struct QuorumError {
    /// The request kind.
    pub op: Op,
    /// Start of the request.
    pub offset: u64,
    /// Length of the request.
    pub bytes: u64,
    /// Children that succeeded.
    pub succeeded: usize,
    /// Successes (or votes) needed.
    pub threshold: usize,
    /// The children that failed, in child order.
    pub failures: Vec<ChildFailure>,
    /// Set when enough children answered but their data had no majority.
    pub no_majority: Option<VoteError>,
}

impl QuorumError {
    /// The error that most failed children returned (the error vote of
    /// QEMU's quorum; ties go to the lowest-indexed child).
    pub fn prevailing_error(&self) -> Option<String> {
        let messages: Vec<String> = self.failures.iter().map(|f| f.error.to_string()).collect();
        let mut best: Option<(&String, usize)> = None;
        for m in &messages {
            let count = messages.iter().filter(|x| *x == m).count();
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((m, count));
            }
        }
        best.map(|(m, _)| m.clone())
    }
}

impl std::error::Error for QuorumError {}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} bytes at {} failed: ",
            self.op, self.bytes, self.offset
        )?;
        match &self.no_majority {
            Some(vote) => write!(f, "{vote}")?,
            None => {
                write!(
                    f,
                    "{} children succeeded, {} needed",
                    self.succeeded, self.threshold
                )?;
                if let Some(error) = self.prevailing_error() {
                    write!(f, " (most common error: {error})")?;
                }
            }
        }
        for failure in &self.failures {
            write!(f, "; child {:?}: {}", failure.child, failure.error)?;
        }
        Ok(())
    }
}
