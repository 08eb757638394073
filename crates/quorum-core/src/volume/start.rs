//! Reads and writes started without blocking the caller, for front ends
//! that must not block their threads (the server's async runtime).
//!
//! [`Volume::start_read`] and [`Volume::start_write`] return at once. They
//! start a request only when that needs no wait: its range taken at once
//! (no overlapping request before it), and for a write its write-intent
//! regions dirty already (no journal record to sync first). Otherwise they
//! return [`WouldBlock`] having changed nothing, and the caller makes the
//! blocking call ([`Volume::read`], [`Volume::write`]) on a thread that may
//! block.
//!
//! A started request's last child answer (or the volume's watchdog, at
//! `child_timeout`) completes it on that thread. When every child answered
//! alike, that is all: the answer of a quorum read is the children's one
//! copy (of a fifo read, the first child's), a write is recorded as
//! unflushed, and the callback gets [`Completion::Done`]. Anything else may block (a vote with losers and
//! their rewrite, stale marks and their journal, a flush of children, the
//! stale maps' lock while someone else holds it across journal I/O), so
//! the callback gets [`Completion::Blocking`] with the rest of the request,
//! which is the blocking call's own code from the children's answers on,
//! for the caller to run on a thread that may block. The range stays held
//! until the request has ended either way, so the ordering of overlapping
//! requests (SPEC 8.1, 8.2) is the blocking calls' own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};

use bytes::Bytes;

use super::fanout::{AfterAnswers, Outcomes};
use super::{ReadPattern, Volume};
use crate::error::VolumeError;
use crate::event::Op;
use crate::gather::Answer;
use crate::intent::{Intent, Ticket as IntentTicket};
use crate::worker::{Reply, Request};

/// How a request started with [`Volume::start_read`] or
/// [`Volume::start_write`] ends.
pub enum Completion<T> {
    /// It is done.
    Done(Result<T, VolumeError>),
    /// The rest of it may block: [`Rest::run`] it on a thread that may.
    Blocking(Rest<T>),
}

/// The rest of a started request, which may block.
///
/// It holds the request's range until it has run. Dropped without
/// [`Rest::run`], it runs on drop: what a write owes the stale maps (the
/// children that missed it) is never skipped.
pub struct Rest<T> {
    work: Option<Box<dyn FnOnce() -> Result<T, VolumeError> + Send>>,
}

impl<T> Rest<T> {
    fn new(work: impl FnOnce() -> Result<T, VolumeError> + Send + 'static) -> Rest<T> {
        Rest {
            work: Some(Box::new(work)),
        }
    }

    /// Runs the rest of the request; its result is the request's.
    ///
    /// # Errors
    /// As the blocking call of the same request.
    pub fn run(mut self) -> Result<T, VolumeError> {
        let Some(work) = self.work.take() else {
            unreachable!("only run and drop take the work, and run takes self");
        };
        work()
    }
}

impl<T> Drop for Rest<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let _ = work();
        }
    }
}

/// A request that cannot start without waiting: nothing was done; make
/// the blocking call instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request cannot start without waiting; make the blocking call")]
pub struct WouldBlock;

/// What a started request holds until it ends: its range, and a write's
/// registration with the write-intent log. Given back on drop, the intent
/// first, as the blocking calls do.
struct Held {
    volume: Arc<Volume>,
    range: u64,
    intent: Option<IntentTicket>,
}

impl Held {
    /// Gives everything back, unless the write's intent would wait for the
    /// stale maps' lock (held across journal I/O): then `Err(self)`.
    fn try_release(mut self) -> Result<(), Held> {
        let Some(ticket) = self.intent.take() else {
            return Ok(());
        };
        let volume = Arc::clone(&self.volume);
        let mut maps = match volume.stale.try_lock() {
            Ok(maps) => maps,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.intent = Some(ticket);
                return Err(self);
            }
        };
        maps.intent.end(ticket);
        drop(maps);
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(ticket) = self.intent.take() {
            self.volume.stale_maps().intent.end(ticket);
        }
        self.volume.ranges.release(self.range);
    }
}

