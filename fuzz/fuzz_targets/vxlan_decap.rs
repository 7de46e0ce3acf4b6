//! Arbitrary bytes as a sequence of frames on the underlay (mostly VXLAN datagrams built
//! around fuzzed inner frames, some with corrupted outer headers, some raw) and on the
//! tenant NIC (plain and with offloads), ARP replies, control changes and clock steps, all
//! fed to one `nanovnf_vxlan::Gateway` with a small FDB. The body, and the input layout it
//! reads, is in `../vxlan_decap_check.rs`, shared with the engine's stable unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovnf_vxlan as vxlan;

// The seed-building helpers there are used by the unit tests, not here.
#[allow(dead_code)]
#[path = "../vxlan_decap_check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
