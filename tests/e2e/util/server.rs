//! The server process: start (its address from stdout, `/healthz` polled
//! until a deadline), stop with SIGTERM and a deadline, signals, kill and
//! restart in the same sandbox; the child is killed in `Drop`, and a test
//! that panics prints the tail of the server's stderr.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use super::{REQUEST_TIMEOUT, START_DEADLINE, STOP_DEADLINE, Sandbox, bin, http_client};

/// How to (re)start a server.
#[derive(Clone)]
pub(super) struct Launch {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: PathBuf,
    /// Set when the address is not printed for `127.0.0.1:0`.
    pub(super) fixed_addr: Option<SocketAddr>,
    /// Restart on the port the first start printed (see `ports`).
    pub(super) pin_port: bool,
}

/// A running `quorum-server` in a sandbox. Derefs to its [`Sandbox`].
pub struct Server {
    sandbox: Sandbox,
    launch: Launch,
    child: Option<Child>,
    pub(super) addr: SocketAddr,
    pub(super) client: Client,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    pub(super) token: Option<String>,
    command_line: String,
    /// The line the server printed with its URL.
    pub url_line: String,
    /// The `nbd listening on nbd://ADDR` line, once printed.
    nbd_line: Arc<Mutex<Option<String>>>,
    /// How many times it was started (names the log files).
    runs: u32,
}

impl std::ops::Deref for Server {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Server {
    #[track_caller]
    pub(super) fn start(sandbox: Sandbox, launch: Launch) -> Server {
        let client = http_client(REQUEST_TIMEOUT);
        let mut server = Server {
            sandbox,
            launch,
            child: None,
            addr: "127.0.0.1:9".parse().expect("parse a placeholder address"),
            client,
            token: None,
            command_line: String::new(),
            url_line: String::new(),
            nbd_line: Arc::default(),
            runs: 0,
        };
        server.spawn();
        server
    }

    /// Starts the process, waits for its address and for `/healthz`.
    #[track_caller]
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.runs += 1;
        let stdout_log = self.file(&format!("logs/server-{}.stdout.log", self.runs));
        let stderr_log = self.stderr_path();
        let mut cmd = Command::new(bin());
        cmd.args(&self.launch.args)
            .current_dir(&self.launch.cwd)
            .env_remove("QUORUM_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).expect("create the stderr log"));
        for (k, v) in &self.launch.env {
            cmd.env(k, v);
        }
        self.command_line = describe(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.command_line));

        // Copy stdout to its log; hand the first line with a URL over.
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        self.nbd_line = Arc::default();
        let nbd_line = self.nbd_line.clone();
        thread::spawn(move || {
            let mut log = File::create(stdout_log).ok();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if line.starts_with("nbd listening on nbd://") {
                    *nbd_line.lock().unwrap_or_else(PoisonError::into_inner) = Some(line.clone());
                }
                if !sent && line.contains("http://") {
                    sent = true;
                    let _ = tx.send(line);
                }
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => break line,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(20)),
            }
            self.check_alive("before printing its address");
            if Instant::now() > deadline {
                self.fail_start(&format!(
                    "printed no `listening on http://ADDR` line within {START_DEADLINE:?}"
                ));
            }
        };
        self.url_line = line.clone();
        self.addr = match self.launch.fixed_addr {
            Some(addr) => addr,
            None => match line
                .trim()
                .strip_prefix("listening on http://")
                .map(|a| a.trim_end_matches('/').parse::<SocketAddr>())
            {
                Some(Ok(addr)) => addr,
                _ => self.fail_start(&format!(
                    "printed {line:?}, not `listening on http://127.0.0.1:PORT`"
                )),
            },
        };
        assert!(
            self.addr.ip().is_loopback(),
            "the server listens on {}, not on 127.0.0.1",
            self.addr
        );
        if self.launch.pin_port {
            // From now on, restarts come back on this port.
            let listen = self.addr.to_string();
            if let Some(i) = self.launch.args.iter().position(|a| a == "--listen") {
                self.launch.args[i + 1] = listen;
            }
            self.launch.pin_port = false;
        }

        loop {
            let ok = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false);
            if ok {
                break;
            }
            self.check_alive("before /healthz answered 200");
            if Instant::now() > deadline {
                self.fail_start(&format!(
                    "/healthz did not answer 200 within {START_DEADLINE:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.file(&format!("logs/server-{}.stderr.log", self.runs))
    }

    /// What the current (or last) run wrote to stderr.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    #[track_caller]
    fn check_alive(&mut self, when: &str) {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the server process"));
        if let Some(status) = status {
            self.child = None;
            self.fail_start(&format!("exited with {status} {when}"));
        }
    }

    #[track_caller]
    fn fail_start(&mut self, why: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "quorum-server failed to start: it {why}.\ncommand: {}\nstderr:\n{}",
            self.command_line,
            self.stderr()
        );
    }

    /// Stops the server with SIGTERM and waits (bounded) for it to exit.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("poll the server process") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {STOP_DEADLINE:?} of SIGTERM\nstderr:\n{}",
                    tail(&self.stderr(), 4096)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the running server.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The NBD address the server printed (`nbd listening on nbd://ADDR`);
    /// panics if it printed none within [`START_DEADLINE`].
    #[track_caller]
    pub fn nbd_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let line = self
                .nbd_line
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(line) = line {
                let addr = line.trim().strip_prefix("nbd listening on nbd://");
                return addr.and_then(|a| a.parse().ok()).unwrap_or_else(|| {
                    panic!("printed {line:?}, not `nbd listening on nbd://ADDR`")
                });
            }
            assert!(
                Instant::now() < deadline,
                "`{}` printed no `nbd listening on nbd://ADDR` line within {START_DEADLINE:?}",
                self.command_line
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running server, for `/proc/PID/...`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The TCP addresses the running server listens on (from `/proc`).
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        super::listening_addrs(self.pid())
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("kill the server");
        child.wait().expect("reap the server");
    }

    /// Starts the server again, same command, same sandbox.
    #[track_caller]
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- quorum-server: {}\n--- its stderr (tail):\n{}\n---",
                self.command_line,
                tail(&self.stderr(), 8192)
            );
        }
    }
}

/// The command as a shell line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(s, "cd {} && ", dir.display());
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// The last `n` bytes of `s` (from a character boundary), for messages.
pub(super) fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
