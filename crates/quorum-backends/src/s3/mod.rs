//! `s3`: a child kept in an S3-compatible object store (MinIO, SeaweedFS,
//! AWS), through the `object_store` crate.
//!
//! # Layout
//! A volume is a prefix `s3://BUCKET/PREFIX` that holds `meta.json` (format,
//! version, size, chunk size) and one object per chunk,
//! `chunks/<index as 16 hex digits>`. A chunk that was never written, or is
//! all zeros, is absent and reads as zeros; write-zeroes and discard delete
//! whole chunks; block status lists the chunks and reports absent ones as
//! zero. A
//! write that covers part of a chunk reads, modifies and writes the chunk
//! under a per-chunk lock, so two writes to different bytes of one chunk do
//! not lose each other's bytes.
//!
//! # Conditional writes
//! Every chunk write names the version it replaces (`If-Match`, or
//! `If-None-Match: *` for an absent chunk; a DELETE `If-Match` too), so that
//! a write the client gave up on cannot land later and undo newer ones; see
//! [`chunks`] for why and for what this leaves open. The store must honour both headers (AWS S3,
//! MinIO, Cloudflare R2 and SeaweedFS do); the `aws_conditional_put`
//! option cannot turn them off.
//!
//! # Speed and bounds
//! A request that spans several chunks fetches or stores them in parallel
//! (up to [`CHUNKS_IN_FLIGHT`]), and the child serves [`IN_FLIGHT`] requests
//! at once. object_store's defaults (10 retries over up to 3 minutes) would
//! hold a whole volume behind one dead replica, so retries and timeouts are
//! bounded (see [`S3Backend::open`]), and every call is cut off after
//! `op_timeout`: a dead or hung replica becomes a child error within
//! seconds. Failures are told apart by their types (see [`errors`]).
//!
//! # Integrity on the wire
//! Every PUT carries an `x-amz-checksum-sha256` that the server checks, and
//! its answer's ETag must be the MD5 of what was sent; every GET fetches the
//! whole chunk and checks its MD5 against the object's ETag (plain, not
//! multipart, ETags). A chunk of the wrong size or checksum is an I/O error
//! of this child, which a rewrite repairs.

mod chunks;
mod errors;
mod open;
mod options;

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3;
use object_store::client::HttpClient;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use quorum_core::{Backend, BackendError, Extent};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

use self::chunks::{Piece, md5_hex, plain_md5};
use self::errors::store_error;
pub use self::options::{RUN_TIME_KEYS, endpoint};

/// The chunk size of a new volume unless the `chunk_size` option says
/// otherwise. See BENCHMARKS.md or the README for the measurement behind it.
pub const DEFAULT_CHUNK_SIZE: u64 = 256 << 10;
/// Requests in flight per S3 child.
pub const IN_FLIGHT: usize = 16;
/// Chunk transfers in flight within one request.
pub const CHUNKS_IN_FLIGHT: usize = 16;
/// Locks that serialize read-modify-write per chunk (chunks share a lock by
/// index modulo this).
const STRIPES: usize = 64;
/// A child in an S3-compatible object store.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    /// object_store's HTTP client, for the requests it has no method for (a
    /// conditional DELETE).
    http: HttpClient,
    runtime: Runtime,
    /// The endpoint the store answers at (empty for AWS's own).
    endpoint: String,
    bucket: String,
    prefix: String,
    size: u64,
    chunk_size: u64,
    op_timeout: Duration,
    stripes: Vec<Mutex<()>>,
    /// The id in `meta.json`, when the volume there has one.
    volume_id: Option<String>,
}

