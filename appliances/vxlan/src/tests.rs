//! Whole flows through one gateway on a fake device: byte vectors for the wire formats,
//! then learning, flooding, ARP, offloads and live changes.

extern crate std;

use crate::frame::checksum::{fold, ipv4_header_ok, pseudo_v4, sum};
use crate::frame::offload::F_NEEDS_CSUM;
use crate::frame::{Fill, GsoKind, Offload, Transmit, be16, put_be16, put_be32};
use crate::schema::control::Op;
use crate::schema::vxlan::{FdbEntry, VxlanRole};
use crate::schema::{Ipv4Cidr, NicConfig};
use crate::wire::{ARP_REPLY, ARP_REQUEST, Arp, OUTER_LEN, Outer};
use crate::{ConfigError, DropReason, Gateway, Outcome, QUEUE_FRAMES, TENANT, UNDERLAY};
use core::net::Ipv4Addr;
use std::collections::BTreeSet;
use std::string::String;
use std::vec;
use std::vec::Vec;

const TENANT_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];
const UNDERLAY_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x02];
const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VNI: u32 = 0x12_3456;

fn vtep(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + n)
}
fn vtep_mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 1, n]
}
fn vm(n: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, n]
}

#[derive(Default)]
struct Sink {
    frames: Vec<(usize, Offload, Vec<u8>)>,
    refuse: bool,
}

impl Transmit for Sink {
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
        if self.refuse {
            return false;
        }
        let mut b = vec![0u8; len];
        fill(&mut b);
        self.frames.push((nic, *offload, b));
        true
    }
}

impl Sink {
    fn take(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.frames
            .drain(..)
            .map(|(n, o, f)| {
                assert_eq!(o, Offload::default());
                (n, f)
            })
            .collect()
    }
}

fn nics() -> Vec<NicConfig> {
    vec![
        NicConfig {
            mac: TENANT_MAC,
            addresses: vec![],
            mtu: 1450,
        },
        NicConfig {
            mac: UNDERLAY_MAC,
            addresses: vec![Ipv4Cidr::new(LOCAL, 24)],
            mtu: 1500,
        },
    ]
}

fn role(remotes: u8) -> VxlanRole {
    VxlanRole {
        vni: VNI,
        udp_port: 4789,
        remote_vteps: (0..remotes).map(vtep).collect(),
        underlay_gateway: None,
        static_entries: vec![],
        arp_responder: true,
        ageing_secs: 300,
        fdb_capacity: 64,
        ttl: 64,
        df: true,
    }
}

