//! Software segmentation of a TCP/IPv4 superframe (what a NIC's TSO does): each segment
//! gets the headers with its own IP length, IP ID, sequence number and flags, and complete
//! checksums, so it can leave by a NIC without offloads or with a smaller MTU.

use crate::checksum::{finish, fold, ipv4_header, pseudo_v4, sum};
use crate::{
    ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, Fill, IP_PROTO_TCP, be16, be32, put_be16, put_be32,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Not Ethernet + IPv4 + TCP with consistent lengths.
    NotTcp4,
    /// An MSS of zero.
    BadMss,
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Header lengths of an Ethernet + IPv4 + TCP frame: (IP header, TCP header).
pub fn tcp4_headers(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.len() < ETHERNET_HEADER_LEN + 20 || be16(frame, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETHERNET_HEADER_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != IP_PROTO_TCP || ip.len() < ihl + 20 {
        return None;
    }
    let total = usize::from(be16(ip, 2));
    let doff = usize::from(ip[ihl + 12] >> 4) * 4;
    if doff < 20 || total < ihl + doff || total > ip.len() {
        return None;
    }
    Some((ihl, doff))
}

/// How [`segment_tcp4_with`] leaves each segment's TCP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpChecksum {
    /// Complete.
    Full,
    /// Partial, as a device finishes it (virtio's `NEEDS_CSUM`, Linux's
    /// `CHECKSUM_PARTIAL`): the field holds the folded pseudo-header sum, and the sum over
    /// the TCP header and payload is left to the device (`csum_start` = the TCP header,
    /// `csum_offset` = 16).
    Partial,
}

/// Cuts `frame` (a TCP/IPv4 superframe; its TCP checksum field is ignored) into segments
/// of at most `mss` payload bytes. For each, `emit(len, fill)` is called; `fill` writes
/// the segment into the buffer it is given. Returns the number of segments.
pub fn segment_tcp4(
    frame: &[u8],
    mss: usize,
    emit: &mut dyn FnMut(usize, &mut Fill<'_>),
) -> Result<usize, SegmentError> {
    segment_tcp4_with(frame, mss, TcpChecksum::Full, emit)
}

/// [`segment_tcp4`] with the segments' TCP checksums complete or left partial.
pub fn segment_tcp4_with(
    frame: &[u8],
    mss: usize,
    checksum: TcpChecksum,
    emit: &mut dyn FnMut(usize, &mut Fill<'_>),
) -> Result<usize, SegmentError> {
    if mss == 0 {
        return Err(SegmentError::BadMss);
    }
    let (ihl, doff) = tcp4_headers(frame).ok_or(SegmentError::NotTcp4)?;
    let hdr = ETHERNET_HEADER_LEN + ihl + doff;
    let ip_total = usize::from(be16(frame, ETHERNET_HEADER_LEN + 2));
    let end = ETHERNET_HEADER_LEN + ip_total;
    let payload = end - hdr;
    let tcp_at = ETHERNET_HEADER_LEN + ihl;
    let flags = frame[tcp_at + 13];
    let seq = be32(frame, tcp_at + 4);
    let ip_id = be16(frame, ETHERNET_HEADER_LEN + 4);
    let src: [u8; 4] = frame[ETHERNET_HEADER_LEN + 12..ETHERNET_HEADER_LEN + 16]
        .try_into()
        .unwrap_or_default();
    let dst: [u8; 4] = frame[ETHERNET_HEADER_LEN + 16..ETHERNET_HEADER_LEN + 20]
        .try_into()
        .unwrap_or_default();
    let count = payload.div_ceil(mss).max(1);
    for i in 0..count {
        let off = i * mss;
        let len = mss.min(payload - off.min(payload));
        let first = i == 0;
        let last = i + 1 == count;
        let mut fill = |out: &mut [u8]| {
            out[..hdr].copy_from_slice(&frame[..hdr]);
            out[hdr..hdr + len].copy_from_slice(&frame[hdr + off..hdr + off + len]);
            let ip = &mut out[ETHERNET_HEADER_LEN..];
            put_be16(ip, 2, (ihl + doff + len) as u16);
            put_be16(ip, 4, ip_id.wrapping_add(i as u16));
            put_be16(ip, 10, 0);
            let c = ipv4_header(&ip[..ihl]);
            put_be16(ip, 10, c);
            let tcp = &mut ip[ihl..ihl + doff + len];
            put_be32(tcp, 4, seq.wrapping_add(off as u32));
            let mut f = flags;
            if !last {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if !first {
                f &= !TCP_CWR;
            }
            tcp[13] = f;
            let pseudo = pseudo_v4(src, dst, IP_PROTO_TCP, (doff + len) as u16);
            let c = match checksum {
                TcpChecksum::Partial => fold(pseudo),
                TcpChecksum::Full => {
                    put_be16(tcp, 16, 0);
                    finish(sum(tcp, pseudo))
                }
            };
            put_be16(tcp, 16, c);
        };
        emit(hdr + len, &mut fill);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum::{fold, ipv4_header_ok};
    use std::vec;
    use std::vec::Vec;

    /// An Ethernet + IPv4 + TCP frame carrying `payload`, TCP flags `flags`.
    fn superframe(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload.len()];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        put_be16(ip, 2, (40 + payload.len()) as u16);
        put_be16(ip, 4, 0x1000);
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 5]);
        ip[16..20].copy_from_slice(&[198, 51, 100, 7]);
        let tcp = &mut ip[20..];
        put_be16(tcp, 0, 40000);
        put_be16(tcp, 2, 5201);
        put_be32(tcp, 4, 0xffff_fff0); // wraps during segmentation
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[20..].copy_from_slice(payload);
        f
    }

    fn segments(frame: &[u8], mss: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = segment_tcp4(frame, mss, &mut |len: usize, fill: &mut Fill<'_>| {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            out.push(buf);
        })
        .unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn partial_segments_are_finished_by_the_device_rule() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let frame = superframe(&payload, 0x18);
        let full = segments(&frame, 1400);
        let mut partial = Vec::new();
        segment_tcp4_with(&frame, 1400, TcpChecksum::Partial, &mut |len, fill| {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            partial.push(buf);
        })
        .unwrap();
        assert_eq!(partial.len(), full.len());
        for (mut p, f) in partial.into_iter().zip(full) {
            assert_ne!(p, f, "the checksum is left to the device");
            // What a device does with csum_start 34, csum_offset 16.
            assert!(crate::checksum::complete_partial(&mut p, 34, 16, false));
            assert_eq!(p, f);
        }
    }

    #[test]
    fn a_checksum_left_to_the_device_comes_out_as_computed_here() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 13) as u8).collect();
        let full = segments(&superframe(&payload, 0x18), 1448).remove(0);
        for start in [0x00, 0x12, 0xff] {
            // Whatever the field held: zero as smoltcp leaves it, or anything.
            let mut f = full.clone();
            f[14 + 20 + 16] = start;
            let o = crate::Offload::leave_tcp4_checksum(&mut f).unwrap();
            assert!(o.needs_csum() && !o.is_gso());
            assert_eq!((o.csum_start, o.csum_offset), (34, 16));
            let (start, offset) = (usize::from(o.csum_start), usize::from(o.csum_offset));
            assert!(crate::checksum::complete_partial(
                &mut f, start, offset, false
            ));
            assert_eq!(f, full);
        }
        // Not TCP over IPv4, or a fragment of it: left alone.
        for (at, value) in [(12, 0x86), (14 + 9, 17), (14 + 6, 0x20), (14 + 2, 0xff)] {
            let mut f = full.clone();
            f[at] = value;
            let before = f.clone();
            assert_eq!(crate::Offload::leave_tcp4_checksum(&mut f), None, "{at}");
            assert_eq!(f, before);
        }
        assert_eq!(crate::Offload::leave_tcp4_checksum(&mut [0u8; 20]), None);
    }

    #[test]
    fn cuts_a_superframe_into_valid_segments() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let frame = superframe(&payload, 0x80 | 0x18 | 0x01); // CWR, ACK+PSH, FIN
        let segs = segments(&frame, 1448);
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let ip = &s[14..];
            assert!(ipv4_header_ok(&ip[..20]), "segment {i} IP checksum");
            assert_eq!(usize::from(be16(ip, 2)), s.len() - 14);
            assert_eq!(be16(ip, 4), 0x1000 + i as u16);
            let tcp = &ip[20..];
            let pseudo = pseudo_v4([10, 0, 0, 5], [198, 51, 100, 7], 6, tcp.len() as u16);
            assert_eq!(fold(sum(tcp, pseudo)), 0xffff, "segment {i} TCP checksum");
            assert_eq!(be32(tcp, 4), 0xffff_fff0u32.wrapping_add(1448 * i as u32));
            let f = tcp[13];
            assert_eq!(f & 0x80 != 0, i == 0, "CWR on the first only");
            assert_eq!(f & 0x09 != 0, i == 2, "FIN and PSH on the last only");
            assert!(f & 0x10 != 0, "ACK on all");
            joined.extend_from_slice(&tcp[20..]);
        }
        assert_eq!(segs[2].len(), 14 + 40 + 3000 - 2 * 1448);
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_frame_within_the_mss_is_one_segment_and_junk_is_refused() {
        let frame = superframe(&[1, 2, 3], 0x18);
        assert_eq!(segments(&frame, 1448).len(), 1);
        let mut emit = |_: usize, _: &mut Fill<'_>| {};
        assert_eq!(
            segment_tcp4(&frame, 0, &mut emit),
            Err(SegmentError::BadMss)
        );
        assert_eq!(
            segment_tcp4(&frame[..40], 1448, &mut emit),
            Err(SegmentError::NotTcp4)
        );
        let mut lying = frame.clone();
        put_be16(&mut lying[14..], 2, 9000); // IP length past the frame
        assert_eq!(
            segment_tcp4(&lying, 1448, &mut emit),
            Err(SegmentError::NotTcp4)
        );
        let mut udp = frame.clone();
        udp[14 + 9] = 17;
        assert_eq!(
            segment_tcp4(&udp, 1448, &mut emit),
            Err(SegmentError::NotTcp4)
        );
    }
}
