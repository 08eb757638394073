//! End-to-end tests of `quorum-server`: the real binary, real HTTP over
//! 127.0.0.1, real child files in a temporary directory per test.
//!
//! `util` is the harness (see its docs); each other module is one theme of
//! the "must show" list of the first issue and SPEC sections 2 to 6.

mod util;

mod access_log;
mod bad_input;
mod basic;
mod bench;
mod block_status;
mod cli;
mod confinement;
mod damage;
mod discard;
mod faults;
mod history;
mod lifecycle;
mod limits;
mod limits_io;
mod limits_more;
mod linearizability;
mod membership;
mod nbd;
mod nbd_tls;
mod observability;
mod openapi;
mod operator7;
mod operators_events;
mod ownership;
mod per_block;
mod process_metrics;
mod promises;
mod put_started;
mod qemu081;
mod reliability;
mod remote;
mod restart;
mod review8;
mod s3;
mod s3_heal;
mod s3_races;
mod scrub;
mod scrub_schedule;
mod stale;
mod startup;
mod stats;
mod suspend;
