//! Whole flows through a router on byte frames: a fake transmit side records what leaves,
//! frames are built by hand, and every checksum is verified by an independent RFC 1071
//! implementation (not the frame crate's).

extern crate std;

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use nanovnf_frame::offload::F_NEEDS_CSUM;
use nanovnf_frame::{Fill, GsoKind, Offload, Transmit};
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::Route as SRoute;
use nanovnf_schema::router::{FloatingIp, RouterRole};
use nanovnf_schema::{Ipv4Cidr, NicConfig};

use crate::{DropReason, Outcome, Router};

// ------------------------------------------------------------------------ the world

/// NIC 0: tenant A 10.0.0.1/24; NIC 1: tenant B 10.0.1.1/24 (route 192.168.50.0/24 via
/// 10.0.1.254); NIC 2: external 203.0.113.2/24, gateway 203.0.113.1; SNAT on; floating
/// IP 203.0.113.10 → 10.0.0.5.
pub const A: usize = 0;
pub const B: usize = 1;
pub const X: usize = 2;
pub const GW: [u8; 4] = [203, 0, 113, 1];
pub const EXT: [u8; 4] = [203, 0, 113, 2];
pub const FIP: [u8; 4] = [203, 0, 113, 10];
pub const FIXED: [u8; 4] = [10, 0, 0, 5];
pub const FIP2: [u8; 4] = [203, 0, 113, 11];
pub const FIXED2: [u8; 4] = [10, 0, 0, 6];
pub const REMOTE: [u8; 4] = [198, 51, 100, 7];

pub fn router_mac(nic: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, nic as u8 + 1]
}

/// A host's MAC, derived from its address.
pub fn host_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x52, 0x54, ip[0], ip[1], ip[2], ip[3]]
}

fn ip4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

pub fn nics(mtus: [u16; 3]) -> Vec<NicConfig> {
    let addrs = [[10, 0, 0, 1], [10, 0, 1, 1], EXT];
    (0..3)
        .map(|i| NicConfig {
            mac: router_mac(i),
            addresses: vec![Ipv4Cidr::new(ip4(addrs[i]), 24)],
            mtu: mtus[i],
        })
        .collect()
}

pub fn role(capacity: u32) -> RouterRole {
    RouterRole {
        external_nic: Some(2),
        default_gateway: Some(ip4(GW)),
        enable_snat: true,
        routes: vec![SRoute {
            destination: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 50, 0), 24),
            nexthop: Ipv4Addr::new(10, 0, 1, 254),
        }],
        floating_ips: vec![FloatingIp {
            floating: ip4(FIP),
            fixed: ip4(FIXED),
        }],
        conntrack_capacity: capacity,
    }
}

pub fn router() -> Router {
    Router::new(&nics([1500; 3]), &role(64), 42).unwrap()
}

#[derive(Default)]
pub struct Sink {
    pub sent: Vec<(usize, Offload, Vec<u8>)>,
    pub refuse: bool,
}

impl Transmit for Sink {
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
        if self.refuse {
            return false;
        }
        let mut b = vec![0u8; len];
        fill(&mut b);
        self.sent.push((nic, *offload, b));
        true
    }
}

impl Sink {
    pub fn take(&mut self) -> Vec<(usize, Offload, Vec<u8>)> {
        core::mem::take(&mut self.sent)
    }

    /// The one frame sent, on `nic`.
    pub fn one(&mut self, nic: usize) -> Vec<u8> {
        let mut s = self.take();
        assert_eq!(s.len(), 1, "expected one frame, got {}", s.len());
        let (n, _, f) = s.remove(0);
        assert_eq!(n, nic, "sent on the wrong NIC");
        f
    }

    /// The one IPv4 frame sent, on `nic` (ARP probes aside).
    pub fn one_ip(&mut self, nic: usize) -> Vec<u8> {
        let mut s: Vec<_> = self
            .take()
            .into_iter()
            .filter(|(_, _, f)| f[12..14] == [8, 0])
            .collect();
        assert_eq!(s.len(), 1, "expected one IPv4 frame, got {}", s.len());
        let (n, _, f) = s.remove(0);
        assert_eq!(n, nic, "sent on the wrong NIC");
        f
    }
}

// ----------------------------------------------------------- independent checksums

fn rfc1071(data: &[u8], initial: u32) -> u16 {
    let mut s = initial;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        s += u32::from(w);
        s = (s & 0xffff) + (s >> 16);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn pseudo(f: &[u8], len: usize) -> u32 {
    let mut s = 0u32;
    for i in (26..34).step_by(2) {
        s += u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
    }
    s + u32::from(f[23]) + len as u32
}

/// The IPv4 header checksum verifies.
pub fn ip_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    rfc1071(&f[14..14 + ihl], 0) == 0
}

/// The (complete) L4 checksum of an unfragmented packet verifies.
pub fn l4_ok(f: &[u8]) -> bool {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let seg = &f[34..14 + total];
    match f[23] {
        1 => rfc1071(seg, 0) == 0,
        17 if seg[6..8] == [0, 0] => true,
        _ => rfc1071(seg, pseudo(f, seg.len())) == 0,
    }
}

fn set_ip_checksum(f: &mut [u8]) {
    f[24..26].fill(0);
    let c = rfc1071(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn set_l4_checksum(f: &mut [u8]) {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let at = match f[23] {
        1 => 36,
        6 => 50,
        17 => 40,
        _ => return,
    };
    if f.len() < at + 2 {
        return;
    }
    f[at..at + 2].fill(0);
    let seg = &f[34..14 + total];
    let c = if f[23] == 1 {
        rfc1071(seg, 0)
    } else {
        rfc1071(seg, pseudo(f, seg.len()))
    };
    let c = if f[23] == 17 && c == 0 { 0xffff } else { c };
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

// ------------------------------------------------------------------- frame builders

pub struct Ip {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub ttl: u8,
    pub df: bool,
    pub id: u16,
}

impl Ip {
    pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8) -> Ip {
        Ip {
            src,
            dst,
            proto,
            ttl: 64,
            df: false,
            id: 0x1234,
        }
    }
}

/// An Ethernet + IPv4 frame from `src`'s MAC to router NIC `nic`, L4 checksum filled.
pub fn frame(nic: usize, ip: &Ip, l4: &[u8]) -> Vec<u8> {
    frame_from(host_mac(ip.src), nic, ip, l4)
}

pub fn frame_from(mac: [u8; 6], nic: usize, ip: &Ip, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 34 + l4.len()];
    f[..6].copy_from_slice(&router_mac(nic));
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&ip.id.to_be_bytes());
    f[20] = if ip.df { 0x40 } else { 0 };
    f[22] = ip.ttl;
    f[23] = ip.proto;
    f[26..30].copy_from_slice(&ip.src);
    f[30..34].copy_from_slice(&ip.dst);
    f[34..].copy_from_slice(l4);
    set_l4_checksum(&mut f);
    set_ip_checksum(&mut f);
    f
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u[6..8].copy_from_slice(&[0xde, 0xad]); // replaced by the real checksum
    u.extend_from_slice(payload);
    u
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYNACK: u8 = 0x12;
pub const RST: u8 = 0x04;

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&5000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

pub fn echo(kind: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![kind, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&7u16.to_be_bytes());
    i.extend_from_slice(payload);
    i
}

pub fn arp(
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
    to: [u8; 6],
) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[..6].copy_from_slice(&to);
    f[6..12].copy_from_slice(&sha);
    f[12..14].copy_from_slice(&[8, 6]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    f[22..28].copy_from_slice(&sha);
    f[28..32].copy_from_slice(&spa);
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&tpa);
    f
}

/// Makes the router learn `ip` on `nic` (an ARP request from it for the router).
pub fn learn(r: &mut Router, now: u64, nic: usize, ip: [u8; 4], tx: &mut Sink) {
    let ours = [[10, 0, 0, 1], [10, 0, 1, 1], EXT][nic];
    let mut f = arp(1, host_mac(ip), ip, [0; 6], ours, [0xff; 6]);
    assert_eq!(
        r.handle(now, nic, &mut f, &Offload::default(), tx),
        Outcome::Local
    );
    tx.take();
}

/// A router that knows every host the tests talk to.
pub fn learned() -> (Router, Sink) {
    let mut r = router();
    let mut tx = Sink::default();
    for (nic, ip) in [
        (A, [10, 0, 0, 7]),
        (A, FIXED),
        (A, FIXED2),
        (B, [10, 0, 1, 9]),
        (B, [10, 0, 1, 254]),
        (X, GW),
        (X, REMOTE),
    ] {
        learn(&mut r, 0, nic, ip, &mut tx);
    }
    (r, tx)
}

