//! The config file (TOML) and the embedded default.
//!
//! Parsing is strict: an unknown key, a bad value or an impossible volume is
//! an error whose one line names the volume, the child and the problem.
//! Relative paths (`data_dir`, file children) are resolved against the
//! directory of the config file, or the current directory for the embedded
//! default.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use quorum_backends::FaultRule;
use quorum_core::{ReadPattern, VolumeOptions};
use serde::Deserialize;

mod nbd;

pub use self::nbd::{NbdConfig, NbdTls, check_nbd_budget};
use self::nbd::{RawNbd, parse_nbd};

use crate::controls::ControlsConfig;
use crate::throttle::IoLimits;

/// The config that `quorum-server` serves with no arguments.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Where the server listens when the config does not say.
const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// The largest request body accepted when the config does not say.
const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 << 20;
/// How many events the log keeps when the config does not say.
const DEFAULT_MAX_EVENTS: usize = 10_000;
/// The resync and scrub rate limit when the config does not say: bytes per
/// second.
const DEFAULT_RESYNC_RATE: u64 = 64 << 20;
/// How long a request body may take to arrive when the config does not say.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Request bytes buffered at once, server-wide, when the config does not say.
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 512 << 20;
/// How long a request head may take to arrive when the config does not say.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once when the config does not say.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// A config error, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The whole server config, checked and with paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Where the server keeps its state (the event log).
    pub data_dir: PathBuf,
    /// Larger request bodies get 413.
    pub max_request_bytes: u64,
    /// How many events the log keeps.
    pub max_events: usize,
    /// A request body that takes longer than this to arrive gets 408.
    pub body_timeout: Duration,
    /// Request bytes (bodies and read buffers) held at once, server-wide.
    pub max_buffered_bytes: u64,
    /// A connection whose request head takes longer than this is closed.
    pub header_timeout: Duration,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Directories under which run-time file children may live.
    pub child_roots: Vec<PathBuf>,
    /// Endpoints (S3 and remote quorum-servers) run-time children may use,
    /// beyond those of the config's own children.
    pub allowed_endpoints: Vec<String>,
    /// Bytes a second that resyncs copy at most, per volume.
    pub resync_rate: u64,
    /// Bytes a second that scrubs read at most, per job.
    pub scrub_rate: u64,
    /// The bearer token every request but `/healthz` must carry.
    pub token: Option<String>,
    /// The volumes, in config order.
    pub volumes: Vec<VolumeConfig>,
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The NBD export, when `[nbd]` is configured (or `--nbd` given).
    pub nbd: Option<NbdConfig>,
}

/// One volume of the config.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// The engine options (name, threshold, read pattern, ...).
    pub options: VolumeOptions,
    /// The size, when given.
    pub size: Option<u64>,
    /// The children, in order.
    pub children: Vec<ChildConfig>,
    /// The operator's controls (SPEC 11).
    pub controls: ControlsConfig,
}

impl VolumeConfig {
    /// Whether the config file names `child` as it is (else it was added
    /// through the API and saved with the membership).
    pub fn names(&self, child: &ChildConfig) -> bool {
        self.children
            .iter()
            .any(|k| k.name == child.name && k.uri == child.uri && k.options == child.options)
    }
}

/// One child of a volume.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// Its name (default `children.N`).
    pub name: String,
    /// Where it lives.
    pub uri: String,
    /// Backend options (may hold secrets: never print them).
    pub options: BTreeMap<String, String>,
    /// Fault-injection rules.
    pub faults: Vec<FaultRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_request_bytes: Option<ByteSize>,
    max_events: Option<usize>,
    body_timeout: Option<String>,
    max_buffered_bytes: Option<ByteSize>,
    header_timeout: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    child_roots: Vec<PathBuf>,
    #[serde(default)]
    allowed_endpoints: Vec<String>,
    resync_rate: Option<ByteSize>,
    scrub_rate: Option<ByteSize>,
    auth: Option<RawAuth>,
    nbd: Option<RawNbd>,
    #[serde(default)]
    volume: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    name: String,
    size: Option<ByteSize>,
    vote_threshold: usize,
    #[serde(default)]
    read_pattern: RawReadPattern,
    #[serde(default)]
    rewrite_corrupted: bool,
    #[serde(default)]
    blkverify: bool,
    child_timeout: Option<String>,
    limits: Option<IoLimits>,
    on_quorum_failure: Option<String>,
    suspend_timeout: Option<String>,
    scrub_interval: Option<String>,
    #[serde(default)]
    child: Vec<toml::Table>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawReadPattern {
    #[default]
    Quorum,
    Fifo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    name: Option<String>,
    uri: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
    #[serde(default)]
    fault: Vec<FaultRule>,
}

