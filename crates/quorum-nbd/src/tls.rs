//! TLS for NBD: the server's X.509 identity and the stream it upgrades to.
//!
//! NBD negotiates TLS inside the handshake (`NBD_OPT_STARTTLS`, then a TLS
//! handshake on the same socket), so a connection starts plain and may
//! become [`MaybeTls::Right`] half-way through; the handshake and the
//! transmission phase read and write either through [`MaybeTls`].
//!
//! The identity is a certificate chain and its private key in PEM files,
//! the layout of qemu's `tls-creds-x509` (`server-cert.pem`,
//! `server-key.pem`). The crypto provider is rustls' aws-lc-rs, the one
//! the rest of the workspace (reqwest, object_store) already uses; it is
//! named explicitly so that another dependency enabling a second provider
//! cannot make the choice ambiguous. No client certificate is asked for:
//! NBD leaves authentication to the implementation, and quorum's is the
//! network (loopback, or TLS to a server the client verifies).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// A connection before (`Left`) or after (`Right`) `NBD_OPT_STARTTLS`
/// (boxed: a TLS session is over a kilobyte).
pub type MaybeTls<S> = Either<S, Box<tokio_rustls::server::TlsStream<S>>>;

/// Why the server's TLS identity cannot be used. Each message names the
/// file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not well-formed PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair: a key it cannot use, or one that does not
    /// belong to the certificate.
    #[error("the key {} does not fit the certificate {}: {source}", key.display(), cert.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// The TLS side of the server: the certificate chain in `cert` (the
/// server's own first) and its private key in `key`, both PEM.
///
/// # Errors
/// [`TlsError`], naming the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = match PrivateKeyDer::from_pem_slice(&read(key)?) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            });
        }
        Err(source) => {
            return Err(TlsError::Pem {
                path: key.to_owned(),
                source,
            });
        }
    };
    let rejected = |source| TlsError::Rejected {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(rejected)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    #[test]
    fn a_certificate_and_its_key_load() {
        acceptor(&testdata("server-cert.pem"), &testdata("server-key.pem"))
            .expect("the test identity loads");
    }

    #[test]
    fn every_refusal_names_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let (cert, key) = (testdata("server-cert.pem"), testdata("server-key.pem"));
        let other = testdata("other-key.pem");
        let cases = [
            (&missing, &key, vec![&missing]),
            (&cert, &missing, vec![&missing]),
            (&garbage, &key, vec![&garbage]),
            (&broken, &key, vec![&broken]),
            // A certificate where the key should be: no key in it.
            (&cert, &cert, vec![&cert]),
            (&cert, &other, vec![&cert, &other]),
        ];
        for (cert, key, named) in cases {
            let e = match acceptor(cert, key) {
                Ok(_) => panic!(
                    "{} with {} should be refused",
                    cert.display(),
                    key.display()
                ),
                Err(e) => e.to_string(),
            };
            assert!(!e.contains('\n'), "one line: {e}");
            for path in named {
                assert!(
                    e.contains(&path.display().to_string()),
                    "{e:?} names {path:?}"
                );
            }
        }
    }
}
