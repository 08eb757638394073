//! A disk in memory behind the `Export` trait, with a budget of its own,
//! and a client that speaks transmission to `transmission::serve` over an
//! in-memory pipe: the connection loop's bounds, tested without a
//! server process.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quorum_nbd::handshake::Negotiated;
use quorum_nbd::proto::{self, RequestHeader};
use quorum_nbd::transmission;
use quorum_nbd::{Export, ExportError, Extent};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The disk's size.
pub const SIZE: u64 = 64 << 20;

/// A memory budget: what is held at most, and what is held now.
pub struct Budget {
    limit: u64,
    held: AtomicU64,
}

impl Budget {
    /// The bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    fn take(&self, bytes: u64) -> Result<(), ExportError> {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                (h + bytes <= self.limit).then_some(h + bytes)
            })
            .map(drop)
            .map_err(|_| ExportError::Busy(format!("no room for {bytes} bytes")))
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
pub struct Permit {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// A disk of [`SIZE`] bytes in memory that counts the writes it took.
pub struct Disk {
    pub budget: Arc<Budget>,
    pub data: Mutex<Vec<u8>>,
    pub writes: AtomicUsize,
    /// What the budget held while the last block status ran.
    pub held_in_block_status: AtomicU64,
}

impl Disk {
    /// A zeroed disk whose requests may buffer `budget` bytes at once.
    pub fn new(budget: u64) -> Arc<Disk> {
        Arc::new(Disk {
            budget: Arc::new(Budget {
                limit: budget,
                held: AtomicU64::new(0),
            }),
            data: Mutex::new(vec![0; SIZE as usize]),
            writes: AtomicUsize::new(0),
            held_in_block_status: AtomicU64::new(0),
        })
    }
}

impl Export for Disk {
    type Permit = Permit;

    fn size(&self) -> u64 {
        SIZE
    }

    async fn reserve(&self, bytes: u64) -> Result<Permit, ExportError> {
        self.budget.take(bytes)?;
        Ok(Permit {
            budget: self.budget.clone(),
            bytes,
        })
    }

    async fn grow(
        &self,
        permit: &mut Permit,
        bytes: u64,
        _need: u64,
        _deadline: tokio::time::Instant,
    ) -> Result<(), ExportError> {
        if bytes > permit.bytes {
            self.budget.take(bytes - permit.bytes)?;
            permit.bytes = bytes;
        }
        Ok(())
    }

    async fn read(&self, offset: u64, length: u32) -> Result<Bytes, ExportError> {
        let data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        let at = offset as usize;
        Ok(Bytes::copy_from_slice(&data[at..at + length as usize]))
    }

    async fn write(&self, offset: u64, bytes: Bytes, _fua: bool) -> Result<(), ExportError> {
        let mut data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        let at = offset as usize;
        data[at..at + bytes.len()].copy_from_slice(&bytes);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        length: u32,
        _no_hole: bool,
        _fua: bool,
    ) -> Result<(), ExportError> {
        let mut data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        let at = offset as usize;
        data[at..at + length as usize].fill(0);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn discard(&self, offset: u64, length: u32, fua: bool) -> Result<(), ExportError> {
        self.write_zeroes(offset, length, false, fua).await
    }

    async fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }

    async fn block_status(
        &self,
        offset: u64,
        length: u32,
        _limit: usize,
    ) -> Result<Vec<Extent>, ExportError> {
        self.held_in_block_status
            .store(self.budget.held(), Ordering::SeqCst);
        Ok(vec![Extent {
            offset,
            length: u64::from(length),
            zero: false,
        }])
    }
}

/// The connection's bounds in these tests.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `disk` on one end of a pipe (simple replies), a write's payload
/// due within `payload_timeout` of its header; returns the client's end
/// and the connection's task.
pub fn serve(
    disk: &Arc<Disk>,
    payload_timeout: Duration,
) -> (DuplexStream, JoinHandle<std::io::Result<()>>) {
    serve_with(disk, payload_timeout, false)
}

/// [`serve`] with structured replies and `base:allocation` negotiated.
pub fn serve_structured(disk: &Arc<Disk>) -> (DuplexStream, JoinHandle<std::io::Result<()>>) {
    serve_with(disk, WRITE_TIMEOUT, true)
}

fn serve_with(
    disk: &Arc<Disk>,
    payload_timeout: Duration,
    structured: bool,
) -> (DuplexStream, JoinHandle<std::io::Result<()>>) {
    let (client, server) = duplex(64 << 10);
    let negotiated = Negotiated {
        name: "vm".to_owned(),
        export: disk.clone(),
        structured,
        base_allocation: structured,
    };
    let task = tokio::spawn(transmission::serve(
        server,
        negotiated,
        WRITE_TIMEOUT,
        payload_timeout,
        CancellationToken::new(),
    ));
    (client, task)
}

/// Sends a request header.
pub async fn send(c: &mut DuplexStream, kind: u16, cookie: u64, offset: u64, length: u32) {
    send_flags(c, 0, kind, cookie, offset, length).await;
}

/// Sends a request header with command flags.
pub async fn send_flags(
    c: &mut DuplexStream,
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    length: u32,
) {
    let header = RequestHeader {
        flags,
        kind,
        cookie,
        offset,
        length,
    };
    c.write_all(&header.encode()).await.expect("send a header");
}

/// Sends `length` bytes of `value` in pieces of 64 KiB, never holding
/// more than one piece.
pub async fn send_payload(c: &mut DuplexStream, value: u8, length: usize) {
    let piece = vec![value; 64 << 10];
    let mut left = length;
    while left > 0 {
        let n = left.min(piece.len());
        c.write_all(&piece[..n]).await.expect("send payload");
        left -= n;
    }
}

/// Reads a simple reply: (error, cookie).
pub async fn reply(c: &mut DuplexStream) -> (u32, u64) {
    let magic = c.read_u32().await.expect("a reply");
    assert_eq!(magic, proto::SIMPLE_REPLY_MAGIC, "a simple reply");
    let errno = c.read_u32().await.expect("the error");
    let cookie = c.read_u64().await.expect("the cookie");
    (errno, cookie)
}

/// Reads one structured reply chunk: (flags, type, cookie, payload).
pub async fn chunk(c: &mut DuplexStream) -> (u16, u16, u64, Vec<u8>) {
    let magic = c.read_u32().await.expect("a reply");
    assert_eq!(magic, proto::STRUCTURED_REPLY_MAGIC, "a structured reply");
    let flags = c.read_u16().await.expect("the flags");
    let kind = c.read_u16().await.expect("the type");
    let cookie = c.read_u64().await.expect("the cookie");
    let mut payload = vec![0; c.read_u32().await.expect("the length") as usize];
    c.read_exact(&mut payload).await.expect("the payload");
    (flags, kind, cookie, payload)
}
