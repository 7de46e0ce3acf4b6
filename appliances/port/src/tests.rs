//! Whole ARP and ping exchanges on a queue-backed fake NIC.

use super::filter::{DropReason, check};
use super::*;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_schema::Ipv4Cidr;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

const OUR_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const OUR_IP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

#[derive(Default)]
struct FakeNic {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for FakeNic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

fn nic_config() -> NicConfig {
    NicConfig {
        mac: OUR_MAC,
        addresses: vec![Ipv4Cidr::new(OUR_IP, 24), Ipv4Cidr::new(OUR_IP2, 8)],
        mtu: 1500,
    }
}

fn ethernet(
    dst: [u8; 6],
    ethertype: EthernetProtocol,
    payload_len: usize,
) -> (Vec<u8>, EthernetRepr) {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(dst),
        ethertype,
    };
    (vec![0; repr.buffer_len() + payload_len], repr)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(PEER_MAC),
        source_protocol_addr: PEER_IP,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let (mut buf, eth) = ethernet([0xff; 6], EthernetProtocol::Arp, arp.buffer_len());
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

fn echo_request(dst: Ipv4Addr, seq: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: seq,
        data,
    };
    let ip = Ipv4Repr {
        src_addr: PEER_IP,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let (mut buf, eth) = ethernet(
        OUR_MAC,
        EthernetProtocol::Ipv4,
        ip.buffer_len() + icmp.buffer_len(),
    );
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &smoltcp::phy::ChecksumCapabilities::default());
    icmp.emit(
        &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
        &smoltcp::phy::ChecksumCapabilities::default(),
    );
    buf
}

fn setup() -> (Port, FakeNic) {
    let mut nic = FakeNic::default();
    let port = Port::new(&nic_config(), &mut nic, Instant::ZERO, 7).unwrap();
    (port, nic)
}

fn parse_echo_reply(frame: &[u8]) -> (Ipv4Addr, u16, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress(PEER_MAC));
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.dst_addr(), PEER_IP);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    match Icmpv4Repr::parse(&icmp, &Default::default()).unwrap() {
        Icmpv4Repr::EchoReply { seq_no, data, .. } => (ip.src_addr(), seq_no, data.to_vec()),
        other => panic!("expected an echo reply, got {other:?}"),
    }
}

#[test]
fn answers_arp_for_each_address() {
    let (mut port, mut nic) = setup();
    for ip in [OUR_IP, OUR_IP2] {
        nic.rx.push_back(arp_request(ip));
        port.poll(&mut nic, Instant::from_millis(1));
        let reply = nic.tx.pop().expect("an ARP reply");
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        match arp {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_hardware_addr, EthernetAddress(OUR_MAC));
                assert_eq!(source_protocol_addr, ip);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ignores_arp_for_other_addresses() {
    let (mut port, mut nic) = setup();
    nic.rx
        .push_back(arp_request(Ipv4Addr::new(192, 168, 1, 99)));
    port.poll(&mut nic, Instant::from_millis(1));
    assert!(nic.tx.is_empty());
    assert_eq!(
        port.drops.total(),
        0,
        "a valid ARP for someone else is not a malformed frame"
    );
}

#[test]
fn answers_a_burst_of_echo_requests_in_one_poll() {
    let (mut port, mut nic) = setup();
    nic.rx.push_back(arp_request(OUR_IP));
    for seq in 0..20 {
        nic.rx
            .push_back(echo_request(OUR_IP, seq, b"nanovnf ping payload"));
    }
    port.poll(&mut nic, Instant::from_millis(1));
    assert_eq!(nic.tx.len(), 21, "one ARP reply and twenty echo replies");
    for (seq, frame) in nic.tx[1..].iter().enumerate() {
        let (src, got_seq, data) = parse_echo_reply(frame);
        assert_eq!(
            (src, got_seq as usize, &data[..]),
            (OUR_IP, seq, &b"nanovnf ping payload"[..])
        );
    }
}

#[test]
fn malformed_frames_are_counted_by_reason_and_never_answered() {
    let (mut port, mut nic) = setup();
    nic.rx.push_back(arp_request(OUR_IP));
    port.poll(&mut nic, Instant::from_millis(1));
    nic.tx.clear();

    let good = echo_request(OUR_IP, 1, b"x");
    let mut bad_ip_sum = good.clone();
    bad_ip_sum[14 + 10] ^= 0xff;
    let mut bad_icmp_sum = good.clone();
    let last = bad_icmp_sum.len() - 1;
    bad_icmp_sum[last] ^= 0xff;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut long_total = good.clone();
    long_total[14 + 2] = 0xff;
    let mut bad_arp = arp_request(OUR_IP);
    bad_arp[14 + 4] = 7; // hardware address length
    let mut other_mac = good.clone();
    other_mac[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    let mut ipv6 = good.clone();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut oversized = good.clone();
    oversized.resize(1600, 0);

    let cases: [(Vec<u8>, DropReason); 10] = [
        (vec![], DropReason::TruncatedEthernet),
        (good[..13].to_vec(), DropReason::TruncatedEthernet),
        (good[..20].to_vec(), DropReason::MalformedIpv4),
        (bad_ihl, DropReason::MalformedIpv4),
        (long_total, DropReason::MalformedIpv4),
        (bad_ip_sum, DropReason::BadIpv4Checksum),
        (bad_icmp_sum, DropReason::BadIcmpChecksum),
        (bad_arp, DropReason::MalformedArp),
        (other_mac, DropReason::NotForUs),
        (ipv6, DropReason::UnknownEthertype),
    ];
    for (frame, reason) in &cases {
        let before = port.drops.get(*reason);
        nic.rx.push_back(frame.clone());
        port.poll(&mut nic, Instant::from_millis(2));
        assert_eq!(port.drops.get(*reason), before + 1, "{reason:?}");
    }
    nic.rx.push_back(oversized);
    port.poll(&mut nic, Instant::from_millis(2));
    assert_eq!(port.drops.get(DropReason::Oversized), 1);
    assert!(nic.tx.is_empty(), "nothing malformed is answered");
    assert_eq!(port.drops.total(), 11);

    // And the port still answers afterwards.
    nic.rx.push_back(echo_request(OUR_IP, 9, b"alive"));
    port.poll(&mut nic, Instant::from_millis(3));
    assert_eq!(parse_echo_reply(&nic.tx[0]).1, 9);
}

#[test]
fn random_bytes_never_panic() {
    let (mut port, mut nic) = setup();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1600) as usize;
        let mut frame = Vec::with_capacity(len);
        let mut y = x;
        for _ in 0..len {
            y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
            frame.push((y >> 56) as u8);
        }
        if x & 1 == 0 && frame.len() >= 14 {
            // Half of them look like frames for us, so deeper layers get exercised.
            frame[..6].copy_from_slice(&OUR_MAC);
            frame[12..14].copy_from_slice(if x & 2 == 0 {
                &[0x08, 0x00]
            } else {
                &[0x08, 0x06]
            });
        }
        nic.rx.push_back(frame);
    }
    port.poll(&mut nic, Instant::from_millis(1));
    assert!(port.drops.total() > 1500);
}

#[test]
fn check_accepts_what_the_stack_should_see() {
    let mac = EthernetAddress(OUR_MAC);
    assert_eq!(check(&arp_request(OUR_IP), mac, 1514), Ok(()));
    assert_eq!(check(&echo_request(OUR_IP, 1, b"hi"), mac, 1514), Ok(()));
}

#[test]
fn too_many_addresses_is_an_error() {
    let mut nic = FakeNic::default();
    let mut cfg = nic_config();
    cfg.addresses = (1..=5)
        .map(|i| Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, i), 24))
        .collect();
    let err = Port::new(&cfg, &mut nic, Instant::ZERO, 1).err();
    assert_eq!(err, Some(PortError::TooManyAddresses(cfg.addresses[4])));
}

