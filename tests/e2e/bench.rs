//! `quorum-bench` (`bench/compare.sh`, `bench/s3.sh`): a server config's
//! volume and an s3 child's own object_store client driven against a real
//! SeaweedFS, and a run in which a child fails is an error, not a figure.

use std::path::Path;
use std::process::{Command, Output};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use crate::s3::{Weed, chunk_object, runtime, s3_child};
use crate::util::*;

const BENCH: &str = env!("CARGO_BIN_EXE_quorum-bench");

/// Runs `quorum-bench --config CONFIG ARGS...`.
fn bench(config: &Path, args: &[&str]) -> Output {
    Command::new(BENCH)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run quorum-bench")
}

#[track_caller]
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "quorum-bench failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "quorum-bench succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The size of object `path` on `weed`.
fn object_size(weed: &Weed, path: &str) -> u64 {
    runtime()
        .block_on(weed.client().head(&ObjectPath::from(path)))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .size
}

#[test]
fn a_config_volume_of_an_s3_child_and_its_direct_client_run_on_seaweedfs() {
    let weed = Weed::start();
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&volume("vm", "1MiB", 1, "", &[s3_child("s0", &weed, "vm")]));

    // The engine over the config's child, at the child's own depth.
    let out = succeeded(&bench(&config, &["-w", "-s", "64KiB", "-c", "16"]));
    assert!(
        out.starts_with("16 write requests of ") && out.contains("(depth 16, 1 children)"),
        "{out}"
    );
    for index in 0..16 {
        let chunk = chunk_object("vm", index).to_string();
        assert_eq!(object_size(&weed, &chunk), 64 * KIB, "{chunk}");
    }
    let out = succeeded(&bench(&config, &["--random", "-s", "4KiB", "-c", "32"]));
    assert!(
        out.contains("32 read requests of ") && out.contains(", random)"),
        "{out}"
    );

    // The child's own client: whole objects named by offset / size.
    let out = succeeded(&bench(
        &config,
        &["--direct", "-w", "-s", "64KiB", "-c", "4"],
    ));
    assert!(
        out.contains("object_store direct to s3(blocks/vm)") && out.contains("(depth 16,"),
        "{out}"
    );
    for index in 0..4 {
        let path = format!("vm/direct/{index:016x}");
        assert_eq!(object_size(&weed, &path), 64 * KIB, "{path}");
    }
    succeeded(&bench(&config, &["--direct", "-s", "64KiB", "-c", "4"]));
    // A read of a size the objects do not have is refused, not timed.
    let err = failed(&bench(&config, &["--direct", "-s", "128KiB", "-c", "1"]));
    assert!(err.contains("holds 65536 bytes, not 131072"), "{err}");
}

#[test]
fn a_run_in_which_a_child_fails_is_an_error() {
    let sandbox = Sandbox::new();
    let rule = fault("read", &["error = \"EIO\""]);
    let config = sandbox.write_config(&volume(
        "vm",
        "1MiB",
        1,
        "",
        &[child_with("a", &rule), child("b")],
    ));
    // Writes do not touch the fault: the run stands.
    succeeded(&bench(&config, &["-w", "-s", "64KiB", "-c", "16"]));
    // Every read still succeeds on b, but a failed: no figures.
    let err = failed(&bench(&config, &["-s", "64KiB", "-c", "4"]));
    assert!(
        err.contains("child failures or lost votes during the run")
            && err.contains("the first: a: "),
        "{err}"
    );
}
