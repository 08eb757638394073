//! A small blocking NBD client, written from `NetworkBlockDevice/nbd`
//! `doc/proto.md` and not from the server's code, so that a misreading of
//! the protocol on one side is not copied to the other.
//!
//! Two layers:
//!
//! - the wire ([`greet`], [`send_option`], [`option_reply`], [`request`],
//!   [`simple_reply`]): one message at a time on a raw [`TcpStream`], for
//!   tests that send hostile bytes and look at each answer;
//! - [`NbdClient`]: fixed newstyle, `NBD_OPT_GO` on one export, simple
//!   replies, then `read`, `write` and `flush` with one request in flight.
//!
//! Every socket has read and write timeouts ([`NBD_TIMEOUT`]), so no call
//! waits forever on a server that stopped answering.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The read and write timeout of every socket of this module.
pub const NBD_TIMEOUT: Duration = Duration::from_secs(10);

/// `NBDMAGIC`, the first 8 bytes of the greeting.
pub const NBD_MAGIC: &[u8; 8] = b"NBDMAGIC";
/// `IHAVEOPT`: the newstyle magic, and the magic of every option.
pub const OPT_MAGIC: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
/// Client flags: fixed newstyle, no zeroes.
pub const CLIENT_FLAGS: u32 = 3;

/// Option numbers.
pub mod opt {
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    /// `NBD_REP_ERR_UNSUP`.
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// `NBD_REP_ERR_UNKNOWN`: no such export.
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
}

/// Transmission flags.
pub mod tflag {
    pub const HAS_FLAGS: u16 = 1 << 0;
    pub const SEND_FLUSH: u16 = 1 << 2;
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Command numbers.
pub mod cmd {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const FLUSH: u16 = 3;
    pub const WRITE_ZEROES: u16 = 6;
}

/// Error values of a reply.
pub mod errno {
    pub const EIO: u32 = 5;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const EOVERFLOW: u32 = 75;
}

/// Connects with [`NBD_TIMEOUT`] on both directions.
pub fn connect_nbd(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, NBD_TIMEOUT)?;
    s.set_read_timeout(Some(NBD_TIMEOUT))?;
    s.set_write_timeout(Some(NBD_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn read_exact(s: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn be64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_be_bytes(w)
}

fn be32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_be_bytes(w)
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads the greeting (`NBDMAGIC`, `IHAVEOPT`, handshake flags) and sends
/// [`CLIENT_FLAGS`]; returns the handshake flags.
pub fn greet(s: &mut TcpStream) -> io::Result<u16> {
    let hello = read_exact(s, 18)?;
    if &hello[..8] != NBD_MAGIC || be64(&hello[8..]) != OPT_MAGIC {
        return Err(protocol(format!("not a newstyle greeting: {hello:02x?}")));
    }
    s.write_all(&CLIENT_FLAGS.to_be_bytes())?;
    Ok(u16::from_be_bytes([hello[16], hello[17]]))
}

/// Sends one option with its data.
pub fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| protocol("option data over 4 GiB".into()))?;
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend(OPT_MAGIC.to_be_bytes());
    b.extend(option.to_be_bytes());
    b.extend(len.to_be_bytes());
    b.extend(data);
    s.write_all(&b)
}

/// One option reply: (option, type, data).
pub fn option_reply(s: &mut TcpStream) -> io::Result<(u32, u32, Vec<u8>)> {
    let h = read_exact(s, 20)?;
    if be64(&h) != REPLY_MAGIC {
        return Err(protocol(format!("bad option reply magic: {h:02x?}")));
    }
    let len = be32(&h[16..]) as usize;
    if len > 1 << 20 {
        return Err(protocol(format!("an option reply of {len} bytes")));
    }
    Ok((be32(&h[8..]), be32(&h[12..]), read_exact(s, len)?))
}

/// Sends one transmission request (header and `payload`).
pub fn request(
    s: &mut TcpStream,
    kind: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    payload: &[u8],
) -> io::Result<()> {
    let mut b = Vec::with_capacity(28 + payload.len());
    b.extend(REQUEST_MAGIC.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    b.extend(kind.to_be_bytes());
    b.extend(cookie.to_be_bytes());
    b.extend(offset.to_be_bytes());
    b.extend(length.to_be_bytes());
    b.extend(payload);
    s.write_all(&b)
}

/// The header of a simple reply: (errno, cookie).
pub fn simple_reply(s: &mut TcpStream) -> io::Result<(u32, u64)> {
    let h = read_exact(s, 16)?;
    if be32(&h) != SIMPLE_MAGIC {
        return Err(protocol(format!("bad simple reply magic: {h:02x?}")));
    }
    Ok((be32(&h[4..]), be64(&h[8..])))
}

/// The data of `NBD_OPT_GO` (or `INFO`) for `export`, asking for no
/// particular information.
pub fn go_data(export: &str) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend((export.len() as u32).to_be_bytes());
    data.extend(export.as_bytes());
    data.extend(0u16.to_be_bytes());
    data
}

/// Greets and sends `NBD_OPT_GO` for `export`; returns the export's size
/// and transmission flags once the server acknowledged.
pub fn go(s: &mut TcpStream, export: &str) -> io::Result<(u64, u16)> {
    greet(s)?;
    send_option(s, opt::GO, &go_data(export))?;
    let mut export_info = None;
    // The server sends a few NBD_REP_INFO, then NBD_REP_ACK.
    for _ in 0..16 {
        let (option, kind, data) = option_reply(s)?;
        if option != opt::GO {
            return Err(protocol(format!("a reply to option {option}, not GO")));
        }
        match kind {
            rep::INFO if data.len() >= 12 && data[..2] == [0, 0] => {
                export_info = Some((be64(&data[2..]), u16::from_be_bytes([data[10], data[11]])));
            }
            rep::INFO => {}
            rep::ACK => {
                return export_info.ok_or_else(|| protocol("GO without NBD_INFO_EXPORT".into()));
            }
            other => {
                return Err(protocol(format!(
                    "NBD_OPT_GO {export:?} answered {other:#x}: {}",
                    String::from_utf8_lossy(&data)
                )));
            }
        }
    }
    Err(protocol("NBD_OPT_GO: more than 16 replies".into()))
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

/// A blocking NBD client on one export: simple replies, one request in
/// flight.
pub struct NbdClient {
    stream: TcpStream,
    size: u64,
    flags: u16,
    cookie: u64,
}

impl NbdClient {
    /// Connects to `addr` and enters transmission on `export`.
    pub fn connect(addr: SocketAddr, export: &str) -> io::Result<NbdClient> {
        let mut stream = connect_nbd(addr)?;
        let (size, flags) = go(&mut stream, export)?;
        Ok(NbdClient {
            stream,
            size,
            flags,
            cookie: 0,
        })
    }

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
        Ok(read_exact(&mut self.stream, len as usize)?)
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
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // NBD_CMD_DISC, best effort: the server may be gone already.
        let _ = request(&mut self.stream, 2, 0, 0, 0, &[]);
    }
}