impl Config {
    /// Refuses an `[nbd] listen` on the HTTP `listen`'s port where the two
    /// would meet (the same address, or either on every address): the NBD
    /// listener binds first and the HTTP one then failed with "Address
    /// already in use", as if another process held the port, once the
    /// children had been created.
    ///
    /// # Errors
    /// One line naming both keys.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        let Some(nbd) = self.nbd.as_ref().and_then(|n| n.listen) else {
            return Ok(());
        };
        let http = self.listen;
        let meet = nbd.port() == http.port()
            && nbd.port() != 0
            && (nbd.ip() == http.ip() || nbd.ip().is_unspecified() || http.ip().is_unspecified());
        if meet {
            return Err(ConfigError(format!(
                "nbd.listen {nbd} and listen {http} are the same port: give NBD a port of its own (10809 by default)"
            )));
        }
        Ok(())
    }

    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Absolute, so that a child added at run time by a relative path
        // is compared with `child_roots` as the same kind of path.
        let base = std::path::absolute(parent).map_err(|e| {
            ConfigError(format!(
                "config {}: cannot resolve its directory: {e}",
                path.display()
            ))
        })?;
        Config::parse(&text, &base)
            .map_err(|ConfigError(e)| ConfigError(format!("config {}: {e}", path.display())))
    }

    /// The embedded default, with paths relative to the current directory.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, Path::new("."))
    }

    /// Parses and checks config text; relative paths are resolved against
    /// `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(toml_error(&e, text)))?;
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen
            .parse()
            .map_err(|e| ConfigError(format!("listen {listen:?}: {e} (write it as IP:PORT)")))?;
        let data_dir = base_dir.join(raw.data_dir.unwrap_or_else(|| PathBuf::from("quorum-data")));
        let max_events = raw.max_events.unwrap_or(DEFAULT_MAX_EVENTS);
        if max_events == 0 {
            return Err(ConfigError("max_events must be at least 1".into()));
        }
        let body_timeout =
            duration("body_timeout", raw.body_timeout.as_deref())?.unwrap_or(DEFAULT_BODY_TIMEOUT);
        let header_timeout = duration("header_timeout", raw.header_timeout.as_deref())?
            .unwrap_or(DEFAULT_HEADER_TIMEOUT);
        let max_request_bytes = raw
            .max_request_bytes
            .map_or(DEFAULT_MAX_REQUEST_BYTES, |b| b.as_u64());
        let max_buffered_bytes = raw
            .max_buffered_bytes
            .map_or(DEFAULT_MAX_BUFFERED_BYTES.max(max_request_bytes), |b| {
                b.as_u64()
            });
        if max_buffered_bytes < max_request_bytes {
            return Err(ConfigError(format!(
                "max_buffered_bytes ({max_buffered_bytes}) is below max_request_bytes ({max_request_bytes}): the largest request could never be served"
            )));
        }
        let piece = crate::api::READ_CHUNK as u64;
        if max_buffered_bytes < piece {
            return Err(ConfigError(format!(
                "max_buffered_bytes ({max_buffered_bytes}) is below {piece} bytes (1 MiB), the piece in which reads are served: no whole-volume read could be served; make it at least 1MiB"
            )));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError("max_connections must be at least 1".into()));
        }
        for endpoint in &raw.allowed_endpoints {
            if quorum_backends::confine::origin(endpoint).is_none() {
                return Err(ConfigError(format!(
                    "allowed_endpoints: {endpoint:?} is not a URL like \"http://host:9000\""
                )));
            }
        }
        let token = raw.auth.and_then(|a| a.token).filter(|t| !t.is_empty());
        if let Some(token) = &token {
            check_token(token)?;
        }
        let mut volumes = Vec::with_capacity(raw.volume.len());
        let mut names = HashSet::new();
        for (i, table) in raw.volume.into_iter().enumerate() {
            let volume = parse_volume(i, table)?;
            if !names.insert(volume.options.name.clone()) {
                return Err(ConfigError(format!(
                    "volume {:?}: the name is used twice",
                    volume.options.name
                )));
            }
            volumes.push(volume);
        }
        if volumes.is_empty() {
            return Err(ConfigError("no [[volume]] is configured".into()));
        }
        check_one_file_per_child(&volumes, base_dir)?;
        let nbd = raw.nbd.map(|n| parse_nbd(n, base_dir)).transpose()?;
        if nbd.is_some() {
            check_nbd_budget(max_buffered_bytes)?;
        }
        Ok(Config {
            listen,
            data_dir,
            max_request_bytes,
            max_events,
            body_timeout,
            max_buffered_bytes,
            header_timeout,
            max_connections,
            child_roots: raw.child_roots.iter().map(|r| base_dir.join(r)).collect(),
            allowed_endpoints: raw.allowed_endpoints,
            resync_rate: raw
                .resync_rate
                .map_or(DEFAULT_RESYNC_RATE, |b| b.as_u64().max(4096)),
            scrub_rate: raw
                .scrub_rate
                .map_or(DEFAULT_RESYNC_RATE, |b| b.as_u64().max(4096)),
            token,
            volumes,
            base_dir: base_dir.to_owned(),
            nbd,
        })
    }
}

