//! Accepting NBD connections within bounds.
//!
//! Every connection takes a slot of `max_connections` (one that finds none
//! is closed at once), must finish its handshake within
//! `handshake_timeout`, and is dropped when a reply waits longer than
//! `write_timeout` for the client to take it. On shutdown the listener
//! stops accepting, handshakes end, and connections in transmission stop
//! reading new requests, answer those in flight and close; [`serve`]
//! returns when every connection has ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Exports;
use crate::handshake::{self, Outcome};
use crate::transmission;

/// The bounds of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// The longest a handshake may take.
    pub handshake_timeout: Duration,
    /// The longest a reply may wait for the client to read it.
    pub write_timeout: Duration,
}

/// Serves `exports` on `listener` until `shutdown` is cancelled, then
/// waits for the connections to end.
pub async fn serve<X: Exports>(
    listener: TcpListener,
    exports: Arc<X>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "nbd: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max, "nbd: too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (exports, shutdown) = (exports.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            let negotiated = tokio::select! {
                () = shutdown.cancelled() => return,
                n = tokio::time::timeout(
                    limits.handshake_timeout,
                    handshake::negotiate(&mut stream, &*exports),
                ) => n,
            };
            match negotiated {
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?limits.handshake_timeout, "nbd: handshake timed out");
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "nbd: handshake ended"),
                Ok(Ok(Outcome::Aborted)) => tracing::debug!(%peer, "nbd: the client aborted"),
                Ok(Ok(Outcome::Transmit(n))) => {
                    if let Err(e) =
                        transmission::serve(stream, n, limits.write_timeout, shutdown).await
                    {
                        tracing::debug!(%peer, error = %e, "nbd: connection ended");
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every slot back means every connection ended.
    let _ = slots.acquire_many(max as u32).await;
}
