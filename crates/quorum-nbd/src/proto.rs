//! The wire format of NBD (`NetworkBlockDevice/nbd` `doc/proto.md`):
//! constants, the typed messages, and the pure codec between them and
//! bytes. Nothing here touches a socket, so every rule is unit-tested.

use bytes::{BufMut, Bytes, BytesMut};

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, and the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the client may ask for no 124 zero bytes.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// `NBD_CMD_FLUSH` is served.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is honoured.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is served.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` (and `NBD_CMD_FLAG_NO_HOLE`) is served.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// A flush covers writes completed on every connection.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_CACHE` is served.
    pub const SEND_CACHE: u16 = 1 << 10;
}

/// What quorum's exports advertise.
pub const EXPORT_FLAGS: u16 = tflag::HAS_FLAGS
    | tflag::SEND_FLUSH
    | tflag::SEND_FUA
    | tflag::SEND_TRIM
    | tflag::SEND_WRITE_ZEROES
    | tflag::CAN_MULTI_CONN
    | tflag::SEND_CACHE;

/// Option types.
pub mod opt {
    /// Choose an export and enter transmission (no error reply possible).
    pub const EXPORT_NAME: u32 = 1;
    /// End the session.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Start TLS.
    pub const STARTTLS: u32 = 5;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and enter transmission.
    pub const GO: u32 = 7;
    /// Use structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types.
pub mod rep {
    /// Success, or the end of a list.
    pub const ACK: u32 = 1;
    /// One export of a list.
    pub const SERVER: u32 = 2;
    /// One item of information about an export.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    /// The option is unknown here.
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// The option is forbidden by policy.
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// The option is malformed or out of place.
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    /// The request or the reply is too large.
    pub const ERR_TOO_BIG: u32 = (1 << 31) + 9;
}

/// Information types of `NBD_REP_INFO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// The canonical name.
    pub const NAME: u16 = 1;
    /// A description for people.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (payload follows the header).
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Discard (a hint).
    pub const TRIM: u16 = 4;
    /// Prefetch (a hint).
    pub const CACHE: u16 = 5;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
    /// Block status.
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cflag {
    /// Force unit access.
    pub const FUA: u16 = 1 << 0;
    /// Write zeroes without a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Do not fragment a read (not advertised).
    pub const DF: u16 = 1 << 2;
    /// One extent per context.
    pub const REQ_ONE: u16 = 1 << 3;
}

/// Structured reply types and flags.
pub mod reply {
    /// Last chunk of a reply.
    pub const FLAG_DONE: u16 = 1 << 0;
    /// An empty final chunk.
    pub const TYPE_NONE: u16 = 0;
    /// Data at an offset.
    pub const TYPE_OFFSET_DATA: u16 = 1;
    /// Extents of one metadata context.
    pub const TYPE_BLOCK_STATUS: u16 = 5;
    /// An error with a message.
    pub const TYPE_ERROR: u16 = (1 << 15) + 1;
}

/// Status flags of `base:allocation`.
pub mod state {
    /// Not allocated.
    pub const HOLE: u32 = 1 << 0;
    /// Reads as zeroes.
    pub const ZERO: u32 = 1 << 1;
}

/// The one metadata context served.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Its context id on every connection.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The smallest request quorum serves, in bytes.
pub const MIN_BLOCK: u32 = 1;
/// The request size quorum serves best.
pub const PREFERRED_BLOCK: u32 = 4096;
/// The largest READ or WRITE payload (32 MiB, the protocol's default).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// The longest string the protocol allows (names, queries, messages).
pub const MAX_STRING: usize = 4096;

/// NBD error values.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left (a write past the end).
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Why bytes from a client are not a message this server accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A magic number is not the one expected; the stream cannot be
    /// trusted any further.
    #[error("bad magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// What was read.
        found: u64,
        /// What the protocol requires.
        expected: u64,
    },
    /// The client set flags this server does not know or did not offer.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// Option data too long to be read.
    #[error("option {option} has {length} bytes of data, more than the {max} accepted")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its declared length.
        length: u32,
        /// The most accepted.
        max: u32,
    },
    /// Option data whose lengths do not add up.
    #[error("malformed option data: {0}")]
    Malformed(&'static str),
    /// A string longer than the protocol's 4096 bytes.
    #[error("a string of {0} bytes, more than 4096")]
    StringTooLong(usize),
    /// A name or query that is not UTF-8.
    #[error("a string that is not UTF-8")]
    NotUtf8,
}

