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

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum, S3ConditionalPut};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use quorum_core::{Backend, BackendError, Extent};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

use self::chunks::{Piece, md5_hex, plain_md5};
use self::errors::{Failure, store_error};
use crate::{Confinement, OpenError};

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

/// The object_store keys a child added at run time may set: none of them
/// can point the server at another host, a proxy or a metadata service.
pub const RUN_TIME_KEYS: [AmazonS3ConfigKey; 7] = [
    AmazonS3ConfigKey::Endpoint,
    AmazonS3ConfigKey::Region,
    AmazonS3ConfigKey::AccessKeyId,
    AmazonS3ConfigKey::SecretAccessKey,
    AmazonS3ConfigKey::Token,
    AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
];

/// The HTTP client settings that the client of conditional DELETEs copies
/// from the store's configuration (options and environment).
const CLIENT_KEYS: [ClientConfigKey; 9] = [
    ClientConfigKey::AllowHttp,
    ClientConfigKey::AllowInvalidCertificates,
    ClientConfigKey::NoSystemCertificates,
    ClientConfigKey::ConnectTimeout,
    ClientConfigKey::Timeout,
    ClientConfigKey::ProxyUrl,
    ClientConfigKey::ProxyCaCertificate,
    ClientConfigKey::ProxyExcludes,
    ClientConfigKey::PoolIdleTimeout,
];

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    version: u32,
    size: u64,
    chunk_size: u64,
    /// The mark of the volume that made it ([`Confinement::mark`]); a child
    /// added at run time may use only a prefix of its own volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// A random id made with the volume: the child's identity, whatever the
    /// endpoint is called (two names of one host are one copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

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
    ///
    /// A child added at run time (`confine`) may use only the options that
    /// cannot send the server elsewhere ([`RUN_TIME_KEYS`] and quorum's own),
    /// and only an allowed endpoint.
    ///
    /// A confined child is also built without the `AWS_*` environment (the
    /// server's credentials, region or web identity are not lent to a
    /// caller): it must bring its own keys, a plain region, an S3 bucket
    /// name and prefix, an endpoint that is only an origin, timeouts of at
    /// most [`crate::confine::MAX_TIMEOUT`], and an existing volume there
    /// must carry `mark`. A new volume is marked with `mark`.
    pub fn open(
        uri: &str,
        options: &BTreeMap<String, String>,
        size: Option<u64>,
        mark: &str,
        confine: Option<&Confinement>,
        create: bool,
    ) -> Result<S3Backend, OpenError> {
        let (mut backend, settings) = S3Backend::connect(uri, options, confine)?;
        let owner = confine.is_some().then_some(mark);
        if let Some(size) = backend.look(uri, size, &settings, create, owner)? {
            let remote = |problem: String| OpenError::Remote {
                uri: uri.to_owned(),
                problem,
            };
            backend.size = size;
            backend.volume_id = Some(
                crate::confine::random_id()
                    .map_err(|e| remote(format!("cannot make the volume's id: {e}")))?,
            );
            backend
                .call(backend.write_meta(mark))
                .map_err(|e| OpenError::remote(uri, e, "cannot create the volume"))?;
        }
        Ok(backend)
    }

    /// Looks at the volume at `uri` as [`S3Backend::open`] would open it,
    /// changing nothing (see [`crate::probe()`]).
    pub(crate) fn probe(
        uri: &str,
        options: &BTreeMap<String, String>,
        size: Option<u64>,
        create: bool,
    ) -> Result<crate::Probe, OpenError> {
        let (mut backend, settings) = S3Backend::connect(uri, options, None)?;
        let to_create = backend.look(uri, size, &settings, create, None)?;
        Ok(crate::Probe {
            size: to_create.is_none().then_some(backend.size),
            identity: backend.identity(),
        })
    }

    /// Reads the volume's `meta.json`: an existing volume is taken (it must
    /// be `owner`'s when an owner is given, and fit `size` and `settings`)
    /// and `None` returned; with none there, the size to create it with is
    /// returned, which needs `create` and a `size`.
    fn look(
        &mut self,
        uri: &str,
        size: Option<u64>,
        settings: &Settings,
        create: bool,
        owner: Option<&str>,
    ) -> Result<Option<u64>, OpenError> {
        let remote = |problem: String| OpenError::Remote {
            uri: uri.to_owned(),
            problem,
        };
        match self
            .call(self.read_meta())
            .map_err(|e| OpenError::remote(uri, e, ""))?
        {
            Some(meta) => {
                self.volume_id = meta.id.clone();
                if owner.is_some_and(|o| meta.owner.as_deref() != Some(o)) {
                    return Err(OpenError::NotOurs {
                        place: crate::redact_uri(uri),
                        identity: self.identity(),
                    });
                }
                self.fit(&meta, size, settings).map_err(remote)?;
                Ok(None)
            }
            None if !create => Err(remote(
                "no volume there (a child added at run time is not created again at start)".into(),
            )),
            None => size.map(Some).ok_or_else(|| {
                remote("no volume there, and the volume has no size to create it with".into())
            }),
        }
    }

    /// Takes the size and chunk size of an existing volume's `meta`, which
    /// must be of this format and of `size` (when given).
    fn fit(&mut self, meta: &Meta, size: Option<u64>, settings: &Settings) -> Result<(), String> {
        if meta.format != FORMAT || meta.version != VERSION {
            return Err(format!(
                "meta.json is {} version {}, not {FORMAT} version {VERSION}",
                meta.format, meta.version
            ));
        }
        if let Some(expected) = size {
            if meta.size != expected {
                return Err(format!(
                    "the volume there has {} bytes but this volume has {expected}",
                    meta.size
                ));
            }
        }
        if let Some(asked) = settings.chunk_size {
            if asked != meta.chunk_size {
                return Err(format!(
                    "the volume there has chunks of {} bytes, not the chunk_size option's {asked}",
                    meta.chunk_size
                ));
            }
        }
        self.size = meta.size;
        self.chunk_size = meta.chunk_size;
        Ok(())
    }

    /// The backend for `uri` and `options`, checked against `confine`,
    /// before anything is read: its volume's size is not known yet.
    fn connect(
        uri: &str,
        options: &BTreeMap<String, String>,
        confine: Option<&Confinement>,
    ) -> Result<(S3Backend, Settings), OpenError> {
        let (bucket, prefix) = parse_uri(uri)?;
        let settings = settings(options)?;
        if let Some(confine) = confine {
            check_run_time(&bucket, &prefix, options, &settings, confine)?;
        }
        let client = ClientOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(1));
        let base = match confine {
            Some(_) => AmazonS3Builder::new(),
            None => AmazonS3Builder::from_env(),
        };
        let mut builder = base
            .with_bucket_name(&bucket)
            .with_client_options(client.clone())
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
            if confine.is_some() && !RUN_TIME_KEYS.contains(&config_key) {
                return Err(OpenError::Forbidden(format!(
                    "option {key:?} is not allowed for a child added at run time"
                )));
            }
            if config_key == AmazonS3ConfigKey::ConditionalPut {
                return Err(OpenError::BadOption {
                    option: key.clone(),
                    problem: "an s3 child always writes chunks conditionally (If-Match), so that a late write cannot undo a newer one; remove the option".into(),
                });
            }
            builder = builder.with_config(config_key, value);
        }
        // Set last, over any AWS_CONDITIONAL_PUT in the environment.
        builder = builder.with_conditional_put(S3ConditionalPut::ETagMatch);
        // The client of conditional DELETEs: configured as the store's.
        let mut http_options = client;
        for key in CLIENT_KEYS {
            if let Some(value) = builder.get_config_value(&AmazonS3ConfigKey::Client(key)) {
                http_options = http_options.with_config(key, value);
            }
        }
        let http = ReqwestConnector {}
            .connect(&http_options)
            .map_err(|e| OpenError::Remote {
                uri: uri.to_owned(),
                problem: format!("cannot configure the HTTP client: {e}"),
            })?;
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .map(|e| crate::confine::origin(&e).unwrap_or(e))
            .unwrap_or_default();
        if let Some(confine) = confine {
            let raw = builder
                .get_config_value(&AmazonS3ConfigKey::Endpoint)
                .unwrap_or_default();
            if !plain_origin(&raw) {
                return Err(OpenError::Forbidden(format!(
                    "aws_endpoint {:?} must be only scheme://host:port",
                    crate::redact_uri(&raw)
                )));
            }
            confine.endpoint(&endpoint)?;
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
        let backend = S3Backend {
            store: Arc::new(store),
            http,
            runtime,
            endpoint,
            bucket,
            prefix,
            size: 0,
            chunk_size: settings.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
            op_timeout: settings.op_timeout,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            volume_id: None,
        };
        Ok((backend, settings))
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
                    // Listing a prefix of a bucket that exists never
                    // answers 404.
                    Err(e) if Failure::of(&e) == Failure::NotFound => {
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

    async fn write_meta(&self, owner: &str) -> Result<(), BackendError> {
        let meta = Meta {
            format: FORMAT.into(),
            version: VERSION,
            size: self.size,
            chunk_size: self.chunk_size,
            owner: Some(owner.to_owned()),
            id: self.volume_id.clone(),
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
}

/// The endpoint an s3 child with `options` would use: its `aws_endpoint`
/// (or an alias object_store knows), else the `AWS_*` environment's.
pub fn endpoint(options: &BTreeMap<String, String>) -> Option<String> {
    options
        .iter()
        .find(|(key, _)| AmazonS3ConfigKey::from_str(key).ok() == Some(AmazonS3ConfigKey::Endpoint))
        .map(|(_, value)| value.clone())
        .or_else(|| AmazonS3Builder::from_env().get_config_value(&AmazonS3ConfigKey::Endpoint))
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

/// The checks of a child added at run time that its options alone decide.
fn check_run_time(
    bucket: &str,
    prefix: &str,
    options: &BTreeMap<String, String>,
    settings: &Settings,
    confine: &Confinement,
) -> Result<(), OpenError> {
    let forbidden = |why: String| Err(OpenError::Forbidden(why));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return forbidden(format!("bucket {bucket:?} is not an S3 bucket name"));
    }
    if prefix
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.contains(['\\', '%']))
        && !prefix.is_empty()
    {
        return forbidden(format!(
            "prefix {prefix:?} has an empty, dot or escaped part"
        ));
    }
    let mut seen = Vec::new();
    for name in options.keys() {
        if let Ok(k) = AmazonS3ConfigKey::from_str(name) {
            if seen.contains(&k) {
                return forbidden(format!(
                    "option {name:?} sets what another option already sets"
                ));
            }
            seen.push(k);
        }
    }
    let key = |k: AmazonS3ConfigKey| {
        options
            .iter()
            .find(|(name, _)| AmazonS3ConfigKey::from_str(name).ok() == Some(k))
            .map(|(_, v)| v.as_str())
    };
    if key(AmazonS3ConfigKey::AccessKeyId).is_none()
        || key(AmazonS3ConfigKey::SecretAccessKey).is_none()
    {
        return forbidden(
            "a child added at run time brings its own aws_access_key_id and aws_secret_access_key (the server's are not lent)".into(),
        );
    }
    if let Some(region) = key(AmazonS3ConfigKey::Region) {
        let plain = (1..=32).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return forbidden(format!("aws_region {region:?} is not a region name"));
        }
    }
    let endpoint = key(AmazonS3ConfigKey::Endpoint).unwrap_or_default();
    if !plain_origin(endpoint) {
        return forbidden(format!(
            "aws_endpoint {:?} must be only scheme://host:port",
            crate::redact_uri(endpoint)
        ));
    }
    confine.endpoint(endpoint)?;
    for (option, value) in [
        ("op_timeout", settings.op_timeout),
        ("retry_timeout", settings.retry.retry_timeout),
    ] {
        confine.timeout(option, value)?;
    }
    if settings.retry.max_retries > crate::confine::MAX_RETRIES {
        return forbidden(format!(
            "max_retries: at most {} for a child added at run time",
            crate::confine::MAX_RETRIES
        ));
    }
    if let Some(timeout) = key(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout)) {
        let parsed = humantime::parse_duration(timeout).map_err(|e| OpenError::BadOption {
            option: "timeout".into(),
            problem: format!("{timeout:?} is not a duration: {e}"),
        })?;
        confine.timeout("timeout", parsed)?;
    }
    Ok(())
}

/// Whether `endpoint` is only `scheme://host[:port]`.
fn plain_origin(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| {
        u.username().is_empty()
            && u.password().is_none()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.path() == "/"
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
    use super::*;

    #[test]
    fn uris() {
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
    }

    #[test]
    fn options_are_checked() {
        let opts = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(settings(&opts("chunk_size", "3000")).is_err());
        assert!(settings(&opts("chunk_size", "1MiB")).is_ok());
        assert!(settings(&opts("op_timeout", "soon")).is_err());
        assert!(settings(&opts("max_retries", "-1")).is_err());
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
