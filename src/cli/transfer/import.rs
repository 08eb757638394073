//! `quorum import VOL FILE`: a file (or stdin) into a volume.
//!
//! The file is read in order and hashed; each piece of data (at most
//! `request_bytes`) is a `PUT`, handed to `jobs` workers through a bounded
//! channel, so at most about twice `jobs` pieces are in memory. Holes (the
//! file's, found with `SEEK_DATA`/`SEEK_HOLE`, and pieces that read as
//! zeros, which is all that stdin or a pipe can have) cost no upload: the volume's
//! block status, taken first, says where it does not already read zero
//! there, and only those ranges get a `POST .../write-zeroes`. The end is
//! a `POST .../flush`: what was imported is on stable storage.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use indicatif::ProgressBar;
use reqwest::Method;

use super::map::{Extent, NonZero, file_map, volume_map};
use super::{Client, Error, FirstError, Summary, Tuning, hash_zeros, with_retries};
use crate::output;
use crate::volumes;

/// The zeros within read data that become a hole rather than bytes sent:
/// runs of this many, aligned within the volume.
const ZERO_RUN: u64 = 64 << 10;

/// One request of an import.
enum Piece {
    /// `PUT` these bytes at this offset.
    Data { offset: u64, bytes: Bytes },
    /// `POST write-zeroes` over this range.
    Zeroes { offset: u64, length: u64 },
}

/// Where the bytes come from.
enum Source {
    /// A file or block device, read with `pread`; a file's holes are
    /// known (`SEEK_DATA` finds none on a device: its zeros are found as
    /// a stream's are).
    File { file: File, len: u64, holes: bool },
    /// A stream (stdin, a pipe): read in order, its length unknown.
    Stream(Box<dyn Read>),
}

/// `quorum import VOL FILE` (`-` for stdin).
///
/// # Errors
/// A file larger than the volume (before anything is written), a stream
/// longer than it (once what fits is imported and flushed), a read that
/// fails, the server's refusal or a transport failure (the first
/// one; the requests not yet sent are not sent).
pub fn import(client: &Client, volume: &str, path: &str, tuning: Tuning) -> Result<(), Error> {
    let started = Instant::now();
    let volume_size = volumes::get(client, volume)?.size;
    let source = if path == "-" {
        Source::Stream(Box::new(std::io::stdin().lock()))
    } else {
        let source = open(path)?;
        if let Source::File { len, .. } = &source {
            if *len > volume_size {
                return Err(Error::Invalid(format!(
                    "{path} has {len} bytes, more than the {volume_size} of volume {volume}: nothing was written"
                )));
            }
        }
        source
    };
    let span = match &source {
        Source::File { len, .. } => *len,
        Source::Stream(_) => volume_size,
    };
    let nonzero = NonZero::new(volume_map(client, volume, 0, span)?);
    let bar = output::transfer_bar(span, &format!("import {volume}"));
    let (tx, rx) = bounded::<Piece>(tuning.jobs);
    let failed = FirstError::default();
    let (read, hash, overflow) = std::thread::scope(|scope| {
        for _ in 0..tuning.jobs {
            let (rx, bar, failed) = (rx.clone(), bar.clone(), &failed);
            scope.spawn(move || upload(client, volume, &rx, &bar, failed));
        }
        let mut reader = Reader {
            tuning,
            volume_size,
            nonzero,
            pending_zero: None,
            overflow: false,
            data: 0,
            hasher: blake3::Hasher::new(),
            tx,
            failed: &failed,
            bar: bar.clone(),
        };
        let read = match source {
            Source::File { file, len, holes } => reader.file(&file, len, holes, path),
            Source::Stream(mut input) => reader.stream(&mut *input, path),
        };
        // Dropping the reader closes the channel: the workers finish.
        (read, reader.hasher.finalize(), reader.overflow)
    });
    let (bytes, data) = read?;
    if let Some(e) = failed.take() {
        return Err(e);
    }
    let url = client.url(&["v1", "volumes", volume, "flush"]);
    with_retries(|| client.send(client.request(Method::POST, url.clone())))?;
    bar.finish_and_clear();
    if overflow {
        let name = if path == "-" { "stdin" } else { path };
        return Err(Error::Invalid(format!(
            "{name} is longer than volume {volume}: its first {bytes} bytes (the volume's size) were imported, the rest was not"
        )));
    }
    Summary {
        verb: "imported",
        what: format!("{path} to {volume}"),
        bytes,
        data,
        started,
        hash,
        file: path,
    }
    .print(false);
    Ok(())
}