/// An option header: `IHAVEOPT`, option, data length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option type.
    pub option: u32,
    /// The bytes of data that follow.
    pub length: u32,
}

impl OptionHeader {
    /// The size of the header on the wire.
    pub const SIZE: usize = 16;

    /// Decodes a header.
    ///
    /// # Errors
    /// [`ProtoError::BadMagic`].
    pub fn decode(b: &[u8; Self::SIZE]) -> Result<OptionHeader, ProtoError> {
        let magic = u64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
        if magic != IHAVEOPT {
            return Err(ProtoError::BadMagic {
                found: magic,
                expected: IHAVEOPT,
            });
        }
        Ok(OptionHeader {
            option: u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
            length: u32::from_be_bytes(b[12..16].try_into().unwrap_or_default()),
        })
    }
}

/// A reader over option data that checks every length against what is
/// left.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.rest.len() < n {
            return Err(ProtoError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string of a 32-bit length.
    fn string(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let n = self.u32(what)? as usize;
        if n > MAX_STRING {
            return Err(ProtoError::StringTooLong(n));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError::NotUtf8)
    }

    fn end(&self, what: &'static str) -> Result<(), ProtoError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Malformed(what))
        }
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export asked for ("" for the default).
    pub name: String,
    /// The information items asked for.
    pub items: Vec<u16>,
}

impl InfoRequest {
    /// Decodes option data.
    ///
    /// # Errors
    /// [`ProtoError::Malformed`] and friends when lengths do not add up.
    pub fn decode(data: &[u8]) -> Result<InfoRequest, ProtoError> {
        let mut c = Cursor { rest: data };
        let name = c.string("export name")?;
        let n = c.u16("number of information requests")?;
        let items = (0..n)
            .map(|_| c.u16("information request"))
            .collect::<Result<_, _>>()?;
        c.end("bytes after the information requests")?;
        Ok(InfoRequest { name, items })
    }
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    /// The export the contexts are for.
    pub name: String,
    /// The queries.
    pub queries: Vec<String>,
}

impl MetaRequest {
    /// Decodes option data.
    ///
    /// # Errors
    /// [`ProtoError::Malformed`] and friends when lengths do not add up.
    pub fn decode(data: &[u8]) -> Result<MetaRequest, ProtoError> {
        let mut c = Cursor { rest: data };
        let name = c.string("export name")?;
        let n = c.u32("number of queries")?;
        let mut queries = Vec::new();
        for _ in 0..n {
            queries.push(c.string("query")?);
        }
        c.end("bytes after the queries")?;
        Ok(MetaRequest { name, queries })
    }

    /// Whether `base:allocation` answers these queries: for a list, the
    /// empty list and the `base:` wildcard match; for a selection, only
    /// the exact name.
    pub fn matches_base_allocation(&self, listing: bool) -> bool {
        if listing && self.queries.is_empty() {
            return true;
        }
        self.queries
            .iter()
            .any(|q| q == BASE_ALLOCATION || (listing && q == "base:"))
    }
}

/// Encodes one option reply.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(20 + data.len());
    b.put_u64(REPLY_MAGIC);
    b.put_u32(option);
    b.put_u32(kind);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// The data of `NBD_REP_SERVER`: a name.
pub fn server_data(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.put_u32(name.len() as u32);
    b.put_slice(name.as_bytes());
    b
}

/// The data of `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.put_u16(info::EXPORT);
    b.put_u64(size);
    b.put_u16(flags);
    b
}

/// The data of `NBD_REP_INFO` with a string (`NAME`, `DESCRIPTION`).
pub fn info_string(kind: u16, text: &str) -> Vec<u8> {
    let text = truncate(text, MAX_STRING);
    let mut b = Vec::with_capacity(2 + text.len());
    b.put_u16(kind);
    b.put_slice(text.as_bytes());
    b
}

/// The data of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size() -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.put_u16(info::BLOCK_SIZE);
    b.put_u32(MIN_BLOCK);
    b.put_u32(PREFERRED_BLOCK);
    b.put_u32(MAX_PAYLOAD);
    b
}

