//! What packaging needs: shell completions that a shell loads, manual
//! pages for both binaries, the systemd unit as `systemd-analyze verify`
//! sees it, and JSON logs.

use std::fs;
use std::process::Command;

use super::{QUORUM, run_in};
use crate::util::*;

/// `quorum completions SHELL` prints a script the shell accepts; bash
/// loads it and completes `quorum`.
#[test]
fn completions_load_in_bash() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run_in(&sandbox, QUORUM, &["completions", shell], &[], None).ok();
        assert!(script.contains("quorum"), "{shell}: {script:?}");
    }
    let script = run_in(&sandbox, QUORUM, &["completions", "bash"], &[], None).ok();
    let path = sandbox.file("quorum.bash");
    fs::write(&path, &script).expect("write the script");
    let path = path.display().to_string();
    run_in(&sandbox, "bash", &["-n", &path], &[], None).ok();
    let loaded = run_in(
        &sandbox,
        "bash",
        &["-c", &format!("source {path} && complete -p quorum")],
        &[],
        None,
    )
    .ok();
    assert!(loaded.contains("quorum"), "{loaded}");
    // The subcommands are offered after `quorum `.
    let words = run_in(
        &sandbox,
        "bash",
        &[
            "-c",
            &format!(
                "source {path}; COMP_WORDS=(quorum ''); COMP_CWORD=1; COMP_LINE='quorum '; COMP_POINT=7; _quorum quorum '' quorum; printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        ],
        &[],
        None,
    )
    .ok();
    for sub in ["volumes", "events", "scrub", "import", "export", "child"] {
        assert!(
            words.lines().any(|w| w == sub),
            "{sub} not offered: {words}"
        );
    }
}

/// `quorum-man DIR` writes a page per binary and subcommand; each is roff
/// with the binary's name, and the main pages carry the environment and
/// exit codes of `--help`.
#[test]
fn manual_pages_are_generated_for_both_binaries() {
    let sandbox = Sandbox::new();
    let dir = sandbox.file("man");
    let dir_arg = dir.display().to_string();
    run_in(
        &sandbox,
        env!("CARGO_BIN_EXE_quorum-man"),
        &[&dir_arg],
        &[],
        None,
    )
    .ok();
    for page in [
        "quorum.1",
        "quorum-server.1",
        "quorum-server-check.1",
        "quorum-scrub.1",
        "quorum-events.1",
        "quorum-import.1",
        "quorum-export.1",
        "quorum-child-add.1",
    ] {
        let text =
            fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("no page {page}: {e}"));
        assert!(text.contains(".TH "), "{page} is not roff: {text:.200}");
    }
    let quorum = fs::read_to_string(dir.join("quorum.1")).expect("quorum.1");
    let server = fs::read_to_string(dir.join("quorum-server.1")).expect("quorum-server.1");
    for (page, text, words) in [
        (
            "quorum.1",
            &quorum,
            &["QUORUM_TOKEN", "QUORUM_URL", "Exit codes"][..],
        ),
        (
            "quorum-server.1",
            &server,
            &["QUORUM_TOKEN", "RUST_LOG", "AWS_", "log\\-format"][..],
        ),
    ] {
        for w in words {
            assert!(text.contains(w), "{page} should say {w}");
        }
    }
}

/// The unit passes `systemd-analyze verify` with the built binary where
/// the unit expects it (a root of its own: no running systemd needed), and
/// the check can fail: a copy with a typo is reported.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: install systemd (scripts/install-test-deps)");
    }
    let sandbox = Sandbox::new();
    let root = sandbox.file("root");
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/quorum.service"
    ))
    .expect("deploy/systemd/quorum.service");
    for dir in ["usr/local/bin", "etc/systemd/system", "usr/lib/systemd"] {
        fs::create_dir_all(root.join(dir)).expect("create the root");
    }
    fs::copy(bin(), root.join("usr/local/bin/quorum-server")).expect("install the binary");
    // The targets the unit names (multi-user.target, ...): the host's.
    let copied = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd"))
        .status()
        .expect("run cp");
    assert!(copied.success(), "cannot copy /usr/lib/systemd/system");
    let root_arg = format!("--root={}", root.display());
    let verify = |text: &str| {
        fs::write(root.join("etc/systemd/system/quorum.service"), text).expect("write the unit");
        let ran = run_in(
            &sandbox,
            "systemd-analyze",
            &["verify", "--man=no", &root_arg, "quorum.service"],
            &[],
            None,
        );
        (
            ran.status.success(),
            format!("{}{}", ran.stdout(), ran.stderr),
        )
    };
    let (ok, said) = verify(&unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let (_, said) = verify(&unit.replace("Type=notify", "Type=notifyy"));
    assert!(
        said.contains("notifyy"),
        "a typo should be reported: {said:?}"
    );
    for line in [
        "Type=notify",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "User=quorum",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit should say {line}"
        );
    }
    assert!(unit.contains("ReadWritePaths=/var/lib/quorum"));

    let security = run_in(
        &sandbox,
        "systemd-analyze",
        &["security", "--offline=yes", &root_arg, "quorum.service"],
        &[],
        None,
    );
    let said = security.stdout();
    let level = said
        .lines()
        .find_map(|l| l.split("exposure level for quorum.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {said}{}", security.stderr));
    assert!(level <= 2.0, "exposure {level}, more than 2.0:\n{said}");
}

/// `--log-format json` makes every log line one JSON object.
#[test]
fn json_logs_are_one_object_a_line() {
    let server = Sandbox::new().serve_with_args(&abc_volume("1MiB", ""), &["--log-format", "json"]);
    let _ = server.get("/v1/volumes");
    let stderr = server.stderr();
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(stderr.contains("\"message\":\"listening\""), "{stderr}");
}

/// With `--log-format json`, the line that says why the server will not
/// start is a JSON object too (an error), not `error: ...` text.
#[test]
fn a_refused_start_logs_one_json_object() {
    let sandbox = Sandbox::new();
    let config = sandbox
        .write_config(&volume("vm", "1MiB", 4, "", &[child("a")]))
        .display()
        .to_string();
    let refused = sandbox.run_expecting_failure(&[
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let line = refused.one_line();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "ERROR", "{line}");
    let message = v["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("vm") && message.contains("threshold"),
        "{line}"
    );
}
