//! Arbitrary bytes as HTTP traffic to the metadata engine: request bytes in arbitrary
//! chunks on up to eight connections from instances, impostors and strangers, clients
//! reading at their own pace, FINs and resets, clock steps, live instance changes and the
//! manager's password reports, all on one `nanovnf_metadata::Engine`. The body, and the
//! input layout it reads, is in `../metadata_http_check.rs`, shared with the engine's
//! stable unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovnf_metadata as metadata;

// The seed-building helpers there are used by the unit tests, not here.
#[allow(dead_code)]
#[path = "../metadata_http_check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