fn counter(g: &Gateway, name: &str) -> u64 {
    g.counters()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

fn arp_frame(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr, eth_dst: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    let tha = if op == ARP_REPLY { eth_dst } else { [0; 6] };
    Arp {
        op,
        sha,
        spa,
        tha,
        tpa,
    }
    .emit_frame(eth_dst, &mut f);
    f
}

/// VTEP `n` answers our ARP.
fn resolve(g: &mut Gateway, tx: &mut Sink, n: u8, now: u64) {
    let f = arp_frame(ARP_REPLY, vtep_mac(n), vtep(n), LOCAL, UNDERLAY_MAC);
    assert_eq!(
        g.handle(now, UNDERLAY, &f, &Offload::default(), tx),
        Outcome::Local
    );
}

/// A gateway with `remotes` remote VTEPs, all resolved, its sink emptied.
fn ready(remotes: u8) -> (Gateway, Sink) {
    ready_with(role(remotes))
}

fn ready_with(role: VxlanRole) -> (Gateway, Sink) {
    let mut g = Gateway::new(&nics(), &role, 0).unwrap();
    let mut tx = Sink::default();
    g.start(0, &mut tx);
    for v in &role.remote_vteps {
        resolve(&mut g, &mut tx, v.octets()[3] - 10, 0);
    }
    tx.frames.clear();
    (g, tx)
}

/// Ethernet + IPv4 + UDP from `src` to `dst` with `payload`.
fn udp_frame(dst: [u8; 6], src: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    put_be16(&mut f, 12, 0x0800);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    put_be16(ip, 2, (28 + payload.len()) as u16);
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = crate::frame::checksum::ipv4_header(&ip[..20]);
    put_be16(ip, 10, c);
    let udp = &mut ip[20..];
    put_be16(udp, 0, sport);
    put_be16(udp, 2, dport);
    put_be16(udp, 4, (8 + payload.len()) as u16);
    udp[8..].copy_from_slice(payload);
    f
}

/// What VTEP `n` sends us for `inner`.
fn from_vtep(n: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut f = Outer {
        dst_mac: UNDERLAY_MAC,
        src_mac: vtep_mac(n),
        src_ip: vtep(n),
        dst_ip: LOCAL,
        ttl: 64,
        df: false,
        ip_id: 99,
        src_port: 51000,
        dst_port: 4789,
        vni,
    }
    .emit(inner.len())
    .to_vec();
    f.extend_from_slice(inner);
    f
}

fn dst_ip(outer: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(outer[30], outer[31], outer[32], outer[33])
}

// ------------------------------------------------------------------------ byte vectors

#[test]
fn encapsulation_matches_a_hand_written_frame() {
    let mut r = role(2);
    r.static_entries.push(FdbEntry {
        mac: vm(0xaa),
        vtep: vtep(0),
        ip: None,
    });
    let (mut g, mut tx) = ready_with(r);
    // 64 bytes: Ethernet to vm(0xaa) from vm(1), EtherType 0x88b5 (local experimental), payload 0..50.
    let mut inner = vec![
        0xfa, 0x16, 0x3e, 0, 0, 0xaa, 0xfa, 0x16, 0x3e, 0, 0, 0x01, 0x88, 0xb5,
    ];
    inner.extend(0..50u8);
    let out = g.handle(10, TENANT, &inner, &Offload::default(), &mut tx);
    assert_eq!(out, Outcome::Encapsulated { copies: 1 });
    let sent = tx.take();
    assert_eq!(sent.len(), 1, "unicast: one copy");
    let (nic, f) = &sent[0];
    assert_eq!(*nic, UNDERLAY);
    let sport = g.source_port(&inner);
    assert!(sport >= 49152);
    #[rustfmt::skip]
    let mut expected = vec![
        // Ethernet: to VTEP 0's MAC from ours, IPv4.
        0x52, 0x54, 0x00, 0x00, 0x01, 0x00,  0x52, 0x54, 0x00, 0x00, 0x00, 0x02,  0x08, 0x00,
        // IPv4: IHL 5, length 100, ID 1 (seed 0, first frame), DF, TTL 64, UDP,
        // checksum 0xb67c, 192.0.2.1 → 192.0.2.10.
        0x45, 0x00, 0x00, 0x64,  0x00, 0x01, 0x40, 0x00,  0x40, 0x11, 0xb6, 0x7c,
        0xc0, 0x00, 0x02, 0x01,  0xc0, 0x00, 0x02, 0x0a,
        // UDP: source port from the flow hash, 4789, length 80, checksum 0.
        (sport >> 8) as u8, sport as u8, 0x12, 0xb5,  0x00, 0x50, 0x00, 0x00,
        // VXLAN: I flag, reserved zero, VNI 0x123456, reserved zero.
        0x08, 0x00, 0x00, 0x00,  0x12, 0x34, 0x56, 0x00,
    ];
    expected.extend_from_slice(&inner);
    assert_eq!(f, &expected);
    assert!(ipv4_header_ok(&f[14..34]));
    assert_eq!(counter(&g, "encapsulated"), 1);
    assert_eq!(counter(&g, "unicast"), 1);
}

#[test]
fn decapsulation_delivers_exactly_the_inner_frame() {
    let (mut g, mut tx) = ready(2);
    let inner = udp_frame([0xff; 6], vm(7), 68, 67, b"hello overlay");
    let outer = from_vtep(1, VNI, &inner);
    assert_eq!(
        g.handle(5, UNDERLAY, &outer, &Offload::default(), &mut tx),
        Outcome::Decapsulated
    );
    assert_eq!(tx.take(), vec![(TENANT, inner.clone())]);
    // Ethernet padding after the outer IPv4 datagram is not part of the inner frame.
    let mut padded = from_vtep(1, VNI, &inner);
    padded.extend_from_slice(&[0; 6]);
    g.handle(6, UNDERLAY, &padded, &Offload::default(), &mut tx);
    assert_eq!(tx.take(), vec![(TENANT, inner)]);
    assert_eq!(counter(&g, "decapsulated"), 2);
    assert_eq!(counter(&g, "learnt"), 1);
}

/// Linux's vxlan over a veth on the same host may leave the inner L4 checksum partial;
/// the tenant NIC gets it still partial, its start moved to the inner frame's coordinates.
#[test]
fn an_inner_partial_checksum_stays_partial_relative_to_the_inner_frame() {
    use nanovnf_frame::offload::F_NEEDS_CSUM;
    let (mut g, mut tx) = ready(2);
    let inner = udp_frame([0xff; 6], vm(7), 68, 67, b"partial");
    let outer = from_vtep(1, VNI, &inner);
    let inner_at = outer.len() - inner.len();
    let partial = Offload {
        flags: F_NEEDS_CSUM,
        csum_start: (inner_at + 34) as u16,
        csum_offset: 6,
        ..Offload::default()
    };
    assert_eq!(
        g.handle(5, UNDERLAY, &outer, &partial, &mut tx),
        Outcome::Decapsulated
    );
    let (nic, offload, frame) = tx.frames.pop().expect("delivered");
    assert_eq!((nic, frame), (TENANT, inner.clone()));
    assert_eq!(offload.flags, F_NEEDS_CSUM);
    assert_eq!((offload.csum_start, offload.csum_offset), (34, 6));
    // A partial *outer* checksum says nothing about the inner frame.
    let outer_partial = Offload {
        csum_start: 34,
        ..partial
    };
    g.handle(6, UNDERLAY, &outer, &outer_partial, &mut tx);
    assert_eq!(tx.take(), vec![(TENANT, inner)]);
}

#[test]
fn bad_outer_frames_are_dropped_by_reason() {
    let (mut g, mut tx) = ready(2);
    let inner = udp_frame(vm(1), vm(2), 1, 2, b"x");
    let good = from_vtep(0, VNI, &inner);
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "wrong vni",
            from_vtep(0, VNI + 1, &inner),
            DropReason::WrongVni,
        ),
        (
            "short inner",
            from_vtep(0, VNI, &inner[..13]),
            DropReason::InnerRunt,
        ),
        ("runt", good[..10].to_vec(), DropReason::UnderlayRunt),
    ];
    let mut f = good.clone();
    f[42] = 0x00; // no I flag
    cases.push(("no I flag", f, DropReason::NoVniFlag));
    for cut in [20, 33, 40, 45] {
        let mut f = good[..cut].to_vec();
        // Keep the IPv4 length consistent with the cut so the inner header is what's short.
        if cut >= 34 {
            put_be16(&mut f[14..], 2, (cut - 14) as u16);
            put_be16(&mut f[14..], 10, 0);
            let c = crate::frame::checksum::ipv4_header(&f[14..34]);
            put_be16(&mut f[14..], 10, c);
            if cut >= 42 {
                put_be16(&mut f[34..], 4, (cut - 34) as u16);
            }
        }
        cases.push(("truncated", f, DropReason::Truncated));
    }
    let mut f = good.clone();
    put_be16(&mut f[14..], 2, 2000); // IP length past the frame (checksum fixed below)
    fix_ip_checksum(&mut f);
    cases.push(("ip length", f, DropReason::BadLength));
    let mut f = good.clone();
    put_be16(&mut f[34..], 4, 7); // UDP length below its header
    cases.push(("udp length short", f, DropReason::BadLength));
    let mut f = good.clone();
    put_be16(&mut f[34..], 4, 500); // UDP length past the IP payload
    cases.push(("udp length long", f, DropReason::BadLength));
    let mut f = good.clone();
    f[22] ^= 1; // TTL changed, checksum not
    cases.push(("ip checksum", f, DropReason::BadIpChecksum));
    let mut f = good.clone();
    put_be16(&mut f[34..], 6, 0x1234);
    cases.push(("udp checksum", f, DropReason::BadUdpChecksum));
    let mut f = good.clone();
    put_be16(&mut f[14..], 6, 0x2000); // MF
    fix_ip_checksum(&mut f);
    cases.push(("fragment", f, DropReason::Fragment));
    let mut f = good.clone();
    put_be16(&mut f[34..], 2, 8472);
    cases.push(("port", f, DropReason::WrongPort));
    let mut f = good.clone();
    f[33] = 99; // to 192.0.2.99
    fix_ip_checksum(&mut f);
    cases.push(("other ip", f, DropReason::NotForUs));
    let mut f = good.clone();
    f[5] = 0x77; // to another MAC
    cases.push(("other mac", f, DropReason::NotForUs));
    let mut f = good.clone();
    f[14] = 0x65; // IPv6 version in an IPv4 EtherType
    cases.push(("version", f, DropReason::BadIpHeader));
    let big = vec![0u8; 1450 + 14 + 1];
    cases.push((
        "inner too big",
        from_vtep(0, VNI, &big),
        DropReason::InnerTooBig,
    ));
    for (what, f, reason) in &cases {
        let before = counter(&g, &std::format!("drop_{}", reason.name()));
        let out = g.handle(1, UNDERLAY, f, &Offload::default(), &mut tx);
        assert_eq!(out, Outcome::Dropped(*reason), "{what}");
        assert_eq!(
            counter(&g, &std::format!("drop_{}", reason.name())),
            before + 1,
            "{what} counted"
        );
        assert!(tx.take().is_empty(), "{what}: nothing sent");
    }
    assert_eq!(counter(&g, "decapsulated"), 0);
    // A tagged inner frame may be 4 bytes longer; a valid UDP checksum is accepted.
    let mut tagged = vec![0u8; 1450 + 18];
    put_be16(&mut tagged, 12, 0x8100);
    tagged[6..12].copy_from_slice(&vm(3));
    let f = crate::tests::with_udp_checksum(from_vtep(0, VNI, &tagged));
    assert_eq!(
        g.handle(2, UNDERLAY, &f, &Offload::default(), &mut tx),
        Outcome::Decapsulated
    );
}

