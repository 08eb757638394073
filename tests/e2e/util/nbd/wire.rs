//! The NBD wire, one message at a time on any stream (TCP or Unix): the
//! protocol's numbers, and framing functions for tests that send exact or
//! hostile bytes and look at each answer. Protocol violations by the
//! server are [`io::ErrorKind::InvalidData`] errors.

use std::io::{self, ErrorKind, Read, Write};

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
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    /// `NBD_REP_ERR_UNSUP`.
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// `NBD_REP_ERR_POLICY`: refused by the server's configuration.
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// `NBD_REP_ERR_TLS_REQD`: not before `NBD_OPT_STARTTLS`.
    pub const ERR_TLS_REQD: u32 = (1 << 31) + 5;
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
    pub const DISC: u16 = 2;
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

/// Reads exactly `n` bytes.
pub fn read_bytes(s: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
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

/// An error for a server that broke the protocol (or a request this
/// client cannot frame).
pub(super) fn protocol(what: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what)
}

/// Reads the greeting (`NBDMAGIC`, `IHAVEOPT`, handshake flags) without
/// answering it; returns the handshake flags.
pub fn read_greeting(s: &mut impl Read) -> io::Result<u16> {
    let hello = read_bytes(s, 18)?;
    if &hello[..8] != NBD_MAGIC || be64(&hello[8..]) != OPT_MAGIC {
        return Err(protocol(format!("not a newstyle greeting: {hello:02x?}")));
    }
    Ok(u16::from_be_bytes([hello[16], hello[17]]))
}

/// Reads the greeting and sends [`CLIENT_FLAGS`]; returns the handshake
/// flags.
pub fn greet<S: Read + Write>(s: &mut S) -> io::Result<u16> {
    let flags = read_greeting(s)?;
    s.write_all(&CLIENT_FLAGS.to_be_bytes())?;
    Ok(flags)
}

/// Sends one option with its data, without reading a reply.
pub fn send_option(s: &mut impl Write, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| protocol("option data over 4 GiB".into()))?;
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend(OPT_MAGIC.to_be_bytes());
    b.extend(option.to_be_bytes());
    b.extend(len.to_be_bytes());
    b.extend(data);
    s.write_all(&b)
}

/// One option reply: (option, type, data).
pub fn option_reply(s: &mut impl Read) -> io::Result<(u32, u32, Vec<u8>)> {
    let h = read_bytes(s, 20)?;
    if be64(&h) != REPLY_MAGIC {
        return Err(protocol(format!("bad option reply magic: {h:02x?}")));
    }
    let len = be32(&h[16..]) as usize;
    if len > 1 << 20 {
        return Err(protocol(format!("an option reply of {len} bytes")));
    }
    Ok((be32(&h[8..]), be32(&h[12..]), read_bytes(s, len)?))
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

/// After the greeting: sends `NBD_OPT_GO` for `export` and reads its
/// replies; returns the export's size and transmission flags once the
/// server acknowledged (the stream is then in transmission). An error
/// reply is an error that names it.
pub fn go<S: Read + Write>(s: &mut S, export: &str) -> io::Result<(u64, u16)> {
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

/// Sends one transmission request (header and `payload`).
pub fn request(
    s: &mut impl Write,
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
pub fn simple_reply(s: &mut impl Read) -> io::Result<(u32, u64)> {
    let h = read_bytes(s, 16)?;
    if be32(&h) != SIMPLE_MAGIC {
        return Err(protocol(format!("bad simple reply magic: {h:02x?}")));
    }
    Ok((be32(&h[4..]), be64(&h[8..])))
}

/// Whether the peer closes `s` with nothing more to say: the next read
/// ends the input or finds the connection reset. Bytes, or no answer
/// within the socket's timeout, are not a close.
pub fn closed_by_peer(s: &mut impl Read) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}
