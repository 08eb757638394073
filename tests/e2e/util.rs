//! The harness of the end-to-end tests.
//!
//! Every test gets a [`Sandbox`]: a fresh temporary directory that holds the
//! config file, the child files, the server's `data_dir` and its logs. A
//! [`Server`] is the real `quorum-server` binary (`CARGO_BIN_EXE_quorum-server`)
//! started in a sandbox with `--listen 127.0.0.1:0`: the harness reads the
//! `listening on http://ADDR` line from its stdout, polls `/healthz` until a
//! deadline, and kills the process when the `Server` is dropped. A start that
//! fails panics with the command line and the captured stderr; a test that
//! panics while a server runs prints the tail of the server's stderr.
//!
//! The server runs with its current directory set to `SANDBOX/cwd`, while the
//! config file sits in `SANDBOX/config.toml`: relative child URIs and the
//! default `data_dir` must follow the config file, so every test checks that
//! on the side.
//!
//! Logs go to `SANDBOX/logs/`. Set `QUORUM_E2E_KEEP=1` to keep the sandbox of
//! a failed test (its path is printed).
//!
//! All traffic goes to 127.0.0.1 and every wait is bounded by a deadline.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quorum-server");

/// The binary to run: [`BIN`], or `QUORUM_E2E_BIN` when set (to run the
/// suite against another build, e.g. a release binary).
pub fn bin() -> String {
    std::env::var("QUORUM_E2E_BIN").unwrap_or_else(|_| BIN.to_string())
}
/// How long a server may take to print its address and answer `/healthz`.
pub const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a background effect (a repair) may take to show.
pub const EFFECT_DEADLINE: Duration = Duration::from_secs(10);
/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// Timeout of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The embedded default's address (SPEC section 2).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8700";

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
/// The vote block (SPEC section 5).
pub const BLOCK: u64 = 4 * KIB;

/// The child files of the usual three-child volume.
pub const ABC: [&str; 3] = ["a.img", "b.img", "c.img"];

// ---------------------------------------------------------------------------
// Config snippets
// ---------------------------------------------------------------------------

/// A `[[volume]]` table. `options` are extra `key = value` lines of the
/// volume; `children` are `[[volume.child]]` tables (see [`child`]).
pub fn volume(
    name: &str,
    size: &str,
    threshold: u32,
    options: &str,
    children: &[String],
) -> String {
    let mut s = format!(
        "[[volume]]\nname = \"{name}\"\nsize = \"{size}\"\nvote_threshold = {threshold}\n{options}\n"
    );
    for c in children {
        s.push_str(c);
    }
    s
}

/// A file child named `name` with the relative uri `NAME.img`.
pub fn child(name: &str) -> String {
    child_with(name, "")
}

/// A file child with extra lines or sub-tables (fault rules) after it.
pub fn child_with(name: &str, extra: &str) -> String {
    format!("  [[volume.child]]\n  name = \"{name}\"\n  uri = \"{name}.img\"\n{extra}\n")
}

/// A `[[volume.child.fault]]` table for `op` with more `key = value` lines.
pub fn fault(op: &str, lines: &[&str]) -> String {
    let mut s = format!("    [[volume.child.fault]]\n    op = \"{op}\"\n");
    for l in lines {
        let _ = writeln!(s, "    {l}");
    }
    s
}

/// The usual volume `vm`: three file children a, b, c, threshold 2.
pub fn abc_volume(size: &str, options: &str) -> String {
    volume(
        "vm",
        size,
        2,
        options,
        &[child("a"), child("b"), child("c")],
    )
}

// ---------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------

/// A small deterministic generator (splitmix64), for tests' choices.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Deterministic pseudo-random bytes (splitmix64), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every bit of `bytes` flipped.
pub fn flipped(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| !b).collect()
}

/// The first offset where `a` and `b` differ (a length difference counts).
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// `assert_eq!` for large buffers: says where they differ instead of
/// printing megabytes.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if let Some(at) = first_diff(actual, expected) {
        panic!(
            "{what}: differs at byte {at} (actual {} bytes, expected {} bytes; \
             actual {:02x?}, expected {:02x?} from there)",
            actual.len(),
            expected.len(),
            &actual[at.min(actual.len())..(at + 16).min(actual.len())],
            &expected[at.min(expected.len())..(at + 16).min(expected.len())],
        );
    }
}

