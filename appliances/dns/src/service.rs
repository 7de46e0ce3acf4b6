//! The DNS half of the DHCP appliance around the engine. UDP queries to port 53 on the
//! appliance's addresses are taken off the NIC ahead of smoltcp (a [`Detour`], like the
//! DHCP server's: no socket buffer to overflow, the answer framed by hand to the asker's
//! MAC); TCP queries and upstream traffic go through smoltcp sockets ([`crate::sockets`]).
//! The zone follows the manager's live reservation changes.

use alloc::format;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_port::{Detour, Outbox};
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::dhcp::DhcpRole;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use crate::server::{self, DropReason, Event, Outcome, Server, ServerConfig, Transport};
use crate::wire;
use crate::zone::{Zone, ZoneError, ZoneSubnet};

/// Bytes of IPv4 and UDP headers in front of a DNS payload.
const IP_UDP_HEADERS: usize = 28;

/// Who asked: where the answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A UDP query: answered from `local` (the address it was sent to), port 53, to this
    /// MAC (the asker, or the router it came through), address and port.
    Udp {
        mac: [u8; 6],
        ip: Ipv4Addr,
        port: u16,
        local: Ipv4Addr,
    },
    /// A query on TCP connection `conn` (numbered by [`crate::sockets::Sockets`]).
    Tcp { conn: u32 },
}

/// UDP frames to port 53 taken off the wire but not handed to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDrop {
    /// UDP header shorter than 8 bytes or longer than its IPv4 payload.
    MalformedUdp,
    /// A non-zero UDP checksum that does not match.
    BadUdpChecksum,
    /// A fragment (queries are small; the answer could not be framed back anyway).
    Fragmented,
    /// From port 0, or from a broadcast, multicast or unspecified address: no one to
    /// answer (and a reflection to avoid).
    BadSource,
}

impl FrameDrop {
    pub const ALL: [FrameDrop; 4] = [
        FrameDrop::MalformedUdp,
        FrameDrop::BadUdpChecksum,
        FrameDrop::Fragmented,
        FrameDrop::BadSource,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FrameDrop::MalformedUdp => "malformed_udp",
            FrameDrop::BadUdpChecksum => "bad_udp_checksum",
            FrameDrop::Fragmented => "fragmented",
            FrameDrop::BadSource => "bad_source",
        }
    }
}

/// Work for the socket glue: a message to an upstream resolver, an answer on a TCP
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Upstream { to: Ipv4Addr, query: Vec<u8> },
    Tcp { conn: u32, payload: Vec<u8> },
}

/// Why a live change could not be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceError {
    Zone(ZoneError),
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServiceError::Zone(ZoneError::NoSubnet) => write!(f, "dns: address in no subnet"),
            ServiceError::Zone(ZoneError::Full) => write!(f, "dns: the zone is full"),
        }
    }
}

/// The DNS server of one NIC.
pub struct Service {
    server: Server<Client>,
    mac: [u8; 6],
    addrs: Vec<Ipv4Addr>,
    now_ms: u64,
    frame_drops: [u64; FrameDrop::ALL.len()],
    out: Vec<Out>,
    events: Vec<Event<Client>>,
}

/// The zone of a DHCP role: its subnets, domains and reservations.
pub fn zone_of(role: &DhcpRole) -> Zone {
    let subnets = role
        .subnets
        .iter()
        .map(|s| ZoneSubnet {
            network: s.cidr.addr,
            prefix_len: s.cidr.prefix_len,
            domain: s.domain.to_ascii_lowercase(),
        })
        .collect();
    let mut zone = Zone::new(subnets);
    for h in &role.hosts {
        // The DHCP engine has already refused reservations outside every subnet.
        let _ = zone.upsert(h.mac, h.ip, &h.hostname);
    }
    zone
}