/// Opens `path`: a regular file or a block device by its map and length
/// (a device's is where its end is: its metadata says 0); anything else (a
/// pipe, `<(zcat image.gz)`, a character device) as a stream, to its end.
fn open(path: &str) -> Result<Source, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(format!("cannot open {path}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read the size of {path}"), e))?;
    let kind = meta.file_type();
    if kind.is_file() {
        let len = meta.len();
        return Ok(Source::File {
            file,
            len,
            holes: true,
        });
    }
    if kind.is_block_device() {
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("cannot read the size of {path}"), e))?;
        return Ok(Source::File {
            file,
            len,
            holes: false,
        });
    }
    Ok(Source::Stream(Box::new(file)))
}

/// A worker: sends pieces until the channel closes; after the first
/// failure it only drains the channel.
fn upload(
    client: &Client,
    volume: &str,
    rx: &Receiver<Piece>,
    bar: &ProgressBar,
    failed: &FirstError,
) {
    let data_url = client.url(&["v1", "volumes", volume, "data"]);
    let zero_url = client.url(&["v1", "volumes", volume, "write-zeroes"]);
    for piece in rx {
        if failed.is_set() {
            continue;
        }
        let (done, result) = match piece {
            Piece::Data { offset, bytes } => {
                let len = bytes.len() as u64;
                let put = || {
                    let request = client
                        .request(Method::PUT, data_url.clone())
                        .query(&[("offset", offset)])
                        .header("content-type", "application/octet-stream")
                        .body(bytes.clone());
                    client.send(request)
                };
                (len, with_retries(put))
            }
            Piece::Zeroes { offset, length } => {
                let zero = || {
                    let query = [("offset", offset), ("length", length)];
                    client.send(client.request(Method::POST, zero_url.clone()).query(&query))
                };
                (length, with_retries(zero))
            }
        };
        match result {
            Ok(_) => bar.inc(done),
            Err(e) => failed.set(e),
        }
    }
}

/// The reading side of an import: pieces in order, holes merged, zeros
/// written only where the volume holds data.
struct Reader<'a> {
    tuning: Tuning,
    volume_size: u64,
    nonzero: NonZero,
    /// A run of zeros not yet handed out: merged with the next one.
    pending_zero: Option<(u64, u64)>,
    /// Whether the stream went on past the volume's end.
    overflow: bool,
    /// Bytes sent as data.
    data: u64,
    /// The hash of every byte read, holes as zeros.
    hasher: blake3::Hasher,
    /// To the workers.
    tx: Sender<Piece>,
    /// Set once a worker failed: nothing more is sent.
    failed: &'a FirstError,
    /// Moved on at once over what needs no request.
    bar: ProgressBar,
}

