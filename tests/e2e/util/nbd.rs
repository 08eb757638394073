//! A small blocking NBD client, written from `NetworkBlockDevice/nbd`
//! `doc/proto.md` and not from the server's code, so that a misreading of
//! the protocol on one side is not copied to the other.
//!
//! Two layers, on any stream (TCP or Unix):
//!
//! - [`wire`]: the protocol's numbers and one message at a time
//!   ([`greet`], [`send_option`], [`option_reply`], [`go`], [`request`],
//!   [`simple_reply`]), for tests that send hostile bytes and look at each
//!   answer;
//! - [`NbdHandshake`], then [`NbdClient`]: fixed newstyle, options one by
//!   one, `NBD_OPT_GO` on one export, then `read`, `write` and `flush`
//!   with simple replies and one request in flight.
//!
//! Every call returns a `Result`; callers that want a panic say so with
//! `expect`. Every socket has read and write timeouts ([`NBD_TIMEOUT`]),
//! so no call waits forever on a server that stopped answering.

mod wire;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub use self::wire::*;

/// The read and write timeout of every socket of this module.
pub const NBD_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `addr` with [`NBD_TIMEOUT`] on both directions.
pub fn nbd_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, NBD_TIMEOUT)?;
    s.set_read_timeout(Some(NBD_TIMEOUT))?;
    s.set_write_timeout(Some(NBD_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A Unix-socket connection to `path` with [`NBD_TIMEOUT`] on both
/// directions.
pub fn nbd_unix(path: &Path) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(NBD_TIMEOUT))?;
    s.set_write_timeout(Some(NBD_TIMEOUT))?;
    Ok(s)
}

/// A connection in the handshake, after the greeting: options one by one
/// until [`NbdHandshake::go`] enters transmission.
pub struct NbdHandshake<S: Read + Write> {
    stream: S,
}

impl<S: Read + Write> NbdHandshake<S> {
    /// Reads the fixed newstyle greeting on `stream` and answers with
    /// fixed newstyle and no zeroes.
    pub fn greet(mut stream: S) -> io::Result<NbdHandshake<S>> {
        greet(&mut stream)?;
        Ok(NbdHandshake { stream })
    }

    /// Sends `option` with `data`, without reading a reply.
    pub fn send_option(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        send_option(&mut self.stream, option, data)
    }

    /// Reads one option reply, which must answer `option`: its type and
    /// data.
    pub fn option_reply(&mut self, option: u32) -> io::Result<(u32, Vec<u8>)> {
        let (answered, kind, data) = option_reply(&mut self.stream)?;
        if answered != option {
            return Err(protocol(format!(
                "a reply to option {answered}, not {option}"
            )));
        }
        Ok((kind, data))
    }

    /// Sends `option` and returns the type of its one reply.
    pub fn ask(&mut self, option: u32, data: &[u8]) -> io::Result<u32> {
        self.send_option(option, data)?;
        Ok(self.option_reply(option)?.0)
    }

    /// `NBD_OPT_GO` for `export` (an error reply is an error): the
    /// connection in transmission.
    pub fn go(mut self, export: &str) -> io::Result<NbdClient<S>> {
        let (size, flags) = go(&mut self.stream, export)?;
        Ok(NbdClient {
            stream: self.stream,
            size,
            flags,
            cookie: 0,
            disconnected: false,
        })
    }

    /// Whether the server closes the connection (see [`closed_by_peer`]).
    pub fn closed_by_server(&mut self) -> bool {
        closed_by_peer(&mut self.stream)
    }
}

/// Why a request of [`NbdClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The server answered with an error value.
    #[error("NBD error {0}")]
    Errno(u32),
    /// The socket failed or timed out, or the server broke the protocol:
    /// the connection is unusable.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

/// A blocking NBD client in transmission on one export: simple replies,
/// one request in flight. Dropped, it sends `NBD_CMD_DISC` (best effort).
pub struct NbdClient<S: Read + Write = TcpStream> {
    stream: S,
    size: u64,
    flags: u16,
    cookie: u64,
    disconnected: bool,
}

impl NbdClient<TcpStream> {
    /// Connects to `addr` over TCP and enters transmission on `export`.
    pub fn connect(addr: SocketAddr, export: &str) -> io::Result<NbdClient<TcpStream>> {
        NbdHandshake::greet(nbd_tcp(addr)?)?.go(export)
    }
}

impl<S: Read + Write> NbdClient<S> {
    /// The export's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The export's transmission flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// Sends one request and reads its reply's header; on success returns
    /// with the reply's data (if any) still to read.
    fn call(
        &mut self,
        kind: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Result<(), NbdError> {
        self.cookie += 1;
        request(&mut self.stream, kind, self.cookie, offset, length, payload)?;
        let (error, cookie) = simple_reply(&mut self.stream)?;
        if cookie != self.cookie {
            return Err(protocol(format!(
                "the reply's cookie {cookie} is not the request's {}",
                self.cookie
            ))
            .into());
        }
        match error {
            0 => Ok(()),
            e => Err(NbdError::Errno(e)),
        }
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, NbdError> {
        self.call(cmd::READ, offset, len, &[])?;
        Ok(read_bytes(&mut self.stream, len as usize)?)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        let len = u32::try_from(data.len()).map_err(|_| protocol("a write over 4 GiB".into()))?;
        self.call(cmd::WRITE, offset, len, data)
    }

    /// Flushes the export.
    pub fn flush(&mut self) -> Result<(), NbdError> {
        self.call(cmd::FLUSH, 0, 0, &[])
    }

    /// Sends `NBD_CMD_DISC`; returns whether the server then closes the
    /// connection (see [`closed_by_peer`]).
    pub fn disconnect(mut self) -> io::Result<bool> {
        self.disconnected = true;
        request(&mut self.stream, cmd::DISC, 0, 0, 0, &[])?;
        Ok(closed_by_peer(&mut self.stream))
    }
}

impl<S: Read + Write> Drop for NbdClient<S> {
    fn drop(&mut self) {
        if !self.disconnected {
            // Best effort: the server may be gone already.
            let _ = request(&mut self.stream, cmd::DISC, 0, 0, 0, &[]);
        }
    }
}
