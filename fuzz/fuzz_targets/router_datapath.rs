//! Arbitrary frames (raw, or IPv4 and ARP built from the input) on arbitrary NICs with
//! arbitrary offload headers, clock steps, polls and floating-IP changes, all fed to one
//! `nanovnf_router::Router` with a small connection table. The body, and the input layout
//! it reads, is in `../router_datapath_check.rs`, shared with the engine's stable tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovnf_router as router;

// The seed-building helpers there are used by the unit tests, not here.
#[allow(dead_code)]
#[path = "../router_datapath_check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
