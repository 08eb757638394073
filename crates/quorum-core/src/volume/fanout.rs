//! Sending one request to the children's workers and gathering their
//! answers: waited for on the caller's thread ([`Volume::dispatch`]), or
//! handed to a continuation by the last answer ([`Volume::dispatch_then`]);
//! either way for `child_timeout` at most.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use super::Volume;
use super::child::{FAILED, HEALTHY};
use crate::backend::BackendError;
use crate::gather::{Answer, Gather, Waiter};
use crate::watchdog::Watchdog;
use crate::worker::{Reply, Request};

/// The largest read a child may answer on the caller's thread: larger
/// ones are read by the children's workers in parallel, where copying
/// them costs more than the hand-off.
const READ_NOW_MAX: usize = 128 * 1024;

/// A child's result within one request.
pub(super) type Outcomes = Vec<Result<Reply, BackendError>>;

/// Each job's child and answer, in job order.
pub(super) type Answers = Vec<(usize, Answer)>;

/// What a request's last answer runs: the volume, and each job's child and
/// answer, in job order.
pub(super) type AfterAnswers = Box<dyn FnOnce(&Arc<Volume>, Answers) + Send>;

impl Volume {
    /// Sends one request per listed child and waits for all their answers,
    /// returned in the order of `jobs`, for `child_timeout` at most: a child
    /// that has not answered by then fails with [`BackendError::Timeout`].
    /// A child whose breaker is open, or which still has a request abandoned
    /// at an earlier deadline, is not tried (so a late write of it can never
    /// land after a newer one).
    pub(super) fn dispatch(&self, jobs: Vec<(usize, Request)>) -> Answers {
        let up_front = match self.up_front(jobs) {
            Ok(answers) => return answers,
            Err(up_front) => up_front,
        };
        let (gather, requests) = up_front.gather(Waiter::Thread(thread::current()));
        let gather = Arc::new(gather);
        self.send(&gather, requests);
        let deadline = Instant::now() + self.options.child_timeout;
        if !gather.wait_until(deadline) {
            gather.expire(
                |child| self.children.get(child).map(|c| c.workers.late_count()),
                self.options.child_timeout,
            );
            // What could not be abandoned was answered: it is on its way.
            gather.wait();
        }
        self.record_answers(gather.children(), gather.tried(), gather.take())
    }

    /// [`Volume::dispatch`] without waiting: returns at once, and the last
    /// answer (or the watchdog, at `child_timeout`) runs `then` with them,
    /// on its own thread. `None` when the watchdog cannot be started:
    /// nothing was sent, and `then` is dropped.
    pub(super) fn dispatch_then(
        self: &Arc<Self>,
        jobs: Vec<(usize, Request)>,
        then: AfterAnswers,
    ) -> Option<()> {
        let up_front = match self.up_front(jobs) {
            Ok(answers) => {
                then(self, answers);
                return Some(());
            }
            Err(up_front) => up_front,
        };
        let watchdog = self.watchdog()?;
        let at = watchdog.place();
        let volume = self.clone();
        let waiter = Waiter::Then(Box::new(move |gather: &Gather, answers| {
            if let Some(w) = volume.watchdog.get() {
                w.unwatch(at);
            }
            let answers = volume.record_answers(gather.children(), gather.tried(), answers);
            then(&volume, answers);
        }));
        let (gather, requests) = up_front.gather(waiter);
        let gather = Arc::new(gather);
        watchdog.watch(at, gather.clone());
        self.send(&gather, requests);
        Some(())
    }

    /// The answer of each child to its job that needs no worker
    /// ([`Volume::answer_up_front`]). Every job's answer, recorded, when
    /// that is all of them; what is left to send otherwise.
    fn up_front(&self, jobs: Vec<(usize, Request)>) -> Result<Answers, UpFront> {
        let mut children = Vec::with_capacity(jobs.len());
        let mut answered = Vec::with_capacity(jobs.len());
        let mut tried = Vec::with_capacity(jobs.len());
        let mut requests = Vec::new();
        for (job, (child, request)) in jobs.into_iter().enumerate() {
            children.push(child);
            match self.answer_up_front(child, &request) {
                Some((answer, was_tried)) => {
                    answered.push(Some(answer));
                    tried.push(was_tried);
                }
                None => {
                    answered.push(None);
                    tried.push(true);
                    requests.push((job, request));
                }
            }
        }
        if requests.is_empty() {
            let answers = answered.into_iter().flatten().collect();
            return Ok(self.record_answers(&children, &tried, answers));
        }
        Err(UpFront {
            children,
            answered,
            tried,
            requests,
        })
    }

