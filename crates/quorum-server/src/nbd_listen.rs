//! Where NBD is served (SPEC section 9): a TCP address, a Unix socket, or
//! both, with the same exports, TLS policy and connection cap.
//!
//! Everything that can be refused is checked before the volumes open, so
//! that a bad `[nbd]` table changes nothing: the TLS files are read and
//! checked, and the listeners bound. A Unix socket path that holds a
//! socket nobody listens on (left by a server that died) is replaced; one
//! that a live server listens on, or a path that is not a socket, is
//! refused. The socket file is removed when the server stops, unless
//! another file has taken its place meanwhile.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use quorum_nbd::server::{Limits, Server};
use quorum_nbd::tls::{self, TlsAcceptor};
use rustix::fs::Access;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::NbdConfig;
use crate::nbd::NbdExports;

/// The NBD listeners, bound, and the TLS identity, loaded.
pub struct NbdListeners {
    tcp: Option<std::net::TcpListener>,
    unix: Option<(UnixListener, SocketFile)>,
    tls: Option<TlsAcceptor>,
}

impl NbdListeners {
    /// Loads the TLS identity and binds every listener of `config`.
    ///
    /// # Errors
    /// One line naming the file, the path or the address at fault.
    pub fn bind(config: &NbdConfig) -> anyhow::Result<NbdListeners> {
        let tls = config
            .tls
            .as_ref()
            .map(|t| tls::acceptor(&t.cert, &t.key))
            .transpose()
            .map_err(|e| anyhow!("[nbd.tls] {e}"))?;
        let tcp = config
            .listen
            .map(|addr| {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen for NBD on {addr}"))?;
                l.set_nonblocking(true)
                    .context("cannot make the NBD listener non-blocking")?;
                Ok::<_, anyhow::Error>(l)
            })
            .transpose()?;
        let unix = config.socket.as_deref().map(bind_unix).transpose()?;
        Ok(NbdListeners { tcp, unix, tls })
    }

    /// What [`NbdListeners::bind`] would refuse, found without binding or
    /// removing anything (for `quorum-server check`): the TLS files are
    /// read and checked; a Unix socket's path must be free or a socket, in
    /// a directory this process may write. A TCP address is not tried.
    ///
    /// # Errors
    /// As [`NbdListeners::bind`].
    pub fn check(config: &NbdConfig) -> anyhow::Result<()> {
        if let Some(t) = &config.tls {
            tls::acceptor(&t.cert, &t.key).map_err(|e| anyhow!("[nbd.tls] {e}"))?;
        }
        let Some(path) = config.socket.as_deref() else {
            return Ok(());
        };
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {}
            Ok(_) => return Err(not_a_socket(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("nbd socket {shown}: {e}")),
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)
            .map_err(io::Error::from)
            .with_context(|| {
                format!(
                    "cannot listen for NBD on {shown}: {} cannot be written",
                    dir.display()
                )
            })
    }

    /// Serves `exports` on every listener until `shutdown`; prints one
    /// stdout line per listener, `nbd listening on nbd://ADDR` and
    /// `nbd listening on nbd+unix:///?socket=PATH`. Runs inside the
    /// runtime.
    ///
    /// # Errors
    /// A listener the runtime cannot take.
    pub fn start(
        self,
        exports: Arc<NbdExports>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> anyhow::Result<NbdServing> {
        let tls = if self.tls.is_some() {
            "required"
        } else {
            "off"
        };
        let server = Arc::new(Server::new(exports, self.tls, limits, shutdown));
        let mut tasks = Vec::new();
        if let Some(l) = self.tcp {
            let bound = l
                .local_addr()
                .context("cannot read the bound NBD address")?;
            let l = tokio::net::TcpListener::from_std(l)
                .context("cannot serve NBD on the bound address")?;
            println!("nbd listening on nbd://{bound}");
            tracing::info!(%bound, tls, "nbd listening");
            tasks.push(tokio::spawn(server.clone().serve(l)));
        }
        let mut socket = None;
        if let Some((l, file)) = self.unix {
            l.set_nonblocking(true)
                .context("cannot make the NBD socket non-blocking")?;
            let l = tokio::net::UnixListener::from_std(l)
                .context("cannot serve NBD on the bound socket")?;
            println!(
                "nbd listening on nbd+unix:///?socket={}",
                file.path.display()
            );
            tracing::info!(socket = %file.path.display(), tls, "nbd listening");
            tasks.push(tokio::spawn(server.clone().serve(l)));
            socket = Some(file);
        }
        Ok(NbdServing { tasks, socket })
    }
}

/// The NBD accept loops, running.
pub struct NbdServing {
    tasks: Vec<JoinHandle<()>>,
    /// Removed once the loops have ended (or when dropped, however the
    /// server stops).
    socket: Option<SocketFile>,
}

impl NbdServing {
    /// Waits for every loop and its connections to end (after shutdown),
    /// then removes the socket file.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the NBD server task failed");
            }
        }
        drop(self.socket);
    }
}

/// A Unix socket file this server bound, removed when dropped if it is
/// still the same file.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    /// Device and inode, to tell our socket from one put in its place.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the NBD socket");
            }
        }
    }
}

/// Binds the Unix socket at `path`, replacing a stale one.
/// The refusal of a socket path that holds something else.
fn not_a_socket(path: &Path) -> anyhow::Error {
    anyhow!(
        "nbd socket {}: the path exists and is not a socket; remove it, or choose another path",
        path.display()
    )
}

fn bind_unix(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(anyhow!(
                    "nbd socket {shown}: a running server listens on it; stop it, or choose another path"
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %shown, "replacing a stale NBD socket");
                std::fs::remove_file(path).with_context(|| {
                    format!("nbd socket {shown}: cannot remove the stale socket")
                })?;
            }
            Err(e) => {
                return Err(anyhow!(
                    "nbd socket {shown}: a socket is there and cannot be checked: {e}"
                ));
            }
        },
        Ok(_) => return Err(not_a_socket(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("nbd socket {shown}: {e}")),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen for NBD on {shown}"))?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("nbd socket {shown}: cannot read it after binding"))?;
    let file = SocketFile {
        path: path.to_owned(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((listener, file))
}
