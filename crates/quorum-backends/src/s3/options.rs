//! The options of an s3 child: quorum's own (chunk size, timeouts,
//! retries), the object_store keys it passes on, and what a child added at
//! run time may set.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use crate::{Confinement, OpenError};

/// Options of an s3 child that are quorum's own; every other option is an
/// object_store config key (`aws_endpoint`, `aws_region`, ...).
pub(super) const OWN_OPTIONS: [&str; 4] =
    ["chunk_size", "op_timeout", "max_retries", "retry_timeout"];

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
pub(super) const CLIENT_KEYS: [ClientConfigKey; 9] = [
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

/// The settings an s3 child is opened with, from its options.
pub(super) struct Settings {
    pub(super) chunk_size: Option<u64>,
    pub(super) op_timeout: Duration,
    pub(super) retry: RetryConfig,
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

pub(super) fn settings(options: &BTreeMap<String, String>) -> Result<Settings, OpenError> {
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
pub(super) fn check_run_time(
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
pub(super) fn plain_origin(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| {
        u.username().is_empty()
            && u.password().is_none()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.path() == "/"
    })
}

/// `s3://bucket/prefix` into its bucket and prefix (without slashes at the ends).
pub(super) fn parse_uri(uri: &str) -> Result<(String, String), OpenError> {
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
    }
}
