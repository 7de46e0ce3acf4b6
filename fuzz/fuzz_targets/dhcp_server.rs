//! Arbitrary bytes as a sequence of DHCP messages (with source MAC, address, port and
//! clock steps), reservation changes and config changes, all fed to one
//! `nanovnf_dhcp::Server` of small capacity. The body, and the input layout it reads,
//! is in `../dhcp_server_check.rs`, shared with the engine's stable unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovnf_dhcp as dhcp;

// The seed-building helpers there are used by the unit tests, not here.
#[allow(dead_code)]
#[path = "../dhcp_server_check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
