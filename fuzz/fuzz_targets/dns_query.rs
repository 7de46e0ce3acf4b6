//! Arbitrary bytes as a sequence of DNS queries over UDP and TCP, upstream answers (raw,
//! and built from the last forwarded query), reservation changes and clock steps, all fed
//! to one `nanovnf_dns::Server` with a small table of forwarded queries. The body, and the
//! input layout it reads, is in `../dns_query_check.rs`, shared with the engine's stable
//! unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovnf_dns as dns;

// The seed-building helpers there are used by the unit tests, not here.
#[allow(dead_code)]
#[path = "../dns_query_check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
