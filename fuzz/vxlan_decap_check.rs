//! One fuzz input through one VXLAN gateway, checking what must always hold. Shared by the
//! cargo-fuzz target (`fuzz_targets/vxlan_decap.rs`) and the stable test in
//! `appliances/vxlan/src/tests.rs`, which both include this file with `#[path]` and name
//! the engine crate `vxlan` in the including module (`use nanovnf_vxlan as vxlan;`, or
//! `use crate as vxlan;` inside the crate).
//!
//! Input layout (every byte string is a valid input; what is missing reads as zero):
//!
//! ```text
//! header   3 bytes: fdb capacity = max(1 + h0 % 16, statics), statics = h1 % 4 (MACs
//!          fa:16:3e:00:00:<0x80 + i> behind remote i), ageing = 1 + h2 % 4 seconds,
//!          h2 bit 4: ARP responder, bit 5: DF, bit 6: tenant MTU 1450 (else 1500)
//! records  until the end, each a 5-byte head and a body of `len` bytes (fewer if the
//!          input ends first): [op, dt, sel, len_hi, len_lo] body
//!          op % 8: 0, 1  a VXLAN datagram on the underlay from VTEP <sel % 8> carrying
//!                        `body` as its inner frame (op 1: with a UDP checksum; sel bit
//!                        7: another VNI)
//!                  2     `body` as a raw underlay frame
//!                  3     as 0, then byte <body[0]> of the outer headers flipped
//!                  4     `body` as a tenant frame
//!                  5     `body` as a tenant frame with offload: sel % 4 = 0 TCP/IPv4
//!                        GSO (gso_size = 16 * body[0]), 1 partial checksum at
//!                        (body[0], body[1]), 2 UDP GSO, 3 data-valid
//!                  6     an ARP reply on the underlay from VTEP <sel % 8>
//!                  7     control: sel % 3 = 0 static upsert (MAC <body[0]>, VTEP
//!                        <body[1] % 8>, IP 10.0.0.<body[2]>), 1 static remove (MAC
//!                        <body[0]>), 2 remote list = the VTEPs whose bit is set in body[0]
//!          dt: the clock moves dt * 50 ms before the record (dt < 0xf0), or
//!              (dt - 0xef) * 30 s
//! ```

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::vxlan::frame::offload::{F_DATA_VALID, F_NEEDS_CSUM};
use super::vxlan::frame::{Fill, GsoKind, Offload, Transmit, checksum};
use super::vxlan::schema::control::Op;
use super::vxlan::schema::vxlan::{FdbEntry, VxlanRole};
use super::vxlan::schema::{Ipv4Cidr, NicConfig};
use super::vxlan::wire::{ARP_REPLY, Arp, OUTER_LEN, Outer};
use super::vxlan::{DropReason, Gateway, Outcome, TENANT, UNDERLAY};

pub const OP_VXLAN: u8 = 0;
pub const OP_VXLAN_CSUM: u8 = 1;
pub const OP_RAW_UNDERLAY: u8 = 2;
pub const OP_CORRUPT: u8 = 3;
pub const OP_TENANT: u8 = 4;
pub const OP_TENANT_OFFLOAD: u8 = 5;
pub const OP_ARP: u8 = 6;
pub const OP_CONTROL: u8 = 7;

pub const VNI: u32 = 0x00_1234;
pub const PORT: u16 = 4789;
pub const LOCAL_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const UNDERLAY_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x02];

/// The VTEP a selector stands for: 192.0.2.10 + sel % 8.
pub fn vtep(sel: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + sel % 8)
}

/// The MAC a VTEP's underlay NIC has.
pub fn vtep_mac(sel: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 1, sel % 8]
}

pub fn mac(sel: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, sel]
}

pub fn nics(tenant_mtu: u16) -> Vec<NicConfig> {
    vec![
        NicConfig {
            mac: [0x52, 0x54, 0, 0, 0, 0x01],
            addresses: vec![],
            mtu: tenant_mtu,
        },
        NicConfig {
            mac: UNDERLAY_MAC,
            addresses: vec![Ipv4Cidr::new(LOCAL_VTEP, 24)],
            mtu: 1500,
        },
    ]
}

