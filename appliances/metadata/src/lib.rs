//! nanovnf's metadata service: the OpenStack and EC2 metadata trees at 169.254.169.254
//! as Nova serves them, for the instances of one tenant network, each known by its
//! address *and* its MAC. [`http`] frames requests (bounded), [`tree`] answers paths,
//! [`engine`] runs connections (bytes and time in, bytes out), [`tracker`] ties each TCP
//! flow to the MAC that opened it, and [`service`] drives smoltcp sockets for the image.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod engine;
pub mod http;
pub mod json;
pub mod service;
pub mod tracker;
pub mod tree;

pub use engine::{Conn, Engine, Event, Peer, ServiceError, SourceMac};
pub use service::Service;
pub use tracker::Tracker;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod service_tests;
#[cfg(test)]
extern crate std;
