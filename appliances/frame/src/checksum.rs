//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624), for both kinds of
//! checksum field a forwarder meets: a complete one (the complement of the sum), and a
//! partial one left by checksum offload (`NEEDS_CSUM`: the field holds the uncomplemented
//! pseudo-header sum and the device finishes the job).

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero) to `initial`.
/// The result is unfolded; pass it to [`fold`] or [`finish`].
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    // Fold 64 → 32 bits, keeping carries.
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a sum to 16 bits with end-around carry (not complemented).
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The value a complete checksum field holds: the complement of the folded sum.
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// The IPv4 pseudo-header's sum for a TCP or UDP segment of `len` bytes.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let w = |b: [u8; 4]| {
        u32::from(u16::from_be_bytes([b[0], b[1]])) + u32::from(u16::from_be_bytes([b[2], b[3]]))
    };
    w(src) + w(dst) + u32::from(proto) + u32::from(len)
}

/// The checksum of an IPv4 header whose checksum field (bytes 10..12) holds anything.
pub fn ipv4_header(header: &[u8]) -> u16 {
    let s = sum(&header[..10], 0);
    finish(sum(&header[12..], s))
}

/// True when an IPv4 header's checksum verifies.
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    fold(sum(header, 0)) == 0xffff
}

/// A complete checksum field after a 16-bit word of the data changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// [`update16`] for a 32-bit field (an IPv4 address).
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let check = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(check, old as u16, new as u16)
}

/// What a 32-bit field changing from `old` to `new` adds to a checksum: RFC 1624's
/// `~m + m'` terms of eqn. 3, unfolded. A forwarder that makes the same changes to every
/// packet of a flow adds them up once and applies the sum with [`apply_delta`].
pub fn delta32(old: u32, new: u32) -> u32 {
    u32::from(!(old >> 16) as u16) + u32::from(!old as u16) + (new >> 16) + (new & 0xffff)
}

/// [`delta32`] for a 16-bit field.
pub fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// A complete checksum field after the changes whose [`delta32`]/[`delta16`] terms sum,
/// folded, to `delta`.
#[inline]
pub fn apply_delta(check: u16, delta: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(delta))
}

/// A partial checksum field (offload's pseudo-header sum, uncomplemented) after a 32-bit
/// word covered by the pseudo-header (an address) changed. Port changes do not touch a
/// partial field: the device sums the ports itself.
pub fn update_partial32(field: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(field)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!old as u16)
        + (new >> 16)
        + (new & 0xffff);
    fold(s)
}

/// A partial checksum field after the pseudo-header's length changed (a segment of a
/// superframe, a reassembled datagram).
pub fn update_partial16(field: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(field) + u32::from(!old) + u32::from(new))
}

/// Computes in software the checksum offload left to the device: sums `frame` from
/// `start` to its end (the field at `start + offset` holds the pseudo-header sum) and
/// stores the result there. False (and nothing written) when the offsets do not fit.
/// `udp` maps a zero result to 0xffff, as UDP requires.
pub fn complete_partial(frame: &mut [u8], start: usize, offset: usize, udp: bool) -> bool {
    let at = start.saturating_add(offset);
    if start >= frame.len() || at.saturating_add(2) > frame.len() {
        return false;
    }
    let mut c = finish(sum(&frame[start..], 0));
    if udp && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 §3's example words.
    const RFC1071: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];

    #[test]
    fn rfc1071_example() {
        assert_eq!(fold(sum(&RFC1071, 0)), 0xddf2);
        assert_eq!(finish(sum(&RFC1071, 0)), !0xddf2);
        // Odd length: the last byte is the high half of a word.
        assert_eq!(fold(sum(&[0x01], 0)), 0x0100);
        assert_eq!(
            fold(sum(&[0xff; 7], 0)),
            fold(sum(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0], 0))
        );
    }

    #[test]
    fn a_delta_collected_once_updates_as_each_change_would() {
        // An IPv4 header whose source, destination and TTL change (as SNAT, routing).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let (src, dst) = (0xcb00_7165u32, 0x0a00_0007u32);
        let delta =
            fold(delta32(0xc0a8_0001, src) + delta32(0xc0a8_00c7, dst) + delta16(0x4011, 0x3f11));
        h[8] = 0x3f;
        h[12..16].copy_from_slice(&src.to_be_bytes());
        h[16..20].copy_from_slice(&dst.to_be_bytes());
        let check = apply_delta(0xb861, delta);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        assert!(ipv4_header_ok(&h));
        assert_eq!(check, ipv4_header(&h));
        let stepwise = update16(
            update32(update32(0xb861, 0xc0a8_0001, src), 0xc0a8_00c7, dst),
            0x4011,
            0x3f11,
        );
        assert_eq!(check, stepwise);
    }

    #[test]
    fn ipv4_header_of_a_known_packet() {
        // A captured header (checksum 0xb861), from Wikipedia's IPv4 checksum example.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(ipv4_header_ok(&h));
        h[8] -= 1; // TTL decremented without fixing the checksum
        assert!(!ipv4_header_ok(&h));
    }

    #[test]
    fn incremental_updates_match_recomputation() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = ipv4_header(&h);
        // TTL 64 → 63 (the word TTL|proto).
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let c2 = update16(c, old, new);
        assert_eq!(c2, ipv4_header(&h));
        // Source 192.168.0.1 → 203.0.113.101.
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        h[12..16].copy_from_slice(&[203, 0, 113, 101]);
        let new = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        assert_eq!(update32(c2, old, new), ipv4_header(&h));
    }

    #[test]
    fn partial_field_update_equals_a_fresh_pseudo_header_sum() {
        let src = [10, 0, 0, 5];
        let dst = [198, 51, 100, 7];
        let field = fold(pseudo_v4(src, dst, 6, 1480));
        let nat = [203, 0, 113, 101];
        let updated = update_partial32(field, u32::from_be_bytes(src), u32::from_be_bytes(nat));
        assert_eq!(updated, fold(pseudo_v4(nat, dst, 6, 1480)));
        assert_eq!(
            update_partial16(updated, 1480, 60),
            fold(pseudo_v4(nat, dst, 6, 60))
        );
    }

    #[test]
    fn completing_a_partial_checksum_verifies() {
        // A UDP datagram 10.0.0.1:1000 → 10.0.0.2:2000, payload "hi!", checksum partial.
        let src = [10, 0, 0, 1];
        let dst = [10, 0, 0, 2];
        let mut udp = [0x03, 0xe8, 0x07, 0xd0, 0, 11, 0, 0, b'h', b'i', b'!'];
        let field = fold(pseudo_v4(src, dst, 17, 11));
        udp[6..8].copy_from_slice(&field.to_be_bytes());
        assert!(complete_partial(&mut udp, 0, 6, true));
        // Verifying: pseudo-header + segment sums to 0xffff.
        assert_eq!(fold(sum(&udp, pseudo_v4(src, dst, 17, 11))), 0xffff);
        assert!(
            !complete_partial(&mut udp, 0, 10, true),
            "field past the end"
        );
        assert!(
            !complete_partial(&mut udp, 11, 0, true),
            "start past the end"
        );
    }
}
