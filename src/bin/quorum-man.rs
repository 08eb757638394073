//! `quorum-man [DIR]`: writes the manual pages of `quorum-server` and
//! `quorum` (one page per subcommand, `quorum-scrub.1`, ...) into DIR,
//! `target/man/` of the workspace by default, with clap_mangen. Run it
//! with `cargo run --bin quorum-man`; read a page with
//! `man -l target/man/quorum.1`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

fn main() -> ExitCode {
    match try_main() {
        Ok(dir) => {
            println!("manual pages written to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<PathBuf> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/man"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for command in [quorum_server::Cli::command(), quorum_cli::Cli::command()] {
        let name = command.get_name().to_owned();
        clap_mangen::generate_to(command, &dir)
            .with_context(|| format!("cannot write the pages of {name} in {}", dir.display()))?;
    }
    Ok(dir)
}
