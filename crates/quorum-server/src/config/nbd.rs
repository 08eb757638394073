//! The `[nbd]` table (SPEC section 9): where the volumes are served over
//! NBD (TCP, a Unix socket, or both), and TLS.
//!
//! NBD has no authentication of its own, so a TCP listen address beyond
//! loopback is refused unless TLS is configured (`[nbd.tls]`, which then
//! is required on every connection) or `allow_plaintext = true` says the
//! network is trusted. A Unix socket is local; the file's permissions
//! guard it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The `[nbd]` section: where the volumes are served over NBD.
#[derive(Debug, Clone)]
pub struct NbdConfig {
    /// The TCP address to listen on, if any.
    pub listen: Option<SocketAddr>,
    /// The Unix socket to listen on, if any (resolved against the config
    /// file's directory).
    pub socket: Option<PathBuf>,
    /// Serve beyond loopback without TLS (NBD has no authentication).
    pub allow_plaintext: bool,
    /// The server's X.509 identity; when set, every connection must start
    /// TLS.
    pub tls: Option<NbdTls>,
}

/// The `[nbd.tls]` table: PEM files, resolved against the config file's
/// directory.
#[derive(Debug, Clone)]
pub struct NbdTls {
    /// The certificate chain, the server's own first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl NbdConfig {
    /// Refuses a TCP listen address beyond loopback unless TLS is
    /// configured or plaintext is allowed.
    ///
    /// # Errors
    /// A one-line message that says what to do.
    pub fn check(&self) -> Result<(), ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(());
        };
        if listen.ip().is_loopback() || self.tls.is_some() || self.allow_plaintext {
            return Ok(());
        }
        Err(ConfigError(format!(
            "nbd listen {listen}: NBD has no authentication, so without TLS anyone who can reach the port could read and write every volume; listen on a loopback address, configure [nbd.tls] cert and key, or set [nbd] allow_plaintext = true"
        )))
    }
}

