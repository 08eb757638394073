//! External tools the tests run: found on PATH or in the test-tools venv
//! (a missing one fails the test, saying how to install it: never a
//! skip), and run with a deadline in their own process group, killed when
//! they overrun.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::describe;

/// What to run when a tool is missing.
pub const INSTALL: &str = "run `scripts/install-test-deps` (it installs chromium, prometheus/promtool, \
                           the venv in target/test-tools/venv and tests/dashboard/node_modules)";

/// The test-tools venv's `bin` (`scripts/install-test-deps` fills it).
pub fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin")
}

/// The path of `name` on PATH; panics telling to install the test tools.
#[track_caller]
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: {INSTALL}"))
}

/// Asserts that a file the tools installed exists.
#[track_caller]
pub fn require_file(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} ({}) is missing: {INSTALL}",
        path.display()
    );
}

/// What a bounded run of an external command left.
pub struct Run {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// How long it ran.
    pub took: Duration,
    /// Its command line, for messages.
    pub command: String,
}

impl Run {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Panics with the command and its output unless it succeeded.
    #[track_caller]
    pub fn expect_success(&self, what: &str) {
        assert!(
            self.success(),
            "{what}: `{}` {} after {:.1?}; its output:\n{}",
            self.command,
            match self.status {
                Some(s) => format!("failed with {s}"),
                None => "was killed at its deadline".to_string(),
            },
            self.took,
            self.output
        );
    }
}

/// Runs `cmd` (stdin from `stdin`, or none) with its output to `log`, in its
/// own process group; kills the group if it runs past `deadline`.
pub fn run_bounded(cmd: &mut Command, stdin: Option<&Path>, log: &Path, deadline: Duration) -> Run {
    let out = File::create(log).expect("create a tool's log");
    let err = out.try_clone().expect("clone a log handle");
    let stdin = match stdin {
        Some(p) => Stdio::from(
            File::open(p).unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display())),
        ),
        None => Stdio::null(),
    };
    cmd.stdin(stdin).stdout(out).stderr(err).process_group(0);
    let command = describe(cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll a tool") {
            break Some(s);
        }
        if start.elapsed() > deadline {
            kill_group(&child);
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        output: fs::read_to_string(log).unwrap_or_default(),
        took: start.elapsed(),
        command,
    }
}

/// SIGKILL to the process group led by `child` (started with
/// `process_group(0)`): the tool and whatever it started.
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}
