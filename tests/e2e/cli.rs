//! Issue 17: the `quorum` command line, run as a person would against a
//! real server: tables and JSON, one-line errors and exit codes, events
//! followed across a restart. The parts: `jobs` (scrubs waited for, jobs
//! cancelled, children added and removed), `transfer` (import and
//! export), `check` (`quorum-server check`), `packaging` (completions,
//! manual pages, the systemd unit, JSON logs).

mod check;
mod jobs;
mod packaging;
mod transfer;

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The binary under test.
const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
/// How long one run of `quorum` may take.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What a run of a command left.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub command: String,
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        self.code(0);
        self.stdout()
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Ran {
        assert_eq!(
            self.status.code(),
            Some(code),
            "`{}` exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.status,
            self.stdout(),
            self.stderr
        );
        self
    }

    /// Asserts exit code 1 and one line on stderr, `error: ...`; returns it.
    #[track_caller]
    pub fn error_line(&self) -> String {
        self.code(1);
        let line = self.stderr.trim();
        assert_eq!(
            line.lines().count(),
            1,
            "`{}`: the error should be one line: {line:?}",
            self.command
        );
        assert!(line.starts_with("error: "), "{line:?}");
        line.to_string()
    }
}

/// A unique name for a run's output files.
fn run_name() -> u32 {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    RUNS.fetch_add(1, Ordering::Relaxed)
}

