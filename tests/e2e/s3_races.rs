//! Races of S3 children against their store, through a loopback proxy that
//! holds back or fails chosen requests on their way to a real SeaweedFS.
//!
//! The proxy ([`Proxy`]) speaks just enough HTTP/1.1 to see where one
//! request ends (Content-Length or chunked bodies) and where its answer
//! ends, so it can hold a whole request back after the client has given up
//! on it and send it on later, the way a slow network or a store that
//! queues requests lands a write late; or flip a byte of an answer's body,
//! the way a bad link or a store that serves other bytes than it hashed
//! would.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use quorum_core::Backend;

use crate::s3::{ACCESS_KEY, SECRET_KEY, Weed, s3_child};
use crate::util::*;

const CHUNK: u64 = 64 * KIB;
/// The longest the proxy holds a request, should a test never release it.
const MAX_HOLD: Duration = Duration::from_secs(60);
/// An idle connection of the proxy is closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// Connections the proxy serves at once; more are refused.
const MAX_CONNECTIONS: usize = 64;
/// The longest request or answer head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// Which requests a rule applies to: `(method, target)`.
type Matcher = fn(&str, &str) -> bool;

/// A PUT of a chunk object.
fn chunk_put(method: &str, target: &str) -> bool {
    method == "PUT" && target.contains("/chunks/")
}

/// A GET of chunk 2.
fn chunk_2_get(method: &str, target: &str) -> bool {
    method == "GET" && target.contains(&format!("/chunks/{:016x}", 2))
}

/// A request that got through the proxy, and the status it was answered.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub target: String,
    pub status: u16,
}

