//! The jobs of one child and its workers' sleep.
//!
//! A worker takes every queued job before it sleeps, and a queued job
//! wakes a sleeping worker only when the workers already awake or being
//! woken will not take it soon: a busy child costs no wake-up per job, and
//! a quick child (a file in the page cache) has its jobs taken in turn by
//! the worker that is awake rather than wake one per job. A worker sleeps
//! on a condition variable at once, without spinning or yielding first (a
//! spin that yields costs a system call, and on a machine with few cores
//! it hands the core to another thread of the same request).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::gather::Gather;
use crate::worker::Request;

/// One job: `request`, whose answer is job `job` of `gather`.
pub(crate) struct Job {
    pub(crate) gather: Arc<Gather>,
    pub(crate) job: usize,
    pub(crate) request: Request,
}

/// The jobs of one child, and its workers' sleep.
pub(crate) struct Queue {
    state: Mutex<Queued>,
    ready: Condvar,
}

struct Queued {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job (counted until they hold the lock again).
    sleeping: usize,
    /// Wake-ups sent that no worker has come out of its wait for yet.
    waking: usize,
    /// No more jobs: the workers finish the queued ones and exit.
    stopping: bool,
    /// When each worker took the job it works on, by worker.
    started: Vec<Option<Instant>>,
    /// How long a job takes, taken to its answer, on average (an
    /// exponential average of the last few, in nanoseconds).
    average: u64,
}

/// A child whose jobs take less than this on average is quick: a job
/// queued behind a running one waits for it rather than wake a worker (a
/// wake-up and the sleep after it cost the CPU of several such jobs).
const QUICK: Duration = Duration::from_micros(50);

impl Queued {
    fn new(workers: usize) -> Queued {
        Queued {
            jobs: VecDeque::new(),
            sleeping: 0,
            waking: 0,
            stopping: false,
            started: vec![None; workers],
            // Not quick until jobs have shown it.
            average: QUICK.as_nanos() as u64,
        }
    }

    /// Whether the job just queued needs a sleeping worker woken: when no
    /// worker that is awake (woken, or running a job) will take it soon.
    /// A slow child's running workers may be in a long call, so its queued
    /// jobs each get a worker; a quick child's take the queue in turn,
    /// unless each one has been in its job for longer than [`QUICK`].
    fn needs_wake(&self) -> bool {
        if self.sleeping <= self.waking {
            return false;
        }
        if self.average >= QUICK.as_nanos() as u64 {
            return self.jobs.len() > self.waking;
        }
        let now = Instant::now();
        self.waking == 0
            && !self
                .started
                .iter()
                .flatten()
                .any(|at| now.saturating_duration_since(*at) < QUICK)
    }

    /// Worker `worker` is done with the job it took at `at`.
    fn done(&mut self, worker: usize, at: Instant) {
        self.started[worker] = None;
        let took = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.average = self.average - self.average / 8 + took / 8;
    }
}

impl Queue {
    /// The queue of a child served by `workers` threads.
    pub(crate) fn new(workers: usize) -> Queue {
        Queue {
            state: Mutex::new(Queued::new(workers)),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, waking a worker if it needs one; gives it back once
    /// the queue is stopping.
    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        let mut queued = self.lock();
        if queued.stopping {
            return Err(job);
        }
        queued.jobs.push_back(job);
        let wake = queued.needs_wake();
        if wake {
            queued.waking += 1;
        }
        drop(queued);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Worker `worker`'s next job and when it took it, waited for: `None`
    /// once the queue is stopping and empty. `finished` is when the worker
    /// took the job it has just finished, if any.
    pub(crate) fn next(&self, worker: usize, finished: Option<Instant>) -> Option<(Job, Instant)> {
        let mut queued = self.lock();
        if let Some(at) = finished {
            queued.done(worker, at);
        }
        loop {
            if let Some(job) = queued.jobs.pop_front() {
                let at = Instant::now();
                queued.started[worker] = Some(at);
                return Some((job, at));
            }
            if queued.stopping {
                return None;
            }
            queued.sleeping += 1;
            queued = self
                .ready
                .wait(queued)
                .unwrap_or_else(PoisonError::into_inner);
            queued.sleeping -= 1;
            queued.waking = queued.waking.saturating_sub(1);
        }
    }

    /// Stops taking jobs; the workers finish the queued ones and exit.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.ready.notify_all();
    }
}
