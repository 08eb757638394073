//! `quorum-bench`: drives the quorum engine directly, as `qemu-img bench`
//! drives QEMU's block layer, so that the two can be compared on the same
//! files (see `bench/compare.sh` and BENCHMARKS.md), and drives a volume of
//! S3 children against the children's own object_store client
//! (`bench/s3.sh`).
//!
//! The children are files named on the command line, or (`--config`) the
//! children of a volume of a server config, opened as the server opens
//! them. With `--direct`, no engine runs: the first child's object_store
//! client (an s3 child's) stores or fetches whole objects of the request
//! size, the ceiling of what that client gets from the store.
//!
//! Like `qemu-img bench`, request `i` goes to `offset + i * step` (wrapping
//! at the end of the volume), or with `--random` to a random multiple of
//! the request size, with `depth` requests in flight: by default `depth`
//! threads each making blocking calls; with `--started`, one thread that
//! keeps `depth` requests started without blocking (`Volume::start_read`,
//! `start_write`, as the server's NBD and HTTP front ends do) and is woken
//! by their completions, as `qemu-img bench` runs one event loop.

mod children;
mod direct;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use bytesize::ByteSize;
use clap::{Parser, ValueEnum};
use quorum_core::{Backend, ReadPattern, Volume, VolumeOptions};

use crate::direct::Direct;
use crate::load::{Load, Reports};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Pattern {
    Quorum,
    Fifo,
}

/// Benchmarks the quorum engine over file children or a config's children.
#[derive(Debug, Parser)]
#[command(name = "quorum-bench", version)]
struct Args {
    /// Number of requests.
    #[arg(short = 'c', long, default_value_t = 75_000)]
    count: u64,
    /// Requests in flight (default: the smallest `max_in_flight` of the
    /// children, what they are built to serve at once).
    #[arg(short = 'd', long)]
    depth: Option<usize>,
    /// Size of each request (bytes, or 4KiB, 1MiB, ...).
    #[arg(short = 's', long, default_value = "4KiB")]
    size: ByteSize,
    /// Offset increment between requests (default: the request size).
    #[arg(short = 'S', long, conflicts_with = "random")]
    step: Option<ByteSize>,
    /// Offset of the first request.
    #[arg(short = 'o', long, default_value = "0", conflicts_with = "random")]
    offset: ByteSize,
    /// Each request at a random multiple of the request size.
    #[arg(long)]
    random: bool,
    /// Write instead of read.
    #[arg(short = 'w', long)]
    write: bool,
    /// Read pattern (with files; a config's volume has its own).
    #[arg(long, value_enum, default_value_t = Pattern::Quorum, conflicts_with = "config")]
    pattern: Pattern,
    /// Vote threshold (with files, default: a majority of them; a config's
    /// volume has its own).
    #[arg(long, conflicts_with = "config")]
    threshold: Option<usize>,
    /// Start the requests without blocking, from one thread, instead of
    /// making blocking calls from `depth` threads.
    #[arg(long, conflicts_with = "direct")]
    started: bool,
    /// A server config: the children are those of its volume `--volume`,
    /// opened (and created where missing) as the server opens them.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    config: Option<PathBuf>,
    /// The config's volume (default: its first).
    #[arg(long, requires = "config", conflicts_with = "files")]
    volume: Option<String>,
    /// No engine: the config volume's first child, an s3 child, and its
    /// object_store client storing or fetching whole objects of the
    /// request size under `PREFIX/direct/`, the object of a request named
    /// by its offset divided by the size.
    #[arg(long, requires = "config", conflicts_with = "files")]
    direct: bool,
    /// The children: existing files of equal size.
    #[arg(required_unless_present = "config")]
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
    let size = args.size.as_u64();
    // Random, so that a store that compresses (SeaweedFS does) stores them whole.
    let mut payload = vec![0u8; size as usize];
    rand::fill(&mut payload[..]);
    let payload = Bytes::from(payload);
    if let (Some(config), true) = (&args.config, args.direct) {
        let child = children::first_s3(config, args.volume.as_deref())?;
        let span = checked_span(child.size()?, size)?;
        let depth = args.depth.unwrap_or(child.max_in_flight()).max(1);
        let offsets = Offsets::new(&args, span);
        let direct = Direct {
            store: child.store(),
            dir: child.path("direct"),
            payload,
            write: args.write,
            count: args.count,
            depth,
            offset: |i| offsets.of(i),
        };
        let started = Instant::now();
        direct.run()?;
        report(
            &args,
            started,
            depth,
            &format!("object_store direct to {child}"),
        );
        return Ok(());
    }
    let (options, children) = match &args.config {
        Some(config) => children::configured(config, args.volume.as_deref())?,
        None => {
            let children = children::files(&args.files)?;
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
            (options, children)
        }
    };
    let n = children.len();
    let in_flight = children.iter().map(|c| c.backend.max_in_flight()).min();
    let depth = args.depth.or(in_flight).unwrap_or(1).max(1);
    // Journaled as the server's volumes are, so that the stale map and the
    // write-intent log cost what they cost there.
    let state = tempfile::tempdir()?;
    let journal = state.path().join("bench.jsonl");
    let reports = Arc::new(Reports::default());
    let volume = Arc::new(Volume::open_journaled(
        options,
        children,
        reports.clone(),
        Some(&journal),
    )?);
    let span = checked_span(volume.size(), size)?;
    let offsets = Offsets::new(&args, span);
    let load = Load {
        volume: &volume,
        payload,
        write: args.write,
        count: args.count,
        depth,
        offset: |i| offsets.of(i),
        size: size as usize,
    };
    let started = Instant::now();
    if args.started {
        load.started()?;
    } else {
        load.blocking()?;
    }
    reports.check()?;
    let how = format!(
        "{n} children{}",
        if args.started { ", started" } else { "" }
    );
    report(&args, started, depth, &how);
    Ok(())
}