fn fix_ip_checksum(f: &mut [u8]) {
    put_be16(&mut f[14..], 10, 0);
    let c = crate::frame::checksum::ipv4_header(&f[14..34]);
    put_be16(&mut f[14..], 10, c);
}

fn with_udp_checksum(mut f: Vec<u8>) -> Vec<u8> {
    let src: [u8; 4] = f[26..30].try_into().unwrap();
    let dst: [u8; 4] = f[30..34].try_into().unwrap();
    let len = (f.len() - 34) as u16;
    let c = crate::frame::checksum::finish(sum(&f[34..], pseudo_v4(src, dst, 17, len)));
    put_be16(&mut f[34..], 6, c);
    f
}

// ------------------------------------------------------------------------ learning

#[test]
fn learnt_macs_are_sent_to_their_vtep_only() {
    let (mut g, mut tx) = ready(3);
    // Unknown: flooded to all three.
    let to_b = udp_frame(vm(0xb), vm(0xa), 1000, 2000, b"ping");
    assert_eq!(
        g.handle(1, TENANT, &to_b, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 3 }
    );
    tx.take();
    // vm(0xb) speaks from behind VTEP 2.
    let from_b = from_vtep(2, VNI, &udp_frame(vm(0xa), vm(0xb), 2000, 1000, b"pong"));
    g.handle(2, UNDERLAY, &from_b, &Offload::default(), &mut tx);
    tx.take();
    assert_eq!(
        g.handle(3, TENANT, &to_b, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 1 }
    );
    let sent = tx.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(dst_ip(&sent[0].1), vtep(2));
    assert_eq!(&sent[0].1[0..6], &vtep_mac(2));
    assert_eq!(counter(&g, "unknown_unicast"), 1);
    assert_eq!(counter(&g, "unicast"), 1);
    // It moves to VTEP 0.
    let moved = from_vtep(0, VNI, &udp_frame(vm(0xa), vm(0xb), 2000, 1000, b"pong"));
    g.handle(4, UNDERLAY, &moved, &Offload::default(), &mut tx);
    assert_eq!(counter(&g, "learn_moved"), 1);
    tx.take();
    g.handle(5, TENANT, &to_b, &Offload::default(), &mut tx);
    assert_eq!(dst_ip(&tx.take()[0].1), vtep(0));
    // A multicast source is delivered but never learnt.
    let mut mcast = udp_frame(vm(0xa), vm(0xc), 1, 2, b"");
    mcast[6] = 0x01;
    let before = g.fdb_len();
    g.handle(
        6,
        UNDERLAY,
        &from_vtep(0, VNI, &mcast),
        &Offload::default(),
        &mut tx,
    );
    assert_eq!(g.fdb_len(), before);
}

#[test]
fn learnt_entries_age_out() {
    let (mut g, mut tx) = ready(2);
    let from_b = from_vtep(1, VNI, &udp_frame(vm(0xa), vm(0xb), 1, 2, b""));
    g.handle(1_000, UNDERLAY, &from_b, &Offload::default(), &mut tx);
    assert_eq!(g.forwarding(&vm(0xb)).map(|f| f.vtep), Some(vtep(1)));
    // Refreshed by traffic at 100 s: ages at 400 s.
    g.handle(100_000, UNDERLAY, &from_b, &Offload::default(), &mut tx);
    g.poll(300_999, &mut tx);
    assert!(g.forwarding(&vm(0xb)).is_some());
    assert!(g.poll_at_ms().is_some_and(|t| t <= 400_000));
    g.poll(400_000, &mut tx);
    assert!(g.forwarding(&vm(0xb)).is_none());
    assert_eq!(counter(&g, "aged"), 1);
    // Without a poll, a lookup notices the age itself: flooded again.
    g.handle(400_001, UNDERLAY, &from_b, &Offload::default(), &mut tx);
    tx.take();
    let to_b = udp_frame(vm(0xb), vm(0xa), 1, 2, b"");
    assert_eq!(
        g.handle(800_000, TENANT, &to_b, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 2 }
    );
    assert_eq!(counter(&g, "aged"), 2);
}

#[test]
fn a_flood_of_source_macs_stays_within_capacity_and_spares_statics() {
    let mut r = role(2);
    r.fdb_capacity = 16;
    for i in 0..3 {
        r.static_entries.push(FdbEntry {
            mac: vm(0xe0 + i),
            vtep: vtep(0),
            ip: None,
        });
    }
    let (mut g, mut tx) = ready_with(r);
    let mut seed = 0x1234_5678u64;
    for i in 0..2000u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut src = (seed >> 16).to_be_bytes();
        src[2] &= 0xfe; // unicast
        let src: [u8; 6] = src[2..8].try_into().unwrap();
        let inner = udp_frame(vm(1), src, 1, 2, b"");
        g.handle(
            i,
            UNDERLAY,
            &from_vtep(1, VNI, &inner),
            &Offload::default(),
            &mut tx,
        );
        assert!(g.fdb_len() <= 16);
    }
    for i in 0..3 {
        assert_eq!(
            g.forwarding(&vm(0xe0 + i)),
            Some(crate::Forwarding {
                vtep: vtep(0),
                is_static: true
            })
        );
    }
    assert_eq!(g.fdb_len(), 16);
    assert!(counter(&g, "evicted") >= 2000 - 13);
    // Learning never overrides a static entry: such frames are dropped (like Linux).
    let spoof = udp_frame(vm(1), vm(0xe0), 1, 2, b"");
    assert_eq!(
        g.handle(
            3000,
            UNDERLAY,
            &from_vtep(1, VNI, &spoof),
            &Offload::default(),
            &mut tx
        ),
        Outcome::Dropped(DropReason::StaticConflict)
    );
    assert!(g.consistent());
}

