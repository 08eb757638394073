//! The worker threads of one child.
//!
//! Each child has a fixed pool of threads (its backend's
//! [`Backend::max_in_flight`]) that take jobs from one queue. A volume
//! request fans out by queueing one job on each child, and each job's
//! answer goes to the request's [`Gather`], so the children work in
//! parallel, a child can have several requests in flight, and no thread is
//! spawned per request.
//!
//! How the jobs wait and which worker wakes for them: see `queue.rs`.
//!
//! A job abandoned by its caller at `child_timeout` (see [`Ticket`]) never
//! runs if it has not started, and is counted ([`Workers::abandoned`])
//! until its backend call returns if it has, so that the volume sends
//! nothing more to that child meanwhile.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;

use crate::backend::{Backend, BackendError, Extent};
use crate::buffer::BufferPool;
use crate::gather::Gather;
#[cfg(doc)]
use crate::gather::Ticket;
use crate::queue::{Job, Queue};

/// What a child is asked to do.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Read {
        offset: u64,
        length: usize,
    },
    Write {
        offset: u64,
        data: Bytes,
    },
    /// A resync's copy: [`Backend::write_copy`].
    Copy {
        offset: u64,
        data: Bytes,
    },
    WriteZeroes {
        offset: u64,
        length: u64,
        how: Zeroing,
    },
    Flush,
    BlockStatus {
        offset: u64,
        length: u64,
        limit: usize,
    },
}

/// How a child makes a range read as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zeroing {
    /// [`Backend::write_zeroes`]: deallocated where the storage allows.
    Zeroes,
    /// [`Backend::discard`]: the space freed where the child can.
    Discard,
    /// Zero buffers through [`Backend::write_at`], [`ZERO_PIECE`] bytes at a
    /// time, so that the range stays allocated (NBD's `NO_HOLE`). The
    /// pieces are one job of the child: the volume holds the range for the
    /// whole of it, so no read sees some pieces written and not others.
    Allocated,
}

/// The largest piece of [`Zeroing::Allocated`].
pub(crate) const ZERO_PIECE: usize = 1 << 20;

/// The zeroes [`Zeroing::Allocated`] writes (in `.bss`, not allocated).
static ZEROES: [u8; ZERO_PIECE] = [0; ZERO_PIECE];

/// What a child answered.
#[derive(Debug)]
pub(crate) enum Reply {
    Data(Vec<u8>),
    Done,
    Extents(Vec<Extent>),
}

/// The pool of threads that serves one child.
pub(crate) struct Workers {
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    exited: Receiver<()>,
    /// Jobs abandoned by their caller whose backend call has not returned.
    abandoned: Arc<AtomicUsize>,
    /// Flushes that failed with an I/O error (see [`Workers::flush_errors`]).
    flush_errors: Arc<AtomicU64>,
}

impl Workers {
    /// Starts `backend.max_in_flight()` threads named after the child;
    /// `abandoned` counts its abandoned calls and `flush_errors` its
    /// flushes that failed with an I/O error; both may be shared with the
    /// workers of another volume over the same backend.
    pub(crate) fn spawn(
        name: &str,
        backend: Arc<dyn Backend>,
        buffers: Arc<BufferPool>,
        abandoned: Arc<AtomicUsize>,
        flush_errors: Arc<AtomicU64>,
    ) -> std::io::Result<Workers> {
        let count = backend.max_in_flight().max(1);
        let queue = Arc::new(Queue::new(count));
        let (exit_tx, exited) = crossbeam_channel::unbounded();
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (jobs, backend, exit_tx, buffers, lost, flush_failed) = (
                queue.clone(),
                backend.clone(),
                exit_tx.clone(),
                buffers.clone(),
                abandoned.clone(),
                flush_errors.clone(),
            );
            let handle = thread::Builder::new()
                .name(format!("child-{name}-{i}"))
                .spawn(move || {
                    serve(i, &*backend, &buffers, &jobs, &lost, &flush_failed);
                    let _ = exit_tx.send(());
                });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    queue.stop();
                    return Err(e);
                }
            }
        }
        Ok(Workers {
            queue,
            threads: Mutex::new(threads),
            exited,
            abandoned,
            flush_errors,
        })
    }

    /// Queues `request` for this child as job `job` of `gather`, which
    /// gets its answer unless the job is abandoned first. Once the workers
    /// are stopping, the answer is that they have stopped, at once.
    pub(crate) fn submit(&self, gather: &Arc<Gather>, job: usize, request: Request) {
        let queued = self.queue.push(Job {
            gather: gather.clone(),
            job,
            request,
        });
        if let Err(Job { gather, job, .. }) = queued {
            gather.answer(
                job,
                Err(BackendError::Unavailable(
                    "the child's workers have stopped".into(),
                )),
            );
        }
    }

    /// How many of this child's flushes failed with an I/O error so far,
    /// whoever asked for them (a caller that gave up on one too). Linux
    /// reports a failed write-back to one `fsync` of the file and then
    /// forgets it, so a later flush that succeeds does not mean that what
    /// was written before it is on the disk: whoever must know that reads
    /// this before its writes go out and clears nothing if it moved.
    pub(crate) fn flush_errors(&self) -> u64 {
        self.flush_errors.load(Ordering::Acquire)
    }

    /// The shared count behind [`Workers::flush_errors`].
    pub(crate) fn flush_errors_shared(&self) -> Arc<AtomicU64> {
        self.flush_errors.clone()
    }

    /// The shared count of abandoned jobs (see [`Workers::spawn`]).
    pub(crate) fn late(&self) -> Arc<AtomicUsize> {
        self.abandoned.clone()
    }

    /// The count of abandoned jobs itself, for [`Gather::expire`].
    pub(crate) fn late_count(&self) -> &AtomicUsize {
        &self.abandoned
    }

    /// How many abandoned jobs of this child are still in its backend or
    /// its queue.
    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Stops the threads once their queued work is done, waiting until
    /// `deadline` at most. Returns how many threads had not stopped by then
    /// (they are stuck in the backend and are left behind).
    pub(crate) fn stop(&self, deadline: Instant) -> usize {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        self.queue.stop();
        let mut stopped = 0;
        while stopped < threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .exited
                .recv_timeout(left.max(Duration::from_millis(1)))
                .is_err()
            {
                break;
            }
            stopped += 1;
        }
        let stuck = threads.len() - stopped;
        for handle in std::mem::take(&mut *threads) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        stuck
    }
}

