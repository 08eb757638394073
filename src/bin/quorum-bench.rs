//! `quorum-bench`: drives the quorum engine directly over file children, as
//! `qemu-img bench` drives QEMU's block layer, so that the two can be
//! compared on the same files (see `bench/compare.sh` and BENCHMARKS.md).
//!
//! Like `qemu-img bench`, request `i` goes to `offset + i * step` (wrapping
//! at the end of the volume), with `depth` requests in flight: by default
//! `depth` threads each making blocking calls; with `--started`, one
//! thread that keeps `depth` requests started without blocking
//! (`Volume::start_read`, `start_write`, as the server's NBD and HTTP
//! front ends do) and is woken by their completions, as `qemu-img bench`
//! runs one event loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use bytesize::ByteSize;
use clap::{Parser, ValueEnum};
use quorum_backends::FileBackend;
use quorum_core::{
    ChildSpec, Completion, NullSink, ReadPattern, Volume, VolumeError, VolumeOptions,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Pattern {
    Quorum,
    Fifo,
}

/// Benchmarks the quorum engine over file children.
#[derive(Debug, Parser)]
#[command(name = "quorum-bench", version)]
struct Args {
    /// Number of requests.
    #[arg(short = 'c', long, default_value_t = 75_000)]
    count: u64,
    /// Requests in flight.
    #[arg(short = 'd', long, default_value_t = 64)]
    depth: usize,
    /// Size of each request (bytes, or 4KiB, 1MiB, ...).
    #[arg(short = 's', long, default_value = "4KiB")]
    size: ByteSize,
    /// Offset increment between requests (default: the request size).
    #[arg(short = 'S', long)]
    step: Option<ByteSize>,
    /// Offset of the first request.
    #[arg(short = 'o', long, default_value = "0")]
    offset: ByteSize,
    /// Write instead of read.
    #[arg(short = 'w', long)]
    write: bool,
    /// Read pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Quorum)]
    pattern: Pattern,
    /// Vote threshold (default: a majority of the children).
    #[arg(long)]
    threshold: Option<usize>,
    /// Start the requests without blocking, from one thread, instead of
    /// making blocking calls from `depth` threads.
    #[arg(long)]
    started: bool,
    /// The children: existing files of equal size.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let children = args
        .files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let backend = FileBackend::open(path, None)
                .with_context(|| format!("child {i}: {}", path.display()))?;
            Ok(ChildSpec::new(format!("children.{i}"), Arc::new(backend)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = children.len();
    let options = VolumeOptions {
        name: "bench".into(),
        vote_threshold: args.threshold.unwrap_or(n / 2 + 1),
        read_pattern: match args.pattern {
            Pattern::Quorum => ReadPattern::Quorum,
            Pattern::Fifo => ReadPattern::Fifo,
        },
        rewrite_corrupted: false,
        blkverify: false,
        child_timeout: VolumeOptions::DEFAULT_CHILD_TIMEOUT,
    };
    // Journaled as the server's volumes are, so that the stale map and the
    // write-intent log cost what they cost there.
    let state = tempfile::tempdir()?;
    let journal = state.path().join("bench.jsonl");
    let volume = Arc::new(Volume::open_journaled(
        options,
        children,
        Arc::new(NullSink),
        Some(&journal),
    )?);
    let size = args.size.as_u64();
    let step = args.step.map_or(size, |s| s.as_u64());
    let span = volume.size();
    if size == 0 || size > span {
        bail!("the request size must be between 1 byte and the volume's {span} bytes");
    }
    let load = Load {
        volume: &volume,
        payload: Bytes::from(vec![0xa5u8; size as usize]),
        write: args.write,
        count: args.count,
        depth: args.depth.max(1),
        offset: |i: u64| (args.offset.as_u64() + i * step) % (span - size + 1),
        size: size as usize,
    };
    let started = Instant::now();
    if args.started {
        load.started()?;
    } else {
        load.blocking()?;
    }
    let secs = started.elapsed().as_secs_f64();
    let ops = args.count as f64 / secs;
    let mib = ops * size as f64 / (1024.0 * 1024.0);
    println!(
        "{} {} requests of {} in {secs:.3} s: {ops:.0} ops/s, {mib:.1} MiB/s (depth {}, {} children{})",
        args.count,
        if args.write { "write" } else { "read" },
        args.size,
        args.depth,
        n,
        if args.started { ", started" } else { "" }
    );
    Ok(())
}

/// The requests of one run.
struct Load<'a, O> {
    volume: &'a Arc<Volume>,
    payload: Bytes,
    write: bool,
    count: u64,
    depth: usize,
    /// The offset of request `i`.
    offset: O,
    size: usize,
}

impl<O: Fn(u64) -> u64 + Sync> Load<'_, O> {
    /// `depth` threads, each making blocking calls.
    fn blocking(&self) -> anyhow::Result<()> {
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
    fn started(&self) -> anyhow::Result<()> {
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
