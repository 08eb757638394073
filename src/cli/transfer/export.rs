//! `quorum export VOL FILE`: a volume into a file (or stdout).
//!
//! The volume's block status, taken first, splits it into holes and data;
//! the data is fetched in `Range` GETs of at most `request_bytes`, `jobs`
//! at once, and written in order by this thread, which also hashes every
//! byte. A new file is sized first and stays sparse: holes, and any block
//! of a fetched piece that is all zeros, are not written. A pipe (stdout,
//! or a path that is one) or a device gets every byte, zeros included.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use reqwest::Method;

use super::map::volume_map;
use super::{Client, Error, Summary, Tuning, ZEROS, hash_zeros, with_retries};
use crate::output;
use crate::volumes;

/// The block below which a fetched piece is checked for zeros, so that
/// a file keeps holes the block status did not report.
const SPARSE_BLOCK: usize = 4096;

/// A range to fetch, and where its bytes go back to.
struct Fetch {
    offset: u64,
    length: u64,
    reply: Sender<Result<Bytes, Error>>,
}

/// A piece of the volume, in order.
enum Pending {
    Zero {
        offset: u64,
        length: u64,
    },
    Data {
        offset: u64,
        reply: Receiver<Result<Bytes, Error>>,
    },
}

/// Where the bytes go.
enum Sink {
    /// A file written at offsets, holes left unwritten.
    File(File),
    /// A stream written in order, zeros included.
    Stream(Box<dyn Write>),
}

/// `quorum export VOL FILE` (`-` for stdout).
///
/// # Errors
/// The server's refusal, a transport failure, or a write that fails.
pub fn export(client: &Client, volume: &str, path: &str, tuning: Tuning) -> Result<(), Error> {
    let started = Instant::now();
    let size = volumes::get(client, volume)?.size;
    let map = volume_map(client, volume, 0, size)?;
    let mut sink = if path == "-" {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        Sink::Stream(Box::new(out))
    } else {
        open(path, size)?
    };
    let bar = output::transfer_bar(size, &format!("export {volume}"));
    let mut hasher = blake3::Hasher::new();
    let mut data = 0;
    let (tx, rx) = bounded::<Fetch>(tuning.jobs);
    std::thread::scope(|scope| {
        for _ in 0..tuning.jobs {
            let rx = rx.clone();
            scope.spawn(move || download(client, volume, &rx));
        }
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut in_flight = 0;
        let mut settle = |queue: &mut VecDeque<Pending>, in_flight: &mut usize, all: bool| {
            while let Some(front) = queue.front() {
                let busy = *in_flight >= tuning.jobs;
                if !all && !busy && matches!(front, Pending::Data { .. }) {
                    return Ok(());
                }
                let Some(front) = queue.pop_front() else {
                    break;
                };
                let length = match front {
                    Pending::Zero { offset, length } => {
                        hash_zeros(&mut hasher, length);
                        sink.zeros(offset, length, path)?;
                        length
                    }
                    Pending::Data { offset, reply } => {
                        *in_flight -= 1;
                        let bytes = reply
                            .recv()
                            .map_err(|_| Error::Invalid("a download worker stopped".into()))??;
                        hasher.update(&bytes);
                        sink.data(offset, &bytes, path)?;
                        data += bytes.len() as u64;
                        bytes.len() as u64
                    }
                };
                bar.inc(length);
            }
            Ok::<(), Error>(())
        };
        for e in &map {
            if e.zero {
                queue.push_back(Pending::Zero {
                    offset: e.offset,
                    length: e.length,
                });
                settle(&mut queue, &mut in_flight, false)?;
                continue;
            }
            let mut at = e.offset;
            while at < e.end() {
                let n = (e.end() - at).min(tuning.request_bytes - at % tuning.request_bytes);
                let (reply_tx, reply_rx) = bounded(1);
                let fetch = Fetch {
                    offset: at,
                    length: n,
                    reply: reply_tx,
                };
                tx.send(fetch)
                    .map_err(|_| Error::Invalid("the download workers stopped".into()))?;
                queue.push_back(Pending::Data {
                    offset: at,
                    reply: reply_rx,
                });
                in_flight += 1;
                settle(&mut queue, &mut in_flight, false)?;
                at += n;
            }
        }
        settle(&mut queue, &mut in_flight, true)?;
        drop(tx);
        Ok::<(), Error>(())
    })?;
    sink.finish(path)?;
    bar.finish_and_clear();
    Summary {
        verb: "exported",
        what: format!("{volume} to {path}"),
        bytes: size,
        data,
        started,
        hash: hasher.finalize(),
        file: path,
    }
    .print(path == "-");
    Ok(())
}

