//! Driving the engine: `depth` requests in flight, as blocking calls of
//! `depth` threads or started from one thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;
use quorum_core::{Completion, Event, EventSink, Volume, VolumeError};

/// The requests of one run.
pub(crate) struct Load<'a, O> {
    pub(crate) volume: &'a Arc<Volume>,
    pub(crate) payload: Bytes,
    pub(crate) write: bool,
    pub(crate) count: u64,
    pub(crate) depth: usize,
    /// The offset of request `i`.
    pub(crate) offset: O,
    pub(crate) size: usize,
}

impl<O: Fn(u64) -> u64 + Sync> Load<'_, O> {
    /// `depth` threads, each making blocking calls.
    pub(crate) fn blocking(&self) -> anyhow::Result<()> {
        let next = AtomicU64::new(0);
        std::thread::scope(|s| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..self.depth)
                .map(|_| {
                    let next = &next;
                    s.spawn(move || -> anyhow::Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= self.count {
                                return Ok(());
                            }
                            self.call(i)?;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
            }
            Ok(())
        })
    }

    /// Request `i` as a blocking call.
    fn call(&self, i: u64) -> Result<(), VolumeError> {
        let offset = (self.offset)(i);
        if self.write {
            self.volume.write(offset, self.payload.clone())
        } else {
            self.volume.read(offset, self.size).map(drop)
        }
    }

    /// One thread that keeps `depth` requests started and sleeps until one
    /// completes; a request that cannot start without waiting is made as a
    /// blocking call here, and the rest of one that needs it runs here.
    pub(crate) fn started(&self) -> anyhow::Result<()> {
        let completions = Arc::new(Completions::default());
        let (mut issued, mut done) = (0u64, 0u64);
        while done < self.count {
            while issued < self.count && issued - done < self.depth as u64 {
                if !self.start(issued, &completions) {
                    self.call(issued)?;
                    done += 1;
                }
                issued += 1;
            }
            if done == self.count {
                break;
            }
            for finished in completions.wait() {
                finished.finish()?;
                done += 1;
            }
        }
        Ok(())
    }

    /// Starts request `i`; `false` when it cannot start without waiting.
    fn start(&self, i: u64, completions: &Arc<Completions>) -> bool {
        let (offset, to) = ((self.offset)(i), completions.clone());
        let started = if self.write {
            let done = move |c| to.push(Finished::Write(c));
            self.volume.start_write(offset, self.payload.clone(), done)
        } else {
            let done = move |c| to.push(Finished::Read(c));
            self.volume.start_read(offset, self.size, done)
        };
        started.is_ok()
    }
}

/// A started request's completion.
enum Finished {
    Read(Completion<Bytes>),
    Write(Completion<()>),
}

impl Finished {
    fn finish(self) -> Result<(), VolumeError> {
        fn result<T>(c: Completion<T>) -> Result<(), VolumeError> {
            match c {
                Completion::Done(r) => r.map(drop),
                Completion::Blocking(rest) => rest.run().map(drop),
            }
        }
        match self {
            Finished::Read(c) => result(c),
            Finished::Write(c) => result(c),
        }
    }
}

/// The completions not taken yet, and the bench thread's sleep.
#[derive(Default)]
struct Completions {
    state: Mutex<(Vec<Finished>, bool)>,
    ready: Condvar,
}

impl Completions {
    fn push(&self, finished: Finished) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0.push(finished);
        let waiting = std::mem::take(&mut state.1);
        drop(state);
        if waiting {
            self.ready.notify_one();
        }
    }

    /// Every completion so far, waited for if there is none.
    fn wait(&self) -> Vec<Finished> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.0.is_empty() {
            state.1 = true;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        std::mem::take(&mut state.0)
    }
}

/// The children's failures and lost votes of a run: a run with any
/// measured a volume that was not healthy, which the figures must not hide.
#[derive(Default)]
pub(crate) struct Reports {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Reports {
    /// An error when any child failed a request or lost a vote.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return Ok(());
        }
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        anyhow::bail!(
            "{count} child failures or lost votes during the run (the first: {first}); the figures are not those of a healthy volume"
        )
    }
}

impl EventSink for Reports {
    fn emit(&self, _volume: &str, event: Event) {
        if let Event::ReportBad { child, error, .. } = event {
            if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
                let what = error.unwrap_or_else(|| "its answer lost the vote".into());
                *self.first.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(format!("{child}: {what}"));
            }
        }
    }
}
