//! One fuzz input through one DNS server engine, checking what must always hold. Shared
//! by the cargo-fuzz target (`fuzz_targets/dns_query.rs`) and the stable test in
//! `appliances/dns/src/tests.rs`, which both include this file with `#[path]` and name the
//! engine crate `dns` in the including module (`use nanovnf_dns as dns;`, or `use crate as
//! dns;` inside the crate). Needs `hickory-proto` (std), the independent decoder every
//! locally built answer must satisfy.
//!
//! Input layout (every byte string is a valid input; what is missing reads as zero):
//!
//! ```text
//! header   2 bytes: upstreams = h0 % 3 (192.0.2.1, .2), table capacity = 1 + h1 % 8,
//!          max UDP payload = 512 + 4 * h1 (h1 >> 3 selects the reservations below)
//! records  until the end, each a 5-byte head and a body of `len` bytes (fewer if the
//!          input ends first): [op, dt, sel, len_hi, len_lo] body
//!          op % 6: 0  a UDP query (`body`) from client <sel>
//!                  1  a TCP query (`body`) on connection <sel>
//!                  2  `body` as an upstream message from 192.0.2.<1 + sel % 2>
//!                  3  an upstream answer built from the last forwarded query: its
//!                     question as sent (sel bit 0: type changed, bit 1: name
//!                     uppercased), `body` appended as records
//!                  4  reserve MAC <sel> at 192.168.1.<body[0]>, hostname from body[1..]
//!                  5  remove MAC <sel>
//!          dt: the clock moves dt * 20 ms before the record
//! ```

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::dns::server::{Event, Outcome, Server, ServerConfig, Transport};
use super::dns::wire::{self, CLASSIC_UDP_LIMIT, HEADER_LEN};
use super::dns::zone::{Zone, ZoneSubnet};
use super::dns::{Counters, DropReason};

pub const OP_UDP: u8 = 0;
pub const OP_TCP: u8 = 1;
pub const OP_UPSTREAM: u8 = 2;
pub const OP_ANSWER: u8 = 3;
pub const OP_RESERVE: u8 = 4;
pub const OP_REMOVE: u8 = 5;

pub const UPSTREAMS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];

/// The MAC a one-byte selector stands for.
pub fn mac(sel: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, sel]
}

/// Builds an input from a header and records `(op, dt, sel, body)`.
pub fn encode(h0: u8, h1: u8, records: &[(u8, u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = alloc::vec![h0, h1];
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

/// Hostname from arbitrary bytes: letters, digits and dashes kept, the rest mapped onto
/// them (and an occasional dot).
fn hostname(body: &[u8]) -> String {
    const CHARS: &[u8; 38] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";
    body.iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => char::from(b),
            _ => char::from(CHARS[usize::from(b) % CHARS.len()]),
        })
        .collect()
}

/// The zone every run starts from: two subnets, two domains.
pub fn zone() -> Zone {
    let mut z = Zone::new(alloc::vec![
        ZoneSubnet {
            network: Ipv4Addr::new(192, 168, 1, 0),
            prefix_len: 24,
            domain: "nanovnf.test".into(),
        },
        ZoneSubnet {
            network: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
            domain: "other.example".into(),
        },
    ]);
    z.upsert(mac(1), Ipv4Addr::new(192, 168, 1, 11), "vm1")
        .unwrap();
    z.upsert(mac(2), Ipv4Addr::new(10, 1, 2, 3), "").unwrap();
    z
}

/// What was forwarded and not yet answered: (client, client's ID) → (transport, limit).
type Forwarded = BTreeMap<(u32, u16), (Transport, usize)>;

/// The answer size limit of a UDP query (what the engine must respect).
fn udp_limit(query: &[u8], max_udp: u16) -> usize {
    match wire::parse_query(query).ok().and_then(|q| q.edns) {
        Some(e) => usize::from(e.udp_size).clamp(
            CLASSIC_UDP_LIMIT,
            usize::from(max_udp).max(CLASSIC_UDP_LIMIT),
        ),
        None => CLASSIC_UDP_LIMIT,
    }
}

/// Checks an answer the engine built itself for `query`.
fn check_local(query: &[u8], reply: &[u8], limit: usize) {
    assert!(reply.len() >= HEADER_LEN, "short answer {reply:02x?}");
    assert!(
        reply.len() <= limit,
        "{} bytes over the limit {limit}",
        reply.len()
    );
    assert_eq!(reply[..2], query[..2], "the answer's ID");
    assert!(reply[2] & 0x80 != 0, "QR set");
    let decoded = hickory_proto::op::Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("hickory refuses our answer {reply:02x?}: {e}"));
    if let Ok(q) = wire::parse_query(query) {
        // A readable question is echoed byte for byte (case included) when answered.
        if decoded.queries.len() == 1 {
            assert_eq!(
                &reply[HEADER_LEN..HEADER_LEN + q.question.len()],
                q.question
            );
        }
    }
}

