//! Raw-socket HTTP for hostile tests: requests written by hand (targets an
//! HTTP library would normalize, framing that lies, bodies that stall) and
//! messages parsed by `httparse`, whole or as far as they came.
//!
//! This is the one parser of hand-made exchanges: [`Server::raw`], the
//! tests that drive their own sockets (limits, reliability) and the fake
//! servers and proxies of others (confinement, s3_races) all read heads
//! with [`parse_request_head`] or [`parse_response_head`], and answers with
//! [`parse_answer`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use httparse::Status;

use super::{REQUEST_TIMEOUT, Resp, Server};

/// At most this many headers in a parsed head.
const MAX_HEADERS: usize = 100;

/// A request head (HTTP/1.1, `Host`, `Connection: close`) with `headers`,
/// without the server's token: a test that wants it sends it itself.
pub fn request_head(
    server: &Server,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut s = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        server.addr()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The head of an HTTP/1.1 message.
#[derive(Debug, Clone)]
pub struct Head {
    /// A request's method ("" in an answer).
    pub method: String,
    /// A request's target ("" in an answer).
    pub target: String,
    /// An answer's status (0 in a request).
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, its empty line included: the body starts there.
    pub len: usize,
}

/// How the body after a head ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`, up to the last chunk.
    Chunked,
    /// An answer without a length: the body ends with the connection.
    UntilClose,
}

impl Head {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How the body after this head ends; `head_request` for an answer to
    /// a `HEAD` request (which has none).
    pub fn framing(&self, head_request: bool) -> Framing {
        let answer = self.status != 0;
        if answer && (head_request || self.status < 200 || matches!(self.status, 204 | 304)) {
            return Framing::Empty;
        }
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = self.header("content-length").and_then(|v| v.parse().ok());
        match (chunked, length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) if answer => Framing::UntilClose,
            (false, None) => Framing::Empty,
        }
    }
}

fn collect_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

/// Parses a request head from the bytes read so far: `Ok(None)` until the
/// head is whole, an error for bytes that are not an HTTP/1.x request.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Status::Complete(len) = req.parse(buf)? else {
        return Ok(None);
    };
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        status: 0,
        headers: collect_headers(req.headers),
        len,
    }))
}

/// Parses an answer's head from the bytes read so far: `Ok(None)` until
/// the head is whole, an error for bytes that are not an HTTP/1.x answer.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let Status::Complete(len) = resp.parse(buf)? else {
        return Ok(None);
    };
    Ok(Some(Head {
        method: String::new(),
        target: String::new(),
        status: resp.code.unwrap_or_default(),
        headers: collect_headers(resp.headers),
        len,
    }))
}

/// An answer read from a socket, as far as it came.
#[derive(Debug)]
pub struct Answer {
    pub head: Head,
    /// The body (de-chunked), as far as it came.
    pub body: Vec<u8>,
    /// The body is all there: as long as its `Content-Length`, up to its
    /// last chunk, or none to come. An answer that ends with the connection
    /// is never whole: only its reader knows when the connection closed.
    pub whole: bool,
}

impl Answer {
    /// The answer as a [`Resp`] to `request` ("METHOD target").
    pub fn into_resp(self, request: String) -> Resp {
        Resp {
            status: self.head.status,
            headers: self.head.headers,
            body: self.body,
            request,
        }
    }
}

/// Parses the bytes of an answer read so far: `Ok(None)` until its head is
/// whole; an error for bytes that are not an HTTP answer or a malformed
/// chunked body. `head_request`: the answer is to a `HEAD` request.
pub fn parse_answer(buf: &[u8], head_request: bool) -> Result<Option<Answer>, String> {
    let Some(head) = parse_response_head(buf).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let rest = &buf[head.len..];
    let (body, whole) = match head.framing(head_request) {
        Framing::Empty => (Vec::new(), true),
        Framing::Length(n) => (rest[..n.min(rest.len())].to_vec(), rest.len() >= n),
        Framing::Chunked => dechunk(rest)?,
        Framing::UntilClose => (rest.to_vec(), false),
    };
    Ok(Some(Answer { head, body, whole }))
}

