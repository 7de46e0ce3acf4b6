//! Frame builders and a deterministic generator of malformed frames, for checking that
//! an appliance drops garbage (and counts it) instead of crashing or answering it.

use std::net::Ipv4Addr;

/// `ff:ff:ff:ff:ff:ff`.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IEEE 802 "local experimental" EtherType: safe for test-only payloads.
pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;

/// Every kind [`malformed_frames`] produces, in the order it produces them.
pub const MALFORMED_KINDS: &[&str] = &[
    "random_bytes",
    "random_payload",
    "eth_truncated",
    "vlan_truncated",
    "ipv4_truncated",
    "ipv4_bad_version",
    "ipv4_bad_checksum",
    "ipv4_ihl_lt_5",
    "ipv4_ihl_gt_len",
    "ipv4_total_len_gt_frame",
    "ipv4_total_len_lt_header",
    "ipv4_bad_options",
    "ipv4_fragment",
    "ipv4_ttl_zero",
    "icmp_truncated",
    "icmp_echo_bad_checksum",
    "icmp_unknown_type",
    "oversized",
    "arp_truncated",
    "arp_bad_htype",
    "arp_bad_ptype",
    "arp_bad_hlen",
    "arp_bad_plen",
    "arp_bad_oper",
];

/// Total frame lengths (Ethernet header included) of the `oversized` kind. Senders
/// filter with [`fits_mtu`]: the kernel refuses to send more than MTU + 14 bytes.
pub const OVERSIZED_LENGTHS: &[usize] = &[1515, 1600, 4096, 9000, 9014, 9015, 16_000];

/// Whether `frame` can be sent on a link with this MTU (no VLAN tag allowance).
pub fn fits_mtu(frame: &[u8], mtu: u16) -> bool {
    frame.len() >= 14 && frame.len() <= usize::from(mtu) + 14
}