/// Asserts that every byte of `actual` is `byte`.
#[track_caller]
pub fn assert_all_bytes(actual: &[u8], byte: u8, what: &str) {
    if let Some(at) = actual.iter().position(|b| *b != byte) {
        panic!(
            "{what}: expected every one of {} bytes to be {byte:#04x}, byte {at} is {:#04x}",
            actual.len(),
            actual[at]
        );
    }
}

// ---------------------------------------------------------------------------
// Sandbox: a directory per test
// ---------------------------------------------------------------------------

/// A unique temporary directory with the config, the child files and logs.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("quorum-e2e-")
            .tempdir()
            .expect("create a temporary directory for the test");
        let path = dir.path().to_path_buf();
        for sub in ["cwd", "logs"] {
            fs::create_dir(path.join(sub)).expect("create a sandbox sub-directory");
        }
        Sandbox {
            dir: Some(dir),
            path,
        }
    }

    /// A file of the sandbox.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `SANDBOX/config.toml`.
    pub fn write_config(&self, config: &str) -> PathBuf {
        let path = self.file("config.toml");
        fs::write(&path, config).expect("write config.toml");
        path
    }

    /// Marks the sandbox's file `name` as one quorum made for `volume` of
    /// the server that serves this sandbox (as a child the config names is
    /// marked), so that it may be added back at run time with what it holds.
    pub fn mark_as_child_of(&self, name: &str, volume: &str) {
        let data_dir = self.file("quorum-data");
        fs::create_dir_all(&data_dir).expect("create the data dir");
        let mark = quorum_backends::Confinement::mark(&data_dir, volume);
        quorum_backends::FileBackend::open_marked(&self.file(name), None, &mark)
            .expect("mark a child file");
    }

    /// Creates (or truncates) a sparse file of `len` bytes.
    pub fn create_file(&self, name: &str, len: u64) {
        let f = File::create(self.file(name)).expect("create a child file");
        f.set_len(len).expect("size a child file");
    }

    /// Makes `name` exactly `len` bytes, every one `byte`.
    pub fn fill_file(&self, name: &str, byte: u8, len: u64) {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.file(name))
            .expect("open a child file to fill it");
        let chunk = vec![byte; MIB as usize];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(MIB) as usize;
            f.write_all_at(&chunk[..n], at).expect("fill a child file");
            at += n as u64;
        }
        f.set_len(len).expect("size a child file");
    }

    /// Makes `name` a sparse file of `len` bytes that holds `data` bytes of
    /// `byte` at the start of every `stride` bytes and holes between: with
    /// `data` and `stride - data` multiples of the filesystem block, a file
    /// of `2 * len / stride` extents.
    pub fn striped_file(&self, name: &str, len: u64, stride: u64, data: u64, byte: u8) {
        let f = File::create(self.file(name)).expect("create a child file");
        f.set_len(len).expect("size a child file");
        let block = vec![byte; data as usize];
        let mut at = 0;
        while at < len {
            let n = data.min(len - at) as usize;
            f.write_all_at(&block[..n], at).expect("write a child file");
            at += stride;
        }
    }

    /// pwrite into a child file (created if missing).
    pub fn write_file_at(&self, name: &str, offset: u64, data: &[u8]) {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.file(name))
            .expect("open a child file to write it");
        f.write_all_at(data, offset).expect("pwrite a child file");
    }

    /// pread from a child file.
    pub fn read_file_at(&self, name: &str, offset: u64, len: usize) -> Vec<u8> {
        let path = self.file(name);
        let f = File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, offset)
            .unwrap_or_else(|e| panic!("cannot read {len} bytes at {offset} of {name}: {e}"));
        buf
    }

    /// The whole content of a file of the sandbox.
    pub fn read_file(&self, name: &str) -> Vec<u8> {
        let path = self.file(name);
        fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Flips every bit of `len` bytes at `offset` of a child file.
    pub fn corrupt_file(&self, name: &str, offset: u64, len: usize) {
        let old = self.read_file_at(name, offset, len);
        self.write_file_at(name, offset, &flipped(&old));
    }

    /// The contents of some files, to compare later.
    pub fn snapshot(&self, names: &[&str]) -> Snapshot {
        Snapshot(
            names
                .iter()
                .map(|n| (n.to_string(), self.read_file(n)))
                .collect(),
        )
    }

    /// Asserts that the files of `snap` still hold exactly what they held.
    #[track_caller]
    pub fn assert_unchanged(&self, snap: &Snapshot, what: &str) {
        for (name, before) in &snap.0 {
            let now = self.read_file(name);
            assert_bytes_eq(&now, before, &format!("{what}: {name} changed"));
        }
    }

    /// Starts the server on `config` (written to `SANDBOX/config.toml`).
    #[track_caller]
    pub fn serve(self, config: &str) -> Server {
        self.serve_with_env(config, &[])
    }

    /// Like [`Sandbox::serve`] with extra environment variables.
    #[track_caller]
    pub fn serve_with_env(self, config: &str, env: &[(&str, &str)]) -> Server {
        let path = self.write_config(config);
        let launch = Launch {
            args: vec![
                "--config".into(),
                path.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: self.file("cwd"),
            fixed_addr: None,
        };
        Server::start(self, launch)
    }

    /// Starts the server on `config` at a fixed port of 127.0.0.1, so that a
    /// restart (after a kill) comes back at the same address.
    #[track_caller]
    pub fn serve_on(self, config: &str, port: u16) -> Server {
        let path = self.write_config(config);
        let launch = Launch {
            args: vec![
                "--config".into(),
                path.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
            env: vec![],
            cwd: self.file("cwd"),
            fixed_addr: None,
        };
        Server::start(self, launch)
    }

    /// Starts `quorum-server` with no arguments in this directory (the
    /// embedded default, on 127.0.0.1:8700).
    #[track_caller]
    pub fn serve_default(self) -> Server {
        let launch = Launch {
            args: vec![],
            env: vec![],
            cwd: self.path.clone(),
            fixed_addr: Some(DEFAULT_ADDR.parse().expect("parse the default address")),
        };
        Server::start(self, launch)
    }

    /// Runs the server on `config`, which must be refused: waits (bounded)
    /// for the process to exit and returns its status and output. Panics if
    /// the server starts listening instead.
    #[track_caller]
    pub fn start_expecting_failure(&self, config: &str) -> StartFailure {
        let path = self.write_config(config);
        let path = path.display().to_string();
        self.run_expecting_failure(&["--config", &path, "--listen", "127.0.0.1:0"])
    }

    /// Runs the server with `args`, which must make it exit: waits (bounded)
    /// for the exit and returns its status and stderr. Panics if the server
    /// starts listening instead.
    #[track_caller]
    pub fn run_expecting_failure(&self, args: &[&str]) -> StartFailure {
        let stdout_path = self.file("logs/refused.stdout.log");
        let stderr_path = self.file("logs/refused.stderr.log");
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.file("cwd"))
            .env_remove("QUORUM_TOKEN")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create the stdout log"))
            .stderr(File::create(&stderr_path).expect("create the stderr log"));
        let command_line = describe(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command_line}`: {e}"));
        let deadline = Instant::now() + START_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the server process") {
                break status;
            }
            let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
            if stdout.contains("listening on") || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{command_line}` should have exited with an error, but it {}.\n\
                     config.toml:\n{}\nstderr:\n{}",
                    if stdout.contains("listening on") {
                        "started listening"
                    } else {
                        "was still running after the deadline"
                    },
                    fs::read_to_string(self.file("config.toml")).unwrap_or_default(),
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        StartFailure {
            status,
            stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
            command_line,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if thread::panicking() && std::env::var_os("QUORUM_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the test directory {}", dir.keep().display());
            }
        }
    }
}

