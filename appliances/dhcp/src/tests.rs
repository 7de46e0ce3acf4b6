//! Byte-vector codec tests and whole-flow engine tests. `dhcproto` is the independent
//! oracle: it builds the clients' messages and decodes what we emit.

extern crate std;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::server::{self, DropReason, LeaseState, RxMeta, Server, ServerConfig};
use crate::wire::{self, Error, MessageType, Packet};
use crate::{Reservation, ReservationError};

const MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x11];
const MAC2: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x22];
const VM_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const MD: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);
const T0: u64 = 1_000;

/// The DISCOVER of Wireshark's `dhcp.pcap` sample capture (as used by smoltcp's
/// `wire::dhcpv4` tests, with option 57 = 1500 added there): chaddr 00:0b:82:01:fc:42,
/// xid 0x3d1d, options 53, 61, 50, 57, 55 = [1, 3, 6, 42].
static DISCOVER_BYTES: &[u8] = &[
    0x01, 0x01, 0x06, 0x00, 0x00, 0x00, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x82, 0x01,
    0xfc, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63,
    0x35, 0x01, 0x01, 0x3d, 0x07, 0x01, 0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42, 0x32, 0x04, 0x00, 0x00,
    0x00, 0x00, 0x39, 0x02, 0x05, 0xdc, 0x37, 0x04, 0x01, 0x03, 0x06, 0x2a, 0xff, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

fn config() -> ServerConfig {
    let mut c = ServerConfig::new(SERVER_IP, (Ipv4Addr::new(192, 168, 1, 0), 24));
    c.gateway = Some(GW);
    c.mtu = 1450;
    c.host_routes = vec![(
        Ipv4Addr::new(10, 10, 0, 0),
        16,
        Ipv4Addr::new(192, 168, 1, 254),
    )];
    c.other_subnets = vec![(Ipv4Addr::new(192, 168, 2, 0), 24)];
    c.metadata_ip = Some(MD);
    c
}

fn server() -> Server {
    let mut s = Server::with_capacity(config(), 16);
    s.add_or_update(Reservation {
        mac: MAC,
        ip: VM_IP,
        hostname: String::from("vm1"),
    })
    .unwrap();
    s
}

fn meta(mac: [u8; 6]) -> RxMeta {
    RxMeta {
        src_mac: mac,
        src_ip: Ipv4Addr::UNSPECIFIED,
        src_port: 68,
    }
}

const PRL: [u8; 9] = [1, 3, 6, 12, 15, 26, 28, 121, 249];

/// A client message built by dhcproto.
fn client(mac: [u8; 6], t: v4::MessageType, f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0x1234_5678, z, z, z, z, &mac);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(
        PRL.iter().map(|&c| OptionCode::from(c)).collect(),
    ));
    f(&mut m);
    m.to_vec().unwrap()
}

fn decode(r: &server::Reply) -> Message {
    Message::from_bytes(&r.payload).expect("dhcproto decodes our reply")
}

/// Option codes in wire order, with our own iterator (follows overload).
fn codes(payload: &[u8]) -> Vec<u8> {
    Packet::new_checked(payload)
        .unwrap()
        .options()
        .map(|o| o.unwrap().code)
        .collect()
}

fn find(payload: &[u8], code: u8) -> Option<Vec<u8>> {
    Packet::new_checked(payload)
        .unwrap()
        .options()
        .map(|o| o.unwrap())
        .find(|o| o.code == code)
        .map(|o| o.data.to_vec())
}

fn dora(s: &mut Server, now: u64) -> server::Reply {
    let offer = s
        .handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            now,
        )
        .unwrap();
    assert_eq!(offer.kind, MessageType::Offer);
    let req = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
    });
    s.handle(&req, meta(MAC), now).unwrap()
}

fn expected_routes() -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
    vec![
        (Ipv4Addr::new(192, 168, 2, 0), 24, Ipv4Addr::UNSPECIFIED),
        (
            Ipv4Addr::new(10, 10, 0, 0),
            16,
            Ipv4Addr::new(192, 168, 1, 254),
        ),
        (Ipv4Addr::new(169, 254, 169, 254), 32, MD),
        (Ipv4Addr::UNSPECIFIED, 0, GW),
    ]
}

// ---------------------------------------------------------------- codec

#[test]
fn parse_real_discover() {
    let p = Packet::new_checked(DISCOVER_BYTES).unwrap();
    assert_eq!(p.op(), wire::OP_BOOTREQUEST);
    assert_eq!((p.htype(), p.hlen(), p.hops()), (1, 6, 0));
    assert_eq!(p.xid(), 0x3d1d);
    assert_eq!(p.client_mac(), [0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42]);
    assert_eq!(p.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(p.magic_cookie(), wire::MAGIC_COOKIE);
    let opts: Vec<_> = p.options().map(|o| o.unwrap()).collect();
    let got: Vec<u8> = opts.iter().map(|o| o.code).collect();
    assert_eq!(got, [53, 61, 50, 57, 55]);
    assert_eq!(opts[0].data, [1]);
    assert_eq!(opts[4].data, [1, 3, 6, 42]);
    // The oracle agrees.
    let m = Message::from_bytes(DISCOVER_BYTES).unwrap();
    assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Discover));
    assert_eq!(m.xid(), 0x3d1d);
}