pub fn counter(r: &Router, name: &str) -> u64 {
    r.counters()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

pub fn plain() -> Offload {
    Offload::default()
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr(f: &[u8], at: usize) -> [u8; 4] {
    [f[at], f[at + 1], f[at + 2], f[at + 3]]
}

fn src(f: &[u8]) -> [u8; 4] {
    addr(f, 26)
}

fn dst(f: &[u8]) -> [u8; 4] {
    addr(f, 30)
}

fn sport(f: &[u8]) -> u16 {
    be16(f, 34)
}

fn dport(f: &[u8]) -> u16 {
    be16(f, 36)
}

/// Reassembles fragments (in order) into one frame, checking each header.
fn join(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut out = frags[0][..34].to_vec();
    let mut data = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        assert!(ip_ok(f), "fragment {i} header checksum");
        let fo = be16(f, 20);
        assert_eq!(
            usize::from(fo & 0x1fff) * 8,
            data.len(),
            "fragment {i} offset"
        );
        assert_eq!(fo & 0x2000 != 0, i + 1 < frags.len(), "fragment {i} MF");
        data.extend_from_slice(&f[34..]);
    }
    out.extend_from_slice(&data);
    let total = (20 + data.len()) as u16;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[20..22].fill(0);
    set_ip_checksum(&mut out);
    out
}

/// Splits a frame into fragments of `chunk` payload bytes (a multiple of 8).
fn split(f: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let payload = &f[34..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let len = chunk.min(payload.len() - off);
        let more = off + len < payload.len();
        let mut fr = f[..34].to_vec();
        fr.extend_from_slice(&payload[off..off + len]);
        fr[16..18].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        fr[20..22].copy_from_slice(&fo.to_be_bytes());
        set_ip_checksum(&mut fr);
        out.push(fr);
        off += len;
    }
    out
}

// ------------------------------------------------------------------------ forwarding

#[test]
fn forwards_east_west_with_macs_rewritten_and_ttl_decremented() {
    let (mut r, mut tx) = learned();
    let rx0 = counter(&r, "nic0_rx");
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(5000, 53, b"hello"),
    );
    let before = f.clone();
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let out = tx.one(B);
    assert_eq!(out[..6], host_mac([10, 0, 1, 9]));
    assert_eq!(out[6..12], router_mac(B));
    assert_eq!(out[22], 63);
    assert!(ip_ok(&out) && l4_ok(&out));
    assert_eq!(out[26..], before[26..], "no NAT east-west");
    // An extra route's next hop.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [192, 168, 50, 3], 17),
        &udp(1, 2, b""),
    );
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    assert_eq!(tx.one(B)[..6], host_mac([10, 0, 1, 254]));
    assert_eq!(counter(&r, "nic0_rx"), rx0 + 2);
    assert_eq!(counter(&r, "forwarded"), 2);
}

#[test]
fn ethernet_padding_is_trimmed() {
    let (mut r, mut tx) = learned();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(5000, 53, b"x"),
    );
    f.extend_from_slice(&[0; 20]);
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    assert_eq!(tx.one(B).len(), 14 + 29);
}

/// Checks `e` is ICMP `typ`/`code` from `from` quoting `quoted` (the original frame).
fn assert_icmp_error(e: &[u8], typ: u8, code: u8, from: [u8; 4], quoted: &[u8]) {
    assert!(ip_ok(e), "error IP checksum");
    assert!(l4_ok(e), "error ICMP checksum");
    assert_eq!(e[23], 1);
    assert_eq!((e[34], e[35]), (typ, code));
    assert_eq!(src(e), from);
    assert_eq!(dst(e), src(quoted));
    let n = (quoted.len() - 14).min(548);
    assert_eq!(e[42..], quoted[14..14 + n], "the quote");
    assert!(e.len() - 14 <= 576);
}

#[test]
fn ttl_expiry_sends_time_exceeded_from_the_ingress_nic() {
    let (mut r, mut tx) = learned();
    let mut ip = Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17);
    ip.ttl = 1;
    let mut f = frame(A, &ip, &udp(33434, 33434, &[0; 1000]));
    let orig = f.clone();
    assert_eq!(
        r.handle(5, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::TtlExpired)
    );
    let e = tx.one(A);
    assert_eq!(e[..6], host_mac([10, 0, 0, 7]));
    assert_icmp_error(&e, 11, 0, [10, 0, 0, 1], &orig);
    assert_eq!(e.len() - 14, 576, "quotes up to 576 bytes");
    assert_eq!(counter(&r, "drop_ttl_expired"), 1);
    assert_eq!(counter(&r, "icmp_errors_sent"), 1);
}

#[test]
fn no_route_sends_net_unreachable() {
    let mut role = role(64);
    role.default_gateway = None;
    let mut r = Router::new(&nics([1500; 3]), &role, 1).unwrap();
    let mut tx = Sink::default();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [8, 8, 8, 8], 17),
        &udp(1, 53, b"q"),
    );
    let orig = f.clone();
    assert_eq!(
        r.handle(5, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::NoRoute)
    );
    assert_icmp_error(&tx.one(A), 3, 0, [10, 0, 0, 1], &orig);
}

#[test]
fn icmp_errors_are_not_sent_about_icmp_errors_and_are_rate_limited() {
    let (mut r, mut tx) = learned();
    // An ICMP error with TTL 1: dropped silently.
    let mut ip = Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 1);
    ip.ttl = 1;
    let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&[0x45; 28]);
    let mut f = frame(A, &ip, &err);
    assert_eq!(
        r.handle(5, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::TtlExpired)
    );
    assert!(tx.take().is_empty());
    // 200 expiring packets in the same millisecond: the burst of 50 gets answers.
    let mut ip = Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17);
    ip.ttl = 1;
    for _ in 0..200 {
        let mut f = frame(A, &ip, &udp(1, 2, b""));
        r.handle(10, A, &mut f, &plain(), &mut tx);
    }
    assert_eq!(tx.take().len(), 50);
    assert_eq!(counter(&r, "icmp_errors_ratelimited"), 150);
    // 10 ms later, 10 more tokens.
    for _ in 0..20 {
        let mut f = frame(A, &ip, &udp(1, 2, b""));
        r.handle(20, A, &mut f, &plain(), &mut tx);
    }
    assert_eq!(tx.take().len(), 10);
}

// ------------------------------------------------------------------------------- ARP

#[test]
fn answers_arp_for_its_addresses_and_floating_ips_on_the_external_nic() {
    let mut r = router();
    let mut tx = Sink::default();
    let h = host_mac([10, 0, 0, 7]);
    let mut req = arp(1, h, [10, 0, 0, 7], [0; 6], [10, 0, 0, 1], [0xff; 6]);
    assert_eq!(r.handle(0, A, &mut req, &plain(), &mut tx), Outcome::Local);
    let rep = tx.one(A);
    assert_eq!(rep[..6], h);
    assert_eq!(be16(&rep, 20), 2);
    assert_eq!(rep[22..28], router_mac(A));
    assert_eq!(rep[28..32], [10, 0, 0, 1]);
    assert_eq!(rep[32..38], h);
    assert_eq!(rep[38..42], [10, 0, 0, 7]);
    // The floating IP, on the external NIC only.
    let g = host_mac(GW);
    let mut req = arp(1, g, GW, [0; 6], FIP, [0xff; 6]);
    assert_eq!(r.handle(0, X, &mut req, &plain(), &mut tx), Outcome::Local);
    let rep = tx.one(X);
    assert_eq!(rep[22..28], router_mac(X));
    assert_eq!(rep[28..32], FIP);
    let mut req = arp(1, h, [10, 0, 0, 7], [0; 6], FIP, [0xff; 6]);
    assert_eq!(
        r.handle(0, A, &mut req, &plain(), &mut tx),
        Outcome::Dropped(DropReason::ArpNotForUs)
    );
    // Another NIC's address is not answered on this one.
    let mut req = arp(1, h, [10, 0, 0, 7], [0; 6], [10, 0, 1, 1], [0xff; 6]);
    assert_eq!(
        r.handle(0, A, &mut req, &plain(), &mut tx),
        Outcome::Dropped(DropReason::ArpNotForUs)
    );
    assert!(tx.take().is_empty());
}

#[test]
fn start_announces_every_address_and_floating_ip() {
    let mut r = router();
    let mut tx = Sink::default();
    r.start(0, &mut tx);
    let s = tx.take();
    let got: Vec<(usize, [u8; 4])> = s.iter().map(|(n, _, f)| (*n, addr(f, 38))).collect();
    assert_eq!(
        got,
        [(A, [10, 0, 0, 1]), (B, [10, 0, 1, 1]), (X, EXT), (X, FIP)]
    );
    for (_, _, f) in &s {
        assert_eq!(f[..6], [0xff; 6]);
        assert_eq!(f[28..32], f[38..42], "gratuitous: sender = target");
    }
}

#[test]
fn queues_while_resolving_and_flushes_on_the_reply() {
    let mut r = router();
    let mut tx = Sink::default();
    let host = [10, 0, 1, 9];
    for i in 0..5u8 {
        let mut f = frame(A, &Ip::new([10, 0, 0, 7], host, 17), &udp(1, 2, &[i]));
        assert_eq!(r.handle(1, A, &mut f, &plain(), &mut tx), Outcome::Queued);
    }
    // One request for the first packet only.
    let req = tx.one(B);
    assert_eq!(req[..6], [0xff; 6]);
    assert_eq!(be16(&req, 20), 1);
    assert_eq!(req[28..32], [10, 0, 1, 1]);
    assert_eq!(req[38..42], host);
    assert_eq!(
        counter(&r, "drop_arp_queue_overflow"),
        2,
        "3 per destination"
    );
    let mut rep = arp(
        2,
        host_mac(host),
        host,
        router_mac(B),
        [10, 0, 1, 1],
        router_mac(B),
    );
    assert_eq!(r.handle(2, B, &mut rep, &plain(), &mut tx), Outcome::Local);
    let out = tx.take();
    assert_eq!(out.len(), 3);
    for (i, (nic, _, f)) in out.iter().enumerate() {
        assert_eq!(*nic, B);
        assert_eq!(f[..6], host_mac(host));
        assert_eq!(f[42], 2 + i as u8, "the newest three, in order");
        assert!(ip_ok(f) && l4_ok(f));
    }
    assert_eq!(counter(&r, "arp_queue_bytes"), 0);
    assert_eq!(r.poll_at_ms(), None);
}