/// The outer frame VTEP `sel` would send us for `inner` (UDP checksum filled in when
/// `csum`).
pub fn vxlan_frame(sel: u8, vni: u32, inner: &[u8], csum: bool) -> Vec<u8> {
    let outer = Outer {
        dst_mac: UNDERLAY_MAC,
        src_mac: vtep_mac(sel),
        src_ip: vtep(sel),
        dst_ip: LOCAL_VTEP,
        ttl: 64,
        df: true,
        ip_id: 7,
        src_port: 50000,
        dst_port: PORT,
        vni,
    };
    let mut f = outer.emit(inner.len()).to_vec();
    f.extend_from_slice(inner);
    if csum {
        let udp_len = f.len() - 34;
        let pseudo =
            checksum::pseudo_v4(vtep(sel).octets(), LOCAL_VTEP.octets(), 17, udp_len as u16);
        let mut c = checksum::finish(checksum::sum(&f[34..], pseudo));
        if c == 0 {
            c = 0xffff;
        }
        f[40..42].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// VTEP `sel`'s ARP reply to local_vtep.
pub fn arp_reply(sel: u8) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    Arp {
        op: ARP_REPLY,
        sha: vtep_mac(sel),
        spa: vtep(sel),
        tha: UNDERLAY_MAC,
        tpa: LOCAL_VTEP,
    }
    .emit_frame(UNDERLAY_MAC, &mut f);
    f
}

/// Builds an input from a header and records `(op, dt, sel, body)`.
pub fn encode(header: [u8; 3], records: &[(u8, u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = header.to_vec();
    for &(op, dt, sel, body) in records {
        let len = body.len().min(usize::from(u16::MAX)) as u16;
        out.extend_from_slice(&[op, dt, sel]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(len)]);
    }
    out
}

#[path = "reader.rs"]
mod reader;
use reader::Reader;

/// Every frame the gateway sent, by NIC.
#[derive(Default)]
pub struct Sink {
    pub frames: Vec<(usize, Offload, Vec<u8>)>,
}

impl Transmit for Sink {
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
        let mut b = vec![0u8; len];
        fill(&mut b);
        self.frames.push((nic, *offload, b));
        true
    }
}

/// Runs one input; returns how many records were handled.
pub fn run(data: &[u8]) -> usize {
    let mut r = Reader { data };
    let capacity = 1 + u32::from(r.byte() % 16);
    let statics = r.byte() % 4;
    let capacity = capacity.max(u32::from(statics));
    let h2 = r.byte();
    let tenant_mtu = if h2 & 0x40 != 0 { 1450 } else { 1500 };
    let mut model: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut static_entries = Vec::new();
    for i in 0..statics {
        let e = FdbEntry {
            mac: mac(0x80 + i),
            vtep: vtep(i),
            ip: Some(Ipv4Addr::new(10, 0, 0, 0x80 + i)),
        };
        model.insert(e.mac, e.vtep);
        static_entries.push(e);
    }
    let role = VxlanRole {
        vni: VNI,
        udp_port: PORT,
        remote_vteps: (0..4).map(vtep).collect(),
        underlay_gateway: None,
        static_entries,
        arp_responder: h2 & 0x10 != 0,
        ageing_secs: 1 + u32::from(h2 % 4),
        fdb_capacity: capacity,
        ttl: 64,
        df: h2 & 0x20 != 0,
    };
    let mut gw = match Gateway::new(&nics(tenant_mtu), &role, 0x5eed) {
        Ok(g) => g,
        Err(e) => panic!("a valid configuration was refused: {e}"),
    };
    let mut now = 1_000u64;
    let mut sink = Sink::default();
    gw.start(now, &mut sink);
    let mut handled = 0;
    while !r.data.is_empty() {
        let (op, dt, sel) = (r.byte() % 8, r.byte(), r.byte());
        let len = usize::from(u16::from_be_bytes([r.byte(), r.byte()]));
        let body = r.bytes(len);
        now += if dt < 0xf0 {
            u64::from(dt) * 50
        } else {
            u64::from(dt - 0xef) * 30_000
        };
        sink.frames.clear();
        let mut expect_inner: Option<&[u8]> = None;
        match op {
            OP_VXLAN | OP_VXLAN_CSUM | OP_CORRUPT => {
                let vni = if sel & 0x80 != 0 { VNI + 1 } else { VNI };
                let mut f = vxlan_frame(sel, vni, body, op == OP_VXLAN_CSUM);
                if op == OP_CORRUPT {
                    let at = usize::from(body.first().copied().unwrap_or(0)) % OUTER_LEN;
                    f[at] ^= body.get(1).copied().unwrap_or(0xff) | 1;
                } else if vni == VNI {
                    expect_inner = Some(body);
                }
                let out = gw.handle(now, UNDERLAY, &f, &Offload::default(), &mut sink);
                if out == Outcome::Decapsulated {
                    // Decapsulation sends exactly the inner frame to the tenant, nothing else.
                    assert_eq!(sink.frames.len(), 1);
                    assert_eq!(sink.frames[0].0, TENANT);
                    if let Some(inner) = expect_inner {
                        assert_eq!(sink.frames[0].2, inner);
                    }
                }
            }
            OP_RAW_UNDERLAY => {
                gw.handle(now, UNDERLAY, body, &Offload::default(), &mut sink);
            }
            OP_TENANT => {
                gw.handle(now, TENANT, body, &Offload::default(), &mut sink);
            }
            OP_TENANT_OFFLOAD => {
                let b0 = u16::from(body.first().copied().unwrap_or(0));
                let b1 = u16::from(body.get(1).copied().unwrap_or(0));
                let offload = match sel % 4 {
                    0 => Offload {
                        flags: F_NEEDS_CSUM,
                        gso: GsoKind::Tcp4,
                        gso_size: 16 * b0,
                        hdr_len: 54,
                        csum_start: 34,
                        csum_offset: 16,
                        ecn: false,
                    },
                    1 => Offload {
                        flags: F_NEEDS_CSUM,
                        csum_start: b0,
                        csum_offset: b1,
                        ..Offload::default()
                    },
                    2 => Offload {
                        gso: GsoKind::Udp,
                        gso_size: 1400,
                        ..Offload::default()
                    },
                    _ => Offload {
                        flags: F_DATA_VALID,
                        ..Offload::default()
                    },
                };
                gw.handle(now, TENANT, body, &offload, &mut sink);
            }
            OP_ARP => {
                let out = gw.handle(
                    now,
                    UNDERLAY,
                    &arp_reply(sel),
                    &Offload::default(),
                    &mut sink,
                );
                // Used when the VTEP is a next hop of ours, else someone else's business.
                assert!(matches!(
                    out,
                    Outcome::Local | Outcome::Dropped(DropReason::NotForUs)
                ));
            }
            _ => {
                let b = |i: usize| body.get(i).copied().unwrap_or(0);
                let op = match sel % 3 {
                    0 => Op::VxlanStaticUpsert(FdbEntry {
                        mac: mac(b(0)),
                        vtep: vtep(b(1)),
                        ip: Some(Ipv4Addr::new(10, 0, 0, b(2))),
                    }),
                    1 => Op::VxlanStaticRemove { mac: mac(b(0)) },
                    _ => {
                        Op::VxlanRemotes((0..8).filter(|i| b(0) >> i & 1 != 0).map(vtep).collect())
                    }
                };
                let full = model.len() >= capacity as usize;
                match (&op, gw.apply(&op, now, &mut sink)) {
                    (Op::VxlanStaticUpsert(e), Ok(())) => {
                        model.insert(e.mac, e.vtep);
                    }
                    (Op::VxlanStaticUpsert(e), Err(_)) => {
                        assert!(full && !model.contains_key(&e.mac), "upsert refused");
                    }
                    (Op::VxlanStaticRemove { mac }, res) => {
                        assert!(res.is_ok());
                        model.remove(mac);
                    }
                    (_, res) => assert!(res.is_ok(), "{res:?}"),
                }
            }
        }
        if handled % 4 == 0 || gw.poll_at_ms().is_some_and(|t| t <= now) {
            gw.poll(now, &mut sink);
        }
        // The table stays within bounds, consistent, and every static entry is intact.
        assert!(gw.fdb_len() <= capacity as usize);
        assert!(gw.consistent());
        for (m, v) in &model {
            let f = gw.forwarding(m);
            assert!(
                f.is_some_and(|f| f.is_static && f.vtep == *v),
                "static {m:02x?} → {v}: {f:?}"
            );
        }
        // Nothing leaves larger than its NIC allows, and outer headers are well-formed.
        for (nic, offload, f) in &sink.frames {
            assert_eq!(*offload, Offload::default());
            match *nic {
                TENANT => assert!(f.len() <= usize::from(tenant_mtu) + 18),
                UNDERLAY => {
                    assert!(f.len() <= 1514);
                    if f.len() >= 34 && f[12..14] == [8, 0] {
                        assert!(checksum::ipv4_header_ok(&f[14..34]));
                        assert_eq!(
                            usize::from(u16::from_be_bytes([f[16], f[17]])),
                            f.len() - 14
                        );
                    }
                }
                n => panic!("sent on NIC {n}"),
            }
        }
        handled += 1;
    }
    handled
}