impl Reader<'_> {
    /// Reads `file` by its map (all data without `holes`); returns the
    /// bytes read and those sent.
    fn file(
        &mut self,
        file: &File,
        len: u64,
        holes: bool,
        name: &str,
    ) -> Result<(u64, u64), Error> {
        let map = if holes {
            file_map(file, len, name)?
        } else {
            vec![Extent {
                offset: 0,
                length: len,
                zero: false,
            }]
        };
        for Extent {
            offset,
            length,
            zero,
        } in map
        {
            if zero {
                hash_zeros(&mut self.hasher, length);
                if !self.zeroes(offset, length) {
                    return Ok((offset, self.data));
                }
                continue;
            }
            let end = offset + length;
            let mut at = offset;
            while at < end {
                let n = (end - at).min(self.tuning.request_bytes - at % self.tuning.request_bytes);
                let mut buf = vec![0; n as usize];
                file.read_exact_at(&mut buf, at)
                    .map_err(|e| Error::io(format!("cannot read {name} at {at}"), e))?;
                self.hasher.update(&buf);
                if !self.piece(at, buf) {
                    return Ok((at, self.data));
                }
                at += n;
            }
        }
        Ok(self.finish(len))
    }

    /// Reads a stream to its end; returns the bytes read and those sent.
    fn stream(&mut self, input: &mut dyn Read, name: &str) -> Result<(u64, u64), Error> {
        let name = if name == "-" { "stdin" } else { name };
        let mut at = 0u64;
        loop {
            let mut buf = vec![0; self.tuning.request_bytes as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match input.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(format!("cannot read {name}"), e)),
                }
            }
            if filled == 0 {
                return Ok(self.finish(at));
            }
            buf.truncate(filled);
            if at + filled as u64 > self.volume_size {
                // What fits is imported, as `dd` onto a device writes up
                // to its end.
                buf.truncate((self.volume_size - at) as usize);
                self.overflow = true;
            }
            let n = buf.len() as u64;
            self.hasher.update(&buf);
            if !self.piece(at, buf) {
                return Ok((at, self.data));
            }
            at += n;
            if self.overflow {
                return Ok(self.finish(at));
            }
        }
    }

    /// A piece read: its runs of [`ZERO_RUN`] zero bytes (aligned within
    /// the volume) become zeros, the rest data, sent without a copy.
    fn piece(&mut self, offset: u64, buf: Vec<u8>) -> bool {
        let bytes = Bytes::from(buf);
        let mut at = 0;
        while at < bytes.len() {
            let run = ((ZERO_RUN - (offset + at as u64) % ZERO_RUN) as usize).min(bytes.len() - at);
            let zero = bytes[at..at + run].iter().all(|&b| b == 0);
            if zero {
                if !self.zeroes(offset + at as u64, run as u64) {
                    return false;
                }
                at += run;
                continue;
            }
            let mut end = at + run;
            while end < bytes.len() {
                let next = (ZERO_RUN as usize).min(bytes.len() - end);
                if next as u64 == ZERO_RUN && bytes[end..end + next].iter().all(|&b| b == 0) {
                    break;
                }
                end += next;
            }
            if !self.flush_zeroes() {
                return false;
            }
            self.data += (end - at) as u64;
            let piece = Piece::Data {
                offset: offset + at as u64,
                bytes: bytes.slice(at..end),
            };
            if !self.send(piece) {
                return false;
            }
            at = end;
        }
        true
    }

    /// Hands a piece to the workers; `false` once the copy failed.
    fn send(&self, piece: Piece) -> bool {
        !self.failed.is_set() && self.tx.send(piece).is_ok()
    }

    /// A run of zeros, merged with the one before it.
    fn zeroes(&mut self, offset: u64, length: u64) -> bool {
        if let Some((_, end)) = &mut self.pending_zero {
            if *end == offset {
                *end += length;
                return true;
            }
        }
        let ok = self.flush_zeroes();
        self.pending_zero = Some((offset, offset + length));
        ok
    }

    /// Hands out the pending run of zeros: write-zeroes where the volume
    /// holds data, nothing elsewhere.
    fn flush_zeroes(&mut self) -> bool {
        let Some((start, end)) = self.pending_zero.take() else {
            return true;
        };
        let mut covered = 0;
        for (a, b) in self.nonzero.within(start, end) {
            covered += b - a;
            let piece = Piece::Zeroes {
                offset: a,
                length: b - a,
            };
            if !self.send(piece) {
                return false;
            }
        }
        self.bar.inc(end - start - covered);
        true
    }

    fn finish(&mut self, len: u64) -> (u64, u64) {
        self.flush_zeroes();
        (len, self.data)
    }
}