// ------------------------------------------------------------------------ flooding, ARP

#[test]
fn broadcast_is_replicated_once_to_each_remote() {
    let (mut g, mut tx) = ready(5);
    let bcast = udp_frame([0xff; 6], vm(1), 68, 67, b"discover");
    assert_eq!(
        g.handle(1, TENANT, &bcast, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 5 }
    );
    let sent = tx.take();
    let dsts: BTreeSet<Ipv4Addr> = sent.iter().map(|(_, f)| dst_ip(f)).collect();
    assert_eq!(dsts, (0..5).map(vtep).collect());
    for (nic, f) in &sent {
        assert_eq!(*nic, UNDERLAY);
        assert_eq!(&f[OUTER_LEN..], &bcast[..]);
        let n = f[33] - 10;
        assert_eq!(&f[0..6], &vtep_mac(n));
    }
    assert_eq!(counter(&g, "flood_copies"), 5);
    assert_eq!(counter(&g, "flooded"), 1);
    // No remotes: nothing to flood to.
    let (mut g, mut tx) = ready(0);
    assert_eq!(
        g.handle(1, TENANT, &bcast, &Offload::default(), &mut tx),
        Outcome::Dropped(DropReason::NoRemote)
    );
}

#[test]
fn the_arp_responder_answers_for_static_entries_and_does_not_flood() {
    let mut r = role(2);
    let port = Ipv4Addr::new(10, 0, 0, 20);
    r.static_entries.push(FdbEntry {
        mac: vm(0x20),
        vtep: vtep(1),
        ip: Some(port),
    });
    let (mut g, mut tx) = ready_with(r.clone());
    let me = Ipv4Addr::new(10, 0, 0, 5);
    let who_has = arp_frame(ARP_REQUEST, vm(5), me, port, [0xff; 6]);
    assert_eq!(
        g.handle(1, TENANT, &who_has, &Offload::default(), &mut tx),
        Outcome::Local
    );
    let sent = tx.take();
    assert_eq!(sent.len(), 1, "answered, not flooded");
    assert_eq!(sent[0].0, TENANT);
    assert_eq!(
        Arp::parse_frame(&sent[0].1),
        Some(Arp {
            op: ARP_REPLY,
            sha: vm(0x20),
            spa: port,
            tha: vm(5),
            tpa: me
        })
    );
    assert_eq!(&sent[0].1[0..6], &vm(5));
    assert_eq!(&sent[0].1[6..12], &vm(0x20));
    assert_eq!(counter(&g, "arp_responder_answers"), 1);
    // Other addresses are flooded as usual.
    let other = arp_frame(
        ARP_REQUEST,
        vm(5),
        me,
        Ipv4Addr::new(10, 0, 0, 21),
        [0xff; 6],
    );
    assert_eq!(
        g.handle(2, TENANT, &other, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 2 }
    );
    // With the responder off, the request is flooded.
    r.arp_responder = false;
    let (mut g, mut tx) = ready_with(r);
    assert_eq!(
        g.handle(1, TENANT, &who_has, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 2 }
    );
}

#[test]
fn local_vtep_answers_arp_and_ping() {
    let (mut g, mut tx) = ready(1);
    let peer = Ipv4Addr::new(192, 0, 2, 50);
    let peer_mac = [0x52, 0x54, 0, 0, 9, 9];
    let q = arp_frame(ARP_REQUEST, peer_mac, peer, LOCAL, [0xff; 6]);
    assert_eq!(
        g.handle(1, UNDERLAY, &q, &Offload::default(), &mut tx),
        Outcome::Local
    );
    let sent = tx.take();
    assert_eq!(sent.len(), 1);
    let a = Arp::parse_frame(&sent[0].1).unwrap();
    assert_eq!(
        (a.op, a.sha, a.spa, a.tha, a.tpa),
        (ARP_REPLY, UNDERLAY_MAC, LOCAL, peer_mac, peer)
    );
    // An ARP about others is not ours.
    let q = arp_frame(
        ARP_REQUEST,
        peer_mac,
        peer,
        Ipv4Addr::new(192, 0, 2, 77),
        [0xff; 6],
    );
    assert_eq!(
        g.handle(1, UNDERLAY, &q, &Offload::default(), &mut tx),
        Outcome::Dropped(DropReason::NotForUs)
    );
    // Ping.
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[0..6].copy_from_slice(&UNDERLAY_MAC);
    f[6..12].copy_from_slice(&peer_mac);
    put_be16(&mut f, 12, 0x0800);
    f[14] = 0x45;
    put_be16(&mut f, 16, 32);
    f[22] = 64;
    f[23] = 1;
    f[26..30].copy_from_slice(&peer.octets());
    f[30..34].copy_from_slice(&LOCAL.octets());
    fix_ip_checksum(&mut f);
    f[34] = 8;
    put_be16(&mut f, 38, 0x4242);
    f[42..46].copy_from_slice(b"abcd");
    let c = crate::frame::checksum::finish(sum(&f[34..], 0));
    put_be16(&mut f, 36, c);
    assert_eq!(
        g.handle(2, UNDERLAY, &f, &Offload::default(), &mut tx),
        Outcome::Local
    );
    let sent = tx.take();
    let r = &sent[0].1;
    assert_eq!(&r[0..6], &peer_mac);
    assert!(ipv4_header_ok(&r[14..34]));
    assert_eq!(&r[30..34], &peer.octets());
    assert_eq!(r[34], 0);
    assert_eq!(fold(sum(&r[34..], 0)), 0xffff, "ICMP checksum");
    assert_eq!(&r[42..], b"abcd");
    assert_eq!(counter(&g, "echo_replies"), 1);
}

