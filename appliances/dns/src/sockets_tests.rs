//! The socket glue on smoltcp's loopback device: DNS over TCP (pipelined queries, a
//! forwarded one answered through the upstream UDP socket, oversized and idle
//! connections), with a fake upstream resolver on 127.0.0.1:53.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use nanovnf_port::Outbox;
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::dhcp::{DhcpHost, DhcpRole, DhcpSubnet};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use crate::sockets::{MAX_TCP_QUERY, TCP_IDLE_MS};
use crate::{Service, Sockets};

const LOOP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn role() -> DhcpRole {
    DhcpRole {
        subnets: vec![DhcpSubnet {
            cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
            server_ip: Ipv4Addr::new(192, 168, 1, 2),
            gateway: None,
            dns_servers: vec![],
            domain: "nanovnf.test".into(),
            lease_secs: 3600,
            host_routes: vec![],
            other_subnets: vec![],
            metadata_ip: None,
        }],
        hosts: vec![DhcpHost {
            mac: [0xfa, 0x16, 0x3e, 0, 0, 1],
            ip: Ipv4Addr::new(192, 168, 1, 11),
            hostname: "vm1".into(),
        }],
        upstream_resolvers: vec![LOOP],
    }
}

fn query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// One loopback interface holding the DNS sockets, a TCP client and a fake upstream.
struct Rig {
    device: Loopback,
    iface: Interface,
    sockets: Sockets,
    dns: Service,
    outbox: Outbox,
    client: smoltcp::iface::SocketHandle,
    upstream: smoltcp::iface::SocketHandle,
    now_ms: u64,
}

impl Rig {
    fn new() -> Rig {
        let mut device = Loopback::new(Medium::Ethernet);
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
            0x52, 0x54, 0, 0, 0, 1,
        ])));
        let mut iface = Interface::new(config, &mut device, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(LOOP), 8)).unwrap();
        });
        let mut sockets = Sockets::new(50_000);
        let client = sockets.set.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16384]),
            tcp::SocketBuffer::new(vec![0; 16384]),
        ));
        let mut up = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
        );
        up.bind(53).unwrap();
        let upstream = sockets.set.add(up);
        Rig {
            device,
            iface,
            sockets,
            dns: Service::new(&role(), [0x52, 0x54, 0, 0, 0, 1], 1500, 7),
            outbox: Outbox::default(),
            client,
            upstream,
            now_ms: 0,
        }
    }

    /// Polls everything `rounds` times, 1 ms apart; the fake upstream answers every query
    /// with one A record 203.0.113.7.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.now_ms += 1;
            let now = Instant::from_millis(self.now_ms as i64);
            self.dns.set_time_ms(self.now_ms);
            self.iface
                .poll(now, &mut self.device, &mut self.sockets.set);
            self.sockets
                .serve(&mut self.dns, &mut self.outbox, self.now_ms);
            let up = self.sockets.set.get_mut::<udp::Socket>(self.upstream);
            let mut answers = Vec::new();
            while let Ok((q, meta)) = up.recv() {
                let mut a = q.to_vec();
                a[2] |= 0x80;
                a[7] = 1;
                a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 7]);
                answers.push((a, meta.endpoint));
            }
            for (a, to) in answers {
                up.send_slice(&a, to).unwrap();
            }
            self.iface
                .poll(now, &mut self.device, &mut self.sockets.set);
        }
    }

    fn client(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.set.get_mut::<tcp::Socket>(self.client)
    }

    fn connect(&mut self, local_port: u16) {
        let cx = self.iface.context();
        let client = self.sockets.set.get_mut::<tcp::Socket>(self.client);
        client
            .connect(cx, (IpAddress::Ipv4(LOOP), 53), local_port)
            .unwrap();
        self.run(5);
        assert!(self.client().may_send(), "connected");
    }

    /// Every complete length-prefixed message the client has received.
    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut bytes = Vec::new();
        let c = self.client();
        while c.can_recv() {
            let _ = c.recv(|b| {
                bytes.extend_from_slice(b);
                (b.len(), ())
            });
        }
        let mut out = Vec::new();
        let mut at = 0;
        while bytes.len() >= at + 2 {
            let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
            out.push(bytes[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        out
    }
}

#[test]
fn pipelined_tcp_queries_local_and_forwarded() {
    let mut rig = Rig::new();
    rig.connect(40_000);
    let mut stream = framed(&query(1, b"\x03vm1\x07nanovnf\x04test\x00", 1));
    stream.extend(framed(&query(2, b"\x03www\x07example\x03com\x00", 1)));
    // The second query split across two writes.
    stream.extend(framed(&query(
        3,
        b"\x0211\x011\x03168\x03192\x07in-addr\x04arpa\x00",
        12,
    )));
    let (a, b) = stream.split_at(stream.len() - 7);
    rig.client().send_slice(a).unwrap();
    rig.run(3);
    rig.client().send_slice(b).unwrap();
    rig.run(10);
    let answers = rig.received();
    assert_eq!(
        answers.len(),
        3,
        "{answers:02x?} {:?} {:?}",
        rig.dns.server().counters(),
        rig.sockets.counters
    );
    let ids: Vec<u16> = answers
        .iter()
        .map(|a| u16::from_be_bytes([a[0], a[1]]))
        .collect();
    // Local answers come at once; the forwarded one when the upstream answers.
    assert!(
        ids.contains(&1) && ids.contains(&2) && ids.contains(&3),
        "{ids:?}"
    );
    let fwd = &answers[ids.iter().position(|&i| i == 2).unwrap()];
    assert_eq!(fwd[fwd.len() - 4..], [203, 0, 113, 7]);
    let local = &answers[ids.iter().position(|&i| i == 1).unwrap()];
    assert_eq!(local[local.len() - 4..], [192, 168, 1, 11]);
    assert_eq!(rig.sockets.counters.tcp_connections, 1);
    assert_eq!(rig.dns.server().counters().forward_answers, 1);
    // The client closes; the server closes its side and listens again.
    rig.client().close();
    rig.run(10);
    assert!(!rig.client().is_open() || rig.client().state() == tcp::State::TimeWait);
    rig.client().abort();
    rig.run(2);
    rig.connect(40_001);
    rig.client()
        .send_slice(&framed(&query(4, b"\x03vm1\x00", 1)))
        .unwrap();
    rig.run(5);
    assert_eq!(rig.received().len(), 1, "a second connection is served");
    assert_eq!(rig.sockets.counters.tcp_connections, 2);
}

#[test]
fn oversized_and_idle_connections_are_closed() {
    let mut rig = Rig::new();
    rig.connect(40_010);
    rig.client()
        .send_slice(&((MAX_TCP_QUERY + 1) as u16).to_be_bytes())
        .unwrap();
    rig.run(5);
    assert_eq!(rig.sockets.counters.tcp_oversized, 1);
    assert!(!rig.client().may_send(), "reset by the server");
    rig.client().abort();
    rig.run(2);

    rig.connect(40_011);
    rig.client().send_slice(&[0, 40, 1, 2]).unwrap(); // a query that never completes
    rig.run(2);
    assert!(rig.sockets.poll_at_ms().is_some());
    rig.now_ms += TCP_IDLE_MS + 5;
    rig.run(3);
    assert_eq!(rig.sockets.counters.tcp_idle_closed, 1);
    assert!(!rig.client().may_send());
}