/// The size of a chunk's size line (`SIZE[;extensions]\r\n`), `None` for
/// a line that is not one.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    match httparse::parse_chunk_size(line) {
        Ok(Status::Complete((_, size))) => Some(size),
        _ => None,
    }
}

/// The data of a chunked body as far as it came, and whether its last
/// chunk came.
fn dechunk(mut rest: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    loop {
        let size = httparse::parse_chunk_size(rest).map_err(|_| {
            let line = &rest[..rest.len().min(32)];
            format!("a bad chunk size line {:?}", String::from_utf8_lossy(line))
        })?;
        let Status::Complete((at, size)) = size else {
            return Ok((body, false));
        };
        if size == 0 {
            return Ok((body, true));
        }
        let data = &rest[at..];
        let size = usize::try_from(size).map_err(|_| format!("a chunk of {size} bytes"))?;
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..size.min(data.len())]);
            return Ok((body, false));
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(format!("a chunk of {size} bytes without its CRLF"));
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

impl Server {
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

    /// [`request_head`] with the token, if set.
    fn raw_head(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        all.extend_from_slice(headers);
        request_head(self, method, target, &all)
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
        let answer = parse_answer(&buf, head_request).unwrap_or_else(|e| {
            panic!(
                "{what}: not an HTTP answer ({e}): {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
        let Some(answer) = answer else {
            panic!(
                "{what}: incomplete answer {:?}",
                String::from_utf8_lossy(&buf)
            );
        };
        if answer.head.framing(head_request) == Framing::Chunked && !answer.whole {
            panic!("{what}: truncated chunked body");
        }
        answer.into_resp(what.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer in `buf`, whose head must be whole.
    fn answer(buf: &[u8], head_request: bool) -> Answer {
        parse_answer(buf, head_request)
            .expect("an HTTP answer")
            .expect("a whole head")
    }

    #[test]
    fn an_answer_with_a_length_is_whole_once_its_body_came() {
        let full = b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n\
                     content-length: 5\r\n\r\nhello";
        assert!(matches!(parse_answer(&full[..20], false), Ok(None)));
        let part = answer(&full[..full.len() - 2], false);
        assert_eq!((part.head.status, part.whole), (413, false));
        assert_eq!(part.body, b"hel");
        let whole = answer(full, false);
        assert!(whole.whole);
        assert_eq!(whole.body, b"hello");
        assert_eq!(whole.head.header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn chunked_answers_are_dechunked_as_far_as_they_came() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let whole = answer(full, false);
        assert!(whole.whole);
        assert_eq!(whole.body, b"abcde");
        let cut = answer(&full[..full.len() - 8], false);
        assert!(!cut.whole);
        assert_eq!(cut.body, b"abcd");
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_answer(bad, false).is_err());
    }

    #[test]
    fn bodiless_and_close_delimited_answers() {
        assert!(answer(b"HTTP/1.1 204 No Content\r\n\r\n", false).whole);
        assert!(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true).whole);
        let open = answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", false);
        assert!(!open.whole);
        assert_eq!(open.body, b"until the end");
        assert!(parse_answer(b"GARBAGE\r\n\r\n", false).is_err());
    }

    #[test]
    fn request_heads_and_their_framing() {
        let req = b"PUT /v1/volumes/vm/data?offset=0 HTTP/1.1\r\nHost: x\r\n\
                    Content-Length: 7\r\n\r\nbody";
        assert!(matches!(parse_request_head(&req[..30]), Ok(None)));
        let head = parse_request_head(req)
            .expect("a request")
            .expect("a whole head");
        assert_eq!(head.method, "PUT");
        assert_eq!(head.target, "/v1/volumes/vm/data?offset=0");
        assert_eq!(head.framing(false), Framing::Length(7));
        assert_eq!(&req[head.len..], b"body");
        assert_eq!(chunk_size(b"1f;x=y\r\n"), Some(31));
        assert_eq!(chunk_size(b"zz\r\n"), None);
        let get = parse_request_head(b"GET / HTTP/1.1\r\n\r\n")
            .expect("a request")
            .expect("a whole head");
        assert_eq!(get.framing(false), Framing::Empty);
    }
}