#[test]
fn vteps_are_resolved_queued_for_and_flushed() {
    let mut g = Gateway::new(&nics(), &role(2), 0).unwrap();
    let mut tx = Sink::default();
    g.start(0, &mut tx);
    let sent = tx.take();
    // A gratuitous ARP for local_vtep, then one request per VTEP.
    assert_eq!(sent.len(), 3);
    let garp = Arp::parse_frame(&sent[0].1).unwrap();
    assert_eq!((garp.spa, garp.tpa, garp.op), (LOCAL, LOCAL, ARP_REQUEST));
    let asked: BTreeSet<Ipv4Addr> = sent[1..]
        .iter()
        .map(|(_, f)| Arp::parse_frame(f).unwrap().tpa)
        .collect();
    assert_eq!(asked, [vtep(0), vtep(1)].into_iter().collect());
    assert_eq!(g.poll_at_ms(), Some(1000));
    // Frames wait for the MACs.
    let bcast = udp_frame([0xff; 6], vm(1), 68, 67, b"discover");
    assert_eq!(
        g.handle(10, TENANT, &bcast, &Offload::default(), &mut tx),
        Outcome::Queued
    );
    for _ in 1..QUEUE_FRAMES + 2 {
        g.handle(10, TENANT, &bcast, &Offload::default(), &mut tx);
    }
    assert!(tx.take().is_empty());
    assert_eq!(counter(&g, "drop_queue_full"), 2 * 2);
    // VTEP 0 answers: its queue leaves at once, with its MAC.
    resolve(&mut g, &mut tx, 0, 500);
    let sent = tx.take();
    assert_eq!(sent.len(), QUEUE_FRAMES);
    for (_, f) in &sent {
        assert_eq!(&f[0..6], &vtep_mac(0));
        assert_eq!(dst_ip(f), vtep(0));
        assert_eq!(&f[OUTER_LEN..], &bcast[..]);
    }
    // Half resolved: a flood is sent to VTEP 0; VTEP 1's queue is still full.
    assert_eq!(
        g.handle(600, TENANT, &bcast, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 1 }
    );
    assert_eq!(counter(&g, "drop_queue_full"), 2 * 2 + 1);
    tx.take();
    // VTEP 1 stays silent: retried a second apart, then its queue is dropped.
    g.poll(1000, &mut tx);
    g.poll(2000, &mut tx);
    let retries = tx.take();
    assert_eq!(retries.len(), 2);
    assert!(
        retries
            .iter()
            .all(|(_, f)| Arp::parse_frame(f).unwrap().tpa == vtep(1))
    );
    g.poll(3000, &mut tx);
    assert_eq!(counter(&g, "drop_vtep_unresolved"), QUEUE_FRAMES as u64);
    assert_eq!(counter(&g, "queued_bytes"), 0);
    // VTEP 0's MAC is refreshed after a minute (unicast first), still in use meanwhile.
    g.poll(60_500, &mut tx);
    let probe = tx.take();
    assert_eq!(probe.len(), 1);
    assert_eq!(&probe[0].1[0..6], &vtep_mac(0));
    let to_0 = {
        let mut r = g.remote_vteps().to_vec();
        r.retain(|v| *v == vtep(0));
        r
    };
    assert_eq!(to_0, vec![vtep(0)]);
    assert_eq!(g.underlay_mac(vtep(0)), Some(vtep_mac(0)));
    // It changed its MAC: any ARP from it updates ours.
    let new_mac = [0x52, 0x54, 0, 0, 2, 0];
    let garp = arp_frame(ARP_REQUEST, new_mac, vtep(0), vtep(0), [0xff; 6]);
    assert_eq!(
        g.handle(60_600, UNDERLAY, &garp, &Offload::default(), &mut tx),
        Outcome::Local
    );
    assert_eq!(g.underlay_mac(vtep(0)), Some(new_mac));
}

#[test]
fn vteps_off_the_subnet_go_through_the_underlay_gateway() {
    let mut r = role(0);
    let far = Ipv4Addr::new(198, 51, 100, 7);
    let router = Ipv4Addr::new(192, 0, 2, 254);
    r.remote_vteps = vec![far];
    assert_eq!(
        Gateway::new(&nics(), &r, 0).err(),
        Some(ConfigError::NoRouteTo { vtep: far })
    );
    r.underlay_gateway = Some(router);
    let mut g = Gateway::new(&nics(), &r, 0).unwrap();
    let mut tx = Sink::default();
    g.start(0, &mut tx);
    let sent = tx.take();
    assert_eq!(Arp::parse_frame(&sent[1].1).unwrap().tpa, router);
    let router_mac = [0x52, 0x54, 0, 0, 0xfe, 0xfe];
    let reply = arp_frame(ARP_REPLY, router_mac, router, LOCAL, UNDERLAY_MAC);
    g.handle(1, UNDERLAY, &reply, &Offload::default(), &mut tx);
    let bcast = udp_frame([0xff; 6], vm(1), 68, 67, b"");
    g.handle(2, TENANT, &bcast, &Offload::default(), &mut tx);
    let sent = tx.take();
    assert_eq!(&sent[0].1[0..6], &router_mac);
    assert_eq!(dst_ip(&sent[0].1), far);
}

// ------------------------------------------------------------------------ offloads

/// An Ethernet + IPv4 + TCP superframe with `payload`.
fn tcp_superframe(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload.len()];
    f[0..6].copy_from_slice(&vm(0xb));
    f[6..12].copy_from_slice(&vm(0xa));
    put_be16(&mut f, 12, 0x0800);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    put_be16(ip, 2, (40 + payload.len()) as u16);
    put_be16(ip, 4, 0x100);
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let tcp = &mut ip[20..];
    put_be16(tcp, 0, 40000);
    put_be16(tcp, 2, 5201);
    put_be32(tcp, 4, 1000);
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    // The partial checksum a sender with offload leaves: the pseudo-header's sum.
    let partial = fold(pseudo_v4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        6,
        (20 + payload.len()) as u16,
    ));
    put_be16(tcp, 16, partial);
    tcp[20..].copy_from_slice(payload);
    f
}

