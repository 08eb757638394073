//! Accepting HTTP connections within bounds.
//!
//! `axum::serve` has no limit on connections and no deadline on a request
//! head, so 20,000 clients that each send 7 bytes exhaust the server's file
//! descriptors. Here every connection takes a slot of `max_connections`
//! (one that finds none is closed at once), its request head must arrive
//! within `header_timeout`, and a write that the client does not take
//! within `body_timeout` ends the connection, so a client that stops
//! reading a response holds nothing for longer.
//!
//! # What "does not take" means
//!
//! The write timeout (`tokio_io_timeout`) restarts whenever a write
//! completes. Left alone, the kernel lets the server queue up to its whole
//! send buffer (autotuned to 4 MiB) and reports the socket writable again
//! only once half of that is gone: a client that reads steadily at 64 KiB/s
//! would make no "progress" for 30 s and be cut off. Each accepted socket
//! therefore gets `TCP_NOTSENT_LOWAT` = [`NOTSENT_LOWAT`]: the kernel keeps
//! at most that much unsent and reports the socket writable as soon as the
//! client has taken about half of it, so a write completes every time the
//! client takes about [`NOTSENT_LOWAT`] bytes (on loopback, whose segments
//! are 64 KiB, the receive window opens in steps of that size: measured,
//! one write for every 128 KiB the client reads). A client is dropped when
//! it takes less than that in `body_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

/// The most unsent bytes the kernel keeps for a connection
/// (`TCP_NOTSENT_LOWAT`); see the module docs.
const NOTSENT_LOWAT: u32 = 64 << 10;

/// The bounds of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// The longest a request head may take to arrive.
    pub header_timeout: Duration,
    /// The longest a write may wait for the client to read.
    pub write_timeout: Duration,
}

/// Raises the soft limit of open files toward the hard one, so that
/// `max_connections` connections (plus the children's files and the
/// server's own) fit; says so when they cannot.
pub fn raise_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = max_connections as u64 + 1024;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let set = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        },
    );
    let effective = if set.is_ok() { raised } else { current };
    if effective < wanted {
        tracing::warn!(
            open_files = effective,
            max_connections,
            "the open-file limit is below max_connections plus 1024; new connections may be refused with EMFILE under load"
        );
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits for
/// the connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: wait a moment instead of
                // spinning on the same error.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "too many connections; closing a new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NOTSENT_LOWAT");
        }
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
