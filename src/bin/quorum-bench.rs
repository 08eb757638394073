//! `quorum-bench`: drives the quorum engine directly over file children, as
//! `qemu-img bench` drives QEMU's block layer, so that the two can be
//! compared on the same files (see `bench/compare.sh` and BENCHMARKS.md).
//!
//! Like `qemu-img bench`, request `i` goes to `offset + i * step` (wrapping
//! at the end of the volume), with `depth` requests in flight.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use bytesize::ByteSize;
use clap::{Parser, ValueEnum};
use quorum_backends::FileBackend;
use quorum_core::{ChildSpec, NullSink, ReadPattern, Volume, VolumeOptions};

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
    let payload = Bytes::from(vec![0xa5u8; size as usize]);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..args.depth.max(1))
            .map(|_| {
                let (volume, next, payload) = (&volume, &next, payload.clone());
                s.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.count {
                            return Ok(());
                        }
                        let offset = (args.offset.as_u64() + i * step) % (span - size + 1);
                        if args.write {
                            volume.write(offset, payload.clone())?;
                        } else {
                            volume.read(offset, size as usize)?;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let ops = args.count as f64 / secs;
    let mib = ops * size as f64 / (1024.0 * 1024.0);
    println!(
        "{} {} requests of {} in {secs:.3} s: {ops:.0} ops/s, {mib:.1} MiB/s (depth {}, {} children)",
        args.count,
        if args.write { "write" } else { "read" },
        args.size,
        args.depth,
        n
    );
    Ok(())
}