/// Where `path` takes the bytes: a regular file (new, or cut to nothing)
/// sized to `size` and written sparse; anything else that exists (a pipe
/// such as `>(zstd > vm.raw.zst)`, a block device, `/dev/null`) as a
/// stream of every byte, zeros included, since it cannot be sized and
/// may hold old data.
fn open(path: &str, size: u64) -> Result<Sink, Error> {
    let regular = match std::fs::metadata(path) {
        Ok(meta) => meta.is_file(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(format!("cannot look at {path}"), e)),
    };
    if !regular {
        let out = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open {path}"), e))?;
        let out = std::io::BufWriter::with_capacity(1 << 20, out);
        return Ok(Sink::Stream(Box::new(out)));
    }
    let file = File::create(path).map_err(|e| Error::io(format!("cannot create {path}"), e))?;
    file.set_len(size)
        .map_err(|e| Error::io(format!("cannot size {path} to {size} bytes"), e))?;
    Ok(Sink::File(file))
}

/// A worker: fetches ranges until the channel closes.
fn download(client: &Client, volume: &str, rx: &Receiver<Fetch>) {
    let url = client.url(&["v1", "volumes", volume, "data"]);
    for Fetch {
        offset,
        length,
        reply,
    } in rx
    {
        let get = || {
            let range = format!("bytes={offset}-{}", offset + length - 1);
            let response = client.send(
                client
                    .request(Method::GET, url.clone())
                    .header("range", range),
            )?;
            let bytes = response
                .bytes()
                .map_err(|e| super::super::client::transport(url.as_str(), e))?;
            if bytes.len() as u64 != length {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    problem: format!("{} bytes for a range of {length} at {offset}", bytes.len()),
                });
            }
            Ok(bytes)
        };
        // The receiver is gone only when the copy already failed.
        let _ = reply.send(with_retries(get));
    }
}

impl Sink {
    /// A hole: nothing in a file (it was sized sparse), zeros on a stream.
    fn zeros(&mut self, offset: u64, mut length: u64, path: &str) -> Result<(), Error> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Stream(out) => {
                while length > 0 {
                    let n = length.min(ZEROS.len() as u64) as usize;
                    out.write_all(&ZEROS[..n])
                        .map_err(|e| Error::io(format!("cannot write {path} at {offset}"), e))?;
                    length -= n as u64;
                }
                Ok(())
            }
        }
    }

    /// Data: in a file, each block that is not all zeros; on a stream, all.
    fn data(&mut self, offset: u64, bytes: &[u8], path: &str) -> Result<(), Error> {
        let failed = |e| Error::io(format!("cannot write {path} at {offset}"), e);
        match self {
            Sink::Stream(out) => out.write_all(bytes).map_err(failed),
            Sink::File(file) => {
                let mut at = 0;
                while at < bytes.len() {
                    // Runs of non-zero blocks are written in one call.
                    let is_zero = |i: usize| {
                        bytes[i..(i + SPARSE_BLOCK).min(bytes.len())]
                            .iter()
                            .all(|&b| b == 0)
                    };
                    if is_zero(at) {
                        at += SPARSE_BLOCK;
                        continue;
                    }
                    let mut end = at + SPARSE_BLOCK;
                    while end < bytes.len() && !is_zero(end) {
                        end += SPARSE_BLOCK;
                    }
                    let end = end.min(bytes.len());
                    file.write_all_at(&bytes[at..end], offset + at as u64)
                        .map_err(failed)?;
                    at = end;
                }
                Ok(())
            }
        }
    }

    /// Flushes a stream. A file is left to the page cache, as `cp` and
    /// `qemu-img convert` leave it (`sync FILE` makes it durable).
    fn finish(self, path: &str) -> Result<(), Error> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Stream(mut out) => out
                .flush()
                .map_err(|e| Error::io(format!("cannot write {path}"), e)),
        }
    }
}