/// Saved contents of child files.
pub struct Snapshot(Vec<(String, Vec<u8>)>);

/// What a refused start left behind.
pub struct StartFailure {
    pub status: ExitStatus,
    pub stderr: String,
    pub command_line: String,
}

impl StartFailure {
    /// Asserts the refusal of SPEC section 2: a non-zero exit and exactly
    /// one line on stderr, which it returns.
    #[track_caller]
    pub fn one_line(&self) -> &str {
        assert!(
            !self.status.success(),
            "`{}` exited with {}",
            self.command_line,
            self.status
        );
        let line = self.stderr.trim();
        assert_eq!(
            line.lines().count(),
            1,
            "`{}`: the refusal should be one line of stderr: {line:?}",
            self.command_line
        );
        line
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// "METHOD target" of the request, for messages.
    pub request: String,
}

impl Resp {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), cut for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The start of the body as text, for messages.
    pub fn preview(&self) -> String {
        let cut = &self.body[..self.body.len().min(2048)];
        String::from_utf8_lossy(cut).into_owned()
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: the body is not JSON ({e}): {:?}",
                self.request,
                self.preview()
            )
        })
    }

    /// Asserts the status.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "{}: expected status {status}, got {} with body {:?}",
            self.request,
            self.status,
            self.preview()
        );
        self
    }

    /// Asserts an error answer of SPEC section 4:
    /// `{"error": {"code": CODE, "message": "..."}}`. Returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        self.expect_status(status);
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.contains("json"),
            "{}: an error answer should be JSON, content-type is {ct:?}",
            self.request
        );
        let v = self.json();
        assert_eq!(
            v["error"]["code"], code,
            "{}: wrong error code in {v}",
            self.request
        );
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: error.message is not a string in {v}", self.request));
        assert!(
            !message.is_empty(),
            "{}: error.message is empty",
            self.request
        );
        message.to_string()
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// How to (re)start a server.
#[derive(Clone)]
struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Set when the address is not printed for `127.0.0.1:0`.
    fixed_addr: Option<SocketAddr>,
}

