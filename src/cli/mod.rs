//! `quorum`: the command line for people, talking to a quorum-server
//! through its HTTP API (SPEC section 4), as `mc` talks to MinIO or `zpool`
//! to ZFS.
//!
//! The binary (`src/bin/quorum.rs`) only calls [`main`]; this library holds
//! the command line so that `quorum-man` can render its manual pages. Each
//! subcommand is a file: `volumes.rs`, `events.rs` (with `sse.rs`, the
//! stream's parser), `jobs.rs` (scrubs, the job list, cancel),
//! `children.rs`, `transfer/` (import and export); `client.rs` is the one
//! place HTTP is spoken and every failure becomes an [`Error`];
//! `output.rs` draws tables and progress bars. The words the server shows
//! (child and job states, job kinds) are `quorum_core`'s enums, compared
//! through their one string form.

#![deny(missing_docs)]

mod children;
mod client;
mod events;
mod jobs;
mod output;
mod sse;
mod transfer;
mod volumes;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use reqwest::Url;

pub use self::client::{Client, Error};

/// What a command that did not fail found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: exit code 0.
    Ok,
    /// A scrub found blocks without a majority: exit code 3.
    Unrecoverable,
}

/// The exit code of an error (`error: ...` on stderr).
pub const EXIT_ERROR: u8 = 1;
/// The exit code of a command line that cannot be parsed (clap's).
pub const EXIT_USAGE: u8 = 2;
/// The exit code of `scrub --wait` that found unrecoverable blocks.
pub const EXIT_UNRECOVERABLE: u8 = 3;

const AFTER_HELP: &str = "\
Environment:
  QUORUM_URL    the server's URL, as --url
  QUORUM_TOKEN  the bearer token, when neither --token nor --token-file is given

