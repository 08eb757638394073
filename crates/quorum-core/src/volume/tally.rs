//! Counting the children's answers to one request against the threshold,
//! and building the quorum failure when too few succeeded.

use super::Volume;
use super::fanout::Outcomes;
use crate::backend::BackendError;
use crate::error::{ChildFailure, QuorumError, VolumeError};
use crate::event::{Event, Op};
use crate::report::Reports;
use crate::vote::VoteError;
use crate::worker::Reply;

impl Volume {
    /// Reports each failed child and fails the request when fewer than the
    /// threshold succeeded; otherwise returns each child's reply (`None` for
    /// the failed ones).
    pub(super) fn require_quorum(
        &self,
        op: Op,
        offset: u64,
        bytes: u64,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Option<Reply>>, VolumeError> {
        let all: Vec<usize> = (0..results.len()).collect();
        self.require_quorum_of(&all, op, offset, bytes, results, reports)
    }

    /// [`Volume::require_quorum`] for the children `asked` (in the order of
    /// `results`).
    fn require_quorum_of(
        &self,
        asked: &[usize],
        op: Op,
        offset: u64,
        bytes: u64,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Option<Reply>>, VolumeError> {
        let mut replies = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for (&i, result) in asked.iter().zip(results) {
            match result {
                Ok(reply) => replies.push(Some(reply)),
                Err(error) => {
                    self.report_failed(reports, op, i, offset, bytes, &error);
                    failures.push(ChildFailure {
                        child: self.children[i].name.clone(),
                        error,
                    });
                    replies.push(None);
                }
            }
        }
        let succeeded = replies.len() - failures.len();
        if succeeded < self.options.vote_threshold {
            return Err(self.fail(reports, op, offset, bytes, succeeded, failures, None));
        }
        Ok(replies)
    }

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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail(
        &self,
        reports: &mut Reports<'_>,
        op: Op,
        offset: u64,
        bytes: u64,
        succeeded: usize,
        failures: Vec<ChildFailure>,
        no_majority: Option<VoteError>,
    ) -> VolumeError {
        reports.push(Event::Failure { op, offset, bytes });
        let error = QuorumError {
            op,
            offset,
            bytes,
            succeeded,
            threshold: self.options.vote_threshold,
            failures,
            no_majority,
        };
        tracing::error!(volume = %self.options.name, %error, "quorum failure");
        VolumeError::Quorum(error)
    }

    pub(super) fn named(&self, failures: Vec<(usize, BackendError)>) -> Vec<ChildFailure> {
        failures
            .into_iter()
            .map(|(i, error)| ChildFailure {
                child: self.children[i].name.clone(),
                error,
            })
            .collect()
    }
}