#[test]
fn real_discover_from_unknown_mac_is_ignored_then_offered_once_reserved() {
    let mut s = server();
    let mac = [0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42];
    assert!(s.handle(DISCOVER_BYTES, meta(mac), T0).is_none());
    assert_eq!(s.counters().drops(DropReason::UnknownClient), 1);
    s.add_or_update(Reservation {
        mac,
        ip: Ipv4Addr::new(192, 168, 1, 50),
        hostname: String::new(),
    })
    .unwrap();
    let r = s.handle(DISCOVER_BYTES, meta(mac), T0).unwrap();
    let m = decode(&r);
    assert_eq!(m.yiaddr(), Ipv4Addr::new(192, 168, 1, 50));
    assert_eq!(m.xid(), 0x3d1d);
    // PRL [1, 3, 6, 42]: mandatory 53, 54, 51, then 1, 3, 6 in order, then forced 26.
    assert_eq!(codes(&r.payload), [53, 54, 51, 1, 3, 6, 26]);
}

#[test]
fn emit_round_trip() {
    let mut buf = vec![0u8; wire::HEADER_LEN];
    {
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_op(wire::OP_BOOTREPLY);
        p.set_htype(1);
        p.set_hlen(6);
        p.set_xid(0xdead_beef);
        p.set_flags(wire::FLAG_BROADCAST);
        p.set_yiaddr(VM_IP);
        p.set_giaddr(GW);
        p.set_chaddr(&MAC);
        p.set_magic_cookie();
    }
    let lay = wire::emit_options(
        &mut buf,
        &[(53, &[2]), (54, &SERVER_IP.octets())],
        &[(12, b"vm1"), (26, &1450u16.to_be_bytes())],
        548,
        300,
    );
    assert!(lay.dropped.is_empty());
    assert_eq!(buf.len(), 300);
    let expected_opts: &[u8] = &[
        0x63, 0x82, 0x53, 0x63, 53, 1, 2, 54, 4, 192, 168, 1, 2, 12, 3, b'v', b'm', b'1', 26, 2,
        0x05, 0xaa, 0xff,
    ];
    assert_eq!(&buf[236..236 + expected_opts.len()], expected_opts);
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(p.xid(), 0xdead_beef);
    assert!(p.broadcast_flag());
    assert_eq!(p.yiaddr(), VM_IP);
    assert_eq!(p.giaddr(), GW);
    assert_eq!(p.client_mac(), MAC);
    assert_eq!(codes(&buf), [53, 54, 12, 26]);
    let m = Message::from_bytes(&buf).unwrap();
    assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Offer));
    assert!(
        matches!(m.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "vm1")
    );
    assert!(matches!(
        m.opts().get(OptionCode::InterfaceMtu),
        Some(DhcpOption::InterfaceMtu(1450))
    ));
}

#[test]
fn malformed_inputs_are_named() {
    // Anything shorter than the fixed header.
    assert_eq!(
        Packet::new_checked(&DISCOVER_BYTES[..239]).err(),
        Some(Error::Truncated)
    );
    assert_eq!(Packet::new_checked(&[][..]).err(), Some(Error::Truncated));
    // Bad cookie.
    let mut b = DISCOVER_BYTES.to_vec();
    b[236] = 0x64;
    assert_eq!(
        Packet::new_checked(&b[..]).err(),
        Some(Error::BadMagicCookie)
    );
    // Option length past the end.
    let mut b = DISCOVER_BYTES[..240].to_vec();
    b.extend_from_slice(&[53, 1, 1, 12, 50, b'x']);
    let errs: Vec<_> = wire::OptionIter::new(&b).collect();
    assert_eq!(errs.last(), Some(&Err(Error::BadOptionLength)));
    // Length byte itself missing.
    let mut b = DISCOVER_BYTES[..240].to_vec();
    b.extend_from_slice(&[53]);
    let errs: Vec<_> = wire::OptionIter::new(&b).collect();
    assert_eq!(errs, [Err(Error::BadOptionLength)]);
    // Thousands of tiny options.
    let mut b = DISCOVER_BYTES[..240].to_vec();
    for _ in 0..2000 {
        b.extend_from_slice(&[200, 0]);
    }
    assert!(
        Packet::new_checked(&b[..])
            .unwrap()
            .options()
            .any(|o| o == Err(Error::TooManyOptions))
    );
    // Bad overload value.
    let mut b = DISCOVER_BYTES[..240].to_vec();
    b.extend_from_slice(&[52, 1, 7, 255]);
    let errs: Vec<_> = wire::OptionIter::new(&b).collect();
    assert_eq!(errs, [Err(Error::BadOverload)]);
    // A missing END is tolerated.
    let mut b = DISCOVER_BYTES[..240].to_vec();
    b.extend_from_slice(&[53, 1, 1]);
    assert_eq!(codes(&b), [53]);
}

