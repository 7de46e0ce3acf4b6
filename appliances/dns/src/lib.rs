//! nanovnf's DNS server, the DNS half of the DHCP appliance: the network's names from its
//! reservations (A and PTR for `hostname.domain` and `host-a-b-c-d.domain`), NXDOMAIN with
//! a short-lived SOA for unknown names in the domain, forwarding of everything else to the
//! upstream resolvers (REFUSED without any), as Neutron's dnsmasq. `no_std`, sans-IO:
//! [`wire`] is the codec, [`zone`] the names, [`server`] the engine; [`service`] and
//! [`sockets`] are the frame and smoltcp glue the image drives.
//!
//! The codec is our own rather than `hickory-proto` (`default-features = false`): a
//! minimal hickory A responder grew the DHCP image from 155,760 to 417,712 bytes (its
//! whole RData decoder and the idna/ICU tables come along), and the server needs one
//! question, one OPT record and four record types. hickory-proto checks every answer in
//! the tests and the fuzz target instead.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod server;
pub mod service;
pub mod sockets;
pub mod wire;
pub mod zone;

pub use server::{Counters, DropReason, Event, Outcome, Server, ServerConfig, Transport};
pub use service::{Client, FrameDrop, Out, Service};
pub use sockets::Sockets;
pub use zone::{Lookup, Zone, ZoneError, ZoneSubnet};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sockets_tests;
