//! Raw-frame helpers for the appliances that forward frames (router, VXLAN gateway, wire):
//! what virtio-net's header says about a frame ([`Offload`]), the Internet checksum in its
//! full, partial and incremental forms ([`checksum`]), software segmentation of a TCP
//! superframe ([`segment`]), IPv4 fragmentation ([`fragment`]), and the [`Transmit`] sink engines write frames into.
#![no_std]
#![forbid(unsafe_code)]

pub mod checksum;
pub mod fragment;
pub mod offload;
pub mod segment;

pub use offload::{GsoKind, Offload};

/// Writes a frame into the buffer it is given.
pub type Fill<'a> = dyn FnMut(&mut [u8]) + 'a;

/// Where an engine's outgoing frames go: the image's transmit rings, or a test's list.
pub trait Transmit {
    /// Queues a frame of `len` bytes on NIC `nic`, written by `fill`, carrying `offload`
    /// to the device. Returns false when it was dropped (no buffer, or larger than the
    /// NIC accepts); the caller counts that, nothing else happens.
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool;

    /// Queues `head` followed by `bytes` as one frame on NIC `nic` (`head` is empty when
    /// forwarding, outer headers when encapsulating). When `bytes` lies inside the
    /// received frame being handled (rewritten in place, or the decapsulated part of
    /// it), an image may write `head` in front of it and send from the receive buffer
    /// itself instead of copying, once the engine returns: the engine must leave those
    /// bytes as they are after this call.
    fn send_parts(&mut self, nic: usize, offload: &Offload, head: &[u8], bytes: &[u8]) -> bool {
        self.send(
            nic,
            offload,
            head.len() + bytes.len(),
            &mut |b: &mut [u8]| {
                let (front, back) = b.split_at_mut(head.len());
                front.copy_from_slice(head);
                back.copy_from_slice(bytes);
            },
        )
    }

    /// [`Transmit::send_parts`] without a head: a received frame sent on.
    fn send_bytes(&mut self, nic: usize, offload: &Offload, bytes: &[u8]) -> bool {
        self.send_parts(nic, offload, &[], bytes)
    }
}

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;

/// Big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