#[test]
fn superframes_are_segmented_to_the_tenant_mtu_and_each_encapsulated() {
    let (mut g, mut tx) = ready(2);
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let frame = tcp_superframe(&payload);
    let offload = Offload {
        flags: F_NEEDS_CSUM,
        gso: GsoKind::Tcp4,
        ecn: false,
        hdr_len: 54,
        gso_size: 1448, // above the tenant MTU's 1410: cut at 1410
        csum_start: 34,
        csum_offset: 16,
    };
    // Unknown destination: 3 segments × 2 VTEPs.
    assert_eq!(
        g.handle(1, TENANT, &frame, &offload, &mut tx),
        Outcome::Encapsulated { copies: 6 }
    );
    let sent = tx.take();
    assert_eq!(sent.len(), 6);
    let mut joined = Vec::new();
    let mut ports = BTreeSet::new();
    for (_, f) in sent.iter().filter(|(_, f)| dst_ip(f) == vtep(0)) {
        assert!(f.len() <= 1514);
        assert!(ipv4_header_ok(&f[14..34]));
        ports.insert(be16(f, 34));
        let inner = &f[OUTER_LEN..];
        assert!(inner.len() <= 1450 + 14);
        assert!(ipv4_header_ok(&inner[14..34]), "inner IP checksum");
        let tcp = &inner[34..];
        let pseudo = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp.len() as u16);
        assert_eq!(fold(sum(tcp, pseudo)), 0xffff, "inner TCP checksum");
        joined.extend_from_slice(&tcp[20..]);
    }
    assert_eq!(joined, payload);
    assert_eq!(ports.len(), 1, "one flow, one source port");
    assert_eq!(counter(&g, "segmented"), 1);
    assert_eq!(counter(&g, "segments"), 3);
    // Kinds that cannot be segmented here, and junk, are dropped by reason.
    let udp = Offload {
        gso: GsoKind::Udp,
        ..offload
    };
    assert_eq!(
        g.handle(2, TENANT, &frame, &udp, &mut tx),
        Outcome::Dropped(DropReason::UnsupportedGso)
    );
    assert_eq!(
        g.handle(2, TENANT, &frame[..40], &offload, &mut tx),
        Outcome::Dropped(DropReason::BadGso)
    );
    let zero = Offload {
        gso_size: 0,
        ..offload
    };
    assert_eq!(
        g.handle(2, TENANT, &frame, &zero, &mut tx),
        Outcome::Dropped(DropReason::BadGso)
    );
    // A plain frame too big for the underlay is dropped, never truncated.
    let jumbo = tcp_superframe(&payload);
    assert_eq!(
        g.handle(3, TENANT, &jumbo, &Offload::default(), &mut tx),
        Outcome::Dropped(DropReason::TooBig)
    );
    assert!(tx.take().is_empty());
}

#[test]
fn superframes_to_a_known_vtep_leave_their_segments_checksums_to_the_device() {
    let (mut g, mut tx) = ready(2);
    // vm(0xb) lives behind VTEP 1.
    let hello = udp_frame(vm(0xa), vm(0xb), 9, 9, b"hi");
    assert_eq!(
        g.handle(
            1,
            UNDERLAY,
            &from_vtep(1, VNI, &hello),
            &Offload::default(),
            &mut tx
        ),
        Outcome::Decapsulated
    );
    tx.frames.clear();
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 13) as u8).collect();
    let frame = tcp_superframe(&payload);
    let offload = Offload {
        flags: F_NEEDS_CSUM,
        gso: GsoKind::Tcp4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        ..Offload::default()
    };
    assert_eq!(
        g.handle(2, TENANT, &frame, &offload, &mut tx),
        Outcome::Encapsulated { copies: 3 }
    );
    let mut joined = Vec::new();
    let mut ids = BTreeSet::new();
    for (nic, o, mut f) in tx.frames.drain(..) {
        assert_eq!(nic, UNDERLAY);
        assert_eq!(dst_ip(&f), vtep(1), "unicast to the VTEP behind vm(0xb)");
        assert_eq!(&f[..6], &vtep_mac(1));
        assert!(f.len() <= 1514);
        assert!(ipv4_header_ok(&f[14..34]), "outer IP checksum");
        ids.insert(be16(&f, 18));
        assert_eq!(
            (o.flags, o.gso, usize::from(o.csum_start), o.csum_offset),
            (F_NEEDS_CSUM, GsoKind::None, OUTER_LEN + 34, 16),
            "the inner TCP checksum is the device's job"
        );
        // What the underlay device does.
        assert!(crate::frame::checksum::complete_partial(
            &mut f,
            usize::from(o.csum_start),
            16,
            false
        ));
        let inner = &f[OUTER_LEN..];
        assert!(ipv4_header_ok(&inner[14..34]), "inner IP checksum");
        let tcp = &inner[34..];
        let pseudo = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp.len() as u16);
        assert_eq!(
            fold(sum(tcp, pseudo)),
            0xffff,
            "inner TCP checksum, finished"
        );
        joined.extend_from_slice(&tcp[20..]);
    }
    assert_eq!(joined, payload);
    assert_eq!(ids.len(), 3, "each outer packet its own IP ID");
    assert_eq!(counter(&g, "segments"), 3);
    assert_eq!(counter(&g, "segments_checksum_offloaded"), 3);
    assert_eq!(counter(&g, "encapsulated"), 3);
}

#[test]
fn partial_checksums_are_completed_before_encapsulation() {
    let (mut g, mut tx) = ready(1);
    let mut frame = udp_frame(vm(0xb), vm(0xa), 5000, 53, b"query!");
    let partial = fold(pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 14));
    put_be16(&mut frame, 40, partial);
    let offload = Offload {
        flags: F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Offload::default()
    };
    g.handle(1, TENANT, &frame, &offload, &mut tx);
    let sent = tx.take();
    let inner = &sent[0].1[OUTER_LEN..];
    let udp = &inner[34..];
    assert_ne!(be16(udp, 6), 0);
    assert_eq!(
        fold(sum(udp, pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 14))),
        0xffff
    );
    assert_eq!(counter(&g, "checksums_completed"), 1);
    let bad = Offload {
        csum_start: 60,
        ..offload
    };
    assert_eq!(
        g.handle(2, TENANT, &frame, &bad, &mut tx),
        Outcome::Dropped(DropReason::BadChecksumOffload)
    );
    // On the underlay, a partial outer UDP checksum (NEEDS_CSUM from the host) is trusted.
    let mut outer = from_vtep(0, VNI, &frame);
    put_be16(&mut outer, 40, 0xbeef);
    assert_eq!(
        g.handle(3, UNDERLAY, &outer, &offload, &mut tx),
        Outcome::Decapsulated
    );
}

