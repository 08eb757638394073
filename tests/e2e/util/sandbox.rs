//! The sandbox: a unique temporary directory per test with the config, the
//! child files, the server's `data_dir` and its logs; and starting a server
//! in it, or a start that must be refused.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::server::Launch;
use super::{DEFAULT_ADDR, MIB, START_DEADLINE, Server, assert_bytes_eq, bin, describe, flipped};

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
        let mark = quorum_backends::Confinement::mark(&data_dir, volume).expect("the server id");
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
        self.serve_config(config, env, false)
    }

    /// Like [`Sandbox::serve`] with more arguments after `--config` and
    /// `--listen` (`--log-format json`).
    #[track_caller]
    pub fn serve_with_args(self, config: &str, extra: &[&str]) -> Server {
        let path = self.write_config(config);
        let mut args: Vec<String> = vec![
            "--config".into(),
            path.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let launch = Launch {
            args,
            env: vec![],
            cwd: self.file("cwd"),
            fixed_addr: None,
            pin_port: false,
        };
        Server::start(self, launch)
    }

    /// Like [`Sandbox::serve`], as an operator in the sandbox runs it:
    /// `--config config.toml`, a path relative to the current directory.
    #[track_caller]
    pub fn serve_relative(self, config: &str) -> Server {
        self.write_config(config);
        let launch = Launch {
            args: vec![
                "--config".into(),
                "config.toml".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            env: vec![],
            cwd: self.path.clone(),
            fixed_addr: None,
            pin_port: false,
        };
        Server::start(self, launch)
    }

    /// Starts the server on `config` at a port of 127.0.0.1 the kernel
    /// picks, and restarts it (after a kill) on that port, so that others
    /// that name its address find it again (see `ports`).
    #[track_caller]
    pub fn serve_pinned(self, config: &str) -> Server {
        self.serve_config(config, &[], true)
    }

    /// Starts the server on `config` at a port the kernel picks, with `env`;
    /// `pin_port` keeps that port across restarts.
    #[track_caller]
    fn serve_config(self, config: &str, env: &[(&str, &str)], pin_port: bool) -> Server {
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
            pin_port,
        };
        Server::start(self, launch)
    }

    /// Starts `quorum-server` with no arguments in this directory (the
    /// embedded default, on 127.0.0.1:8700). The caller holds the
    /// [`DefaultPortLock`](super::DefaultPortLock), which proves it.
    #[track_caller]
    pub fn serve_default(self, _port: &super::DefaultPortLock) -> Server {
        let launch = Launch {
            args: vec![],
            env: vec![],
            cwd: self.path.clone(),
            fixed_addr: Some(DEFAULT_ADDR.parse().expect("parse the default address")),
            pin_port: false,
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
