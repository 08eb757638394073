//! X.509 files for NBD over TLS, made by the `openssl` CLI in the layout
//! of qemu's `tls-creds-x509` and libnbd's `tls-certificates`: a server
//! directory with `ca-cert.pem`, `server-cert.pem` and `server-key.pem`,
//! and client directories with only the `ca-cert.pem` they trust.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directories of one test's TLS files.
pub struct TlsDirs {
    /// `ca-cert.pem`, `server-cert.pem` (for `127.0.0.1` and `localhost`,
    /// signed by that CA) and `server-key.pem`.
    pub server: PathBuf,
    /// `ca-cert.pem`: a client that trusts the server's CA.
    pub client: PathBuf,
    /// `ca-cert.pem` of another CA: a client that cannot trust the server.
    pub stranger: PathBuf,
}

/// Makes the files under `root` (created): two CAs, and a server
/// certificate from the first.
#[track_caller]
pub fn tls_dirs(root: &Path) -> TlsDirs {
    let dirs = TlsDirs {
        server: root.join("server"),
        client: root.join("client"),
        stranger: root.join("stranger"),
    };
    let work = root.join("work");
    for dir in [&dirs.server, &dirs.client, &dirs.stranger, &work] {
        fs::create_dir_all(dir).expect("create a TLS directory");
    }
    make_ca(&work, "ca", "quorum e2e CA");
    make_ca(&work, "other-ca", "another CA");
    openssl(
        &work,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    fs::write(
        work.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write the extensions");
    openssl(
        &work,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server-cert.pem",
        ],
    );
    let copy = |from: &str, to: &Path| {
        fs::copy(work.join(from), to).expect("copy a TLS file");
    };
    copy("ca-cert.pem", &dirs.server.join("ca-cert.pem"));
    copy("server-cert.pem", &dirs.server.join("server-cert.pem"));
    copy("server-key.pem", &dirs.server.join("server-key.pem"));
    copy("ca-cert.pem", &dirs.client.join("ca-cert.pem"));
    copy("other-ca-cert.pem", &dirs.stranger.join("ca-cert.pem"));
    dirs
}

/// A self-signed CA: `NAME-cert.pem` and `NAME-key.pem` in `dir`.
#[track_caller]
fn make_ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={subject}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Runs `openssl ARGS` in `dir`; panics with its output unless it succeeds.
#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install it (Debian: apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "`openssl {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
