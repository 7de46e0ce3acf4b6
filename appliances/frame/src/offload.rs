//! `virtio_net_hdr_v1` (virtio 1.x §5.1.6): the facts a device and driver exchange about a
//! frame when checksum and segmentation offloads are negotiated. With `VERSION_1` the
//! header is 12 bytes, little endian.

/// Bytes of `virtio_net_hdr_v1`.
pub const HEADER_LEN: usize = 12;
/// `flags`: the checksum from `csum_start` to the end is still to be computed and stored
/// at `csum_start + csum_offset`; the field holds the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the device validated the checksums (receive only).
pub const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// What kind of superframe this is, when it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GsoKind {
    #[default]
    None,
    Tcp4,
    Tcp6,
    Udp,
    /// A value this code does not know; such frames are dropped by forwarders.
    Unknown(u8),
}

/// A frame's offload metadata. `Offload::default()` is a plain, fully checksummed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// [`F_NEEDS_CSUM`] and/or [`F_DATA_VALID`].
    pub flags: u8,
    pub gso: GsoKind,
    /// The TCP segments carry ECN's CWR: the device must keep it on the first only.
    pub ecn: bool,
    /// Bytes of headers (Ethernet + IP + TCP) in front of each segment's payload.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header's first byte) and where, from
    /// there, the 16-bit result goes.
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Offload {
    /// Leaves the TCP checksum of `frame` (Ethernet + IPv4 + TCP, not a fragment) to the
    /// device: its field gets the folded pseudo-header sum, and the returned offload says
    /// where the device finishes it. Whatever the field held is replaced, so a complete
    /// checksum is merely computed again. `None` for any other frame, left unchanged.
    pub fn leave_tcp4_checksum(frame: &mut [u8]) -> Option<Offload> {
        use crate::{ETHERNET_HEADER_LEN as L2, ETHERTYPE_IPV4, IP_PROTO_TCP, be16, put_be16};
        let ip = frame.get(L2..)?;
        if be16(frame, 12) != ETHERTYPE_IPV4 || ip.len() < 20 || ip[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(be16(ip, 2));
        // A fragment's checksum covers the whole datagram, which this frame is not.
        let fragment = be16(ip, 6) & 0x3fff != 0;
        if ip[9] != IP_PROTO_TCP || fragment || ihl < 20 || total > ip.len() || total < ihl + 20 {
            return None;
        }
        let pseudo = crate::checksum::pseudo_v4(
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
            IP_PROTO_TCP,
            (total - ihl) as u16,
        );
        put_be16(frame, L2 + ihl + 16, crate::checksum::fold(pseudo));
        Some(Offload {
            flags: F_NEEDS_CSUM,
            csum_start: (L2 + ihl) as u16,
            csum_offset: 16,
            ..Offload::default()
        })
    }

    pub fn parse(hdr: &[u8; HEADER_LEN]) -> Offload {
        let le = |at: usize| u16::from_le_bytes([hdr[at], hdr[at + 1]]);
        let gso = match hdr[1] & !GSO_ECN {
            GSO_NONE => GsoKind::None,
            GSO_TCPV4 => GsoKind::Tcp4,
            GSO_TCPV6 => GsoKind::Tcp6,
            GSO_UDP => GsoKind::Udp,
            other => GsoKind::Unknown(other),
        };
        Offload {
            flags: hdr[0],
            gso,
            ecn: hdr[1] & GSO_ECN != 0,
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// Writes the header (`num_buffers` = 0, as a driver sends it).
    pub fn write(&self, hdr: &mut [u8; HEADER_LEN]) {
        let gso = match self.gso {
            GsoKind::None => GSO_NONE,
            GsoKind::Tcp4 => GSO_TCPV4,
            GsoKind::Tcp6 => GSO_TCPV6,
            GsoKind::Udp => GSO_UDP,
            GsoKind::Unknown(v) => v,
        };
        hdr[0] = self.flags;
        hdr[1] = gso | if self.ecn { GSO_ECN } else { 0 };
        hdr[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        hdr[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        hdr[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        hdr[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        hdr[10..12].fill(0);
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    pub fn is_gso(&self) -> bool {
        self.gso != GsoKind::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_tcp4_superframe_header() {
        // What Linux's tap hands a guest for a 64 KB TSO frame with CWR.
        let raw = [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
        let o = Offload::parse(&raw);
        assert_eq!(
            o,
            Offload {
                flags: F_NEEDS_CSUM,
                gso: GsoKind::Tcp4,
                ecn: true,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        let mut out = [0xffu8; HEADER_LEN];
        o.write(&mut out);
        assert_eq!(out, raw);
        assert!(o.needs_csum() && o.is_gso());
        assert!(!Offload::default().is_gso());
    }

    #[test]
    fn unknown_gso_types_survive() {
        let o = Offload::parse(&[0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(o.gso, GsoKind::Unknown(5));
    }
}
