//! Shared glue of the appliance images: matching configured NICs to virtio devices, the
//! event-loop adapter over them, and the control channel. The binaries in `src/bin` are the images themselves.
#![cfg_attr(target_os = "none", no_std)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
pub mod control;
#[cfg(target_os = "none")]
pub mod forwarder;
#[cfg(target_os = "none")]
pub mod glue;

/// Printed by the image binaries when built for the host by a workspace-wide build.
pub const HOST_STUB_MESSAGE: &str = "this is an appliance image for x86_64-unknown-none: \
     build it with `cargo run -p nanovnf-build-images` and boot it with QEMU";
