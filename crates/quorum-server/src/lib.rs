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
//! keeps every metric, and the last minutes of each volume's I/O second by
//! second ([`history`]). The
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
pub mod check;
pub mod config;
pub mod controls;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod fold;
pub mod history;
pub mod io;
pub mod jobs;
pub mod listener;
pub mod membership;
pub mod nbd;
pub mod nbd_listen;
pub mod origins;
pub mod process;
pub mod range;
pub mod reopen;
pub mod resync;
#[cfg(test)]
mod resync_caught_up_tests;
pub mod schema;
pub mod server;
pub mod stats;
pub mod suspend;
pub mod telemetry;
#[cfg(test)]
mod test_volume;
pub mod throttle;

/// The environment `quorum-server` reads, and its exit codes, for `--help`.
const AFTER_HELP: &str = "\
Environment:
  QUORUM_TOKEN   the bearer token when the config's [auth] has none
  RUST_LOG       the log filter (default: info), e.g. quorum_server=debug
  AWS_*          defaults of s3 children (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                 AWS_REGION, AWS_ENDPOINT, ...); a child's options win
  NOTIFY_SOCKET  set by systemd (Type=notify): READY=1 is sent once listening

Exit codes:
  0  stopped by SIGTERM or Ctrl-C after a clean shutdown; `check`: the config is fine
  1  the config or a child is refused (one line on stderr naming the volume,
     the child and the problem), or the server failed
  2  the command line is wrong";

/// The command line of `quorum-server`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "quorum-server",
    version,
    about = "Keeps a virtual disk on several replicas and votes on every read.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
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
    /// How log lines are written on stderr: text, or json (one object a
    /// line, for journald or a log shipper).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Instead of serving: `check`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `quorum-server` does instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Checks a config without serving it (like `nginx -t`): every error a
    /// start would refuse, and each child opened read-only (unless
    /// --offline); creates nothing. Prints `config ok: N volumes, M
    /// children`.
    Check(check::CheckArgs),
}

/// The format of the log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Runs the server the command line asks for, until SIGTERM or Ctrl-C.
///
/// # Errors
/// A config, child or start-up error, as one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log_format);
    if let Some(Command::Check(args)) = &cli.command {
        return check::run(args);
    }
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
const DEFAULT_LOG_FILTER: &str = "info,object_store=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => log.try_init(),
        LogFormat::Json => {
            // A panic is a log line too, not the default hook's text.
            std::panic::set_hook(Box::new(log_panic));
            log.json().try_init()
        }
    };
}

/// A panic as one error log line: its message, where, and which thread.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    let location = info.location().map(ToString::to_string);
    let thread = std::thread::current();
    tracing::error!(
        panic = message,
        location,
        thread = thread.name().unwrap_or("(unnamed)"),
        "a thread panicked"
    );
}

/// Says why `quorum-server` stops on an error: `error: MESSAGE` on
/// stderr, or with `--log-format json` an error log line like every other
/// (logging is set up first thing in [`run`]).
pub fn report_fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => tracing::error!("{message}"),
    }
}
