//! Unit tests: queries and answers as byte vectors, every answer also decoded by
//! hickory-proto (an independent implementation), and the fuzz target's body on stable.

extern crate std;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::server::{
    DropReason, EDNS_UDP_SIZE, Event, FORWARD_TIMEOUT_MS, NEGATIVE_TTL, Outcome, Server,
    ServerConfig, Transport,
};
use crate::wire::{self, Error, rcode, rtype};
use crate::zone::{Zone, ZoneSubnet};

const VM1: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x11];
const VM2: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x12];
const NONAME: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x13];
const UP1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const UP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 54);
const CLIENT: u32 = 7;
const TXT: u16 = 16;

fn zone() -> Zone {
    let mut z = Zone::new(vec![ZoneSubnet {
        network: Ipv4Addr::new(192, 168, 1, 0),
        prefix_len: 24,
        domain: "nanovnf.test".into(),
    }]);
    z.upsert(VM1, Ipv4Addr::new(192, 168, 1, 11), "vm1")
        .unwrap();
    z.upsert(VM2, Ipv4Addr::new(192, 168, 1, 12), "VM2")
        .unwrap();
    z.upsert(NONAME, Ipv4Addr::new(192, 168, 1, 13), "")
        .unwrap();
    z
}

fn server(upstreams: &[Ipv4Addr]) -> Server<u32> {
    let config = ServerConfig {
        upstreams: upstreams.to_vec(),
        ..ServerConfig::default()
    };
    Server::new(zone(), config, 42)
}

/// A name in wire form with its root label.
fn name(dotted: &str) -> Vec<u8> {
    let mut w = wire::wire_from_dotted(dotted).unwrap();
    // keep the case as written: wire_from_dotted lowercases
    let mut at = 0;
    for label in dotted
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        w[at + 1..at + 1 + label.len()].copy_from_slice(label.as_bytes());
        at += 1 + label.len();
    }
    w.push(0);
    w
}