#[test]
fn unanswered_arp_retries_then_sends_host_unreachable() {
    let mut r = router();
    let mut tx = Sink::default();
    learn(&mut r, 0, A, [10, 0, 0, 7], &mut tx);
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, b"x"),
    );
    let orig = f.clone();
    assert_eq!(r.handle(100, A, &mut f, &plain(), &mut tx), Outcome::Queued);
    assert_eq!(tx.take().len(), 1);
    assert_eq!(r.poll_at_ms(), Some(1100));
    r.poll(600, &mut tx);
    assert!(tx.take().is_empty());
    r.poll(1100, &mut tx);
    assert_eq!(tx.one(B)[38..42], [10, 0, 1, 9]);
    r.poll(2100, &mut tx);
    assert_eq!(tx.one(B)[38..42], [10, 0, 1, 9]);
    r.poll(3100, &mut tx);
    let e = tx.one(A);
    assert_eq!(e[..6], host_mac([10, 0, 0, 7]));
    // The quote is the packet as queued (TTL already decremented).
    assert!(ip_ok(&e) && l4_ok(&e));
    assert_eq!((e[34], e[35]), (3, 1));
    assert_eq!(src(&e), [10, 0, 0, 1]);
    assert_eq!(dst(&e), [10, 0, 0, 7]);
    assert_eq!(e[42 + 12..], orig[26..]);
    assert_eq!(counter(&r, "drop_host_unreachable"), 1);
    assert_eq!(r.poll_at_ms(), None);
    // A later packet starts over.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, b"x"),
    );
    assert_eq!(
        r.handle(4000, A, &mut f, &plain(), &mut tx),
        Outcome::Queued
    );
}

#[test]
fn stale_neighbours_are_probed_and_the_queue_is_bounded_in_bytes() {
    let (mut r, mut tx) = learned();
    // 61 s later the entry is stale: still used, and probed.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, b"x"),
    );
    assert_eq!(
        r.handle(61_000, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let s = tx.take();
    assert_eq!(s.len(), 2, "a probe and the packet");
    // Many unresolved destinations of big packets: capped at 256 KiB.
    for i in 0..100u8 {
        let mut f = frame(
            A,
            &Ip::new([10, 0, 0, 7], [10, 0, 1, 100 + i], 17),
            &udp(1, 2, &[0; 4000]),
        );
        r.handle(61_000, A, &mut f, &plain(), &mut tx);
    }
    assert!(counter(&r, "arp_queue_bytes") <= 256 * 1024);
    assert!(counter(&r, "drop_arp_queue_full") > 0);
    r.check_bounds().unwrap();
}

// --------------------------------------------------------------------- for the router

#[test]
fn answers_ping_on_any_of_its_addresses() {
    let (mut r, mut tx) = learned();
    for to in [[10, 0, 0, 1], [10, 0, 1, 1], EXT] {
        let mut f = frame(A, &Ip::new([10, 0, 0, 7], to, 1), &echo(8, 77, b"abcdefgh"));
        assert_eq!(r.handle(1, A, &mut f, &plain(), &mut tx), Outcome::Local);
        let e = tx.one(A);
        assert_eq!(e[..6], host_mac([10, 0, 0, 7]));
        assert_eq!(e[6..12], router_mac(A));
        assert!(ip_ok(&e) && l4_ok(&e));
        assert_eq!(src(&e), to);
        assert_eq!(dst(&e), [10, 0, 0, 7]);
        assert_eq!(e[34], 0);
        assert_eq!(be16(&e, 38), 77);
        assert_eq!(&e[42..], b"abcdefgh");
    }
    // A bad ICMP checksum is dropped.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 0, 1], 1),
        &echo(8, 1, b""),
    );
    f[36] ^= 1;
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::BadL4Checksum)
    );
}

#[test]
fn udp_to_the_router_is_port_unreachable_and_tcp_is_reset() {
    let (mut r, mut tx) = learned();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 0, 1], 17),
        &udp(40000, 33434, b"tr"),
    );
    let orig = f.clone();
    assert_eq!(r.handle(1, A, &mut f, &plain(), &mut tx), Outcome::Local);
    assert_icmp_error(&tx.one(A), 3, 3, [10, 0, 0, 1], &orig);
    // A partial checksum is completed before checking.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 0, 1], 17),
        &udp(40000, 33435, b"tr"),
    );
    let partial = partial_l4(&mut f, 17);
    assert_eq!(r.handle(1, A, &mut f, &partial, &mut tx), Outcome::Local);
    assert_eq!(tx.one(A)[34], 3);
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 0, 1], 6),
        &tcp(40000, 22, SYN, b""),
    );
    assert_eq!(r.handle(1, A, &mut f, &plain(), &mut tx), Outcome::Local);
    let rst = tx.one(A);
    assert!(ip_ok(&rst) && l4_ok(&rst));
    assert_eq!((sport(&rst), dport(&rst)), (22, 40000));
    assert_eq!(rst[47], RST | ACK);
    assert_eq!(
        u32::from_be_bytes([rst[42], rst[43], rst[44], rst[45]]),
        1001
    );
    // A RST is not answered.
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 0, 1], 6),
        &tcp(40000, 22, RST, b""),
    );
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::LocalIgnored)
    );
}

/// Turns frame `f`'s L4 checksum into a partial one (offload's pseudo-header sum) and
/// returns the offload header saying so.
fn partial_l4(f: &mut [u8], proto: u8) -> Offload {
    let total = usize::from(be16(f, 16));
    let len = total - 20;
    let off = if proto == 6 { 16 } else { 6 };
    let s = pseudo(f, len);
    let mut s2 = s;
    while s2 >> 16 != 0 {
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    f[34 + off..36 + off].copy_from_slice(&(s2 as u16).to_be_bytes());
    Offload {
        flags: F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: off as u16,
        ..Offload::default()
    }
}

/// Completes a partial checksum as a device would (independently of the frame crate).
fn complete(f: &mut [u8], o: &Offload) {
    let start = usize::from(o.csum_start);
    let at = start + usize::from(o.csum_offset);
    let c = rfc1071(&f[start..], 0);
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

// ----------------------------------------------------------------------------- SNAT

#[test]
fn snat_tcp_round_trip_with_a_random_port_and_valid_checksums() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 0, 7];
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(40000, 80, SYN, b""));
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let out = tx.one(X);
    assert_eq!(out[..6], host_mac(GW), "via the default gateway");
    assert_eq!(src(&out), EXT);
    assert_eq!(dst(&out), REMOTE);
    let port = sport(&out);
    assert!(port >= 1024);
    assert_eq!(dport(&out), 80);
    assert!(ip_ok(&out) && l4_ok(&out));
    // The answer comes back to the client.
    let mut rep = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 6),
        &tcp(80, port, SYNACK, b""),
    );
    assert_eq!(
        r.handle(2, X, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let back = tx.one(A);
    assert_eq!(back[..6], host_mac(client));
    assert_eq!((src(&back), dst(&back)), (REMOTE, client));
    assert_eq!((sport(&back), dport(&back)), (80, 40000));
    assert!(ip_ok(&back) && l4_ok(&back));
    // More of the same flow uses the same port.
    let mut f = frame(
        A,
        &Ip::new(client, REMOTE, 6),
        &tcp(40000, 80, ACK, b"GET /"),
    );
    r.handle(3, A, &mut f, &plain(), &mut tx);
    let out = tx.one(X);
    assert_eq!(sport(&out), port);
    assert!(l4_ok(&out));
    assert_eq!(counter(&r, "conntrack_entries"), 1);
    assert_eq!(counter(&r, "snat_flows"), 1);
    // An unsolicited packet to the gateway address is the router's own (RST).
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 6),
        &tcp(80, 1, ACK, b""),
    );
    assert_eq!(r.handle(4, X, &mut f, &plain(), &mut tx), Outcome::Local);
    assert_eq!(tx.one(X)[47], RST);
}

// ------------------------------------------------------------------- the shortcut

/// A TCP flow from 10.0.0.7:40000 to REMOTE:80 through SNAT, answered and acknowledged
/// (both directions have taken the full path once); returns the router and the source
/// port the gateway address uses.
fn established(mtus: [u16; 3]) -> (Router, Sink, u16) {
    let mut r = Router::new(&nics(mtus), &role(64), 42).unwrap();
    let mut tx = Sink::default();
    for (nic, ip) in [(A, [10, 0, 0, 7]), (B, [10, 0, 1, 9]), (X, GW)] {
        learn(&mut r, 0, nic, ip, &mut tx);
    }
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], REMOTE, 6),
        &tcp(40000, 80, SYN, b""),
    );
    r.handle(1, A, &mut f, &plain(), &mut tx);
    let port = sport(&tx.one(X));
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 6),
        &tcp(80, port, SYNACK, b""),
    );
    r.handle(2, X, &mut f, &plain(), &mut tx);
    tx.one(A);
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], REMOTE, 6),
        &tcp(40000, 80, ACK, b""),
    );
    r.handle(3, A, &mut f, &plain(), &mut tx);
    tx.one(X);
    (r, tx, port)
}

