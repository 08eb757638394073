//! `quorum import` and `quorum export`: raw copies between a file (or
//! stdin/stdout) and a volume, over HTTP, that skip holes.
//!
//! The parts:
//!
//! - `map.rs`: where the data is: a file's with `SEEK_DATA`/`SEEK_HOLE`,
//!   a volume's with `GET .../block-status` (paged, `Quorum-Next-Offset`);
//! - `import.rs`: the file read in order, hashed, each piece of data a
//!   `PUT` and each hole a `POST .../write-zeroes` where the volume does
//!   not already read zero there, several requests in flight;
//! - `export.rs`: the volume's data extents fetched with `Range` GETs,
//!   several in flight, written in order (holes left as holes in a file,
//!   zeros on a pipe), hashed.
//!
//! Both print the BLAKE3 of the bytes copied as `b3sum` does (`HEX  FILE`),
//! so that `b3sum FILE` on either side checks the copy.

mod export;
mod import;
mod map;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

pub use self::export::export;
pub use self::import::import;

use super::output::{self, size};
use super::{Client, Error};

/// How a copy runs.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Requests in flight at once.
    pub jobs: usize,
    /// The most bytes one request carries (at most the server's
    /// `max_request_bytes`).
    pub request_bytes: u64,
}

/// How many times a request that failed transiently (503, or a broken
/// connection) is tried in all.
const ATTEMPTS: u32 = 3;

/// A megabyte of zeros, hashed for the holes.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Feeds `length` zero bytes to `hasher`.
fn hash_zeros(hasher: &mut blake3::Hasher, mut length: u64) {
    while length > 0 {
        let n = length.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        length -= n as u64;
    }
}

/// Runs `call` up to [`ATTEMPTS`] times while it fails transiently.
fn with_retries<T>(mut call: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut wait = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call() {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The first error of the workers of a copy; once one is set, the copy
/// stops handing out work.
#[derive(Default)]
struct FirstError(Mutex<Option<Error>>);

impl FirstError {
    fn set(&self, e: Error) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(e);
    }

    fn is_set(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn take(self) -> Option<Error> {
        self.0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a copy did, for the closing lines.
struct Summary<'a> {
    verb: &'a str,
    what: String,
    bytes: u64,
    data: u64,
    started: Instant,
    hash: blake3::Hash,
    file: &'a str,
}

impl Summary<'_> {
    /// `imported a.img to vm: 256.0 MiB (12.0 MiB of data) in 1.2s, 210.0
    /// MiB/s` on stderr, then `HEX  FILE` on stdout, or on stderr when
    /// stdout carries the data.
    fn print(&self, data_on_stdout: bool) {
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{} {}: {} ({} of data) in {:.1}s, {}",
            self.verb,
            self.what,
            size(self.bytes),
            size(self.data),
            seconds,
            output::rate(self.bytes as f64 / seconds.max(1e-6))
        );
        let line = format!("{}  {}", self.hash.to_hex(), self.file);
        if data_on_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_hash_like_a_buffer_of_zeros() {
        let mut a = blake3::Hasher::new();
        hash_zeros(&mut a, (3 << 20) + 5);
        let b = blake3::hash(&vec![0u8; (3 << 20) + 5]);
        assert_eq!(a.finalize(), b);
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let mut calls = 0;
        let r: Result<(), Error> = with_retries(|| {
            calls += 1;
            Err(Error::Api {
                status: 409,
                code: "conflict".into(),
                message: String::new(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<(), Error> = with_retries(|| {
            calls += 1;
            Err(Error::Api {
                status: 503,
                code: "busy".into(),
                message: String::new(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, ATTEMPTS);
    }
}
