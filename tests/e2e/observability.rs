//! Observability for real (issue 5, SPEC section 7): the live `/metrics` of a
//! server that saw a bad replica, checked by `promtool` and against every
//! name the Grafana dashboard and the alert rules query; the static checks
//! of `deploy/` on that live text; Debian's real `prometheus` scraping the
//! server with the token and raising `QuorumChildDamaged`; and the embedded
//! dashboard in headless Chromium showing a bad replica.
//!
//! The tools come from `scripts/install-test-deps`; a missing one fails the
//! test with a message saying so (never a skip). Every external process runs
//! with a deadline, in its own process group, killed when it overruns, and
//! all traffic goes to 127.0.0.1.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::util::*;

/// The repository root (the `quorum` package lives there).
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A static check (promtool, promql_names.py, validate.sh) may take this long.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// How long Prometheus may take to see the bad replica and raise the alert.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);
/// How long the Chromium test script may run.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);
const TOKEN: &str = "obs-e2e-token-7f3a";

// ---------------------------------------------------------------------------
// Helpers: tools, bounded processes, metrics text
// ---------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

/// The lines of metric family `name`, for messages.
fn family(text: &str, name: &str) -> String {
    text.lines()
        .filter(|l| l.contains(name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the exact sample line `series VALUE`.
#[track_caller]
fn assert_sample(text: &str, series: &str, value: f64) {
    let name = series.split('{').next().unwrap_or(series);
    match metric_in(text, series) {
        Some(v) => assert_eq!(
            v,
            value,
            "{series} is {v}, expected {value}; the family:\n{}",
            family(text, name)
        ),
        None => panic!(
            "/metrics has no line `{series} ...`; the family:\n{}",
            family(text, name)
        ),
    }
}

const READS: &str = r#"quorum_requests_total{volume="vm",op="read"}"#;
const READS_INF: &str =
    r#"quorum_request_duration_seconds_bucket{volume="vm",op="read",le="+Inf"}"#;

/// GET /metrics: 200, the text exposition format.
#[track_caller]
fn fetch_metrics(server: &Server) -> String {
    let r = server.get("/metrics");
    r.expect_status(200);
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "GET /metrics: content-type {ct:?}, expected the text exposition format (text/plain)"
    );
    String::from_utf8(r.body).expect("/metrics is UTF-8")
}

/// The volume `vm` (a, b, c; threshold 2; served over NBD too) with 4 KiB
/// of data at 0, child c's file corrupted for 100 bytes at 1000, and one
/// read through the server: c loses the vote on exactly those 100 bytes.
/// Returns the server and the `/metrics` text it then exports, saved as
/// `SANDBOX/metrics.txt`.
fn server_after_bad_read() -> (Server, String, PathBuf) {
    let config = with_nbd(&abc_volume("1MiB", ""));
    let server = Sandbox::new().serve(&config);
    let data = pattern(5, BLOCK as usize);
    server.write_volume("vm", 0, &data);
    server.corrupt_file("c.img", 1000, 100);
    let got = server.read_volume("vm", 0, BLOCK);
    assert_bytes_eq(&got, &data, "a read with c corrupted");

    let text = fetch_metrics(&server);
    // The report is out before the read's last byte (the engine's promise):
    // c's counters are final on the first scrape.
    assert_sample(
        &text,
        r#"quorum_bad_reports_total{volume="vm",child="c",type="read"}"#,
        1.0,
    );
    // The request is counted before the read's last byte leaves too.
    let reads = metric_in(&text, READS).unwrap_or(0.0);
    assert!(reads >= 1.0, "quorum_requests_total for reads is {reads}");
    assert_eq!(
        metric_in(&text, READS_INF),
        Some(reads),
        "the +Inf bucket counts every read"
    );
    let file = server.file("metrics.txt");
    fs::write(&file, &text).expect("save /metrics");
    (server, text, file)
}

// ---------------------------------------------------------------------------
// 1. /metrics: exact samples, promtool, and every name the dashboards query
// ---------------------------------------------------------------------------

/// SPEC 7: every op has its series, counted exactly: requests, bytes
/// (write-zeroes counts its length, a flush none) and the duration
/// histogram, per op; nothing failed, so the failure and error series stay
/// at zero.
#[test]
fn every_op_is_counted_in_its_own_series() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(6, 4096));
    server.write_volume("vm", 10_000, &pattern(7, 1000));
    for (offset, length) in [(65_536, 65_536), (130_000, 5000)] {
        server
            .post(&format!(
                "/v1/volumes/vm/write-zeroes?offset={offset}&length={length}"
            ))
            .expect_status(204);
    }
    for _ in 0..3 {
        server.post("/v1/volumes/vm/flush").expect_status(204);
    }
    server.read_volume("vm", 0, 8192);
    let text = fetch_metrics(&server);
    let metrics = Metrics::parse(&text);
    for (op, count, bytes) in [
        ("read", 1.0, 8192.0),
        ("write", 2.0, 5096.0),
        ("write_zeroes", 2.0, 70_536.0),
        ("flush", 3.0, 0.0),
    ] {
        let labels = format!(r#"volume="vm",op="{op}""#);
        let get = |name: &str| {
            metrics
                .get(&format!("{name}{{{labels}}}"))
                .unwrap_or_else(|| panic!("no {name}{{{labels}}}:\n{}", family(&text, name)))
        };
        assert_eq!(get("quorum_requests_total"), count, "requests of {op}");
        assert_eq!(get("quorum_request_bytes_total"), bytes, "bytes of {op}");
        assert_eq!(
            get("quorum_request_duration_seconds_count"),
            count,
            "durations of {op}"
        );
        let inf = metrics.get(&format!(
            r#"quorum_request_duration_seconds_bucket{{{labels},le="+Inf"}}"#
        ));
        assert_eq!(inf, Some(count), "the +Inf bucket of {op}");
        assert!(
            get("quorum_request_duration_seconds_sum") > 0.0,
            "the time of {op}"
        );
        assert_eq!(get("quorum_failures_total"), 0.0, "failures of {op}");
        for child in ["a", "b", "c"] {
            let errors = metrics.get(&format!(
                r#"quorum_child_errors_total{{volume="vm",child="{child}",op="{op}"}}"#
            ));
            assert_eq!(errors, Some(0.0), "errors of {child} in {op}");
        }
    }
}

#[test]
fn live_metrics_pass_promtool_and_name_every_dashboard_metric() {
    let promtool = require_tool("promtool");
    let python = require_tool("python3");
    let (server, text, file) = server_after_bad_read();

    // SPEC section 7: every name, with its type.
    for (name, kind) in [
        ("quorum_requests_total", "counter"),
        ("quorum_request_bytes_total", "counter"),
        ("quorum_request_duration_seconds", "histogram"),
        ("quorum_child_errors_total", "counter"),
        ("quorum_bad_reports_total", "counter"),
        ("quorum_failures_total", "counter"),
        ("quorum_corrupted_bytes_total", "counter"),
        ("quorum_repaired_bytes_total", "counter"),
        ("quorum_volume_size_bytes", "gauge"),
    ] {
        let line = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks `{line}`; the family:\n{}",
            family(&text, name)
        );
    }

    // The bad replica, to the byte; the others clean.
    assert_sample(
        &text,
        r#"quorum_bad_reports_total{volume="vm",child="c",type="read"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"quorum_corrupted_bytes_total{volume="vm",child="c"}"#,
        100.0,
    );
    // The server keeps it as damage: the gauge and the state say so.
    assert_sample(
        &text,
        r#"quorum_child_damaged_bytes{volume="vm",child="c"}"#,
        100.0,
    );
    assert_sample(
        &text,
        r#"quorum_child_state{volume="vm",child="c",state="damaged"}"#,
        1.0,
    );
    for other in ["a", "b"] {
        assert_sample(
            &text,
            &format!(r#"quorum_bad_reports_total{{volume="vm",child="{other}",type="read"}}"#),
            0.0,
        );
        assert_sample(
            &text,
            &format!(r#"quorum_corrupted_bytes_total{{volume="vm",child="{other}"}}"#),
            0.0,
        );
        assert_sample(
            &text,
            &format!(r#"quorum_child_damaged_bytes{{volume="vm",child="{other}"}}"#),
            0.0,
        );
    }
    assert_sample(
        &text,
        r#"quorum_child_errors_total{volume="vm",child="c",op="read"}"#,
        0.0,
    );
    assert_sample(
        &text,
        r#"quorum_failures_total{volume="vm",op="read"}"#,
        0.0,
    );
    assert_sample(
        &text,
        r#"quorum_volume_size_bytes{volume="vm"}"#,
        MIB as f64,
    );
    let reads =
        metric_in(&text, READS).unwrap_or_else(|| panic!("no read request counter in\n{text}"));
    assert!(reads >= 1.0, "quorum_requests_total for reads is {reads}");
    let inf = metric_in(&text, READS_INF).unwrap_or_else(|| {
        panic!(
            "no +Inf read bucket; the family:\n{}",
            family(&text, "quorum_request_duration_seconds")
        )
    });
    assert_eq!(inf, reads, "the +Inf read bucket counts every read");
    let buckets = Metrics::parse(&text)
        .buckets(r#"quorum_request_duration_seconds{volume="vm",op="read"}"#)
        .map_or(0, |b| b.len());
    assert!(
        buckets >= 10,
        "the read latency histogram should span microseconds to seconds, it has {buckets} buckets"
    );

    // promtool reads the exposition on stdin.
    let run = run_bounded(
        Command::new(&promtool).args(["check", "metrics"]),
        Some(&file),
        &server.file("logs/promtool.log"),
        TOOL_DEADLINE,
    );
    run.expect_success("promtool check metrics on the live /metrics");

    // Every metric the Grafana dashboard and the alert rules query is exported.
    let run = run_bounded(
        Command::new(&python).current_dir(root()).args([
            Path::new("tests/deploy/promql_names.py"),
            Path::new("deploy/grafana/dashboards/quorum.json"),
            Path::new("deploy/prometheus/alerts.yml"),
            &file,
        ]),
        None,
        &server.file("logs/promql_names.log"),
        TOOL_DEADLINE,
    );
    run.expect_success("promql_names.py: the dashboard and alerts against the live /metrics");
}

// ---------------------------------------------------------------------------
// 2. tests/deploy/validate.sh with the live /metrics
// ---------------------------------------------------------------------------

#[test]
fn deploy_files_validate() {
    require_tool("promtool");
    require_tool("python3");
    let venv_bin = venv_bin();
    require_file(&venv_bin.join("check-jsonschema"), "check-jsonschema");
    let (server, _text, file) = server_after_bad_read();

    let run = run_bounded(
        Command::new("bash")
            .current_dir(root())
            .arg("tests/deploy/validate.sh")
            .arg(&venv_bin)
            .env("METRICS_FILE", &file),
        None,
        &server.file("logs/validate.log"),
        TOOL_DEADLINE,
    );
    if run.status.and_then(|s| s.code()) == Some(2) {
        panic!(
            "validate.sh says a tool is missing: {INSTALL}\n{}",
            run.output
        );
    }
    run.expect_success("tests/deploy/validate.sh with METRICS_FILE (a live /metrics)");
    assert!(
        run.output.contains(" passed, 0 failed"),
        "validate.sh exited 0 without its `N passed, 0 failed` line:\n{}",
        run.output
    );
}

// ---------------------------------------------------------------------------
// 3. The real Prometheus scrapes the server and raises the alert
// ---------------------------------------------------------------------------

/// Debian's `prometheus`, killed on drop.
struct Prometheus {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
    client: Client,
}

impl Prometheus {
    /// Starts `prometheus` on `dir/prometheus.yml`, its TSDB in `dir/data`,
    /// on a free port of 127.0.0.1; waits (bounded) for `/-/ready`.
    #[track_caller]
    fn start(bin: &Path, dir: &Path, port: u16) -> Prometheus {
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let out = File::create(&log).expect("create prometheus.log");
        let err = out.try_clone().expect("clone a log handle");
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let command = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        let mut p = Prometheus {
            child: Some(child),
            addr,
            log,
            client: http_client(Duration::from_secs(5)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = p
                .client
                .get(format!("http://{}/-/ready", p.addr))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return p;
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                p.child = None;
                panic!(
                    "`{command}` exited with {status} before it was ready; its log:\n{}",
                    p.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "`{command}` was not ready within 30 s; its log:\n{}",
                p.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path?query` of the HTTP API: the `data` of a success, or the
    /// whole answer (or the error) as text.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .query(query)
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status();
        let body = r.text().map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: {status}, not JSON ({e}): {body}"))?;
        if status.is_success() && v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("GET {path}: {status}: {body}"))
        }
    }

    /// The instant vector of `query` as (labels, value) pairs.
    fn query(&self, query: &str) -> Result<(Vec<(Value, f64)>, String), String> {
        let data = self.api("/api/v1/query", &[("query", query)])?;
        let text = data.to_string();
        let result = data["result"]
            .as_array()
            .ok_or_else(|| format!("no result in {text}"))?
            .iter()
            .map(|s| {
                let v = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), v)
            })
            .collect();
        Ok((result, text))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// deploy/prometheus/prometheus.yml with the target on `target`, every
/// interval and timeout at 1 s, and the self-scrape on `own` (loopback).
/// Line edits that keep indentation and comments; each must apply.
fn derive_prometheus_config(source: &str, target: &str, own: &str) -> String {
    let mut edits = [0usize; 4];
    let out: Vec<String> = source
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            for (i, key) in [
                "scrape_interval:",
                "evaluation_interval:",
                "scrape_timeout:",
            ]
            .iter()
            .enumerate()
            {
                if trimmed.starts_with(key) {
                    edits[i] += 1;
                    return format!("{indent}{key} 1s");
                }
            }
            if line.contains("quorum:8700") {
                edits[3] += 1;
                return line.replace("quorum:8700", target);
            }
            line.replace("localhost:9090", own)
        })
        .collect();
    assert!(
        edits.iter().all(|n| *n > 0),
        "deploy/prometheus/prometheus.yml changed shape: expected scrape_interval, \
         evaluation_interval, scrape_timeout and the target quorum:8700 (edits {edits:?}):\n{source}"
    );
    out.join("\n") + "\n"
}

#[test]
fn real_prometheus_sees_a_bad_replica() {
    let bin = require_tool("prometheus");
    let config = format!("[auth]\ntoken = \"{TOKEN}\"\n\n{}", abc_volume("1MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    // The auth path is real: without the token /metrics is refused.
    server.get("/metrics").expect_status(401);
    server.set_token(Some(TOKEN));
    let data = pattern(9, BLOCK as usize);
    server.write_volume("vm", 0, &data);

    // Prometheus's directory: the derived config, alerts.yml unchanged, the token.
    let dir = server.file("prometheus");
    fs::create_dir(&dir).expect("create the prometheus directory");
    let deploy = root().join("deploy/prometheus");
    let source = fs::read_to_string(deploy.join("prometheus.yml")).expect("read prometheus.yml");
    // Prometheus's own address is in the config it reads, so it cannot
    // pick its port: a port that was free a moment ago (it never restarts).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port();
    let derived = derive_prometheus_config(
        &source,
        &format!("127.0.0.1:{}", server.port()),
        &format!("127.0.0.1:{port}"),
    );
    fs::write(dir.join("prometheus.yml"), &derived).expect("write prometheus.yml");
    fs::copy(deploy.join("alerts.yml"), dir.join("alerts.yml")).expect("copy alerts.yml");
    fs::write(dir.join("quorum_token"), TOKEN).expect("write quorum_token");

    let prom = Prometheus::start(&bin, &dir, port);
    let mut last: Vec<String> = Vec::new();
    let report = |prom: &Prometheus, last: &[String], what: &str| -> String {
        let targets = prom
            .api("/api/v1/targets", &[])
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e);
        format!(
            "{what} within {PROMETHEUS_DEADLINE:?}.\nthe derived prometheus.yml:\n{derived}\n\
             last answers:\n{}\n/api/v1/targets: {targets}\nprometheus log:\n{}",
            last.join("\n"),
            prom.log_text()
        )
    };
    let deadline = Instant::now() + PROMETHEUS_DEADLINE;
    let series = r#"quorum_child_damaged_bytes{child="c"}"#;

    // Wait for a scrape of the clean state first: the series is there, at
    // zero, read with the token.
    loop {
        match prom.query(series) {
            Ok((result, text)) => {
                let clean = result.iter().any(|(m, v)| m["volume"] == "vm" && *v == 0.0);
                if clean {
                    break;
                }
                last = vec![format!("query {series}: {text}")];
            }
            Err(e) => last = vec![e],
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            report(
                &prom,
                &last,
                "Prometheus did not scrape quorum_child_damaged_bytes{child=\"c\"} = 0 (with the token)"
            )
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The bad replica.
    server.corrupt_file("c.img", 0, 512);
    let got = server.read_volume("vm", 0, BLOCK);
    assert_bytes_eq(&got, &data, "a read with c corrupted");
    let events = server.all_events();
    let reports = reports_for(&events, "c");
    assert_eq!(reports.len(), 1, "one QUORUM_REPORT_BAD for c: {reports:?}");

    let mut seen_value = false;
    let mut seen_alert = false;
    while !(seen_value && seen_alert) {
        if !seen_value {
            match prom.query(series) {
                Ok((result, text)) => {
                    seen_value = result
                        .iter()
                        .any(|(m, v)| m["volume"] == "vm" && *v == 512.0);
                    last = vec![format!("query {series}: {text}")];
                }
                Err(e) => last = vec![e],
            }
        }
        if seen_value {
            match prom.api("/api/v1/alerts", &[]) {
                Ok(v) => {
                    seen_alert = v["alerts"].as_array().is_some_and(|alerts| {
                        alerts.iter().any(|a| {
                            a["labels"]["alertname"] == "QuorumChildDamaged"
                                && a["labels"]["child"] == "c"
                                && a["labels"]["volume"] == "vm"
                                && (a["state"] == "pending" || a["state"] == "firing")
                        })
                    });
                    last.truncate(1);
                    last.push(format!("/api/v1/alerts: {v}"));
                }
                Err(e) => {
                    last.truncate(1);
                    last.push(e);
                }
            }
        }
        if seen_value && seen_alert {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            report(
                &prom,
                &last,
                if seen_value {
                    "QuorumChildDamaged for child c was not pending or firing"
                } else {
                    "quorum_child_damaged_bytes{child=\"c\"} did not reach 512 in Prometheus"
                }
            )
        );
        thread::sleep(Duration::from_millis(250));
    }

    // No alert for the healthy children.
    let v = prom
        .api("/api/v1/alerts", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong: Vec<&Value> = v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["labels"]["child"] == "a" || a["labels"]["child"] == "b")
                .collect()
        })
        .unwrap_or_default();
    assert!(wrong.is_empty(), "alerts for healthy children: {wrong:?}");
}

// ---------------------------------------------------------------------------
// 4. The dashboard in headless Chromium
// ---------------------------------------------------------------------------

#[test]
fn dashboard_shows_a_bad_replica_in_chromium() {
    dashboard_in_chromium(None);
}

/// The same with an `[auth] token` configured: the page asks for it in its
/// token form, the script enters it, and everything else works as without
/// (the live stream, the scrub button, the membership events).
#[test]
fn dashboard_asks_for_the_token_and_then_works_in_chromium() {
    dashboard_in_chromium(Some("dash-b0ard-t0ken"));
}

/// Runs `tests/dashboard/dashboard.test.mjs` against a server (with `token`
/// configured, if given) and checks what the server recorded of it.
fn dashboard_in_chromium(token: Option<&str>) {
    let node = require_tool("node");
    require_tool("chromium");
    let script = root().join("tests/dashboard/dashboard.test.mjs");
    require_file(
        &root().join("tests/dashboard/node_modules/playwright-core"),
        "playwright-core",
    );
    assert!(
        script.is_file(),
        "the dashboard test script {} is missing",
        script.display()
    );

    // The script adds a child d (d.img, under child_roots) from the page and
    // removes it; the resync copies it at 1 MiB/s, so that the page shows it
    // syncing for a few seconds.
    let auth = token.map_or_else(String::new, |t| format!("[auth]\ntoken = \"{t}\"\n"));
    let mut server = Sandbox::new().serve(&format!(
        "child_roots = [\".\"]\nresync_rate = \"1MiB\"\n{auth}{}",
        abc_volume("4MiB", "")
    ));
    if let Some(t) = token {
        // The token is real: without it the API is refused.
        server.get("/v1/volumes").expect_error(401, "unauthorized");
        server.set_token(Some(t));
    }
    // The script overwrites 100 bytes at 1,049,576 of c's file with 0x42:
    // write data around there that differs in every byte, so c loses the
    // vote on exactly those 100.
    let data: Vec<u8> = pattern(13, 4 * BLOCK as usize)
        .into_iter()
        .map(|b| if b == 0 || b == 0x42 { 0x5a } else { b })
        .collect();
    server.write_volume("vm", MIB, &data);

    let artifacts = root().join("target/test-artifacts");
    fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let name = if token.is_some() {
        "dashboard-token"
    } else {
        "dashboard"
    };
    // The last screenshot (after a reload, the charts from the server's
    // history), and those of the damaged, the repaired and the added
    // replica beside it.
    let pngs: Vec<PathBuf> = ["", "-damaged", "-repaired", "-replica"]
        .iter()
        .map(|suffix| artifacts.join(format!("{name}{suffix}.png")))
        .collect();
    for png in &pngs {
        let _ = fs::remove_file(png);
    }
    let png = &pngs[0];

    let mut command = Command::new(&node);
    command
        .current_dir(root())
        .arg(&script)
        .env("QUORUM_URL", server.url(""))
        .env("QUORUM_CHILD_FILE", server.file("c.img"))
        .env("QUORUM_VOLUME", "vm")
        .env("QUORUM_CHILD", "c")
        .env("QUORUM_CHILD_URI", "c.img")
        .env("QUORUM_NEW_CHILD", "d")
        .env("QUORUM_NEW_CHILD_URI", "d.img")
        .env("SCREENSHOT", png)
        .env_remove("QUORUM_TOKEN");
    if let Some(t) = token {
        command.env("QUORUM_TOKEN", t);
    }
    let run = run_bounded(
        &mut command,
        None,
        &server.file("logs/dashboard-test.log"),
        BROWSER_DEADLINE,
    );
    if token.is_some() {
        assert!(
            run.output.contains("ok: the page asks for the API token"),
            "the page never asked for the token:\n{}",
            run.output
        );
    }
    if !run.success() {
        // What the script found missing leads, so that it survives a log
        // cut short after its first lines.
        let verdict = run
            .output
            .find("dashboard test: FAILED")
            .map_or("", |at| &run.output[at..]);
        panic!(
            "{verdict}\nthe dashboard test `{}` {} after {:.1?}.\nits output:\n{}\nthe server's stderr:\n{}",
            run.command,
            match run.status {
                Some(s) => format!("failed with {s}"),
                None => format!("was killed at its deadline of {BROWSER_DEADLINE:?}"),
            },
            run.took,
            run.output,
            server.stderr()
        );
    }
    for png in &pngs {
        let meta = fs::metadata(png).unwrap_or_else(|e| {
            panic!(
                "the script passed but left no screenshot at {}: {e}\nits output:\n{}",
                png.display(),
                run.output
            )
        });
        let head = fs::read(png).expect("read the screenshot");
        assert!(
            head.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
        assert!(
            meta.len() > 10_000,
            "the screenshot {} is only {} bytes: a blank page?",
            png.display(),
            meta.len()
        );
    }

    // The server recorded what the page showed: c lost the vote on exactly
    // the 100 bytes the script overwrote, and only c, once on the script's
    // read and once in the scrub + repair it started from the page, which
    // repaired them; c went damaged and back.
    const AT: u64 = 1_049_576;
    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(
        reports.len(),
        2,
        "the read's and the scrub's reports: {events:?}"
    );
    for ev in &reports {
        check_report(ev, "vm", "c", "read", None);
        assert_eq!(data_u64(ev, "offset"), AT, "offset of {ev}");
        assert_eq!(data_u64(ev, "bytes"), 100, "bytes of {ev}");
    }
    let started = named(&events, "JOB_STARTED");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["data"]["repair"], true);
    let completed = named(&events, "JOB_COMPLETED");
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0]["data"]["state"], "completed");
    assert_eq!(
        completed[0]["data"]["mismatches"],
        serde_json::json!({ "c": 100 })
    );
    assert_eq!(completed[0]["data"]["bytes_repaired"], 100);
    let c_changes: Vec<(&Value, &Value)> = named(&events, "CHILD_STATE_CHANGE")
        .into_iter()
        .filter(|e| e["data"]["node-name"] == "c")
        .map(|e| (&e["data"]["from"], &e["data"]["to"]))
        .collect();
    assert_eq!(
        c_changes,
        [
            (&Value::from("healthy"), &Value::from("damaged")),
            (&Value::from("damaged"), &Value::from("healthy"))
        ],
        "{events:?}"
    );
    let vol = server.get("/v1/volumes/vm");
    vol.expect_status(200);
    let v = vol.json();
    let c = v["children"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "c"))
        .unwrap_or_else(|| panic!("no child c in GET /v1/volumes/vm: {v}"));
    assert_eq!(c["state"], "healthy", "c: {c}");
    assert_eq!(c["damaged_bytes"], 0, "c: {c}");
    assert_eq!(c["stats"]["bad_reports"], 2, "c's counters: {c}");
    assert_eq!(c["stats"]["corrupted_bytes"], 200, "c's counters: {c}");
    assert_eq!(c["stats"]["repaired_bytes"], 100, "c's counters: {c}");
    assert_eq!(
        server.read_file_at("c.img", AT, 100),
        server.read_file_at("a.img", AT, 100),
        "the scrub repaired c"
    );
    // The replica the page asked for outside child_roots was refused before
    // anything was created.
    let outside = server.file("../outside-the-roots.img");
    assert!(
        !outside.exists(),
        "{} was created for a refused replica",
        outside.display()
    );
    // And the membership events the page labelled: d added, synced, removed.
    for name in ["CHILD_ADDED", "CHILD_STATE_CHANGE", "CHILD_REMOVED"] {
        let about_d = named(&events, name)
            .iter()
            .filter(|e| e["data"]["node-name"] == "d")
            .count();
        assert_eq!(about_d, 1, "{name} about d: {events:?}");
    }
}