#[test]
fn source_ports_are_stable_per_flow_and_differ_across_flows() {
    let (g, _) = ready(1);
    let a = udp_frame(vm(2), vm(1), 1000, 2000, b"a");
    let a_again = udp_frame(vm(2), vm(1), 1000, 2000, b"different payload");
    assert_eq!(g.source_port(&a), g.source_port(&a_again));
    let ports: BTreeSet<u16> = (0..64u16)
        .map(|p| g.source_port(&udp_frame(vm(2), vm(1), 1000 + p, 2000, b"a")))
        .collect();
    assert!(
        ports.len() > 56,
        "{} distinct ports of 64 flows",
        ports.len()
    );
    assert!(ports.iter().all(|&p| p >= 49152));
    assert_ne!(
        g.source_port(&udp_frame(vm(3), vm(1), 1000, 2000, b"a")),
        g.source_port(&a)
    );
    // Another gateway with another seed spreads differently; the same seed, the same.
    let other = Gateway::new(&nics(), &role(1), 1).unwrap();
    let same = Gateway::new(&nics(), &role(1), 0).unwrap();
    assert_eq!(same.source_port(&a), g.source_port(&a));
    let differ = (0..16u16)
        .filter(|p| {
            let f = udp_frame(vm(2), vm(1), *p, 2000, b"");
            other.source_port(&f) != g.source_port(&f)
        })
        .count();
    assert!(differ > 12);
}

// ------------------------------------------------------------------------ live changes

#[test]
fn live_changes_take_effect() {
    let (mut g, mut tx) = ready(2);
    // A new remote list: the new VTEP is asked for at once and flooded to once known.
    g.apply(
        &Op::VxlanRemotes(vec![vtep(1), vtep(3), vtep(3)]),
        10,
        &mut tx,
    )
    .unwrap();
    assert_eq!(g.remote_vteps(), &[vtep(1), vtep(3)]);
    let sent = tx.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(Arp::parse_frame(&sent[0].1).unwrap().tpa, vtep(3));
    resolve(&mut g, &mut tx, 3, 11);
    let bcast = udp_frame([0xff; 6], vm(1), 68, 67, b"");
    g.handle(12, TENANT, &bcast, &Offload::default(), &mut tx);
    let dsts: BTreeSet<Ipv4Addr> = tx.take().iter().map(|(_, f)| dst_ip(f)).collect();
    assert_eq!(dsts, [vtep(1), vtep(3)].into_iter().collect());
    // A static entry: unicast there, and the responder answers for its address.
    let port = Ipv4Addr::new(10, 0, 0, 30);
    g.apply(
        &Op::VxlanStaticUpsert(FdbEntry {
            mac: vm(0x30),
            vtep: vtep(1),
            ip: Some(port),
        }),
        13,
        &mut tx,
    )
    .unwrap();
    let to = udp_frame(vm(0x30), vm(1), 1, 2, b"");
    assert_eq!(
        g.handle(14, TENANT, &to, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 1 }
    );
    assert_eq!(dst_ip(&tx.take()[0].1), vtep(1));
    let q = arp_frame(
        ARP_REQUEST,
        vm(1),
        Ipv4Addr::new(10, 0, 0, 1),
        port,
        [0xff; 6],
    );
    assert_eq!(
        g.handle(15, TENANT, &q, &Offload::default(), &mut tx),
        Outcome::Local
    );
    tx.take();
    // Re-pointed, then removed: flooded again, and not answered for.
    g.apply(
        &Op::VxlanStaticUpsert(FdbEntry {
            mac: vm(0x30),
            vtep: vtep(3),
            ip: None,
        }),
        16,
        &mut tx,
    )
    .unwrap();
    g.handle(17, TENANT, &to, &Offload::default(), &mut tx);
    assert_eq!(dst_ip(&tx.take()[0].1), vtep(3));
    assert_eq!(
        g.handle(17, TENANT, &q, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 2 }
    );
    tx.take();
    g.apply(&Op::VxlanStaticRemove { mac: vm(0x30) }, 18, &mut tx)
        .unwrap();
    assert_eq!(
        g.handle(19, TENANT, &to, &Offload::default(), &mut tx),
        Outcome::Encapsulated { copies: 2 }
    );
    assert!(g.forwarding(&vm(0x30)).is_none());
    // Refusals change nothing.
    let bad: Result<(), String> = g.apply(&Op::VxlanRemotes(vec![LOCAL]), 20, &mut tx);
    assert!(bad.is_err());
    assert_eq!(g.remote_vteps(), &[vtep(1), vtep(3)]);
    assert!(
        g.apply(
            &Op::VxlanStaticUpsert(FdbEntry {
                mac: [0xff; 6],
                vtep: vtep(1),
                ip: None
            }),
            20,
            &mut tx
        )
        .is_err()
    );
    assert!(g.apply(&Op::Ping, 20, &mut tx).is_err());
}

#[test]
fn configuration_errors_name_the_field() {
    let mut r = role(1);
    r.vni = 1 << 24;
    let e = Gateway::new(&nics(), &r, 0).unwrap_err();
    assert_eq!(e, ConfigError::BadVni { vni: 1 << 24 });
    assert!(std::format!("{e}").contains("vni"));
    assert_eq!(
        Gateway::new(&nics()[..1], &role(1), 0).unwrap_err(),
        ConfigError::MissingNic { index: 1 }
    );
    let mut n = nics();
    n[1].addresses.clear();
    assert_eq!(
        Gateway::new(&n, &role(1), 0).unwrap_err(),
        ConfigError::NoLocalVtep
    );
    let mut r = role(1);
    r.fdb_capacity = 1;
    r.static_entries = (0..2)
        .map(|i| FdbEntry {
            mac: vm(i),
            vtep: vtep(0),
            ip: None,
        })
        .collect();
    assert!(matches!(
        Gateway::new(&nics(), &r, 0),
        Err(ConfigError::TooManyStatic { .. })
    ));
    let mut r = role(1);
    r.remote_vteps.push(Ipv4Addr::new(224, 0, 0, 1));
    assert!(matches!(
        Gateway::new(&nics(), &r, 0),
        Err(ConfigError::BadVtep { .. })
    ));
}

#[test]
fn refused_transmissions_and_bad_nics_are_counted() {
    let (mut g, mut tx) = ready(1);
    tx.refuse = true;
    let bcast = udp_frame([0xff; 6], vm(1), 68, 67, b"");
    assert_eq!(
        g.handle(1, TENANT, &bcast, &Offload::default(), &mut tx),
        Outcome::Dropped(DropReason::TxFull)
    );
    assert_eq!(
        g.handle(1, 7, &bcast, &Offload::default(), &mut tx),
        Outcome::Dropped(DropReason::BadNic)
    );
    assert_eq!(counter(&g, "drop_tx_full"), 1);
    assert_eq!(counter(&g, "drop_bad_nic"), 1);
    assert_eq!(counter(&g, "tx_failed"), 1);
}