    /// Child `child`'s answer to `request` if it needs no worker, recorded
    /// (as [`Volume::record_answers`] does): `None` when it must be sent.
    pub(super) fn answered_now(&self, child: usize, request: &Request) -> Option<Answer> {
        let (answer, tried) = self.answer_up_front(child, request)?;
        self.record_answer(child, tried, &answer);
        Some(answer)
    }

    /// Child `child`'s answer to `request` that needs no worker, and
    /// whether the child was tried: a refusal up front (its breaker is
    /// open, or a request abandoned at an earlier deadline has not
    /// returned), or a small read that it answered on this thread
    /// ([`Volume::read_now`]). `None` when the request must be sent.
    fn answer_up_front(&self, child: usize, request: &Request) -> Option<(Answer, bool)> {
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
            Some(refusal) => Some((Err(refusal), false)),
            None => self.read_now(child, request).map(|a| (a, true)),
        }
    }

    /// Child `child`'s answer to `request` read on this thread, when that
    /// is a read of at most [`READ_NOW_MAX`] bytes that the child's backend
    /// can answer without blocking ([`crate::Backend::read_now`]).
    fn read_now(&self, child: usize, request: &Request) -> Option<Answer> {
        let Request::Read { offset, length } = *request else {
            return None;
        };
        if length > READ_NOW_MAX {
            return None;
        }
        let mut buf = self.buffers.take(length);
        if self.children[child].backend.read_now(&mut buf, offset) {
            Some(Ok(Reply::Data(buf)))
        } else {
            self.buffers.give(buf);
            None
        }
    }

    fn send(&self, gather: &Arc<Gather>, requests: Vec<(usize, Request)>) {
        for (job, request) in requests {
            let child = gather.children()[job];
            self.children[child].workers.submit(gather, job, request);
        }
    }

    /// Records each answer in its child's state and breaker; returns each
    /// job's child and answer.
    fn record_answers(&self, children: &[usize], tried: &[bool], answers: Vec<Answer>) -> Answers {
        children
            .iter()
            .zip(tried)
            .zip(answers)
            .map(|((&child, &tried), result)| {
                self.record_answer(child, tried, &result);
                (child, result)
            })
            .collect()
    }

    /// Records child `child`'s answer in its state, and in its breaker if
    /// it was `tried`.
    fn record_answer(&self, child: usize, tried: bool, answer: &Answer) {
        let state = if answer.is_ok() { HEALTHY } else { FAILED };
        self.children[child].state.store(state, Ordering::Relaxed);
        if tried {
            self.children[child].breaker.record(answer);
        }
    }

    /// The volume's watchdog, started at its first use; `None` (logged)
    /// when its thread cannot be started.
    fn watchdog(&self) -> Option<&Watchdog> {
        if let Some(w) = self.watchdog.get() {
            return Some(w);
        }
        let late = self.children.iter().map(|c| c.workers.late()).collect();
        match Watchdog::spawn(&self.options.name, late, self.options.child_timeout) {
            // Another request may have started one first: this one stops.
            Ok(w) => {
                let _ = self.watchdog.set(w);
            }
            Err(error) => {
                tracing::warn!(volume = %self.options.name, %error, "cannot start the watchdog thread; requests wait on blocking threads");
            }
        }
        self.watchdog.get()
    }

    pub(super) fn on_all(&self, request: &Request) -> Outcomes {
        let jobs = (0..self.children.len())
            .map(|i| (i, request.clone()))
            .collect();
        self.dispatch(jobs).into_iter().map(|(_, r)| r).collect()
    }
}

/// A request with jobs left for the children's workers after
/// [`Volume::up_front`]: by job, its child, its answer if it has one, and
/// whether the child was tried; and the requests to send, by job.
struct UpFront {
    children: Vec<usize>,
    answered: Vec<Option<Answer>>,
    tried: Vec<bool>,
    requests: Vec<(usize, Request)>,
}

impl UpFront {
    /// The gather of the request, which `waiter` waits on, and the
    /// requests to send to the workers.
    fn gather(self, waiter: Waiter) -> (Gather, Vec<(usize, Request)>) {
        let gather = Gather::new(self.children, self.answered, self.tried, waiter);
        (gather, self.requests)
    }
}