/// The longest duration the config takes: any longer means "never" in
/// practice, and one long enough cannot be added to the time (the server
/// would panic where it adds it).
const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// The duration in `key` (like "30s"), when given; zero and more than
/// [`MAX_DURATION`] are refused.
fn duration(key: &str, text: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    text.map(|text| {
        let d = humantime::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError(format!("{key} {text:?} is not a duration like \"30s\"")))?;
        if d > MAX_DURATION {
            return Err(ConfigError(format!(
                "{key} {text:?} is too long: at most 100 years"
            )));
        }
        Ok(d)
    })
    .transpose()
}

fn parse_volume(index: usize, table: toml::Table) -> Result<VolumeConfig, ConfigError> {
    let label = match table.get("name").and_then(toml::Value::as_str) {
        Some(name) => format!("volume {name:?}"),
        None => format!("volume #{}", index + 1),
    };
    let raw: RawVolume = keyed(&label, table)?;
    if !valid_name(&raw.name) {
        return Err(ConfigError(format!("{label}: {NAME_RULE}")));
    }
    let controls = parse_controls(&label, &raw)?;
    let mut children = Vec::with_capacity(raw.child.len());
    for (i, table) in raw.child.into_iter().enumerate() {
        children.push(parse_child(&label, i, table)?);
    }
    let options = VolumeOptions {
        name: raw.name,
        vote_threshold: raw.vote_threshold,
        read_pattern: match raw.read_pattern {
            RawReadPattern::Quorum => ReadPattern::Quorum,
            RawReadPattern::Fifo => ReadPattern::Fifo,
        },
        rewrite_corrupted: raw.rewrite_corrupted,
        blkverify: raw.blkverify,
        child_timeout: duration("child_timeout", raw.child_timeout.as_deref())
            .map_err(|e| ConfigError(format!("{label}: {}", e.0)))?
            .unwrap_or(VolumeOptions::DEFAULT_CHILD_TIMEOUT),
    };
    options
        .validate(children.len())
        .map_err(|e| ConfigError(format!("{label}: {e}")))?;
    Ok(VolumeConfig {
        options,
        size: raw.size.map(|s| s.as_u64()),
        children,
        controls,
    })
}