/// Runs `data` through a fresh engine, panicking if an invariant breaks; returns its
/// counters at the end.
pub fn run(data: &[u8]) -> Counters {
    let mut r = Reader { data };
    let h0 = r.byte();
    let h1 = r.byte();
    let config = ServerConfig {
        upstreams: UPSTREAMS[..usize::from(h0 % 3)].to_vec(),
        max_udp: 512 + 4 * u16::from(h1),
        max_pending: 1 + usize::from(h1 % 8),
    };
    let max_udp = config.max_udp;
    let max_pending = config.max_pending;
    let mut server: Server<u32> = Server::new(zone(), config, 0x5eed);
    let mut now = 1_000u64;
    let mut forwarded: Forwarded = BTreeMap::new();
    let mut last_forward: Option<(Ipv4Addr, Vec<u8>)> = None;
    let mut events = Vec::new();

    while !r.data.is_empty() {
        let (op, dt, sel) = (r.byte(), r.byte(), r.byte());
        let len = usize::from(u16::from_be_bytes([r.byte(), r.byte()]));
        let body = r.bytes(len);
        now += u64::from(dt) * 20;
        match op % 6 {
            OP_UDP | OP_TCP => {
                let (client, transport, limit) = if op % 6 == OP_UDP {
                    (u32::from(sel), Transport::Udp, udp_limit(body, max_udp))
                } else {
                    (1000 + u32::from(sel), Transport::Tcp, 65535)
                };
                match server.query(body, client, transport, now) {
                    Outcome::Reply(reply) => check_local(body, &reply, limit),
                    Outcome::Forward { upstream, query } => {
                        assert!(UPSTREAMS.contains(&upstream));
                        assert_eq!(query.len(), body.len(), "forwarded as asked");
                        assert_eq!(query[2..10], body[2..10], "header kept but the ID");
                        let client_id = u16::from_be_bytes([body[0], body[1]]);
                        let fresh = forwarded.insert((client, client_id), (transport, limit));
                        assert!(fresh.is_none(), "a duplicate was forwarded twice");
                        last_forward = Some((upstream, query));
                    }
                    Outcome::Drop(reason) => assert!(matches!(
                        reason,
                        DropReason::TooShort
                            | DropReason::NotAQuery
                            | DropReason::Duplicate
                            | DropReason::PendingFull
                    )),
                }
            }
            OP_UPSTREAM | OP_ANSWER => {
                let (from, msg) = if op % 6 == OP_UPSTREAM {
                    (UPSTREAMS[usize::from(sel % 2)], body.to_vec())
                } else {
                    let Some((from, query)) = &last_forward else {
                        continue;
                    };
                    let mut msg = query.clone();
                    msg[2] |= 0x80;
                    if let Ok(q) = wire::parse_query(query) {
                        let at = HEADER_LEN + q.question.len();
                        msg.truncate(at);
                        msg[10] = 0;
                        msg[11] = 0;
                        if sel & 1 != 0 {
                            msg[at - 3] ^= 1; // another type
                        }
                        if sel & 2 != 0 {
                            msg[HEADER_LEN..at - 4].make_ascii_uppercase();
                        }
                        msg.extend_from_slice(body);
                    }
                    (*from, msg)
                };
                if let Some(Event::Reply {
                    client,
                    transport,
                    payload,
                }) = server.upstream_answer(&msg, from)
                {
                    let client_id = u16::from_be_bytes([payload[0], payload[1]]);
                    let (t, limit) = forwarded
                        .remove(&(client, client_id))
                        .expect("a relayed answer goes to a client that asked, with its ID");
                    assert_eq!(transport, t);
                    assert!(payload.len() <= limit);
                    assert!(payload[2] & 0x80 != 0);
                }
            }
            OP_RESERVE => {
                let ip = Ipv4Addr::new(192, 168, 1, body.first().copied().unwrap_or(0));
                let name = hostname(body.get(1..).unwrap_or(&[]));
                server.zone_mut().upsert(mac(sel), ip, &name).unwrap();
            }
            _ => {
                server.zone_mut().remove(mac(sel));
            }
        }
        server.poll(now, &mut events);
        for e in events.drain(..) {
            match e {
                Event::Forward { upstream, query } => {
                    // A retry: the next upstream, a new ID.
                    assert!(UPSTREAMS.contains(&upstream));
                    last_forward = Some((upstream, query));
                }
                Event::Reply {
                    client,
                    transport,
                    payload,
                } => {
                    // SERVFAIL once every upstream stayed silent.
                    assert_eq!(payload[3] & 0x0f, 2, "SERVFAIL");
                    let client_id = u16::from_be_bytes([payload[0], payload[1]]);
                    let (t, limit) = forwarded
                        .remove(&(client, client_id))
                        .expect("SERVFAIL goes to a client that asked, with its ID");
                    assert_eq!(transport, t);
                    assert!(payload.len() <= limit);
                }
            }
        }
        assert!(server.pending() <= max_pending);
        assert_eq!(server.pending(), forwarded.len(), "pending queries");
    }
    let c = server.counters().clone();
    let answered = c.answers
        + c.nodata
        + c.nxdomain
        + c.refused
        + c.notimp
        + c.badvers
        + c.total_formerr()
        + c.forwarded
        + c.drops(DropReason::Duplicate)
        + c.drops(DropReason::PendingFull);
    assert_eq!(
        c.queries_udp + c.queries_tcp,
        answered,
        "every query is answered, forwarded or dropped once: {c:?}"
    );
    c
}
