//! The thread that drives a worker, and its stop with a deadline.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::{Bell, Inbox, Wake, Worker, WorkerState};

/// A worker did not stop by the deadline: it is stuck in a step, and its
/// thread is left behind.
#[derive(Debug, thiserror::Error)]
#[error("worker {0} did not stop in time: it is still in a step, and is left running")]
pub struct NotStopped(pub String);

/// A worker running on its own thread.
///
/// Dropping it tells the worker to stop, without waiting.
#[derive(Debug)]
pub struct Runner<C> {
    name: String,
    inbox: Arc<Inbox<C>>,
    /// Disconnected when the thread has ended (its sender is dropped then,
    /// also by a panic).
    exited: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl<C: Send + 'static> Runner<C> {
    /// Starts `worker` on a thread named after it. `post` receives its
    /// status now (so that it is there when this returns), then after
    /// every step, on the worker's thread.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn<W>(
        worker: W,
        post: impl FnMut(W::Status) + Send + 'static,
    ) -> std::io::Result<Runner<C>>
    where
        W: Worker<Command = C>,
    {
        Runner::spawn_with_bell(worker, post, |_| {})
    }

    /// As [`Runner::spawn`], handing the worker's bell to `bell` before the
    /// thread starts: whatever rings it then cannot miss the first step.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn_with_bell<W>(
        worker: W,
        mut post: impl FnMut(W::Status) + Send + 'static,
        bell: impl FnOnce(Bell),
    ) -> std::io::Result<Runner<C>>
    where
        W: Worker<Command = C>,
    {
        let name = worker.name();
        post(worker.status());
        let inbox = Arc::new(Inbox::new());
        bell(Bell::new(&inbox));
        let (alive, exited) = mpsc::channel::<()>();
        let theirs = inbox.clone();
        let thread = thread::Builder::new().name(name.clone()).spawn(move || {
            let _alive = alive;
            drive(worker, &theirs, post);
        })?;
        Ok(Runner {
            name,
            inbox,
            exited,
            thread: Some(thread),
        })
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `command`; the worker takes it after its current step, or at
    /// once if it is waiting.
    pub fn send(&self, command: C) {
        self.inbox.send(command);
    }

    /// What tells the worker that there may be new work.
    pub fn bell(&self) -> Bell {
        Bell::new(&self.inbox)
    }

    /// Whether the worker's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Tells the worker to stop after its current step, without waiting.
    pub fn signal_stop(&self) {
        self.inbox.stop();
    }

    /// Stops the worker and waits for its thread until `deadline`.
    ///
    /// # Errors
    /// [`NotStopped`] when its step did not end in time.
    pub fn stop(self, deadline: Instant) -> Result<(), NotStopped> {
        self.signal_stop();
        self.join(deadline)
    }

    /// Waits until `deadline` for the thread of a worker told to stop (or
    /// done) to end.
    ///
    /// # Errors
    /// [`NotStopped`] when it did not end in time; it is left running.
    pub fn join(mut self, deadline: Instant) -> Result<(), NotStopped> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.exited.recv_timeout(left) {
            Err(RecvTimeoutError::Timeout) => Err(NotStopped(self.name.clone())),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    if thread.join().is_err() {
                        tracing::error!(worker = self.name, "the worker panicked");
                    }
                }
                Ok(())
            }
        }
    }
}

impl<C> Drop for Runner<C> {
    fn drop(&mut self) {
        self.inbox.stop();
    }
}

/// What the runner does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Step,
    PauseUntil(Instant),
    WaitForWork,
    Done,
}

impl From<WorkerState> for Next {
    fn from(state: WorkerState) -> Next {
        match state {
            WorkerState::Busy => Next::Step,
            WorkerState::Throttled(pause) if pause.is_zero() => Next::Step,
            WorkerState::Throttled(pause) => Next::PauseUntil(Instant::now() + pause),
            WorkerState::Idle => Next::WaitForWork,
            WorkerState::Done => Next::Done,
        }
    }
}

