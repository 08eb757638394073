//! The options of the handshake: their headers, the INFO and meta-context
//! requests, and the replies to them.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

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