/// A standard query with RD set: header, one question, class IN.
fn query(id: u16, dotted: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend(name(dotted));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Appends an OPT record (EDNS) to a query.
fn with_opt(mut q: Vec<u8>, size: u16, version: u8, dnssec_ok: bool) -> Vec<u8> {
    q[11] += 1;
    q.push(0);
    q.extend_from_slice(&41u16.to_be_bytes());
    q.extend_from_slice(&size.to_be_bytes());
    q.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    q
}

fn reply(server: &mut Server<u32>, q: &[u8]) -> Vec<u8> {
    match server.query(q, CLIENT, Transport::Udp, 0) {
        Outcome::Reply(r) => r,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn decode(r: &[u8]) -> Message {
    Message::from_vec(r).unwrap_or_else(|e| panic!("hickory refuses {r:02x?}: {e}"))
}

fn rdata(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

// ---------------------------------------------------------------- names and records

#[test]
fn a_for_a_fqdn_byte_for_byte() {
    let q = query(0x1234, "vm1.nanovnf.test", rtype::A);
    let r = reply(&mut server(&[]), &q);
    let mut expected = vec![0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
    expected.extend_from_slice(&q[12..]);
    expected.extend_from_slice(&[
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 168, 1, 11, //
    ]);
    assert_eq!(r, expected);
}

#[test]
fn ptr_byte_for_byte() {
    let q = query(0xbeef, "11.1.168.192.in-addr.arpa", rtype::PTR);
    let r = reply(&mut server(&[]), &q);
    let mut expected = vec![0xbe, 0xef, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
    expected.extend_from_slice(&q[12..]);
    expected.extend_from_slice(&[0xc0, 0x0c, 0, 12, 0, 1, 0, 0, 0, 0, 0, 18]);
    expected.extend_from_slice(b"\x03vm1\x07nanovnf\x04test\x00");
    assert_eq!(r, expected);
}

#[test]
fn every_name_form_resolves_case_insensitively() {
    let mut s = server(&[]);
    for (name, ip) in [
        ("vm1.nanovnf.test", "192.168.1.11"),
        ("VM1.NanoVNF.Test.", "192.168.1.11"),
        ("vm2.nanovnf.test", "192.168.1.12"), // reserved as "VM2"
        ("host-192-168-1-11.nanovnf.test", "192.168.1.11"),
        ("HOST-192-168-1-13.nanovnf.test", "192.168.1.13"),
        ("vm1", "192.168.1.11"), // unqualified, as dnsmasq answers from its hosts
        ("host-192-168-1-12", "192.168.1.12"),
    ] {
        let q = query(1, name, rtype::A);
        let r = reply(&mut s, &q);
        // The question comes back as asked, case included (0x20 randomisation).
        assert_eq!(r[12..q.len()], q[12..], "{name}");
        let m = decode(&r);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(rdata(&m), [ip], "{name}");
        assert_eq!(m.answers[0].ttl, 0, "local TTL 0, as dnsmasq's --local-ttl");
    }
    assert_eq!(s.counters().answers, 7);
}

#[test]
fn ptr_names_the_hostname_or_the_default_name() {
    let mut s = server(&[]);
    for (rev, target) in [
        ("11.1.168.192.in-addr.arpa", "vm1.nanovnf.test."),
        ("12.1.168.192.IN-ADDR.ARPA", "vm2.nanovnf.test."),
        (
            "13.1.168.192.in-addr.arpa",
            "host-192-168-1-13.nanovnf.test.",
        ),
    ] {
        let m = decode(&reply(&mut s, &query(2, rev, rtype::PTR)));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{rev}");
        assert_eq!(rdata(&m), [target], "{rev}");
    }
}

#[test]
fn aaaa_for_a_known_name_is_nodata_with_the_soa() {
    let mut s = server(&[]);
    let m = decode(&reply(&mut s, &query(3, "vm1.nanovnf.test", rtype::AAAA)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    let soa = &m.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_ascii(), "nanovnf.test.");
    assert_eq!(soa.ttl, NEGATIVE_TTL);
    let hickory_proto::rr::RData::SOA(soa) = &soa.data else {
        panic!("not an SOA")
    };
    assert_eq!(soa.minimum, NEGATIVE_TTL);
    assert_eq!(soa.rname.to_ascii(), "hostmaster.nanovnf.test.");
    assert_eq!(s.counters().nodata, 1);
    // An unqualified known name has no zone to name: NODATA without SOA.
    let m = decode(&reply(&mut s, &query(3, "vm1", rtype::AAAA)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.authorities.is_empty());
}

#[test]
fn unknown_names_in_the_domain_are_nxdomain_with_the_soa() {
    let mut s = server(&[UP1]);
    for (name, qtype, zone) in [
        ("nobody.nanovnf.test", rtype::A, "nanovnf.test."),
        ("a.vm1.nanovnf.test", rtype::A, "nanovnf.test."),
        ("Nobody.NANOVNF.test", rtype::AAAA, "NANOVNF.test."),
        (
            "99.1.168.192.in-addr.arpa",
            rtype::PTR,
            "1.168.192.in-addr.arpa.",
        ),
    ] {
        let m = decode(&reply(&mut s, &query(4, name, qtype)));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.authorities.len(), 1, "{name}");
        assert_eq!(m.authorities[0].name.to_ascii(), zone, "{name}");
    }
    // Unqualified unknown names are never forwarded (dnsmasq's --domain-needed).
    let m = decode(&reply(&mut s, &query(4, "nobody", rtype::A)));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(s.counters().nxdomain, 5);
    assert_eq!(s.counters().forwarded, 0);
}

#[test]
fn the_apex_answers_its_soa() {
    let mut s = server(&[]);
    let m = decode(&reply(&mut s, &query(5, "nanovnf.test", rtype::SOA)));
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = decode(&reply(&mut s, &query(5, "nanovnf.test", rtype::A)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
}

#[test]
fn live_changes_show_at_once() {
    let mut s = server(&[]);
    let vm3 = [0xfa, 0x16, 0x3e, 0, 0, 0x33];
    let q = query(6, "vm3.nanovnf.test", rtype::A);
    assert_eq!(
        decode(&reply(&mut s, &q)).metadata.response_code,
        ResponseCode::NXDomain
    );
    s.zone_mut()
        .upsert(vm3, Ipv4Addr::new(192, 168, 1, 33), "vm3")
        .unwrap();
    assert_eq!(rdata(&decode(&reply(&mut s, &q))), ["192.168.1.33"]);
    // Moved: the old reverse name is gone, the new one names vm3.
    s.zone_mut()
        .upsert(vm3, Ipv4Addr::new(192, 168, 1, 34), "vm3")
        .unwrap();
    assert_eq!(rdata(&decode(&reply(&mut s, &q))), ["192.168.1.34"]);
    let old = decode(&reply(
        &mut s,
        &query(6, "33.1.168.192.in-addr.arpa", rtype::PTR),
    ));
    assert_eq!(old.metadata.response_code, ResponseCode::NXDomain);
    let new = decode(&reply(
        &mut s,
        &query(6, "34.1.168.192.in-addr.arpa", rtype::PTR),
    ));
    assert_eq!(rdata(&new), ["vm3.nanovnf.test."]);
    // Renamed, then removed.
    s.zone_mut()
        .upsert(vm3, Ipv4Addr::new(192, 168, 1, 34), "db")
        .unwrap();
    assert_eq!(
        decode(&reply(&mut s, &q)).metadata.response_code,
        ResponseCode::NXDomain
    );
    let db = query(6, "db.nanovnf.test", rtype::A);
    assert_eq!(rdata(&decode(&reply(&mut s, &db))), ["192.168.1.34"]);
    assert!(s.zone_mut().remove(vm3));
    assert_eq!(
        decode(&reply(&mut s, &db)).metadata.response_code,
        ResponseCode::NXDomain
    );
    let default = query(6, "host-192-168-1-34.nanovnf.test", rtype::A);
    assert_eq!(
        decode(&reply(&mut s, &default)).metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn zone_refuses_strays_and_bounds_its_size() {
    let mut z = Zone::with_capacity(
        vec![ZoneSubnet {
            network: Ipv4Addr::new(192, 168, 1, 0),
            prefix_len: 24,
            domain: "d".into(),
        }],
        1,
    );
    assert_eq!(
        z.upsert(VM1, Ipv4Addr::new(10, 0, 0, 1), "x"),
        Err(crate::ZoneError::NoSubnet)
    );
    z.upsert(VM1, Ipv4Addr::new(192, 168, 1, 2), "x").unwrap();
    assert_eq!(
        z.upsert(VM2, Ipv4Addr::new(192, 168, 1, 3), "y"),
        Err(crate::ZoneError::Full)
    );
    // Replacing the one host is not growth.
    z.upsert(VM1, Ipv4Addr::new(192, 168, 1, 3), "y").unwrap();
    assert_eq!(z.len(), 1);
}

#[test]
fn two_domains_and_a_wider_subnet() {
    let mut z = Zone::new(vec![
        ZoneSubnet {
            network: Ipv4Addr::new(192, 168, 1, 0),
            prefix_len: 24,
            domain: "a.example".into(),
        },
        ZoneSubnet {
            network: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
            domain: "b.a.example".into(),
        },
    ]);
    z.upsert(VM1, Ipv4Addr::new(10, 1, 2, 3), "deep").unwrap();
    let mut s: Server<u32> = Server::new(z, ServerConfig::default(), 1);
    let m = decode(&reply(&mut s, &query(1, "deep.b.a.example", rtype::A)));
    assert_eq!(rdata(&m), ["10.1.2.3"]);
    // The longest domain names the zone of a negative answer.
    let m = decode(&reply(&mut s, &query(1, "x.b.a.example", rtype::A)));
    assert_eq!(m.authorities[0].name.to_ascii(), "b.a.example.");
    let m = decode(&reply(
        &mut s,
        &query(1, "3.2.1.10.in-addr.arpa", rtype::PTR),
    ));
    assert_eq!(rdata(&m), ["deep.b.a.example."]);
    let m = decode(&reply(
        &mut s,
        &query(1, "4.2.1.10.in-addr.arpa", rtype::PTR),
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].name.to_ascii(), "1.10.in-addr.arpa.");
    // Reverse names outside every subnet are not ours.
    assert!(matches!(
        s.query(&query(1, "1.0.0.127.in-addr.arpa", rtype::PTR), CLIENT, Transport::Udp, 0),
        Outcome::Reply(r) if decode(&r).metadata.response_code == ResponseCode::Refused
    ));
}

// ---------------------------------------------------------------- refusals and errors

#[test]
fn outside_names_are_refused_without_upstreams() {
    let mut s = server(&[]);
    let m = decode(&reply(&mut s, &query(7, "example.com", rtype::A)));
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available, "RA clear with --no-resolv");
    assert!(!m.metadata.authoritative);
    assert_eq!(s.counters().refused, 1);
}

#[test]
fn other_classes_zone_transfers_and_opcodes_are_refused_or_unimplemented() {
    let mut s = server(&[UP1]);
    let mut chaos = query(8, "version.bind", 16);
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert_eq!(reply(&mut s, &chaos)[3] & 0x0f, rcode::REFUSED as u8);
    let axfr = query(8, "nanovnf.test", rtype::AXFR);
    assert_eq!(reply(&mut s, &axfr)[3] & 0x0f, rcode::REFUSED as u8);
    let mut update = query(8, "nanovnf.test", rtype::SOA);
    update[2] = 5 << 3; // opcode UPDATE
    let r = reply(&mut s, &update);
    assert_eq!(r, [0, 8, 0xa8, rcode::NOTIMP as u8, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(s.counters().notimp, 1);
}

/// Feeds a malformed query; it must be answered FORMERR (header only) and counted.
fn formerr(s: &mut Server<u32>, q: &[u8], reason: Error) {
    let r = reply(s, q);
    assert_eq!(r.len(), 12, "{reason:?}: header only");
    assert_eq!(r[..2], q[..2], "{reason:?}: ID");
    assert_eq!(r[3] & 0x0f, rcode::FORMERR as u8, "{reason:?}");
    assert_eq!(r[4..], [0; 8], "{reason:?}: no sections");
    decode(&r);
    assert!(s.counters().formerr(reason) > 0, "{reason:?} counted");
}

#[test]
fn malformed_queries_are_formerr_and_counted() {
    let mut s = server(&[UP1]);
    let good = query(9, "vm1.nanovnf.test", rtype::A);

    // A compression loop in an additional record: a pointer to itself.
    let mut looped = good.clone();
    looped[11] = 1;
    let at = looped.len();
    looped.extend_from_slice(&[0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&mut s, &looped, Error::BadPointer);
    // A pointer forwards, and one into the header.
    let mut forwards = good.clone();
    forwards[11] = 1;
    let at = forwards.len();
    forwards.extend_from_slice(&[0xc0, at as u8 + 2, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&mut s, &forwards, Error::BadPointer);
    let mut into_header = good.clone();
    into_header[11] = 1;
    into_header.extend_from_slice(&[0xc0, 0x02, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&mut s, &into_header, Error::BadPointer);
    // Two pointers chasing each other backwards and forwards.
    let mut pingpong = good.clone();
    pingpong[11] = 2;
    let a = pingpong.len();
    pingpong.extend_from_slice(&[0xc0, (a + 12) as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    pingpong.extend_from_slice(&[0xc0, a as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&mut s, &pingpong, Error::BadPointer);
    // A label running past the end.
    let mut past = query(9, "vm1.nanovnf.test", rtype::A);
    past.truncate(14);
    past[12] = 40;
    formerr(&mut s, &past, Error::LabelPastEnd);
    // No type/class after the name.
    let mut no_type = good.clone();
    no_type.truncate(good.len() - 3);
    formerr(&mut s, &no_type, Error::Truncated);
    // Absurd counts: 65535 additional records that are not there.
    let mut absurd = good.clone();
    absurd[10] = 0xff;
    absurd[11] = 0xff;
    formerr(&mut s, &absurd, Error::Truncated);
    let mut absurd_an = good.clone();
    absurd_an[6] = 0xff;
    formerr(&mut s, &absurd_an, Error::Truncated);
    // No question, two questions.
    let mut none = good.clone();
    none[5] = 0;
    formerr(&mut s, &none, Error::QuestionCount);
    let mut two = good.clone();
    two[5] = 2;
    formerr(&mut s, &two, Error::QuestionCount);
    // A name over 255 octets, and a 64-byte label (type bits 01).
    let mut long = 9u16.to_be_bytes().to_vec();
    long.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    formerr(&mut s, &long, Error::NameTooLong);
    let mut bad_label = good.clone();
    bad_label[12] = 0x40;
    formerr(&mut s, &bad_label, Error::BadLabelType);
    // Two OPT records; an OPT whose owner is not the root.
    let two_opts = with_opt(with_opt(good.clone(), 1232, 0, false), 1232, 0, false);
    formerr(&mut s, &two_opts, Error::BadOpt);
    let mut named_opt = with_opt(good.clone(), 1232, 0, false);
    let at = good.len();
    named_opt.splice(at..at + 1, [1, b'x', 0]);
    formerr(&mut s, &named_opt, Error::BadOpt);

    // Too short for a header, or a response: no answer at all.
    assert_eq!(
        s.query(&good[..11], CLIENT, Transport::Udp, 0),
        Outcome::Drop(DropReason::TooShort)
    );
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(
        s.query(&response, CLIENT, Transport::Udp, 0),
        Outcome::Drop(DropReason::NotAQuery)
    );
    assert_eq!(s.counters().total_formerr(), 14);
    assert_eq!(s.counters().forwarded, 0);
}

#[test]
fn a_pointer_in_a_later_record_is_fine() {
    // An answer-section record (unusual in a query) naming the question by pointer.
    let mut s = server(&[]);
    let mut q = query(10, "vm1.nanovnf.test", rtype::A);
    q[7] = 1;
    q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    let m = decode(&reply(&mut s, &q));
    assert_eq!(rdata(&m), ["192.168.1.11"]);
}

// ---------------------------------------------------------------- EDNS and truncation

#[test]
fn edns_is_honoured_and_echoed() {
    let mut s = server(&[]);
    let q = with_opt(query(11, "vm1.nanovnf.test", rtype::A), 4096, 0, true);
    let r = reply(&mut s, &q);
    let m = decode(&r);
    let edns = m.edns.clone().expect("an OPT in the answer");
    assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
    assert_eq!(edns.version(), 0);
    assert!(edns.flags().dnssec_ok, "DO echoed (RFC 3225)");
    assert_eq!(rdata(&m), ["192.168.1.11"]);
    // The OPT record's bytes: root, type 41, our size, no extended rcode, DO.
    assert_eq!(
        r[r.len() - 11..],
        [0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]
    );
    // Without EDNS in the query, none in the answer.
    let m = decode(&reply(&mut s, &query(11, "vm1.nanovnf.test", rtype::A)));
    assert!(m.edns.is_none());
}

#[test]
fn an_unknown_edns_version_is_badvers() {
    let mut s = server(&[]);
    let q = with_opt(query(12, "vm1.nanovnf.test", rtype::A), 1232, 1, false);
    let r = reply(&mut s, &q);
    let m = decode(&r);
    // 16 is BADVERS in an OPT (hickory names the shared code BADSIG): header RCODE 0,
    // extended RCODE 1 in the OPT record, which advertises version 0.
    assert_eq!(r[3] & 0x0f, 0);
    assert_eq!(r[r.len() - 11..r.len() - 4], [0, 0, 41, 0x04, 0xd0, 1, 0]);
    assert_eq!(m.queries.len(), 1);
    assert!(m.answers.is_empty());
    assert_eq!(s.counters().badvers, 1);
}

/// A server whose one name has `n` addresses (the same hostname on n ports).
fn crowded(n: u8) -> Server<u32> {
    let mut s = server(&[]);
    for i in 0..n {
        let mac = [0xfa, 0x16, 0x3e, 1, 0, i];
        s.zone_mut()
            .upsert(mac, Ipv4Addr::new(192, 168, 1, 100 + i), "web")
            .unwrap();
    }
    s
}

#[test]
fn big_udp_answers_without_edns_are_truncated() {
    // 40 A records: 12 + 20 (question) + 40 * 16 = 672 bytes > 512.
    let mut s = crowded(40);
    let q = query(13, "web.nanovnf.test", rtype::A);
    let r = reply(&mut s, &q);
    assert!(r.len() <= 512);
    let m = decode(&r);
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1, "the question is kept");
    assert_eq!(s.counters().truncated, 1);
    // With EDNS (4096, capped at our 1232) it fits; over TCP it always does.
    let r = reply(&mut s, &with_opt(q.clone(), 4096, 0, false));
    let m = decode(&r);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    let Outcome::Reply(r) = s.query(&q, CLIENT, Transport::Tcp, 0) else {
        panic!()
    };
    assert_eq!(decode(&r).answers.len(), 40);
    // An EDNS size below 512 still means 512; 100 records exceed 1232 even with EDNS.
    let r = reply(&mut s, &with_opt(q.clone(), 100, 0, false));
    assert!(decode(&r).metadata.truncation);
    let mut s = crowded(100);
    let r = reply(&mut s, &with_opt(q, 4096, 0, false));
    let m = decode(&r);
    assert!(m.metadata.truncation && r.len() <= usize::from(EDNS_UDP_SIZE));
    assert!(m.edns.is_some(), "the OPT survives truncation");
}

// ---------------------------------------------------------------- forwarding

fn forward(s: &mut Server<u32>, q: &[u8], client: u32, now: u64) -> (Ipv4Addr, Vec<u8>) {
    match s.query(q, client, Transport::Udp, now) {
        Outcome::Forward { upstream, query } => (upstream, query),
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// The upstream's answer to `sent`: QR and RA set, one A record.
fn upstream_reply(sent: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let mut r = sent.to_vec();
    r[2] |= 0x80;
    r[3] |= 0x80;
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4]);
    r.extend_from_slice(&ip);
    r
}

#[test]
fn outside_names_are_forwarded_and_the_answer_relayed() {
    let mut s = server(&[UP1]);
    let q = query(0x4242, "www.example.com", rtype::A);
    let (to, sent) = forward(&mut s, &q, CLIENT, 0);
    assert_eq!(to, UP1);
    assert_eq!(sent[2..], q[2..], "forwarded as asked");
    let up_id = u16::from_be_bytes([sent[0], sent[1]]);
    assert_eq!(s.pending(), 1);

    // A retransmission by the client while pending is not forwarded again.
    assert_eq!(
        s.query(&q, CLIENT, Transport::Udp, 10),
        Outcome::Drop(DropReason::Duplicate)
    );
    // Answers from the wrong address, with the wrong ID or question, change nothing.
    let answer = upstream_reply(&sent, [203, 0, 113, 7]);
    assert!(s.upstream_answer(&answer, UP2).is_none());
    let mut wrong_id = answer.clone();
    wrong_id[..2].copy_from_slice(&up_id.wrapping_add(1).to_be_bytes());
    assert!(s.upstream_answer(&wrong_id, UP1).is_none());
    let mut wrong_q = answer.clone();
    wrong_q[13] = b'x';
    assert!(s.upstream_answer(&wrong_q, UP1).is_none());
    let mut wrong_type = answer.clone();
    wrong_type[q.len() - 3] = rtype::AAAA as u8;
    assert!(s.upstream_answer(&wrong_type, UP1).is_none());
    assert!(
        s.upstream_answer(&sent, UP1).is_none(),
        "QR clear: not an answer"
    );
    assert_eq!(s.counters().drops(DropReason::UpstreamUnknown), 2);
    assert_eq!(s.counters().drops(DropReason::UpstreamMismatch), 2);
    assert_eq!(s.counters().drops(DropReason::UpstreamMalformed), 1);
    assert_eq!(s.pending(), 1);

    // The real answer (the upstream may change the name's case) goes to the client with
    // its own ID.
    let mut answer = answer;
    answer[13..16].copy_from_slice(b"WWW");
    let Some(Event::Reply {
        client,
        transport,
        payload,
    }) = s.upstream_answer(&answer, UP1)
    else {
        panic!("no relay")
    };
    assert_eq!((client, transport), (CLIENT, Transport::Udp));
    assert_eq!(payload[..2], [0x42, 0x42]);
    assert_eq!(payload[2..], answer[2..]);
    assert_eq!(rdata(&decode(&payload)), ["203.0.113.7"]);
    assert_eq!(s.pending(), 0);
    // A second copy finds nothing pending.
    assert!(s.upstream_answer(&answer, UP1).is_none());
    assert_eq!(s.counters().forward_answers, 1);
}

#[test]
fn silent_upstreams_are_retried_in_turn_then_servfail() {
    let mut s = server(&[UP1, UP2]);
    let q = with_opt(query(0x77, "slow.example.org", rtype::A), 4096, 0, false);
    let (to, first) = forward(&mut s, &q, CLIENT, 1000);
    assert_eq!(to, UP1);
    // Asked for no more than the client can take from us.
    assert_eq!(
        first[first.len() - 8..first.len() - 6],
        EDNS_UDP_SIZE.to_be_bytes()
    );
    assert_eq!(s.poll_at(), Some(1000 + FORWARD_TIMEOUT_MS));
    let mut events = Vec::new();
    s.poll(1000 + FORWARD_TIMEOUT_MS - 1, &mut events);
    assert!(events.is_empty());
    s.poll(1000 + FORWARD_TIMEOUT_MS, &mut events);
    let [Event::Forward { upstream, query }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(*upstream, UP2);
    assert_ne!(query[..2], first[..2], "a new ID for the retry");
    let retry = query.clone();
    // A late answer from the first upstream is no longer accepted.
    assert!(
        s.upstream_answer(&upstream_reply(&first, [1, 1, 1, 1]), UP1)
            .is_none()
    );
    events.clear();
    s.poll(1000 + 2 * FORWARD_TIMEOUT_MS, &mut events);
    let [
        Event::Reply {
            client, payload, ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*client, CLIENT);
    let m = decode(payload);
    assert_eq!(m.metadata.id, 0x77);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1);
    assert!(m.edns.is_some());
    assert_eq!(s.pending(), 0);
    assert_eq!(s.poll_at(), None);
    assert!(
        s.upstream_answer(&upstream_reply(&retry, [1, 1, 1, 1]), UP2)
            .is_none()
    );
    let c = s.counters();
    assert_eq!(
        (c.forward_retries, c.forward_timeouts, c.servfail),
        (1, 1, 1)
    );
}

#[test]
fn the_pending_table_is_bounded() {
    let config = ServerConfig {
        upstreams: vec![UP1],
        max_pending: 3,
        ..ServerConfig::default()
    };
    let mut s: Server<u32> = Server::new(zone(), config, 9);
    let mut ids = Vec::new();
    for i in 0..3u16 {
        let (_, sent) = forward(&mut s, &query(i, "a.example", rtype::A), u32::from(i), 0);
        ids.push(u16::from_be_bytes([sent[0], sent[1]]));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct upstream IDs");
    assert_eq!(
        s.query(&query(9, "a.example", rtype::A), 9, Transport::Udp, 0),
        Outcome::Drop(DropReason::PendingFull)
    );
    // Local names are still answered.
    assert!(matches!(
        s.query(
            &query(9, "vm1.nanovnf.test", rtype::A),
            9,
            Transport::Udp,
            0
        ),
        Outcome::Reply(_)
    ));
    // A TCP client that goes away frees its entries.
    s.forget(|c| *c == 1);
    assert_eq!(s.pending(), 2);
}

#[test]
fn a_relayed_answer_too_big_for_the_client_is_truncated() {
    let mut s = server(&[UP1]);
    let q = query(0x99, "big.example", TXT);
    let (_, sent) = forward(&mut s, &q, CLIENT, 0);
    let mut answer = sent.clone();
    answer[2] |= 0x80;
    answer[7] = 1;
    answer.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0x02, 0x58]);
    answer.extend(core::iter::repeat_n(b'x', 600));
    let Some(Event::Reply { payload, .. }) = s.upstream_answer(&answer, UP1) else {
        panic!()
    };
    assert!(payload.len() <= 512);
    let m = decode(&payload);
    assert!(m.metadata.truncation);
    assert_eq!(m.metadata.id, 0x99);
    assert_eq!(m.queries.len(), 1);
    // Over TCP the same answer goes whole.
    let (_, sent) = match s.query(&q, 3, Transport::Tcp, 0) {
        Outcome::Forward { upstream, query } => (upstream, query),
        o => panic!("{o:?}"),
    };
    let mut answer2 = answer.clone();
    answer2[..2].copy_from_slice(&sent[..2]);
    let Some(Event::Reply { payload, .. }) = s.upstream_answer(&answer2, UP1) else {
        panic!()
    };
    assert_eq!(payload.len(), answer.len());
}

// ---------------------------------------------------------------- the fuzz body, on stable

use crate as dns;

/// The cargo-fuzz target's body (input layout and invariants), shared with `fuzz/`.
#[path = "../../../fuzz/dns_query_check.rs"]
mod fuzz_check;

/// Seed inputs for the fuzzer in `fuzz_check`'s layout: every kind of query above, the
/// forwarding round trips, reservation changes. `fuzz/corpus/dns_query/seed-<name>` holds
/// them (see `committed_seed_corpus_is_current`).
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_check::{OP_ANSWER, OP_REMOVE, OP_RESERVE, OP_TCP, OP_UDP, OP_UPSTREAM, encode};
    let a = query(1, "vm1.nanovnf.test", rtype::A);
    let ptr = query(2, "11.1.168.192.in-addr.arpa", rtype::PTR);
    let aaaa = with_opt(query(3, "VM1.nanovnf.test", rtype::AAAA), 4096, 0, true);
    let nx = query(4, "nobody.nanovnf.test", rtype::A);
    let out = query(5, "www.example.com", rtype::A);
    let out_edns = with_opt(query(6, "www.example.com", rtype::A), 1400, 0, false);
    let badvers = with_opt(query(7, "vm1", rtype::A), 512, 1, false);
    let mut looped = a.clone();
    looped[11] = 1;
    let at = looped.len();
    looped.extend_from_slice(&[0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    let web = query(8, "web.nanovnf.test", rtype::A);
    let mut records: Vec<(u8, u8, u8, &[u8])> = Vec::new();
    for i in 0..40u8 {
        records.push((OP_RESERVE, 0, 0x40 + i, b"\x64web"));
    }
    let mut crowd = records.clone();
    crowd.push((OP_UDP, 0, 1, &web));
    crowd.push((OP_TCP, 0, 1, &web));
    vec![
        (
            "local",
            encode(
                0,
                0,
                &[
                    (OP_UDP, 0, 1, &a),
                    (OP_UDP, 1, 2, &ptr),
                    (OP_UDP, 1, 3, &aaaa),
                    (OP_UDP, 1, 4, &nx),
                ],
            ),
        ),
        (
            "forward",
            encode(
                2,
                0x41,
                &[
                    (OP_UDP, 0, 1, &out),
                    (OP_ANSWER, 1, 2, b""),
                    (
                        OP_ANSWER,
                        1,
                        0,
                        &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4],
                    ),
                    (OP_TCP, 0, 5, &out_edns),
                    (OP_UPSTREAM, 0, 0, &out),
                    (OP_UDP, 120, 1, &out),
                    (OP_UDP, 120, 2, &out),
                ],
            ),
        ),
        (
            "malformed",
            encode(
                1,
                3,
                &[
                    (OP_UDP, 0, 1, &looped),
                    (OP_UDP, 0, 1, &badvers),
                    (OP_TCP, 0, 1, &a[..5]),
                ],
            ),
        ),
        (
            "live",
            encode(
                0,
                0,
                &[
                    (OP_RESERVE, 0, 9, b"\x21vm9"),
                    (OP_UDP, 0, 1, &query(9, "vm9.nanovnf.test", rtype::A)),
                    (OP_REMOVE, 0, 9, b""),
                    (OP_UDP, 0, 1, &query(9, "vm9.nanovnf.test", rtype::A)),
                ],
            ),
        ),
        ("crowd", encode(0, 0, &crowd)),
    ]
}

#[test]
fn fuzz_body_holds_on_seeds_and_mutations() {
    let seeds = fuzz_seeds();
    for (name, seed) in &seeds {
        let c = fuzz_check::run(seed);
        // Each seed reaches the path it was written for.
        let reached = match *name {
            "local" => c.answers == 2 && c.nodata == 1 && c.nxdomain == 1,
            "forward" => c.forward_answers == 1 && c.forward_retries > 0 && c.servfail > 0,
            "malformed" => c.total_formerr() == 1 && c.badvers == 1,
            "live" => c.answers == 1 && c.nxdomain == 1,
            "crowd" => c.truncated == 1 && c.answers == 2,
            _ => true,
        };
        assert!(reached, "seed {name}: {c:?}");
    }
    // Deterministic mutations: flipped bits, cut tails, spliced seeds.
    seed_corpus::mutate(&seeds, 3000, fuzz_check::run);
}

#[path = "../../../fuzz/seed_corpus.rs"]
mod seed_corpus;

#[test]
fn committed_seed_corpus_is_current() {
    seed_corpus::check("dns_query", "nanovnf-dns", &fuzz_seeds());
}
