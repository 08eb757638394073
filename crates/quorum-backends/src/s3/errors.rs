//! Folding object_store's errors into child errors, by their types.
//!
//! object_store folds the statuses that mean something into variants of
//! [`object_store::Error`] (404 `NotFound`, 412 `Precondition`, 403
//! `PermissionDenied`, 401 `Unauthenticated`); a request that got no answer
//! carries an [`HttpError`] with its kind somewhere in its chain of sources
//! (inside `Generic`, a private retry error, and sometimes a private error of
//! the S3 client). [`Failure::of`] reads the variant, then walks the chain to
//! the first `HttpError`; the text of an error is only ever shown, never
//! matched (a message that changes in a new release must not turn a timeout
//! into a media error).

use std::error::Error as StdError;
use std::io;

use object_store::client::{HttpError, HttpErrorKind};
use quorum_core::BackendError;

/// What kind of failure an object_store error is, for the engine's vote and
/// its circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The store was reached but did not answer in time.
    Timeout,
    /// The store could not be reached (connection refused, reset, DNS).
    Unreachable,
    /// The store refused the request: credentials or permissions.
    Refused,
    /// The store answered 404: the object (or, for a listing, the bucket)
    /// does not exist.
    NotFound,
    /// Anything else: the store failed the request (a 5xx, a bad answer).
    Failed,
}

impl Failure {
    /// The kind of `e`, read from its variant and its chain of sources.
    pub(super) fn of(e: &object_store::Error) -> Failure {
        match e {
            object_store::Error::NotFound { .. } => return Failure::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => return Failure::Refused,
            _ => {}
        }
        let mut source: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(http) = s.downcast_ref::<HttpError>() {
                return Failure::of_http(http);
            }
            source = s.source();
        }
        Failure::Failed
    }

    fn of_http(http: &HttpError) -> Failure {
        match http.kind() {
            HttpErrorKind::Timeout => Failure::Timeout,
            HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                Failure::Unreachable
            }
            _ => Failure::Failed,
        }
    }
}

/// Maps an object_store error to a child error by its [`Failure`] kind. The
/// message is the store's, on one line (stores answer with XML bodies) and
/// of bounded length.
pub(super) fn store_error(e: object_store::Error) -> BackendError {
    let text = one_line(&e.to_string());
    match Failure::of(&e) {
        Failure::Timeout => {
            BackendError::Unavailable(format!("the store did not answer in time: {text}"))
        }
        Failure::Unreachable => {
            BackendError::Unavailable(format!("the store cannot be reached: {text}"))
        }
        Failure::Refused => BackendError::Refused(text),
        Failure::NotFound | Failure::Failed => BackendError::Io(io::Error::other(text)),
    }
}

/// Maps a failed request on object_store's HTTP client (one that got no
/// answer) to a child error.
pub(super) fn http_error(e: HttpError) -> BackendError {
    let text = one_line(&e.to_string());
    match Failure::of_http(&e) {
        Failure::Timeout => {
            BackendError::Unavailable(format!("the store did not answer in time: {text}"))
        }
        Failure::Unreachable => {
            BackendError::Unavailable(format!("the store cannot be reached: {text}"))
        }
        _ => BackendError::Io(io::Error::other(text)),
    }
}

/// `text` with its whitespace folded to single spaces, cut to 400 bytes.
fn one_line(text: &str) -> String {
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > 400 {
        let cut = (0..=400)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use object_store::aws::AmazonS3Builder;
    use object_store::path::Path;
    use object_store::{ClientOptions, ObjectStoreExt, RetryConfig};

    use super::*;

    /// An S3 client of a loopback port, with no retries and a short timeout.
    fn client(port: u16) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_millis(300))
                    .with_connect_timeout(Duration::from_millis(300)),
            )
            // After the client options, which would reset it.
            .with_allow_http(true)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_region("us-east-1")
            .with_bucket_name("b")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .expect("a client")
    }

    fn head_error(port: u16) -> object_store::Error {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(client(port).head(&Path::from("x")))
            .expect_err("nothing answers")
    }

    #[test]
    fn a_closed_port_is_unreachable_and_a_silent_one_times_out() {
        // A port that was just free: nothing listens there.
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let e = head_error(closed);
        assert_eq!(Failure::of(&e), Failure::Unreachable, "{e:?}");
        let mapped = store_error(e).to_string();
        assert!(mapped.contains("cannot be reached"), "{mapped}");

        // A listener that accepts (in the backlog) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = silent.local_addr().expect("its address").port();
        let e = head_error(port);
        assert_eq!(Failure::of(&e), Failure::Timeout, "{e}");
        let mapped = store_error(e).to_string();
        assert!(mapped.contains("did not answer in time"), "{mapped}");
        drop(silent);
    }

    #[test]
    fn variants_have_kinds_and_messages_are_bounded() {
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: "403".into(),
        };
        assert_eq!(Failure::of(&denied), Failure::Refused);
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connect timed out\n<Error>".repeat(100).into(),
        };
        // A message is never read for its meaning.
        assert_eq!(Failure::of(&generic), Failure::Failed);
        let text = store_error(generic).to_string();
        assert!(text.len() <= 404 && !text.contains('\n'), "{text}");
    }
}