/// What the full path makes of `f` when it leaves on `nic` to `mac` with source
/// `src:sport` and destination `dst:dport`, checksums recomputed from scratch.
fn rewritten(
    f: &[u8],
    nic: usize,
    mac: [u8; 6],
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
) -> Vec<u8> {
    let mut e = f.to_vec();
    e[..6].copy_from_slice(&mac);
    e[6..12].copy_from_slice(&router_mac(nic));
    e[22] -= 1;
    e[26..30].copy_from_slice(&src);
    e[30..34].copy_from_slice(&dst);
    e[34..36].copy_from_slice(&sport.to_be_bytes());
    e[36..38].copy_from_slice(&dport.to_be_bytes());
    set_l4_checksum(&mut e);
    set_ip_checksum(&mut e);
    e
}

#[test]
fn established_flows_take_the_shortcut_and_leave_as_the_full_path_sends_them() {
    let (mut r, mut tx, port) = established([1500; 3]);
    assert_eq!(
        counter(&r, "forwarded_shortcut"),
        0,
        "first packets go the full way"
    );
    let mut shortcut = 0;
    // Payloads of odd and even lengths, flags, and bytes that exercise the checksum's
    // carries, both ways.
    for (i, len) in [0usize, 1, 2, 7, 100, 1001, 1460].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|j| (j * 37 + i * 101) as u8 | 0x80).collect();
        let flags = if i % 2 == 0 { ACK } else { ACK | 0x08 };
        let f = frame(
            A,
            &Ip::new([10, 0, 0, 7], REMOTE, 6),
            &tcp(40000, 80, flags, &payload),
        );
        let mut g = f.clone();
        assert_eq!(
            r.handle(10, A, &mut g, &plain(), &mut tx),
            Outcome::Forwarded { nic: X }
        );
        let out = tx.one(X);
        let want = rewritten(&f, X, host_mac(GW), (EXT, port), (REMOTE, 80));
        assert!(ip_ok(&out) && l4_ok(&out), "checksums of {len} bytes out");
        assert_eq!(out[..24], want[..24]);
        assert_eq!(out[26..50], want[26..50]);
        assert_eq!(out[52..], want[52..]);
        let f = frame_from(
            host_mac(GW),
            X,
            &Ip::new(REMOTE, EXT, 6),
            &tcp(80, port, flags, &payload),
        );
        let mut g = f.clone();
        assert_eq!(
            r.handle(11, X, &mut g, &plain(), &mut tx),
            Outcome::Forwarded { nic: A }
        );
        let back = tx.one(A);
        let want = rewritten(
            &f,
            A,
            host_mac([10, 0, 0, 7]),
            (REMOTE, 80),
            ([10, 0, 0, 7], 40000),
        );
        assert!(
            ip_ok(&back) && l4_ok(&back),
            "checksums of {len} bytes back"
        );
        assert_eq!(back[..24], want[..24]);
        assert_eq!(back[26..50], want[26..50]);
        assert_eq!(back[52..], want[52..]);
        shortcut += 2;
        assert_eq!(counter(&r, "forwarded_shortcut"), shortcut);
    }
    assert_eq!(counter(&r, "conntrack_entries"), 1);
}

#[test]
fn udp_through_the_shortcut_keeps_a_zero_checksum_zero() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 0, 7];
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(5353, 53, b"q"));
    r.handle(1, A, &mut f, &plain(), &mut tx);
    let port = sport(&tx.one(X));
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 17),
        &udp(53, port, b"a"),
    );
    r.handle(2, X, &mut f, &plain(), &mut tx);
    tx.one(A);
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(5353, 53, b"q2"));
    r.handle(3, A, &mut f, &plain(), &mut tx);
    tx.one(X);
    let before = counter(&r, "forwarded_shortcut");
    // With a checksum, and without one (zero: none).
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(5353, 53, b"with"));
    r.handle(4, A, &mut f, &plain(), &mut tx);
    let out = tx.one(X);
    assert!(ip_ok(&out) && l4_ok(&out) && out[40..42] != [0, 0]);
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(5353, 53, b"none"));
    f[40..42].fill(0);
    r.handle(5, A, &mut f, &plain(), &mut tx);
    let out = tx.one(X);
    assert_eq!(out[40..42], [0, 0]);
    assert!(ip_ok(&out));
    assert_eq!((src(&out), sport(&out)), (EXT, port));
    assert_eq!(counter(&r, "forwarded_shortcut"), before + 2);
}

