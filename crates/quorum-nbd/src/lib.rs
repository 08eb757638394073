//! The Network Block Device face of quorum.
//!
//! quorum serves HTTP, which no block client can attach. This crate serves
//! the same volumes over NBD (`NetworkBlockDevice/nbd` `doc/proto.md`), so
//! that `qemu-io`, `qemu-img`, a VM's `-drive file=nbd://...`, the libnbd
//! tools, fio's `nbd` engine and the kernel's `nbd-client` can use them.
//! It was written by hand from the protocol document, answering options
//! the way qemu's `nbd/server.c` does.
//!
//! The parts, one job each:
//! - [`proto`]: constants, typed messages, and the pure codec between
//!   bytes and them (request checks included), unit-tested without
//!   sockets;
//! - [`handshake`]: fixed newstyle option haggling, a loop with one reply
//!   per option; unknown options get `NBD_REP_ERR_UNSUP` and the
//!   connection stays usable; with TLS configured, `NBD_OPT_STARTTLS` is
//!   required first;
//! - [`tls`]: the server's X.509 identity from PEM files (rustls), and the
//!   stream that is plain or TLS;
//! - [`transmission`]: a reader that decodes requests and runs each in a
//!   task of its own (many in flight), and one writer that sends replies
//!   as they complete, out of order;
//! - [`server`]: the accept loop, generic over TCP and Unix listeners,
//!   with a connection cap and a handshake deadline.
//!
//! The crate knows nothing of HTTP nor of the engine: it reaches a volume
//! only through the [`Export`] trait, which quorum-server implements over
//! the very path its HTTP handlers take (the membership gate, the
//! blocking pool, the request budget, telemetry), so an NBD read votes,
//! reports and repairs exactly like an HTTP one.

#![deny(missing_docs)]

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

pub mod handshake;
pub mod proto;
pub mod server;
pub mod tls;
pub mod transmission;

/// Why an export could not serve a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The volume failed the request: no quorum, a blkverify mismatch, a
    /// journal that cannot be written. Answered `NBD_EIO`.
    #[error("{0}")]
    Io(String),
    /// The range lies outside the volume. Answered `NBD_EINVAL`
    /// (`NBD_ENOSPC` for writes).
    #[error("bytes {offset}..{end} lie outside the volume's {size} bytes")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// End of the request.
        end: u64,
        /// The volume's size.
        size: u64,
    },
    /// The server found no room (memory budget) in time. Answered
    /// `NBD_EIO`; the client may retry.
    #[error("{0}")]
    Busy(String),
}

impl ExportError {
    /// The NBD error value of a failed `write` (`true`) or other request.
    pub fn errno(&self, write: bool) -> u32 {
        match self {
            ExportError::Io(_) | ExportError::Busy(_) => proto::errno::EIO,
            ExportError::OutOfRange { .. } if write => proto::errno::ENOSPC,
            ExportError::OutOfRange { .. } => proto::errno::EINVAL,
        }
    }
}

/// A run of bytes of one kind, as the volume's block status gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Start.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// Every child reads zero here (a hole for `base:allocation`).
    pub zero: bool,
}

/// One volume as NBD sees it.
///
/// # Contract
/// Every call is one request on the volume, with the ordering, vote,
/// reports and metrics of any other front end. Calls may run
/// concurrently, from many connections. A call that has started runs to
/// completion even if the client goes away, so a write is never left
/// half-issued. `offset..offset+length` has been checked against
/// [`size`](Export::size) before any call, but the volume may check again.
///
/// # Errors
/// [`ExportError`], mapped to NBD error values by
/// [`ExportError::errno`].
pub trait Export: Send + Sync + 'static {
    /// Memory taken from the server's budget, given back when dropped.
    type Permit: Send + 'static;

    /// The volume's size in bytes.
    fn size(&self) -> u64;

    /// A description for people (`NBD_INFO_DESCRIPTION`).
    fn description(&self) -> String {
        String::new()
    }

    /// Takes `bytes` from the server's memory budget, waiting for room
    /// for a bounded time; the connection holds it for a read's data until
    /// it is sent. A permit of 0 bytes is had at once, to
    /// [`grow`](Export::grow).
    fn reserve(&self, bytes: u64)
    -> impl Future<Output = Result<Self::Permit, ExportError>> + Send;

    /// Makes `permit` hold `bytes` in all, with at most `need` more still
    /// to come, waiting for room until `deadline`. A write's payload takes
    /// its bytes this way as they arrive, so that a client that declares
    /// 32 MiB and sends nothing holds nothing; `need` lets the budget
    /// refuse bytes to payloads that could then not all be finished.
    fn grow(
        &self,
        permit: &mut Self::Permit,
        bytes: u64,
        need: u64,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// Reads `length` bytes at `offset`, voting like any read.
    fn read(
        &self,
        offset: u64,
        length: u32,
    ) -> impl Future<Output = Result<Bytes, ExportError>> + Send;

    /// Writes `data` at `offset`; with `fua`, durable before it returns.
    fn write(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// Writes zeroes; with `no_hole` the range stays allocated (and the
    /// zeroes are still one request: a read sees all of them or none);
    /// with `fua`, durable before it returns.
    fn write_zeroes(
        &self,
        offset: u64,
        length: u32,
        no_hole: bool,
        fua: bool,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// Discards `length` bytes at `offset` (`NBD_CMD_TRIM`): they read as
    /// zero afterwards on every child, whose space is freed where it can
    /// be; with `fua`, durable before it returns.
    fn discard(
        &self,
        offset: u64,
        length: u32,
        fua: bool,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// Makes every completed write durable, on every connection.
    fn flush(&self) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// At most `limit` extents from `offset`, consecutive; a zero extent
    /// only where every child reads zero.
    fn block_status(
        &self,
        offset: u64,
        length: u32,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Extent>, ExportError>> + Send;

    /// A connection entered (`+1`) or left (`-1`) transmission on this
    /// export, for metrics.
    fn connections(&self, _delta: i64) {}
}

/// The exports of a server, by name.
pub trait Exports: Send + Sync + 'static {
    /// The export type.
    type Export: Export;

    /// The names of every export, for `NBD_OPT_LIST`.
    fn names(&self) -> Vec<String>;

    /// The export called `name`.
    fn get(&self, name: &str) -> Option<Arc<Self::Export>>;

    /// Resolves a name as the client gave it: the empty name selects the
    /// only export when there is exactly one. Returns the canonical name.
    fn resolve(&self, name: &str) -> Option<(String, Arc<Self::Export>)> {
        if name.is_empty() {
            let names = self.names();
            return match names.as_slice() {
                [only] => self.get(only).map(|e| (only.clone(), e)),
                _ => None,
            };
        }
        self.get(name).map(|e| (name.to_owned(), e))
    }
}
