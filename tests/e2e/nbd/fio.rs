//! fio's `nbd` engine (libnbd): random writes at queue depth 32 verified
//! with crc32c, and four jobs of mixed random I/O over four connections
//! at once, after which the children are byte-identical.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SIZE, install_hint, nbd_config, run, url};
use crate::util::*;

/// fio's `nbd` engine: random writes at queue depth 32 (pipelined,
/// answered out of order) verified with crc32c; the children stay
/// identical.
#[test]
fn fio_nbd_engine_verifies() {
    let server = Sandbox::new().serve(&nbd_config());
    let uri = url(&server, "vm");
    let uri_arg = format!("--uri={uri}");
    run(
        "fio",
        &[
            "--name=nbd",
            "--ioengine=nbd",
            &uri_arg,
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=8M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=terse",
        ],
    );
    let a = server.read_file("a.img");
    for f in ["b.img", "c.img"] {
        assert_bytes_eq(&server.read_file(f), &a, &format!("{f} against a.img"));
    }
}

/// How long the mixed run lasts.
const MIXED_RUNTIME: &str = "4";

/// Four fio jobs (`numjobs=4`), each on its own NBD connection (the
/// server counts four at once, fio says it connected four times), doing
/// random 4 KiB..64 KiB reads and writes over the same 16 MiB at queue
/// depth 8: overlapping writes from different connections. No request
/// fails; then, the server stopped, the three child files are identical
/// and no quorum failure or report was logged.
#[test]
fn fio_four_jobs_over_four_connections_keep_children_identical() {
    let mut server = Sandbox::new().serve(&nbd_config());
    let uri_arg = format!("--uri={}", url(&server, "vm"));
    let runtime = format!("--runtime={MIXED_RUNTIME}");
    let (out_path, err_path) = (server.file("logs/fio.json"), server.file("logs/fio.err"));
    let mut fio = Command::new("fio")
        .args([
            "--name=mixed",
            "--ioengine=nbd",
            &uri_arg,
            "--numjobs=4",
            "--rw=randrw",
            "--rwmixread=50",
            "--bsrange=4k-64k",
            "--iodepth=8",
            "--size=16M",
            "--time_based",
            &runtime,
            "--output-format=json",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create fio's output file"))
        .stderr(File::create(&err_path).expect("create fio's error file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run fio ({e}): {}", install_hint()));

    // The gauge of connections, sampled while fio runs (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = fio.try_wait().expect("poll fio") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = fio.kill();
            let _ = fio.wait();
            panic!("fio did not end within 60 s");
        }
        peak = peak.max(server.metric(r#"quorum_nbd_connections{volume="vm"}"#));
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = String::from_utf8_lossy(&server.read_file("logs/fio.json")).into_owned();
    let stderr = String::from_utf8_lossy(&server.read_file("logs/fio.err")).into_owned();
    assert!(
        status.success(),
        "fio failed ({status}):\n{stdout}\n{stderr}"
    );
    // fio prints its engine's messages to stdout, before the JSON.
    let json_at = stdout.find("\n{").map_or(0, |i| i + 1);
    let (messages, json) = stdout.split_at(json_at);
    assert_eq!(
        messages.matches("fio: connected to NBD server").count(),
        4,
        "fio's nbd engine connects once per job:\n{messages}"
    );
    assert_eq!(peak, 4.0, "four NBD connections at once");

    let report: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("fio's JSON output ({e}):\n{stdout}"));
    let jobs = report["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 4, "four jobs in {report}");
    for job in &jobs {
        assert_eq!(job["error"], 0, "{job}");
        for dir in ["read", "write"] {
            let ios = job[dir]["total_ios"].as_u64().unwrap_or(0);
            assert!(ios > 0, "job {} did no {dir}: {job}", job["jobname"]);
        }
    }
    let events = server.all_events();
    assert!(
        named(&events, "QUORUM_FAILURE").is_empty()
            && named(&events, "QUORUM_REPORT_BAD").is_empty(),
        "a healthy volume under fio: {events:?}"
    );

    let exit = server.stop();
    assert!(exit.success(), "the server's exit: {exit}");
    let log = server.stderr();
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(logged.is_empty(), "the server logged trouble: {logged:#?}");
    let a = server.read_file("a.img");
    assert_eq!(a.len() as u64, SIZE);
    for f in ["b.img", "c.img"] {
        assert_bytes_eq(
            &server.read_file(f),
            &a,
            &format!("{f} against a.img after fio"),
        );
    }
}