/// A running `quorum-server` in a sandbox. Derefs to its [`Sandbox`].
pub struct Server {
    sandbox: Sandbox,
    launch: Launch,
    child: Option<Child>,
    addr: SocketAddr,
    client: Client,
    token: Option<String>,
    command_line: String,
    /// The line the server printed with its URL.
    pub url_line: String,
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
    fn start(sandbox: Sandbox, launch: Launch) -> Server {
        let client = Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        let mut server = Server {
            sandbox,
            launch,
            child: None,
            addr: "127.0.0.1:9".parse().expect("parse a placeholder address"),
            client,
            token: None,
            command_line: String::new(),
            url_line: String::new(),
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
        thread::spawn(move || {
            let mut log = File::create(stdout_log).ok();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
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

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `Authorization: Bearer TOKEN` from now on (or nothing).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_string);
    }

    /// A request to `path` with the current token, if any.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request and reads the whole answer.
    #[track_caller]
    pub fn send(&self, rb: RequestBuilder) -> Resp {
        let req = rb.build().expect("build a request");
        let url = req.url();
        let what = match url.query() {
            Some(q) => format!("{} {}?{q}", req.method(), url.path()),
            None => format!("{} {}", req.method(), url.path()),
        };
        let resp = self
            .client
            .execute(req)
            .unwrap_or_else(|e| self.request_failed(&what, &e));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .bytes()
            .unwrap_or_else(|e| self.request_failed(&what, &e))
            .to_vec();
        Resp {
            status,
            headers,
            body,
            request: what,
        }
    }

    #[track_caller]
    fn request_failed(&self, what: &str, e: &reqwest::Error) -> ! {
        panic!(
            "{what} failed: {e} ({:?})\nserver stderr:\n{}",
            std::error::Error::source(e),
            tail(&self.stderr(), 4096)
        )
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path))
    }

    #[track_caller]
    pub fn get_range(&self, path: &str, range: &str) -> Resp {
        self.send(self.request(Method::GET, path).header("range", range))
    }

    #[track_caller]
    pub fn head(&self, path: &str) -> Resp {
        self.send(self.request(Method::HEAD, path))
    }

    #[track_caller]
    pub fn put(&self, path: &str, body: Vec<u8>) -> Resp {
        self.send(self.request(Method::PUT, path).body(body))
    }

    #[track_caller]
    pub fn post(&self, path: &str) -> Resp {
        self.send(self.request(Method::POST, path))
    }

