//! Sending one request to the children's workers and waiting for their
//! answers, for `child_timeout` at most.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Volume;
use super::child::{FAILED, HEALTHY};
use crate::backend::BackendError;
use crate::worker::{Reply, Request, Ticket};

/// A child's result within one request.
pub(super) type Outcomes = Vec<Result<Reply, BackendError>>;

impl Volume {
    /// Sends one request per listed child and waits for all their answers,
    /// returned in the order of `jobs`, for `child_timeout` at most: a child
    /// that has not answered by then fails with [`BackendError::Timeout`].
    /// A child whose breaker is open, or which still has a request abandoned
    /// at an earlier deadline, is not tried (so a late write of it can never
    /// land after a newer one).
    pub(super) fn dispatch(
        &self,
        jobs: Vec<(usize, Request)>,
    ) -> Vec<(usize, Result<Reply, BackendError>)> {
        let (tx, rx) = crossbeam_channel::bounded(jobs.len());
        let order: Vec<usize> = jobs.iter().map(|(i, _)| *i).collect();
        // Answers by job, not by child: a child may get several jobs.
        let mut answers: Vec<Option<Result<Reply, BackendError>>> =
            (0..order.len()).map(|_| None).collect();
        let mut tried = vec![false; order.len()];
        let mut tickets: Vec<Option<Arc<Ticket>>> = (0..order.len()).map(|_| None).collect();
        let mut pending = 0;
        for (job, (child, request)) in jobs.into_iter().enumerate() {
            let c = &self.children[child];
            let refusal = c.breaker.refuse().or_else(|| {
                let late = c.workers.abandoned();
                (late > 0).then(|| {
                    BackendError::Unavailable(format!(
                        "not tried: {late} of its requests passed child_timeout and have not returned"
                    ))
                })
            });
            match refusal {
                Some(refusal) => answers[job] = Some(Err(refusal)),
                None => {
                    let ticket = Arc::new(Ticket::default());
                    c.workers.submit(job, request, &tx, ticket.clone());
                    tickets[job] = Some(ticket);
                    tried[job] = true;
                    pending += 1;
                }
            }
        }
        drop(tx);
        let deadline = Instant::now() + self.options.child_timeout;
        while pending > 0 {
            match rx.recv_deadline(deadline) {
                Ok((job, result)) => {
                    answers[job] = Some(result);
                    pending -= 1;
                }
                Err(_) => break,
            }
        }
        for (job, ticket) in tickets.iter().enumerate() {
            let Some(ticket) = ticket else { continue };
            if answers[job].is_some() {
                continue;
            }
            if self.children[order[job]].workers.abandon(ticket) {
                answers[job] = Some(Err(BackendError::Timeout(self.options.child_timeout)));
                continue;
            }
            // Answered as it was abandoned: the answer is on its way.
            while answers[job].is_none() {
                match rx.recv() {
                    Ok((j, result)) => answers[j] = Some(result),
                    Err(_) => break,
                }
            }
        }
        order
            .into_iter()
            .zip(answers)
            .zip(tried)
            .map(|((child, answer), tried)| {
                let result = answer.unwrap_or_else(|| {
                    Err(BackendError::Unavailable(
                        "the child's worker stopped without answering".into(),
                    ))
                });
                let state = if result.is_ok() { HEALTHY } else { FAILED };
                self.children[child].state.store(state, Ordering::Relaxed);
                if tried {
                    self.children[child].breaker.record(&result);
                }
                (child, result)
            })
            .collect()
    }

    pub(super) fn on_all(&self, request: &Request) -> Outcomes {
        let jobs = (0..self.children.len())
            .map(|i| (i, request.clone()))
            .collect();
        self.dispatch(jobs).into_iter().map(|(_, r)| r).collect()
    }
}
