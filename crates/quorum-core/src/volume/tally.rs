//! Counting the children's answers to one request against the threshold,
//! and the one place a quorum failure is built: garage's
//! `QuorumSetResultTracker` (`src/rpc/rpc_helper.rs`) for a volume.
//!
//! A request's answers go into a [`Tally`], which says whether the request
//! met its threshold and, when it did not, builds the [`QuorumError`] that
//! names every child that failed and why. A vote that found no winner for
//! a block reaches internal callers as [`Voted::NoMajority`], a value they
//! steer by (scrub lists the block, resync copies around it), rather than
//! an error they would have to take apart.

use std::ops::Range;

use super::Volume;
use super::fanout::Outcomes;
use crate::backend::BackendError;
use crate::error::{ChildFailure, QuorumError, VolumeError};
use crate::event::{Event, Op};
use crate::report::Reports;
use crate::vote::VoteError;

/// The children's answers to one request, counted against its threshold.
///
/// Every child asked counts as a success until it is recorded as failed.
/// Children are known by index; their names come in only when the error is
/// built.
#[derive(Debug)]
pub(super) struct Tally {
    op: Op,
    offset: u64,
    bytes: u64,
    threshold: usize,
    succeeded: usize,
    /// The children that failed, by index, in the order they were recorded.
    failures: Vec<(usize, BackendError)>,
}

impl Tally {
    /// A tally of `op` on `offset..offset+bytes`, asked of `asked` children,
    /// that needs `threshold` successes.
    pub(super) fn new(op: Op, offset: u64, bytes: u64, threshold: usize, asked: usize) -> Tally {
        Tally {
            op,
            offset,
            bytes,
            threshold,
            succeeded: asked,
            failures: Vec::new(),
        }
    }

    /// Records that child `child` failed with `error`.
    pub(super) fn failed(&mut self, child: usize, error: BackendError) {
        self.succeeded = self.succeeded.saturating_sub(1);
        self.failures.push((child, error));
    }

    /// The children that failed so far, by index.
    pub(super) fn failures(&self) -> &[(usize, BackendError)] {
        &self.failures
    }

    /// Whether enough children succeeded.
    pub(super) fn has_quorum(&self) -> bool {
        self.succeeded >= self.threshold
    }

    /// The request's failure, naming every child that failed (`name` of
    /// its index); `no_majority` when enough children answered but their
    /// data had no majority.
    pub(super) fn into_error(
        self,
        name: impl Fn(usize) -> String,
        no_majority: Option<VoteError>,
    ) -> QuorumError {
        QuorumError {
            op: self.op,
            offset: self.offset,
            bytes: self.bytes,
            succeeded: self.succeeded,
            threshold: self.threshold,
            failures: self
                .failures
                .into_iter()
                .map(|(i, error)| ChildFailure {
                    child: name(i),
                    error,
                })
                .collect(),
            no_majority,
        }
    }

    /// What a vote over the answers that found no winner means: a
    /// [`NoMajority`] when enough children answered but a block had no
    /// majority, the request's failure when too few answered.
    pub(super) fn no_winner(
        self,
        name: impl Fn(usize) -> String,
        vote: VoteError,
    ) -> Result<NoMajority, QuorumError> {
        match vote {
            VoteError::NoMajority { offset, length, .. } => Ok(NoMajority {
                block: offset..offset + length,
                error: self.into_error(name, Some(vote)),
            }),
            VoteError::TooFewCopies { .. } => Err(self.into_error(name, None)),
        }
    }
}

/// What a vote gave an internal caller.
#[derive(Debug)]
pub(super) enum Voted<T> {
    /// Every block had a winner.
    Answer(T),
    /// Enough children answered, but a block had no majority.
    NoMajority(NoMajority),
}

/// A vote in which no version of `block` reached the threshold.
#[derive(Debug)]
pub(super) struct NoMajority {
    /// The first block without a majority, in volume bytes.
    pub(super) block: Range<u64>,
    /// The request's failure, for a caller to whom it is one.
    pub(super) error: QuorumError,
}

impl Volume {
    /// A tally of `op` on `offset..offset+bytes`, asked of `asked` children,
    /// at the volume's threshold.
    pub(super) fn tally(&self, op: Op, offset: u64, bytes: u64, asked: usize) -> Tally {
        Tally::new(op, offset, bytes, self.options.vote_threshold, asked)
    }

    /// The failure that `tally` counted, its children named (see
    /// [`Tally::into_error`]).
    pub(super) fn quorum_error(&self, tally: Tally, no_majority: Option<VoteError>) -> QuorumError {
        tally.into_error(|i| self.children[i].name.clone(), no_majority)
    }