/// Runs `program` with `args` (stdin from `stdin`, or none), its output in
/// files of `logs`; kills it past [`RUN_DEADLINE`].
#[track_caller]
pub fn run_in(
    logs: &Sandbox,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<PathBuf>,
) -> Ran {
    let n = run_name();
    let out_path = logs.file(&format!("logs/run-{n}.stdout"));
    let err_path = logs.file(&format!("logs/run-{n}.stderr"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("QUORUM_URL")
        .env_remove("QUORUM_TOKEN")
        .stdout(File::create(&out_path).expect("create a stdout log"))
        .stderr(File::create(&err_path).expect("create a stderr log"))
        .stdin(match stdin {
            Some(p) => Stdio::from(File::open(&p).expect("open the input")),
            None => Stdio::null(),
        });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let command = describe(&cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let status = wait_bounded(&mut child, RUN_DEADLINE, &command);
    Ran {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        command,
    }
}

/// Waits for `child`, killing it (and failing) past `limit`.
#[track_caller]
fn wait_bounded(child: &mut Child, limit: Duration, command: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll a process") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` still ran after {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `quorum --url URL ARGS...` against `server`.
#[track_caller]
pub fn quorum(server: &Server, args: &[&str]) -> Ran {
    let url = server.url("");
    let mut all = vec!["--url", url.as_str()];
    all.extend(args);
    run_in(server, QUORUM, &all, &[], None)
}

#[test]
fn volumes_and_volume_show_tables_and_json() {
    let server = Sandbox::new().serve(&abc_volume("4MiB", ""));
    server.write_volume("vm", 0, &pattern(1, 2 * BLOCK as usize));
    server.corrupt_file("c.img", BLOCK, BLOCK as usize);
    let _ = server.read_volume("vm", 0, 2 * BLOCK);

    let out = quorum(&server, &["volumes"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["VOLUME", "SIZE", "THRESHOLD", "READ", "CHILDREN", "STALE"]
    );
    let row: Vec<&str> = lines[1].split("  ").filter(|c| !c.is_empty()).collect();
    let row: Vec<&str> = row.iter().map(|c| c.trim()).collect();
    assert_eq!(
        row,
        [
            "vm",
            "4.0 MiB",
            "2/3",
            "quorum",
            "2 healthy, 1 damaged",
            "0 B"
        ],
        "c lost a vote: it is damaged"
    );

    let json: Value = serde_json::from_slice(&quorum(&server, &["volumes", "--json"]).stdout)
        .expect("volumes --json is JSON");
    let api = server.get("/v1/volumes").json();
    assert_eq!(json[0]["name"], api[0]["name"]);
    assert_eq!(json[0]["children"].as_array().map(Vec::len), Some(3));
    assert_eq!(json[0]["size"], 4 * MIB);

    let out = quorum(&server, &["volume", "vm"]).ok();
    assert!(
        out.starts_with("volume vm: 4.0 MiB (4194304 bytes), vote threshold 2 of 3"),
        "{out}"
    );
    let c = out
        .lines()
        .find(|l| l.starts_with("c "))
        .unwrap_or_else(|| panic!("no row for c:\n{out}"));
    let cells: Vec<&str> = c.split_whitespace().collect();
    // CHILD BACKEND STATE STALE(2) LOST VOTES(2) REPAIRED(2) ERRORS URI
    assert_eq!(cells[..2], ["c", "file"], "{c}");
    assert_eq!(cells[5..7], ["4.0", "KiB"], "c lost one block's vote: {c}");
    assert_eq!(cells.last(), Some(&"c.img"), "{c}");
    let json: Value = serde_json::from_slice(&quorum(&server, &["volume", "vm", "--json"]).stdout)
        .expect("volume --json is JSON");
    assert_eq!(json["children"][2]["stats"]["corrupted_bytes"], BLOCK);

    let line = quorum(&server, &["volume", "nope"]).error_line();
    assert!(
        line.starts_with("error: 404 no_such_volume: "),
        "the server's status, code and message: {line}"
    );
}

#[test]
fn errors_are_one_line_with_their_exit_codes() {
    let server = Sandbox::new().serve(&format!(
        "[auth]\ntoken = \"s3cret\"\n{}",
        abc_volume("1MiB", "")
    ));
    let line = quorum(&server, &["volumes"]).error_line();
    assert!(line.starts_with("error: 401 unauthorized: "), "{line}");
    quorum(&server, &["volumes", "--token", "s3cret"]).ok();
    fs::write(server.file("token"), "s3cret\n").expect("write the token file");
    let token_file = server.file("token").display().to_string();
    quorum(&server, &["volumes", "--token-file", &token_file]).ok();
    let url = server.url("");
    run_in(
        &server,
        QUORUM,
        &["--url", &url, "volumes"],
        &[("QUORUM_TOKEN", "s3cret")],
        None,
    )
    .ok();
    run_in(
        &server,
        QUORUM,
        &["volumes"],
        &[("QUORUM_URL", &url), ("QUORUM_TOKEN", "s3cret")],
        None,
    )
    .ok();

    // A token no header can carry (the carriage return of `$(cat
    // token.txt)` on a Windows file): one clear line naming its source,
    // never the token, and no endless reconnecting for --follow.
    for args in [&["volumes"][..], &["events", "--follow", "--since", "0"]] {
        let mut all = vec!["--url", url.as_str()];
        all.extend(args);
        let ran = run_in(&server, QUORUM, &all, &[("QUORUM_TOKEN", "s3cret\r")], None);
        let line = ran.error_line();
        assert!(
            line.contains("QUORUM_TOKEN") && line.contains("printable") && !line.contains("s3cret"),
            "{line}"
        );
    }

    let refusing = RefusingPort::new();
    let url = format!("http://127.0.0.1:{}", refusing.port);
    let ran = run_in(&server, QUORUM, &["--url", &url, "volumes"], &[], None);
    let line = ran.error_line();
    assert!(
        line.contains("cannot reach") && line.contains(&refusing.port.to_string()),
        "{line}"
    );

    // The command line itself: clap's usage error, exit code 2.
    let ran = quorum(&server, &["scrub"]);
    ran.code(2);
    assert!(ran.stderr.contains("Usage"), "{}", ran.stderr);
    quorum(&server, &["cancel", "vm", "not-a-number"]).code(2);
    let help = quorum(&server, &["--help"]).ok();
    for word in ["QUORUM_URL", "QUORUM_TOKEN", "Exit codes", "unrecoverable"] {
        assert!(help.contains(word), "--help should say {word}:\n{help}");
    }
}

#[test]
fn events_are_listed_filtered_and_shown_as_json() {
    let config = format!(
        "{}\n{}",
        abc_volume("1MiB", ""),
        volume("other", "1MiB", 1, "", &[child("o")])
    );
    let server = Sandbox::new().serve(&config);
    server.write_volume("vm", 0, &pattern(2, 2 * BLOCK as usize));
    server.corrupt_file("c.img", 0, 10);
    let _ = server.read_volume("vm", 0, BLOCK);
    server.corrupt_file("b.img", BLOCK, 10);
    let _ = server.read_volume("vm", BLOCK, BLOCK);
    let _ = scrub_and_wait(&server, "other");
    let all = server.all_events();
    assert!(all.len() >= 4, "{all:?}");

    let out = quorum(&server, &["events"]).ok();
    assert_eq!(out.lines().count(), all.len(), "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("1  ")
            && first.contains("  vm  QUORUM_REPORT_BAD  type=read node-name=c"),
        "{first}"
    );

    let json = quorum(&server, &["events", "--json", "--since", "1"]).ok();
    let ids: Vec<u64> = json
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON event a line");
            check_event_shape(&v);
            event_id(&v)
        })
        .collect();
    let expected: Vec<u64> = all.iter().map(event_id).filter(|&id| id > 1).collect();
    assert_eq!(ids, expected);

    let other = quorum(&server, &["events", "--volume", "other", "--json"]).ok();
    assert!(!other.is_empty());
    for l in other.lines() {
        let v: Value = serde_json::from_str(l).expect("JSON");
        assert_eq!(v["volume"], "other", "{l}");
    }
    let two = quorum(&server, &["events", "--count", "2"]).ok();
    assert_eq!(two.lines().count(), 2, "{two}");
}

/// `events --follow` prints live events, and when the server goes away
/// and comes back on its port, reconnects and goes on from the last event
/// it printed: no event lost, none twice.
#[test]
fn events_follow_survives_a_server_restart() {
    let mut server = Sandbox::new().serve_pinned(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(3, 4 * BLOCK as usize));
    let url = server.url("");
    let out_path = server.file("logs/follow.stdout");
    let err_path = server.file("logs/follow.stderr");
    let mut cmd = Command::new(QUORUM);
    cmd.args([
        "--url", &url, "events", "--follow", "--since", "0", "--json", "--count", "4",
    ])
    .env_remove("QUORUM_TOKEN")
    .stdin(Stdio::null())
    .stdout(File::create(&out_path).expect("create a log"))
    .stderr(File::create(&err_path).expect("create a log"));
    let command = describe(&cmd);
    let mut follow = cmd.spawn().expect("run quorum events --follow");
    let lines = || fs::read_to_string(&out_path).unwrap_or_default();

    // A report of c and c's change to damaged.
    server.corrupt_file("c.img", 0, 10);
    let _ = server.read_volume("vm", 0, BLOCK);
    // A lost vote: the report, and c becomes damaged.
    wait_until("the first events printed", || lines().lines().count() == 2);

    let exit = server.stop();
    assert!(exit.success(), "{exit}");
    // Events made while it is down: none; the log resumes after a restart.
    thread::sleep(Duration::from_millis(700));
    server.restart();
    server.corrupt_file("c.img", BLOCK, 10);
    let _ = server.read_volume("vm", BLOCK, BLOCK);
    server.corrupt_file("b.img", 2 * BLOCK, 10);
    let _ = server.read_volume("vm", 2 * BLOCK, BLOCK);

    let status = wait_bounded(&mut follow, Duration::from_secs(30), &command);
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "`{command}` exited with {status}: {stderr}"
    );
    assert!(
        stderr.contains("reconnecting"),
        "it should say it lost the stream: {stderr:?}"
    );
    let printed: Vec<Value> = lines()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    let all = server.all_events();
    assert!(all.len() >= 4, "{all:?}");
    assert_eq!(printed, all[..4], "every event exactly once, in order");
}

/// `events --follow`, and the server restarted on a new `data_dir`: its
/// ids begin again at 1, below the last one printed. The follower sees
/// that the log no longer holds that event and prints the new log from its
/// start, rather than waiting for ids past the old ones.
#[test]
fn events_follow_starts_over_with_a_new_log() {
    let mut server = Sandbox::new().serve_pinned(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(4, MIB as usize));
    server.corrupt_file("c.img", 0, 10);
    let _ = server.read_volume("vm", 0, BLOCK);
    let url = server.url("");
    let out_path = server.file("logs/follow.stdout");
    let err_path = server.file("logs/follow.stderr");
    let mut follow = Command::new(QUORUM)
        .args(["--url", &url, "events", "--follow", "--json"])
        .env_remove("QUORUM_TOKEN")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create a log"))
        .stderr(File::create(&err_path).expect("create a log"))
        .spawn()
        .expect("run quorum events --follow");
    let printed = || -> Vec<Value> {
        fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
            .collect()
    };
    // Lost votes until one is printed live: the follower is connected.
    let mut block = 0;
    wait_until("a live event printed", || {
        block += 1;
        server.corrupt_file("b.img", block * BLOCK, 10);
        let _ = server.read_volume("vm", block * BLOCK, BLOCK);
        thread::sleep(Duration::from_millis(200));
        !printed().is_empty()
    });

    let exit = server.stop();
    assert!(exit.success(), "{exit}");
    fs::remove_dir_all(server.file("quorum-data")).expect("remove the data_dir");
    server.restart();
    server.corrupt_file("c.img", 100 * BLOCK, 10);
    let _ = server.read_volume("vm", 100 * BLOCK, BLOCK);
    let new = server.all_events();
    assert!(
        new.len() >= 2 && event_id(&new[0]) == 1,
        "a new log: {new:?}"
    );

    let shown = |all: &[Value]| all.windows(2).any(|w| w == &new[..2]);
    let mut last = Vec::new();
    let within = Instant::now() + EFFECT_DEADLINE;
    while !shown(&last) && Instant::now() < within {
        thread::sleep(Duration::from_millis(50));
        last = printed();
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        shown(&last),
        "the new log's first events, in order: printed {last:?}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("no longer holds event"),
        "it should say the log started again: {stderr:?}"
    );
}

/// `events --follow` against something that is not a quorum-server's
/// event stream (an HTML page, bytes that are not text, a line without
/// end): one error line and exit 1, not reconnecting forever nor reading
/// without bound.
#[test]
fn events_follow_refuses_what_is_not_an_event_stream() {
    let sandbox = Sandbox::new();
    let stream = |body: &[u8]| {
        let mut answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                .to_vec();
        answer.extend_from_slice(body);
        answer
    };
    let cases = [
        (
            "an HTML page",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>"
                .to_vec(),
            "content-type text/html",
        ),
        (
            "bytes that are not text",
            stream(b"data: \xff\xfe\n\n"),
            "not an event stream",
        ),
        (
            "a line without end",
            stream(&vec![b'a'; 17 << 20]),
            "longer than",
        ),
    ];
    for (what, answer, word) in cases {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("its address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = {
            let stop = stop.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + RUN_DEADLINE;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((mut conn, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                        match std::io::Read::read(&mut conn, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = std::io::Write::write_all(&mut conn, &answer);
                }
            })
        };
        let url = format!("http://127.0.0.1:{port}");
        let ran = run_in(
            &sandbox,
            QUORUM,
            &["--url", &url, "events", "--follow", "--since", "0"],
            &[],
            None,
        );
        stop.store(true, Ordering::Relaxed);
        serving.join().expect("the fake server");
        let line = ran.error_line();
        assert!(line.contains(word), "{what}: {line}");
    }
}

/// Starts a scrub of `vol` through the API and waits for it.
fn scrub_and_wait(server: &Server, vol: &str) -> Value {
    let r = server.send(
        server
            .request(reqwest::Method::POST, &format!("/v1/volumes/{vol}/scrub"))
            .body("{}"),
    );
    r.expect_status(202);
    let id = r.json()["id"].as_u64().expect("a job id");
    let mut last = Value::Null;
    wait_until("the scrub to end", || {
        last = server.get(&format!("/v1/volumes/{vol}/jobs/{id}")).json();
        last["state"] != "running"
    });
    last
}
