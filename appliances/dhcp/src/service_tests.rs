//! The appliance glue on whole frames: what a client's NIC would put on the wire goes in,
//! and what comes out is checked as a client would (Ethernet/IPv4/UDP, then dhcproto).

extern crate std;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message};
use dhcproto::{Decodable, Encodable};
use nanovnf_port::{Detour, Outbox};
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::{DhcpHost, DhcpRole, DhcpSubnet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use crate::service::{FrameDrop, Service, ServiceError};

const OUR_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0, 1];
const VM1: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x11];
const VM2: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x22];
const VM3: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x33];
const SERVER_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const SERVER_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);

fn subnet(n: u8) -> DhcpSubnet {
    DhcpSubnet {
        cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, n, 0), 24),
        server_ip: Ipv4Addr::new(192, 168, n, 2),
        gateway: Some(Ipv4Addr::new(192, 168, n, 1)),
        dns_servers: vec![],
        domain: String::from("openstacklocal"),
        lease_secs: 86400,
        host_routes: vec![],
        other_subnets: vec![],
        metadata_ip: Some(Ipv4Addr::new(192, 168, n, 3)),
    }
}

fn host(mac: [u8; 6], ip: [u8; 4], name: &str) -> DhcpHost {
    DhcpHost {
        mac,
        ip: Ipv4Addr::from(ip),
        hostname: String::from(name),
    }
}

fn service() -> Service {
    let role = DhcpRole {
        subnets: vec![subnet(1), subnet(2)],
        hosts: vec![
            host(VM1, [192, 168, 1, 11], "vm1"),
            host(VM2, [192, 168, 2, 22], "vm2"),
        ],
        upstream_resolvers: vec![],
    };
    let mut s = Service::new(&role, OUR_MAC, 1450).unwrap();
    s.set_time(100);
    s
}

/// A client's frame: from `mac`, `src` → `dst`, UDP 68 → 67.
fn frame(mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, dhcp: &[u8]) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: 68,
        dst_port: 67,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: if dst.is_broadcast() {
            EthernetAddress::BROADCAST
        } else {
            EthernetAddress(OUR_MAC)
        },
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; 14 + 20 + 8 + dhcp.len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        dhcp.len(),
        |b| b.copy_from_slice(dhcp),
        &caps,
    );
    buf
}

fn message(mac: [u8; 6], t: v4::MessageType, f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0xabcd, z, z, z, z, &mac);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    f(&mut m);
    m.to_vec().unwrap()
}

/// What a client sees of a reply frame: Ethernet destination, IPv4 source and
/// destination, UDP destination port and the decoded message.
struct Seen {
    eth_dst: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    port: u16,
    msg: Message,
}

fn seen(frame: &[u8]) -> Seen {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.src_addr(), EthernetAddress(OUR_MAC));
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    assert!(udp.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
    assert_eq!(udp.src_port(), 67);
    Seen {
        eth_dst: eth.dst_addr().0,
        ip_src: s,
        ip_dst: d,
        port: udp.dst_port(),
        msg: Message::from_bytes(udp.payload()).unwrap(),
    }
}

fn exchange(s: &mut Service, frame: &[u8]) -> Option<Seen> {
    let mut out = Outbox::default();
    assert!(s.take(frame, &mut out), "port 67 frames are always taken");
    let mut nic = Sink::default();
    out.send(&mut nic, smoltcp::time::Instant::ZERO);
    assert!(nic.0.len() <= 1);
    nic.0.pop().map(|f| seen(&f))
}

/// Collects what the outbox sends.
#[derive(Default)]
struct Sink(Vec<Vec<u8>>);

struct SinkTx<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::TxToken for SinkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

struct NoRx;

impl smoltcp::phy::RxToken for NoRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl smoltcp::phy::Device for Sink {
    type RxToken<'a> = NoRx;
    type TxToken<'a> = SinkTx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(NoRx, SinkTx<'_>)> {
        None
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<SinkTx<'_>> {
        Some(SinkTx(&mut self.0))
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        smoltcp::phy::DeviceCapabilities::default()
    }
}

