//! `quorum-server`: see `quorum_server` for the design, README.md for use.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = quorum_server::Cli::parse();
    let format = cli.log_format;
    match quorum_server::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the sources' messages hold.
            let message = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            quorum_server::report_fatal(format, &message);
            ExitCode::FAILURE
        }
    }
}