/// Refuses a `max_buffered_bytes` below NBD's maximum request
/// ([`quorum_nbd::proto::MAX_PAYLOAD`], 32 MiB, advertised to every
/// client): a read or write of that size could never find room, and would
/// fail with `EIO` after `body_timeout`.
///
/// # Errors
/// A one-line message that says what to do.
pub fn check_nbd_budget(max_buffered_bytes: u64) -> Result<(), ConfigError> {
    let max = u64::from(quorum_nbd::proto::MAX_PAYLOAD);
    if max_buffered_bytes >= max {
        return Ok(());
    }
    Err(ConfigError(format!(
        "max_buffered_bytes ({max_buffered_bytes}) is below {max} bytes (32 MiB), the largest NBD request a client may send: such requests could never be served; make it at least 32MiB, or serve no NBD"
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNbd {
    listen: Option<String>,
    socket: Option<PathBuf>,
    #[serde(default)]
    allow_plaintext: bool,
    tls: Option<RawNbdTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNbdTls {
    cert: PathBuf,
    key: PathBuf,
}

pub(super) fn parse_nbd(n: RawNbd, base_dir: &Path) -> Result<NbdConfig, ConfigError> {
    let listen = n
        .listen
        .map(|l| {
            l.parse()
                .map_err(|e| ConfigError(format!("nbd listen {l:?}: {e} (write it as IP:PORT)")))
        })
        .transpose()?;
    if listen.is_none() && n.socket.is_none() {
        return Err(ConfigError(
            "[nbd] needs listen = \"IP:PORT\", socket = \"PATH\", or both".into(),
        ));
    }
    if n.socket.as_ref().is_some_and(|s| s.as_os_str().is_empty()) {
        return Err(ConfigError("nbd socket: the path is empty".into()));
    }
    let nbd = NbdConfig {
        listen,
        socket: n.socket.map(|s| base_dir.join(s)),
        allow_plaintext: n.allow_plaintext,
        tls: n.tls.map(|t| NbdTls {
            cert: base_dir.join(t.cert),
            key: base_dir.join(t.key),
        }),
    };
    nbd.check()?;
    Ok(nbd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const VOLUME: &str = "[[volume]]\nname = \"vm\"\nsize = \"1MiB\"\nvote_threshold = 1\n[[volume.child]]\nuri = \"a.img\"\n";

    fn nbd(table: &str) -> Result<NbdConfig, String> {
        let text = format!("{table}\n{VOLUME}");
        Config::parse(&text, Path::new("/etc/q"))
            .map(|c| c.nbd.expect("an [nbd] table"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn listen_socket_and_tls_paths_resolve_against_the_config_directory() {
        let n = nbd("[nbd]\nlisten = \"127.0.0.1:10809\"\nsocket = \"q.sock\"\n[nbd.tls]\ncert = \"tls/c.pem\"\nkey = \"/k/key.pem\"")
            .expect("parse");
        assert_eq!(
            n.listen,
            Some("127.0.0.1:10809".parse().expect("an address"))
        );
        assert_eq!(n.socket.as_deref(), Some(Path::new("/etc/q/q.sock")));
        let tls = n.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/q/tls/c.pem"));
        assert_eq!(tls.key, Path::new("/k/key.pem"));

        let n = nbd("[nbd]\nsocket = \"/run/q.sock\"").expect("a socket alone");
        assert_eq!(n.listen, None);
        assert_eq!(n.socket.as_deref(), Some(Path::new("/run/q.sock")));
    }

    #[test]
    fn bad_nbd_tables_are_one_line_errors() {
        for (table, needle) in [
            ("[nbd]\nallow_plaintext = true", "needs listen"),
            ("[nbd]\nsocket = \"\"", "empty"),
            ("[nbd]\nlisten = \"nowhere\"", "nowhere"),
            (
                "[nbd]\nlisten = \"127.0.0.1:1\"\n[nbd.tls]\ncert = \"c.pem\"",
                "key",
            ),
            ("[nbd]\nlisten = \"127.0.0.1:1\"\ncolour = 1", "colour"),
        ] {
            let e = nbd(table).expect_err(needle);
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(needle), "{e:?} should say {needle:?}");
        }
    }

    /// NBD advertises requests of up to 32 MiB: a smaller
    /// `max_buffered_bytes` could never serve them, so it refuses the
    /// config when NBD is served, and only then.
    #[test]
    fn nbd_needs_max_buffered_bytes_of_32_mib() {
        let budget = |bytes: &str, nbd: bool| {
            let table = if nbd {
                "[nbd]\nsocket = \"q.sock\"\n"
            } else {
                ""
            };
            let text = format!(
                "max_request_bytes = \"1MiB\"\nmax_buffered_bytes = \"{bytes}\"\n{table}{VOLUME}"
            );
            Config::parse(&text, Path::new("/etc/q")).map_err(|e| e.to_string())
        };
        let e = budget("16MiB", true).expect_err("16 MiB with NBD");
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("max_buffered_bytes (16777216)") && e.contains("32MiB"),
            "{e}"
        );
        budget("32MiB", true).expect("32 MiB with NBD");
        budget("16MiB", false).expect("16 MiB without NBD");
        assert!(check_nbd_budget(32 << 20).is_ok());
        assert!(check_nbd_budget((32 << 20) - 1).is_err());
    }

    /// Each case of the plaintext rule: loopback is served; beyond it,
    /// only with TLS or `allow_plaintext`; a Unix socket is local.
    #[test]
    fn plaintext_beyond_loopback_needs_tls_or_allow_plaintext() {
        let tls = "\n[nbd.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"";
        for (table, served) in [
            ("[nbd]\nlisten = \"127.0.0.1:0\"".to_owned(), true),
            ("[nbd]\nlisten = \"[::1]:0\"".to_owned(), true),
            ("[nbd]\nsocket = \"q.sock\"".to_owned(), true),
            ("[nbd]\nlisten = \"0.0.0.0:0\"".to_owned(), false),
            (
                "[nbd]\nlisten = \"10.1.2.3:10809\"\nsocket = \"q.sock\"".to_owned(),
                false,
            ),
            (
                "[nbd]\nlisten = \"0.0.0.0:0\"\nallow_plaintext = false".to_owned(),
                false,
            ),
            (
                "[nbd]\nlisten = \"0.0.0.0:0\"\nallow_plaintext = true".to_owned(),
                true,
            ),
            (format!("[nbd]\nlisten = \"0.0.0.0:0\"{tls}"), true),
        ] {
            match nbd(&table) {
                Ok(_) => assert!(served, "{table:?} must be refused"),
                Err(e) => {
                    assert!(!served, "{table:?} must be served: {e}");
                    assert!(
                        e.contains("allow_plaintext") && e.contains("[nbd.tls]"),
                        "{e}"
                    );
                }
            }
        }
    }
}
