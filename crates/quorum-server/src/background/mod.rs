//! Background work in one shape: a [`Worker`] that does one step at a time,
//! driven on its own thread by a [`Runner`].
//!
//! This is garage's `util/background/worker.rs` made synchronous (the
//! engine's calls block, so a worker is a std thread, not a task):
//!
//! - A worker says what it is ([`Worker::name`]) and how far it has got
//!   ([`Worker::status`], a typed value the runner posts after every step:
//!   the API shows what was posted and never waits for a step).
//! - [`Worker::work`] does one step and says what comes next
//!   ([`WorkerState`]): another step at once, another after a pause (the
//!   rate limit, a back-off), waiting for work, or nothing ever again.
//! - [`Worker::wait_for_work`] blocks on the worker's [`Inbox`] until new
//!   work is announced ([`Bell`]), a command arrives or the runner stops.
//! - Commands (pause, resume, cancel: each worker has its own type) are sent
//!   through the runner and handed to [`Worker::command`] between steps.
//!
//! Nothing here polls: every wait is one condition variable's, woken by a
//! command, a ring or a stop; a pause (pacing) is a wait with a timeout
//! that a command or a stop ends early (a ring only re-posts the status,
//! as new work may change what it shows). The
//! runner stops on a signal: the step under way finishes, and
//! [`Runner::join`] waits for it until a deadline and says which worker did
//! not stop in time (it is stuck in a step, and left behind).
//!
//! The parts, one file each:
//!
//! - `inbox.rs`: the condition variable a worker waits on, with its
//!   commands, the work bell and the stop signal.
//! - `runner.rs`: the thread that drives a worker, and its stop.
//! - `pace.rs`: the rate limit (how long to pause after a step) and the
//!   measured rate of a spell of work.

mod inbox;
mod pace;
mod runner;

use std::time::Duration;

pub use inbox::{Bell, Inbox, Wake};
pub use pace::{Pace, Throughput};
pub use runner::{NotStopped, Runner};

/// What a worker does next, as its last step said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Step again at once.
    Busy,
    /// Step again after this pause (the rate limit, or a back-off after a
    /// failed step); a command or a stop ends the pause early.
    Throttled(Duration),
    /// Nothing to do: wait for work ([`Worker::wait_for_work`]).
    Idle,
    /// Finished for good: the runner's thread ends.
    Done,
}

/// Background work, one step at a time.
///
/// # Contract
///
/// The runner calls the methods on its own thread, one at a time: between
/// steps it hands over the commands sent ([`Worker::command`]), then, until
/// it is stopped or the worker is done, calls [`Worker::work`] (when busy or
/// when a pause is over) or [`Worker::wait_for_work`] (when idle), and posts
/// [`Worker::status`] after each of them. A step should be short (a
/// stop waits for it); one that never returns makes [`Runner::join`] report
/// the worker as not stopped in time.
pub trait Worker: Send + 'static {
    /// What can be sent to the worker while it runs.
    type Command: Send + 'static;
    /// How far it has got, as the API shows it.
    type Status: Send + 'static;

    /// A short name for logs and its thread, such as `scrub-vm-3`.
    fn name(&self) -> String;

    /// How far it has got.
    fn status(&self) -> Self::Status;

    /// Does one step of work and says what comes next.
    fn work(&mut self) -> WorkerState;

    /// Blocks until there may be work: on `inbox` ([`Inbox::wait`]), which
    /// also wakes for a command or a stop. Returns [`WorkerState::Busy`]
    /// to step, or [`WorkerState::Idle`] to be called again after the
    /// runner has handed over the commands and checked for a stop.
    fn wait_for_work(&mut self, inbox: &Inbox<Self::Command>) -> WorkerState;

    /// Takes a command between steps. Returns what to do next instead of
    /// what the last step said, or `None` to go on as before.
    fn command(&mut self, command: Self::Command) -> Option<WorkerState>;
}
