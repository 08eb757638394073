//! The handshake's state machine over an in-memory stream, with TLS
//! required (a real TLS handshake, rustls on both ends) and without.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use super::*;
use crate::{Export, ExportError, Exports, Extent};

/// One export, `vm`, of 1 MiB; no request reaches it here.
struct OneExport(Arc<Disk>);

struct Disk;

impl Export for Disk {
    type Permit = ();

    fn size(&self) -> u64 {
        1 << 20
    }

    async fn reserve(&self, _bytes: u64) -> Result<(), ExportError> {
        Ok(())
    }

    async fn grow(
        &self,
        _permit: &mut (),
        _bytes: u64,
        _need: u64,
        _deadline: tokio::time::Instant,
    ) -> Result<(), ExportError> {
        Ok(())
    }

    async fn read(&self, _offset: u64, length: u32) -> Result<Bytes, ExportError> {
        Ok(Bytes::from(vec![0; length as usize]))
    }

    async fn write(&self, _offset: u64, _data: Bytes, _fua: bool) -> Result<(), ExportError> {
        Ok(())
    }

    async fn write_zeroes(
        &self,
        _offset: u64,
        _length: u32,
        _no_hole: bool,
        _fua: bool,
    ) -> Result<(), ExportError> {
        Ok(())
    }

    async fn discard(&self, _offset: u64, _length: u32, _fua: bool) -> Result<(), ExportError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }

    async fn block_status(
        &self,
        _offset: u64,
        _length: u32,
        _limit: usize,
    ) -> Result<Vec<Extent>, ExportError> {
        Ok(Vec::new())
    }
}

impl Exports for OneExport {
    type Export = Disk;

    fn names(&self) -> Vec<String> {
        vec!["vm".to_owned()]
    }

    fn get(&self, name: &str) -> Option<Arc<Disk>> {
        (name == "vm").then(|| self.0.clone())
    }
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn acceptor() -> TlsAcceptor {
    crate::tls::acceptor(&testdata("server-cert.pem"), &testdata("server-key.pem"))
        .expect("the test identity loads")
}

/// A client that trusts the test CA.
fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(testdata("ca-cert.pem")).expect("read the test CA");
    roots.add(ca).expect("add the test CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Served = Result<Outcome<Disk, DuplexStream>, HandshakeError>;

/// Runs the server's handshake on one end of a pipe; returns the other.
fn start(tls: Option<TlsAcceptor>) -> (DuplexStream, JoinHandle<Served>) {
    let (client, server) = duplex(1 << 16);
    let exports = OneExport(Arc::new(Disk));
    let task = tokio::spawn(async move { negotiate(server, &exports, tls.as_ref()).await });
    (client, task)
}

/// Reads the greeting and answers with `flags`.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S, flags: u32) {
    assert_eq!(c.read_u64().await.expect("NBDMAGIC"), proto::NBDMAGIC);
    assert_eq!(c.read_u64().await.expect("IHAVEOPT"), proto::IHAVEOPT);
    let server = c.read_u16().await.expect("server flags");
    assert_ne!(server & proto::FLAG_FIXED_NEWSTYLE, 0, "fixed newstyle");
    c.write_u32(flags).await.expect("client flags");
}

const FIXED: u32 = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;

async fn send_option<S: AsyncWrite + Unpin>(c: &mut S, option: u32, data: &[u8]) {
    c.write_u64(proto::IHAVEOPT).await.expect("write");
    c.write_u32(option).await.expect("write");
    c.write_u32(data.len() as u32).await.expect("write");
    c.write_all(data).await.expect("write");
    c.flush().await.expect("flush");
}

/// One option reply: (option, type, data).
async fn reply<S: AsyncRead + Unpin>(c: &mut S) -> (u32, u32, Vec<u8>) {
    assert_eq!(c.read_u64().await.expect("reply magic"), proto::REPLY_MAGIC);
    let option = c.read_u32().await.expect("option");
    let kind = c.read_u32().await.expect("type");
    let mut data = vec![0; c.read_u32().await.expect("length") as usize];
    c.read_exact(&mut data).await.expect("data");
    (option, kind, data)
}

/// Sends `option` and returns the type of its one reply.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S, option: u32, data: &[u8]) -> u32 {
    send_option(c, option, data).await;
    let (answered, kind, _) = reply(c).await;
    assert_eq!(answered, option, "the reply names the option");
    kind
}

/// The data of `NBD_OPT_GO` / `NBD_OPT_INFO` for `name`, no info asked.
fn go_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d
}

/// Sends `NBD_OPT_GO` for `vm` and reads the replies up to the `ACK`.
async fn go<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S) {
    send_option(c, opt::GO, &go_data("vm")).await;
    loop {
        let (option, kind, _) = reply(c).await;
        assert_eq!(option, opt::GO);
        match kind {
            rep::INFO => {}
            rep::ACK => return,
            other => panic!("NBD_OPT_GO got reply {other:#x}"),
        }
    }
}