#[test]
fn malformed_inputs_are_counted_and_never_panic() {
    let mut s = server();
    let good = client(MAC, v4::MessageType::Discover, |_| {});
    let cases: Vec<(Vec<u8>, Error)> = vec![
        (good[..100].to_vec(), Error::Truncated),
        (
            {
                let mut b = good.clone();
                b[239] ^= 1;
                b
            },
            Error::BadMagicCookie,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 55, 200, 1]);
                b
            },
            Error::BadOptionLength,
        ),
        (
            {
                let mut b = good.clone();
                b[0] = 2;
                b
            },
            Error::BadOp,
        ),
        (
            {
                let mut b = good.clone();
                b[2] = 16;
                b
            },
            Error::BadHardwareAddress,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[55, 1, 1, 255]);
                b
            },
            Error::MissingMessageType,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 42, 255]);
                b
            },
            Error::BadMessageType,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                for _ in 0..5000 {
                    b.extend_from_slice(&[53, 1, 1]);
                }
                b
            },
            Error::TooManyOptions,
        ),
    ];
    for (bytes, err) in &cases {
        assert!(s.handle(bytes, meta(MAC), T0).is_none(), "{err:?}");
        assert_eq!(
            s.counters().drops(DropReason::Malformed(*err)),
            1,
            "{err:?}"
        );
    }
    assert_eq!(s.counters().total_drops(), cases.len() as u64);
    assert_eq!(s.lease(MAC, T0), None);

    // Every truncation and a pseudo-random byte mutation of a valid request: no panic.
    let req = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
    });
    for n in 0..req.len() {
        let _ = s.handle(&req[..n], meta(MAC), T0);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut b = req.clone();
        for _ in 0..(rng.next() % 8 + 1) {
            let i = (rng.next() as usize) % b.len();
            b[i] = rng.next() as u8;
        }
        if let Some(r) = s.handle(&b, meta(MAC), T0) {
            assert!(r.payload.len() <= 1450 - 28);
            Message::from_bytes(&r.payload).unwrap();
        }
    }
    assert!(s.len() <= 16);
}

#[test]
fn option_overload_is_parsed() {
    // Options area: 53, 52=3; file: 12 "host", END; sname: 15 "dom", END.
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    b[108..115].copy_from_slice(&[12, 4, b'h', b'o', b's', b't', 255]);
    b[44..50].copy_from_slice(&[15, 3, b'd', b'o', b'm', 255]);
    b.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
    let opts: Vec<_> = wire::OptionIter::new(&b).map(|o| o.unwrap()).collect();
    let got: Vec<(u8, &[u8])> = opts.iter().map(|o| (o.code, o.data)).collect();
    assert_eq!(
        got,
        [
            (53, &[1u8][..]),
            (52, &[3][..]),
            (12, &b"host"[..]),
            (15, &b"dom"[..])
        ]
    );
    // Only `file` (52 = 1): sname is not read as options.
    b[245] = 1;
    assert_eq!(codes(&b), [53, 52, 12]);
    // A 52 inside `file` is ignored (it may only appear in the options area).
    b[108..118].copy_from_slice(&[52, 1, 2, 12, 4, b'h', b'o', b's', b't', 255]);
    assert_eq!(codes(&b), [53, 52, 52, 12]);
}

#[test]
fn classless_routes_rfc3442_examples() {
    let r = Ipv4Addr::new(10, 0, 0, 1);
    let enc = |dst, len| wire::encode_classless_routes(&[(dst, len, r)], 255);
    assert_eq!(enc(Ipv4Addr::new(10, 0, 0, 0), 8), [8, 10, 10, 0, 0, 1]);
    assert_eq!(enc(Ipv4Addr::UNSPECIFIED, 0), [0, 10, 0, 0, 1]);
    assert_eq!(
        enc(Ipv4Addr::new(10, 17, 0, 0), 16),
        [16, 10, 17, 10, 0, 0, 1]
    );
    assert_eq!(
        enc(Ipv4Addr::new(10, 27, 129, 0), 24),
        [24, 10, 27, 129, 10, 0, 0, 1]
    );
    assert_eq!(
        enc(Ipv4Addr::new(10, 229, 0, 128), 25),
        [25, 10, 229, 0, 128, 10, 0, 0, 1]
    );
    assert_eq!(
        enc(Ipv4Addr::new(10, 198, 122, 47), 32),
        [32, 10, 198, 122, 47, 10, 0, 0, 1]
    );
    // Host bits beyond the prefix are cleared.
    assert_eq!(
        enc(Ipv4Addr::new(10, 17, 3, 4), 16),
        [16, 10, 17, 10, 0, 0, 1]
    );
    // Whole routes only within the limit.
    let many = vec![(Ipv4Addr::new(10, 0, 0, 0), 8, r); 100];
    let e = wire::encode_classless_routes(&many, 255);
    assert_eq!(e.len(), 42 * 6);
}

// ---------------------------------------------------------------- engine