// ------------------------------------------------------------------------ the fuzz body, on stable

use crate as vxlan;

/// The cargo-fuzz target's body (input layout and invariants), shared with `fuzz/`.
#[path = "../../../fuzz/vxlan_decap_check.rs"]
mod fuzz_check;

/// Seed inputs in `fuzz_check`'s layout. `fuzz/corpus/vxlan_decap/seed-<name>` holds them
/// (see `committed_seed_corpus_is_current` to regenerate them).
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_check::*;
    let arp = udp_frame([0xff; 6], vm(1), 68, 67, b"discover");
    let to_learnt = udp_frame(fuzz_check::mac(0x42), vm(1), 1, 2, b"hi");
    let learnt = udp_frame(vm(1), fuzz_check::mac(0x42), 2, 1, b"hello");
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let mut sf = tcp_superframe(&payload);
    sf[0] = 90; // gso_size 16 * 90 = 1440 (the body's first byte)
    let who_has = arp_frame(
        ARP_REQUEST,
        vm(5),
        Ipv4Addr::new(10, 0, 0, 5),
        Ipv4Addr::new(10, 0, 0, 0x80),
        [0xff; 6],
    );
    let mut ping = vec![0u8; 42];
    ping[0..6].copy_from_slice(&fuzz_check::UNDERLAY_MAC);
    ping[12] = 8;
    vec![
        (
            "decap",
            encode(
                [8, 1, 0x10],
                &[
                    (OP_ARP, 0, 0, b""),
                    (OP_VXLAN, 1, 1, &learnt),
                    (OP_VXLAN_CSUM, 1, 2, &learnt),
                    (OP_VXLAN, 1, 0x81, &learnt),
                    (OP_TENANT, 1, 0, &to_learnt),
                    (OP_TENANT, 1, 0, &arp),
                ],
            ),
        ),
        (
            "corrupt",
            encode(
                [3, 0, 0],
                &[
                    (OP_CORRUPT, 0, 0, &[16, 0x40]),
                    (OP_CORRUPT, 0, 0, &[24, 0x0f]),
                    (OP_CORRUPT, 0, 0, &[36, 0xff]),
                    (OP_CORRUPT, 0, 0, &[42, 0x08]),
                    (OP_RAW_UNDERLAY, 0, 0, &ping),
                    (OP_RAW_UNDERLAY, 0, 0, &from_vtep(0, VNI, &learnt)[..40]),
                ],
            ),
        ),
        (
            "offload",
            encode(
                [15, 2, 0x70],
                &[
                    (OP_ARP, 0, 1, b""),
                    (OP_TENANT_OFFLOAD, 0, 0, &sf),
                    (OP_TENANT_OFFLOAD, 0, 1, &[34, 6, 0, 0]),
                    (OP_TENANT, 0, 0, &who_has),
                ],
            ),
        ),
        (
            "control-and-ageing",
            encode(
                [2, 3, 0x01],
                &[
                    (OP_CONTROL, 0, 0, &[0x50, 5, 7]),
                    (OP_CONTROL, 0, 2, &[0xf0]),
                    (OP_VXLAN, 10, 5, &learnt),
                    (OP_ARP, 0, 5, b""),
                    (OP_TENANT, 0, 0, &to_learnt),
                    (OP_TENANT, 0xf2, 0, &to_learnt),
                    (OP_CONTROL, 0, 1, &[0x80]),
                    (OP_CONTROL, 0, 1, &[0x50]),
                ],
            ),
        ),
    ]
}

#[test]
fn the_fuzz_body_holds_on_its_seeds_and_on_noise() {
    for (name, seed) in fuzz_seeds() {
        assert!(fuzz_check::run(&seed) > 0, "{name}");
    }
    // Mutations of the seeds, and plain noise.
    let seeds = fuzz_seeds();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..3000 {
        let mut b = seeds[i % seeds.len()].1.clone();
        if i % 5 == 4 {
            b = (0..next() % 600).map(|_| next() as u8).collect();
        } else {
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % b.len();
                b[at] ^= next() as u8;
            }
        }
        fuzz_check::run(&b);
    }
}

#[path = "../../../fuzz/seed_corpus.rs"]
mod seed_corpus;

#[test]
fn committed_seed_corpus_is_current() {
    seed_corpus::check("vxlan_decap", "nanovnf-vxlan", &fuzz_seeds());
}

/// The hot paths, encapsulating a long run of tenant frames to a known VTEP and
/// decapsulating its answers, print their host rate: for the figure, run
/// `cargo test -p nanovnf-vxlan --release -- --nocapture throughput`.
#[test]
fn throughput() {
    struct Null(u64);
    impl Transmit for Null {
        fn send(&mut self, _: usize, _: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
            let mut b = [0u8; 1600];
            if len <= b.len() {
                fill(&mut b[..len]);
            }
            self.0 += 1;
            true
        }
    }
    let (mut g, mut tx) = ready(2);
    // The remote instance speaks first: its MAC is learnt behind VTEP 1.
    let answer = udp_frame(vm(1), vm(2), 9, 9, &[0; 1380]);
    let outer = from_vtep(1, VNI, &answer);
    assert_eq!(
        g.handle(1, UNDERLAY, &outer, &Offload::default(), &mut tx),
        Outcome::Decapsulated
    );
    let tenant = udp_frame(vm(2), vm(1), 9, 9, &[0; 1380]);
    let n = if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000u64
    };
    let mut null = Null(0);
    for (name, nic, frame, want) in [
        (
            "encapsulate 1422",
            TENANT,
            &tenant,
            Outcome::Encapsulated { copies: 1 },
        ),
        ("decapsulate 1472", UNDERLAY, &outer, Outcome::Decapsulated),
    ] {
        let t = std::time::Instant::now();
        let mut done = 0u64;
        for i in 0..n {
            if g.handle(2 + i / 1000, nic, frame, &Offload::default(), &mut null) == want {
                done += 1;
            }
        }
        let s = t.elapsed().as_secs_f64();
        std::println!(
            "{name}: {:.0} ns/frame, {:.2} Mframes/s",
            s * 1e9 / n as f64,
            n as f64 / s / 1e6
        );
        assert_eq!(done, n, "{name}: every frame takes the hot path");
    }
}
