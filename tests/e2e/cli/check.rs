//! `quorum-server check --config FILE [--offline]`: every config a start
//! refuses is refused the same way, without starting and without creating
//! anything; unreachable children are found unless `--offline`.

use std::fs;

use super::{Ran, run_in};
use crate::util::*;

/// `quorum-server check ARGS...` in `sandbox`.
fn check(sandbox: &Sandbox, args: &[&str]) -> Ran {
    let mut all = vec!["check"];
    all.extend(args);
    run_in(sandbox, &bin(), &all, &[], None)
}

/// The names in the sandbox but its logs: what a check left behind.
fn entries(sandbox: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sandbox.file(""))
        .expect("list the sandbox")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "logs")
        .collect();
    names.sort();
    names
}

/// Each bad config of the start-up tests: refused by `check` with the
/// start's one line and a non-zero exit, and nothing created (no child
/// file, no data_dir). With `--offline`, the errors only the children show
/// pass. All cases run; the failures are reported together.
#[test]
fn check_refuses_what_a_start_refuses_and_creates_nothing() {
    let mut problems = Vec::new();
    for case in bad_configs() {
        let sandbox = bad_config_sandbox();
        let config = sandbox.write_config(&case.config).display().to_string();
        let before = entries(&sandbox);
        let ran = check(&sandbox, &["--config", &config]);
        let stderr = ran.stderr.trim();
        if ran.status.code() != Some(1) {
            problems.push(format!("{}: exited with {}", case.what, ran.status));
        }
        if stderr.lines().count() != 1 || !stderr.starts_with("error: ") {
            problems.push(format!(
                "{}: stderr is not one error line: {stderr:?}",
                case.what
            ));
        }
        for w in &case.words {
            if !stderr.contains(w) {
                problems.push(format!(
                    "{}: stderr does not say {w:?}: {stderr:?}",
                    case.what
                ));
            }
        }
        if entries(&sandbox) != before {
            problems.push(format!(
                "{}: check created {:?}",
                case.what,
                entries(&sandbox)
            ));
        }
        let offline = check(&sandbox, &["--config", &config, "--offline"]);
        match (case.found_by_opening, offline.status.code()) {
            (true, Some(0)) if offline.stdout().starts_with("config ok: ") => {}
            (false, Some(1)) => {}
            (_, code) => problems.push(format!(
                "{} --offline: exit {code:?}, stdout {:?}, stderr {:?}",
                case.what,
                offline.stdout(),
                offline.stderr
            )),
        }
        if entries(&sandbox) != before {
            problems.push(format!("{} --offline: created files", case.what));
        }
    }
    assert!(problems.is_empty(), "check:\n{}", problems.join("\n"));
}

/// A good config passes (and creates nothing); it still passes while a
/// server serves it (check takes no lock); a missing file is refused.
#[test]
fn a_good_config_passes_even_while_it_is_served() {
    let sandbox = Sandbox::new();
    let config = abc_volume("1MiB", "");
    let path = sandbox.write_config(&config).display().to_string();
    let out = check(&sandbox, &["--config", &path]).ok();
    assert_eq!(out.trim(), "config ok: 1 volume, 3 children");
    assert_eq!(
        entries(&sandbox),
        ["config.toml", "cwd"],
        "check created files"
    );
    let out = check(&sandbox, &["--config", &path, "--offline"]).ok();
    assert_eq!(
        out.trim(),
        "config ok: 1 volume, 3 children (offline: no child opened)"
    );

    let server = sandbox.serve(&config);
    let before = server.snapshot(&ABC);
    let out = check(&server, &["--config", &path]).ok();
    assert_eq!(out.trim(), "config ok: 1 volume, 3 children");
    server.assert_unchanged(&before, "a check beside the server");
    server.write_volume("vm", 0, &pattern(1, 4096));

    let missing = server.file("missing.toml").display().to_string();
    let line = check(&server, &["--config", &missing]).error_line();
    assert!(line.contains("missing.toml"), "{line}");
    // Two children on one file: what a start would refuse.
    let twice = volume(
        "vm",
        "1MiB",
        1,
        "",
        &[
            child("a"),
            "  [[volume.child]]\n  name = \"again\"\n  uri = \"./a.img\"\n".into(),
        ],
    );
    let path = server.write_config(&twice).display().to_string();
    let line = check(&server, &["--config", &path]).error_line();
    assert!(
        line.contains("again") && line.contains("same storage"),
        "{line}"
    );
}