    /// Reads `len` bytes of volume `vol` at `offset` with a Range request;
    /// asserts 206 and the Content-Range.
    #[track_caller]
    pub fn read_volume(&self, vol: &str, offset: u64, len: u64) -> Vec<u8> {
        let last = offset + len - 1;
        let r = self.get_range(
            &format!("/v1/volumes/{vol}/data"),
            &format!("bytes={offset}-{last}"),
        );
        r.expect_status(206);
        let cr = r.header("content-range").unwrap_or("");
        assert!(
            cr.starts_with(&format!("bytes {offset}-{last}/")),
            "{}: Content-Range is {cr:?}",
            r.request
        );
        assert_eq!(r.body.len() as u64, len, "{}: body length", r.request);
        r.body
    }

    /// Writes `data` at `offset` of volume `vol`; asserts 204.
    #[track_caller]
    pub fn write_volume(&self, vol: &str, offset: u64, data: &[u8]) {
        self.put(
            &format!("/v1/volumes/{vol}/data?offset={offset}"),
            data.to_vec(),
        )
        .expect_status(204);
    }

    /// Events of `/v1/events?QUERY`, with their shape checked (SPEC section 6).
    #[track_caller]
    pub fn events(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/events?{query}"));
        r.expect_status(200);
        let v = r.json();
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("/v1/events?{query} is not a JSON array: {v}"))
            .clone();
        let mut last = 0;
        for ev in &list {
            check_event_shape(ev);
            let id = ev["id"].as_u64().unwrap_or(0);
            assert!(id > last, "event ids are not increasing in {v}");
            last = id;
        }
        list
    }

    /// Every event.
    #[track_caller]
    pub fn all_events(&self) -> Vec<Value> {
        self.events("since=0")
    }

    /// The id of the newest event, 0 without any.
    #[track_caller]
    pub fn last_event_id(&self) -> u64 {
        self.all_events()
            .last()
            .map(|e| e["id"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    }

    /// A request written by hand on a fresh connection: for targets that an
    /// HTTP library would normalize (`..`, `%2e%2e`). Sends the token if set.
    #[track_caller]
    pub fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let length = body.len().to_string();
        let mut all = headers.to_vec();
        all.push(("Content-Length", &length));
        let mut bytes = self.raw_head(method, target, &all);
        bytes.extend_from_slice(body);
        self.raw_exchange(&format!("{method} {target}"), &bytes, method == "HEAD")
    }

    /// Like [`Server::raw`] with a `Transfer-Encoding: chunked` body made of
    /// `chunks`, so that the server learns the size only while reading.
    #[track_caller]
    pub fn raw_chunked(&self, method: &str, target: &str, chunks: &[&[u8]]) -> Resp {
        let mut bytes = self.raw_head(method, target, &[("Transfer-Encoding", "chunked")]);
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            bytes.extend_from_slice(c);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        self.raw_exchange(&format!("{method} {target} (chunked)"), &bytes, false)
    }

    fn raw_head(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            let _ = write!(head, "Authorization: Bearer {t}\r\n");
        }
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends `request` on a fresh connection and reads the answer until the
    /// server closes. A server may answer (413, 4xx) before it has read the
    /// whole body and close: a failed send is then not an error as long as
    /// an answer arrives.
    #[track_caller]
    fn raw_exchange(&self, what: &str, request: &[u8], head_request: bool) -> Resp {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: cannot connect to {}: {e}", self.addr));
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .expect("set a write timeout");
        let sent = stream.write_all(request);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if buf.is_empty() => {
                    panic!("{what}: no answer: {e} (sending: {sent:?})")
                }
                Err(_) => break,
            }
        }
        parse_response(&buf, head_request, what.to_string())
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

    /// The process id of the running server, for `/proc/PID/...`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The value of one series of `/metrics`, e.g.
    /// `quorum_child_errors_total{volume="vm",child="a",op="read"}`; panics if
    /// the series is absent.
    #[track_caller]
    pub fn metric(&self, series: &str) -> f64 {
        self.metric_if_any(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }

    /// The value of one series of `/metrics`, or `None` when it is absent
    /// (a counter nothing has counted yet).
    #[track_caller]
    pub fn metric_if_any(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").expect_status(200).text();
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
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
fn describe(cmd: &Command) -> String {
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

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked or until EOF).
fn parse_response(buf: &[u8], head_request: bool, request: String) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{request}: incomplete answer {:?}",
                String::from_utf8_lossy(buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{request}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if head_request || status == 204 || status == 304 {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest, &request)
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
        request,
    }
}

fn dechunk(mut rest: &[u8], request: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            panic!("{request}: truncated chunked body");
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("{request}: bad chunk size {size_text:?}"));
        rest = &rest[eol + 2..];
        if size == 0 {
            return body;
        }
        assert!(rest.len() >= size + 2, "{request}: truncated chunk");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// Asserts the envelope of SPEC section 6.
#[track_caller]
pub fn check_event_shape(ev: &Value) {
    assert!(
        ev["id"].as_u64().is_some_and(|id| id >= 1),
        "event id should be an integer >= 1: {ev}"
    );
    let ts = ev["timestamp"].as_str().unwrap_or("");
    let b = ts.as_bytes();
    let rfc3339 = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':'
        && (ts.ends_with(['Z', 'z']) || matches!(b[b.len() - 6], b'+' | b'-'));
    assert!(rfc3339, "event timestamp is not RFC 3339: {ev}");
    assert!(ev["event"].is_string(), "event name missing: {ev}");
    assert!(ev["volume"].is_string(), "event volume missing: {ev}");
    assert!(ev["data"].is_object(), "event data is not an object: {ev}");
}

/// The events named `name`.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The QUORUM_REPORT_BAD events of child `node`.
pub fn reports_for<'a>(events: &'a [Value], node: &str) -> Vec<&'a Value> {
    named(events, "QUORUM_REPORT_BAD")
        .into_iter()
        .filter(|e| e["data"]["node-name"] == node)
        .collect()
}

