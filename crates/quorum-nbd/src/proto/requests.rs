//! Transmission requests: the header, the commands it may carry, and the
//! checks that turn a header into a command or a refusal.

use super::*;

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
    /// Write zeroes.
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
    /// Discard (`TRIM`): the range reads as zero and its space is freed.
    Trim {
        /// Where.
        offset: u64,
        /// How many.
        length: u32,
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
        cmd::TRIM => Ok(Command::Trim {
            offset: h.offset,
            length: h.length,
            fua,
        }),
        cmd::WRITE_ZEROES => Ok(Command::WriteZeroes {
            offset: h.offset,
            length: h.length,
            no_hole: h.flags & cflag::NO_HOLE != 0,
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
