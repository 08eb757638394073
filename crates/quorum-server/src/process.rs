//! What `/metrics` says of the process itself, after the rest of the
//! exposition: `quorum_build_info{version,git_commit}` (always 1) and the
//! standard `process_*` family of the Prometheus clients, read from /proc
//! at each scrape (Linux only; elsewhere the family is left out).

use std::fmt::Write as _;

/// The version the server was built as.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the server was built from ("unknown" outside a git
/// checkout; see `build.rs`).
pub const GIT_COMMIT: &str = env!("QUORUM_GIT_COMMIT");

/// Writes one sample of a family without labels, with its HELP and TYPE.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// Appends `quorum_build_info` and the `process_*` family to `out`.
pub fn render(out: &mut String) {
    let _ = write!(
        out,
        "# HELP quorum_build_info The version and git commit the server was built from; always 1.\n\
         # TYPE quorum_build_info gauge\n\
         quorum_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\"}} 1\n"
    );
    #[cfg(target_os = "linux")]
    linux::render(out);
}

#[cfg(target_os = "linux")]
mod linux {
    use procfs::prelude::*;
    use procfs::process::{LimitValue, Process};

    use super::family;

    /// The `process_*` series from /proc/self; a file that cannot be read
    /// leaves its series out of this scrape.
    pub(super) fn render(out: &mut String) {
        let Ok(me) = Process::myself() else {
            return;
        };
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            family(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu,
            );
            family(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                stat.rss_bytes().get() as f64,
            );
            family(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                stat.vsize as f64,
            );
            if let Ok(boot) = procfs::boot_time_secs() {
                family(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.starttime as f64 / ticks,
                );
            }
        }
        if let Ok(open) = me.fd_count() {
            family(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open as f64,
            );
        }
        if let Ok(limits) = me.limits() {
            // Unlimited is written as the largest limit, as the Go client does.
            let max = match limits.max_open_files.soft_limit {
                LimitValue::Value(v) => v as f64,
                LimitValue::Unlimited => u64::MAX as f64,
            };
            family(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family is there, once, with a sane value for this process.
    #[test]
    fn renders_build_info_and_the_process_family() {
        let mut text = String::new();
        render(&mut text);
        let line = |name: &str| -> f64 {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.split(['{', ' ']).next() == Some(name))
                .collect();
            assert_eq!(lines.len(), 1, "{name} in:\n{text}");
            lines[0]
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a value in {:?}", lines[0]))
        };
        assert_eq!(line("quorum_build_info"), 1.0);
        assert!(text.contains(&format!("version=\"{VERSION}\"")));
        assert!(!GIT_COMMIT.is_empty());
        assert!(line("process_resident_memory_bytes") > 0.0);
        assert!(line("process_virtual_memory_bytes") >= line("process_resident_memory_bytes"));
        assert!(line("process_open_fds") >= 3.0);
        assert!(line("process_max_fds") >= line("process_open_fds"));
        assert!(line("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let start = line("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }
}
