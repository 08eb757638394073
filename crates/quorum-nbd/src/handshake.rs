//! The handshake: fixed newstyle negotiation, as a loop over options with
//! one reply (or one list of replies) per option, the way qemu's
//! `nbd/server.c` `nbd_negotiate_options` answers them.
//!
//! Served: `EXPORT_NAME`, `GO`, `INFO` (`EXPORT`, `NAME`, `DESCRIPTION`,
//! `BLOCK_SIZE`), `LIST`, `ABORT`, `STRUCTURED_REPLY`,
//! `LIST_META_CONTEXT` / `SET_META_CONTEXT` with `base:allocation`, and
//! `STARTTLS`. Any other option (QEMU 10 asks for `EXTENDED_HEADERS`
//! first) gets `NBD_REP_ERR_UNSUP` and the client may go on. What cannot
//! be answered ends the connection: bad magic, unknown client flags,
//! option data longer than [`MAX_OPTION_DATA`], an unknown export after
//! `EXPORT_NAME` (which has no error reply).
//!
//! # TLS
//! Without a [`TlsAcceptor`], `STARTTLS` is refused by policy
//! (`NBD_REP_ERR_POLICY`, as qemu answers when it has no TLS credentials)
//! and the connection stays usable. With one, TLS is required on every
//! connection (the protocol's FORCEDTLS mode, qemu's with `tls-creds`):
//! before TLS, every option but `STARTTLS` and `ABORT` gets
//! `NBD_REP_ERR_TLS_REQD` and `EXPORT_NAME`, which cannot be refused,
//! ends the connection; `STARTTLS` gets `NBD_REP_ACK`, the TLS handshake
//! follows on the same socket, and the options go on inside TLS, where a
//! second `STARTTLS` gets `NBD_REP_ERR_INVALID`.

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::either::Either;

use crate::proto::{self, InfoRequest, MetaRequest, OptionHeader, ProtoError, info, opt, rep};
use crate::tls::{MaybeTls, TlsAcceptor};
use crate::{Export, Exports};

/// The most option data read; longer options end the connection (the
/// longest legitimate one, a meta context query list, is far shorter).
pub const MAX_OPTION_DATA: u32 = 64 << 10;
/// The most options one handshake may send.
pub const MAX_OPTIONS: usize = 1024;

/// Why a handshake ended without transmission.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// `NBD_OPT_EXPORT_NAME` named no export (the protocol has no error
    /// reply for it).
    #[error("no export named {0:?}")]
    UnknownExport(String),
    /// A client without fixed newstyle sent an option other than
    /// `NBD_OPT_EXPORT_NAME`.
    #[error("option {0} from a client without fixed newstyle")]
    NotFixedNewstyle(u32),
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// `NBD_OPT_EXPORT_NAME` before TLS on a server that requires it (the
    /// option has no error reply).
    #[error("option {0} before STARTTLS on a server that requires TLS")]
    TlsRequired(u32),
    /// `NBD_OPT_STARTTLS` with data, on a server that requires TLS: the
    /// client cannot start TLS correctly, so nothing else could follow.
    #[error("NBD_OPT_STARTTLS with {0} bytes of data")]
    StartTlsData(u32),
    /// The TLS handshake after `NBD_OPT_STARTTLS` failed.
    #[error("tls handshake: {0}")]
    Tls(io::Error),
}

/// What the handshake agreed on.
pub struct Negotiated<E> {
    /// The export's canonical name.
    pub name: String,
    /// The export.
    pub export: Arc<E>,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub base_allocation: bool,
}

/// How a handshake ended.
pub enum Outcome<E, S> {
    /// Enter transmission on `stream` (plain, or TLS after `STARTTLS`).
    Transmit {
        /// What was agreed.
        negotiated: Negotiated<E>,
        /// The connection, to carry on with.
        stream: MaybeTls<S>,
    },
    /// The client aborted.
    Aborted,
}