impl S3Backend {
    /// Runs an async call on the backend's runtime, bounded by `op_timeout`.
    fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let limit = self.op_timeout;
        self.runtime
            .block_on(async move { tokio::time::timeout(limit, fut).await })
            .unwrap_or(Err(BackendError::Timeout(limit)))
    }

    /// The object `name` under this child's prefix.
    pub fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// The object_store client this child talks to the store with, as
    /// configured from its options: a benchmark compares the child with
    /// the same client storing whole objects (`quorum-bench --direct`).
    pub fn store(&self) -> &Arc<AmazonS3> {
        &self.store
    }

    /// The lock that serializes writes of chunk `index` within this process.
    fn stripe(&self, index: u64) -> &Mutex<()> {
        &self.stripes[(index % STRIPES as u64) as usize]
    }

    fn chunk_path(&self, index: u64) -> Path {
        self.path(&format!("chunks/{index:016x}"))
    }

    fn chunk_len(&self, index: u64) -> usize {
        (self.size - index * self.chunk_size).min(self.chunk_size) as usize
    }

    fn chunks(&self, offset: u64, length: u64) -> Range<u64> {
        if length == 0 {
            return 0..0;
        }
        offset / self.chunk_size..(offset + length - 1) / self.chunk_size + 1
    }

    /// Stores `data` at `path` and checks that the store received it.
    async fn put_object(&self, path: Path, data: Bytes) -> Result<(), BackendError> {
        let sent = md5_hex(&data);
        let result = self
            .store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(store_error)?;
        match result.e_tag.as_deref().and_then(plain_md5) {
            Some(etag) if etag != sent => Err(BackendError::Io(io::Error::other(format!(
                "{path}: the store's ETag {etag} is not the MD5 {sent} of the bytes sent"
            )))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3({}/{})", self.bucket, self.prefix)
    }
}

impl Backend for S3Backend {
    /// The endpoint, bucket and prefix: one store reached under two names
    /// is one copy.
    fn identity(&self) -> String {
        if let Some(id) = &self.volume_id {
            return format!("s3-volume:{id}");
        }
        let prefix: Vec<&str> = self.prefix.split('/').filter(|p| !p.is_empty()).collect();
        format!("s3:{}/{}/{}", self.endpoint, self.bucket, prefix.join("/"))
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, buf.len() as u64, self.size)?;
        let chunks = self.chunks(offset, buf.len() as u64);
        let fetched: Vec<(u64, Option<Bytes>)> = self.call(
            stream::iter(chunks)
                .map(|i| async move { self.get_chunk(i).await.map(|(_, c)| (i, c)) })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .try_collect(),
        )?;
        let end = offset + buf.len() as u64;
        for (i, chunk) in fetched {
            let start = i * self.chunk_size;
            let (from, to) = (start.max(offset), (start + self.chunk_size).min(end));
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match chunk {
                Some(bytes) => {
                    dst.copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize])
                }
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, buf.len() as u64, self.size)?;
        let end = offset + buf.len() as u64;
        self.call(
            stream::iter(self.chunks(offset, buf.len() as u64))
                .map(|i| {
                    let start = i * self.chunk_size;
                    let (from, to) = (start.max(offset), (start + self.chunk_size).min(end));
                    let piece = &buf[(from - offset) as usize..(to - offset) as usize];
                    self.write_chunk(i, (from - start) as usize, Piece::Data(piece), None)
                })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )
        .map(drop)
    }

    /// Lists the chunks of the range once: a whole chunk that is absent or
    /// already empty needs no request, and one that holds data is replaced
    /// by an empty object over the version the listing showed.
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, length, self.size)?;
        let end = offset + length;
        let chunks = self.chunks(offset, length);
        self.call(async {
            let listed = self.listed(chunks.clone()).await?;
            stream::iter(chunks)
                .filter_map(|i| {
                    let start = i * self.chunk_size;
                    let (from, to) = (start.max(offset), (start + self.chunk_size).min(end));
                    let within = (from - start) as usize;
                    let piece = Piece::Zeros((to - from) as usize);
                    let whole = within == 0 && piece.len() == self.chunk_len(i);
                    let seen = listed.get(&i).cloned();
                    let needed = !whole || seen.is_some();
                    let write = async move { self.write_chunk(i, within, piece, seen).await };
                    std::future::ready(needed.then_some(write))
                })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await
        })
        .map(drop)
    }

    /// The same as write-zeroes, which frees all it can already: a whole
    /// chunk is deleted (an absent chunk reads zero), a partial one at an
    /// edge is zeroed (and deleted once all zero), each under its chunk's
    /// stripe lock (`write_chunk`), so that a discard never
    /// races a write of the same chunk.
    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.write_zeroes(offset, length)
    }

    /// Writes to S3 are durable once acknowledged; flush checks that the
    /// store still answers, so that a dead replica does not flush "fine".
    fn flush(&self) -> Result<(), BackendError> {
        self.call(async {
            self.store
                .head(&self.path("meta.json"))
                .await
                .map(drop)
                .map_err(store_error)
        })
    }

    /// One listing of the range's chunks; the extents are built from it in
    /// one pass and cut once `limit` of them are finished.
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        BackendError::check_range(offset, length, self.size)?;
        let chunks = self.chunks(offset, length);
        let listed = self.call(self.listed(chunks.clone()))?;
        let end = offset + length;
        let mut extents: Vec<Extent> = Vec::new();
        for i in chunks {
            let start = i * self.chunk_size;
            let (from, to) = (start.max(offset), (start + self.chunk_size).min(end));
            Extent::append(
                &mut extents,
                Extent {
                    offset: from,
                    length: to - from,
                    zero: !listed.contains_key(&i),
                },
            );
            if extents.len() > limit {
                break;
            }
        }
        extents.truncate(limit);
        Ok(extents)
    }

    fn max_in_flight(&self) -> usize {
        IN_FLIGHT
    }

    /// A chunk: a write of part of one reads the rest of it first, a write
    /// of a whole one reads nothing but its version.
    fn write_unit(&self) -> u64 {
        self.chunk_size
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::OpenError;

    #[test]
    fn conditional_writes_cannot_be_turned_off() {
        let opts = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let off = S3Backend::open(
            "s3://b/p",
            &opts("aws_conditional_put", "disabled"),
            None,
            "t",
            None,
            true,
        );
        assert!(
            matches!(&off, Err(OpenError::BadOption { option, .. }) if option == "aws_conditional_put"),
            "conditional writes cannot be turned off"
        );
    }
}
