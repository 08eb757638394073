//! What `/proc` says of the server: fields of its `status`, its open
//! files, a watch that kills it past a memory bound, and the queues of its
//! sockets (`/proc/net/tcp`).

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// A field of `/proc/PID/status`: bytes for the `kB` ones (`VmRSS`,
/// `VmHWM`), the number as is for the others (`Threads`). `None` once the
/// process is gone.
pub(crate) fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    Some(if words.next() == Some("kB") {
        n * KIB
    } else {
        n
    })
}

/// A field of `/proc/PID/status` of a running server.
#[track_caller]
pub(crate) fn status_of(server: &Server, field: &str) -> u64 {
    proc_status(server.pid(), field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", server.pid()))
}

/// How many file descriptors the server holds (sockets included).
#[track_caller]
pub(crate) fn open_fds(server: &Server) -> usize {
    let dir = format!("/proc/{}/fd", server.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .count()
}

pub(crate) fn mib(bytes: u64) -> u64 {
    bytes / MIB
}

/// The server's memory while a load ran.
#[derive(Debug)]
pub(crate) struct Peak {
    /// The most resident memory seen: `VmHWM` when the server lived
    /// through the load, else the last `VmRSS` before the kill.
    pub(crate) bytes: u64,
    /// The watch killed the server for going past the limit.
    pub(crate) killed: bool,
}

/// Sets a flag when dropped, also while a panic unwinds.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long a memory watch runs at most.
const WATCH_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `load` while reading the server's `VmRSS` every 10 ms; kills the
/// server (SIGKILL) the moment it is above `limit`.
pub(crate) fn watch_rss<T>(server: &Server, limit: u64, load: impl FnOnce() -> T) -> (T, Peak) {
    let pid = server.pid();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let watch = s.spawn(|| {
            let until = Instant::now() + WATCH_DEADLINE;
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let Some(rss) = proc_status(pid, "VmRSS") else {
                    break;
                };
                seen = seen.max(rss);
                if rss > limit {
                    server.signal("KILL");
                    return Peak {
                        bytes: seen,
                        killed: true,
                    };
                }
                thread::sleep(Duration::from_millis(10));
            }
            Peak {
                bytes: seen.max(proc_status(pid, "VmHWM").unwrap_or(0)),
                killed: false,
            }
        });
        let out = {
            let _stop = SetOnDrop(&stop);
            load()
        };
        (out, watch.join().expect("the memory watch"))
    })
}

#[track_caller]
pub(crate) fn assert_peak_within(peak: &Peak, limit: u64, what: &str) {
    assert!(
        !peak.killed && peak.bytes <= limit,
        "{what}: the server's resident memory reached {} MiB, above the budget + slack of {} MiB{}",
        mib(peak.bytes),
        mib(limit),
        if peak.killed {
            " (killed by the test at that point)"
        } else {
            ""
        }
    );
}

/// How many connections wait in the accept queue of the listening socket
/// on 127.0.0.1:`port` (`rx_queue` of its `/proc/net/tcp` line). The
/// kernel lists listening sockets first and makes the file as it is read,
/// so reading up to the match stays cheap with thousands of connections.
pub(crate) fn accept_queue(port: u16) -> Option<usize> {
    let table = std::fs::File::open("/proc/net/tcp").ok()?;
    let local = format!(" 0100007F:{port:04X} ");
    BufReader::new(table)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(&local))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if fields.get(1) != Some(&local.trim()) || fields.get(3) != Some(&"0A") {
                return None;
            }
            let (_, rx) = fields.get(4)?.split_once(':')?;
            usize::from_str_radix(rx, 16).ok()
        })
}

/// The bytes queued (`tx_queue` + `rx_queue` of `/proc/net/tcp`) on the
/// connections to or from 127.0.0.1:`port`, both ends, listener excluded.
pub(crate) fn queued_bytes(port: u16) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let end = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let ours = fields.get(1) == Some(&end.as_str()) || fields.get(2) == Some(&end.as_str());
            if !ours || fields.get(3) == Some(&"0A") {
                return None;
            }
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some(u64::from_str_radix(tx, 16).ok()? + u64::from_str_radix(rx, 16).ok()?)
        })
        .sum()
}