/// Runs the handshake on `stream` over `exports`; with `tls`, TLS is
/// required before anything else (see the module docs).
///
/// # Errors
/// [`HandshakeError`]: the connection is to be closed.
pub async fn negotiate<S, X>(
    stream: S,
    exports: &X,
    tls: Option<&TlsAcceptor>,
) -> Result<Outcome<X::Export, S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    X: Exports,
{
    let mut stream: MaybeTls<S> = Either::Left(stream);
    let mut hello = BytesMut::with_capacity(18);
    hello.put_u64(proto::NBDMAGIC);
    hello.put_u64(proto::IHAVEOPT);
    hello.put_u16(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES);
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let client = stream.read_u32().await?;
    let known = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    if client & !known != 0 {
        return Err(ProtoError::ClientFlags(client).into());
    }
    let fixed = client & proto::FLAG_C_FIXED_NEWSTYLE != 0;
    let no_zeroes = client & proto::FLAG_C_NO_ZEROES != 0;

    let mut state = State::default();
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; OptionHeader::SIZE];
        stream.read_exact(&mut head).await?;
        let OptionHeader { option, length } = OptionHeader::decode(&head)?;
        if length > MAX_OPTION_DATA {
            return Err(ProtoError::OptionTooLong {
                option,
                length,
                max: MAX_OPTION_DATA,
            }
            .into());
        }
        let mut data = vec![0u8; length as usize];
        stream.read_exact(&mut data).await?;
        tracing::debug!(option, length, "nbd option");
        let secure = matches!(stream, Either::Right(_));
        if let Some(acceptor) = tls.filter(|_| !secure) {
            if !fixed {
                return Err(HandshakeError::NotFixedNewstyle(option));
            }
            match option {
                opt::STARTTLS if length > 0 => return Err(HandshakeError::StartTlsData(length)),
                opt::STARTTLS => {
                    send(&mut stream, option, rep::ACK, &[]).await?;
                    stream = match stream {
                        Either::Left(plain) => Either::Right(Box::new(
                            acceptor.accept(plain).await.map_err(HandshakeError::Tls)?,
                        )),
                        upgraded => upgraded,
                    };
                    // Nothing negotiated before TLS carries over.
                    state = State::default();
                    tracing::debug!("nbd: tls started");
                    continue;
                }
                opt::EXPORT_NAME => return Err(HandshakeError::TlsRequired(option)),
                opt::ABORT => {}
                _ => {
                    let message = format!("option {option} is not permitted before STARTTLS");
                    send(&mut stream, option, rep::ERR_TLS_REQD, message.as_bytes()).await?;
                    continue;
                }
            }
        }
        if !fixed && option != opt::EXPORT_NAME {
            return Err(HandshakeError::NotFixedNewstyle(option));
        }
        match option {
            opt::EXPORT_NAME => {
                let asked = String::from_utf8_lossy(&data).into_owned();
                let Some((name, export)) = exports.resolve(&asked) else {
                    return Err(HandshakeError::UnknownExport(asked));
                };
                let reply = proto::export_name_reply(export.size(), proto::EXPORT_FLAGS, no_zeroes);
                stream.write_all(&reply).await?;
                stream.flush().await?;
                return Ok(Outcome::Transmit {
                    negotiated: state.negotiated(name, export),
                    stream,
                });
            }
            opt::ABORT => {
                // The client may not wait for the answer.
                let _ = send(&mut stream, option, rep::ACK, &[]).await;
                return Ok(Outcome::Aborted);
            }
            opt::LIST => {
                if !data.is_empty() {
                    invalid(&mut stream, option, "NBD_OPT_LIST takes no data").await?;
                    continue;
                }
                for name in exports.names() {
                    send(&mut stream, option, rep::SERVER, &proto::server_data(&name)).await?;
                }
                send(&mut stream, option, rep::ACK, &[]).await?;
            }
            opt::STARTTLS => {
                let (kind, message) = if length > 0 {
                    (rep::ERR_INVALID, "NBD_OPT_STARTTLS takes no data")
                } else if secure {
                    (rep::ERR_INVALID, "TLS is already started")
                } else {
                    (rep::ERR_POLICY, "TLS is not configured on this server")
                };
                send(&mut stream, option, kind, message.as_bytes()).await?;
            }
            opt::INFO | opt::GO => {
                let request = match InfoRequest::decode(&data) {
                    Ok(r) => r,
                    Err(e) => {
                        invalid(&mut stream, option, &e.to_string()).await?;
                        continue;
                    }
                };
                let Some((name, export)) = exports.resolve(&request.name) else {
                    unknown(&mut stream, option, &request.name).await?;
                    continue;
                };
                send_info(&mut stream, option, &name, &*export, &request.items).await?;
                send(&mut stream, option, rep::ACK, &[]).await?;
                if option == opt::GO {
                    return Ok(Outcome::Transmit {
                        negotiated: state.negotiated(name, export),
                        stream,
                    });
                }
            }
            opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    invalid(
                        &mut stream,
                        option,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    )
                    .await?;
                } else if state.structured {
                    invalid(
                        &mut stream,
                        option,
                        "structured replies are already negotiated",
                    )
                    .await?;
                } else {
                    state.structured = true;
                    send(&mut stream, option, rep::ACK, &[]).await?;
                }
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                let listing = option == opt::LIST_META_CONTEXT;
                if !listing {
                    // A selection replaces the last one, even when it fails.
                    state.meta = None;
                }
                if !state.structured {
                    invalid(&mut stream, option, "negotiate structured replies first").await?;
                    continue;
                }
                let request = match MetaRequest::decode(&data) {
                    Ok(r) => r,
                    Err(e) => {
                        invalid(&mut stream, option, &e.to_string()).await?;
                        continue;
                    }
                };
                let Some((name, _)) = exports.resolve(&request.name) else {
                    unknown(&mut stream, option, &request.name).await?;
                    continue;
                };
                if request.matches_base_allocation(listing) {
                    let data =
                        proto::meta_context_data(proto::BASE_ALLOCATION_ID, proto::BASE_ALLOCATION);
                    send(&mut stream, option, rep::META_CONTEXT, &data).await?;
                    if !listing {
                        state.meta = Some(name);
                    }
                }
                send(&mut stream, option, rep::ACK, &[]).await?;
            }
            _ => {
                let message = format!("option {option} is not supported by quorum");
                send(&mut stream, option, rep::ERR_UNSUP, message.as_bytes()).await?;
            }
        }
    }
    Err(HandshakeError::TooManyOptions)
}