/// An unsigned field of an event's data.
#[track_caller]
pub fn data_u64(ev: &Value, key: &str) -> u64 {
    ev["data"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("data.{key} is not an unsigned integer in {ev}"))
}

/// Asserts `sector-num` and `sectors-count` agree with `offset` and `bytes`
/// (512-byte sectors, SPEC section 6).
#[track_caller]
pub fn check_sectors(ev: &Value) {
    let offset = data_u64(ev, "offset");
    let bytes = data_u64(ev, "bytes");
    let sector = offset / 512;
    let count = (offset + bytes).div_ceil(512) - sector;
    assert_eq!(data_u64(ev, "sector-num"), sector, "sector-num of {ev}");
    assert_eq!(
        data_u64(ev, "sectors-count"),
        count,
        "sectors-count of {ev}"
    );
}

/// Asserts a QUORUM_REPORT_BAD: volume, child, type, sectors, and that an
/// `error` is present (containing `error`) or absent.
#[track_caller]
pub fn check_report(ev: &Value, volume: &str, node: &str, kind: &str, error: Option<&str>) {
    assert_eq!(ev["event"], "QUORUM_REPORT_BAD", "{ev}");
    assert_eq!(ev["volume"], volume, "volume of {ev}");
    assert_eq!(ev["data"]["node-name"], node, "node-name of {ev}");
    assert_eq!(ev["data"]["type"], kind, "type of {ev}");
    check_sectors(ev);
    match error {
        Some(text) => {
            let e = ev["data"]["error"].as_str().unwrap_or_else(|| {
                panic!("a report of a failed child should carry an error: {ev}")
            });
            assert!(e.contains(text), "error of {ev} should contain {text:?}");
        }
        None => assert!(
            ev["data"].get("error").is_none(),
            "a report of a child that answered should carry no error: {ev}"
        ),
    }
}

/// Asserts a reported range lies inside `[lo, hi)` and covers `[from, to)`.
#[track_caller]
pub fn check_range_within(ev: &Value, lo: u64, hi: u64, from: u64, to: u64) {
    let offset = data_u64(ev, "offset");
    let end = offset + data_u64(ev, "bytes");
    assert!(
        lo <= offset && end <= hi,
        "reported range {offset}..{end} should lie in {lo}..{hi}: {ev}"
    );
    assert!(
        offset <= from && to <= end,
        "reported range {offset}..{end} should cover {from}..{to}: {ev}"
    );
}

/// Polls `cond` until it holds or [`EFFECT_DEADLINE`] passes.
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EFFECT_DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {EFFECT_DEADLINE:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
