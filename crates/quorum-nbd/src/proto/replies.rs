//! Transmission replies: simple and structured, and block-status
//! descriptors.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

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