/// The volume's size, checked to hold a request of `size` bytes.
fn checked_span(span: u64, size: u64) -> anyhow::Result<u64> {
    if size == 0 || size > span {
        bail!("the request size must be between 1 byte and the volume's {span} bytes");
    }
    Ok(span)
}

/// Where each request goes.
enum Offsets {
    /// `first + i * step`, wrapping within `0..=last`.
    Sequential { first: u64, step: u64, last: u64 },
    /// Drawn before the run, so that drawing costs nothing during it.
    Random(Vec<u64>),
}

impl Offsets {
    fn new(args: &Args, span: u64) -> Offsets {
        let size = args.size.as_u64();
        if !args.random {
            return Offsets::Sequential {
                first: args.offset.as_u64(),
                step: args.step.map_or(size, |s| s.as_u64()),
                last: span - size,
            };
        }
        let slots = span / size;
        let drawn = (0..args.count)
            .map(|_| rand::random_range(0..slots) * size)
            .collect();
        Offsets::Random(drawn)
    }

    fn of(&self, i: u64) -> u64 {
        match self {
            Offsets::Sequential { first, step, last } => (first + i * step) % (last + 1),
            Offsets::Random(drawn) => drawn[i as usize],
        }
    }
}

/// Prints the run's line: requests, seconds, ops/s, MiB/s.
fn report(args: &Args, started: Instant, depth: usize, how: &str) {
    let secs = started.elapsed().as_secs_f64();
    let ops = args.count as f64 / secs;
    let mib = ops * args.size.as_u64() as f64 / (1024.0 * 1024.0);
    println!(
        "{} {} requests of {} in {secs:.3} s: {ops:.0} ops/s, {mib:.1} MiB/s (depth {depth}, {how}{})",
        args.count,
        if args.write { "write" } else { "read" },
        args.size,
        if args.random { ", random" } else { "" }
    );
}
