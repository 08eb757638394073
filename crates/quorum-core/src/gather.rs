//! One request's answers from the children's workers, and how its caller
//! learns that the last one is in.
//!
//! A request fans out as jobs, one per child (or per repair); each job's
//! worker puts its answer in the request's [`Gather`]. Only the last answer
//! wakes anybody: a caller that waits on its own thread is unparked once
//! (not once per child), and a caller that does not wait has its
//! continuation run by whichever thread gave the last answer (a worker, or
//! the watchdog that gave up on a child at `child_timeout`).
//!
//! Every job carries a [`Ticket`]. A caller that gives up on a job at its
//! deadline abandons it: a job abandoned before it started never runs, and
//! one abandoned while running is counted in its child's late count until
//! its backend call returns, so that the volume sends nothing more to that
//! child meanwhile: a late write can never land after a newer one.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::worker::Reply;

/// A child's answer to one job.
pub(crate) type Answer = Result<Reply, BackendError>;

/// Who settles a job: its worker (started, then answered) or its caller
/// (abandoned at the deadline). Each transition happens once.
#[derive(Debug, Default)]
pub(crate) struct Ticket(AtomicU8);

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ANSWERED: u8 = 2;
const ABANDONED: u8 = 3;

impl Ticket {
    fn advance(&self, from: u8, to: u8) -> bool {
        self.0
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The worker starts the job; `false` when it was abandoned first.
    pub(crate) fn start(&self) -> bool {
        self.advance(QUEUED, RUNNING)
    }

    /// The worker is about to answer; `false` when the job was abandoned
    /// while it ran (the answer is dropped).
    pub(crate) fn finish(&self) -> bool {
        self.advance(RUNNING, ANSWERED)
    }

    /// Gives up on the job, counting it in `late` when that succeeds.
    /// Returns `false` when the worker answered meanwhile: the answer is
    /// on its way.
    pub(crate) fn abandon(&self, late: &AtomicUsize) -> bool {
        late.fetch_add(1, Ordering::AcqRel);
        if self.advance(QUEUED, ABANDONED) || self.advance(RUNNING, ABANDONED) {
            return true;
        }
        late.fetch_sub(1, Ordering::AcqRel);
        false
    }
}

/// What the last answer runs, with the gather and every job's answer, in
/// job order.
pub(crate) type Then = Box<dyn FnOnce(&Gather, Vec<Answer>) + Send>;

/// Who learns that the last answer is in.
pub(crate) enum Waiter {
    /// A thread that waits in [`Gather::wait_until`]; unparked once.
    Thread(Thread),
    /// A continuation, run by the thread that gives the last answer.
    Then(Then),
}

/// The answers of one request's jobs.
pub(crate) struct Gather {
    /// The child of each job.
    children: Vec<usize>,
    /// Whether each job was sent to its child (not refused up front).
    tried: Vec<bool>,
    tickets: Vec<Ticket>,
    state: Mutex<State>,
}

struct State {
    answers: Vec<Option<Answer>>,
    pending: usize,
    /// `None` once the continuation ran.
    waiter: Option<Waiter>,
}

impl Gather {
    /// The gather of jobs on `children`; `answered` has the answer of each
    /// job that is not sent to a worker (its child refused up front, or
    /// answered on the caller's thread), `None` for the others; `tried`
    /// says which jobs the child was asked (not refused).
    pub(crate) fn new(
        children: Vec<usize>,
        answered: Vec<Option<Answer>>,
        tried: Vec<bool>,
        waiter: Waiter,
    ) -> Gather {
        let pending = answered.iter().filter(|a| a.is_none()).count();
        // A job answered already is settled: it can never be abandoned.
        let tickets = answered
            .iter()
            .map(|a| Ticket(AtomicU8::new(if a.is_some() { ANSWERED } else { QUEUED })))
            .collect();
        Gather {
            tried,
            tickets,
            children,
            state: Mutex::new(State {
                answers: answered,
                pending,
                waiter: Some(waiter),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The child of each job.
    pub(crate) fn children(&self) -> &[usize] {
        &self.children
    }

    /// Whether each job's child was asked (not refused up front).
    pub(crate) fn tried(&self) -> &[bool] {
        &self.tried
    }

    /// Job `job`'s ticket.
    pub(crate) fn ticket(&self, job: usize) -> &Ticket {
        &self.tickets[job]
    }

    /// Job `job`'s answer. The last one wakes the waiting thread or runs
    /// the continuation, here.
    pub(crate) fn answer(&self, job: usize, answer: Answer) {
        let mut state = self.state();
        if state.waiter.is_none() {
            // Complete: its answers are taken.
            return;
        }
        let Some(slot) = state.answers.get_mut(job) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(answer);
        state.pending -= 1;
        if state.pending == 0 {
            self.complete(state);
        }
    }

    fn complete(&self, mut state: MutexGuard<'_, State>) {
        match state.waiter.take() {
            Some(Waiter::Thread(thread)) => {
                drop(state);
                thread.unpark();
            }
            Some(Waiter::Then(then)) => {
                let answers = take_answers(&mut state.answers);
                drop(state);
                then(self, answers);
            }
            None => {}
        }
    }

    /// Parks the calling thread (the [`Waiter::Thread`]) until every
    /// answer is in or `deadline` passes; says whether every answer is in.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        loop {
            if self.state().pending == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// Parks the calling thread (the [`Waiter::Thread`]) until every
    /// answer is in.
    pub(crate) fn wait(&self) {
        while self.state().pending > 0 {
            thread::park();
        }
    }

    /// Gives up on every job still unanswered at the deadline: each one
    /// that can be abandoned (counted in `late` of its child) fails with
    /// [`BackendError::Timeout`] of `timeout`; the others have answered
    /// meanwhile and their answers are on their way.
    pub(crate) fn expire<'a>(
        &self,
        late: impl Fn(usize) -> Option<&'a AtomicUsize>,
        timeout: Duration,
    ) {
        let unanswered: Vec<usize> = {
            let state = self.state();
            if state.waiter.is_none() {
                // Complete: every job was answered, and the answers taken.
                return;
            }
            state
                .answers
                .iter()
                .enumerate()
                .filter(|(_, a)| a.is_none())
                .map(|(job, _)| job)
                .collect()
        };
        for job in unanswered {
            let Some(late) = late(self.children[job]) else {
                continue;
            };
            if self.tickets[job].abandon(late) {
                self.answer(job, Err(BackendError::Timeout(timeout)));
            }
        }
    }

    /// Every answer, in job order, once [`Gather::wait_until`] said they
    /// are all in.
    pub(crate) fn take(&self) -> Vec<Answer> {
        take_answers(&mut self.state().answers)
    }
}

fn take_answers(answers: &mut [Option<Answer>]) -> Vec<Answer> {
    answers
        .iter_mut()
        .map(|a| {
            a.take().unwrap_or_else(|| {
                Err(BackendError::Unavailable(
                    "the child's worker stopped without answering".into(),
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A gather that completed (its continuation took the answers) is
    /// not expired by a watchdog that comes late: no job of it is
    /// abandoned, and no child's late count grows (which would keep that
    /// child out of every request after). Before, the taken answers looked
    /// unanswered, and the jobs answered up front (refused, or read on the
    /// caller's thread) still had tickets that could be abandoned.
    #[test]
    fn a_completed_gather_is_not_expired() {
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = ran.clone();
        let then: Then = Box::new(move |_, answers| {
            assert_eq!(answers.len(), 2);
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let gather = Gather::new(
            vec![0, 1],
            vec![Some(Ok(Reply::Done)), None],
            vec![true, true],
            Waiter::Then(then),
        );
        assert!(gather.ticket(1).start());
        assert!(gather.ticket(1).finish());
        gather.answer(1, Ok(Reply::Done));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let late = AtomicUsize::new(0);
        gather.expire(|_| Some(&late), Duration::from_millis(1));
        assert_eq!(late.load(Ordering::SeqCst), 0, "nothing abandoned");
        gather.answer(0, Ok(Reply::Done));
        assert_eq!(ran.load(Ordering::SeqCst), 1, "completed once");
        assert!(!gather.ticket(0).abandon(&late), "answered up front");
        assert_eq!(late.load(Ordering::SeqCst), 0);
    }
}