/// A remote or S3 child whose port refuses is refused by `check`, naming
/// the volume and the child, within the start's bounds; `--offline`
/// passes without trying.
#[test]
fn an_unreachable_child_fails_the_check_unless_offline() {
    let refusing = RefusingPort::new();
    let port = refusing.port;
    let http = format!(
        "  [[volume.child]]\n  name = \"far\"\n  uri = \"http://127.0.0.1:{port}/v1/volumes/blk\"\n  options = {{ timeout = \"2s\", connect_timeout = \"500ms\" }}\n"
    );
    let s3 = format!(
        "  [[volume.child]]\n  name = \"far\"\n  uri = \"s3://blocks/vm\"\n  options = {{ aws_endpoint = \"http://127.0.0.1:{port}\", aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = \"k\", aws_secret_access_key = \"s\" }}\n"
    );
    for (what, child_table) in [("http", http), ("s3", s3)] {
        let sandbox = Sandbox::new();
        let config = volume("vm", "1MiB", 2, "", &[child("a"), child("b"), child_table]);
        let path = sandbox.write_config(&config).display().to_string();
        let line = check(&sandbox, &["--config", &path]).error_line();
        assert!(
            line.contains("vm") && line.contains("far") && line.contains(&port.to_string()),
            "{what}: the line should name the volume, the child and its address: {line}"
        );
        let out = check(&sandbox, &["--config", &path, "--offline"]).ok();
        assert!(
            out.starts_with("config ok: 1 volume, 3 children"),
            "{what}: {out}"
        );
        assert_eq!(
            entries(&sandbox),
            ["config.toml", "cwd"],
            "{what}: created files"
        );
    }
}

/// The `[nbd]` table's files: TLS files a start cannot load and socket
/// paths it cannot bind are refused by `check` as by a start (with the
/// words of the start's line), and pass `--offline`, which looks at no
/// file.
#[test]
fn nbd_files_a_start_refuses_fail_the_check() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.file("garbage.pem"), "not PEM at all\n").expect("write");
    fs::write(sandbox.file("taken"), "a file").expect("write");
    let tls = |cert: &str| {
        format!(
            "[nbd]\nlisten = \"127.0.0.1:0\"\n\n[nbd.tls]\ncert = \"{cert}\"\nkey = \"{cert}\"\n"
        )
    };
    let socket = |path: &str| format!("[nbd]\nsocket = \"{path}\"\n");
    let cases = [
        ("a missing certificate", tls("missing.pem"), "missing.pem"),
        (
            "a certificate that is not PEM",
            tls("garbage.pem"),
            "garbage.pem",
        ),
        (
            "a socket in a missing directory",
            socket("no/such/dir/nbd.sock"),
            "no/such/dir/nbd.sock",
        ),
        (
            "a socket path that is a file",
            socket("taken"),
            "not a socket",
        ),
    ];
    let mut problems = Vec::new();
    for (what, nbd, word) in cases {
        let config = format!("{nbd}\n{}", abc_volume("1MiB", ""));
        let refused = sandbox.start_expecting_failure(&config);
        let start = refused.one_line();
        if !start.contains(word) {
            problems.push(format!("{what}: the start's line lacks {word:?}: {start}"));
        }
        let path = sandbox.write_config(&config).display().to_string();
        let ran = check(&sandbox, &["--config", &path]);
        let line = ran.stderr.trim();
        if ran.status.code() != Some(1) || line.lines().count() != 1 || !line.contains(word) {
            problems.push(format!(
                "{what}: check exited {:?}, stderr {line:?}, stdout {:?}",
                ran.status.code(),
                ran.stdout()
            ));
        }
        let offline = check(&sandbox, &["--config", &path, "--offline"]);
        if offline.status.code() != Some(0) {
            problems.push(format!("{what} --offline: {}", offline.stderr));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