/// A volume's `limits`, `on_quorum_failure`, `suspend_timeout` and
/// `scrub_interval` (SPEC 11).
fn parse_controls(label: &str, raw: &RawVolume) -> Result<ControlsConfig, ConfigError> {
    let in_volume = |e: ConfigError| ConfigError(format!("{label}: {}", e.0));
    let limits = raw.limits.unwrap_or_default();
    limits
        .validate()
        .map_err(|e| ConfigError(format!("{label}: limits: {e}")))?;
    let on_quorum_failure = match raw.on_quorum_failure.as_deref() {
        None => Default::default(),
        Some(text) => text.parse().map_err(|_| {
            ConfigError(format!(
                "{label}: on_quorum_failure {text:?} is neither \"report\" nor \"suspend\""
            ))
        })?,
    };
    let defaults = ControlsConfig::default();
    Ok(ControlsConfig {
        limits,
        on_quorum_failure,
        suspend_timeout: duration("suspend_timeout", raw.suspend_timeout.as_deref())
            .map_err(in_volume)?
            .unwrap_or(defaults.suspend_timeout),
        scrub_interval: duration("scrub_interval", raw.scrub_interval.as_deref())
            .map_err(in_volume)?,
    })
}

/// Refuses two file children (of any volumes) that name one file, before
/// anything is created: one copy cannot have two votes. (Two names of one
/// file, through a link, are refused once the files are opened.)
fn check_one_file_per_child(volumes: &[VolumeConfig], base_dir: &Path) -> Result<(), ConfigError> {
    let mut seen: HashMap<PathBuf, (&str, &str)> = HashMap::new();
    for volume in volumes {
        for child in &volume.children {
            let Some(file) = quorum_backends::file_location(&child.uri, base_dir) else {
                continue;
            };
            let here = (volume.options.name.as_str(), child.name.as_str());
            if let Some((v, c)) = seen.insert(file.clone(), here) {
                return Err(ConfigError(format!(
                    "volume {:?}, child {:?}: it uses the same storage as volume {v:?}, child {c:?} (the file {}): one copy cannot have two votes",
                    here.0,
                    here.1,
                    file.display()
                )));
            }
        }
    }
    Ok(())
}

fn parse_child(volume: &str, index: usize, table: toml::Table) -> Result<ChildConfig, ConfigError> {
    let default_name = format!("children.{index}");
    let label = match table.get("name").and_then(toml::Value::as_str) {
        Some(name) => format!("{volume}, child {name:?}"),
        None => format!("{volume}, child {default_name:?}"),
    };
    let raw: RawChild = keyed(&label, table)?;
    let mut options = BTreeMap::new();
    for (key, value) in raw.options {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError(format!(
                    "{label}: option {key:?} must be a string, number or boolean"
                )));
            }
        };
        options.insert(key, text);
    }
    let name = raw.name.unwrap_or(default_name);
    if !valid_name(&name) {
        return Err(ConfigError(format!("{label}: {NAME_RULE}")));
    }
    Ok(ChildConfig {
        name,
        uri: raw.uri,
        options,
        faults: raw.fault,
    })
}

/// The rule of volume and child names, as errors state it.
pub const NAME_RULE: &str = "a name is 1 to 64 of A-Z a-z 0-9 . _ - (and not . or ..)";

/// Checks a token: HTTP strips whitespace around a header's value, so a
/// token with whitespace at either end, or with control characters, could
/// never be matched exactly.
pub fn check_token(token: &str) -> Result<(), ConfigError> {
    let printable = token.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !printable || token.trim() != token {
        return Err(ConfigError(
            "the token must be printable ASCII without spaces at either end".into(),
        ));
    }
    Ok(())
}

/// Whether `name` is a valid volume or child name: `[A-Za-z0-9._-]{1,64}`,
/// and not `.` or `..`, so that it is safe in paths, URLs and metrics.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != ".."
}