impl Drop for Workers {
    /// The threads finish the queued jobs and exit (a volume dropped
    /// without [`Workers::stop`] leaves no thread behind).
    fn drop(&mut self) {
        self.queue.stop();
    }
}

/// Worker number `worker`'s loop: every queued job, then a sleep.
fn serve(
    worker: usize,
    backend: &dyn Backend,
    buffers: &BufferPool,
    queue: &Queue,
    abandoned: &AtomicUsize,
    flush_errors: &AtomicU64,
) {
    let mut finished = None;
    while let Some((
        Job {
            gather,
            job,
            request,
        },
        took,
    )) = queue.next(worker, finished)
    {
        let ticket = gather.ticket(job);
        if !ticket.start() {
            abandoned.fetch_sub(1, Ordering::AcqRel);
        } else {
            let flush = matches!(request, Request::Flush);
            let result = run(backend, buffers, request);
            if flush && result.as_ref().is_err_and(BackendError::is_repairable) {
                flush_errors.fetch_add(1, Ordering::AcqRel);
            }
            if ticket.finish() {
                // The last answer may run the request's continuation here:
                // a panic in it must not take the worker along.
                let answered = catch_unwind(AssertUnwindSafe(|| gather.answer(job, result)));
                if answered.is_err() {
                    tracing::error!("a request's completion panicked on a child's worker");
                }
            } else {
                if let Ok(Reply::Data(buf)) = result {
                    buffers.give(buf);
                }
                abandoned.fetch_sub(1, Ordering::AcqRel);
            }
        }
        finished = Some(took);
    }
}

/// Runs one request on a child, on the calling thread; a panic in the
/// backend becomes an error of that child.
fn run(
    backend: &dyn Backend,
    buffers: &BufferPool,
    request: Request,
) -> Result<Reply, BackendError> {
    catch_unwind(AssertUnwindSafe(|| execute(backend, buffers, request)))
        .unwrap_or_else(|_| Err(BackendError::Unavailable("the backend panicked".into())))
}

fn execute(
    backend: &dyn Backend,
    buffers: &BufferPool,
    request: Request,
) -> Result<Reply, BackendError> {
    match request {
        Request::Read { offset, length } => {
            let mut buf = buffers.take(length);
            if let Err(e) = backend.read_at(&mut buf, offset) {
                buffers.give(buf);
                return Err(e);
            }
            Ok(Reply::Data(buf))
        }
        Request::Write { offset, data } => backend.write_at(&data, offset).map(|()| Reply::Done),
        Request::Copy { offset, data } => backend.write_copy(&data, offset).map(|()| Reply::Done),
        Request::WriteZeroes {
            offset,
            length,
            how,
        } => match how {
            Zeroing::Zeroes => backend.write_zeroes(offset, length),
            Zeroing::Discard => backend.discard(offset, length),
            Zeroing::Allocated => write_allocated_zeroes(backend, offset, length),
        }
        .map(|()| Reply::Done),
        Request::Flush => backend.flush().map(|()| Reply::Done),
        Request::BlockStatus {
            offset,
            length,
            limit,
        } => backend
            .block_status(offset, length, limit.max(1))
            .map(Reply::Extents),
    }
}

/// Writes `length` zero bytes at `offset` as data, piece by piece (see
/// [`Zeroing::Allocated`]).
fn write_allocated_zeroes(
    backend: &dyn Backend,
    offset: u64,
    length: u64,
) -> Result<(), BackendError> {
    BackendError::check_range(offset, length, backend.size()?)?;
    let end = offset + length;
    let mut at = offset;
    while at < end {
        let n = (end - at).min(ZERO_PIECE as u64) as usize;
        backend.write_at(&ZEROES[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
