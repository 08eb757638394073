//! Chunk objects: reading them with their version, and writing them only
//! over the version that was read.
//!
//! # Why every write is conditional
//! A PUT or DELETE that the client gave up on (its timeout passed, or the
//! connection broke after the request was sent) may still land later, when
//! a store or a proxy gets round to it; object_store may also retry a
//! request whose first attempt landed. An unconditional write that lands
//! late puts the chunk back as it was when that write was built, silently
//! undoing every write acknowledged since: the engine marked this child
//! stale for the failed write, but a later write over the same bytes
//! succeeded here and cleared the mark.
//!
//! So each write names what it replaces: `If-Match: <ETag read>` for a chunk
//! that exists ([`PutMode::Update`]), `If-None-Match: *` for one that was
//! absent ([`PutMode::Create`]). A late write then finds another version and
//! fails with 412 instead of landing. When our own write finds another
//! version (a late write of ours did land, or another client wrote), it
//! reads the chunk again and applies its bytes to what is there, at most
//! [`ATTEMPTS`] times.
//!
//! A chunk that becomes all zeros is deleted the same way: a DELETE with
//! `If-Match` (object_store has no conditional delete, so it is sent as a
//! presigned URL with the header bound into the signature, on
//! object_store's own HTTP client). The presigned URL expires after
//! `op_timeout`, which bounds how late it can land at a store that checks.
//! Whole-chunk writes read only the object's version (a HEAD or a listing),
//! never its bytes, so a chunk whose bytes are unreadable or do not match
//! their ETag can always be overwritten whole.
//!
//! # What this does not cover
//! ETags are MD5s of the bytes, so a version is known only by its content:
//! a write that was held back lands after all if the chunk returns to
//! exactly the bytes (or the absence) that write saw, with other writes in
//! between (A, then B held back, then C, then A again: B lands over the
//! second A; or: absent, B held back, zeros written, B lands). Bucket
//! versioning would close this; S3-compatible stores differ in whether they
//! offer it. A store that ignores `If-Match` on DELETE (AWS honours it
//! since 2024, SeaweedFS 4.48 does) deletes unconditionally.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use bytes::Bytes;
use futures_util::TryStreamExt;
use md5::{Digest, Md5};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    HeaderValue, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use quorum_core::BackendError;
use reqwest::Method;
use reqwest::header::IF_MATCH;

use super::S3Backend;
use super::errors::{Failure, http_error, store_error};

/// How many times one chunk write reads the chunk and tries to replace it
/// before it gives up with an error (another writer keeps winning).
pub(super) const ATTEMPTS: usize = 4;

/// A chunk's state as the store last showed it: the object's version, or
/// `None` when it is absent (and reads as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) version: Option<UpdateVersion>,
}

impl Seen {
    const ABSENT: Seen = Seen { version: None };

    /// The state an object's metadata (from a HEAD or a listing) shows.
    pub(super) fn of(meta: &ObjectMeta) -> Seen {
        Seen {
            version: Some(UpdateVersion {
                e_tag: meta.e_tag.clone(),
                version: meta.version.clone(),
            }),
        }
    }

    /// Whether the chunk was absent.
    pub(super) fn absent(&self) -> bool {
        self.version.is_none()
    }

    /// The put mode that replaces exactly this state.
    fn mode(&self) -> PutMode {
        match &self.version {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        }
    }
}

/// The bytes a write puts into one chunk.
#[derive(Clone, Copy)]
pub(super) enum Piece<'a> {
    /// These bytes.
    Data(&'a [u8]),
    /// This many zero bytes.
    Zeros(usize),
}

impl Piece<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Piece::Data(d) => d.len(),
            Piece::Zeros(n) => *n,
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            Piece::Data(d) => d.iter().all(|&b| b == 0),
            Piece::Zeros(_) => true,
        }
    }

    fn copy_into(&self, dst: &mut [u8]) {
        match self {
            Piece::Data(d) => dst.copy_from_slice(d),
            Piece::Zeros(_) => dst.fill(0),
        }
    }
}

/// What a conditional write found.
enum Replaced {
    /// The chunk now holds the new bytes.
    Done,
    /// The chunk was no longer the version the write named.
    Moved,
}

