//! A volume's settings, as QEMU's quorum options, and their checks.

use std::time::Duration;

use crate::error::OpenError;

/// How reads pick their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPattern {
    /// Read every child and vote.
    #[default]
    Quorum,
    /// Read child 0, then the next child on error; no vote.
    Fifo,
}

impl ReadPattern {
    /// The config name: `quorum` or `fifo`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPattern::Quorum => "quorum",
            ReadPattern::Fifo => "fifo",
        }
    }
}

/// A volume's settings, as QEMU's quorum options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    /// The volume's name, used in events.
    pub name: String,
    /// Children that must agree for a read, or succeed for a write.
    pub vote_threshold: usize,
    /// How reads pick their answer.
    pub read_pattern: ReadPattern,
    /// Write the winning data back over children that lost a vote or failed.
    pub rewrite_corrupted: bool,
    /// Two children that must be identical; any difference fails the read
    /// and names the first differing byte.
    pub blkverify: bool,
    /// How long a request waits for one child: past it, the child counts as
    /// failed for that request (and goes stale for a write) and the request
    /// completes with the others' answers.
    pub child_timeout: Duration,
}

impl VolumeOptions {
    /// The default `child_timeout`.
    pub const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(30);
}

impl VolumeOptions {
    /// Checks the options against a number of children, as QEMU does when it
    /// opens a quorum.
    pub fn validate(&self, children: usize) -> Result<(), OpenError> {
        let threshold = self.vote_threshold;
        if children == 0 {
            return Err(OpenError::NoChildren);
        }
        if threshold == 0 || threshold > children {
            return Err(OpenError::Threshold {
                threshold,
                children,
            });
        }
        if self.blkverify && (children != 2 || threshold != 2) {
            return Err(OpenError::Blkverify {
                threshold,
                children,
            });
        }
        if self.blkverify && self.rewrite_corrupted {
            return Err(OpenError::BlkverifyRewrite);
        }
        Ok(())
    }
}
