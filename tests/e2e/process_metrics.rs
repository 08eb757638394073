//! What `/metrics` says of the process itself (issue 17):
//! `quorum_build_info{version,git_commit}` at 1, and the standard
//! `process_*` family, checked against the server's own /proc entries.
//! (`observability` runs promtool on the same live text.)

use std::fs;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::*;

/// Seconds since the epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The commit the binary was built from: the checkout's HEAD, or
/// "unknown" outside a git checkout (as the build script has it).
fn head_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The soft "Max open files" of /proc/PID/limits.
fn max_open_files(pid: u32) -> f64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read the limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .expect("a soft limit");
    match soft {
        "unlimited" => u64::MAX as f64,
        n => n.parse().expect("a number"),
    }
}

#[test]
fn metrics_carry_build_info_and_the_process_family() {
    let before = now();
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let after = now();
    let pid = server.pid();
    let get = |series: &str| server.metric(series);

    let build = format!(
        "quorum_build_info{{version=\"{}\",git_commit=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        head_commit()
    );
    assert_eq!(get(&build), 1.0, "{build}");

    let start = get("process_start_time_seconds");
    assert!(
        (before - 2.0..=after + 2.0).contains(&start),
        "started at {start}, between {before} and {after}"
    );
    let open = get("process_open_fds");
    let fds_now = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the fds")
        .count() as f64;
    assert!(
        open >= 3.0 && (open - fds_now).abs() <= 16.0,
        "{open} open fds, /proc has {fds_now}"
    );
    assert_eq!(get("process_max_fds"), max_open_files(pid));
    let rss = get("process_resident_memory_bytes");
    assert!(rss > 1e6, "resident {rss}");
    assert!(get("process_virtual_memory_bytes") >= rss);

    let cpu = get("process_cpu_seconds_total");
    assert!(cpu > 0.0, "cpu {cpu}");
    for i in 0..32u64 {
        server.write_volume("vm", (i % 16) * 65536, &pattern(i, 65536));
    }
    let later = get("process_cpu_seconds_total");
    assert!(later >= cpu, "the cpu counter went from {cpu} to {later}");
}