#[test]
fn full_dora() {
    let mut s = server();
    let offer = s
        .handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            T0,
        )
        .unwrap();
    assert_eq!(offer.kind, MessageType::Offer);
    // No broadcast flag, no ciaddr, no giaddr: unicast to yiaddr / chaddr.
    assert_eq!(offer.dst_ip, VM_IP);
    assert_eq!(offer.dst_port, 68);
    assert_eq!(offer.dst_mac, Some(MAC));
    assert!(offer.payload.len() >= server::MIN_REPLY_LEN);
    assert!(offer.payload.len() <= 548);
    let m = decode(&offer);
    assert_eq!(m.opcode(), v4::Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.yiaddr(), VM_IP);
    assert_eq!(&m.chaddr()[..6], &MAC);
    let o = m.opts();
    assert_eq!(o.msg_type(), Some(v4::MessageType::Offer));
    assert!(
        matches!(o.get(OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(a)) if *a == SERVER_IP)
    );
    assert!(
        matches!(o.get(OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(a)) if *a == Ipv4Addr::new(255, 255, 255, 0))
    );
    assert!(matches!(o.get(OptionCode::Router), Some(DhcpOption::Router(a)) if *a == [GW]));
    assert!(
        matches!(o.get(OptionCode::DomainNameServer), Some(DhcpOption::DomainNameServer(a)) if *a == [SERVER_IP])
    );
    assert!(matches!(o.get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "vm1"));
    assert!(
        matches!(o.get(OptionCode::DomainName), Some(DhcpOption::DomainName(d)) if d == "openstacklocal")
    );
    assert!(matches!(
        o.get(OptionCode::InterfaceMtu),
        Some(DhcpOption::InterfaceMtu(1450))
    ));
    assert!(
        matches!(o.get(OptionCode::BroadcastAddr), Some(DhcpOption::BroadcastAddr(a)) if *a == Ipv4Addr::new(192, 168, 1, 255))
    );
    assert!(matches!(
        o.get(OptionCode::AddressLeaseTime),
        Some(DhcpOption::AddressLeaseTime(86400))
    ));
    // T1/T2 were not requested by this PRL.
    assert!(o.get(OptionCode::Renewal).is_none());
    let Some(DhcpOption::ClasslessStaticRoute(routes)) = o.get(OptionCode::ClasslessStaticRoute)
    else {
        panic!("no option 121");
    };
    let got: Vec<_> = routes
        .iter()
        .map(|(n, gw)| (n.addr(), n.prefix_len(), *gw))
        .collect();
    assert_eq!(got, expected_routes());
    assert_eq!(find(&offer.payload, 249), find(&offer.payload, 121));
    assert!(matches!(s.lease(MAC, T0), Some(LeaseState::Offered { .. })));

    let req = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
    });
    let ack = s.handle(&req, meta(MAC), T0 + 1).unwrap();
    assert_eq!(ack.kind, MessageType::Ack);
    let m = decode(&ack);
    assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(m.yiaddr(), VM_IP);
    assert_eq!(ack.dst_ip, VM_IP);
    assert_eq!(
        s.lease(MAC, T0 + 1),
        Some(LeaseState::Bound {
            until: T0 + 1 + 86400
        })
    );
    assert_eq!(s.lease(MAC, T0 + 1 + 86400), None);
    let c = s.counters();
    assert_eq!((c.offers, c.acks, c.naks, c.total_drops()), (1, 1, 0, 0));
}

#[test]
fn broadcast_flag_means_broadcast() {
    let mut s = server();
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.set_flags(Flags::default().set_broadcast());
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    assert_eq!(
        (r.dst_ip, r.dst_port, r.dst_mac),
        (Ipv4Addr::BROADCAST, 68, None)
    );
    assert!(decode(&r).flags().broadcast());
}

#[test]
fn t1_t2_when_asked() {
    let mut s = server();
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    assert_eq!(codes(&r.payload), [53, 54, 51, 58, 59, 1, 26]);
    let m = decode(&r);
    assert!(matches!(
        m.opts().get(OptionCode::Renewal),
        Some(DhcpOption::Renewal(43200))
    ));
    assert!(matches!(
        m.opts().get(OptionCode::Rebinding),
        Some(DhcpOption::Rebinding(75600))
    ));
}

fn renew(s: &mut Server, ciaddr: Ipv4Addr, now: u64) -> Option<server::Reply> {
    let r = client(MAC, v4::MessageType::Request, |m| {
        m.set_ciaddr(ciaddr);
    });
    let mut meta = meta([0x02, 0, 0, 0, 0, 0x99]);
    meta.src_ip = ciaddr;
    s.handle(&r, meta, now)
}

#[test]
fn renew_and_rebind() {
    let mut s = server();
    dora(&mut s, T0);
    // RENEWING (unicast) and REBINDING (broadcast) look the same to the server: ciaddr
    // set, no server id, no requested address. Reply unicast to ciaddr via the sender.
    for now in [T0 + 43200, T0 + 75600] {
        let ack = renew(&mut s, VM_IP, now).unwrap();
        assert_eq!(ack.kind, MessageType::Ack);
        assert_eq!(ack.dst_ip, VM_IP);
        assert_eq!(ack.dst_mac, Some([0x02, 0, 0, 0, 0, 0x99]));
        let m = decode(&ack);
        assert_eq!(m.yiaddr(), VM_IP);
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            s.lease(MAC, now),
            Some(LeaseState::Bound { until: now + 86400 })
        );
    }
    // Renewing an address that is not this MAC's: NAK, broadcast.
    let nak = renew(&mut s, Ipv4Addr::new(192, 168, 1, 77), T0 + 80000).unwrap();
    assert_eq!(nak.kind, MessageType::Nak);
    assert_eq!(nak.dst_ip, Ipv4Addr::BROADCAST);
    assert_eq!(s.counters().acks, 3);
    assert_eq!(s.counters().naks, 1);
}

#[test]
fn ack_after_restart() {
    // A fresh server (appliance restarted) has no lease, yet the reservation stands.
    let mut s = server();
    let ack = renew(&mut s, VM_IP, T0).unwrap();
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(decode(&ack).yiaddr(), VM_IP);
}

fn init_reboot(s: &mut Server, ip: Ipv4Addr) -> server::Reply {
    let r = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    });
    s.handle(&r, meta(MAC), T0).unwrap()
}

#[test]
fn init_reboot_ack_and_nak() {
    let mut s = server();
    let ack = init_reboot(&mut s, VM_IP);
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(decode(&ack).yiaddr(), VM_IP);

    // Wrong subnet (the VM moved networks) and wrong address in our subnet: NAK.
    for ip in [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(192, 168, 1, 99)] {
        let nak = init_reboot(&mut s, ip);
        assert_eq!(nak.kind, MessageType::Nak);
        assert_eq!(
            (nak.dst_ip, nak.dst_port, nak.dst_mac),
            (Ipv4Addr::BROADCAST, 68, None)
        );
        let m = decode(&nak);
        assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(codes(&nak.payload), [53, 54]);
    }
    assert_eq!(s.counters().naks, 2);
}