/// A TOML error as one line, with its line number.
fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = one_line(e.message());
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Deserializes one table of the config; an error names the key at fault
/// (`read_pattern: unknown variant ...`), not only what was wrong with it.
fn keyed<T: serde::de::DeserializeOwned>(
    label: &str,
    table: toml::Table,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = one_line(&e.path().to_string());
        let message = one_line(e.inner().message());
        if path.is_empty() || path == "." {
            ConfigError(format!("{label}: {message}"))
        } else {
            ConfigError(format!("{label}: {path}: {message}"))
        }
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/q")).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
        [[volume]]
        name = "vm1"
        size = "10MiB"
        vote_threshold = 2
        [[volume.child]]
        uri = "a.img"
        [[volume.child]]
        name = "b"
        uri = "file:///var/b.img"
        [[volume.child]]
        name = "c"
        uri = "c.img"
    "#;

    #[test]
    fn nbd_and_http_on_one_port_are_refused_where_they_meet() {
        let with = |http: &str, nbd: &str| {
            let text = format!(
                "listen = \"{http}\"\n[nbd]\nlisten = \"{nbd}\"\nallow_plaintext = true\n{BASE}"
            );
            parse(&text)
                .expect("parses")
                .check_listeners()
                .map_err(|e| e.to_string())
        };
        let err = with("127.0.0.1:8700", "127.0.0.1:8700").expect_err("one port");
        assert!(
            err.contains("nbd.listen 127.0.0.1:8700 and listen"),
            "{err}"
        );
        assert!(
            with("0.0.0.0:8700", "127.0.0.1:8700").is_err(),
            "every address"
        );
        assert!(
            with("127.0.0.1:8700", "[::]:8700").is_err(),
            "every address"
        );
        assert!(
            with("127.0.0.1:0", "127.0.0.1:0").is_ok(),
            "two ports picked"
        );
        assert!(
            with("127.0.0.1:8700", "127.0.0.2:8700").is_ok(),
            "two addresses"
        );
        assert!(with("127.0.0.1:8700", "127.0.0.1:10809").is_ok());
    }

    /// A duration past what a clock can add (here 300 billion years) would
    /// panic the server where it is added to the time (every request for
    /// `body_timeout`, `/metrics` for `scrub_interval`): refused at start.
    #[test]
    fn durations_beyond_a_century_are_refused() {
        let huge = "300000000000y";
        for (key, top) in [
            ("body_timeout", true),
            ("header_timeout", true),
            ("child_timeout", false),
            ("suspend_timeout", false),
            ("scrub_interval", false),
        ] {
            let line = format!("{key} = \"{huge}\"\n");
            let text = if top {
                format!("{line}{BASE}")
            } else {
                BASE.replace(
                    "vote_threshold = 2\n",
                    &format!("vote_threshold = 2\n{line}"),
                )
            };
            let e = parse(&text).expect_err(key);
            assert!(
                e.contains(key) && e.contains("at most 100 years"),
                "{key}: {e}"
            );
            let fine = text.replace(huge, "100years");
            parse(&fine).unwrap_or_else(|e| panic!("{key} of 100 years: {e}"));
        }
    }

    #[test]
    fn the_embedded_default_parses() {
        let c = Config::embedded_default().expect("default");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8700");
        assert_eq!(c.volumes[0].options.name, "default");
        assert_eq!(c.volumes[0].size, Some(1 << 30));
        assert_eq!(c.volumes[0].children.len(), 3);
        assert_eq!(c.volumes[0].options.vote_threshold, 2);
    }

    #[test]
    fn a_full_config_parses_with_defaults() {
        let c = parse(BASE).expect("parse");
        assert_eq!(c.max_request_bytes, 64 << 20);
        assert_eq!(c.data_dir, Path::new("/etc/q/quorum-data"));
        let v = &c.volumes[0];
        assert_eq!(v.size, Some(10 << 20));
        assert_eq!(v.children[0].name, "children.0");
        assert_eq!(v.options.read_pattern, ReadPattern::Quorum);
        let c = parse(&format!(
            "max_request_bytes = \"1KiB\"\n[auth]\ntoken = \"t\"\n{BASE}"
        ))
        .expect("parse");
        assert_eq!(c.max_request_bytes, 1024);
        assert_eq!(c.token.as_deref(), Some("t"));
    }

    #[test]
    fn errors_are_one_line_and_name_the_culprit() {
        let cases = [
            (
                BASE.replace("vote_threshold = 2", "vote_threshold = 4"),
                "volume \"vm1\"",
            ),
            (
                BASE.replace("vote_threshold = 2", "vote_threshold = 0"),
                "vote_threshold",
            ),
            (
                BASE.replace("size = \"10MiB\"", "size = \"ten megs\""),
                "ten megs",
            ),
            (
                BASE.replace(
                    "vote_threshold = 2",
                    "vote_threshold = 2\nread_pattern = \"random\"",
                ),
                "read_pattern: unknown variant `random`",
            ),
            (
                BASE.replace("name = \"b\"", "name = \"b\"\ncolour = 1"),
                "child \"b\"",
            ),
            (
                BASE.replace("name = \"vm1\"", "name = \"bad/name\""),
                "bad/name",
            ),
            (format!("colour = 1\n{BASE}"), "colour"),
            (
                BASE.replace("vote_threshold = 2", "vote_threshold = 2\nblkverify = true"),
                "blkverify",
            ),
            (
                format!(
                    "{BASE}\n[[volume]]\nname = \"vm1\"\nvote_threshold = 1\n[[volume.child]]\nuri = \"x\"\n"
                ),
                "twice",
            ),
            ("listen = \"nowhere\"".to_string(), "nowhere"),
            (
                BASE.replace("name = \"b\"", &format!("name = \"{}\"", "b".repeat(65))),
                "1 to 64",
            ),
            (
                format!("max_request_bytes = \"1GiB\"\nmax_buffered_bytes = \"512MiB\"\n{BASE}"),
                "max_buffered_bytes",
            ),
            (
                format!("max_request_bytes = \"4KiB\"\nmax_buffered_bytes = \"1023KiB\"\n{BASE}"),
                "max_buffered_bytes (1047552) is below 1048576 bytes",
            ),
            (format!("[auth]\ntoken = \"t \"\n{BASE}"), "token"),
            (format!("max_connections = 0\n{BASE}"), "max_connections"),
            (
                format!("allowed_endpoints = [\"nowhere\"]\n{BASE}"),
                "allowed_endpoints",
            ),
            ("[[volume]\n".to_string(), "line 1"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(needle);
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
        }
    }

    #[test]
    fn one_file_is_one_child() {
        let two = |a: &str, b: &str| {
            format!(
                "[[volume]]\nname = \"vm\"\nvote_threshold = 1\n\
                 [[volume.child]]\nname = \"a\"\nuri = \"{a}\"\n\
                 [[volume.child]]\nname = \"b\"\nuri = \"{b}\"\n"
            )
        };
        for (a, b) in [
            ("a.img", "a.img"),
            ("a.img", "./a.img"),
            ("a.img", "/etc/q/a.img"),
            ("a.img", "file:///etc/q/a.img"),
            ("d/a.img", "d/./a.img"),
        ] {
            let err = parse(&two(a, b)).expect_err("one file twice");
            assert!(
                err.contains("\"b\"") && err.contains("same storage") && err.contains("/etc/q/"),
                "{a} {b}: {err}"
            );
        }
        for (a, b) in [
            ("a.img", "b.img"),
            ("a.img", "d/a.img"),
            ("a.img", "s3://a.img/x"),
        ] {
            assert!(parse(&two(a, b)).is_ok(), "{a} {b}");
        }
    }

    #[test]
    fn names_are_path_safe() {
        for ok in ["vm1", "a.b-c_d", "X", "children.0"] {
            assert!(valid_name(ok));
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
