//! Accepting NBD connections within bounds, on any kind of listener.
//!
//! A [`Server`] holds what every connection shares: the exports, the TLS
//! identity (when TLS is required), the bounds, and one pool of
//! `max_connections` slots. [`Server::serve`] runs an accept loop on one
//! [`Listen`]er (TCP or Unix; a server may run one loop of each, and they
//! share the slots). Every connection takes a slot (one that finds none is
//! closed at once), must finish its handshake, TLS included, within
//! `handshake_timeout`, and is dropped when a reply waits longer than
//! `write_timeout` for the client to take it, or a write's payload takes
//! longer than `payload_timeout` to arrive. On shutdown the loops stop
//! accepting, handshakes end, and connections in transmission stop reading
//! new requests, answer those in flight and close; [`Server::serve`]
//! returns when every connection has ended.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Exports;
use crate::handshake::{self, Outcome};
use crate::tls::TlsAcceptor;
use crate::transmission;

/// The bounds of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once, over every listener.
    pub max_connections: usize,
    /// The longest a handshake (TLS included) may take.
    pub handshake_timeout: Duration,
    /// The longest a reply may wait for the client to read it.
    pub write_timeout: Duration,
    /// The longest a write's payload may take to arrive once its header
    /// has (and to find room in the budget).
    pub payload_timeout: Duration,
}

/// A source of connections: a TCP or a Unix listener.
pub trait Listen: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Who connected, for logs.
    type Peer: fmt::Debug + Send + 'static;

    /// The next connection, ready to use.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Peer)>> + Send;
}

impl Listen for TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;

    async fn accept(&self) -> io::Result<(Self::Stream, Self::Peer)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Replies are flushed when none is queued; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

impl Listen for UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;

    async fn accept(&self) -> io::Result<(Self::Stream, Self::Peer)> {
        UnixListener::accept(self).await
    }
}

/// What the connections of every listener share.
pub struct Server<X> {
    exports: Arc<X>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    slots: Arc<Semaphore>,
    max: usize,
    shutdown: CancellationToken,
}

impl<X: Exports> Server<X> {
    /// A server of `exports` until `shutdown` is cancelled; with `tls`,
    /// every connection must start TLS before anything else.
    pub fn new(
        exports: Arc<X>,
        tls: Option<TlsAcceptor>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Server<X> {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Server {
            exports,
            tls,
            limits,
            slots: Arc::new(Semaphore::new(max)),
            max,
            shutdown,
        }
    }

    /// Serves connections from `listener` until shutdown, then waits for
    /// every connection (of every listener) to end.
    pub async fn serve<L: Listen>(self: Arc<Self>, listener: L) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => break,
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
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::debug!(
                    ?peer,
                    max = self.max,
                    "nbd: too many connections; closing a new one"
                );
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.connection(stream, peer).await;
                drop(slot);
            });
        }
        drop(listener);
        // Every slot back means every connection ended.
        let _ = self.slots.acquire_many(self.max as u32).await;
    }

    /// One connection, from the handshake to its end.
    async fn connection<S, P>(&self, stream: S, peer: P)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        P: fmt::Debug + Send,
    {
        let limits = self.limits;
        let negotiated = tokio::select! {
            () = self.shutdown.cancelled() => return,
            n = tokio::time::timeout(
                limits.handshake_timeout,
                handshake::negotiate(stream, &*self.exports, self.tls.as_ref()),
            ) => n,
        };
        match negotiated {
            Err(_) => {
                tracing::debug!(?peer, timeout = ?limits.handshake_timeout, "nbd: handshake timed out");
            }
            Ok(Err(e)) => tracing::debug!(?peer, error = %e, "nbd: handshake ended"),
            Ok(Ok(Outcome::Aborted)) => tracing::debug!(?peer, "nbd: the client aborted"),
            Ok(Ok(Outcome::Transmit { negotiated, stream })) => {
                let shutdown = self.shutdown.clone();
                let served = transmission::serve(
                    stream,
                    negotiated,
                    limits.write_timeout,
                    limits.payload_timeout,
                    shutdown,
                );
                if let Err(e) = served.await {
                    tracing::debug!(?peer, error = %e, "nbd: connection ended");
                }
            }
        }
    }
}
