//! `quorum-server`: see `quorum_server` for the design, README.md for use.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    quorum_server::run(quorum_server::Cli::parse())
}