#[derive(Default)]
struct State {
    /// Hold the next request that matches.
    hold: Option<Matcher>,
    /// The held request: `(method, target)`, and whether it may go on.
    held: Option<(String, String)>,
    released: bool,
    /// The held request's answer from the store, once it came.
    late_answer: Option<u16>,
    /// Answer 500 to every request that matches, without forwarding it.
    fail: Option<Matcher>,
    /// Flip a byte in the body of the answer to the next request that
    /// matches.
    corrupt: Option<Matcher>,
    /// How many answers had a byte flipped.
    corrupted: usize,
    log: Vec<Exchange>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    connections: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A loopback HTTP proxy in front of one store (see the module docs).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let accept = {
            let shared = shared.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let shared = shared.clone();
                    thread::spawn(move || {
                        // A connection ends on EOF, an error or IDLE.
                        let _ = serve(&shared, client);
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, for an s3 child's `aws_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds the next request that `matcher` accepts until [`Proxy::release`].
    pub fn arm_hold(&self, matcher: Matcher) {
        let mut s = self.shared.state();
        s.hold = Some(matcher);
        s.held = None;
        s.released = false;
        s.late_answer = None;
    }

    /// The request being held, once one is.
    pub fn held(&self) -> Option<(String, String)> {
        self.shared.state().held.clone()
    }

    /// Lets the held request go on to the store, and waits (bounded) for
    /// the store's answer to it.
    pub fn release(&self) -> u16 {
        let deadline = Instant::now() + EFFECT_DEADLINE;
        let mut s = self.shared.state();
        assert!(s.held.is_some(), "no request is held");
        s.released = true;
        self.shared.changed.notify_all();
        loop {
            if let Some(status) = s.late_answer {
                return status;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the store did not answer the released request in time");
            s = self
                .shared
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Answers 500 to every request that `matcher` accepts (none: `None`).
    pub fn fail(&self, matcher: Option<Matcher>) {
        self.shared.state().fail = matcher;
    }

    /// Flips one byte in the body of the answer to the next request that
    /// `matcher` accepts (its headers, ETag included, unchanged).
    pub fn corrupt_next(&self, matcher: Matcher) {
        self.shared.state().corrupt = Some(matcher);
    }

    /// How many answers had a byte flipped so far.
    pub fn corrupted(&self) -> usize {
        self.shared.state().corrupted
    }

    /// Every exchange so far, in the order the answers came.
    pub fn log(&self) -> Vec<Exchange> {
        self.shared.state().log.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.state().released = true;
        self.shared.changed.notify_all();
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One HTTP message, whole: its parsed head and the raw bytes.
struct Message {
    head: Head,
    raw: Vec<u8>,
    /// Where the first byte of the body's data is in `raw`, if it has any.
    body_at: Option<usize>,
}

/// Relays one client connection, request by request.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let upstream = TcpStream::connect(shared.upstream)?;
    upstream.set_read_timeout(Some(IDLE))?;
    let mut from_store = BufReader::new(upstream.try_clone()?);
    let mut to_store = upstream;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(request) = read_message(&mut from_client, None)? else {
            break;
        };
        let method = request.head.method.clone();
        let target = request.head.target.clone();
        let (fail, hold) = {
            let mut s = shared.state();
            let fail = s.fail.is_some_and(|m| m(&method, &target));
            let hold = !fail && s.hold.is_some_and(|m| m(&method, &target));
            if hold {
                s.hold = None;
                s.held = Some((method.clone(), target.clone()));
            }
            (fail, hold)
        };
        if fail {
            to_client
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")?;
            shared.state().log.push(Exchange {
                method,
                target,
                status: 500,
            });
            continue;
        }
        if hold {
            let deadline = Instant::now() + MAX_HOLD;
            let mut s = shared.state();
            while !s.released && Instant::now() < deadline {
                s = shared
                    .changed
                    .wait_timeout(s, Duration::from_millis(100))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        to_store.write_all(&request.raw)?;
        let mut answer = read_message(&mut from_store, Some(&method))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the store closed the connection",
            )
        })?;
        let status = answer.head.status;
        {
            let mut s = shared.state();
            if s.corrupt.is_some_and(|m| m(&method, &target)) {
                if let Some(at) = answer.body_at {
                    answer.raw[at] ^= 0x01;
                    s.corrupt = None;
                    s.corrupted += 1;
                }
            }
            if hold {
                s.late_answer = Some(status);
                shared.changed.notify_all();
            }
            s.log.push(Exchange {
                method,
                target,
                status,
            });
        }
        // The client of a held request has usually gone: that ends this
        // connection, after the store has answered.
        if to_client.write_all(&answer.raw).is_err() {
            break;
        }
    }
    let _ = to_store.shutdown(Shutdown::Both);
    Ok(())
}

/// Reads one request (`method` is `None`) or one answer to a `method`
/// request, whole; `None` on EOF before its first byte.
fn read_message(r: &mut impl BufRead, method: Option<&str>) -> io::Result<Option<Message>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut raw = Vec::new();
    // The head, line by line, until it parses whole.
    let head = loop {
        if r.read_until(b'\n', &mut raw)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(bad("the head ended early".into()))
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(bad("the head is too long".into()));
        }
        let parsed = match method {
            None => parse_request_head(&raw),
            Some(_) => parse_response_head(&raw),
        };
        if let Some(head) = parsed.map_err(|e| bad(format!("a bad head: {e}")))? {
            break head;
        }
    };
    let mut body_at = None;
    match head.framing(method == Some("HEAD")) {
        Framing::Empty => {}
        Framing::Length(n) => {
            let start = raw.len();
            raw.resize(start + n, 0);
            r.read_exact(&mut raw[start..])?;
            body_at = (n > 0).then_some(start);
        }
        Framing::Chunked => loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            raw.extend_from_slice(&line);
            let size = chunk_size(&line).ok_or_else(|| bad("a bad chunk size".into()))?;
            if size > 0 && body_at.is_none() {
                body_at = Some(raw.len());
            }
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line)? == 0 || line == b"\r\n" {
                        raw.extend_from_slice(&line);
                        break;
                    }
                    raw.extend_from_slice(&line);
                }
                break;
            }
            let size = usize::try_from(size).map_err(|_| bad("a huge chunk".into()))?;
            let start = raw.len();
            raw.resize(start + size + 2, 0);
            r.read_exact(&mut raw[start..])?;
        },
        // An answer without a length ends with the connection.
        Framing::UntilClose => {
            let start = raw.len();
            r.read_to_end(&mut raw)?;
            body_at = (raw.len() > start).then_some(start);
        }
    }
    Ok(Some(Message { head, raw, body_at }))
}

/// The `127.0.0.1:PORT` of an `http://` endpoint.
fn socket_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback endpoint")
}

/// The bytes of object `path` on `weed`, or `None` when it is absent.
fn object(weed: &Weed, path: &str) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = weed.client();
    match rt.block_on(async {
        client
            .get(&ObjectPath::from(path))
            .await?
            .bytes()
            .await
            .map(|b| b.to_vec())
    }) {
        Ok(bytes) => Some(bytes),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("cannot read {path} from the store: {e}"),
    }
}

fn child_json(server: &Server, name: &str) -> serde_json::Value {
    let vol = server.get("/v1/volumes/vm").json();
    vol["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no child {name} in {vol}"))
}