impl S3Backend {
    /// The bytes of chunk `index`, checked, with the state they were read
    /// in; `None` for bytes when the chunk reads as zeros.
    pub(super) async fn get_chunk(
        &self,
        index: u64,
    ) -> Result<(Seen, Option<Bytes>), BackendError> {
        let path = self.chunk_path(index);
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok((Seen::ABSENT, None)),
            Err(e) => return Err(store_error(e)),
        };
        let seen = Seen::of(&result.meta);
        let etag = result.meta.e_tag.clone();
        let bytes = result.bytes().await.map_err(store_error)?;
        if bytes.len() != self.chunk_len(index) {
            return Err(BackendError::Io(io::Error::other(format!(
                "{path} holds {} bytes, a chunk there has {}",
                bytes.len(),
                self.chunk_len(index)
            ))));
        }
        if let Some(etag) = etag.as_deref().and_then(plain_md5) {
            let got = md5_hex(&bytes);
            if etag != got {
                return Err(BackendError::Io(io::Error::other(format!(
                    "{path}: the bytes read back (MD5 {got}) are not the object's (ETag {etag})"
                ))));
            }
        }
        Ok((seen, Some(bytes)))
    }

    /// The state of chunk `index`, without its bytes. Only a 404 means
    /// absent; any other failure is an error.
    async fn head_chunk(&self, index: u64) -> Result<Seen, BackendError> {
        match self.store.head(&self.chunk_path(index)).await {
            Ok(meta) => Ok(Seen::of(&meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(Seen::ABSENT),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Replaces chunk `index`, which was `seen`, by `data` (deletes it when
    /// `data` is all zeros), and checks that the store received the bytes.
    async fn replace_chunk(
        &self,
        index: u64,
        seen: &Seen,
        data: Bytes,
    ) -> Result<Replaced, BackendError> {
        if data.iter().all(|&b| b == 0) {
            return match &seen.version {
                None => Ok(Replaced::Done),
                Some(version) => self.delete_chunk(index, version).await,
            };
        }
        let path = self.chunk_path(index);
        let sent = md5_hex(&data);
        let options = PutOptions::from(seen.mode());
        let result = match self
            .store
            .put_opts(&path, PutPayload::from(data), options)
            .await
        {
            Ok(result) => result,
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => return Ok(Replaced::Moved),
            Err(e) => return Err(store_error(e)),
        };
        match result.e_tag.as_deref().and_then(plain_md5) {
            Some(etag) if etag != sent => Err(BackendError::Io(io::Error::other(format!(
                "{path}: the store's ETag {etag} is not the MD5 {sent} of the bytes sent"
            )))),
            _ => Ok(Replaced::Done),
        }
    }

    /// Deletes chunk `index` if it is still `version`: a DELETE with
    /// `If-Match`, through a URL presigned with that header (object_store's
    /// `delete` takes no conditions) and valid for `op_timeout`.
    async fn delete_chunk(
        &self,
        index: u64,
        version: &UpdateVersion,
    ) -> Result<Replaced, BackendError> {
        let path = self.chunk_path(index);
        let etag = version
            .e_tag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
            .ok_or_else(|| {
                BackendError::Io(io::Error::other(format!(
                    "{path}: the store gave no usable ETag, so the chunk cannot be deleted conditionally"
                )))
            })?;
        let options = SignedUrlOptions::new().with_signed_header(IF_MATCH, etag.clone());
        let url = self
            .store
            .signed_url_opts(Method::DELETE, &path, self.op_timeout, &options)
            .await
            .map_err(store_error)?;
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = Method::DELETE;
        *request.uri_mut() = url.as_str().parse().map_err(|e| {
            BackendError::Io(io::Error::other(format!(
                "{path}: the presigned DELETE is not a URI: {e}"
            )))
        })?;
        request.headers_mut().insert(IF_MATCH, etag);
        let response = self.http.execute(request).await.map_err(http_error)?;
        match response.status().as_u16() {
            // Gone already (a 404) is what a delete wants.
            200..=299 | 404 => Ok(Replaced::Done),
            412 => Ok(Replaced::Moved),
            status @ (401 | 403) => Err(BackendError::Refused(format!(
                "{path}: DELETE answered {status}"
            ))),
            status => Err(BackendError::Io(io::Error::other(format!(
                "{path}: DELETE answered {status}"
            )))),
        }
    }

    /// Writes `piece` at `within` (relative to the chunk) into chunk
    /// `index`, over the version it reads, again while another version
    /// keeps appearing (at most [`ATTEMPTS`] times). A piece that covers
    /// the whole chunk reads only its state (`hint`, from a listing, for
    /// the first attempt, else a HEAD); a partial one reads its bytes.
    pub(super) async fn write_chunk(
        &self,
        index: u64,
        within: usize,
        piece: Piece<'_>,
        hint: Option<Seen>,
    ) -> Result<(), BackendError> {
        let len = self.chunk_len(index);
        let whole = within == 0 && piece.len() == len;
        let _lock = self.stripe(index).lock().await;
        let mut hint = hint;
        for _ in 0..ATTEMPTS {
            let (seen, chunk) = if whole {
                let seen = match hint.take() {
                    Some(seen) => seen,
                    None => self.head_chunk(index).await?,
                };
                if seen.absent() && piece.is_zero() {
                    return Ok(());
                }
                let chunk = match piece {
                    Piece::Data(d) => Bytes::copy_from_slice(d),
                    Piece::Zeros(n) => Bytes::from(vec![0u8; n]),
                };
                (seen, chunk)
            } else {
                let (seen, old) = self.get_chunk(index).await?;
                if seen.absent() && piece.is_zero() {
                    return Ok(());
                }
                let mut chunk = old.map_or_else(|| vec![0u8; len], |b| b.to_vec());
                piece.copy_into(&mut chunk[within..within + piece.len()]);
                (seen, Bytes::from(chunk))
            };
            match self.replace_chunk(index, &seen, chunk).await? {
                Replaced::Done => return Ok(()),
                Replaced::Moved => {
                    tracing::debug!(child = %self, index, "chunk changed since it was read; reading it again");
                }
            }
        }
        Err(BackendError::Io(io::Error::other(format!(
            "{}: the chunk changed under every one of {ATTEMPTS} conditional writes; another client is writing this prefix",
            self.chunk_path(index)
        ))))
    }

    /// The chunks in `range` that exist, with their state. One listing, no HEAD:
    /// a failed listing fails the whole call, so a chunk is never called
    /// absent because the store could not be asked.
    pub(super) async fn listed(
        &self,
        range: Range<u64>,
    ) -> Result<BTreeMap<u64, Seen>, BackendError> {
        let mut found = BTreeMap::new();
        if range.is_empty() {
            return Ok(found);
        }
        let dir = self.path("chunks");
        // The listing's offset is exclusive: start after the chunk before.
        let mut listing = match range.start.checked_sub(1) {
            Some(before) => self
                .store
                .list_with_offset(Some(&dir), &self.chunk_path(before)),
            None => self.store.list(Some(&dir)),
        };
        while let Some(meta) = listing.try_next().await.map_err(|e| {
            if Failure::of(&e) == Failure::NotFound {
                BackendError::Refused(format!("the bucket {:?} does not exist", self.bucket))
            } else {
                store_error(e)
            }
        })? {
            let Some(index) = meta
                .location
                .filename()
                .and_then(|name| u64::from_str_radix(name, 16).ok())
            else {
                continue;
            };
            if index >= range.end {
                break;
            }
            if index >= range.start {
                found.insert(index, Seen::of(&meta));
            }
        }
        Ok(found)
    }
}

pub(super) fn md5_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    Md5::digest(data)
        .iter()
        .fold(String::with_capacity(32), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The MD5 in an ETag, when it is a plain one (not a multipart upload's).
pub(super) fn plain_md5(etag: &str) -> Option<String> {
    let e = etag.trim_matches('"');
    (e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_states() {
        assert_eq!(
            plain_md5("\"D41D8CD98F00B204E9800998ECF8427E\"").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(plain_md5("\"abc-2\""), None);
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(Seen::ABSENT.mode(), PutMode::Create);
        let meta = ObjectMeta {
            location: "chunks/0000000000000001".into(),
            last_modified: Default::default(),
            size: 1,
            e_tag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into()),
            version: None,
        };
        let seen = Seen::of(&meta);
        assert!(!seen.absent());
        assert!(matches!(seen.mode(), PutMode::Update(v) if v.e_tag == meta.e_tag));
        assert!(Piece::Zeros(3).is_zero() && !Piece::Data(&[0, 1]).is_zero());
    }
}
