//! SPEC section 9: NBD requests are counted like HTTP ones, each on its
//! own `frontend` label, exactly.

use crate::util::*;

/// Writes, reads and a flush over NBD (a hand-written client on the Unix
/// socket) and over HTTP: `/metrics` counts each request, its bytes and
/// its duration on its own front end, and the sum over both is the total.
/// On the way, `NBD_OPT_STARTTLS` on a server without TLS is refused by
/// policy and the connection goes on.
#[test]
fn requests_count_on_their_frontend_exactly() {
    let server = Sandbox::new().serve(&format!(
        "[nbd]\nsocket = \"nbd.sock\"\n\n{}",
        abc_volume("1MiB", "")
    ));
    let socket = nbd_unix(&server.file("nbd.sock")).expect("connect to the NBD socket");
    let mut handshake = NbdHandshake::greet(socket).expect("the NBD greeting");
    assert_eq!(
        handshake
            .ask(opt::STARTTLS, &[])
            .expect("a reply to STARTTLS"),
        rep::ERR_POLICY,
        "STARTTLS without [nbd.tls]"
    );
    let mut nbd = handshake.go("vm").expect("NBD_OPT_GO on vm");
    let data = pattern(3, 4096);
    nbd.write(0, &data).expect("an NBD write");
    nbd.write(8192, &pattern(4, 1000)).expect("an NBD write");
    nbd.write(65_536, &pattern(5, 512)).expect("an NBD write");
    let read = nbd.read(0, 4096).expect("an NBD read");
    assert_bytes_eq(&read, &data, "an NBD read");
    let read = nbd.read(8192, 1000).expect("an NBD read");
    assert_bytes_eq(&read, &pattern(4, 1000), "an NBD read");
    nbd.flush().expect("an NBD flush");
    assert!(
        nbd.disconnect().expect("send NBD_CMD_DISC"),
        "the server closes after NBD_CMD_DISC"
    );

    server.write_volume("vm", 100_000, &pattern(6, 3000));
    for _ in 0..2 {
        assert_bytes_eq(
            &server.read_volume("vm", 0, 4096),
            &data,
            "an HTTP read of the NBD write",
        );
    }
    server.post("/v1/volumes/vm/flush").expect_status(204);

    let metrics = server.metrics();
    let get = |series: String| {
        metrics
            .get(&series)
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    for (op, (nbd_count, nbd_bytes), (http_count, http_bytes)) in [
        ("write", (3.0, 5608.0), (1.0, 3000.0)),
        ("read", (2.0, 5096.0), (2.0, 8192.0)),
        ("flush", (1.0, 0.0), (1.0, 0.0)),
        ("write_zeroes", (0.0, 0.0), (0.0, 0.0)),
    ] {
        for (frontend, count, bytes) in [
            ("nbd", nbd_count, nbd_bytes),
            ("http", http_count, http_bytes),
        ] {
            let labels = format!(r#"volume="vm",op="{op}",frontend="{frontend}""#);
            assert_eq!(
                get(format!("quorum_requests_total{{{labels}}}")),
                count,
                "{op} requests over {frontend}"
            );
            assert_eq!(
                get(format!("quorum_request_bytes_total{{{labels}}}")),
                bytes,
                "{op} bytes over {frontend}"
            );
            assert_eq!(
                get(format!("quorum_request_duration_seconds_count{{{labels}}}")),
                count,
                "{op} durations over {frontend}"
            );
            assert_eq!(
                get(format!(
                    r#"quorum_request_duration_seconds_bucket{{{labels},le="+Inf"}}"#
                )),
                count,
                "the +Inf bucket of {op} over {frontend}"
            );
        }
        assert_eq!(
            get(format!(r#"quorum_requests_total{{volume="vm",op="{op}"}}"#)),
            nbd_count + http_count,
            "{op} requests over both"
        );
    }
}
