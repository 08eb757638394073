//! The HTTP face of quorum: config, API, events.
//!
//! `quorum-server` reads a TOML config ([`config`]), opens each volume's
//! children through `quorum-backends` and the volume through `quorum-core`
//! ([`server`]), and serves the HTTP API of SPEC section 4 ([`api`]) with
//! axum on tokio, and the volumes over NBD ([`nbd`], the protocol being
//! `quorum-nbd`'s, on the TCP and Unix listeners of [`nbd_listen`]). The engine is synchronous; [`bridge`] is the one place
//! where async handlers (and NBD requests) call it. Errors are mapped to statuses in one place
//! ([`error`]); the event log ([`events`]) numbers, persists and streams
//! what the engine reports (rate-limited by [`fold`]), and [`telemetry`]
//! keeps every metric. The
//! volume's background jobs ([`jobs`]: scrubs, and the [`resync`]) are
//! workers of one shape ([`background`]), each on its own thread. The
//! operator's controls of SPEC 11 ([`controls`]: I/O limits in
//! [`throttle`], the error policy in [`suspend`], [`stats`], scheduled
//! scrubs) sit on the one path of every data request, [`io`]. The
//! dashboard (`dashboard/` at the repository root) is embedded and served at
//! `/`. This crate knows no backend internals.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;

pub mod api;
pub mod background;
pub mod bridge;
pub mod budget;
pub mod config;
pub mod controls;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod fold;
pub mod io;
pub mod jobs;
pub mod listener;
pub mod membership;
pub mod nbd;
pub mod nbd_listen;
pub mod range;
pub mod reopen;
pub mod resync;
pub mod server;
pub mod stats;
pub mod suspend;
pub mod telemetry;
pub mod throttle;

/// The command line of `quorum-server`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "quorum-server",
    version,
    about = "Keeps a virtual disk on several replicas and votes on every read."
)]
pub struct Cli {
    /// The config file (TOML). Without it, the embedded default is served:
    /// one 1 GiB volume "default" on three sparse files under ./quorum-data.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to listen on, overriding the config (127.0.0.1:0 picks a
    /// free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Serve the volumes over NBD on this address, overriding `[nbd]
    /// listen` (127.0.0.1:0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub nbd: Option<SocketAddr>,
}

/// Runs the server the command line asks for, until SIGTERM or Ctrl-C.
///
/// # Errors
/// A config, child or start-up error, as one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging();
    let config = match &cli.config {
        Some(path) => config::Config::load(path)?,
        None => config::Config::embedded_default()?,
    };
    server::run(config, cli.listen, cli.nbd)
}

/// The log filter unless `RUST_LOG` says otherwise. object_store logs each
/// retry at info ("backing off"): quorum reports the child's failure
/// itself, and a store unreachable at start must leave one line on stderr
/// (SPEC 2), not a retry log before it.
const DEFAULT_LOG_FILTER: &str = "info,tower_http=warn,object_store=warn";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
