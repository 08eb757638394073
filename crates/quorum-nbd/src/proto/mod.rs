//! The wire format of NBD (`NetworkBlockDevice/nbd` `doc/proto.md`):
//! constants, the typed messages, and the pure codec between them and
//! bytes. Nothing here touches a socket, so every rule is unit-tested.

mod options;
mod replies;
mod requests;
#[cfg(test)]
mod tests;

pub use options::*;
pub use replies::*;
pub use requests::*;

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
    /// TLS must be started first.
    pub const ERR_TLS_REQD: u32 = (1 << 31) + 5;
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