/// The runner's loop: commands between steps, then a step, a pause or a
/// wait for work, until the worker is done or the runner stops.
fn drive<W: Worker>(mut worker: W, inbox: &Inbox<W::Command>, mut post: impl FnMut(W::Status)) {
    let mut next = Next::Step;
    loop {
        let mut commanded = false;
        while let Some(command) = inbox.take() {
            if let Some(state) = worker.command(command) {
                next = Next::from(state);
            }
            commanded = true;
        }
        if commanded {
            post(worker.status());
        }
        if next == Next::Done || inbox.stopping() {
            break;
        }
        next = match next {
            Next::Step => {
                let state = worker.work();
                post(worker.status());
                Next::from(state)
            }
            Next::PauseUntil(until) => match inbox.wait(Some(until)) {
                Wake::TimedOut => Next::Step,
                Wake::Rung => {
                    // What the worker shows may have changed (new work);
                    // the pause goes on.
                    post(worker.status());
                    next
                }
                Wake::Command | Wake::Stop => next,
            },
            Next::WaitForWork => Next::from(worker.wait_for_work(inbox)),
            Next::Done => break,
        };
    }
    tracing::debug!(worker = worker.name(), "worker stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender};
    use std::time::Duration;

    use super::*;

    /// Far longer than any test should take: a wait that reaches it has
    /// not been woken.
    const NEVER: Duration = Duration::from_secs(600);
    /// A generous bound for what should take milliseconds.
    const PROMPTLY: Duration = Duration::from_secs(10);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Command {
        Pause,
        Resume,
        Finish,
    }

    /// Counts steps; after each it pauses for `pause`, or waits for work
    /// when paused. Says what it took on `seen`.
    struct Counter {
        steps: u64,
        pause: Duration,
        paused: bool,
        seen: Sender<String>,
    }

    impl Worker for Counter {
        type Command = Command;
        type Status = u64;

        fn name(&self) -> String {
            "counter".into()
        }

        fn status(&self) -> u64 {
            self.steps
        }

        fn work(&mut self) -> WorkerState {
            if self.paused {
                return WorkerState::Idle;
            }
            self.steps += 1;
            let _ = self.seen.send(format!("step {}", self.steps));
            WorkerState::Throttled(self.pause)
        }

        fn wait_for_work(&mut self, inbox: &Inbox<Command>) -> WorkerState {
            match inbox.wait(None) {
                Wake::Rung if !self.paused => WorkerState::Busy,
                _ => WorkerState::Idle,
            }
        }

        fn command(&mut self, command: Command) -> Option<WorkerState> {
            let _ = self.seen.send(format!("{command:?}"));
            match command {
                Command::Pause => {
                    self.paused = true;
                    Some(WorkerState::Idle)
                }
                Command::Resume => {
                    self.paused = false;
                    Some(WorkerState::Busy)
                }
                Command::Finish => Some(WorkerState::Done),
            }
        }
    }

    fn counter(pause: Duration) -> (Counter, Receiver<String>) {
        let (seen, rx) = mpsc::channel();
        let worker = Counter {
            steps: 0,
            pause,
            paused: false,
            seen,
        };
        (worker, rx)
    }

    fn expect(rx: &Receiver<String>, what: &str) {
        let started = Instant::now();
        match rx.recv_timeout(PROMPTLY) {
            Ok(got) => assert_eq!(got, what),
            Err(e) => panic!("waited {:?} for {what:?}: {e}", started.elapsed()),
        }
    }

    #[test]
    fn a_command_ends_a_long_pause_at_once() {
        let (worker, seen) = counter(NEVER);
        let runner = Runner::spawn(worker, |_| {}).expect("spawn");
        expect(&seen, "step 1");
        // The worker pauses for ten minutes; the command does not wait.
        let sent = Instant::now();
        runner.send(Command::Pause);
        expect(&seen, "Pause");
        runner.send(Command::Resume);
        expect(&seen, "Resume");
        expect(&seen, "step 2");
        assert!(sent.elapsed() < PROMPTLY, "took {:?}", sent.elapsed());
        runner
            .stop(Instant::now() + PROMPTLY)
            .expect("a pausing worker stops");
    }

    #[test]
    fn a_stop_ends_a_pause_and_a_wait_for_work() {
        let (worker, seen) = counter(NEVER);
        let runner = Runner::spawn(worker, |_| {}).expect("spawn");
        expect(&seen, "step 1");
        let asked = Instant::now();
        runner
            .stop(asked + PROMPTLY)
            .expect("a pausing worker stops");
        assert!(asked.elapsed() < PROMPTLY);

        let (worker, seen) = counter(NEVER);
        let runner = Runner::spawn(worker, |_| {}).expect("spawn");
        expect(&seen, "step 1");
        runner.send(Command::Pause);
        expect(&seen, "Pause");
        let asked = Instant::now();
        runner
            .stop(asked + PROMPTLY)
            .expect("a waiting worker stops");
        assert!(asked.elapsed() < PROMPTLY);
    }

    #[test]
    fn a_worker_posts_after_each_step_and_may_end_by_itself() {
        let (worker, seen) = counter(NEVER);
        let (posted, statuses) = mpsc::channel();
        let runner = Runner::spawn(worker, move |s| {
            let _ = posted.send(s);
        })
        .expect("spawn");
        expect(&seen, "step 1");
        runner.send(Command::Pause);
        expect(&seen, "Pause");
        // Paused, it waits for work: a ring does not make it step, a
        // resume does.
        runner.bell().ring();
        runner.send(Command::Resume);
        expect(&seen, "Resume");
        expect(&seen, "step 2");
        runner.send(Command::Finish);
        expect(&seen, "Finish");
        // It ends by itself: the join does not wait for a stop.
        runner
            .join(Instant::now() + PROMPTLY)
            .expect("a finished worker's thread ends");
        let statuses: Vec<u64> = statuses.try_iter().collect();
        assert_eq!(statuses.first(), Some(&0), "{statuses:?}");
        assert_eq!(statuses.last(), Some(&2), "{statuses:?}");
        assert!(statuses.windows(2).all(|w| w[0] <= w[1]), "{statuses:?}");
    }

    #[test]
    fn a_ring_makes_an_idle_worker_step() {
        struct Waiter(Sender<()>);
        impl Worker for Waiter {
            type Command = ();
            type Status = ();
            fn name(&self) -> String {
                "waiter".into()
            }
            fn status(&self) {}
            fn work(&mut self) -> WorkerState {
                let _ = self.0.send(());
                WorkerState::Idle
            }
            fn wait_for_work(&mut self, inbox: &Inbox<()>) -> WorkerState {
                match inbox.wait(None) {
                    Wake::Rung => WorkerState::Busy,
                    _ => WorkerState::Idle,
                }
            }
            fn command(&mut self, (): ()) -> Option<WorkerState> {
                None
            }
        }
        let (steps, stepped) = mpsc::channel();
        let runner = Runner::spawn(Waiter(steps), |()| {}).expect("spawn");
        stepped.recv_timeout(PROMPTLY).expect("the first step");
        for _ in 0..3 {
            runner.bell().ring();
            stepped.recv_timeout(PROMPTLY).expect("a step after a ring");
        }
        runner.stop(Instant::now() + PROMPTLY).expect("stops");
    }

    #[test]
    fn a_worker_stuck_in_a_step_is_reported_as_not_stopped_in_time() {
        /// Its step waits for a message that comes only when the test ends.
        struct Stuck(Receiver<()>, Sender<()>);
        impl Worker for Stuck {
            type Command = ();
            type Status = ();
            fn name(&self) -> String {
                "stuck".into()
            }
            fn status(&self) {}
            fn work(&mut self) -> WorkerState {
                let _ = self.1.send(());
                let _ = self.0.recv();
                WorkerState::Done
            }
            fn wait_for_work(&mut self, _: &Inbox<()>) -> WorkerState {
                WorkerState::Done
            }
            fn command(&mut self, (): ()) -> Option<WorkerState> {
                None
            }
        }
        let (release, held) = mpsc::channel();
        let (entered, in_step) = mpsc::channel();
        let runner = Runner::spawn(Stuck(held, entered), |()| {}).expect("spawn");
        in_step.recv_timeout(PROMPTLY).expect("the step began");
        let asked = Instant::now();
        let deadline = asked + Duration::from_millis(200);
        let err = runner.stop(deadline).expect_err("stuck in its step");
        assert_eq!(err.0, "stuck");
        assert!(err.to_string().contains("did not stop in time"), "{err}");
        assert!(Instant::now() >= deadline, "it waited for the deadline");
        assert!(asked.elapsed() < PROMPTLY, "and no longer");
        drop(release);
    }
}