#[test]
fn request_for_another_server_forgets_offer() {
    let mut s = server();
    s.handle(
        &client(MAC, v4::MessageType::Discover, |_| {}),
        meta(MAC),
        T0,
    )
    .unwrap();
    assert!(s.lease(MAC, T0).is_some());
    let req = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 168, 1, 9)));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
    });
    assert!(s.handle(&req, meta(MAC), T0).is_none());
    assert_eq!(s.lease(MAC, T0), None);
    assert_eq!(s.counters().drops(DropReason::WrongServer), 1);
}

#[test]
fn selecting_with_wrong_address_is_nak() {
    let mut s = server();
    let req = client(MAC, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                192, 168, 1, 12,
            )));
    });
    assert_eq!(
        s.handle(&req, meta(MAC), T0).unwrap().kind,
        MessageType::Nak
    );
}

#[test]
fn decline_backs_off() {
    let mut s = server();
    dora(&mut s, T0);
    let d = client(MAC, v4::MessageType::Decline, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
    });
    assert!(s.handle(&d, meta(MAC), T0 + 1).is_none());
    assert_eq!(s.counters().declines, 1);
    assert_eq!(s.lease(MAC, T0 + 1), None);
    let disc = client(MAC, v4::MessageType::Discover, |_| {});
    assert!(s.handle(&disc, meta(MAC), T0 + 2).is_none());
    assert_eq!(s.counters().drops(DropReason::AddressDeclined), 1);
    let later = T0 + 2 + server::DECLINE_BACKOFF_SECS;
    assert_eq!(
        s.handle(&disc, meta(MAC), later).unwrap().kind,
        MessageType::Offer
    );
}

#[test]
fn release_drops_lease() {
    let mut s = server();
    dora(&mut s, T0);
    assert!(s.lease(MAC, T0).is_some());
    let rel = client(MAC, v4::MessageType::Release, |m| {
        m.set_ciaddr(VM_IP);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
    });
    assert!(s.handle(&rel, meta(MAC), T0 + 5).is_none());
    assert_eq!(s.lease(MAC, T0 + 5), None);
    assert_eq!(s.counters().releases, 1);
    // A release for an address it does not hold is dropped, not counted as release.
    let bad = client(MAC, v4::MessageType::Release, |m| {
        m.set_ciaddr(Ipv4Addr::new(192, 168, 1, 77));
    });
    assert!(s.handle(&bad, meta(MAC), T0 + 6).is_none());
    assert_eq!(s.counters().releases, 1);
    assert_eq!(s.counters().drops(DropReason::BadState), 1);
}

#[test]
fn inform_gets_ack_without_lease() {
    let mut s = server();
    let inf = client(MAC, v4::MessageType::Inform, |m| {
        m.set_ciaddr(VM_IP);
    });
    let r = s.handle(&inf, meta(MAC), T0).unwrap();
    assert_eq!(r.kind, MessageType::Ack);
    assert_eq!((r.dst_ip, r.dst_port, r.dst_mac), (VM_IP, 68, Some(MAC)));
    let m = decode(&r);
    assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.ciaddr(), VM_IP);
    let c = codes(&r.payload);
    assert!(!c.contains(&51) && !c.contains(&58) && !c.contains(&59));
    assert!(c.contains(&121) && c.contains(&26));
    assert_eq!(s.lease(MAC, T0), None);
    assert_eq!((s.counters().informs, s.counters().acks), (1, 0));
}

#[test]
fn prl_order_is_honoured() {
    let mut s = server();
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.opts_mut().insert(DhcpOption::ParameterRequestList(
            [121u8, 15, 6, 3, 1, 12, 121, 99, 53]
                .iter()
                .map(|&c| OptionCode::from(c))
                .collect(),
        ));
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    // 53, 54, 51 mandatory; then the list in its order (duplicates, unknown and already
    // sent codes skipped); then forced 26. Not requested: 28, 249, 58, 59.
    assert_eq!(codes(&r.payload), [53, 54, 51, 121, 15, 6, 3, 1, 12, 26]);
}

#[test]
fn no_prl_sends_the_usual_set() {
    let mut s = server();
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.opts_mut().remove(OptionCode::ParameterRequestList);
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    assert_eq!(
        codes(&r.payload),
        [53, 54, 51, 1, 3, 6, 12, 15, 28, 58, 59, 121, 26]
    );
}

#[test]
fn dns_none_and_no_gateway() {
    let mut c = config();
    c.dns_servers = vec![Ipv4Addr::UNSPECIFIED];
    c.gateway = None;
    c.domain = String::new();
    let mut s = Server::new(c);
    s.add_or_update(Reservation {
        mac: MAC,
        ip: VM_IP,
        hostname: String::from("vm1"),
    })
    .unwrap();
    let r = s
        .handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            T0,
        )
        .unwrap();
    let c = codes(&r.payload);
    assert!(!c.contains(&3) && !c.contains(&6) && !c.contains(&15));
    let Some(DhcpOption::ClasslessStaticRoute(routes)) = decode(&r)
        .opts()
        .get(OptionCode::ClasslessStaticRoute)
        .cloned()
    else {
        panic!("no 121");
    };
    assert_eq!(routes.len(), 3, "no default route without a gateway");

    // A configured DNS list is sent as is.
    let mut c = config();
    c.dns_servers = vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)];
    s.set_config(c);
    let r = s
        .handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            T0,
        )
        .unwrap();
    assert_eq!(find(&r.payload, 6).unwrap(), [192, 0, 2, 53, 192, 0, 2, 54]);
}

