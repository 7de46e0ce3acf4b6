//! nanovnf's VXLAN gateway engine: the VTEP (RFC 7348) of one tenant network, as a sans-IO,
//! `no_std` library the appliance image calls for each received frame. NIC 0
//! ([`TENANT`]) sits on the tenant's bridge; NIC 1 ([`UNDERLAY`]) holds local_vtep.
//!
//! - Tenant frames are encapsulated (outer Ethernet + IPv4 + UDP + VXLAN, UDP checksum 0,
//!   source port from the inner flow's hash) to the VTEP their destination MAC was learnt
//!   or configured behind, or head-end replicated to every remote VTEP. Superframes are
//!   segmented and partial checksums completed first: the far VTEP does neither.
//! - VXLAN datagrams to local_vtep for our VNI are decapsulated onto the tenant NIC, and
//!   their inner source MAC is learnt behind their outer source address (like Linux's
//!   `vxlan` device, from any VTEP).
//! - local_vtep answers ARP and ping; VTEP MACs are resolved by ARP, frames queue briefly
//!   behind a resolution, and an ARP responder can answer for l2population's ports.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod counters;
mod fdb;
mod gateway;
mod neighbor;
pub mod wire;

/// The crates the API speaks in (`Offload`, `Transmit`, `NicConfig`, `VxlanRole`, `Op`),
/// so a caller names the same versions.
pub use nanovnf_frame as frame;
pub use nanovnf_schema as schema;

pub use counters::DropReason;
pub use gateway::{ConfigError, Forwarding, Gateway, MAX_REMOTES, Outcome};
pub use neighbor::{MAX_LEARNT_NEIGHBORS, QUEUE_BYTES, QUEUE_FRAMES};

/// The tenant NIC's index.
pub const TENANT: usize = 0;
/// The underlay NIC's index.
pub const UNDERLAY: usize = 1;

#[cfg(test)]
mod tests;