impl Volume {
    /// Starts a read of `length` bytes at `offset` (as [`Volume::read`])
    /// and returns at once; `done` gets its completion, once, on the
    /// thread that completes it (see the module's documentation).
    ///
    /// # Errors
    /// [`WouldBlock`] when it cannot start without waiting (an overlapping
    /// write holds the range), or a `fifo` volume has a stale child, or
    /// the request is not a plain one (empty, out of range): nothing was
    /// done, and [`Volume::read`] gives the answer.
    pub fn start_read(
        self: &Arc<Self>,
        offset: u64,
        length: usize,
        done: impl FnOnce(Completion<Bytes>) + Send + 'static,
    ) -> Result<(), WouldBlock> {
        if length == 0 {
            return Err(WouldBlock);
        }
        let end = self
            .check_range(offset, length as u64)
            .map_err(|_| WouldBlock)?;
        let request = Request::Read { offset, length };
        match self.options.read_pattern {
            ReadPattern::Quorum => {
                let held = self.hold(offset, end, false)?;
                let then: AfterAnswers = Box::new(move |volume, answers| {
                    let results = answers.into_iter().map(|(_, r)| r).collect();
                    done(volume.read_completion(offset, length, results, held));
                });
                self.start(request, then)
            }
            // The first child, when every child is fresh. Looked at once
            // the range is held: a write that made a child stale there
            // marked it before it gave the range back.
            ReadPattern::Fifo if !self.any_stale.load(Ordering::Acquire) => {
                let held = self.hold(offset, end, false)?;
                if self.any_stale.load(Ordering::Acquire) {
                    return Err(WouldBlock);
                }
                if let Some(answer) = self.answered_now(0, &request) {
                    done(self.fifo_completion(offset, length, Some((0, answer)), held));
                    return Ok(());
                }
                let then: AfterAnswers = Box::new(move |volume, mut answers| {
                    done(volume.fifo_completion(offset, length, answers.pop(), held));
                });
                self.dispatch_then(vec![(0, request)], then)
                    .ok_or(WouldBlock)
            }
            ReadPattern::Fifo => Err(WouldBlock),
        }
    }

    /// Starts a write of `data` at `offset` (as [`Volume::write`]) and
    /// returns at once; `done` gets its completion, once, on the thread
    /// that completes it (see the module's documentation).
    ///
    /// # Errors
    /// [`WouldBlock`] when it cannot start without waiting (an overlapping
    /// request holds the range, a write-intent region must be journaled
    /// first), or the request is not a plain one (empty, out of range):
    /// nothing was done, and [`Volume::write`] gives the answer.
    pub fn start_write(
        self: &Arc<Self>,
        offset: u64,
        data: Bytes,
        done: impl FnOnce(Completion<()>) + Send + 'static,
    ) -> Result<(), WouldBlock> {
        let length = data.len() as u64;
        if length == 0 {
            return Err(WouldBlock);
        }
        let end = self.check_range(offset, length).map_err(|_| WouldBlock)?;
        let mut held = self.hold(offset, end, true)?;
        held.intent = self.try_intend(offset..end)?;
        let before = self.flush_errors();
        let then: AfterAnswers = Box::new(move |volume, answers| {
            let results = answers.into_iter().map(|(_, r)| r).collect();
            done(volume.write_completion(Op::Write, offset, length, results, held, before));
        });
        self.start(Request::Write { offset, data }, then)
    }

    /// Takes `start..end` if that needs no wait.
    fn hold(self: &Arc<Self>, start: u64, end: u64, exclusive: bool) -> Result<Held, WouldBlock> {
        let range = self
            .ranges
            .try_take(start, end, exclusive)
            .ok_or(WouldBlock)?;
        Ok(Held {
            volume: self.clone(),
            range,
            intent: None,
        })
    }

    /// Registers a write of `range` with the write-intent log if that
    /// needs neither a journal record nor a wait for the lock.
    fn try_intend(&self, range: std::ops::Range<u64>) -> Result<Option<IntentTicket>, WouldBlock> {
        let mut maps = match self.stale.try_lock() {
            Ok(maps) => maps,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(WouldBlock),
        };
        if maps.journal.is_none() {
            return Ok(None);
        }
        let regions = Intent::regions(&range, self.size);
        maps.intent.try_begin(regions).map(Some).ok_or(WouldBlock)
    }