/// The data of `NBD_REP_META_CONTEXT`.
pub fn meta_context_data(id: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.put_u32(id);
    b.put_slice(name.as_bytes());
    b
}

/// What the server sends after `NBD_OPT_EXPORT_NAME`.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(134);
    b.put_u64(size);
    b.put_u16(flags);
    if !no_zeroes {
        b.put_bytes(0, 124);
    }
    b.freeze()
}

/// The longest prefix of `s` of at most `max` bytes on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A transmission request header as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length (of the payload for a write).
    pub length: u32,
}

impl RequestHeader {
    /// The size of the header on the wire.
    pub const SIZE: usize = 28;

    /// Decodes a header.
    ///
    /// # Errors
    /// [`ProtoError::BadMagic`]: the connection must end.
    pub fn decode(b: &[u8; Self::SIZE]) -> Result<RequestHeader, ProtoError> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != REQUEST_MAGIC {
            return Err(ProtoError::BadMagic {
                found: u64::from(magic),
                expected: u64::from(REQUEST_MAGIC),
            });
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Ok(RequestHeader {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64_at(8),
            offset: u64_at(16),
            length: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
        })
    }

    /// Encodes a header (for tests and clients).
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// A request checked against the export, ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `length` bytes.
    Read {
        /// Where.
        offset: u64,
        /// How many.
        length: u32,
    },
    /// Write the `length` bytes of payload that follow.
    Write {
        /// Where.
        offset: u64,
        /// How many.
        length: u32,
        /// Persist before the reply.
        fua: bool,
    },
    /// Write zeroes (also TRIM for now).
    WriteZeroes {
        /// Where.
        offset: u64,
        /// How many.
        length: u32,
        /// Allocate rather than punch.
        no_hole: bool,
        /// Persist before the reply.
        fua: bool,
    },
    /// Flush.
    Flush,
    /// Block status of `base:allocation`.
    BlockStatus {
        /// Where.
        offset: u64,
        /// How many (a hint).
        length: u32,
        /// At most one extent.
        req_one: bool,
    },
    /// Prefetch: nothing to do.
    Cache,
    /// Disconnect once the requests in flight are answered.
    Disconnect,
}

/// A request refused before it runs, and what to do about its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The NBD error to answer with.
    pub errno: u32,
    /// Why, for the client's log (structured replies carry it).
    pub message: &'static str,
    /// Payload bytes that follow the header and must be read and dropped
    /// (a write refused for its range or flags).
    pub discard: u32,
    /// The stream cannot be followed any further: answer, then close.
    pub fatal: bool,
}

impl Refusal {
    fn new(errno: u32, message: &'static str) -> Refusal {
        Refusal {
            errno,
            message,
            discard: 0,
            fatal: false,
        }
    }
}

/// What the connection negotiated that requests are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The export's size.
    pub size: u64,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub base_allocation: bool,
}

