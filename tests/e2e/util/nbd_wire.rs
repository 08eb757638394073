//! A small NBD client written by hand from the protocol document, on any
//! socket (TCP or Unix), for tests that need to send exact options and
//! requests: what the server answers to each option, and exactly how many
//! requests it served. Simple replies only; every read is bounded by the
//! socket's timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Option types.
pub mod nbd_opt {
    pub const EXPORT_NAME: u32 = 1;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod nbd_rep {
    pub const ACK: u32 = 1;
    pub const INFO: u32 = 3;
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    pub const ERR_TLS_REQD: u32 = (1 << 31) + 5;
}

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;

/// How long one read from the server may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP connection to `addr` with bounded reads and writes.
#[track_caller]
pub fn nbd_tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to NBD at {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// A Unix-socket connection to `path` with bounded reads and writes.
#[track_caller]
pub fn nbd_unix(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to NBD at {}: {e}", path.display()));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// One NBD connection, from the greeting on.
pub struct NbdWire<S> {
    s: S,
}

impl<S: Read + Write> NbdWire<S> {
    /// Reads the fixed newstyle greeting and answers with fixed newstyle
    /// and no zeroes.
    #[track_caller]
    pub fn greet(mut s: S) -> NbdWire<S> {
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).expect("read the NBD greeting");
        assert_eq!(be64(&hello[0..8]), NBDMAGIC, "NBDMAGIC");
        assert_eq!(be64(&hello[8..16]), IHAVEOPT, "IHAVEOPT");
        s.write_all(&3u32.to_be_bytes())
            .expect("send the client flags");
        NbdWire { s }
    }

    /// Sends `option` with `data`, without reading a reply.
    #[track_caller]
    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).expect("send an option");
    }

    /// Reads one option reply to `option`: its type and data.
    #[track_caller]
    pub fn option_reply(&mut self, option: u32) -> (u32, Vec<u8>) {
        let mut head = [0u8; 20];
        self.s.read_exact(&mut head).expect("read an option reply");
        assert_eq!(be64(&head[0..8]), REPLY_MAGIC, "option reply magic");
        assert_eq!(be32(&head[8..12]), option, "the reply names the option");
        let mut data = vec![0u8; be32(&head[16..20]) as usize];
        self.s.read_exact(&mut data).expect("read the reply data");
        (be32(&head[12..16]), data)
    }

    /// Sends `option` and returns the type of its one reply.
    #[track_caller]
    pub fn ask(&mut self, option: u32, data: &[u8]) -> u32 {
        self.send_option(option, data);
        self.option_reply(option).0
    }

    /// `NBD_OPT_GO` for `export`: the replies up to `ACK` (panics on an
    /// error reply); the connection is then in transmission.
    #[track_caller]
    pub fn go(&mut self, export: &str) {
        self.send_option(nbd_opt::GO, &super::nbd::go_data(export));
        loop {
            match self.option_reply(nbd_opt::GO) {
                (nbd_rep::INFO, _) => {}
                (nbd_rep::ACK, _) => return,
                (kind, data) => panic!(
                    "NBD_OPT_GO {export:?} got reply {kind:#x}: {}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
    }

    /// Whether the server closes the connection (see [`closed_by_peer`]).
    pub fn closed_by_server(&mut self) -> bool {
        closed_by_peer(&mut self.s)
    }

    fn request(&mut self, kind: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
        let mut b = Vec::with_capacity(28 + payload.len());
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(payload);
        self.s.write_all(&b).expect("send a request");
    }

    /// Reads one simple reply to `cookie`; returns its error value.
    #[track_caller]
    fn simple_reply(&mut self, cookie: u64) -> u32 {
        let mut head = [0u8; 16];
        self.s.read_exact(&mut head).expect("read a reply");
        assert_eq!(be32(&head[0..4]), SIMPLE_REPLY_MAGIC, "simple reply magic");
        assert_eq!(be64(&head[8..16]), cookie, "the reply's cookie");
        be32(&head[4..8])
    }

    /// `NBD_CMD_WRITE`; panics unless it succeeds.
    #[track_caller]
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        self.request(CMD_WRITE, offset, offset, data.len() as u32, data);
        let errno = self.simple_reply(offset);
        assert_eq!(errno, 0, "NBD write of {} bytes at {offset}", data.len());
    }

    /// `NBD_CMD_READ`; panics unless it succeeds.
    #[track_caller]
    pub fn read_at(&mut self, offset: u64, length: u32) -> Vec<u8> {
        self.request(CMD_READ, offset, offset, length, &[]);
        let errno = self.simple_reply(offset);
        assert_eq!(errno, 0, "NBD read of {length} bytes at {offset}");
        let mut data = vec![0u8; length as usize];
        self.s.read_exact(&mut data).expect("read the data");
        data
    }

    /// `NBD_CMD_FLUSH`; panics unless it succeeds.
    #[track_caller]
    pub fn flush(&mut self) {
        self.request(CMD_FLUSH, u64::MAX, 0, 0, &[]);
        assert_eq!(self.simple_reply(u64::MAX), 0, "NBD flush");
    }

    /// `NBD_CMD_DISC`, then waits for the server to close.
    #[track_caller]
    pub fn disconnect(mut self) {
        self.request(CMD_DISC, 0, 0, 0, &[]);
        assert!(
            self.closed_by_server(),
            "the server closes after NBD_CMD_DISC"
        );
    }
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

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}
