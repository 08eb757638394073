//! `s3`: a child kept in an S3-compatible object store (MinIO, SeaweedFS,
//! AWS), through the `object_store` crate.
//!
//! # Layout
//! A volume is a prefix `s3://BUCKET/PREFIX` that holds `meta.json` (format,
//! version, size, chunk size) and one object per chunk,
//! `chunks/<index as 16 hex digits>`. A chunk that was never written, or is
//! all zeros, is absent and reads as zeros; write-zeroes deletes whole
//! chunks; block status lists the chunks and reports absent ones as zero. A
//! write that covers part of a chunk reads, modifies and writes the chunk
//! under a per-chunk lock, so two writes to different bytes of one chunk do
//! not lose each other's bytes.
//!
//! # Speed and bounds
//! A request that spans several chunks fetches or stores them in parallel
//! (up to [`CHUNKS_IN_FLIGHT`]), and the child serves [`IN_FLIGHT`] requests
//! at once. object_store's defaults (10 retries over up to 3 minutes) would
//! hold a whole volume behind one dead replica, so retries and timeouts are
//! bounded (see [`S3Backend::open`]), and every call is cut off after
//! `op_timeout`: a dead or hung replica becomes a child error within
//! seconds.
//!
//! # Integrity on the wire
//! Every PUT carries an `x-amz-checksum-sha256` that the server checks, and
//! its answer's ETag must be the MD5 of what was sent; every GET fetches the
//! whole chunk and checks its MD5 against the object's ETag (plain, not
//! multipart, ETags). A chunk of the wrong size or checksum is an I/O error
//! of this child, which a rewrite repairs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use futures_util::{StreamExt, TryStreamExt, stream};
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use quorum_core::{Backend, BackendError, Extent};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

use crate::OpenError;

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
/// The format of `meta.json`.
const FORMAT: &str = "quorum-s3-volume";
const VERSION: u32 = 1;

/// Options of an s3 child that are quorum's own; every other option is an
/// object_store config key (`aws_endpoint`, `aws_region`, ...).
const OWN_OPTIONS: [&str; 4] = ["chunk_size", "op_timeout", "max_retries", "retry_timeout"];

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    version: u32,
    size: u64,
    chunk_size: u64,
}

/// A child in an S3-compatible object store.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    runtime: Runtime,
    bucket: String,
    prefix: String,
    size: u64,
    chunk_size: u64,
    op_timeout: Duration,
    stripes: Vec<Mutex<()>>,
}

/// The settings an s3 child is opened with, from its options.
struct Settings {
    chunk_size: Option<u64>,
    op_timeout: Duration,
    retry: RetryConfig,
}

impl S3Backend {
    /// Opens the volume at `uri` (`s3://bucket/prefix`), configured from the
    /// `AWS_*` environment and then `options`. A prefix without a volume is
    /// created with `size`; an existing one must have `size` bytes.
    ///
    /// Defaults, each overridable by an option: `timeout` 2s per HTTP
    /// request, `connect_timeout` 1s, `max_retries` 1, `retry_timeout` 3s,
    /// `op_timeout` 6s for a whole backend call, `chunk_size` 256KiB (for a
    /// new volume; an existing one keeps its own).
    pub fn open(
        uri: &str,
        options: &BTreeMap<String, String>,
        size: Option<u64>,
    ) -> Result<S3Backend, OpenError> {
        let (bucket, prefix) = parse_uri(uri)?;
        let settings = settings(options)?;
        let client = ClientOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(1));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_client_options(client)
            .with_retry(settings.retry.clone())
            .with_checksum_algorithm(Checksum::SHA256);
        for (key, value) in options {
            if OWN_OPTIONS.contains(&key.as_str()) {
                continue;
            }
            let config_key =
                AmazonS3ConfigKey::from_str(key).map_err(|_| OpenError::UnknownOption {
                    option: key.clone(),
                    backend: "s3",
                })?;
            builder = builder.with_config(config_key, value);
        }
        let store = builder.build().map_err(|e| OpenError::Remote {
            uri: uri.to_owned(),
            problem: format!("cannot configure the object store: {e}"),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("s3-{bucket}"))
            .enable_all()
            .build()
            .map_err(|e| OpenError::Remote {
                uri: uri.to_owned(),
                problem: format!("cannot start the I/O runtime: {e}"),
            })?;
        let mut backend = S3Backend {
            store: Arc::new(store),
            runtime,
            bucket,
            prefix,
            size: 0,
            chunk_size: settings.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
            op_timeout: settings.op_timeout,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        };
        let remote = |problem: String| OpenError::Remote {
            uri: uri.to_owned(),
            problem,
        };
        match backend
            .call(backend.read_meta())
            .map_err(|e| remote(e.to_string()))?
        {
            Some(meta) => {
                if meta.format != FORMAT || meta.version != VERSION {
                    return Err(remote(format!(
                        "meta.json is {} version {}, not {FORMAT} version {VERSION}",
                        meta.format, meta.version
                    )));
                }
                if let Some(expected) = size {
                    if meta.size != expected {
                        return Err(remote(format!(
                            "the volume there has {} bytes but this volume has {expected}",
                            meta.size
                        )));
                    }
                }
                if let Some(asked) = settings.chunk_size {
                    if asked != meta.chunk_size {
                        return Err(remote(format!(
                            "the volume there has chunks of {} bytes, not the chunk_size option's {asked}",
                            meta.chunk_size
                        )));
                    }
                }
                backend.size = meta.size;
                backend.chunk_size = meta.chunk_size;
            }
            None => {
                let size = size.ok_or_else(|| {
                    remote("no volume there, and the volume has no size to create it with".into())
                })?;
                backend.size = size;
                backend
                    .call(backend.write_meta())
                    .map_err(|e| remote(format!("cannot create the volume: {e}")))?;
            }
        }
        Ok(backend)
    }

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

    fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
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

    async fn read_meta(&self) -> Result<Option<Meta>, BackendError> {
        let path = self.path("meta.json");
        match self.store.get(&path).await {
            Ok(result) => {
                let bytes = result.bytes().await.map_err(store_error)?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    BackendError::Io(io::Error::other(format!(
                        "{path} is not a quorum volume's meta.json: {e}"
                    )))
                })
            }
            Err(object_store::Error::NotFound { .. }) => {
                // A missing object, or a missing bucket: listing tells.
                let prefix = Path::from(self.prefix.as_str());
                match self.store.list_with_delimiter(Some(&prefix)).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.to_string().contains("NoSuchBucket") => {
                        Err(BackendError::Refused(format!(
                            "the bucket {:?} does not exist; create it first",
                            self.bucket
                        )))
                    }
                    Err(e) => Err(store_error(e)),
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }

    async fn write_meta(&self) -> Result<(), BackendError> {
        let meta = Meta {
            format: FORMAT.into(),
            version: VERSION,
            size: self.size,
            chunk_size: self.chunk_size,
        };
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| BackendError::Io(io::Error::other(e)))?;
        self.put_object(self.path("meta.json"), Bytes::from(json))
            .await
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

    /// The bytes of chunk `index`, checked, or `None` when it is absent.
    async fn get_chunk(&self, index: u64) -> Result<Option<Bytes>, BackendError> {
        let path = self.chunk_path(index);
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
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
        Ok(Some(bytes))
    }

    /// Stores chunk `index`, or deletes it when it is all zeros.
    async fn put_chunk(&self, index: u64, data: Bytes) -> Result<(), BackendError> {
        if data.iter().all(|&b| b == 0) {
            self.delete_chunk(index).await
        } else {
            self.put_object(self.chunk_path(index), data).await
        }
    }