#[test]
fn the_shortcut_leaves_ttl_expiry_and_mtu_to_the_full_path() {
    let (mut r, mut tx, _) = established([1500, 1500, 1400]);
    let client = [10, 0, 0, 7];
    let shortcut = counter(&r, "forwarded_shortcut");
    let mut ip = Ip::new(client, REMOTE, 6);
    ip.ttl = 1;
    let mut f = frame(A, &ip, &tcp(40000, 80, ACK, b"x"));
    assert_eq!(
        r.handle(10, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::TtlExpired)
    );
    assert_eq!(tx.one(A)[34], 11, "time exceeded");
    let mut ip = Ip::new(client, REMOTE, 6);
    ip.df = true;
    let mut f = frame(A, &ip, &tcp(40000, 80, ACK, &[7; 1400]));
    assert_eq!(
        r.handle(11, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::FragNeeded)
    );
    let e = tx.one(A);
    assert_eq!((e[34], e[35], be16(&e, 40)), (3, 4, 1400));
    let mut f = frame(
        A,
        &Ip::new(client, REMOTE, 6),
        &tcp(40000, 80, ACK, &[7; 1400]),
    );
    assert_eq!(
        r.handle(12, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    assert_eq!(tx.take().len(), 2, "fragmented");
    assert_eq!(counter(&r, "forwarded_shortcut"), shortcut);
}

#[test]
fn what_the_shortcut_cannot_vouch_for_takes_the_full_path() {
    let (mut r, mut tx, port) = established([1500; 3]);
    let client = [10, 0, 0, 7];
    // A corrupt IP header on an established flow.
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(40000, 80, ACK, b"x"));
    f[24] ^= 0xff;
    assert_eq!(
        r.handle(10, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::BadIpChecksum)
    );
    // The flow's tuple arriving from the other tenant network: spoofed there.
    let mut f = frame(B, &Ip::new(client, REMOTE, 6), &tcp(40000, 80, ACK, b"x"));
    assert_eq!(
        r.handle(11, B, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::Spoofed)
    );
    // The gateway moved to another MAC: the flow follows at once.
    let moved = [0x52, 0x54, 0, 0, 0, 0x99];
    let mut a = arp(1, moved, GW, [0; 6], EXT, [0xff; 6]);
    r.handle(12, X, &mut a, &plain(), &mut tx);
    tx.take();
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(40000, 80, ACK, b"x"));
    assert_eq!(
        r.handle(13, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    assert_eq!(tx.one(X)[..6], moved);
    // Once the gateway's entry is stale, the flow's packets probe it again.
    let later = 13 + crate::neigh::REACHABLE_MS;
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(40000, 80, ACK, b"x"));
    assert_eq!(
        r.handle(later, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let sent = tx.take();
    assert!(
        sent.iter()
            .any(|(n, _, f)| *n == X && f[12..14] == [8, 6] && f[38..42] == GW),
        "an ARP probe for the gateway"
    );
    assert!(sent.iter().any(|(n, _, f)| *n == X && sport(f) == port));
}

/// Found by the fuzzer: the shortcut cut the frame at a total length too short to hold
/// the protocol byte.
#[test]
fn a_total_length_shorter_than_a_header_is_dropped() {
    let (mut r, mut tx, _) = established([1500; 3]);
    for total in [0u16, 5, 9, 10, 19, 27] {
        let mut f = frame(
            A,
            &Ip::new([10, 0, 0, 7], REMOTE, 6),
            &tcp(40000, 80, ACK, b"x"),
        );
        f[16..18].copy_from_slice(&total.to_be_bytes());
        set_ip_checksum(&mut f);
        assert!(matches!(
            r.handle(10, A, &mut f, &plain(), &mut tx),
            Outcome::Dropped(_)
        ));
    }
    assert!(tx.take().is_empty());
}

#[test]
fn a_re_pointed_floating_ip_moves_flows_the_shortcut_knew() {
    let (mut r, mut tx) = learned();
    let inbound = |flags: u8| {
        frame_from(
            host_mac(GW),
            X,
            &Ip::new(REMOTE, FIP, 6),
            &tcp(50000, 22, flags, b""),
        )
    };
    r.handle(1, X, &mut inbound(SYN), &plain(), &mut tx);
    let mut f = frame(A, &Ip::new(FIXED, REMOTE, 6), &tcp(22, 50000, SYNACK, b""));
    r.handle(2, A, &mut f, &plain(), &mut tx);
    r.handle(3, X, &mut inbound(ACK), &plain(), &mut tx);
    let mut f = frame(A, &Ip::new(FIXED, REMOTE, 6), &tcp(22, 50000, ACK, b""));
    r.handle(4, A, &mut f, &plain(), &mut tx);
    tx.take();
    r.handle(5, X, &mut inbound(ACK), &plain(), &mut tx);
    assert_eq!(dst(&tx.one(A)), FIXED);
    // The answer's second packet and this one.
    assert_eq!(counter(&r, "forwarded_shortcut"), 2);
    let op = Op::FloatingIpUpsert(FloatingIp {
        floating: ip4(FIP),
        fixed: ip4(FIXED2),
    });
    r.apply(&op, 6, &mut tx).unwrap();
    tx.take();
    r.handle(7, X, &mut inbound(ACK), &plain(), &mut tx);
    let out = tx.one(A);
    assert_eq!((dst(&out), &out[..6]), (FIXED2, &host_mac(FIXED2)[..]));
    assert_eq!(counter(&r, "forwarded_shortcut"), 2);
}

#[test]
fn snat_udp_and_icmp_echo_round_trips() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 1, 9];
    let mut f = frame(B, &Ip::new(client, REMOTE, 17), &udp(5353, 53, b"query"));
    assert_eq!(
        r.handle(1, B, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let out = tx.one(X);
    let port = sport(&out);
    assert_eq!(src(&out), EXT);
    assert!(l4_ok(&out) && ip_ok(&out));
    let mut rep = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 17),
        &udp(53, port, b"answer"),
    );
    assert_eq!(
        r.handle(2, X, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let back = tx.one(B);
    assert_eq!((dst(&back), dport(&back)), (client, 5353));
    assert!(l4_ok(&back) && ip_ok(&back));
    // UDP without a checksum keeps none.
    let mut f = frame(B, &Ip::new(client, REMOTE, 17), &udp(5354, 53, b"q"));
    f[40..42].fill(0);
    r.handle(3, B, &mut f, &plain(), &mut tx);
    assert_eq!(tx.one(X)[40..42], [0, 0]);
    // Echo, translated by identifier.
    let mut f = frame(B, &Ip::new(client, REMOTE, 1), &echo(8, 0x4242, b"ping"));
    assert_eq!(
        r.handle(4, B, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let out = tx.one(X);
    let id = be16(&out, 38);
    assert_eq!(src(&out), EXT);
    assert!(l4_ok(&out) && ip_ok(&out));
    let mut rep = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 1),
        &echo(0, id, b"ping"),
    );
    assert_eq!(
        r.handle(5, X, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let back = tx.one(B);
    assert_eq!(dst(&back), client);
    assert_eq!(be16(&back, 38), 0x4242);
    assert!(l4_ok(&back) && ip_ok(&back));
}

#[test]
fn icmp_errors_for_snat_flows_are_translated_back() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 0, 7];
    let orig = frame(A, &Ip::new(client, REMOTE, 17), &udp(5000, 9999, &[1; 100]));
    let mut f = orig.clone();
    r.handle(1, A, &mut f, &plain(), &mut tx);
    let sent = tx.one(X);
    let port = sport(&sent);
    // The remote host answers port-unreachable, quoting what it got; a router on the way
    // answers fragmentation-needed.
    for (from, typ, code) in [(REMOTE, 3, 3), (GW, 3, 4)] {
        let mut icmp = vec![typ, code, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend_from_slice(&sent[14..14 + 28 + 20]);
        let mut e = frame_from(host_mac(GW), X, &Ip::new(from, EXT, 1), &icmp);
        assert_eq!(
            r.handle(2, X, &mut e, &plain(), &mut tx),
            Outcome::Forwarded { nic: A }
        );
        let back = tx.one(A);
        assert!(ip_ok(&back), "outer IP checksum");
        assert!(l4_ok(&back), "ICMP checksum");
        assert_eq!(src(&back), from);
        assert_eq!(dst(&back), client);
        let q = &back[42..];
        assert_eq!(rfc1071(&q[..20], 0), 0, "quoted IP checksum");
        assert_eq!(addr(q, 12), client);
        assert_eq!(addr(q, 16), REMOTE);
        assert_eq!(be16(q, 20), 5000);
        assert_eq!(be16(q, 22), 9999);
        assert_ne!(port, 5000);
        // The quoted UDP checksum is that of the client's datagram again.
        assert_eq!(q[26..28], orig[40..42]);
    }
    assert_eq!(counter(&r, "icmp_errors_translated"), 2);
}

// ------------------------------------------------------------------------------ MTU

#[test]
fn too_big_packets_are_fragmented_or_refused_with_frag_needed() {
    let mut r = Router::new(&nics([1500, 1000, 1500]), &role(64), 7).unwrap();
    let mut tx = Sink::default();
    learn(&mut r, 0, B, [10, 0, 1, 9], &mut tx);
    learn(&mut r, 0, A, [10, 0, 0, 7], &mut tx);
    let payload: Vec<u8> = (0..1400u32).map(|i| i as u8).collect();
    let ip = Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17);
    let mut f = frame(A, &ip, &udp(1, 2, &payload));
    let orig = f.clone();
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let frags: Vec<Vec<u8>> = tx.take().into_iter().map(|(_, _, f)| f).collect();
    assert_eq!(frags.len(), 2);
    assert!(frags.iter().all(|f| f.len() - 14 <= 1000));
    let whole = join(&frags);
    assert!(l4_ok(&whole));
    assert_eq!(whole[34..], orig[34..]);
    // DF set: fragmentation needed, with the next hop's MTU.
    let mut ip = Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 1);
    ip.df = true;
    // ping -M do -s (mtu - 28) passes, one more byte does not.
    let mut ok = frame(A, &ip, &echo(8, 1, &vec![0; 1000 - 28]));
    assert_eq!(
        r.handle(2, A, &mut ok, &plain(), &mut tx),
        Outcome::Forwarded { nic: B }
    );
    tx.take();
    let mut big = frame(A, &ip, &echo(8, 1, &vec![0; 1000 - 27]));
    let orig = big.clone();
    assert_eq!(
        r.handle(3, A, &mut big, &plain(), &mut tx),
        Outcome::Dropped(DropReason::FragNeeded)
    );
    let e = tx.one(A);
    assert_icmp_error(&e, 3, 4, [10, 0, 0, 1], &orig);
    assert_eq!(be16(&e, 40), 1000, "next-hop MTU");
    assert_eq!(counter(&r, "fragments_created"), 2);
}

#[test]
fn reassembles_fragments_through_nat_and_refragments() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 0, 7];
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let f = frame(A, &Ip::new(client, REMOTE, 17), &udp(7000, 7001, &payload));
    let frags = split(&f, 1480);
    assert_eq!(frags.len(), 3);
    // Out of order.
    for (i, idx) in [2, 0].into_iter().enumerate() {
        let mut fr = frags[idx].clone();
        assert_eq!(
            r.handle(1 + i as u64, A, &mut fr, &plain(), &mut tx),
            Outcome::Queued
        );
    }
    assert_eq!(counter(&r, "reassembly_in_flight"), 1);
    let mut fr = frags[1].clone();
    assert_eq!(
        r.handle(3, A, &mut fr, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let out: Vec<Vec<u8>> = tx.take().into_iter().map(|(_, _, f)| f).collect();
    assert_eq!(out.len(), 3);
    let whole = join(&out);
    assert_eq!(src(&whole), EXT);
    assert!(l4_ok(&whole), "the NATed datagram's checksum");
    assert_eq!(whole[42..], f[42..]);
    assert_eq!(counter(&r, "reassembly_in_flight"), 0);
    assert_eq!(counter(&r, "fragments_reassembled"), 1);
}

#[test]
fn overlapping_duplicate_and_stale_fragments_are_refused() {
    let (mut r, mut tx) = learned();
    let f = frame(
        A,
        &Ip::new([10, 0, 0, 7], REMOTE, 17),
        &udp(1, 2, &[9; 2000]),
    );
    let frags = split(&f, 1000);
    let mut a = frags[0].clone();
    assert_eq!(r.handle(1, A, &mut a, &plain(), &mut tx), Outcome::Queued);
    let mut dup = frags[0].clone();
    assert_eq!(
        r.handle(1, A, &mut dup, &plain(), &mut tx),
        Outcome::Dropped(DropReason::FragDuplicate)
    );
    // A fragment overlapping the first: the datagram is discarded.
    let mut o = split(&f, 496)[1].clone();
    assert_eq!(
        r.handle(1, A, &mut o, &plain(), &mut tx),
        Outcome::Dropped(DropReason::FragOverlap)
    );
    assert_eq!(counter(&r, "reassembly_in_flight"), 0);
    // The rest alone never completes.
    let mut b = frags[1].clone();
    assert_eq!(r.handle(1, A, &mut b, &plain(), &mut tx), Outcome::Queued);
    assert_eq!(r.poll_at_ms(), Some(30_001));
    r.poll(30_001, &mut tx);
    assert_eq!(counter(&r, "drop_frag_timeout"), 1);
    assert!(tx.take().is_empty());
    // Fragments needing no NAT (east-west) are forwarded as they are.
    let f = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, &[9; 2000]),
    );
    for fr in split(&f, 1000) {
        let mut fr = fr;
        assert_eq!(
            r.handle(40_000, A, &mut fr, &plain(), &mut tx),
            Outcome::Forwarded { nic: B }
        );
    }
    assert_eq!(tx.take().len(), 3);
}

// ---------------------------------------------------------------------- floating IPs

