//! The one place the command line speaks HTTP: URLs, the token, and every
//! answer that is not a success turned into an [`Error`].

use std::time::Duration;

use reqwest::Method;
use reqwest::Url;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error: its status, its code
    /// (`conflict`, ...) and its message, as SPEC section 4 shapes them.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code, or the status's reason when the answer had
        /// none (a proxy's answer).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {cause}")]
    Transport {
        /// What was asked for.
        url: String,
        /// The innermost cause (`Connection refused (os error 111)`).
        cause: String,
        /// The error itself.
        #[source]
        source: reqwest::Error,
    },
    /// The server's answer is not what its API promises.
    #[error("unexpected answer from {url}: {problem}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// What was wrong with the answer.
        problem: String,
    },
    /// A local file or stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A job or a sync that was waited for ended without success.
    #[error("{0}")]
    JobEnded(String),
    /// The request cannot be made as asked (a file larger than the volume,
    /// a token file that cannot be used, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether trying again later may succeed: the server could not be
    /// reached, or it answered 503 (busy, or a quorum failure).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => *status == 503,
            _ => false,
        }
    }
}

/// What every request needs: the server's base URL, the token, the HTTP
/// client with its bounds.
#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `base`, sending `token` (if any) as
    /// `Authorization: Bearer`, giving up on a request after `timeout`
    /// (`None`: never, for streams).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the HTTP client cannot be built or the URL is
    /// not `http://`.
    pub fn new(
        base: Url,
        token: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Client, Error> {
        if base.scheme() != "http" {
            return Err(Error::Invalid(format!(
                "{base}: only http:// URLs are supported (put a TLS proxy in front for https)"
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(15))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    /// The same server and token with another timeout.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Result<Client, Error> {
        Client::new(self.base.clone(), self.token.clone(), timeout)
    }

    /// The URL of the API path made of `segments` (each percent-encoded as
    /// needed), below the base URL's own path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the token.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request; any answer but a 2xx is an [`Error::Api`].
    ///
    /// # Errors
    /// [`Error::Transport`] or [`Error::Api`].
    pub fn send(&self, builder: RequestBuilder) -> Result<Response, Error> {
        let (client, request) = builder.build_split();
        let request =
            request.map_err(|e| Error::Invalid(format!("cannot make the request: {e}")))?;
        let url = request.url().to_string();
        let response = client.execute(request).map_err(|e| transport(&url, e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(api_error(response))
        }
    }

    /// `GET` of a JSON answer.
    ///
    /// # Errors
    /// As [`Client::send`], or [`Error::Protocol`] when the answer is not
    /// the JSON expected.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let url = self.url(segments);
        let response = self.send(self.request(Method::GET, url).query(query))?;
        json(response)
    }
}

/// The JSON of a successful answer.
///
/// # Errors
/// [`Error::Protocol`] when it is not the JSON expected, [`Error::Transport`]
/// when the body could not be read.
pub fn json<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let url = response.url().to_string();
    let body = response.bytes().map_err(|e| transport(&url, e))?;
    serde_json::from_slice(&body).map_err(|e| Error::Protocol {
        url,
        problem: e.to_string(),
    })
}

/// A transport failure of the request to `url`, with its innermost cause.
pub fn transport(url: &str, e: reqwest::Error) -> Error {
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let cause = if e.is_timeout() {
        "timed out".to_string()
    } else {
        cause.to_string()
    };
    Error::Transport {
        url: url.to_owned(),
        cause,
        source: e,
    }
}

/// The error an unsuccessful answer carries (`{"error": {"code",
/// "message"}}`), or its status alone.
fn api_error(response: Response) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    let status = response.status();
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let body = response.bytes().unwrap_or_default();
    match serde_json::from_slice::<Body>(&body) {
        Ok(Body { error }) => Error::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: reason,
            message: match String::from_utf8_lossy(&body[..body.len().min(200)])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
            {
                text if text.is_empty() => "the answer has no body".to_string(),
                text => text,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_below_the_base() {
        let base: Url = "http://127.0.0.1:8700".parse().expect("url");
        let c = Client::new(base, None, None).expect("client");
        assert_eq!(
            c.url(&["v1", "volumes", "a b/c"]).as_str(),
            "http://127.0.0.1:8700/v1/volumes/a%20b%2Fc"
        );
        let base: Url = "http://h:1/quorum/".parse().expect("url");
        let c = Client::new(base, None, None).expect("client");
        assert_eq!(
            c.url(&["v1", "volumes"]).as_str(),
            "http://h:1/quorum/v1/volumes"
        );
    }

    #[test]
    fn only_http_is_supported() {
        let base: Url = "https://h:1".parse().expect("url");
        assert!(matches!(
            Client::new(base, None, None),
            Err(Error::Invalid(_))
        ));
    }
}
