//! Requests through `reqwest` (with the server's token, if set) and the
//! answer read whole, [`Resp`], with the assertions on it that tests share.

use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

use super::Server;
use super::server::tail;

/// An HTTP client for 127.0.0.1: no proxy, every request bounded by
/// `timeout`.
pub fn http_client(timeout: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build an HTTP client")
}

/// The `error.code` of a JSON error body (SPEC section 4), or "".
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

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

impl Server {
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

    /// Sends a request whose body is over a limit: the status of the
    /// answer (413 expected), or `None` when the connection was cut while
    /// the body was still going (the server answers without reading the
    /// rest, and the client may see its write fail first).
    pub fn send_oversized(&self, rb: RequestBuilder) -> Option<u16> {
        match rb.send() {
            Ok(r) => Some(r.status().as_u16()),
            Err(e) => {
                eprintln!("an oversized request was cut off while sent: {e}");
                None
            }
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
}
