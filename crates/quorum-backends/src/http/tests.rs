//! The remote child against a scripted server that answers as a
//! quorum-server without the discard route does (an older version).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};

use super::*;

/// The remote volume's size.
const SIZE: u64 = 1 << 20;

/// A server on 127.0.0.1 that answers `HEAD .../data` with [`SIZE`],
/// `POST .../write-zeroes` with `204`, and `POST .../discard` with
/// `discard` (status and JSON body); returns its base uri and the request
/// lines it got.
fn remote(discard: (u16, &'static str)) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("the address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let request = line.trim_end().to_owned();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                    }
                    let answer = if request.starts_with("HEAD ") {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n")
                    } else if request.contains("/write-zeroes?") {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
                    } else if request.contains("/discard?") {
                        let (status, body) = discard;
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 500 X\r\ncontent-length: 0\r\n\r\n".to_owned()
                    };
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(request);
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1/volumes/blk"), seen)
}

/// The request lines `seen` got after the `HEAD` of the open, as
/// `METHOD PATH` (the query left out).
fn requests(seen: &Mutex<Vec<String>>) -> Vec<String> {
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.iter()
        .skip(1)
        .map(|l| l.split('?').next().unwrap_or_default().to_owned())
        .collect()
}

const NO_ROUTE: &str =
    r#"{"error":{"code":"not_found","message":"no route /v1/volumes/blk/discard"}}"#;
const NO_VOLUME: &str = r#"{"error":{"code":"no_such_volume","message":"no volume blk"}}"#;

/// A remote without the discard route (`404 not_found`, or `405`) gets
/// write-zeroes, and after the first refusal only write-zeroes.
#[test]
fn a_remote_without_the_discard_route_gets_write_zeroes() {
    for refusal in [(404, NO_ROUTE), (405, "")] {
        let (uri, seen) = remote(refusal);
        let b = HttpBackend::open(&uri, &BTreeMap::new(), Some(SIZE), None).expect("open");
        b.discard(4096, 8192).expect("a discard, as write-zeroes");
        b.discard(0, 4096).expect("a second discard");
        assert_eq!(
            requests(&seen),
            [
                "POST /v1/volumes/blk/discard",
                "POST /v1/volumes/blk/write-zeroes",
                "POST /v1/volumes/blk/write-zeroes",
            ],
            "after {refusal:?}"
        );
    }
}

/// A `404` for a volume the remote does not have is the child's error, not
/// a reason to write zeroes.
#[test]
fn a_remote_without_the_volume_fails_the_discard() {
    let (uri, seen) = remote((404, NO_VOLUME));
    let b = HttpBackend::open(&uri, &BTreeMap::new(), Some(SIZE), None).expect("open");
    let e = b.discard(0, 4096).expect_err("no such volume");
    assert!(matches!(e, BackendError::Refused(_)), "{e}");
    assert_eq!(requests(&seen), ["POST /v1/volumes/blk/discard"]);
}

/// A closed port is unreachable (the server may start without it); a
/// uri that cannot be used is not.
#[test]
fn a_remote_that_does_not_answer_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let options = BTreeMap::from([("connect_timeout".to_owned(), "300ms".to_owned())]);
    let uri = format!("http://127.0.0.1:{port}/v1/volumes/x");
    match HttpBackend::open(&uri, &options, Some(4096), None) {
        Err(OpenError::Unreachable { uri: shown, source }) => {
            assert_eq!(shown, uri);
            assert!(
                matches!(
                    source,
                    BackendError::Unavailable(_) | BackendError::Timeout(_)
                ),
                "{source:?}"
            );
        }
        Err(e) => panic!("not unreachable: {e:?}"),
        Ok(_) => panic!("a closed port opened"),
    }
    let bad = HttpBackend::open("http://[::1", &options, Some(4096), None);
    assert!(matches!(bad, Err(OpenError::BadUri { .. })));
}
