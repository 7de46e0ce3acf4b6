//! Whole TCP exchanges on a fake LAN: smoltcp clients (each its own interface, MAC and
//! address) talk HTTP to the service through the port's filter, the tracker and the
//! MAC-pinning transmit path; and the tracker's SYN admission on crafted frames.

use crate::engine::{Engine, SourceMac};
use crate::service::Service;
use crate::tracker::{TIGHT_PER_SOURCE, TrackEvent, Tracker};
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_port::Port;
use nanovnf_schema::metadata::{METADATA_IP, MetadataInstance, MetadataRole};
use nanovnf_schema::{Ipv4Cidr, NicConfig};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress, IpAddress,
    IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

const APP_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const APP_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);

fn mac(n: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, n]
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 10 + n)
}

fn instance(n: u8) -> MetadataInstance {
    MetadataInstance {
        mac: mac(n),
        ip: ip(n),
        port_id: format!("port-{n}"),
        uuid: format!("uuid-{n}"),
        name: format!("server-{n}"),
        hostname: format!("vm{n}"),
        domain: String::new(),
        availability_zone: "nova".into(),
        project_id: "p".into(),
        launch_index: 0,
        public_keys: Vec::new(),
        meta: Vec::new(),
        user_data: Some(vec![b'u'; 20_000 + usize::from(n)]),
        floating_ip: None,
        mtu: 1500,
    }
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

/// One end of the LAN: frames to receive, frames sent.
#[derive(Default)]
struct End {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

impl phy::Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
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

/// One host: an interface with one TCP connection per request.
struct Client {
    mac: [u8; 6],
    iface: Interface,
    dev: End,
    sockets: SocketSet<'static>,
    /// Per connection: its socket, the request still to send, the bytes received.
    conns: Vec<(SocketHandle, Vec<u8>, Vec<u8>)>,
}

impl Client {
    fn new(mac: [u8; 6], ip: Ipv4Addr, port: u16, request: &str) -> Self {
        Self::many(mac, ip, &[(port, request)])
    }

    fn many(mac: [u8; 6], ip: Ipv4Addr, requests: &[(u16, &str)]) -> Self {
        let mut dev = End::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = u64::from(mac[5]);
        let mut iface = Interface::new(config, &mut dev, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(APP_IP).unwrap();
        let mut sockets = SocketSet::new(Vec::new());
        let mut conns = Vec::new();
        for &(port, request) in requests {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            s.connect(iface.context(), (IpAddress::Ipv4(METADATA_IP), 80), port)
                .unwrap();
            conns.push((sockets.add(s), request.as_bytes().to_vec(), Vec::new()));
        }
        Client {
            mac,
            iface,
            dev,
            sockets,
            conns,
        }
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        for (h, request, received) in &mut self.conns {
            let s = self.sockets.get_mut::<tcp::Socket>(*h);
            if s.may_send() && !request.is_empty() {
                let n = s.send_slice(request).unwrap();
                request.drain(..n);
            }
            while s.can_recv() {
                s.recv(|b| {
                    received.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
        }
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    fn text_of(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.conns[i].2).into_owned()
    }

    fn text(&self) -> String {
        self.text_of(0)
    }
}

fn app() -> (Service, Port, End) {
    app_with(vec![instance(1), instance(2)], 8)
}

/// The service with `sockets` sockets for `instances`, its port and its end of the LAN.
fn app_with(instances: Vec<MetadataInstance>, sockets: usize) -> (Service, Port, End) {
    let role = MetadataRole {
        network_id: "net".into(),
        subnets: Vec::new(),
        instances,
        passwords: Vec::new(),
    };
    let nic = NicConfig {
        mac: APP_MAC,
        addresses: vec![Ipv4Cidr::new(APP_IP, 24), Ipv4Cidr::new(METADATA_IP, 32)],
        mtu: 1500,
    };
    let mut dev = End::default();
    let port = Port::new(&nic, &mut dev, Instant::ZERO, 7).unwrap();
    let service = Service::new(Engine::new(role, 1).unwrap(), sockets);
    (service, port, dev)
}

/// Runs the LAN for `steps` milliseconds: every frame goes where its MAC says.
fn run(service: &mut Service, port: &mut Port, app: &mut End, clients: &mut [Client], steps: i64) {
    for ms in 0..steps {
        let now = Instant::from_millis(ms);
        service.poll(port, app, now);
        for frame in app.tx.drain(..) {
            let dst = &frame[..6];
            for c in clients.iter_mut() {
                if dst == [0xff; 6] || dst == c.mac {
                    c.dev.rx.push_back(frame.clone());
                }
            }
        }
        for c in clients.iter_mut() {
            c.poll(now);
            app.rx.extend(c.dev.tx.drain(..));
        }
    }
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
}

#[test]
fn two_instances_and_a_spoofer_each_get_their_own_answer() {
    let (mut service, mut port, mut app) = app();
    let hostname = request("/latest/meta-data/hostname");
    let user_data = request("/latest/user-data");
    let mut clients = vec![
        // Instance 1 asks twice at once, once for its user data (many segments).
        Client::many(mac(1), ip(1), &[(50001, &hostname), (50004, &user_data)]),
        Client::new(mac(2), ip(2), 50002, &hostname),
        // Instance 1's address from another MAC.
        Client::new(mac(9), ip(1), 50003, &hostname),
    ];
    run(&mut service, &mut port, &mut app, &mut clients, 400);
    let mut t: Vec<String> = clients.iter().map(Client::text).collect();
    t.push(clients[0].text_of(1));
    assert!(
        t[0].starts_with("HTTP/1.1 200 OK") && t[0].ends_with("\r\n\r\nvm1"),
        "{}",
        t[0]
    );
    assert!(
        t[1].starts_with("HTTP/1.1 200 OK") && t[1].ends_with("\r\n\r\nvm2"),
        "{}",
        t[1]
    );
    assert!(
        t[2].starts_with("HTTP/1.1 404 Not Found"),
        "spoofer: {}",
        t[2]
    );
    assert!(
        t[3].starts_with("HTTP/1.1 200 OK"),
        "{}",
        &t[3][..40.min(t[3].len())]
    );
    assert!(t[3].contains("Content-Length: 20001\r\n"));
    assert!(t[3].ends_with(&"u".repeat(20_001)));
    assert_eq!(service.engine.events(crate::Event::MacMismatch), 1);
    // Every connection closed: the pool listens again.
    run(&mut service, &mut port, &mut app, &mut clients, 50);
    assert_eq!(service.connections(), 0);
}

#[test]
fn sockets_beyond_the_pool_wait_for_a_free_one() {
    let (mut service, mut port, mut app) = app(); // 8 sockets
    let req = request("/latest/meta-data/local-ipv4");
    let requests: Vec<(u16, &str)> = (0..12).map(|i| (51000 + i, req.as_str())).collect();
    let mut clients = vec![Client::many(mac(1), ip(1), &requests)];
    run(&mut service, &mut port, &mut app, &mut clients, 4000);
    for i in 0..12 {
        let t = clients[0].text_of(i);
        assert!(t.ends_with("192.168.1.11"), "{i}: {t}");
    }
    let waited =
        service.tracked(TrackEvent::SynNoFreeSocket) + service.tracked(TrackEvent::SynSourceCap);
    assert!(waited > 0, "some SYNs had to wait");
}

#[test]
fn a_connection_waiting_for_its_first_request_is_not_reclaimed_as_idle() {
    let (mut service, mut port, mut app) = app(); // 8 sockets: always short of them
    let hostname = request("/latest/meta-data/hostname");
    let mut clients = vec![Client::new(mac(1), ip(1), 50020, "")];
    run(&mut service, &mut port, &mut app, &mut clients, 20);
    assert_eq!(service.connections(), 1, "established, no request yet");
    // The request comes a moment later, on the same connection.
    clients[0].conns[0].1 = hostname.into_bytes();
    run(&mut service, &mut port, &mut app, &mut clients, 50);
    let t = clients[0].text();
    assert!(
        t.starts_with("HTTP/1.1 200 OK") && t.ends_with("vm1"),
        "{t:?}"
    );
    assert_eq!(
        service.events(crate::service::SocketEvent::IdleReclaimed),
        0
    );
}

/// A TCP segment from `src` to 169.254.169.254:80.
fn segment(src_mac: [u8; 6], src: Ipv4Addr, port: u16, control: TcpControl, ack: bool) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: port,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(1),
        ack_number: ack.then_some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: METADATA_IP,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(APP_MAC),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(METADATA_IP),
        &caps,
    );
    buf
}

#[test]
fn tracker_admits_syns_fairly_and_marks_mac_changes() {
    let mut t = Tracker::new(256);
    assert_eq!(t.reserve(), 64);
    let syn = |m, n: u8, port| segment(m, ip(n), port, TcpControl::Syn, false);
    t.set_free(64 + 2);
    // Plenty free: one source may take more than its tight share.
    for p in 0..2 {
        assert!(!t.inspect(&syn(mac(1), 1, 1000 + p)));
    }
    for p in 2..TIGHT_PER_SOURCE as u16 {
        assert!(!t.inspect(&syn(mac(1), 1, 1000 + p)));
    }
    // Now at the reserve: source 1 holds its share and waits; source 2 gets in.
    assert!(t.inspect(&syn(mac(1), 1, 2000)));
    assert_eq!(t.events(TrackEvent::SynSourceCap), 1);
    assert!(!t.inspect(&syn(mac(2), 2, 2000)));
    assert_eq!(t.source_mac(ip(2), 2000), SourceMac::Seen(mac(2)));
    // A retransmitted SYN of a tracked flow passes and counts no socket.
    assert!(!t.inspect(&syn(mac(2), 2, 2000)));
    assert_eq!(t.len(), TIGHT_PER_SOURCE + 1);
    // Another MAC on the same flow marks it.
    let ack = segment(mac(7), ip(2), 2000, TcpControl::None, true);
    assert!(!t.inspect(&ack));
    assert_eq!(t.source_mac(ip(2), 2000), SourceMac::Changed);
    assert_eq!(t.events(TrackEvent::MacChanged), 1);
    // Non-SYN segments of unknown flows are left to smoltcp (it resets them).
    assert!(!t.inspect(&segment(mac(3), ip(3), 9, TcpControl::None, true)));
    assert_eq!(t.source_mac(ip(3), 9), SourceMac::Unseen);
    // No socket free at all: every new SYN waits.
    t.set_free(0);
    assert!(t.inspect(&syn(mac(3), 3, 1)));
    assert_eq!(t.events(TrackEvent::SynNoFreeSocket), 1);
    // Closed flows are forgotten.
    t.retain(|a, _| a == ip(2));
    assert_eq!(t.len(), 1);
    // Frames that are not TCP to 169.254.169.254:80 are not looked at.
    let mut other = syn(mac(4), 4, 5);
    other[14 + 16..14 + 20].copy_from_slice(&[192, 168, 1, 3]);
    assert!(!t.inspect(&other));
    assert!(!t.inspect(&[0u8; 10]));
}

#[test]
fn a_syn_flood_from_one_source_leaves_room_for_others() {
    let (mut service, mut port, mut app) = app();
    for p in 0..100u16 {
        app.rx
            .push_back(segment(mac(1), ip(1), 3000 + p, TcpControl::Syn, false));
    }
    service.poll(&mut port, &mut app, Instant::from_millis(0));
    // 8 sockets, 2 in reserve: the flood takes 6, the rest waits.
    assert_eq!(service.tracked(TrackEvent::SynSourceCap), 94);
    app.tx.clear();
    // Another instance is served from the reserve at once.
    let mut clients = [Client::new(
        mac(2),
        ip(2),
        50010,
        &request("/latest/meta-data/hostname"),
    )];
    for ms in 0..500 {
        let now = Instant::from_millis(ms);
        service.poll(&mut port, &mut app, now);
        for frame in app.tx.drain(..) {
            if frame[..6] == mac(2) || frame[..6] == [0xff; 6] {
                clients[0].dev.rx.push_back(frame);
            }
        }
        clients[0].poll(now);
        app.rx.extend(clients[0].dev.tx.drain(..));
        if clients[0].text().ends_with("vm2") {
            break;
        }
    }
    assert!(clients[0].text().ends_with("vm2"), "{}", clients[0].text());
}

/// A load as `wrk` makes it: 128 keep-alive connections from one instance ask for
/// `meta_data.json` again as soon as each answer is whole. Every connection keeps being
/// answered, with its instance's data, every pass. Prints the time the service spent per
/// answer, the host profile of the appliance: `CONNS=128 cargo test -p nanovnf-metadata
/// --release -- keep_alive_load --nocapture` (with `STEPS=3000` for `perf`).
#[test]
fn keep_alive_load() {
    extern crate std;
    let env =
        |name: &str, default: usize| std::env::var(name).map_or(default, |v| v.parse().unwrap());
    let (conns, steps) = (env("CONNS", 128), env("STEPS", 200));
    let (mut service, mut port, mut app) = app_with(vec![instance(1)], crate::service::SOCKETS);
    let get = "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
    let requests: Vec<(u16, &str)> = (0..conns as u16).map(|i| (40000 + i, get)).collect();
    let mut client = Client::many(mac(1), ip(1), &requests);
    let mut answered = vec![0usize; conns];
    let mut in_service = std::time::Duration::ZERO;
    for ms in 0..steps as i64 {
        let now = Instant::from_millis(ms);
        let t = std::time::Instant::now();
        service.poll(&mut port, &mut app, now);
        in_service += t.elapsed();
        client.dev.rx.extend(app.tx.drain(..));
        client.poll(now);
        for ((_, request, received), n) in client.conns.iter_mut().zip(&mut answered) {
            let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
            assert!(head.starts_with("http/1.1 200 ok"), "{head}");
            let cl = head.split("content-length: ").nth(1).unwrap();
            let len = end + 4 + cl.split("\r\n").next().unwrap().parse::<usize>().unwrap();
            if received.len() >= len {
                let body = String::from_utf8_lossy(&received[end + 4..len]).into_owned();
                assert!(body.starts_with("{\"uuid\": \"uuid-1\""), "{body}");
                received.drain(..len);
                request.extend_from_slice(get.as_bytes());
                *n += 1;
            }
        }
        client.poll(now);
        app.rx.extend(client.dev.tx.drain(..));
    }
    let answers: usize = answered.iter().sum();
    std::println!(
        "{conns} connections: {answers} answers in {steps} passes, {in_service:?} in the \
         service, {:.2} µs per answer",
        in_service.as_secs_f64() * 1e6 / answers as f64
    );
    // A round trip takes a few passes; no connection is left behind.
    let (least, most) = (
        answered.iter().min().unwrap(),
        answered.iter().max().unwrap(),
    );
    assert!(
        *least >= steps / 4,
        "a connection got only {least} answers of {most}"
    );
}
