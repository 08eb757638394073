//! `quorum`: the command line of a quorum-server; see `quorum_cli`.

fn main() -> std::process::ExitCode {
    quorum_cli::main()
}