fn big_config() -> ServerConfig {
    let mut c = config();
    // 16 host routes: 121 and 249 are 136 bytes each, too big for `file`; with the
    // other options they do not fit in a 548-byte message without overload.
    c.host_routes = (0..16)
        .map(|i| {
            (
                Ipv4Addr::new(10, i, 0, 0),
                16,
                Ipv4Addr::new(192, 168, 1, 254),
            )
        })
        .collect();
    c
}

#[test]
fn option_overload_when_options_do_not_fit() {
    let mut s = server();
    s.set_config(big_config());
    let r = s
        .handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            T0,
        )
        .unwrap();
    assert!(r.payload.len() <= 548, "576 minus IP and UDP headers");
    let c = codes(&r.payload);
    assert!(c.contains(&52));
    // Everything requested is there, in order, across the areas.
    let want = [53u8, 54, 51, 1, 3, 6, 12, 15, 26, 28, 121, 249];
    let mut got: Vec<u8> = c.iter().copied().filter(|&x| x != 52).collect();
    got.sort();
    let mut w = want.to_vec();
    w.sort();
    assert_eq!(got, w);
    let routes = find(&r.payload, 121).unwrap();
    assert_eq!(find(&r.payload, 249).unwrap(), routes);
    let expect = {
        let mut rs = vec![(Ipv4Addr::new(192, 168, 2, 0), 24, Ipv4Addr::UNSPECIFIED)];
        rs.extend(big_config().host_routes);
        rs.push((Ipv4Addr::new(169, 254, 169, 254), 32, MD));
        rs.push((Ipv4Addr::UNSPECIFIED, 0, GW));
        wire::encode_classless_routes(&rs, 255)
    };
    assert_eq!(routes, expect);
    // The oracle still reads the message (and its options area).
    let m = decode(&r);
    assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Offer));
    assert!(m.opts().get(OptionCode::OptionOverload).is_some());
}

#[test]
fn max_message_size_is_honoured() {
    let mut s = server();
    s.set_config(big_config());
    // A client that accepts 1500 bytes: no overload, everything in the options area,
    // capped by our own MTU of 1450.
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    assert!(r.payload.len() <= 1450 - 28);
    assert!(!codes(&r.payload).contains(&52));
    // A value below 576 is raised to 576.
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.opts_mut().insert(DhcpOption::MaxMessageSize(300));
    });
    let r = s.handle(&d, meta(MAC), T0).unwrap();
    assert!(r.payload.len() <= 548);
    assert!(codes(&r.payload).contains(&52));
    // Whatever the size, the layout writer never goes past it.
    for max in [241usize, 260, 300, 400, 548, 1000] {
        let mut buf = vec![0u8; wire::HEADER_LEN];
        Packet::new_unchecked(&mut buf[..]).set_magic_cookie();
        let big = [7u8; 200];
        let lay = wire::emit_options(
            &mut buf,
            &[(53, &[2])],
            &[(121, &big), (249, &big), (12, b"x")],
            max,
            300,
        );
        assert!(buf.len() <= max.max(241), "{max}");
        let c = codes(&buf);
        assert_eq!(c.len() - usize::from(c.contains(&52)), lay.placed.len());
    }
}

#[test]
fn unknown_mac_is_ignored() {
    let mut s = server();
    for t in [
        v4::MessageType::Discover,
        v4::MessageType::Request,
        v4::MessageType::Inform,
        v4::MessageType::Release,
        v4::MessageType::Decline,
    ] {
        let m = client(MAC2, t, |m| {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
        });
        assert!(s.handle(&m, meta(MAC2), T0).is_none());
    }
    assert_eq!(s.counters().drops(DropReason::UnknownClient), 5);
    assert_eq!(s.lease(MAC2, T0), None);
}

#[test]
fn relayed_request() {
    let mut s = server();
    let relay = Ipv4Addr::new(192, 168, 1, 254);
    let relay_mac = [0x02, 0, 0, 0, 0, 0xfe];
    let rmeta = RxMeta {
        src_mac: relay_mac,
        src_ip: relay,
        src_port: 67,
    };
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.set_giaddr(relay);
        m.set_flags(Flags::default().set_broadcast());
    });
    let r = s.handle(&d, rmeta, T0).unwrap();
    assert_eq!(
        (r.dst_ip, r.dst_port, r.dst_mac),
        (relay, 67, Some(relay_mac))
    );
    let m = decode(&r);
    assert_eq!(m.giaddr(), relay);
    assert_eq!(m.yiaddr(), VM_IP);
    // A relayed NAK goes to the relay with the broadcast bit set.
    let req = client(MAC, v4::MessageType::Request, |m| {
        m.set_giaddr(relay);
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5)));
    });
    let nak = s.handle(&req, rmeta, T0).unwrap();
    assert_eq!(nak.kind, MessageType::Nak);
    assert_eq!((nak.dst_ip, nak.dst_port), (relay, 67));
    assert!(decode(&nak).flags().broadcast());
    // A relay from another network is not ours to answer.
    let d = client(MAC, v4::MessageType::Discover, |m| {
        m.set_giaddr(Ipv4Addr::new(172, 16, 0, 1));
    });
    assert!(s.handle(&d, rmeta, T0).is_none());
    assert_eq!(s.counters().drops(DropReason::WrongNetwork), 1);
}