/// xorshift64* PRNG: tiny, deterministic, good enough to make test garbage.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        // Zero is xorshift's fixed point; any other constant will do.
        XorShift64(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..=hi` (`hi >= lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo) as u64;
        match span.checked_add(1) {
            Some(n) => lo + (self.next_u64() % n) as usize,
            None => self.next_u64() as usize,
        }
    }

    pub fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// RFC 1071 Internet checksum of `data` (odd length padded with a zero byte).
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet header followed by `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A valid 20-byte IPv4 header (no options, DF clear, TTL 64) for `payload_len` bytes.
pub fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
    payload_len: usize,
) -> [u8; 20] {
    let total = (20 + payload_len).min(0xffff) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    fix_ipv4_checksum(&mut h);
    h
}

/// Recomputes the checksum over the first 20 bytes of an IPv4 header.
fn fix_ipv4_checksum(h: &mut [u8]) {
    h[10..12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// ICMP echo request (`reply == false`) or reply with a valid checksum.
pub fn icmp_echo(reply: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + payload.len());
    m.push(if reply { 0 } else { 8 });
    m.push(0);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let c = internet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// IPv4 header + `l4` as one packet.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ident: u16, l4: &[u8]) -> Vec<u8> {
    let mut p = ipv4_header(src, dst, protocol, ident, l4.len()).to_vec();
    p.extend_from_slice(l4);
    p
}

/// A 28-byte Ethernet/IPv4 ARP packet; `oper` 1 = request, 2 = reply.
pub fn arp(oper: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> [u8; 28] {
    let mut a = [0u8; 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&oper.to_be_bytes());
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
    a
}

/// Malformed and hostile frames for robustness tests, as `(kind, frame)` with `kind`
/// one of [`MALFORMED_KINDS`]. The same arguments always give the same frames.
///
/// Structured kinds come twice, addressed to `dst_mac` and to broadcast. Frames shorter
/// than 14 bytes (`eth_truncated`, some `random_bytes`) cannot be sent through a Linux
/// socket or tap (the kernel answers `EINVAL`); `oversized` frames need a link MTU that
/// allows them (see [`fits_mtu`]). Only `eth_truncated` contains an empty frame.
pub fn malformed_frames(
    seed: u64,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    dst_ip: Ipv4Addr,
    src_ip: Ipv4Addr,
) -> Vec<(String, Vec<u8>)> {
    let mut rng = XorShift64::new(seed);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let dsts = [dst_mac, BROADCAST_MAC];
    let mut push = |kind: &str, frame: Vec<u8>| {
        debug_assert!(MALFORMED_KINDS.contains(&kind), "unlisted kind {kind}");
        out.push((kind.to_owned(), frame));
    };

    for _ in 0..8 {
        let len = rng.range(1, 256);
        push("random_bytes", rng.bytes(len));
    }
    for i in 0..8 {
        let ethertype = match i % 4 {
            0 => ETHERTYPE_IPV4,
            1 => ETHERTYPE_ARP,
            2 => 0x86dd,
            _ => rng.u16(),
        };
        let len = rng.range(0, 128);
        let payload = rng.bytes(len);
        push(
            "random_payload",
            ethernet(dsts[i % 2], src_mac, ethertype, &payload),
        );
    }

    let echo = |rng: &mut XorShift64, len: usize| {
        let payload = rng.bytes(len);
        icmp_echo(false, rng.u16(), rng.u16(), &payload)
    };

    for dst in dsts {
        let full = ethernet(dst, src_mac, ETHERTYPE_IPV4, &[]);
        for n in 0..14 {
            push("eth_truncated", full[..n].to_vec());
        }
    }

    for dst in dsts {
        let inner = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 8));
        let mut tag = vec![0x00, 0x01];
        tag.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        for n in 0..4 {
            push(
                "vlan_truncated",
                ethernet(dst, src_mac, ETHERTYPE_VLAN, &tag[..n]),
            );
        }
        // A complete tag in front of a packet cut inside its IPv4 header.
        tag.extend_from_slice(&inner[..10]);
        push(
            "vlan_truncated",
            ethernet(dst, src_mac, ETHERTYPE_VLAN, &tag),
        );
    }

    for dst in dsts {
        let ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
        for n in 0..20 {
            push(
                "ipv4_truncated",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip[..n]),
            );
        }
    }

    for dst in dsts {
        for version in [0u8, 6, 15] {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
            ip[0] = version << 4 | 5;
            fix_ipv4_checksum(&mut ip);
            push(
                "ipv4_bad_version",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
        ip[10] ^= 0x5a;
        push(
            "ipv4_bad_checksum",
            ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
        );
        let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
        ip[10..12].copy_from_slice(&[0, 0]);
        push(
            "ipv4_bad_checksum",
            ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
        );
    }

    for dst in dsts {
        for ihl in 0u8..5 {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
            ip[0] = 0x40 | ihl;
            fix_ipv4_checksum(&mut ip);
            push("ipv4_ihl_lt_5", ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip));
        }
    }

    for dst in dsts {
        // The header claims more bytes than the whole packet has.
        for ihl in [6u8, 10, 15] {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 0));
            ip.truncate(usize::from(ihl) * 4 - 4);
            ip[0] = 0x40 | ihl;
            let total = ip.len() as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            fix_ipv4_checksum(&mut ip);
            push(
                "ipv4_ihl_gt_len",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        for extra in [1u16, 100, u16::MAX] {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
            let total = (ip.len() as u16).saturating_add(extra);
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            fix_ipv4_checksum(&mut ip);
            push(
                "ipv4_total_len_gt_frame",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        for total in [0u16, 1, 19] {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            fix_ipv4_checksum(&mut ip);
            push(
                "ipv4_total_len_lt_header",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        // Option lists that trip naive parsers: zero length (an endless loop), length
        // past the header, a lone type byte, and random bytes.
        let random: [u8; 8] = rng.bytes(8).try_into().unwrap_or_default();
        let option_sets: [&[u8]; 4] = [
            &[0x44, 0x00, 0x05, 0x00],
            &[0x07, 0x27, 0x04, 0x00],
            &[0x01, 0x01, 0x01, 0x83],
            &random,
        ];
        for opts in option_sets {
            let l4 = echo(&mut rng, 8);
            let mut ip = ipv4_header(src_ip, dst_ip, 1, rng.u16(), l4.len() + opts.len()).to_vec();
            ip[0] = 0x40 | ((20 + opts.len()) / 4) as u8;
            ip.extend_from_slice(opts);
            // Checksum over header plus options, as a correct sender would compute it.
            let c = ipv4_header_checksum_with_options(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend_from_slice(&l4);
            push(
                "ipv4_bad_options",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        // More-fragments set, an offset into nowhere, the largest offset, both at once.
        for (mf, offset) in [(true, 0u16), (false, 185), (false, 0x1fff), (true, 0x1fff)] {
            let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 24));
            let flags_frag = u16::from(mf) << 13 | offset;
            ip[6..8].copy_from_slice(&flags_frag.to_be_bytes());
            fix_ipv4_checksum(&mut ip);
            push("ipv4_fragment", ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip));
        }
    }

    for dst in dsts {
        let mut ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &echo(&mut rng, 16));
        ip[8] = 0;
        fix_ipv4_checksum(&mut ip);
        push("ipv4_ttl_zero", ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip));
    }

    for dst in dsts {
        let full = echo(&mut rng, 0);
        for n in 0..8 {
            let ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &full[..n]);
            push(
                "icmp_truncated",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        let mut icmp = echo(&mut rng, 32);
        icmp[2] ^= 0xa5;
        let ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &icmp);
        push(
            "icmp_echo_bad_checksum",
            ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
        );
    }

    for dst in dsts {
        for ty in [1u8, 42, 255] {
            let mut icmp = echo(&mut rng, 16);
            icmp[0] = ty;
            icmp[2..4].copy_from_slice(&[0, 0]);
            let c = internet_checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &icmp);
            push(
                "icmp_unknown_type",
                ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip),
            );
        }
    }

    for dst in dsts {
        for &len in OVERSIZED_LENGTHS {
            let icmp = echo(&mut rng, len - 14 - 20 - 8);
            let ip = ipv4_packet(src_ip, dst_ip, 1, rng.u16(), &icmp);
            push("oversized", ethernet(dst, src_mac, ETHERTYPE_IPV4, &ip));
        }
    }

    let request = arp(1, src_mac, src_ip, [0; 6], dst_ip);
    for dst in dsts {
        for n in 0..28 {
            push(
                "arp_truncated",
                ethernet(dst, src_mac, ETHERTYPE_ARP, &request[..n]),
            );
        }
        let field_cases: [(&str, usize, &[u16]); 5] = [
            ("arp_bad_htype", 0, &[0, 6, 0xffff]),
            ("arp_bad_ptype", 2, &[0, 0x86dd, 0xffff]),
            ("arp_bad_hlen", 4, &[0, 5, 7, 255]),
            ("arp_bad_plen", 5, &[0, 3, 16, 255]),
            ("arp_bad_oper", 6, &[0, 3, 4, 0xffff]),
        ];
        for (kind, at, values) in field_cases {
            for &v in values {
                let mut a = request;
                if at == 4 || at == 5 {
                    a[at] = v as u8;
                } else {
                    a[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
                push(kind, ethernet(dst, src_mac, ETHERTYPE_ARP, &a));
            }
        }
    }
    out
}

/// Checksum of an IPv4 header including its options (checksum field taken as zero).
fn ipv4_header_checksum_with_options(ip: &[u8]) -> u16 {
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    let mut h = ip[..hlen.min(ip.len())].to_vec();
    h[10..12].copy_from_slice(&[0, 0]);
    internet_checksum(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
    const DST_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const SRC_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    fn frames(seed: u64) -> Vec<(String, Vec<u8>)> {
        malformed_frames(seed, DST_MAC, SRC_MAC, DST_IP, SRC_IP)
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the ones' complement sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // A header with its checksum filled in sums to zero.
        let h = ipv4_header(SRC_IP, DST_IP, 1, 7, 10);
        assert_eq!(internet_checksum(&h), 0);
        assert_eq!(internet_checksum(&icmp_echo(false, 1, 2, b"abc")), 0);
    }

    #[test]
    fn every_kind_is_produced_and_nothing_else() {
        let f = frames(1);
        for kind in MALFORMED_KINDS {
            assert!(f.iter().any(|(k, _)| k == kind), "kind {kind} missing");
        }
        for (kind, _) in &f {
            assert!(MALFORMED_KINDS.contains(&kind.as_str()), "unlisted {kind}");
        }
    }

    #[test]
    fn deterministic_per_seed_and_seed_matters() {
        assert_eq!(frames(42), frames(42));
        assert_ne!(frames(42), frames(43));
        assert_eq!(frames(0), frames(0));
    }

    #[test]
    fn only_eth_truncated_may_be_empty() {
        for seed in [0, 1, 99, u64::MAX] {
            for (kind, frame) in frames(seed) {
                if frame.is_empty() {
                    assert_eq!(kind, "eth_truncated");
                }
            }
        }
        assert!(frames(5).iter().any(|(_, f)| f.is_empty()));
    }

    #[test]
    fn frames_say_what_they_claim() {
        let f = frames(7);
        fn frames_of<'a>(
            f: &'a [(String, Vec<u8>)],
            kind: &'a str,
        ) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
            f.iter().filter(move |(k, _)| k == kind).map(|(_, f)| f)
        }
        let of = |kind: &'static str| frames_of(&f, kind);
        for frame in of("ipv4_bad_checksum") {
            assert_ne!(internet_checksum(&frame[14..34]), 0);
        }
        for frame in of("ipv4_ihl_lt_5") {
            assert!(frame[14] & 0x0f < 5);
        }
        for frame in of("ipv4_ihl_gt_len") {
            assert!(usize::from(frame[14] & 0x0f) * 4 > frame.len() - 14);
        }
        for frame in of("ipv4_total_len_gt_frame") {
            assert!(usize::from(u16::from_be_bytes([frame[16], frame[17]])) > frame.len() - 14);
        }
        for frame in of("icmp_echo_bad_checksum") {
            assert_eq!(internet_checksum(&frame[14..34]), 0);
            assert_ne!(internet_checksum(&frame[34..]), 0);
        }
        for frame in of("icmp_truncated") {
            assert!(frame.len() - 34 < 8);
            assert_eq!(internet_checksum(&frame[14..34]), 0);
        }
        for frame in of("ipv4_bad_options") {
            let hlen = usize::from(frame[14] & 0x0f) * 4;
            assert!(hlen > 20);
            assert_eq!(internet_checksum(&frame[14..14 + hlen]), 0);
        }
        let sizes: Vec<usize> = of("oversized").map(Vec::len).collect();
        assert_eq!(sizes.len(), 2 * OVERSIZED_LENGTHS.len());
        assert!(sizes.iter().all(|s| OVERSIZED_LENGTHS.contains(s)));
        for frame in of("oversized") {
            assert_eq!(internet_checksum(&frame[14..34]), 0);
            assert_eq!(
                usize::from(u16::from_be_bytes([frame[16], frame[17]])),
                frame.len() - 14
            );
        }
        assert!(of("arp_truncated").all(|f| f.len() < 14 + 28));
        for kind in [
            "arp_bad_hlen",
            "arp_bad_plen",
            "arp_bad_oper",
            "arp_bad_htype",
        ] {
            assert!(of(kind).all(|f| f.len() == 42 && f[12..14] == [0x08, 0x06]));
        }
        // Both destinations appear for structured kinds.
        for kind in MALFORMED_KINDS
            .iter()
            .filter(|k| !k.starts_with("random_bytes"))
        {
            let dsts: Vec<&[u8]> = of(kind).filter(|f| f.len() >= 6).map(|f| &f[..6]).collect();
            assert!(
                dsts.contains(&&DST_MAC[..]),
                "{kind} never to the appliance"
            );
            assert!(dsts.contains(&&BROADCAST_MAC[..]), "{kind} never broadcast");
        }
        assert!(fits_mtu(&[0; 1514], 1500) && !fits_mtu(&[0; 1515], 1500));
    }
}