#[test]
fn floating_ip_inbound_outbound_and_precedence_over_snat() {
    let (mut r, mut tx) = learned();
    // Inbound: DNAT to the fixed address.
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, FIP, 6),
        &tcp(50000, 22, SYN, b""),
    );
    assert_eq!(
        r.handle(1, X, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let inb = tx.one(A);
    assert_eq!(inb[..6], host_mac(FIXED));
    assert_eq!((src(&inb), dst(&inb)), (REMOTE, FIXED));
    assert_eq!((sport(&inb), dport(&inb)), (50000, 22));
    assert!(ip_ok(&inb) && l4_ok(&inb));
    let mut rep = frame(A, &Ip::new(FIXED, REMOTE, 6), &tcp(22, 50000, SYNACK, b""));
    assert_eq!(
        r.handle(2, A, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let out = tx.one(X);
    assert_eq!((src(&out), sport(&out)), (FIP, 22));
    assert!(ip_ok(&out) && l4_ok(&out));
    // Outbound from the fixed address: the floating IP, port kept.
    let mut f = frame(A, &Ip::new(FIXED, REMOTE, 17), &udp(1234, 53, b"q"));
    r.handle(3, A, &mut f, &plain(), &mut tx);
    let out = tx.one(X);
    assert_eq!((src(&out), sport(&out)), (FIP, 1234));
    assert!(l4_ok(&out));
    // Ping to the floating IP reaches the instance.
    let mut f = frame_from(host_mac(GW), X, &Ip::new(REMOTE, FIP, 1), &echo(8, 9, b"p"));
    assert_eq!(
        r.handle(4, X, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    assert_eq!(dst(&tx.one(A)), FIXED);
    assert_eq!(counter(&r, "dnat_flows"), 2);
}

#[test]
fn hairpin_to_a_floating_ip_on_the_same_subnet() {
    let (mut r, mut tx) = learned();
    let other = [10, 0, 0, 7]; // no floating IP: SNAT to the gateway address
    let mut f = frame(A, &Ip::new(other, FIP, 6), &tcp(41000, 80, SYN, b""));
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let out = tx.one(A);
    assert_eq!(out[..6], host_mac(FIXED));
    assert_eq!(dst(&out), FIXED);
    assert_eq!(
        src(&out),
        EXT,
        "so the answer comes back through the router"
    );
    assert!(ip_ok(&out) && l4_ok(&out));
    let p = sport(&out);
    let mut rep = frame(A, &Ip::new(FIXED, EXT, 6), &tcp(80, p, SYNACK, b""));
    assert_eq!(
        r.handle(2, A, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let back = tx.one(A);
    assert_eq!(back[..6], host_mac(other));
    assert_eq!((src(&back), dst(&back)), (FIP, other));
    assert_eq!((sport(&back), dport(&back)), (80, 41000));
    assert!(ip_ok(&back) && l4_ok(&back));
    // An instance with its own floating IP appears as that.
    let op = Op::FloatingIpUpsert(FloatingIp {
        floating: ip4(FIP2),
        fixed: ip4(FIXED2),
    });
    r.apply(&op, 3, &mut tx).unwrap();
    assert_eq!(
        tx.one(X)[38..42],
        FIP2,
        "gratuitous ARP for the new floating IP"
    );
    let mut f = frame(A, &Ip::new(FIXED2, FIP, 1), &echo(8, 5, b"hi"));
    assert_eq!(
        r.handle(4, A, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let out = tx.one(A);
    assert_eq!((src(&out), dst(&out)), (FIP2, FIXED));
    assert!(l4_ok(&out));
    let mut rep = frame(A, &Ip::new(FIXED, FIP2, 1), &echo(0, be16(&out, 38), b"hi"));
    assert_eq!(
        r.handle(5, A, &mut rep, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let back = tx.one(A);
    assert_eq!((src(&back), dst(&back)), (FIP, FIXED2));
    assert_eq!(be16(&back, 38), 5);
}

#[test]
fn removing_or_repointing_a_floating_ip_drops_its_flows() {
    let (mut r, mut tx) = learned();
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, FIP, 6),
        &tcp(50000, 22, SYN, b""),
    );
    r.handle(1, X, &mut f, &plain(), &mut tx);
    let mut f = frame(A, &Ip::new([10, 0, 0, 7], REMOTE, 17), &udp(1, 2, b""));
    r.handle(1, A, &mut f, &plain(), &mut tx);
    tx.take();
    assert_eq!(counter(&r, "conntrack_entries"), 2);
    // Re-pointed: the old flow's entries go, the gateway SNAT flow stays.
    let op = Op::FloatingIpUpsert(FloatingIp {
        floating: ip4(FIP),
        fixed: ip4(FIXED2),
    });
    r.apply(&op, 2, &mut tx).unwrap();
    assert_eq!(counter(&r, "conntrack_entries"), 1);
    let mut f = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, FIP, 6),
        &tcp(50000, 22, ACK, b""),
    );
    r.handle(3, X, &mut f, &plain(), &mut tx);
    let got = tx.take();
    assert_eq!(dst(&got.last().unwrap().2), FIXED2);
    // Removed: the floating IP is nobody's; a packet for it has no route but the
    // external subnet, where nobody answers ARP for it.
    r.apply(&Op::FloatingIpRemove { floating: ip4(FIP) }, 4, &mut tx)
        .unwrap();
    assert_eq!(counter(&r, "conntrack_entries"), 1);
    assert_eq!(counter(&r, "floating_ips"), 0);
    let mut req = arp(1, host_mac(GW), GW, [0; 6], FIP, [0xff; 6]);
    assert_eq!(
        r.handle(5, X, &mut req, &plain(), &mut tx),
        Outcome::Dropped(DropReason::ArpNotForUs)
    );
    assert!(r.apply(&Op::Ping, 5, &mut tx).is_err());
    // A floating IP on a router address is refused.
    let bad = Op::FloatingIpUpsert(FloatingIp {
        floating: ip4(EXT),
        fixed: ip4(FIXED),
    });
    assert!(r.apply(&bad, 5, &mut tx).is_err());
}

// ------------------------------------------------------------------------ conntrack

#[test]
fn conntrack_entries_expire_by_state() {
    let (mut r, mut tx) = learned();
    let client = [10, 0, 0, 7];
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(1, 2, b""));
    r.handle(0, A, &mut f, &plain(), &mut tx);
    let port = sport(&tx.one_ip(X));
    assert!(r.poll_at_ms().is_some());
    // Unreplied UDP: 30 s.
    let mut rep = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 17),
        &udp(2, port, b""),
    );
    assert_eq!(
        r.handle(30_001, X, &mut rep, &plain(), &mut tx),
        Outcome::Local
    );
    tx.take();
    assert_eq!(counter(&r, "conntrack_entries"), 0);
    // A replied TCP connection outlives a day; after a RST, 10 s.
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(3000, 80, SYN, b""));
    r.handle(100_000, A, &mut f, &plain(), &mut tx);
    let port = sport(&tx.one_ip(X));
    let mut rep = frame_from(
        host_mac(GW),
        X,
        &Ip::new(REMOTE, EXT, 6),
        &tcp(80, port, SYNACK, b""),
    );
    r.handle(100_001, X, &mut rep, &plain(), &mut tx);
    let mut f = frame(A, &Ip::new(client, REMOTE, 6), &tcp(3000, 80, ACK, b""));
    r.handle(100_002, A, &mut f, &plain(), &mut tx);
    tx.take();
    let day = 24 * 3600 * 1000;
    let mut f = frame(
        A,
        &Ip::new(client, REMOTE, 6),
        &tcp(3000, 80, ACK | RST, b""),
    );
    r.handle(day, A, &mut f, &plain(), &mut tx);
    assert_eq!(sport(&tx.one_ip(X)), port, "the same flow a day later");
    r.poll(day + 10_001, &mut tx);
    assert_eq!(counter(&r, "conntrack_entries"), 0);
    assert_eq!(counter(&r, "conntrack_expired"), 2);
}

#[test]
fn a_flood_of_new_flows_cannot_evict_assured_ones() {
    let mut r = Router::new(&nics([1500; 3]), &role(4), 3).unwrap();
    let mut tx = Sink::default();
    learn(&mut r, 0, A, [10, 0, 0, 7], &mut tx);
    learn(&mut r, 0, X, GW, &mut tx);
    let client = [10, 0, 0, 7];
    let mut ports = Vec::new();
    for sp in [1000, 1001] {
        let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(sp, 53, b""));
        r.handle(1, A, &mut f, &plain(), &mut tx);
        let p = sport(&tx.one(X));
        let mut rep = frame_from(host_mac(GW), X, &Ip::new(REMOTE, EXT, 17), &udp(53, p, b""));
        assert_eq!(
            r.handle(2, X, &mut rep, &plain(), &mut tx),
            Outcome::Forwarded { nic: A }
        );
        tx.take();
        ports.push(p);
    }
    for sp in 2000..2100 {
        let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(sp, 53, b""));
        assert_eq!(
            r.handle(3, A, &mut f, &plain(), &mut tx),
            Outcome::Forwarded { nic: X }
        );
    }
    tx.take();
    assert_eq!(counter(&r, "conntrack_entries"), 4);
    assert_eq!(counter(&r, "conntrack_evicted"), 98);
    for (sp, p) in [1000, 1001].into_iter().zip(ports) {
        let mut rep = frame_from(host_mac(GW), X, &Ip::new(REMOTE, EXT, 17), &udp(53, p, b""));
        assert_eq!(
            r.handle(4, X, &mut rep, &plain(), &mut tx),
            Outcome::Forwarded { nic: A }
        );
        assert_eq!(dport(&tx.one(A)), sp);
    }
    // Four assured flows: a new one is refused.
    for sp in [2098, 2099] {
        let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(sp, 53, b""));
        r.handle(5, A, &mut f, &plain(), &mut tx);
    }
    let sent = tx.take();
    for (_, _, f) in sent {
        let mut rep = frame_from(
            host_mac(GW),
            X,
            &Ip::new(REMOTE, EXT, 17),
            &udp(53, sport(&f), b""),
        );
        r.handle(6, X, &mut rep, &plain(), &mut tx);
    }
    tx.take();
    let mut f = frame(A, &Ip::new(client, REMOTE, 17), &udp(3000, 53, b""));
    assert_eq!(
        r.handle(7, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::ConntrackFull)
    );
    assert_eq!(counter(&r, "conntrack_full"), 1);
    r.check_bounds().unwrap();
}

