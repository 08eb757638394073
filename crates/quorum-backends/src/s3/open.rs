//! Opening an s3 child: its settings and HTTP client from the options
//! and the environment, the checks of a child added at run time, and the
//! volume's `meta.json` (made for a new volume, checked for an existing
//! one).

use std::collections::BTreeMap;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ClientOptions;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum, S3ConditionalPut};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quorum_core::{Backend, BackendError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::errors::{Failure, store_error};
use super::options::{
    CLIENT_KEYS, OWN_OPTIONS, Settings, check_run_time, parse_uri, plain_origin, settings,
};
use super::{DEFAULT_CHUNK_SIZE, RUN_TIME_KEYS, S3Backend, STRIPES};
use crate::{Confinement, OpenError};

/// The format of `meta.json`.
const FORMAT: &str = "quorum-s3-volume";
const VERSION: u32 = 1;

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
}