    async fn delete_chunk(&self, index: u64) -> Result<(), BackendError> {
        match self.store.delete(&self.chunk_path(index)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Writes `data` over `offset..` of chunk `index` (relative to the chunk),
    /// reading and rewriting the chunk when `data` covers only part of it.
    async fn patch_chunk(
        &self,
        index: u64,
        within: usize,
        data: &[u8],
    ) -> Result<(), BackendError> {
        let len = self.chunk_len(index);
        if within == 0 && data.len() == len {
            return self.put_chunk(index, Bytes::copy_from_slice(data)).await;
        }
        let _lock = self.stripes[(index % STRIPES as u64) as usize].lock().await;
        let mut chunk = match self.get_chunk(index).await? {
            Some(bytes) => bytes.to_vec(),
            None if data.iter().all(|&b| b == 0) => return Ok(()),
            None => vec![0u8; len],
        };
        chunk[within..within + data.len()].copy_from_slice(data);
        self.put_chunk(index, Bytes::from(chunk)).await
    }

    /// The chunks that exist in `range`.
    async fn present(&self, range: Range<u64>) -> Result<BTreeSet<u64>, BackendError> {
        let dir = self.path("chunks");
        let from = self.chunk_path(range.start);
        let mut present = BTreeSet::new();
        let mut listing = self.store.list_with_offset(Some(&dir), &from);
        // The offset is exclusive: check the first chunk on its own.
        if self.store.head(&from).await.is_ok() {
            present.insert(range.start);
        }
        while let Some(meta) = listing.try_next().await.map_err(store_error)? {
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
            present.insert(index);
        }
        Ok(present)
    }
}

fn settings(options: &BTreeMap<String, String>) -> Result<Settings, OpenError> {
    let duration = |key: &str, default: Duration| -> Result<Duration, OpenError> {
        options.get(key).map_or(Ok(default), |v| {
            humantime::parse_duration(v).map_err(|e| OpenError::BadOption {
                option: key.to_owned(),
                problem: format!("{v:?} is not a duration: {e}"),
            })
        })
    };
    let chunk_size = options
        .get("chunk_size")
        .map(|v| {
            ByteSize::from_str(v)
                .ok()
                .map(|b| b.as_u64())
                .filter(|&b| (4096..=(64 << 20)).contains(&b) && b.is_power_of_two())
                .ok_or_else(|| OpenError::BadOption {
                    option: "chunk_size".into(),
                    problem: format!("{v:?} is not a power of two between 4KiB and 64MiB"),
                })
        })
        .transpose()?;
    let max_retries = options
        .get("max_retries")
        .map(|v| {
            v.parse::<usize>().map_err(|_| OpenError::BadOption {
                option: "max_retries".into(),
                problem: format!("{v:?} is not a count"),
            })
        })
        .transpose()?
        .unwrap_or(1);
    Ok(Settings {
        chunk_size,
        op_timeout: duration("op_timeout", Duration::from_secs(6))?,
        retry: RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries,
            retry_timeout: duration("retry_timeout", Duration::from_secs(3))?,
        },
    })
}

/// `s3://bucket/prefix` into its bucket and prefix (without slashes at the ends).
fn parse_uri(uri: &str) -> Result<(String, String), OpenError> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| OpenError::BadUri {
        uri: uri.to_owned(),
        problem: "an s3 child's uri is s3://BUCKET/PREFIX".into(),
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains('@') {
        return Err(OpenError::BadUri {
            uri: crate::redact_uri(uri),
            problem:
                "the bucket is missing (credentials go in the options or the AWS_* environment)"
                    .into(),
        });
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

fn md5_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    Md5::digest(data)
        .iter()
        .fold(String::with_capacity(32), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The MD5 in an ETag, when it is a plain one (not a multipart upload's).
fn plain_md5(etag: &str) -> Option<String> {
    let e = etag.trim_matches('"');
    (e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

/// Maps an object_store error to a child error: the store timed out or
/// could not be reached, or it failed the request. The message is one line
/// (stores answer with XML bodies) of bounded length.
fn store_error(e: object_store::Error) -> BackendError {
    let mut text = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.len() > 400 {
        let cut = (0..=400)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    let lower = text.to_ascii_lowercase();
    // Every retry error names its "retry_timeout", so look for the failure
    // itself: a request that timed out, or one that could not be sent.
    if lower.contains("timed out") || lower.contains("operation timed") {
        BackendError::Unavailable(format!("the store did not answer in time: {text}"))
    } else if lower.contains("error sending request") || lower.contains("connect") {
        BackendError::Unavailable(format!("the store cannot be reached: {text}"))
    } else if lower.contains("403") || lower.contains("accessdenied") || lower.contains("signature")
    {
        BackendError::Refused(text)
    } else {
        BackendError::Io(io::Error::other(text))
    }
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3({}/{})", self.bucket, self.prefix)
    }
}

impl Backend for S3Backend {
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
                .map(|i| async move { self.get_chunk(i).await.map(|c| (i, c)) })
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
                    self.patch_chunk(i, (from - start) as usize, piece)
                })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )
        .map(drop)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, length, self.size)?;
        let end = offset + length;
        let zeros = vec![0u8; self.chunk_size as usize];
        let zeros = &zeros;
        self.call(
            stream::iter(self.chunks(offset, length))
                .map(|i| async move {
                    let start = i * self.chunk_size;
                    let (from, to) = (start.max(offset), (start + self.chunk_size).min(end));
                    if from == start && (to - from) as usize == self.chunk_len(i) {
                        self.delete_chunk(i).await
                    } else {
                        self.patch_chunk(i, (from - start) as usize, &zeros[..(to - from) as usize])
                            .await
                    }
                })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )
        .map(drop)
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

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<Extent>, BackendError> {
        BackendError::check_range(offset, length, self.size)?;
        let chunks = self.chunks(offset, length);
        let present = self.call(self.present(chunks.clone()))?;
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
                    zero: !present.contains(&i),
                },
            );
        }
        Ok(extents)
    }

    fn max_in_flight(&self) -> usize {
        IN_FLIGHT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_etags() {
        assert_eq!(
            parse_uri("s3://b/p/q/").expect("uri"),
            ("b".into(), "p/q".into())
        );
        assert_eq!(
            parse_uri("s3://b").expect("uri"),
            ("b".into(), String::new())
        );
        assert!(parse_uri("s3:///p").is_err());
        assert!(parse_uri("http://b/p").is_err());
        assert_eq!(
            plain_md5("\"D41D8CD98F00B204E9800998ECF8427E\"").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(plain_md5("\"abc-2\""), None);
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn store_errors_say_what_failed() {
        let unreachable = object_store::Error::Generic {
            store: "S3",
            source: "Error performing GET http://minio1:9000/q in 104ms, after 1 retries, max_retries: 1, retry_timeout: 3s - HTTP error: error sending request".into(),
        };
        let e = store_error(unreachable).to_string();
        assert!(e.contains("cannot be reached"), "{e}");
        let hung = object_store::Error::Generic {
            store: "S3",
            source: "Error after 1 retries in 4s, max_retries: 1, retry_timeout: 3s, source: operation timed out".into(),
        };
        let e = store_error(hung).to_string();
        assert!(e.contains("did not answer in time"), "{e}");
    }

    #[test]
    fn options_are_checked() {
        let opts = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(settings(&opts("chunk_size", "3000")).is_err());
        assert!(settings(&opts("chunk_size", "1MiB")).is_ok());
        assert!(settings(&opts("op_timeout", "soon")).is_err());
        assert!(settings(&opts("max_retries", "-1")).is_err());
    }
}