    /// Sends `request` to every child; `then` gets the answers.
    fn start(self: &Arc<Self>, request: Request, then: AfterAnswers) -> Result<(), WouldBlock> {
        let jobs = (0..self.children.len())
            .map(|i| (i, request.clone()))
            .collect();
        self.dispatch_then(jobs, then).ok_or(WouldBlock)
    }

    /// A started read's completion from the children's `results`: their
    /// one copy when every child answered alike (and no child is stale, so
    /// that every copy counts), the rest of [`Volume::read`] otherwise.
    fn read_completion(
        self: &Arc<Self>,
        offset: u64,
        length: usize,
        results: Outcomes,
        held: Held,
    ) -> Completion<Bytes> {
        let mut others = results.into_iter();
        match others.next() {
            Some(Ok(Reply::Data(first)))
                if first.len() == length
                    && !self.options.blkverify
                    && !self.any_stale.load(Ordering::Acquire)
                    && others
                        .as_slice()
                        .iter()
                        .all(|r| matches!(r, Ok(Reply::Data(copy)) if *copy == first)) =>
            {
                for copy in others {
                    if let Ok(Reply::Data(copy)) = copy {
                        self.buffers.give(copy);
                    }
                }
                drop(held);
                Completion::Done(Ok(self.buffers.bytes(first)))
            }
            first => {
                let results: Outcomes = first.into_iter().chain(others).collect();
                let volume = self.clone();
                Completion::Blocking(Rest::new(move || {
                    let mut reports = volume.reports();
                    let answer = volume.quorum_answer(offset, length, results, &mut reports);
                    drop(held);
                    drop(reports);
                    answer
                }))
            }
        }
    }

    /// A started fifo read's completion from the first child's answer:
    /// its data when it read, the rest of [`Volume::read`] otherwise (the
    /// next children, in order).
    fn fifo_completion(
        self: &Arc<Self>,
        offset: u64,
        length: usize,
        first: Option<(usize, Answer)>,
        held: Held,
    ) -> Completion<Bytes> {
        match first {
            Some((_, Ok(Reply::Data(data)))) if data.len() == length => {
                drop(held);
                Completion::Done(Ok(self.buffers.bytes(data)))
            }
            first => {
                let volume = self.clone();
                Completion::Blocking(Rest::new(move || {
                    let mut reports = volume.reports();
                    let answer = volume.fifo_answer(offset, length, first, &mut reports);
                    drop(held);
                    drop(reports);
                    answer
                }))
            }
        }
    }

    /// A started write's completion from the children's `results`: done
    /// once recorded as unflushed when every child took it, no child is
    /// stale or damaged, and no flush failed since the write went out (the
    /// counts were `before`); the rest of [`Volume::write`] otherwise.
    fn write_completion(
        self: &Arc<Self>,
        op: Op,
        offset: u64,
        length: u64,
        results: Outcomes,
        held: Held,
        before: Vec<u64>,
    ) -> Completion<()> {
        let volume = self.clone();
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        if failed.contains(&true)
            || self.any_damaged.load(Ordering::Acquire)
            || (0..failed.len()).any(|i| self.flush_failed_since(i, &before))
        {
            return Completion::Blocking(Rest::new(move || {
                let result = volume.write_answered(op, offset, length, results, &before);
                drop(held);
                result
            }));
        }
        let range = offset..offset + length;
        self.note_unflushed(&range, &failed);
        if self.any_stale.load(Ordering::Acquire) {
            return Completion::Blocking(Rest::new(move || {
                let result = volume.note_stale_written(range, &failed, &before);
                drop(held);
                result
            }));
        }
        match held.try_release() {
            Ok(()) => Completion::Done(Ok(())),
            Err(held) => Completion::Blocking(Rest::new(move || {
                drop(held);
                Ok(())
            })),
        }
    }
}