#[test]
fn discover_flood_creates_no_state() {
    let mut s = server();
    let mut rng = Rng(42);
    for i in 0..10_000u32 {
        let r = rng.next().to_be_bytes();
        let mac = [r[0] & 0xfe, r[1], r[2], r[3], r[4], r[5]];
        let d = client(mac, v4::MessageType::Discover, |_| {});
        assert!(s.handle(&d, meta(mac), T0 + u64::from(i)).is_none());
        if i % 1000 == 0 {
            // The known client is served throughout.
            assert!(
                s.handle(
                    &client(MAC, v4::MessageType::Discover, |_| {}),
                    meta(MAC),
                    T0
                )
                .is_some()
            );
        }
    }
    assert_eq!(s.len(), 1);
    assert_eq!(s.counters().drops(DropReason::UnknownClient), 10_000);
    assert_eq!(s.counters().offers, 10);
}

#[test]
fn live_reservation_changes() {
    let mut s = server();
    dora(&mut s, T0);
    // The address is taken by MAC until MAC's reservation is removed.
    let r2 = Reservation {
        mac: MAC2,
        ip: VM_IP,
        hostname: String::from("vm2"),
    };
    assert_eq!(
        s.add_or_update(r2.clone()),
        Err(ReservationError::AddressInUse { by: MAC })
    );
    assert_eq!(s.remove(MAC).map(|r| r.ip), Some(VM_IP));
    assert_eq!(s.lease(MAC, T0), None);
    s.add_or_update(r2).unwrap();
    let disc = client(MAC2, v4::MessageType::Discover, |_| {});
    let r = s.handle(&disc, meta(MAC2), T0 + 1).unwrap();
    assert_eq!(decode(&r).yiaddr(), VM_IP);
    assert!(
        s.handle(
            &client(MAC, v4::MessageType::Discover, |_| {}),
            meta(MAC),
            T0 + 1
        )
        .is_none()
    );
    // Changing a reservation's address drops its lease.
    s.handle(
        &client(MAC2, v4::MessageType::Request, |m| {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(VM_IP));
        }),
        meta(MAC2),
        T0 + 2,
    )
    .unwrap();
    assert!(s.lease(MAC2, T0 + 2).is_some());
    s.add_or_update(Reservation {
        mac: MAC2,
        ip: Ipv4Addr::new(192, 168, 1, 12),
        hostname: String::from("vm2"),
    })
    .unwrap();
    assert_eq!(s.lease(MAC2, T0 + 2), None);
    // Refusals.
    let bad = |ip| Reservation {
        mac: MAC,
        ip,
        hostname: String::new(),
    };
    for ip in [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(192, 168, 1, 0),
        Ipv4Addr::new(192, 168, 1, 255),
    ] {
        assert_eq!(
            s.add_or_update(bad(ip)),
            Err(ReservationError::OutsideSubnet)
        );
    }
    let mut small = Server::with_capacity(config(), 1);
    small.add_or_update(bad(VM_IP)).unwrap();
    let mut other = bad(Ipv4Addr::new(192, 168, 1, 12));
    other.mac = MAC2;
    assert_eq!(small.add_or_update(other), Err(ReservationError::TableFull));
}

#[test]
fn client_sent_server_messages_are_dropped() {
    let mut s = server();
    let m = client(MAC, v4::MessageType::Offer, |_| {});
    assert!(s.handle(&m, meta(MAC), T0).is_none());
    assert_eq!(s.counters().drops(DropReason::UnexpectedMessageType), 1);
}

/// xorshift64: deterministic noise for the flood and mutation tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------- the fuzz body, on stable

use crate as dhcp;

/// The cargo-fuzz target's body (input layout and invariants), shared with `fuzz/`.
#[path = "../../../fuzz/dhcp_server_check.rs"]
mod fuzz_check;

