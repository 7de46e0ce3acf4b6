//! One fuzz input through one router engine, checking what must always hold. Shared by
//! the cargo-fuzz target (`fuzz_targets/router_datapath.rs`) and the stable test in
//! `appliances/router/src/tests.rs`, which both include this file with `#[path]` and name
//! the engine crate `router` in the including module (`use nanovnf_router as router;`, or
//! `use crate as router;` inside the crate).
//!
//! The router: NIC 0 tenant 10.0.0.1/24, NIC 1 tenant 10.0.1.1/24 (route 192.168.50.0/24
//! via 10.0.1.254), NIC 2 external 203.0.113.2/24 (gateway .1), floating IP
//! 203.0.113.10 → 10.0.0.5. Input layout (every byte string is valid; missing bytes read
//! as zero):
//!
//! ```text
//! header   4 bytes: conntrack capacity = 1 + h0 % 16, NIC 1 MTU = 576 + 4 * h1,
//!          SNAT = h2 & 1, seed = h3
//! records  until the end: [op, dt, nic, offload, len_hi, len_lo] body (len bytes or
//!          fewer if the input ends first)
//!          op % 5: 0  body is a raw frame, received on NIC nic % 4 (3 does not exist)
//!                  1  an IPv4 frame built from body: [proto, ttl, flags, frag_lo, src,
//!                     dst, payload...] (addresses from ADDRS by index % 16; valid IP
//!                     and L4 checksums), to the router's MAC on NIC nic % 3
//!                  2  an ARP packet: [op, sender, target] (ADDRS indices) on nic % 3
//!                  3  poll
//!                  4  floating IP: body [0] even → upsert ADDRS[b1] → ADDRS[b2],
//!                     odd → remove ADDRS[b1]
//!          offload: bit 0 NEEDS_CSUM (start 34, offset 16 if bit 1 else 6), bit 2 GSO
//!                   TCPv4, bit 3 GSO UDP; gso_size = 64 * (offload >> 4)
//!          dt: the clock moves 100 ms * dt (dt < 0xf0), else (dt - 0xef) minutes
//! ```

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::router::{Outcome, Router};
use nanovnf_frame::offload::F_NEEDS_CSUM;
use nanovnf_frame::{Fill, GsoKind, Offload, Transmit};
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::Route;
use nanovnf_schema::router::{FloatingIp, RouterRole};
use nanovnf_schema::{Ipv4Cidr, NicConfig};

pub const OP_RAW: u8 = 0;
pub const OP_IPV4: u8 = 1;
pub const OP_ARP: u8 = 2;
pub const OP_POLL: u8 = 3;
pub const OP_FIP: u8 = 4;

pub const ADDRS: [[u8; 4]; 16] = [
    [10, 0, 0, 1],
    [10, 0, 0, 7],
    [10, 0, 0, 5],
    [10, 0, 1, 1],
    [10, 0, 1, 9],
    [203, 0, 113, 2],
    [203, 0, 113, 1],
    [203, 0, 113, 10],
    [198, 51, 100, 7],
    [192, 168, 50, 3],
    [8, 8, 8, 8],
    [255, 255, 255, 255],
    [10, 0, 0, 255],
    [0, 0, 0, 0],
    [10, 0, 1, 254],
    [203, 0, 113, 11],
];

pub fn router_mac(nic: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, nic as u8 + 1]
}

pub fn host_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x52, 0x54, ip[0], ip[1], ip[2], ip[3]]
}