    /// What a vote without a winner over the answers of `tally` means (see
    /// [`Tally::no_winner`]).
    pub(super) fn no_winner(
        &self,
        tally: Tally,
        vote: VoteError,
    ) -> Result<NoMajority, QuorumError> {
        tally.no_winner(|i| self.children[i].name.clone(), vote)
    }

    /// Reports each failed child and fails the request when fewer than the
    /// threshold of `results` (one per child, in child order) succeeded.
    pub(super) fn require_quorum(
        &self,
        op: Op,
        offset: u64,
        bytes: u64,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<(), VolumeError> {
        let mut tally = self.tally(op, offset, bytes, results.len());
        for (i, result) in results.into_iter().enumerate() {
            if let Err(error) = result {
                self.report_failed(reports, op, i, offset, bytes, &error);
                tally.failed(i, error);
            }
        }
        if !tally.has_quorum() {
            return Err(self.fail(reports, self.quorum_error(tally, None)));
        }
        Ok(())
    }

    /// Reports that `child` failed `op` on `offset..offset+bytes`.
    pub(super) fn report_failed(
        &self,
        reports: &mut Reports<'_>,
        op: Op,
        child: usize,
        offset: u64,
        bytes: u64,
        error: &BackendError,
    ) {
        tracing::warn!(volume = %self.options.name, child = %self.children[child].name, %op, offset, bytes, %error, "child failed");
        reports.bad(
            op,
            &self.children[child].name,
            offset,
            bytes,
            Some(error.to_string()),
        );
    }

    /// Reports the failure of a request and returns it as the volume's
    /// error.
    pub(super) fn fail(&self, reports: &mut Reports<'_>, error: QuorumError) -> VolumeError {
        self.report_failure(reports, &error);
        VolumeError::Quorum(error)
    }

    /// Reports the failure of a request (an event and the log).
    pub(super) fn report_failure(&self, reports: &mut Reports<'_>, error: &QuorumError) {
        reports.push(Event::Failure {
            op: error.op,
            offset: error.offset,
            bytes: error.bytes,
        });
        tracing::error!(volume = %self.options.name, %error, "quorum failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(why: &str) -> BackendError {
        BackendError::Unavailable(why.into())
    }

    fn name(i: usize) -> String {
        format!("c{i}")
    }

    #[test]
    fn every_child_asked_counts_until_it_fails() {
        let mut tally = Tally::new(Op::Write, 4096, 512, 2, 3);
        assert!(tally.has_quorum());
        tally.failed(2, down("gone"));
        assert!(tally.has_quorum());
        tally.failed(0, down("away"));
        assert!(!tally.has_quorum());
        let failed: Vec<usize> = tally.failures().iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, [2, 0]);
    }

    #[test]
    fn the_error_names_each_failed_child_and_the_counts() {
        let mut tally = Tally::new(Op::Write, 4096, 512, 2, 3);
        tally.failed(1, down("gone"));
        tally.failed(2, down("away"));
        let error = tally.into_error(name, None);
        assert_eq!(
            (error.op, error.offset, error.bytes),
            (Op::Write, 4096, 512)
        );
        assert_eq!((error.succeeded, error.threshold), (1, 2));
        let children: Vec<&str> = error.failures.iter().map(|f| f.child.as_str()).collect();
        assert_eq!(children, ["c1", "c2"]);
        assert!(error.no_majority.is_none());
    }

    #[test]
    fn a_vote_without_a_winner_is_a_block_or_a_failure() {
        let block = VoteError::NoMajority {
            offset: 8192,
            length: 4096,
            votes: 1,
            threshold: 2,
        };
        let none = Tally::new(Op::Read, 0, 16384, 2, 3)
            .no_winner(name, block.clone())
            .expect("enough children answered");
        assert_eq!(none.block, 8192..12288);
        assert_eq!(none.error.no_majority, Some(block));
        assert_eq!(none.error.succeeded, 3);

        let mut tally = Tally::new(Op::Read, 0, 16384, 2, 3);
        tally.failed(0, down("gone"));
        tally.failed(1, down("away"));
        let few = VoteError::TooFewCopies {
            copies: 1,
            threshold: 2,
        };
        let error = tally.no_winner(name, few).expect_err("too few answered");
        assert!(error.no_majority.is_none());
        assert_eq!(error.succeeded, 1);
        assert_eq!(error.failures.len(), 2);
    }
}