#[tokio::test]
async fn tls_required_refuses_every_option_before_starttls_then_haggles_inside_tls() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, FIXED).await;
    for (option, data) in [
        (opt::LIST, Vec::new()),
        (opt::GO, go_data("vm")),
        (opt::INFO, go_data("vm")),
        (opt::STRUCTURED_REPLY, Vec::new()),
        (opt::LIST_META_CONTEXT, Vec::new()),
        (42, b"unknown".to_vec()),
    ] {
        let kind = ask(&mut c, option, &data).await;
        assert_eq!(kind, rep::ERR_TLS_REQD, "option {option} before STARTTLS");
    }
    // The refusals left the connection usable: STARTTLS is accepted.
    assert_eq!(ask(&mut c, opt::STARTTLS, &[]).await, rep::ACK);
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut tls = connector()
        .connect(name, c)
        .await
        .expect("the TLS handshake succeeds");

    assert_eq!(
        ask(&mut tls, opt::STARTTLS, &[]).await,
        rep::ERR_INVALID,
        "a second STARTTLS"
    );
    send_option(&mut tls, opt::LIST, &[]).await;
    let (_, kind, data) = reply(&mut tls).await;
    assert_eq!(kind, rep::SERVER);
    assert_eq!(data, proto::server_data("vm"));
    assert_eq!(reply(&mut tls).await.1, rep::ACK);
    assert_eq!(
        ask(&mut tls, opt::STRUCTURED_REPLY, &[]).await,
        rep::ACK,
        "structured replies, negotiated inside TLS"
    );
    go(&mut tls).await;

    match server.await.expect("the server task") {
        Ok(Outcome::Transmit {
            negotiated,
            stream: Either::Right(_),
        }) => {
            assert_eq!(negotiated.name, "vm");
            assert!(negotiated.structured);
        }
        Ok(Outcome::Transmit { .. }) => panic!("transmission must go on inside TLS"),
        Ok(Outcome::Aborted) => panic!("the client did not abort"),
        Err(e) => panic!("the handshake failed: {e}"),
    }
}

#[tokio::test]
async fn export_name_before_starttls_closes_the_connection() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, FIXED).await;
    send_option(&mut c, opt::EXPORT_NAME, b"vm").await;
    let ended = server.await.expect("the server task");
    assert!(
        matches!(ended, Err(HandshakeError::TlsRequired(opt::EXPORT_NAME))),
        "{:?}",
        ended.err()
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.expect("read to the end");
    assert!(rest.is_empty(), "nothing is sent before closing: {rest:?}");
}

#[tokio::test]
async fn starttls_with_data_closes_the_connection_when_tls_is_required() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, FIXED).await;
    send_option(&mut c, opt::STARTTLS, b"x").await;
    let ended = server.await.expect("the server task");
    assert!(
        matches!(ended, Err(HandshakeError::StartTlsData(1))),
        "{:?}",
        ended.err()
    );
}

#[tokio::test]
async fn abort_before_starttls_is_acknowledged() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, FIXED).await;
    assert_eq!(ask(&mut c, opt::ABORT, &[]).await, rep::ACK);
    let ended = server.await.expect("the server task");
    assert!(matches!(ended, Ok(Outcome::Aborted)), "{:?}", ended.err());
}

#[tokio::test]
async fn a_client_without_fixed_newstyle_gets_nothing_when_tls_is_required() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, 0).await;
    send_option(&mut c, opt::EXPORT_NAME, b"vm").await;
    let ended = server.await.expect("the server task");
    assert!(
        matches!(ended, Err(HandshakeError::NotFixedNewstyle(_))),
        "{:?}",
        ended.err()
    );
}

#[tokio::test]
async fn a_failed_tls_handshake_closes_the_connection() {
    let (mut c, server) = start(Some(acceptor()));
    greet(&mut c, FIXED).await;
    assert_eq!(ask(&mut c, opt::STARTTLS, &[]).await, rep::ACK);
    c.write_all(b"this is not a TLS ClientHello\r\n")
        .await
        .expect("write");
    let ended = server.await.expect("the server task");
    assert!(
        matches!(ended, Err(HandshakeError::Tls(_))),
        "{:?}",
        ended.err()
    );
}

#[tokio::test]
async fn without_tls_starttls_is_refused_by_policy_and_the_connection_goes_on() {
    let (mut c, server) = start(None);
    greet(&mut c, FIXED).await;
    assert_eq!(ask(&mut c, opt::STARTTLS, &[]).await, rep::ERR_POLICY);
    assert_eq!(ask(&mut c, opt::STARTTLS, b"x").await, rep::ERR_INVALID);
    go(&mut c).await;
    let ended = server.await.expect("the server task");
    assert!(
        matches!(
            ended,
            Ok(Outcome::Transmit {
                stream: Either::Left(_),
                ..
            })
        ),
        "{:?}",
        ended.err()
    );
}