/// Builds an input from a header and records `(op, dt, nic, offload, body)`.
pub fn encode(header: [u8; 4], records: &[(u8, u8, u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = header.to_vec();
    for &(op, dt, nic, off, body) in records {
        let len = body.len().min(usize::from(u16::MAX)) as u16;
        out.extend_from_slice(&[op, dt, nic, off]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(len)]);
    }
    out
}

#[path = "reader.rs"]
mod reader;
use reader::Reader;

fn sum(data: &[u8], mut s: u32) -> u32 {
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

fn csum(data: &[u8], initial: u32) -> u16 {
    let mut s = sum(data, initial);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 frame to router NIC `nic` with valid checksums (L4 too when it fits).
pub fn ipv4_frame(nic: usize, body: &[u8]) -> Vec<u8> {
    let get = |i: usize| body.get(i).copied().unwrap_or(0);
    let (proto, ttl, flags, frag_lo) = (get(0), get(1), get(2), get(3));
    let src = ADDRS[usize::from(get(4) % 16)];
    let dst = ADDRS[usize::from(get(5) % 16)];
    let payload = body.get(6..).unwrap_or(&[]);
    let payload = &payload[..payload.len().min(65_535 - 20)];
    let mut f = vec![0u8; 34 + payload.len()];
    f[..6].copy_from_slice(&router_mac(nic));
    f[6..12].copy_from_slice(&host_mac(src));
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&[0x12, 0x34]);
    f[20] = flags;
    f[21] = frag_lo;
    f[22] = ttl;
    f[23] = proto;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..].copy_from_slice(payload);
    let at = match proto {
        1 => Some(2),
        6 => Some(16),
        17 => Some(6),
        _ => None,
    };
    if let Some(at) = at
        && payload.len() >= at + 2
        && flags & 0x3f == 0
        && frag_lo == 0
    {
        f[34 + at..36 + at].fill(0);
        let pseudo = if proto == 1 {
            0
        } else {
            sum(&f[26..34], u32::from(proto) + payload.len() as u32)
        };
        let c = csum(&f[34..], pseudo);
        f[34 + at..36 + at].copy_from_slice(&c.to_be_bytes());
    }
    let c = csum(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

pub fn arp_frame(body: &[u8]) -> Vec<u8> {
    let get = |i: usize| body.get(i).copied().unwrap_or(0);
    let sender = ADDRS[usize::from(get(1) % 16)];
    let target = ADDRS[usize::from(get(2) % 16)];
    let mut f = vec![0u8; 42];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&host_mac(sender));
    f[12..14].copy_from_slice(&[8, 6]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1 + (get(0) & 1)]);
    f[22..28].copy_from_slice(&host_mac(sender));
    f[28..32].copy_from_slice(&sender);
    f[38..42].copy_from_slice(&target);
    f
}

pub fn offload(bits: u8) -> Offload {
    Offload {
        flags: if bits & 1 != 0 { F_NEEDS_CSUM } else { 0 },
        gso: if bits & 4 != 0 {
            GsoKind::Tcp4
        } else if bits & 8 != 0 {
            GsoKind::Udp
        } else {
            GsoKind::None
        },
        ecn: false,
        hdr_len: 54,
        gso_size: 64 * u16::from(bits >> 4),
        csum_start: 34,
        csum_offset: if bits & 2 != 0 { 16 } else { 6 },
    }
}

struct Sink {
    mtus: [usize; 3],
    frames: u64,
}

impl Transmit for Sink {
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
        assert!(nic < 3, "sent on NIC {nic}");
        assert!(len >= 14, "a {len}-byte frame");
        let mut b = vec![0u8; len];
        fill(&mut b);
        if b[12..14] == [8, 0] {
            assert!(len >= 34, "a {len}-byte IPv4 frame");
            let ihl = usize::from(b[14] & 0x0f) * 4;
            assert!(ihl >= 20 && len >= 14 + ihl);
            assert_eq!(csum(&b[14..14 + ihl], 0), 0, "an IPv4 header checksum");
            let total = usize::from(u16::from_be_bytes([b[16], b[17]]));
            assert_eq!(14 + total, len, "IP length and frame length");
            if !offload.is_gso() {
                assert!(
                    total <= self.mtus[nic],
                    "{total} bytes over MTU on NIC {nic}"
                );
            }
        }
        self.frames += 1;
        true
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader { data };
    let (h0, h1, h2, h3) = (r.byte(), r.byte(), r.byte(), r.byte());
    let mtus = [1500usize, 576 + 4 * usize::from(h1), 1500];
    let nics: Vec<NicConfig> = [[10, 0, 0, 1], [10, 0, 1, 1], [203, 0, 113, 2]]
        .iter()
        .enumerate()
        .map(|(i, a)| NicConfig {
            mac: router_mac(i),
            addresses: vec![Ipv4Cidr::new(Ipv4Addr::from(*a), 24)],
            mtu: mtus[i] as u16,
        })
        .collect();
    let role = RouterRole {
        external_nic: Some(2),
        default_gateway: Some(Ipv4Addr::new(203, 0, 113, 1)),
        enable_snat: h2 & 1 != 0,
        routes: vec![Route {
            destination: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 50, 0), 24),
            nexthop: Ipv4Addr::new(10, 0, 1, 254),
        }],
        floating_ips: vec![FloatingIp {
            floating: Ipv4Addr::new(203, 0, 113, 10),
            fixed: Ipv4Addr::new(10, 0, 0, 5),
        }],
        conntrack_capacity: 1 + u32::from(h0 % 16),
    };
    let Ok(mut router) = Router::new(&nics, &role, u64::from(h3)) else {
        panic!("the fuzz configuration is valid");
    };
    let mut tx = Sink { mtus, frames: 0 };
    let mut now = 1_000u64;
    router.start(now, &mut tx);
    while !r.data.is_empty() {
        let (op, dt, nic, off) = (r.byte(), r.byte(), r.byte(), r.byte());
        let len = usize::from(u16::from_be_bytes([r.byte(), r.byte()]));
        let body = r.bytes(len);
        now += if dt < 0xf0 {
            100 * u64::from(dt)
        } else {
            60_000 * u64::from(dt - 0xef)
        };
        match op % 5 {
            OP_RAW => {
                let mut f = body.to_vec();
                let out = router.handle(now, usize::from(nic % 4), &mut f, &offload(off), &mut tx);
                if let Outcome::Forwarded { nic } = out {
                    assert!(nic < 3);
                }
            }
            OP_IPV4 => {
                let n = usize::from(nic % 3);
                let mut f = ipv4_frame(n, body);
                router.handle(now, n, &mut f, &offload(off), &mut tx);
            }
            OP_ARP => {
                let mut f = arp_frame(body);
                router.handle(now, usize::from(nic % 3), &mut f, &offload(off), &mut tx);
            }
            OP_POLL => router.poll(now, &mut tx),
            _ => {
                let get = |i: usize| body.get(i).copied().unwrap_or(0);
                let a = |i: usize| Ipv4Addr::from(ADDRS[usize::from(get(i) % 16)]);
                let op = if get(0) & 1 == 0 {
                    Op::FloatingIpUpsert(FloatingIp {
                        floating: a(1),
                        fixed: a(2),
                    })
                } else {
                    Op::FloatingIpRemove { floating: a(1) }
                };
                let _ = router.apply(&op, now, &mut tx);
            }
        }
        if let Err(e) = router.check_bounds() {
            panic!("bounds: {e}");
        }
        if let Some(at) = router.poll_at_ms() {
            assert!(at < now + 31 * 60_000, "a deadline {at} far past {now}");
        }
    }
    let _ = router.counters();
}