// ------------------------------------------------------------------- anti-spoofing

#[test]
fn spoofed_sources_on_tenant_nics_are_dropped() {
    let (mut r, mut tx) = learned();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 1, 9], [10, 0, 1, 10], 17),
        &udp(1, 2, b""),
    );
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::Spoofed)
    );
    // Sources behind an extra route's next hop are fine on that NIC.
    let mut f = frame(
        B,
        &Ip::new([192, 168, 50, 3], [10, 0, 0, 7], 17),
        &udp(1, 2, b""),
    );
    assert_eq!(
        r.handle(1, B, &mut f, &plain(), &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let mut f = frame(
        A,
        &Ip::new([192, 168, 50, 3], [10, 0, 1, 9], 17),
        &udp(1, 2, b""),
    );
    assert_eq!(
        r.handle(1, A, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::Spoofed)
    );
    assert_eq!(counter(&r, "drop_spoofed"), 2);
    assert_eq!(counter(&r, "nic0_drop"), 2);
}

// ----------------------------------------------------------------------- offloads

/// A TCP/IPv4 superframe of `payload` bytes from `src` with a partial checksum.
fn superframe(nic: usize, s: [u8; 4], d: [u8; 4], payload: usize, df: bool) -> (Vec<u8>, Offload) {
    let data: Vec<u8> = (0..payload as u32).map(|i| (i * 13) as u8).collect();
    let mut ip = Ip::new(s, d, 6);
    ip.df = df;
    let mut f = frame(nic, &ip, &tcp(40000, 5201, ACK, &data));
    let mut o = partial_l4(&mut f, 6);
    o.gso = GsoKind::Tcp4;
    o.gso_size = 1448;
    o.hdr_len = 54;
    (f, o)
}

#[test]
fn superframes_go_whole_through_snat_with_the_partial_checksum_updated() {
    let (mut r, mut tx) = learned();
    let (mut f, o) = superframe(A, [10, 0, 0, 7], REMOTE, 60_000, true);
    assert_eq!(
        r.handle(1, A, &mut f, &o, &mut tx),
        Outcome::Forwarded { nic: X }
    );
    let mut s = tx.take();
    assert_eq!(s.len(), 1);
    let (_, off, mut out) = s.remove(0);
    assert_eq!(off, o, "the offload header is kept");
    assert_eq!(out.len(), 14 + 40 + 60_000);
    assert_eq!(src(&out), EXT);
    assert!(ip_ok(&out));
    complete(&mut out, &off);
    assert!(l4_ok(&out), "the device's checksum is right after SNAT");
    assert_eq!(counter(&r, "gso_forwarded"), 1);
    // And the reply direction, a superframe too.
    let port = sport(&out);
    let mut ip = Ip::new(REMOTE, EXT, 6);
    ip.df = true;
    let mut rep = frame_from(host_mac(GW), X, &ip, &tcp(5201, port, ACK, &[5; 30_000]));
    let mut ro = partial_l4(&mut rep, 6);
    ro.gso = GsoKind::Tcp4;
    ro.gso_size = 1448;
    assert_eq!(
        r.handle(2, X, &mut rep, &ro, &mut tx),
        Outcome::Forwarded { nic: A }
    );
    let (_, off, mut back) = tx.take().remove(0);
    assert_eq!((dst(&back), dport(&back)), ([10, 0, 0, 7], 40000));
    complete(&mut back, &off);
    assert!(l4_ok(&back));
}

#[test]
fn superframes_too_big_for_the_egress_are_segmented_or_refused() {
    let mut r = Router::new(&nics([1500, 1400, 1500]), &role(64), 9).unwrap();
    let mut tx = Sink::default();
    learn(&mut r, 0, A, [10, 0, 0, 7], &mut tx);
    learn(&mut r, 0, B, [10, 0, 1, 9], &mut tx);
    let (mut f, o) = superframe(A, [10, 0, 0, 7], [10, 0, 1, 9], 10_000, false);
    assert_eq!(
        r.handle(1, A, &mut f, &o, &mut tx),
        Outcome::Forwarded { nic: B }
    );
    let segs = tx.take();
    assert_eq!(segs.len(), 10_000usize.div_ceil(1360));
    for (_, off, s) in &segs {
        assert_eq!(*off, Offload::default());
        assert!(s.len() - 14 <= 1400);
        assert!(ip_ok(s) && l4_ok(s));
    }
    let (mut f, o) = superframe(A, [10, 0, 0, 7], [10, 0, 1, 9], 10_000, true);
    let partial_field = f[50..52].to_vec();
    assert_eq!(
        r.handle(2, A, &mut f, &o, &mut tx),
        Outcome::Dropped(DropReason::FragNeeded)
    );
    let e = tx.one(A);
    assert_eq!((e[34], e[35]), (3, 4));
    assert_eq!(be16(&e, 40), 1400);
    assert!(ip_ok(&e) && l4_ok(&e));
    // The quoted TCP checksum was completed first.
    assert_ne!(e[42 + 36..42 + 38], partial_field[..]);
    let mut quoted_csum = f[50..52].to_vec();
    quoted_csum.copy_from_slice(&e[42 + 36..42 + 38]);
    assert_eq!(quoted_csum, f[50..52], "the completed checksum is quoted");
}

#[test]
fn partial_checksums_of_plain_frames_are_updated_through_nat() {
    let (mut r, mut tx) = learned();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], REMOTE, 17),
        &udp(9, 10, b"partial"),
    );
    let o = partial_l4(&mut f, 17);
    r.handle(1, A, &mut f, &o, &mut tx);
    let (_, off, mut out) = tx.take().remove(0);
    assert_eq!(off, o);
    complete(&mut out, &off);
    assert!(l4_ok(&out));
}

// ----------------------------------------------------------------------- bad input

#[test]
fn bad_frames_are_counted_not_panicking() {
    let (mut r, mut tx) = learned();
    let good = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, b"x"),
    );
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::Truncated),
        (good[..30].to_vec(), DropReason::Truncated),
        (
            {
                let mut f = good.clone();
                f[14] = 0x44;
                f
            },
            DropReason::BadIhl,
        ),
        (
            {
                let mut f = good.clone();
                f[14] = 0x65;
                f
            },
            DropReason::BadVersion,
        ),
        (
            {
                let mut f = good.clone();
                f[24] ^= 0xff;
                f
            },
            DropReason::BadIpChecksum,
        ),
        (
            {
                let mut f = good.clone();
                f[16..18].copy_from_slice(&2000u16.to_be_bytes());
                set_ip_checksum(&mut f);
                f
            },
            DropReason::BadLength,
        ),
        (
            {
                // IHL 6 with a NOP option word.
                let mut f = good[..34].to_vec();
                f.extend_from_slice(&[1, 1, 1, 0]);
                f.extend_from_slice(&good[34..]);
                f[14] = 0x46;
                let total = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&total.to_be_bytes());
                f[24..26].fill(0);
                let c = rfc1071(&f[14..38], 0);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f
            },
            DropReason::IpOptions,
        ),
        (
            {
                let mut f = good.clone();
                f[12] = 0x86;
                f[13] = 0xdd;
                f
            },
            DropReason::UnsupportedEthertype,
        ),
        (
            {
                let mut f = good.clone();
                f[0] = 0x66;
                f
            },
            DropReason::NotForUs,
        ),
        (
            frame(
                A,
                &Ip::new([10, 0, 0, 7], [10, 0, 0, 255], 17),
                &udp(68, 67, b""),
            ),
            DropReason::Broadcast,
        ),
        (
            frame(
                A,
                &Ip::new([0, 0, 0, 0], [10, 0, 1, 9], 17),
                &udp(68, 67, b""),
            ),
            DropReason::MartianSource,
        ),
        (
            frame(A, &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 6), &[0; 10]),
            DropReason::BadL4,
        ),
        (
            arp(
                1,
                host_mac([10, 0, 0, 7]),
                [10, 0, 0, 7],
                [0; 6],
                [10, 0, 0, 1],
                [0xff; 6],
            )[..30]
                .to_vec(),
            DropReason::Truncated,
        ),
    ];
    for (i, (mut f, why)) in cases.into_iter().enumerate() {
        assert_eq!(
            r.handle(1, A, &mut f, &plain(), &mut tx),
            Outcome::Dropped(why),
            "case {i}"
        );
    }
    assert!(tx.take().is_empty());
    let mut f = good.clone();
    assert_eq!(
        r.handle(1, 9, &mut f, &plain(), &mut tx),
        Outcome::Dropped(DropReason::UnknownNic)
    );
    // An offload header that does not fit the frame.
    let mut f = good.clone();
    let o = Offload {
        flags: F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 400,
        ..Offload::default()
    };
    assert_eq!(
        r.handle(1, A, &mut f, &o, &mut tx),
        Outcome::Dropped(DropReason::BadOffload)
    );
    let o = Offload {
        gso: GsoKind::Udp,
        gso_size: 100,
        ..Offload::default()
    };
    let mut f = good.clone();
    assert_eq!(
        r.handle(1, A, &mut f, &o, &mut tx),
        Outcome::Dropped(DropReason::BadOffload)
    );
    assert_eq!(counter(&r, "drop_bad_ihl"), 1);
    assert_eq!(counter(&r, "drop_bad_offload"), 2);
    r.check_bounds().unwrap();
}