/// Checks a request against the session: flags, bounds, sizes. Pure.
///
/// # Errors
/// A [`Refusal`] to answer with; nothing of the request runs.
pub fn check(h: &RequestHeader, s: &Session) -> Result<Command, Refusal> {
    use errno::{EINVAL, ENOSPC, EOVERFLOW};
    let fua = h.flags & cflag::FUA != 0;
    let allowed = cflag::FUA
        | match h.kind {
            cmd::WRITE_ZEROES => cflag::NO_HOLE,
            cmd::BLOCK_STATUS => cflag::REQ_ONE,
            _ => 0,
        };
    let end = h.offset.checked_add(u64::from(h.length));
    let inside = end.is_some_and(|e| e <= s.size);
    if h.kind == cmd::WRITE {
        if h.length > MAX_PAYLOAD {
            // Its payload is too large to read: answer and close.
            return Err(Refusal {
                fatal: true,
                ..Refusal::new(EOVERFLOW, "the write is larger than the 32 MiB maximum")
            });
        }
        let refuse = |errno, message| Refusal {
            discard: h.length,
            ..Refusal::new(errno, message)
        };
        if h.flags & !allowed != 0 {
            return Err(refuse(EINVAL, "unknown or misplaced command flags"));
        }
        if !inside {
            return Err(refuse(ENOSPC, "the write lies past the end of the export"));
        }
        return Ok(Command::Write {
            offset: h.offset,
            length: h.length,
            fua,
        });
    }
    if h.kind > cmd::BLOCK_STATUS {
        return Err(Refusal::new(EINVAL, "unknown command"));
    }
    if h.flags & !allowed != 0 {
        return Err(Refusal::new(EINVAL, "unknown or misplaced command flags"));
    }
    match h.kind {
        cmd::DISC => Ok(Command::Disconnect),
        cmd::FLUSH => Ok(Command::Flush),
        cmd::READ if h.length > MAX_PAYLOAD => Err(Refusal::new(
            EOVERFLOW,
            "the read is larger than the 32 MiB maximum",
        )),
        _ if !inside => Err(Refusal::new(
            if h.kind == cmd::WRITE_ZEROES {
                ENOSPC
            } else {
                EINVAL
            },
            "the request lies past the end of the export",
        )),
        cmd::READ => Ok(Command::Read {
            offset: h.offset,
            length: h.length,
        }),
        cmd::TRIM | cmd::WRITE_ZEROES => Ok(Command::WriteZeroes {
            offset: h.offset,
            length: h.length,
            no_hole: h.kind == cmd::WRITE_ZEROES && h.flags & cflag::NO_HOLE != 0,
            fua,
        }),
        cmd::CACHE => Ok(Command::Cache),
        _ /* BLOCK_STATUS */ => {
            if !s.structured || !s.base_allocation {
                return Err(Refusal::new(
                    EINVAL,
                    "block status needs structured replies and base:allocation",
                ));
            }
            if h.length == 0 {
                return Err(Refusal::new(EINVAL, "block status of zero bytes"));
            }
            Ok(Command::BlockStatus {
                offset: h.offset,
                length: h.length,
                req_one: h.flags & cflag::REQ_ONE != 0,
            })
        }
    }
}

/// One run of `base:allocation` in a block status reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Bytes (nonzero).
    pub length: u32,
    /// [`state`] flags.
    pub flags: u32,
}

/// What a reply says, before it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// Success with no data.
    Done,
    /// The data of a read at `offset`.
    Data {
        /// Where the data starts.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Block status of `base:allocation`.
    Extents(Vec<Descriptor>),
    /// An error.
    Error {
        /// The NBD error value.
        errno: u32,
        /// For people.
        message: String,
    },
}

/// Encodes the reply to the request of `cookie`: simple replies unless
/// `structured`, in which case data, extents and errors are structured
/// chunks with `NBD_REPLY_FLAG_DONE` (a success without data stays a
/// simple reply, which the protocol allows). Returns the header and the
/// payload to send after it, so that read data is never copied.
pub fn encode_reply(cookie: u64, body: &ReplyBody, structured: bool) -> (BytesMut, Bytes) {
    let mut b = BytesMut::with_capacity(64);
    match (body, structured) {
        (ReplyBody::Done, _) => {
            simple(&mut b, 0, cookie);
            (b, Bytes::new())
        }
        (ReplyBody::Data { data, .. }, false) => {
            simple(&mut b, 0, cookie);
            (b, data.clone())
        }
        (ReplyBody::Data { data, .. }, true) if data.is_empty() => {
            // A read of nothing: no content chunk may be empty.
            chunk_header(&mut b, reply::TYPE_NONE, cookie, 0);
            (b, Bytes::new())
        }
        (ReplyBody::Data { offset, data }, true) => {
            chunk_header(
                &mut b,
                reply::TYPE_OFFSET_DATA,
                cookie,
                8 + data.len() as u32,
            );
            b.put_u64(*offset);
            (b, data.clone())
        }
        (ReplyBody::Extents(list), _) => {
            chunk_header(
                &mut b,
                reply::TYPE_BLOCK_STATUS,
                cookie,
                4 + 8 * list.len() as u32,
            );
            b.put_u32(BASE_ALLOCATION_ID);
            for d in list {
                b.put_u32(d.length);
                b.put_u32(d.flags);
            }
            (b, Bytes::new())
        }
        (ReplyBody::Error { errno, .. }, false) => {
            simple(&mut b, *errno, cookie);
            (b, Bytes::new())
        }
        (ReplyBody::Error { errno, message }, true) => {
            let message = truncate(message, MAX_STRING);
            chunk_header(&mut b, reply::TYPE_ERROR, cookie, 6 + message.len() as u32);
            b.put_u32(*errno);
            b.put_u16(message.len() as u16);
            b.put_slice(message.as_bytes());
            (b, Bytes::new())
        }
    }
}