/// Takes echo requests with sequence number 7 and answers each with a fixed frame.
struct TakeSeven {
    taken: usize,
}

impl Detour for TakeSeven {
    fn take(&mut self, frame: &[u8], out: &mut Outbox) -> bool {
        let seven = EthernetFrame::new_checked(frame)
            .ok()
            .and_then(|eth| {
                Ipv4Packet::new_checked(eth.payload())
                    .ok()
                    .map(|ip| ip.payload().to_vec())
            })
            .and_then(|icmp| {
                Icmpv4Packet::new_checked(icmp)
                    .ok()
                    .map(|p| p.echo_seq_no())
            })
            == Some(7);
        if seven {
            self.taken += 1;
            if let Some(buf) = out.push(3) {
                buf.copy_from_slice(b"abc");
            }
        }
        seven
    }
}

#[test]
fn a_detour_takes_frames_before_the_stack_and_its_replies_are_sent() {
    let (mut port, mut nic) = setup();
    let mut detour = TakeSeven { taken: 0 };
    nic.rx.push_back(arp_request(OUR_IP)); // teaches the stack the peer's MAC
    for seq in [6, 7, 8] {
        nic.rx.push_back(echo_request(OUR_IP, seq, b"x"));
    }
    nic.rx.push_back(vec![0; 3]); // malformed: counted by the filter, never offered
    port.poll_with(&mut nic, Instant::from_millis(1), &mut detour);
    assert_eq!(detour.taken, 1);
    assert_eq!(port.drops.get(DropReason::TruncatedEthernet), 1);
    let seqs: Vec<u16> = nic
        .tx
        .iter()
        .filter(|f| {
            f.len() > 3
                && EthernetFrame::new_unchecked(&f[..]).ethertype() == EthernetProtocol::Ipv4
        })
        .map(|f| parse_echo_reply(f).1)
        .collect();
    assert_eq!(seqs, [6, 8], "the stack answered what the detour left");
    assert_eq!(nic.tx.iter().filter(|f| f[..] == b"abc"[..]).count(), 1);
}

#[test]
fn the_outbox_is_bounded_and_reuses_buffers() {
    let mut out = Outbox::default();
    for _ in 0..Outbox::LIMIT {
        assert!(out.push(60).is_some());
    }
    assert!(out.push(60).is_none());
    assert_eq!(out.overflows, 1);
    let mut nic = FakeNic::default();
    out.send(&mut nic, Instant::ZERO);
    assert!(out.is_empty());
    assert_eq!(nic.tx.len(), Outbox::LIMIT);
    assert_eq!(out.push(10).map(|b| b.len()), Some(10));
}
