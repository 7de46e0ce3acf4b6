//! Device drivers of the nanovnf appliances: virtio-net over virtio-drivers' transports,
//! with batched split virtqueues of our own, and a smoltcp `Device` over it.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod hal;
pub mod net;
pub mod phy;
pub mod virtqueue;

#[cfg(target_os = "none")]
pub mod discover;

pub use net::{NetConfig, NetStats, Offloads, VirtioNet};