/// What earlier options changed.
#[derive(Default)]
struct State {
    structured: bool,
    /// The export `base:allocation` was selected for.
    meta: Option<String>,
}

impl State {
    fn negotiated<E>(self, name: String, export: Arc<E>) -> Negotiated<E> {
        let base_allocation = self.structured && self.meta.as_deref() == Some(name.as_str());
        Negotiated {
            name,
            export,
            structured: self.structured,
            base_allocation,
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    stream
        .write_all(&proto::option_reply(option, kind, data))
        .await?;
    stream.flush().await
}

async fn invalid<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
    message: &str,
) -> io::Result<()> {
    send(stream, option, rep::ERR_INVALID, message.as_bytes()).await
}

async fn unknown<S: AsyncWrite + Unpin>(stream: &mut S, option: u32, name: &str) -> io::Result<()> {
    let message = if name.is_empty() {
        "the empty export name selects the volume only when there is exactly one; name a volume"
            .to_owned()
    } else {
        format!("no volume named {name:?}; NBD_OPT_LIST lists them")
    };
    send(stream, option, rep::ERR_UNKNOWN, message.as_bytes()).await
}

/// The `NBD_REP_INFO` replies of `INFO` and `GO`: the export always (the
/// protocol requires it), the name and block sizes always (as qemu does),
/// the description when asked.
async fn send_info<S: AsyncWrite + Unpin, E: Export>(
    stream: &mut S,
    option: u32,
    name: &str,
    export: &E,
    items: &[u16],
) -> io::Result<()> {
    let export_info = proto::info_export(export.size(), proto::EXPORT_FLAGS);
    send(stream, option, rep::INFO, &export_info).await?;
    send(
        stream,
        option,
        rep::INFO,
        &proto::info_string(info::NAME, name),
    )
    .await?;
    if items.contains(&info::DESCRIPTION) {
        let description = export.description();
        if !description.is_empty() {
            let data = proto::info_string(info::DESCRIPTION, &description);
            send(stream, option, rep::INFO, &data).await?;
        }
    }
    send(stream, option, rep::INFO, &proto::info_block_size()).await
}

#[cfg(test)]
mod tests;
