//! SPEC 8.1 and 8.2 over NBD: the workload of the full linearizability
//! test (`linearizability::workload` and `faults`: its faults, membership changes and
//! scrubs) with four clients on NBD connections of their own (the blocking
//! client of `util::nbd`) and two over HTTP at once on one volume, the
//! combined history through the same checker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::with_nbd;
use crate::linearizability::checker::Seen;
use crate::linearizability::faults;
use crate::linearizability::workload::{self, BlockClient, Http, Plan};
use crate::util::*;

/// Clients `0..NBD_CLIENTS` speak NBD, the others HTTP.
const NBD_CLIENTS: usize = 4;

/// Short enough for a run of about 20 s on a busy machine.
const NBD_PLAN: Plan = Plan {
    clients: 6,
    target_ops: 3_000,
    min_ops: 1_500,
    budget: Duration::from_secs(12),
    min_multi_block_reads: 300,
};

/// A workload client on its own NBD connection, connected again after the
/// connection failed (a request then counts as failed: it may or may not
/// have taken effect).
struct Nbd {
    addr: SocketAddr,
    conn: Option<NbdClient>,
}

impl Nbd {
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut NbdClient) -> Result<T, NbdError>,
    ) -> Result<T, String> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                NbdClient::connect(self.addr, "vm").map_err(|e| format!("no connection: {e}"))?,
            ),
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(NbdError::Errno(errno::EIO)) => Err("NBD EIO".to_string()),
            Err(NbdError::Errno(e)) => {
                panic!("the server refused a well-formed request: NBD error {e}")
            }
            Err(NbdError::Io(e)) => {
                self.conn = None;
                Err(format!("no answer: {e}"))
            }
        }
    }
}

impl BlockClient for Nbd {
    fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), String> {
        self.call(|c| c.write(offset, &data))
    }

    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let len = u32::try_from(len).expect("reads of the workload fit in u32");
        self.call(|c| c.read(offset, len))
    }
}

#[test]
fn nbd_and_http_clients_are_linearizable_under_faults() {
    let seed = workload::seed();
    println!("linearizability over NBD: seed {seed} (QUORUM_LIN_SEED={seed} repeats the choices)");
    let server = Arc::new(Sandbox::new().serve(&with_nbd(&faults::full_config())));
    let addr = server.nbd_addr();
    let run = workload::run(
        server.clone(),
        NBD_PLAN,
        seed,
        |c| -> Box<dyn BlockClient> {
            if c < NBD_CLIENTS {
                let conn = NbdClient::connect(addr, "vm").expect("an NBD connection to vm");
                assert_eq!(conn.size(), 4 * MIB, "the export's size");
                Box::new(Nbd {
                    addr,
                    conn: Some(conn),
                })
            } else {
                Box::new(Http(server.clone()))
            }
        },
    );
    run.assert_sound(&server, "4 NBD and 2 HTTP clients");

    // A flush over NBD covers every connection's writes (multi-conn).
    let mut conn = NbdClient::connect(addr, "vm").expect("an NBD connection to vm");
    let wanted = tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::CAN_MULTI_CONN;
    assert_eq!(conn.flags() & wanted, wanted, "flags {:#x}", conn.flags());
    conn.flush().expect("a flush after the run");

    // The two front ends saw each other's writes.
    let writer: HashMap<u64, bool> = run
        .history
        .writes
        .iter()
        .map(|w| (w.id, w.client < NBD_CLIENTS))
        .collect();
    let seen_across = |nbd_reader: bool| {
        run.history
            .reads
            .iter()
            .filter(|r| (r.client < NBD_CLIENTS) == nbd_reader)
            .flat_map(|r| &r.seen)
            .filter(|s| matches!(s, Seen::Write { id, .. } if writer.get(id) == Some(&!nbd_reader)))
            .count()
    };
    let (http_saw_nbd, nbd_saw_http) = (seen_across(false), seen_across(true));
    println!(
        "blocks written over NBD read over HTTP: {http_saw_nbd}; the other way: {nbd_saw_http}"
    );
    assert!(
        http_saw_nbd > 0 && nbd_saw_http > 0,
        "the front ends did not meet: {http_saw_nbd} blocks written over NBD were read over \
         HTTP, {nbd_saw_http} the other way"
    );
}
