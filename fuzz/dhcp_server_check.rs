//! One fuzz input through one DHCP server engine, checking what must always hold. Shared
//! by the cargo-fuzz target (`fuzz_targets/dhcp_server.rs`) and the stable test in
//! `appliances/dhcp/src/tests.rs`, which both include this file with `#[path]` and name
//! the engine crate `dhcp` in the including module (`use nanovnf_dhcp as dhcp;`, or
//! `use crate as dhcp;` inside the crate). Needs `dhcproto`, the independent decoder.
//!
//! Input layout (every byte string is a valid input; what is missing reads as zero):
//!
//! ```text
//! header       4 bytes: capacity = 1 + h0 % 8, reservations = h1 % 9,
//!              MTU = 576 + 4 * h2, start time = 1000 + h3
//! reservations 2 bytes each: MAC = fa:16:3e:00:00:<b0>, address = 192.168.1.<b1>
//! records      until the end, each a 6-byte head and a body of `len` bytes (fewer if
//!              the input ends first):
//!              [op, dt, mac, ip, len_hi, len_lo] body
//!              op % 8: 0..=4  a UDP payload (`body`) from MAC fa:16:3e:00:00:<mac>,
//!                             source 192.168.1.<ip> (0.0.0.0 if ip = 0), port 67 if
//!                             op is odd (a relay), else 68
//!                      5      add or change the reservation of MAC <mac> to
//!                             192.168.1.<ip>, hostname from `body` (ASCII-mapped)
//!                      6      remove the reservation of MAC <mac>
//!                      7      replace the subnet config with variant <ip> (same subnet)
//!              dt: the clock moves dt seconds before the record (dt < 0xf0), or
//!                  (dt - 0xef) * 40,000 seconds (past leases, offers, declines)
//! ```

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::dhcp::wire::{self, MessageType, Packet};
use super::dhcp::{Counters, Reservation, ReservationError, RxMeta, Server, ServerConfig};

pub const OP_PACKET: u8 = 0;
pub const OP_RELAYED: u8 = 1;
pub const OP_RESERVE: u8 = 5;
pub const OP_REMOVE: u8 = 6;
pub const OP_CONFIG: u8 = 7;

/// The MAC a one-byte selector stands for.
pub fn mac(sel: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, sel]
}

/// The address a one-byte selector stands for.
pub fn ip(sel: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, sel)
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

/// Builds an input: a server of `capacity` (1..=8) with link MTU `576 + 4 * mtu_sel`,
/// `reservations` (at most 8) as (MAC, address) selectors, then records
/// `(op, dt, mac, ip, body)`.
pub fn encode(
    capacity: usize,
    mtu_sel: u8,
    reservations: &[(u8, u8)],
    records: &[(u8, u8, u8, u8, &[u8])],
) -> Vec<u8> {
    assert!((1..=8).contains(&capacity) && reservations.len() <= 8);
    let mut out = alloc::vec![(capacity - 1) as u8, reservations.len() as u8, mtu_sel, 0];
    for &(m, i) in reservations {
        out.extend_from_slice(&[m, i]);
    }
    for &(op, dt, m, i, body) in records {
        let len = body.len().min(usize::from(u16::MAX)) as u16;
        out.extend_from_slice(&[op, dt, m, i]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(len)]);
    }
    out
}

/// A reader that yields zeros once the input is exhausted.
#[path = "reader.rs"]
mod reader;
use reader::Reader;

/// Config variant `v`, all serving 192.168.1.0/24 from [`SERVER_IP`].
pub fn config(v: u8, mtu: u16) -> ServerConfig {
    let mut c = ServerConfig::new(SERVER_IP, (Ipv4Addr::new(192, 168, 1, 0), 24));
    c.mtu = mtu;
    c.gateway = (v & 1 == 0).then_some(Ipv4Addr::new(192, 168, 1, 1));
    c.metadata_ip = (v & 2 == 0).then_some(Ipv4Addr::new(192, 168, 1, 3));
    c.lease_secs = match v % 5 {
        0 => 86400,
        1 => 1,
        2 => u32::MAX,
        3 => 120,
        _ => 600,
    };
    // Enough host routes to force option overload (or drop options) at 576 bytes.
    let routes = usize::from(v >> 3) * 3;
    c.host_routes = (0..routes)
        .map(|i| {
            let i = i as u8;
            (
                Ipv4Addr::new(10, i, 0, 0),
                8 + i % 25,
                Ipv4Addr::new(192, 168, 1, 254),
            )
        })
        .collect();
    if v & 4 != 0 {
        c.other_subnets = alloc::vec![(Ipv4Addr::new(192, 168, 2, 0), 24)];
        c.dns_servers = alloc::vec![Ipv4Addr::UNSPECIFIED];
        c.domain = String::new();
    } else if v & 0x40 != 0 {
        c.dns_servers = (0..70).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        c.domain = "d".repeat(300);
    }
    c
}

/// Hostname from arbitrary bytes: letters, digits and dashes, as Neutron's are.
fn hostname(body: &[u8]) -> String {
    const CHARS: &[u8; 37] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    body.iter()
        .map(|&b| char::from(CHARS[usize::from(b) % CHARS.len()]))
        .collect()
}

