//! nanovnf's DHCPv4 server engine: Neutron's dnsmasq (static reservations, MTU option 26,
//! classless routes) as a sans-IO, `no_std` library. [`wire`] is the codec, [`server`]
//! the RFC 2131 state machine; the image's `main` feeds it UDP payloads and the time.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod server;
pub mod service;
pub mod wire;

pub use server::{
    Counters, DropReason, LeaseState, Reply, Reservation, ReservationError, RxMeta, Server,
    ServerConfig,
};
pub use service::{FrameDrop, Service, ServiceError};
pub use wire::{Error, MessageType, Packet};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod service_tests;