Exit codes:
  0  done
  1  error: the server refused (the line says its status, code and message),
     could not be reached, or a local file failed
  2  the command line is wrong
  3  scrub --wait found unrecoverable blocks (no version had the threshold's votes)";

/// The command line of `quorum`.
#[derive(Debug, Parser)]
#[command(
    name = "quorum",
    version,
    about = "The command line of a quorum-server: volumes, events, scrubs, children, import and export.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The server's URL.
    #[arg(
        long,
        env = "QUORUM_URL",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    pub url: Url,
    /// The bearer token (visible to other users in the process list: prefer
    /// --token-file or QUORUM_TOKEN).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file whose first line is the bearer token.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Give up on one request after this long ("30s", "2m").
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lists the volumes: size, threshold, read pattern, children by state,
    /// stale bytes.
    Volumes(Json),
    /// Shows one volume and its children: backend, state, stale, damaged
    /// (when the server tracks it), lost votes, repairs, errors, uri.
    Volume {
        /// The volume.
        volume: String,
        /// Whether to print JSON.
        #[command(flatten)]
        json: Json,
    },
    /// Prints the event log, oldest first; with --follow, then the events
    /// as they happen, reconnecting (Last-Event-ID) when the connection
    /// drops.
    Events {
        /// Stay and print events as they come (Ctrl-C to stop). Without
        /// --since, only the events from now on.
        #[arg(long, short)]
        follow: bool,
        /// Only the events after this id.
        #[arg(long, value_name = "ID")]
        since: Option<u64>,
        /// Only the events of this volume.
        #[arg(long, value_name = "VOL")]
        volume: Option<String>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// One JSON object a line (SPEC section 6), as the server sends them.
        #[arg(long)]
        json: bool,
    },
    /// Starts a scrub: the whole volume read through the vote in the
    /// background, every lost vote reported (and repaired with --repair).
    Scrub {
        /// The volume.
        volume: String,
        /// Write the winning version back over every lost vote.
        #[arg(long)]
        repair: bool,
        /// Wait for the end with a progress bar, then say what was found;
        /// exit code 3 if unrecoverable blocks were found.
        #[arg(long)]
        wait: bool,
        /// Whether to print JSON.
        #[command(flatten)]
        json: Json,
    },
    /// Lists a volume's jobs: the resync (job 0) and the scrubs.
    Jobs {
        /// The volume.
        volume: String,
        /// Whether to print JSON.
        #[command(flatten)]
        json: Json,
    },
    /// Cancels a scrub.
    Cancel {
        /// The volume.
        volume: String,
        /// The job's id (from `quorum jobs`).
        id: u64,
    },
    /// Adds or removes a child of a volume.
    #[command(subcommand)]
    Child(ChildCommand),
    /// Copies a raw image into a volume, skipping holes; prints its BLAKE3
    /// as b3sum does.
    Import(Transfer),
    /// Copies a volume into a raw image (sparse), skipping holes; prints
    /// its BLAKE3 as b3sum does.
    Export(Transfer),
    /// Prints a shell's completion script (bash: `source <(quorum
    /// completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `--json`.
#[derive(Debug, Clone, Copy, Args)]
pub struct Json {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `quorum child ...`.
#[derive(Debug, Subcommand)]
pub enum ChildCommand {
    /// Adds a child; it is copied (synced) before it votes, and the
    /// command waits for that with a progress bar.
    Add {
        /// The volume.
        volume: String,
        /// The child's name.
        name: String,
        /// Where it lives: a path under the server's child_roots, s3://... or
        /// http://HOST:PORT/v1/volumes/NAME.
        uri: String,
        /// A backend option (aws_endpoint=..., token=...), repeated.
        #[arg(long = "option", short = 'o', value_name = "KEY=VALUE", value_parser = children::key_value)]
        options: Vec<(String, String)>,
        /// Return once the child is added, without waiting for its sync.
        #[arg(long)]
        no_wait: bool,
        /// Stop waiting (exit 1) once the child has been failed this long
        /// with its sync making no progress; the server keeps retrying it.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        stall_timeout: Duration,
    },
    /// Removes a child.
    Remove {
        /// The volume.
        volume: String,
        /// The child's name.
        name: String,
    },
}

/// The arguments of import and export.
#[derive(Debug, Args)]
pub struct Transfer {
    /// The volume.
    pub volume: String,
    /// The raw image, or - for stdin (import) or stdout (export).
    pub file: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// The most bytes one request carries (at most the server's
    /// max_request_bytes): "4MiB".
    #[arg(long, default_value = "4MiB", value_parser = request_size)]
    pub request_size: u64,
}

fn request_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse()?;
    match size.as_u64() {
        n if (4096..=1 << 30).contains(&n) => Ok(n),
        _ => Err(format!("{text} is not within 4KiB..=1GiB")),
    }
}

/// Runs `quorum` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Unrecoverable) => ExitCode::from(EXIT_UNRECOVERABLE),
        Err(e) => {
            let line = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {line}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command met; see [`Error`].
pub fn run(cli: Cli) -> Result<Outcome, Error> {
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "quorum", &mut std::io::stdout());
        return Ok(Outcome::Ok);
    }
    let token = token(&cli)?;
    let client = Client::new(cli.url, token, Some(cli.timeout))?;
    match cli.command {
        Command::Volumes(Json { json }) => volumes::list(&client, json)?,
        Command::Volume {
            volume,
            json: Json { json },
        } => volumes::show(&client, &volume, json)?,
        Command::Events {
            follow,
            since,
            volume,
            count,
            json,
        } => {
            let query = events::Query {
                since,
                volume,
                follow,
                count,
                json,
            };
            events::run(&client, &query)?;
        }
        Command::Scrub {
            volume,
            repair,
            wait,
            json: Json { json },
        } => return jobs::scrub(&client, &volume, repair, wait, json),
        Command::Jobs {
            volume,
            json: Json { json },
        } => jobs::list(&client, &volume, json)?,
        Command::Cancel { volume, id } => jobs::cancel(&client, &volume, id)?,
        Command::Child(ChildCommand::Add {
            volume,
            name,
            uri,
            options,
            no_wait,
            stall_timeout,
        }) => {
            let wait = (!no_wait).then_some(stall_timeout);
            children::add(&client, &volume, &name, &uri, &options, wait)?
        }
        Command::Child(ChildCommand::Remove { volume, name }) => {
            children::remove(&client, &volume, &name)?;
        }
        Command::Import(t) => transfer::import(&client, &t.volume, &t.file, tuning(&t))?,
        Command::Export(t) => {
            if t.file == "-" && std::io::stdout().is_terminal() {
                return Err(Error::Invalid(
                    "refusing to write a volume to a terminal: give a file, or redirect stdout"
                        .into(),
                ));
            }
            transfer::export(&client, &t.volume, &t.file, tuning(&t))?;
        }
        Command::Completions { .. } => {}
    }
    Ok(Outcome::Ok)
}

fn tuning(t: &Transfer) -> transfer::Tuning {
    transfer::Tuning {
        jobs: usize::from(t.jobs),
        request_bytes: t.request_size,
    }
}

/// The token: --token, the first line of --token-file, or QUORUM_TOKEN;
/// one a server could never take (a control character, such as the
/// carriage return of a file written on Windows) is refused here, naming
/// where it came from, rather than failing every request.
fn token(cli: &Cli) -> Result<Option<String>, Error> {
    let (token, source) = if let Some(token) = &cli.token {
        (token.clone(), "--token".to_string())
    } else if let Some(path) = &cli.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read the token file {}", path.display()), e))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(Error::Invalid(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        (
            token.to_owned(),
            format!("the token file {}", path.display()),
        )
    } else {
        match std::env::var("QUORUM_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => (token, "QUORUM_TOKEN".to_string()),
            None => return Ok(None),
        }
    };
    quorum_server::config::check_token(&token)
        .map_err(|e| Error::Invalid(format!("the token of {source}: {e}")))?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn request_sizes_are_bounded() {
        assert_eq!(request_size("4MiB"), Ok(4 << 20));
        assert!(request_size("1KiB").is_err());
        assert!(request_size("2GiB").is_err());
        assert!(request_size("lots").is_err());
    }
}