#[test]
fn configuration_errors_name_the_field() {
    let mut role = role(64);
    role.default_gateway = Some(Ipv4Addr::new(10, 9, 9, 9));
    let e = Router::new(&nics([1500; 3]), &role, 0).err().unwrap();
    assert!(alloc::format!("{e}").contains("default_gateway"));
    let mut role2 = crate::tests::role(64);
    role2.routes[0].nexthop = Ipv4Addr::new(172, 16, 0, 1);
    let e = Router::new(&nics([1500; 3]), &role2, 0).err().unwrap();
    assert!(alloc::format!("{e}").contains("next hop"));
    let e = Router::new(&nics([1500, 60, 1500]), &crate::tests::role(64), 0)
        .err()
        .unwrap();
    assert!(alloc::format!("{e}").contains("mtu"));
    assert!(Router::new(&[], &crate::tests::role(64), 0).is_err());
}

#[test]
fn counter_names_are_unique_snake_case() {
    let r = router();
    let c = r.counters();
    let mut names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
    assert!(names.iter().all(|n| {
        n.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    }));
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
}

// ---------------------------------------------------------------- the fuzz body, on stable

use crate as router;

/// The cargo-fuzz target's body (input layout and invariants), shared with `fuzz/`.
#[path = "../../../fuzz/router_datapath_check.rs"]
mod fuzz_check;

/// Seed inputs for the fuzzer in `fuzz_check`'s layout: the flows the tests above drive.
/// `fuzz/corpus/router_datapath/seed-<name>` holds them (see
/// `committed_seed_corpus_is_current` to regenerate them).
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_check::{OP_ARP, OP_FIP, OP_IPV4, OP_POLL, OP_RAW, encode};
    // ADDRS indices: 1 = 10.0.0.7, 2 = 10.0.0.5 (fixed), 4 = 10.0.1.9, 5 = the external
    // address, 6 = its gateway, 7 = the floating IP, 8 = a remote host, 0 = 10.0.0.1.
    let ip = |proto: u8, ttl: u8, flags: u8, s: u8, d: u8, l4: &[u8]| {
        let mut b = vec![proto, ttl, flags, 0, s, d];
        b.extend_from_slice(l4);
        b
    };
    let learn = |s: u8, t: u8| vec![0u8, s, t];
    let neighbours: Vec<(u8, u8, u8, u8, Vec<u8>)> = vec![
        (OP_ARP, 0, 0, 0, learn(1, 0)),
        (OP_ARP, 0, 0, 0, learn(2, 0)),
        (OP_ARP, 0, 1, 0, learn(4, 3)),
        (OP_ARP, 0, 2, 0, learn(6, 5)),
    ];
    let with = |extra: Vec<(u8, u8, u8, u8, Vec<u8>)>| {
        let mut all = neighbours.clone();
        all.extend(extra);
        let refs: Vec<(u8, u8, u8, u8, &[u8])> = all
            .iter()
            .map(|(a, b, c, d, e)| (*a, *b, *c, *d, e.as_slice()))
            .collect();
        encode([3, 100, 1, 7], &refs)
    };
    let syn = tcp(40000, 80, SYN, b"");
    let synack = tcp(80, 40000, SYNACK, b"");
    let big = udp(1, 2, &[7; 3000]);
    let mut frag_first = ip(17, 64, 0x20, 1, 8, &big[..1480]);
    frag_first[3] = 0;
    let mut frag_last = ip(17, 64, 0x00, 1, 8, &big[1480..]);
    frag_last[3] = 185; // offset 1480 / 8
    let mut superframe = tcp(40000, 5201, ACK, &[1; 20_000]);
    superframe[16..18].fill(0);
    let raw = frame(
        A,
        &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
        &udp(1, 2, b"raw"),
    );
    vec![
        (
            "east-west",
            with(vec![(
                OP_IPV4,
                1,
                0,
                0,
                ip(17, 64, 0, 1, 4, &udp(5, 6, b"hi")),
            )]),
        ),
        (
            "snat-tcp",
            with(vec![
                (OP_IPV4, 1, 0, 0, ip(6, 64, 0x40, 1, 8, &syn)),
                (OP_IPV4, 1, 2, 0, ip(6, 60, 0x40, 8, 5, &synack)),
            ]),
        ),
        (
            "floating-ip",
            with(vec![
                (OP_IPV4, 1, 2, 0, ip(6, 60, 0, 8, 7, &syn)),
                (OP_IPV4, 1, 0, 0, ip(6, 64, 0, 2, 8, &synack)),
                (
                    OP_IPV4,
                    1,
                    0,
                    0,
                    ip(1, 64, 0, 1, 7, &echo(8, 3, b"hairpin")),
                ),
                (OP_FIP, 1, 0, 0, vec![1, 7]),
            ]),
        ),
        (
            "fragments",
            with(vec![
                (OP_IPV4, 1, 0, 0, frag_first),
                (OP_IPV4, 1, 0, 0, frag_last),
                (OP_POLL, 0xf1, 0, 0, vec![]),
            ]),
        ),
        (
            "superframe",
            with(vec![(
                OP_IPV4,
                1,
                0,
                0x57,
                ip(6, 64, 0x40, 1, 8, &superframe),
            )]),
        ),
        (
            "local-and-errors",
            with(vec![
                (OP_IPV4, 1, 0, 0, ip(1, 64, 0, 1, 0, &echo(8, 1, b"ping"))),
                (OP_IPV4, 1, 0, 0, ip(17, 1, 0, 1, 4, &udp(1, 33434, b""))),
                (OP_IPV4, 1, 0, 0, ip(17, 64, 0, 1, 0, &udp(1, 33434, b""))),
                (OP_IPV4, 1, 0, 0, ip(17, 64, 0, 1, 9, &udp(1, 2, b"queued"))),
                (OP_POLL, 20, 0, 0, vec![]),
                (OP_RAW, 1, 0, 0, raw),
            ]),
        ),
    ]
}

#[test]
fn fuzz_seeds_run_clean() {
    for (name, seed) in fuzz_seeds() {
        std::println!("seed {name}: {} bytes", seed.len());
        fuzz_check::run(&seed);
    }
}

#[test]
fn fuzz_body_survives_mutated_seeds() {
    seed_corpus::mutate(&fuzz_seeds(), 3000, fuzz_check::run);
}

#[path = "../../../fuzz/seed_corpus.rs"]
mod seed_corpus;

#[test]
fn committed_seed_corpus_is_current() {
    seed_corpus::check("router_datapath", "nanovnf-router", &fuzz_seeds());
}

/// The hot paths forward every one of a long run of frames (an established SNAT flow
/// and east-west), and print their host rate: for the figure, run
/// `cargo test -p nanovnf-router --release -- --nocapture throughput`.
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
    let (mut r, mut tx) = learned();
    let mut f = frame(
        A,
        &Ip::new([10, 0, 0, 7], REMOTE, 6),
        &tcp(40000, 80, SYN, b""),
    );
    r.handle(1, A, &mut f, &plain(), &mut tx);
    let cases = [
        (
            "east-west udp 1400",
            frame(
                A,
                &Ip::new([10, 0, 0, 7], [10, 0, 1, 9], 17),
                &udp(1, 2, &[0; 1372]),
            ),
        ),
        (
            "snat tcp 1400 (established)",
            frame(
                A,
                &Ip::new([10, 0, 0, 7], REMOTE, 6),
                &tcp(40000, 80, ACK, &[0; 1360]),
            ),
        ),
    ];
    let mut null = Null(0);
    for (name, base) in cases {
        let n = if cfg!(debug_assertions) {
            50_000
        } else {
            1_000_000u64
        };
        let t = std::time::Instant::now();
        let mut f = base.clone();
        let mut forwarded = 0u64;
        for _ in 0..n {
            f.copy_from_slice(&base);
            if matches!(
                r.handle(2, A, &mut f, &plain(), &mut null),
                Outcome::Forwarded { .. }
            ) {
                forwarded += 1;
            }
        }
        assert_eq!(forwarded, n);
        let s = t.elapsed().as_secs_f64();
        std::println!("{name}: {:.0} packets/s", n as f64 / s);
    }
}