/// Runs `data` through a fresh server, panicking if an invariant breaks; returns the
/// server's counters at the end.
pub fn run(data: &[u8]) -> Counters {
    let mut r = Reader { data };
    let capacity = 1 + usize::from(r.byte() % 8);
    let initial = r.byte() % 9;
    let mtu = 576 + 4 * u16::from(r.byte());
    let mut now = 1000 + u64::from(r.byte());
    let mut server = Server::with_capacity(config(0, mtu), capacity);
    // What the reservation table must hold: MAC → address.
    let mut model: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut handled = 0u64;

    let reserve = |server: &mut Server,
                   model: &mut BTreeMap<[u8; 6], Ipv4Addr>,
                   m: u8,
                   i: u8,
                   name: String| {
        let (mac, ip) = (mac(m), ip(i));
        let holder = model
            .iter()
            .find(|&(&k, &v)| v == ip && k != mac)
            .map(|(&k, _)| k);
        let expected = if i == 0 || i == 255 {
            Err(ReservationError::OutsideSubnet)
        } else if let Some(by) = holder {
            Err(ReservationError::AddressInUse { by })
        } else if !model.contains_key(&mac) && model.len() >= capacity {
            Err(ReservationError::TableFull)
        } else {
            Ok(())
        };
        let got = server.add_or_update(Reservation {
            mac,
            ip,
            hostname: name,
        });
        assert_eq!(got, expected, "add_or_update({mac:02x?}, {ip})");
        if got.is_ok() {
            model.insert(mac, ip);
        }
    };
    for _ in 0..initial {
        let (m, i) = (r.byte(), r.byte());
        reserve(&mut server, &mut model, m, i, String::from("vm"));
    }

    while !r.data.is_empty() {
        let (op, dt, m, i) = (r.byte(), r.byte(), r.byte(), r.byte());
        let len = usize::from(u16::from_be_bytes([r.byte(), r.byte()]));
        let body = r.bytes(len);
        now = now.saturating_add(if dt < 0xf0 {
            u64::from(dt)
        } else {
            u64::from(dt - 0xef) * 40_000
        });
        match op % 8 {
            OP_RESERVE => reserve(&mut server, &mut model, m, i, hostname(body)),
            OP_REMOVE => {
                let removed = server.remove(mac(m)).map(|res| res.ip);
                assert_eq!(removed, model.remove(&mac(m)));
            }
            OP_CONFIG => server.set_config(config(i, mtu)),
            _ => {
                let meta = RxMeta {
                    src_mac: mac(m),
                    src_ip: if i == 0 { Ipv4Addr::UNSPECIFIED } else { ip(i) },
                    src_port: if op & 1 == 1 { 67 } else { 68 },
                };
                let reply = server.handle(body, meta, now);
                handled += 1;
                if let Some(reply) = reply {
                    check_reply(body, &reply, &model, server.config().mtu);
                }
            }
        }
        assert!(
            server.len() <= capacity,
            "{} leases, capacity {capacity}",
            server.len()
        );
        assert_eq!(server.len(), model.len());
        // Only reserved MACs ever hold a lease.
        if !model.contains_key(&mac(m)) {
            assert_eq!(server.lease(mac(m), now), None);
        }
        let c = server.counters();
        let accounted =
            c.offers + c.acks + c.naks + c.informs + c.releases + c.declines + c.total_drops();
        assert_eq!(
            accounted, handled,
            "every message is answered or counted: {c:?}"
        );
    }
    for sel in 0..=255 {
        if !model.contains_key(&mac(sel)) {
            assert_eq!(server.lease(mac(sel), now), None);
        }
    }
    server.counters().clone()
}

/// What any reply to `request` must look like.
fn check_reply(
    request: &[u8],
    reply: &super::dhcp::Reply,
    model: &BTreeMap<[u8; 6], Ipv4Addr>,
    mtu: u16,
) {
    let payload = &reply.payload;
    let link_max = usize::from(mtu).max(wire::MIN_MESSAGE_SIZE) - wire::IP_UDP_HEADER_LEN;
    assert!(
        payload.len() <= link_max,
        "{} bytes > {link_max}",
        payload.len()
    );
    assert!(payload.len() >= super::dhcp::server::MIN_REPLY_LEN);
    let req = Packet::new_checked(request).expect("only well-formed requests are answered");
    let p = Packet::new_checked(&payload[..]).expect("replies parse");
    assert_eq!(p.op(), wire::OP_BOOTREPLY);
    assert_eq!(p.xid(), req.xid());
    assert_eq!(p.chaddr(), req.chaddr());
    let mac = req.client_mac();
    let reserved = *model.get(&mac).expect("only reserved clients are answered");
    let opts: Vec<_> = p
        .options()
        .map(|o| o.expect("our own options iterate cleanly"))
        .collect();
    assert_eq!(
        opts.first().map(|o| (o.code, o.data)),
        Some((53, &[reply.kind as u8][..]))
    );
    match reply.kind {
        MessageType::Offer => assert_eq!(p.yiaddr(), reserved),
        MessageType::Ack => assert!(p.yiaddr() == reserved || p.yiaddr().is_unspecified()),
        MessageType::Nak => assert!(p.yiaddr().is_unspecified()),
        k => panic!("a server never sends {k:?}"),
    }
    // The independent decoder agrees on the message.
    use dhcproto::Decodable;
    let m = dhcproto::v4::Message::from_bytes(payload).expect("dhcproto decodes every reply");
    assert_eq!(m.opts().msg_type().map(u8::from), Some(reply.kind as u8));
    assert_eq!(m.xid(), req.xid());
}