/// Defect: a PUT that the s3 child gave up on (its client timed out) but
/// that reached the store later restored the chunk as it was, undoing a
/// newer acknowledged write on that child without a stale mark.
///
/// Two file children and an s3 child behind the proxy, threshold 2: write
/// A; hold the next chunk PUT and write B (the s3 child times out, the
/// volume acknowledges B and marks the child stale, or, before the fix, an
/// object_store retry of the PUT got through); write C over the same
/// bytes, which reaches the s3 child; then let B's PUT land. The chunk must
/// still hold C (the store refuses B's PUT: its If-Match names the chunk as
/// it was before C), or the child must be stale there.
#[test]
fn a_put_that_lands_late_does_not_undo_a_newer_write() {
    let weed = Weed::start();
    let proxy = Proxy::start(socket_addr(&weed.endpoint()));
    let s3 = s3_child("s", &weed, "vm").replace(&weed.endpoint(), &proxy.endpoint());
    let server = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &[child("a"), child("b"), s3]));
    // Part of chunk 1, so every write reads, patches and PUTs the chunk.
    let offset = CHUNK + 3 * BLOCK;
    let len = 2 * BLOCK as usize;
    let path = format!("vm/chunks/{:016x}", 1);
    let within = (offset - CHUNK) as usize..(offset - CHUNK) as usize + len;

    let a = vec![0xAA; len];
    server.write_volume("vm", offset, &a);
    proxy.arm_hold(chunk_put);
    let b = vec![0xBB; len];
    server.write_volume("vm", offset, &b);
    let (method, target) = proxy.held().expect("the PUT of B is held");
    assert!(
        method == "PUT" && target.contains(&path),
        "{method} {target}"
    );
    // Either B failed on the s3 child, which is stale now, or a retry of
    // the PUT got through (unconditional PUTs are retried after a
    // timeout); the held PUT is on its way either way. C is written until
    // it reaches the s3 child: while the child's breaker is open (its
    // first back-off is 500 ms) a write of C misses it and leaves it stale,
    // so a write after which the child is fresh reached it (or the resync
    // copied C onto it since).
    let c = vec![0xCC; len];
    wait_until("a write of C to reach the s3 child", || {
        server.write_volume("vm", offset, &c);
        child_json(&server, "s")["stale_bytes"] == 0
    });
    let before = object(&weed, &path).expect("chunk 1 exists");
    assert_all_bytes(&before[within.clone()], 0xCC, "chunk 1 before B lands");

    // B's PUT reaches the store now, long after its client gave up.
    let late = proxy.release();
    let after = object(&weed, &path).expect("chunk 1 exists");
    let stale = child_json(&server, "s")["stale_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after[within.clone()] == c[..] || stale > 0,
        "the late PUT (answered {late}) undid C on the s3 child, which is not stale: \
         the chunk holds {:#04x} at the written bytes",
        after[within.start]
    );
    assert_eq!(late, 412, "the store refuses the late PUT's precondition");
    assert_bytes_eq(
        &server.read_volume("vm", offset, len as u64),
        &c,
        "the volume",
    );
}