/// Seed inputs for the fuzzer, in `fuzz_check`'s layout, built from real client messages.
/// `fuzz/corpus/dhcp_server/seed-<name>` holds them (see `committed_seed_corpus_is_current` to regenerate them).
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_check::{OP_CONFIG, OP_PACKET, OP_RELAYED, OP_REMOVE, OP_RESERVE, encode, ip, mac};
    use v4::MessageType as T;
    let (m, vm, sid) = (mac(0x11), ip(11), fuzz_check::SERVER_IP);
    let selecting = client(m, T::Request, |x| {
        x.opts_mut().insert(DhcpOption::ServerIdentifier(sid));
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(vm));
    });
    let discover = client(m, T::Discover, |_| {});
    let renew = client(m, T::Request, |x| {
        x.set_ciaddr(vm);
    });
    let release = client(m, T::Release, |x| {
        x.set_ciaddr(vm);
        x.opts_mut().insert(DhcpOption::ServerIdentifier(sid));
    });
    let decline = client(m, T::Decline, |x| {
        x.opts_mut().insert(DhcpOption::ServerIdentifier(sid));
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(vm));
    });
    let inform = client(m, T::Inform, |x| {
        x.set_ciaddr(vm);
    });
    let reboot_wrong = client(m, T::Request, |x| {
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(99)));
    });
    let relayed = client(m, T::Discover, |x| {
        x.set_giaddr(ip(254));
        x.set_flags(Flags::default().set_broadcast());
    });
    let big = client(m, T::Discover, |x| {
        x.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
    });
    let no_prl = client(m, T::Discover, |x| {
        x.opts_mut().remove(OptionCode::ParameterRequestList);
    });
    let other_server = client(m, T::Request, |x| {
        x.opts_mut().insert(DhcpOption::ServerIdentifier(ip(9)));
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(vm));
    });
    // Capacity 4, MTU 576 + 4 * 218 = 1448: about Neutron's 1450.
    let header = (4, 218);
    let p = |dt: u8, body: &[u8]| (OP_PACKET, dt, 0x11, 0, body.to_vec());
    type Seed = (
        &'static str,
        (usize, u8),
        Vec<(u8, u8)>,
        Vec<(u8, u8, u8, u8, Vec<u8>)>,
    );
    let seeds: Vec<Seed> = vec![
        (
            "dora",
            header,
            vec![(0x11, 11)],
            vec![p(0, &discover), p(1, &selecting)],
        ),
        (
            "lifecycle",
            header,
            vec![(0x11, 11), (0x22, 12)],
            vec![
                p(0, &discover),
                p(1, &selecting),
                (OP_PACKET, 0xf0, 0x11, 11, renew.clone()),
                (OP_PACKET, 0xf1, 0x11, 11, renew),
                p(0, &inform),
                p(0, &release),
                p(0, &discover),
                p(0, &selecting),
                p(5, &decline),
                p(5, &discover),
                (OP_PACKET, 0xf0, 0x11, 0, discover.clone()),
                p(0, &reboot_wrong),
                p(0, &other_server),
            ],
        ),
        (
            "relay",
            header,
            vec![(0x11, 11)],
            vec![
                (OP_RELAYED, 0, 0xfe, 254, relayed),
                (OP_RELAYED, 0, 0xfe, 254, reboot_wrong.clone()),
            ],
        ),
        (
            "table",
            (2, 0),
            vec![
                (1, 1),
                (2, 2),
                (3, 3),
                (4, 4),
                (5, 5),
                (6, 6),
                (7, 7),
                (8, 8),
            ],
            vec![
                (OP_RESERVE, 0, 0x11, 11, b"host-192-168-1-11".to_vec()),
                (OP_REMOVE, 0, 0x01, 0, Vec::new()),
                (OP_RESERVE, 0, 0x11, 11, b"vm".to_vec()),
                (OP_RESERVE, 0, 0x12, 11, Vec::new()),
                (OP_RESERVE, 0, 0x11, 255, Vec::new()),
                p(0, &discover),
                (OP_RESERVE, 0, 0x11, 12, Vec::new()),
                p(0, &selecting),
                (OP_REMOVE, 0, 0x11, 0, Vec::new()),
                p(0, &discover),
            ],
        ),
        (
            "options",
            header,
            vec![(0x11, 11)],
            vec![
                (OP_CONFIG, 0, 0, 0x38, Vec::new()),
                p(0, &discover),
                p(0, &big),
                p(0, &no_prl),
                (OP_CONFIG, 0, 0, 0x45, Vec::new()),
                p(0, &discover),
                (OP_CONFIG, 0, 0, 0x01, Vec::new()),
                p(0, &selecting),
                (OP_RESERVE, 0, 0x11, 11, vec![b'x'; 300]),
                p(0, &selecting),
            ],
        ),
        (
            "unknown-and-malformed",
            header,
            vec![(0x11, 11)],
            vec![
                p(0, DISCOVER_BYTES),
                p(0, &discover[..239]),
                p(0, &{
                    let mut b = discover.clone();
                    b[236] ^= 1;
                    b
                }),
                p(0, &client(m, T::Offer, |_| {})),
                p(0, &client(MAC2, T::Discover, |_| {})),
            ],
        ),
    ];
    seeds
        .into_iter()
        .map(|(name, header, res, recs)| {
            let recs: Vec<(u8, u8, u8, u8, &[u8])> = recs
                .iter()
                .map(|(op, dt, m, i, b)| (*op, *dt, *m, *i, &b[..]))
                .collect();
            (name, encode(header.0, header.1, &res, &recs))
        })
        .collect()
}

#[test]
fn fuzz_body_holds_on_seeds_and_mutations() {
    let seeds = fuzz_seeds();
    // The seeds reach every kind of reply and of drop that matters.
    let mut total = server::Counters::default();
    for (name, seed) in &seeds {
        let c = fuzz_check::run(seed);
        assert!(
            c.offers + c.acks + c.total_drops() > 0,
            "seed {name} does nothing"
        );
        total.offers += c.offers;
        total.acks += c.acks;
        total.naks += c.naks;
        total.releases += c.releases;
        total.declines += c.declines;
        total.informs += c.informs;
    }
    assert!(total.offers > 0 && total.acks > 0 && total.naks > 0);
    assert!(total.releases > 0 && total.declines > 0 && total.informs > 0);

    // libFuzzer's everyday mutations, deterministically: flips, truncation, insertion,
    // splicing two seeds, and pure noise.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..4000u32 {
        let mut b = seeds[rng.next() as usize % seeds.len()].1.clone();
        match round % 5 {
            0 => {
                for _ in 0..=rng.next() % 8 {
                    let i = rng.next() as usize % b.len();
                    b[i] = rng.next() as u8;
                }
            }
            1 => b.truncate(rng.next() as usize % b.len()),
            2 => {
                let at = rng.next() as usize % b.len();
                let noise: Vec<u8> = (0..rng.next() % 16).map(|_| rng.next() as u8).collect();
                b.splice(at..at, noise);
            }
            3 => {
                let other = &seeds[rng.next() as usize % seeds.len()].1;
                let at = rng.next() as usize % b.len();
                let from = rng.next() as usize % other.len();
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            _ => {
                b = (0..rng.next() % 700).map(|_| rng.next() as u8).collect();
            }
        }
        fuzz_check::run(&b);
    }
}

#[path = "../../../fuzz/seed_corpus.rs"]
mod seed_corpus;

#[test]
fn committed_seed_corpus_is_current() {
    seed_corpus::check("dhcp_server", "nanovnf-dhcp", &fuzz_seeds());
}