fn simple(b: &mut BytesMut, errno: u32, cookie: u64) {
    b.put_u32(SIMPLE_REPLY_MAGIC);
    b.put_u32(errno);
    b.put_u64(cookie);
}

fn chunk_header(b: &mut BytesMut, kind: u16, cookie: u64, length: u32) {
    b.put_u32(STRUCTURED_REPLY_MAGIC);
    b.put_u16(reply::FLAG_DONE);
    b.put_u16(kind);
    b.put_u64(cookie);
    b.put_u32(length);
}

/// Turns extents (offset, length, zero) into descriptors over
/// `offset..offset+length`: clipped to that range, neighbours of one kind
/// merged, at most `limit` of them (at least one when the first extent
/// starts at `offset`); a zero run is a hole that reads as zeroes.
pub fn descriptors(
    offset: u64,
    length: u32,
    extents: impl IntoIterator<Item = (u64, u64, bool)>,
    limit: usize,
) -> Vec<Descriptor> {
    let end = offset + u64::from(length);
    let mut out: Vec<Descriptor> = Vec::new();
    let mut at = offset;
    for (start, len, zero) in extents {
        let stop = start.saturating_add(len).min(end);
        if start > at || stop <= at {
            // A gap, or a run that ends before: stop where the answer is
            // certain.
            break;
        }
        let flags = if zero { state::HOLE | state::ZERO } else { 0 };
        let n = (stop - at) as u32;
        if let Some(last) = out.last_mut().filter(|l| l.flags == flags) {
            last.length += n;
        } else if out.len() == limit {
            break;
        } else {
            out.push(Descriptor { length: n, flags });
        }
        at = stop;
        if at == end {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            size: 1 << 20,
            structured: true,
            base_allocation: true,
        }
    }

    fn header(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: 7,
            offset,
            length,
        }
    }

    #[test]
    fn request_header_round_trips_and_bad_magic_is_refused() {
        let h = header(cmd::WRITE, cflag::FUA, 4096, 512);
        assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
        let mut bytes = h.encode();
        bytes[0] ^= 1;
        assert!(matches!(
            RequestHeader::decode(&bytes),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn requests_are_checked_against_the_export() {
        let s = session();
        let size = s.size;
        assert_eq!(
            check(&header(cmd::READ, 0, 0, 512), &s),
            Ok(Command::Read {
                offset: 0,
                length: 512
            })
        );
        let past = check(&header(cmd::READ, 0, size - 1, 2), &s).expect_err("past the end");
        assert_eq!(past.errno, errno::EINVAL);
        let overflow = check(&header(cmd::READ, 0, u64::MAX, 2), &s).expect_err("overflow");
        assert_eq!(overflow.errno, errno::EINVAL);
        let big = check(&header(cmd::READ, 0, 0, u32::MAX), &s).expect_err("4 GiB read");
        assert_eq!(big.errno, errno::EOVERFLOW);
        let w = check(&header(cmd::WRITE, 0, size, 512), &s).expect_err("write past the end");
        assert_eq!((w.errno, w.discard, w.fatal), (errno::ENOSPC, 512, false));
        let w = check(&header(cmd::WRITE, 0, 0, MAX_PAYLOAD + 1), &s).expect_err("huge write");
        assert!(w.fatal);
        let w = check(&header(cmd::WRITE, cflag::REQ_ONE, 0, 8), &s).expect_err("bad flag");
        assert_eq!((w.errno, w.discard), (errno::EINVAL, 8));
        let z = check(&header(cmd::WRITE_ZEROES, 0, size, 1), &s).expect_err("zeroes past");
        assert_eq!(z.errno, errno::ENOSPC);
        let unknown = check(&header(99, 0, 0, 0), &s).expect_err("unknown command");
        assert_eq!(unknown.errno, errno::EINVAL);
        assert_eq!(
            check(&header(cmd::TRIM, cflag::FUA, 0, 4096), &s),
            Ok(Command::WriteZeroes {
                offset: 0,
                length: 4096,
                no_hole: false,
                fua: true
            })
        );
        let no_meta = Session {
            base_allocation: false,
            ..s
        };
        let bs = check(&header(cmd::BLOCK_STATUS, 0, 0, 512), &no_meta).expect_err("no context");
        assert_eq!(bs.errno, errno::EINVAL);
        assert_eq!(
            check(&header(cmd::DISC, 0, 0, 0), &s),
            Ok(Command::Disconnect)
        );
    }

    #[test]
    fn replies_are_encoded_as_the_protocol_says() {
        let (h, p) = encode_reply(9, &ReplyBody::Done, true);
        assert_eq!(
            &h[..],
            &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        assert!(p.is_empty());
        let data = Bytes::from_static(b"abc");
        let (h, p) = encode_reply(
            1,
            &ReplyBody::Data {
                offset: 512,
                data: data.clone(),
            },
            true,
        );
        assert_eq!(h.len(), 20 + 8);
        assert_eq!(&h[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&h[4..6], &reply::FLAG_DONE.to_be_bytes());
        assert_eq!(&h[6..8], &reply::TYPE_OFFSET_DATA.to_be_bytes());
        assert_eq!(&h[16..20], &11u32.to_be_bytes());
        assert_eq!(&h[20..28], &512u64.to_be_bytes());
        assert_eq!(p, data);
        let (h, _) = encode_reply(
            1,
            &ReplyBody::Error {
                errno: errno::EIO,
                message: "no".into(),
            },
            true,
        );
        assert_eq!(&h[6..8], &reply::TYPE_ERROR.to_be_bytes());
        assert_eq!(&h[16..20], &8u32.to_be_bytes());
        assert_eq!(&h[20..24], &errno::EIO.to_be_bytes());
        let (h, _) = encode_reply(
            1,
            &ReplyBody::Extents(vec![Descriptor {
                length: 4096,
                flags: 3,
            }]),
            true,
        );
        assert_eq!(h.len(), 20 + 12);
    }

    #[test]
    fn option_data_is_parsed_strictly() {
        let mut d = Vec::new();
        d.put_u32(2);
        d.put_slice(b"vm");
        d.put_u16(2);
        d.put_u16(info::NAME);
        d.put_u16(info::BLOCK_SIZE);
        assert_eq!(
            InfoRequest::decode(&d),
            Ok(InfoRequest {
                name: "vm".into(),
                items: vec![info::NAME, info::BLOCK_SIZE]
            })
        );
        assert!(InfoRequest::decode(&d[..d.len() - 1]).is_err());
        let mut long = d.clone();
        long.push(0);
        assert!(InfoRequest::decode(&long).is_err());
        let mut lie = Vec::new();
        lie.put_u32(u32::MAX);
        assert!(InfoRequest::decode(&lie).is_err());

        let mut m = Vec::new();
        m.put_u32(0);
        m.put_u32(1);
        m.put_u32(5);
        m.put_slice(b"base:");
        let q = MetaRequest::decode(&m).expect("a query");
        assert!(q.matches_base_allocation(true));
        assert!(!q.matches_base_allocation(false));
        let mut m2 = Vec::new();
        m2.put_u32(0);
        m2.put_u32(u32::MAX);
        assert!(MetaRequest::decode(&m2).is_err());
    }

    #[test]
    fn descriptors_clip_merge_and_limit() {
        let e = [(0, 4096, false), (4096, 4096, false), (8192, 1 << 20, true)];
        assert_eq!(
            descriptors(0, 16384, e, 100),
            vec![
                Descriptor {
                    length: 8192,
                    flags: 0
                },
                Descriptor {
                    length: 8192,
                    flags: state::HOLE | state::ZERO
                }
            ]
        );
        assert_eq!(descriptors(0, 16384, e, 1).len(), 1);
        assert_eq!(
            descriptors(100, 10, e, 10),
            vec![Descriptor {
                length: 10,
                flags: 0
            }]
        );
        assert!(descriptors(0, 10, [(5, 5, true)], 10).is_empty());
    }
}