/// Opens an s3 child of `weed` under `prefix` directly, as the server
/// does, with `endpoint` (the proxy) as its `aws_endpoint`.
fn open_backend(endpoint: &str, prefix: &str) -> Arc<dyn Backend> {
    let options: BTreeMap<String, String> = [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", ACCESS_KEY),
        ("aws_secret_access_key", SECRET_KEY),
        ("chunk_size", "64KiB"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    quorum_backends::open(quorum_backends::ChildSource {
        uri: &format!("s3://blocks/{prefix}"),
        options: &options,
        base_dir: Path::new("."),
        size: Some(MIB),
        faults: &[],
        mark: "test",
        confine: None,
        create: true,
    })
    .expect("open the s3 child")
}

/// Defect: block status took any failed HEAD of a chunk for "absent", so a
/// store that failed the request made a chunk that holds an acknowledged
/// write read as zero. Only a 404 means absent: with HEADs failing, block
/// status still sees the data (it lists, and a listing that fails fails the
/// call).
#[test]
fn block_status_never_reads_a_failed_request_as_zero() {
    let weed = Weed::start();
    let proxy = Proxy::start(socket_addr(&weed.endpoint()));
    let backend = open_backend(&proxy.endpoint(), "status");
    backend
        .write_at(&[7u8; 100], CHUNK + 10)
        .expect("write into chunk 1");

    proxy.fail(Some(|method, _| method == "HEAD"));
    let map = backend
        .block_status(CHUNK, 2 * CHUNK, 16)
        .expect("block status without HEADs");
    assert_eq!(
        map.first().map(|e| (e.offset, e.length, e.zero)),
        Some((CHUNK, CHUNK, false)),
        "chunk 1 holds data: {map:?}"
    );
    proxy.fail(Some(|method, target| {
        method == "GET" && target.contains("list-type=2")
    }));
    let failed = backend.block_status(CHUNK, 2 * CHUNK, 16);
    assert!(failed.is_err(), "a failed listing is an error: {failed:?}");
    proxy.fail(None);
    assert!(backend.block_status(0, MIB, 16).is_ok());
}

/// A write that covers whole chunks never reads them: it overwrites a chunk
/// whose stored bytes are not a chunk's (here, 100 bytes), which a partial
/// write cannot (it must read the rest first). `write_unit` says so.
#[test]
fn whole_chunk_writes_overwrite_an_unreadable_chunk_without_reading_it() {
    let weed = Weed::start();
    let proxy = Proxy::start(socket_addr(&weed.endpoint()));
    let backend = open_backend(&proxy.endpoint(), "unit");
    assert_eq!(backend.write_unit(), CHUNK);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let path = format!("unit/chunks/{:016x}", 2);
    rt.block_on(
        weed.client()
            .put(&ObjectPath::from(path.as_str()), vec![9u8; 100].into()),
    )
    .expect("break chunk 2");
    let mut buf = vec![0u8; 10];
    assert!(
        backend.read_at(&mut buf, 2 * CHUNK).is_err(),
        "chunk 2 is broken"
    );
    assert!(
        backend.write_at(&[1u8; 10], 2 * CHUNK + 5).is_err(),
        "a partial write must read the broken chunk first"
    );

    let seen = proxy.log().len();
    let data = pattern(5, 2 * CHUNK as usize);
    backend
        .write_at(&data, 2 * CHUNK)
        .expect("overwrite chunks 2 and 3 whole");
    let reads: Vec<Exchange> = proxy.log()[seen..]
        .iter()
        .filter(|e| e.method == "GET")
        .cloned()
        .collect();
    assert!(reads.is_empty(), "a whole-chunk write read: {reads:?}");
    let mut back = vec![0u8; data.len()];
    backend.read_at(&mut back, 2 * CHUNK).expect("read back");
    assert_bytes_eq(&back, &data, "chunks 2 and 3");

    // Zeroing whole chunks deletes them, again without reading them.
    let seen = proxy.log().len();
    backend
        .write_zeroes(2 * CHUNK, 2 * CHUNK)
        .expect("zero chunks 2 and 3");
    assert!(object(&weed, &path).is_none(), "chunk 2 is deleted");
    let log = proxy.log();
    let deletes = log[seen..]
        .iter()
        .filter(|e| e.method == "DELETE" && (200..300).contains(&e.status))
        .count();
    assert_eq!(deletes, 2, "{:?}", &log[seen..]);
    assert!(
        log[seen..]
            .iter()
            .all(|e| !(e.method == "GET" && e.target.contains("/chunks/"))),
        "{:?}",
        &log[seen..]
    );
}

/// A chunk whose bytes do not match its ETag (README, S3 children: "every
/// GET checks the chunk's MD5 against its ETag"): the proxy flips one byte
/// of the body of a GET of chunk 2 on its way from the store, leaving the
/// headers as the store sent them. The s3 child's read fails with an I/O
/// error that names the MD5 and the ETag; the file children outvote it, the
/// error is counted and reported, and `rewrite_corrupted` writes the chunk
/// back; the next read, not tampered with, is clean.
#[test]
fn a_chunk_whose_bytes_do_not_match_its_etag_is_a_child_error() {
    let weed = Weed::start();
    let proxy = Proxy::start(socket_addr(&weed.endpoint()));
    let s3 = s3_child("s", &weed, "vm").replace(&weed.endpoint(), &proxy.endpoint());
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "rewrite_corrupted = true",
        &[child("a"), child("b"), s3],
    ));
    let data = pattern(62, 4 * CHUNK as usize);
    server.write_volume("vm", 0, &data);
    let chunk = &data[2 * CHUNK as usize..3 * CHUNK as usize];

    proxy.corrupt_next(chunk_2_get);
    assert_bytes_eq(
        &server.read_volume("vm", 2 * CHUNK, CHUNK),
        chunk,
        "the read of chunk 2",
    );
    assert_eq!(
        proxy.corrupted(),
        1,
        "the GET of chunk 2 was not tampered with"
    );
    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(reports.len(), 1, "{events:?}");
    check_report(reports[0], "vm", "s", "read", Some("MD5"));
    let error = reports[0]["data"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ETag"), "{error}");
    assert_eq!(
        server.metric(r#"quorum_child_errors_total{volume="vm",child="s",op="read"}"#),
        1.0
    );
    let rewrites = named(&events, "QUORUM_REWRITE");
    assert_eq!(rewrites.len(), 1, "{events:?}");
    assert_eq!(rewrites[0]["data"]["node-name"], "s", "{}", rewrites[0]);
    assert_bytes_eq(
        &object(&weed, "vm/chunks/0000000000000002").expect("chunk 2 exists"),
        chunk,
        "chunk 2 in the store",
    );

    let last = server.last_event_id();
    assert_bytes_eq(
        &server.read_volume("vm", 2 * CHUNK, CHUNK),
        chunk,
        "the next read of chunk 2",
    );
    let after = server.events(&format!("since={last}"));
    assert!(after.is_empty(), "{after:?}");
}
