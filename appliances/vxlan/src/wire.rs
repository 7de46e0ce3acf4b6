//! The VXLAN header (RFC 7348 §5) as a typed view over bytes, and the few other headers the
//! gateway writes by hand: the outer Ethernet + IPv4 + UDP + VXLAN stack in front of an
//! encapsulated frame, and Ethernet/IPv4 ARP.

use core::net::Ipv4Addr;
use nanovnf_frame::checksum::ipv4_header;
use nanovnf_frame::{ETHERTYPE_ARP, ETHERTYPE_IPV4, IP_PROTO_UDP, be16, put_be16};

/// Bytes of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid (the only flag RFC 7348 defines).
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8) in front of the inner frame.
pub const OUTER_LEN: usize = 14 + 20 + 8 + HEADER_LEN;
/// Start of the dynamic port range RFC 7348 §5 recommends for the source port.
pub const SOURCE_PORT_MIN: u16 = 49152;

mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    pub const PAYLOAD: usize = 8;
}

/// Why a VXLAN header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated,
    /// The I flag is clear: there is no VNI to match.
    NoVni,
}

/// A VXLAN header and the inner frame behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The I flag. Every other bit is reserved: zero on transmission, ignored on receipt.
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the I flag and clears every reserved bit.
    pub fn set_header(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[..HEADER_LEN].fill(0);
        b[field::FLAGS] = FLAG_I;
        b[field::VNI].copy_from_slice(&(vni & VNI_MAX).to_be_bytes()[1..]);
    }
}

/// A parsed VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if !packet.has_vni() {
            return Err(Error::NoVni);
        }
        Ok(Repr { vni: packet.vni() })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_header(self.vni);
    }
}

/// Everything in the outer headers of one encapsulated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub ttl: u8,
    pub df: bool,
    pub ip_id: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
}

impl Outer {
    /// The [`OUTER_LEN`] bytes in front of an inner frame of `inner_len` bytes, the IPv4
    /// header checksum included and the UDP checksum zero (RFC 7348 §5, allowed for IPv4).
    /// `inner_len` must keep the IPv4 length within 16 bits (the caller checked the MTU).
    pub fn emit(&self, inner_len: usize) -> [u8; OUTER_LEN] {
        let mut h = [0u8; OUTER_LEN];
        h[0..6].copy_from_slice(&self.dst_mac);
        h[6..12].copy_from_slice(&self.src_mac);
        put_be16(&mut h, 12, ETHERTYPE_IPV4);
        let ip = &mut h[14..34];
        ip[0] = 0x45;
        put_be16(ip, 2, (OUTER_LEN - 14 + inner_len) as u16);
        put_be16(ip, 4, self.ip_id);
        put_be16(ip, 6, if self.df { 0x4000 } else { 0 });
        ip[8] = self.ttl;
        ip[9] = IP_PROTO_UDP;
        ip[12..16].copy_from_slice(&self.src_ip.octets());
        ip[16..20].copy_from_slice(&self.dst_ip.octets());
        let c = ipv4_header(ip);
        put_be16(ip, 10, c);
        let udp = &mut h[34..42];
        put_be16(udp, 0, self.src_port);
        put_be16(udp, 2, self.dst_port);
        put_be16(udp, 4, (8 + HEADER_LEN + inner_len) as u16);
        Packet::new_unchecked(&mut h[42..]).set_header(self.vni);
        h
    }
}

/// Bytes of an Ethernet frame carrying an Ethernet/IPv4 ARP packet (unpadded).
pub const ARP_FRAME_LEN: usize = 14 + 28;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// Parses the ARP packet of an untagged Ethernet frame; `None` when it is not a
    /// well-formed Ethernet/IPv4 request or reply.
    pub fn parse_frame(frame: &[u8]) -> Option<Arp> {
        if frame.len() < ARP_FRAME_LEN || be16(frame, 12) != ETHERTYPE_ARP {
            return None;
        }
        let a = &frame[14..ARP_FRAME_LEN];
        if be16(a, 0) != 1 || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
            return None;
        }
        let op = be16(a, 6);
        if op != ARP_REQUEST && op != ARP_REPLY {
            return None;
        }
        let mac = |at: usize| -> [u8; 6] {
            [a[at], a[at + 1], a[at + 2], a[at + 3], a[at + 4], a[at + 5]]
        };
        let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
        Some(Arp {
            op,
            sha: mac(8),
            spa: ip(14),
            tha: mac(18),
            tpa: ip(24),
        })
    }

    /// Writes the whole frame (Ethernet header from `eth_dst` and `sha`) into the first
    /// [`ARP_FRAME_LEN`] bytes of `out`; nothing when `out` is shorter.
    pub fn emit_frame(&self, eth_dst: [u8; 6], out: &mut [u8]) {
        let Some(f) = out.get_mut(..ARP_FRAME_LEN) else {
            return;
        };
        f[0..6].copy_from_slice(&eth_dst);
        f[6..12].copy_from_slice(&self.sha);
        put_be16(f, 12, ETHERTYPE_ARP);
        let a = &mut f[14..];
        put_be16(a, 0, 1);
        put_be16(a, 2, ETHERTYPE_IPV4);
        a[4] = 6;
        a[5] = 4;
        put_be16(a, 6, self.op);
        a[8..14].copy_from_slice(&self.sha);
        a[14..18].copy_from_slice(&self.spa.octets());
        a[18..24].copy_from_slice(&self.tha);
        a[24..28].copy_from_slice(&self.tpa.octets());
    }
}

/// Group bit set: broadcast or multicast.
pub fn is_multicast_mac(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 != 0)
}

/// A MAC that may own an FDB entry: not multicast, broadcast or all-zero.
pub fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    !is_multicast_mac(mac) && *mac != [0; 6]
}

/// An address a VTEP or a frame's sender may have.
pub fn is_unicast_ip(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || ip.octets()[0] >= 240)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_reserved_bits() {
        // RFC 7348 §5: flags 0x08, 24 reserved bits, VNI, 8 reserved bits.
        let raw = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa];
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: 0x123456 }));
        assert_eq!(p.payload(), &[0xaa]);
        // Reserved bits are ignored on receipt.
        let noisy = [0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0xff];
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&noisy[..])),
            Ok(Repr { vni: 0x123456 })
        );
        let mut out = [0xffu8; 8];
        Repr { vni: 0x123456 }.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, raw[..8]);
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&[0x00, 0, 0, 0, 0, 0, 1, 0][..])),
            Err(Error::NoVni)
        );
        assert_eq!(Packet::new_checked(&raw[..7]).err(), Some(Error::Truncated));
    }

    #[test]
    fn arp_round_trip() {
        let a = Arp {
            op: ARP_REQUEST,
            sha: [2, 0, 0, 0, 0, 1],
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: [0; 6],
            tpa: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut f = [0u8; ARP_FRAME_LEN];
        a.emit_frame([0xff; 6], &mut f);
        assert_eq!(Arp::parse_frame(&f), Some(a));
        assert_eq!(Arp::parse_frame(&f[..41]), None);
        f[21] = 3; // op 3
        assert_eq!(Arp::parse_frame(&f), None);
    }
}
