//! Header values taken exactly: `Transfer-Encoding` other than exactly
//! `chunked` is refused, tokens are compared byte for byte.

use std::time::Duration;

use super::{DATA, exchange, patterned_server};
use crate::util::*;

/// A PUT whose Transfer-Encoding is not exactly `chunked` (`gzip, chunked`,
/// or `gzip` and `chunked` on two lines) is answered 501
/// `not_implemented`, and nothing is written; a coding the HTTP layer
/// itself refuses (`chunked, gzip`) gets 400 or 501. The same body with
/// exactly `chunked` is written (so the framing is right).
#[test]
fn transfer_codings_other_than_chunked_get_501() {
    let server = patterned_server("");
    let snap = server.snapshot(&ABC);
    let data = pattern(125, BLOCK as usize);
    let chunked = |head: Vec<u8>| {
        let mut request = head;
        request.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        request.extend_from_slice(&data);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        request
    };
    let target = format!("{DATA}?offset=8192");
    for codings in [
        &[("Transfer-Encoding", "gzip, chunked")][..],
        &[("Transfer-Encoding", "deflate, chunked")],
        &[("Transfer-Encoding", "x-private, chunked")],
        &[
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
        ],
        // `chunked` twice: the HTTP layer removes one, and the server would
        // store the inner chunk framing as data.
        &[("Transfer-Encoding", "chunked, chunked")],
        &[("Transfer-Encoding", "chunked,chunked")],
        &[
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "chunked"),
        ],
    ] {
        let request = chunked(request_head(&server, "PUT", &target, codings));
        let o = exchange(&server, &request, Duration::from_secs(10));
        assert!(
            o.is(501, "not_implemented"),
            "{codings:?}: expected 501 not_implemented, got {} {:?}",
            o.summary(),
            String::from_utf8_lossy(&o.body)
        );
        server.assert_unchanged(&snap, &format!("a PUT with {codings:?}"));
    }
    let request = chunked(request_head(
        &server,
        "PUT",
        &target,
        &[("Transfer-Encoding", "chunked, gzip")],
    ));
    let o = exchange(&server, &request, Duration::from_secs(10));
    assert!(
        o.status == Some(400) || o.is(501, "not_implemented"),
        "chunked, gzip: {}",
        o.summary()
    );
    server.assert_unchanged(&snap, "a PUT with chunked, gzip");

    let request = chunked(request_head(
        &server,
        "PUT",
        &target,
        &[("Transfer-Encoding", "chunked")],
    ));
    let o = exchange(&server, &request, Duration::from_secs(10));
    assert_eq!(o.status, Some(204), "exactly chunked: {}", o.summary());
    assert_bytes_eq(
        &server.read_volume("vm", 8192, BLOCK),
        &data,
        "the chunked PUT",
    );
}

/// `Authorization: Bearer TOKEN` is compared exactly: an extra character
/// after the token (also a space or tab inside the value, a comma, Unicode
/// or Latin-1 spaces that a trim would eat), another case, or a control
/// character is refused (401; 400 where the HTTP layer refuses the header
/// itself), and nothing is written. The right token on the same path is
/// served (the requests reach the check).
///
/// Not tested: a raw trailing SP or HTAB after the token. The HTTP parser
/// strips it before the server sees the value (RFC 9110 section 5.5: field
/// values exclude surrounding whitespace), so `Bearer TOKEN ` *is*
/// `Bearer TOKEN`.
#[test]
fn tokens_are_compared_exactly() {
    let server = patterned_server("[auth]\ntoken = \"s3cret\"\n");
    let snap = server.snapshot(&ABC);
    let target = format!("{DATA}?offset=0");
    let put = |auth: &[u8]| {
        // The head without its empty line, then the header by hand.
        let mut request = request_head(&server, "PUT", &target, &[("Content-Length", "512")]);
        request.truncate(request.len() - 2);
        request.extend_from_slice(b"Authorization: ");
        request.extend_from_slice(auth);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(&[0x77; 512]);
        exchange(&server, &request, Duration::from_secs(10))
    };
    let wrong: Vec<Vec<u8>> = [
        "Bearer s3cretx",
        "Bearer s3cret!",
        "Bearer s3cret.",
        "Bearer S3cret",
        "Bearer s3creT",
        "Bearer S3CRET",
        "Bearer s3cret x",
        "Bearer s3cret\tx",
        "Bearer s3 cret",
        "Bearer s3\tcret",
        "Bearer s3cret,",
        "Bearer s3cret, Bearer s3cret",
        "Bearer s3cret\u{a0}",
        "Bearer s3cret\u{85}",
        "Bearer s3cret\u{2028}",
        "Bearer s3cret\u{3000}",
        "Bearer s3cret\u{200b}",
        "Bearer s3cret\u{feff}",
        "Bearer \u{feff}s3cret",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        b"Bearer s3cret\xa0".to_vec(),
        b"Bearer s3cret\x85".to_vec(),
        b"Bearer s3cret\xff".to_vec(),
    ])
    .collect();
    for auth in &wrong {
        let o = put(auth);
        assert!(
            o.is(401, "unauthorized"),
            "Authorization: {:?}: expected 401 unauthorized, got {}",
            String::from_utf8_lossy(auth),
            o.summary()
        );
        server.assert_unchanged(
            &snap,
            &format!("a PUT with {:?}", String::from_utf8_lossy(auth)),
        );
    }
    for auth in [
        &b"Bearer s3cret\x0b"[..],
        b"Bearer s3cret\x0c",
        b"Bearer s3cret\x00",
        b"Bearer s3cret\x1f",
        b"Bearer s3cret\x7f",
        b"Bearer s3cret\x0bx",
    ] {
        let o = put(auth);
        assert!(
            o.status == Some(400) || o.is(401, "unauthorized"),
            "Authorization: {:?}: expected 401 (or the HTTP layer's 400), got {}",
            String::from_utf8_lossy(auth),
            o.summary()
        );
        server.assert_unchanged(
            &snap,
            &format!("a PUT with {:?}", String::from_utf8_lossy(auth)),
        );
    }
    let o = put(b"Bearer s3cret");
    assert_eq!(o.status, Some(204), "the right token: {}", o.summary());
}