fn counter(s: &Service, name: &str) -> u64 {
    s.counters()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const BCAST: Ipv4Addr = Ipv4Addr::BROADCAST;

#[test]
fn dora_on_frames_from_each_subnet() {
    let mut s = service();
    for (mac, ip, server) in [
        (VM1, Ipv4Addr::new(192, 168, 1, 11), SERVER_A),
        (VM2, Ipv4Addr::new(192, 168, 2, 22), SERVER_B),
    ] {
        let discover = message(mac, v4::MessageType::Discover, |_| {});
        let offer = exchange(&mut s, &frame(mac, ANY, BCAST, &discover)).expect("an offer");
        assert_eq!(offer.msg.yiaddr(), ip);
        assert_eq!(
            offer.ip_src, server,
            "answered from the subnet's own address"
        );
        // No broadcast flag: unicast to the offered address and the client's MAC.
        assert_eq!((offer.eth_dst, offer.ip_dst, offer.port), (mac, ip, 68));
        let request = message(mac, v4::MessageType::Request, |m| {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        });
        let ack = exchange(&mut s, &frame(mac, ANY, BCAST, &request)).expect("an ack");
        assert_eq!(ack.msg.yiaddr(), ip);
        assert_eq!(
            ack.msg.opts().get(v4::OptionCode::InterfaceMtu),
            Some(&DhcpOption::InterfaceMtu(1450))
        );
    }
    assert_eq!((counter(&s, "offers"), counter(&s, "acks")), (2, 2));
}

#[test]
fn broadcast_flag_and_unicast_renewal() {
    let mut s = service();
    let discover = message(VM1, v4::MessageType::Discover, |m| {
        m.set_flags(Flags::default().set_broadcast());
    });
    let offer = exchange(&mut s, &frame(VM1, ANY, BCAST, &discover)).unwrap();
    assert_eq!((offer.eth_dst, offer.ip_dst), ([0xff; 6], BCAST));
    // A renewing client unicasts to the server with ciaddr set.
    let ip = Ipv4Addr::new(192, 168, 1, 11);
    let renew = message(VM1, v4::MessageType::Request, |m| {
        m.set_ciaddr(ip);
    });
    let ack = exchange(&mut s, &frame(VM1, ip, SERVER_A, &renew)).expect("renewal acked");
    assert_eq!(ack.msg.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!((ack.eth_dst, ack.ip_dst), (VM1, ip));
}

#[test]
fn unknown_mac_bad_checksum_and_foreign_unicast_are_dropped_and_counted() {
    let mut s = service();
    let discover = message(VM3, v4::MessageType::Discover, |_| {});
    assert!(exchange(&mut s, &frame(VM3, ANY, BCAST, &discover)).is_none());
    assert_eq!(counter(&s, "drop_unknown_client"), 1);

    let mut bad = frame(
        VM1,
        ANY,
        BCAST,
        &message(VM1, v4::MessageType::Discover, |_| {}),
    );
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // payload changed under the UDP checksum
    assert!(exchange(&mut s, &bad).is_none());
    assert_eq!(s.frame_drops(FrameDrop::BadUdpChecksum), 1);

    let elsewhere = Ipv4Addr::new(192, 168, 1, 200);
    let f = frame(
        VM1,
        ANY,
        elsewhere,
        &message(VM1, v4::MessageType::Discover, |_| {}),
    );
    assert!(exchange(&mut s, &f).is_none());
    assert_eq!(counter(&s, "drop_not_our_address"), 1);
    assert_eq!(counter(&s, "offers"), 0);
}

#[test]
fn frames_for_other_services_are_left_to_the_stack() {
    let mut s = service();
    let mut f = frame(
        VM1,
        ANY,
        BCAST,
        &message(VM1, v4::MessageType::Discover, |_| {}),
    );
    // Same datagram to port 68: not ours.
    f[14 + 20 + 3] = 68;
    let mut out = Outbox::default();
    assert!(!s.take(&f, &mut out));
    assert!(!s.take(&[0u8; 10], &mut out));
    assert!(out.is_empty());
}

#[test]
fn live_changes_move_an_address_to_another_mac_at_once() {
    let mut s = service();
    let ip = [192, 168, 1, 11];
    // VM1 holds a lease.
    let discover = message(VM1, v4::MessageType::Discover, |_| {});
    assert!(exchange(&mut s, &frame(VM1, ANY, BCAST, &discover)).is_some());
    // Giving its address to VM3 is refused while VM1 reserves it…
    let err = s.apply(&Op::DhcpUpsert(host(VM3, ip, "vm3"))).unwrap_err();
    assert!(matches!(err, ServiceError::Reservation { .. }));
    // …and accepted once VM1's reservation is removed.
    s.apply(&Op::DhcpRemove { mac: VM1 }).unwrap();
    s.apply(&Op::DhcpUpsert(host(VM3, ip, "vm3"))).unwrap();
    let discover = message(VM3, v4::MessageType::Discover, |_| {});
    let offer = exchange(&mut s, &frame(VM3, ANY, BCAST, &discover)).unwrap();
    assert_eq!(offer.msg.yiaddr(), Ipv4Addr::from(ip));
    let discover = message(VM1, v4::MessageType::Discover, |_| {});
    assert!(exchange(&mut s, &frame(VM1, ANY, BCAST, &discover)).is_none());
    // Removing twice is fine; an address outside every subnet is refused.
    s.apply(&Op::DhcpRemove { mac: VM1 }).unwrap();
    assert_eq!(
        s.apply(&Op::DhcpUpsert(host(VM1, [10, 0, 0, 5], "x"))),
        Err(ServiceError::NoSubnetFor {
            ip: Ipv4Addr::new(10, 0, 0, 5)
        })
    );
    assert_eq!(s.apply(&Op::Ping), Err(ServiceError::NotDhcp));
}

#[test]
fn moving_a_port_to_another_subnet_leaves_the_old_one() {
    let mut s = service();
    s.apply(&Op::DhcpUpsert(host(VM1, [192, 168, 2, 50], "vm1")))
        .unwrap();
    assert_eq!(counter(&s, "reservations"), 2);
    let discover = message(VM1, v4::MessageType::Discover, |_| {});
    let offer = exchange(&mut s, &frame(VM1, ANY, BCAST, &discover)).unwrap();
    assert_eq!(offer.msg.yiaddr(), Ipv4Addr::new(192, 168, 2, 50));
    assert_eq!(offer.ip_src, SERVER_B);
}

#[test]
fn a_role_with_a_stray_host_is_refused() {
    let role = DhcpRole {
        subnets: vec![subnet(1)],
        hosts: vec![host(VM1, [172, 16, 0, 9], "x")],
        upstream_resolvers: vec![],
    };
    assert!(matches!(
        Service::new(&role, OUR_MAC, 1500),
        Err(ServiceError::NoSubnetFor { .. })
    ));
    let empty = DhcpRole {
        subnets: vec![],
        hosts: vec![],
        upstream_resolvers: vec![],
    };
    assert!(matches!(
        Service::new(&empty, OUR_MAC, 1500),
        Err(ServiceError::NoSubnet)
    ));
}

#[test]
fn random_frames_never_panic() {
    let mut s = service();
    let base = frame(
        VM1,
        ANY,
        BCAST,
        &message(VM1, v4::MessageType::Discover, |_| {}),
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Outbox::default();
    for _ in 0..5000 {
        let mut f = base.clone();
        let cut = (next() as usize) % (f.len() + 1);
        f.truncate(cut.max(34));
        for _ in 0..(next() % 6) {
            let i = (next() as usize) % f.len();
            f[i] = next() as u8;
        }
        s.take(&f, &mut out);
        let mut sink = Sink::default();
        out.send(&mut sink, smoltcp::time::Instant::ZERO);
    }
}