impl Service {
    /// Serves the names of `role` on the NIC with this MAC and MTU; `seed` seeds the
    /// upstream transaction IDs.
    pub fn new(role: &DhcpRole, mac: [u8; 6], mtu: u16, seed: u64) -> Self {
        let max_udp = server::EDNS_UDP_SIZE.min(mtu.saturating_sub(IP_UDP_HEADERS as u16));
        let config = ServerConfig {
            upstreams: role.upstream_resolvers.clone(),
            max_udp: max_udp.max(wire::CLASSIC_UDP_LIMIT as u16),
            ..ServerConfig::default()
        };
        Service {
            server: Server::new(zone_of(role), config, seed),
            mac,
            addrs: role.subnets.iter().map(|s| s.server_ip).collect(),
            now_ms: 0,
            frame_drops: [0; FrameDrop::ALL.len()],
            out: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn server(&self) -> &Server<Client> {
        &self.server
    }

    /// The time in milliseconds on any monotonic clock (forwarding timeouts).
    pub fn set_time_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Follows a reservation change the DHCP engine has accepted. Other operations are
    /// ignored.
    pub fn apply(&mut self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::DhcpUpsert(h) => self
                .server
                .zone_mut()
                .upsert(h.mac, h.ip, &h.hostname)
                .map_err(ServiceError::Zone),
            Op::DhcpRemove { mac } => {
                self.server.zone_mut().remove(*mac);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn drop_frame(&mut self, reason: FrameDrop) -> bool {
        self.frame_drops[reason as usize] += 1;
        true
    }

    pub fn frame_drops(&self, reason: FrameDrop) -> u64 {
        self.frame_drops[reason as usize]
    }

    /// A query that arrived on TCP connection `conn`: its answer now, or `None` (it was
    /// forwarded, and the answer comes out of [`Service::drain`] later; or dropped).
    pub fn tcp_query(&mut self, conn: u32, msg: &[u8]) -> Option<Vec<u8>> {
        match self
            .server
            .query(msg, Client::Tcp { conn }, Transport::Tcp, self.now_ms)
        {
            Outcome::Reply(r) => Some(r),
            Outcome::Forward { upstream, query } => {
                self.out.push(Out::Upstream {
                    to: upstream,
                    query,
                });
                None
            }
            Outcome::Drop(_) => None,
        }
    }

    /// An upstream resolver's message from `from`, port 53.
    pub fn upstream_answer(&mut self, msg: &[u8], from: Ipv4Addr, out: &mut Outbox) {
        if let Some(e) = self.server.upstream_answer(msg, from) {
            self.deliver(e, out);
        }
    }

    /// Forgets queries of TCP connection `conn`, which has closed.
    pub fn forget_tcp(&mut self, conn: u32) {
        self.server
            .forget(|c| matches!(c, Client::Tcp { conn: c } if *c == conn));
    }

    /// Retries and fails forwarded queries that are due; UDP answers go to `out`.
    pub fn poll(&mut self, out: &mut Outbox) {
        let mut events = core::mem::take(&mut self.events);
        self.server.poll(self.now_ms, &mut events);
        for e in events.drain(..) {
            self.deliver(e, out);
        }
        self.events = events;
    }

    /// The next time (ms) [`Service::poll`] has work.
    pub fn poll_at_ms(&self) -> Option<u64> {
        self.server.poll_at()
    }

    /// Takes the messages waiting for the socket glue.
    pub fn drain(&mut self) -> alloc::vec::Drain<'_, Out> {
        self.out.drain(..)
    }

    fn deliver(&mut self, e: Event<Client>, out: &mut Outbox) {
        match e {
            Event::Forward { upstream, query } => self.out.push(Out::Upstream {
                to: upstream,
                query,
            }),
            Event::Reply {
                client: Client::Tcp { conn },
                payload,
                ..
            } => self.out.push(Out::Tcp { conn, payload }),
            Event::Reply {
                client:
                    Client::Udp {
                        mac,
                        ip,
                        port,
                        local,
                    },
                payload,
                ..
            } => emit_udp(
                out,
                self.mac,
                mac,
                (local, server::PORT),
                (ip, port),
                &payload,
            ),
        }
    }

    /// Every counter, named `dns_*` so that they sit beside the DHCP ones.
    pub fn counters(&self) -> Vec<Counter> {
        let c = self.server.counters();
        let mut all = alloc::vec![
            Counter::new("dns_queries_udp", c.queries_udp),
            Counter::new("dns_queries_tcp", c.queries_tcp),
            Counter::new("dns_answers", c.answers),
            Counter::new("dns_nodata", c.nodata),
            Counter::new("dns_nxdomain", c.nxdomain),
            Counter::new("dns_refused", c.refused),
            Counter::new("dns_notimp", c.notimp),
            Counter::new("dns_servfail", c.servfail),
            Counter::new("dns_badvers", c.badvers),
            Counter::new("dns_truncated", c.truncated),
            Counter::new("dns_forwarded", c.forwarded),
            Counter::new("dns_forward_retries", c.forward_retries),
            Counter::new("dns_forward_answers", c.forward_answers),
            Counter::new("dns_forward_timeouts", c.forward_timeouts),
            Counter::new("dns_formerr", c.total_formerr()),
        ];
        for e in wire::Error::ALL {
            all.push(Counter::new(
                format!("dns_formerr_{}", e.name()),
                c.formerr(e),
            ));
        }
        for r in DropReason::ALL {
            all.push(Counter::new(format!("dns_drop_{}", r.name()), c.drops(r)));
        }
        for d in FrameDrop::ALL {
            all.push(Counter::new(
                format!("dns_drop_{}", d.name()),
                self.frame_drops(d),
            ));
        }
        all.push(Counter::new("dns_names", self.server.zone().len() as u64));
        all.push(Counter::new("dns_pending", self.server.pending() as u64));
        all
    }
}

impl Detour for Service {
    fn take(&mut self, frame: &[u8], out: &mut Outbox) -> bool {
        // The port's filter has checked Ethernet and the IPv4 header (and its checksum).
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return false;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return false;
        };
        if ip.next_header() != IpProtocol::Udp || !self.addrs.contains(&ip.dst_addr()) {
            return false;
        }
        let l4 = ip.payload();
        if ip.frag_offset() != 0 {
            // A later fragment has no UDP header: ours only if it follows a first
            // fragment to port 53, which was dropped already.
            return false;
        }
        if l4.get(2..4) != Some(&server::PORT.to_be_bytes()[..]) {
            return false;
        }
        if ip.more_frags() {
            return self.drop_frame(FrameDrop::Fragmented);
        }
        let Ok(udp) = UdpPacket::new_checked(l4) else {
            return self.drop_frame(FrameDrop::MalformedUdp);
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if udp.checksum() != 0 && !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst))
        {
            return self.drop_frame(FrameDrop::BadUdpChecksum);
        }
        let src_mac = eth.src_addr();
        if udp.src_port() == 0
            || src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
            || !src_mac.is_unicast()
        {
            return self.drop_frame(FrameDrop::BadSource);
        }
        let client = Client::Udp {
            mac: src_mac.0,
            ip: src,
            port: udp.src_port(),
            local: dst,
        };
        match self
            .server
            .query(udp.payload(), client, Transport::Udp, self.now_ms)
        {
            Outcome::Reply(r) => emit_udp(
                out,
                self.mac,
                src_mac.0,
                (dst, server::PORT),
                (src, udp.src_port()),
                &r,
            ),
            Outcome::Forward { upstream, query } => self.out.push(Out::Upstream {
                to: upstream,
                query,
            }),
            Outcome::Drop(_) => {}
        }
        true
    }
}

/// Writes `payload` as an Ethernet/IPv4/UDP frame into the outbox.
pub fn emit_udp(
    out: &mut Outbox,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) {
    let udp = UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let len = eth.buffer_len() + ip.buffer_len() + udp_len;
    let Some(buf) = out.push(len) else {
        return; // counted by the outbox
    };
    let caps = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(buf);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
}
