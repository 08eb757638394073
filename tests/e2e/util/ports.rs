//! Ports and sockets: what a process listens on (from `/proc`), a port
//! that refuses connections, and the lock that keeps the fixed default
//! port to one test at a time.
//!
//! Servers of the tests listen on `127.0.0.1:0` and print the port the
//! kernel gave them, so no two tests ever race for a port. Two kinds of
//! test need more:
//!
//! - the embedded default listens on the fixed `127.0.0.1:8700`: the test
//!   that runs it holds [`DefaultPortLock`], an exclusive `flock` on a file
//!   of the temporary directory, so that two such tests never bind it at
//!   once, in this process or in another test run on the same machine;
//! - a block server that is killed and restarted must come back on its
//!   port, since the front's config names it: such a server starts on port
//!   0 too ([`Sandbox::serve_pinned`](super::Sandbox::serve_pinned)) and
//!   only its restarts name the port. A port in the ephemeral range may be
//!   handed to another process while the server is down; should that
//!   happen, the restart fails with the server's "cannot listen" line,
//!   never with a server that talks to a stranger.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::net::{AddressFamily, SocketType, bind, getsockname, socket};

/// The TCP addresses process `pid` listens on, read from
/// `/proc/PID/net/tcp{,6}` for the sockets among its descriptors.
pub fn listening_addrs(pid: u32) -> Vec<SocketAddr> {
    let mut inodes = Vec::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"));
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let addr = parse_proc_addr(local)
                .unwrap_or_else(|| panic!("cannot read the address {local:?} of {path}"));
            found.push(addr);
        }
    }
    found
}

/// An address as `/proc/net/tcp{,6}` writes it: the address as 32-bit words
/// in host order, in hex, then `:` and the port in hex.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<[u8; 4]> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::to_ne_bytes))
        .collect::<Result<_, _>>()
        .ok()?;
    match words.as_slice() {
        [a] => Some(SocketAddr::from((Ipv4Addr::from(*a), port))),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(w);
            }
            Some(SocketAddr::from((Ipv6Addr::from(bytes), port)))
        }
        _ => None,
    }
}

/// A port of 127.0.0.1 that refuses every connection while this lives: a
/// socket bound to it that never listens, so no other process can take it.
pub struct RefusingPort {
    _socket: OwnedFd,
    pub port: u16,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        let socket =
            socket(AddressFamily::INET, SocketType::STREAM, None).expect("create a TCP socket");
        bind(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = match getsockname(&socket)
            .ok()
            .and_then(|a| SocketAddrV4::try_from(a).ok())
        {
            Some(addr) => addr.port(),
            None => panic!("cannot read the bound socket's address"),
        };
        RefusingPort {
            _socket: socket,
            port,
        }
    }
}

/// How long a test waits for another to let go of the default port.
const DEFAULT_PORT_WAIT: Duration = Duration::from_secs(300);

/// The default port, 127.0.0.1:8700, for one test at a time (see the
/// module docs). Released when dropped.
pub struct DefaultPortLock {
    _file: File,
}

impl DefaultPortLock {
    #[track_caller]
    pub fn take() -> DefaultPortLock {
        let path = std::env::temp_dir().join("quorum-e2e-127.0.0.1-8700.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let deadline = Instant::now() + DEFAULT_PORT_WAIT;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return DefaultPortLock { _file: file },
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => panic!("cannot lock {}: {e}", path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "another test held {} (the default port) for {DEFAULT_PORT_WAIT:?}",
                path.display()
            );
            // Polling: flock has no timeout of its own.
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:21FC"),
            Some("127.0.0.1:8700".parse().expect("addr"))
        );
        assert_eq!(
            parse_proc_addr("00000000:0050"),
            Some("0.0.0.0:80".parse().expect("addr"))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().expect("addr"))
        );
    }

    #[test]
    fn this_process_listens_where_it_bound() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert!(listening_addrs(std::process::id()).contains(&addr));
        let refusing = RefusingPort::new();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", refusing.port)).is_err(),
            "a bound socket that does not listen refuses"
        );
    }
}
