//! The DHCP appliance around the engine: frames in, frames out. It takes UDP port 67 off
//! the NIC before smoltcp sees it (a [`Detour`]: a client without an address cannot answer
//! ARP, so the reply frame is addressed by hand), routes each message to the subnet that
//! reserves its client, applies the manager's live changes and names its counters.

use crate::server::{DropReason, Reservation, ReservationError, Server, ServerConfig};
use crate::{RxMeta, server};
use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use nanovnf_port::{Detour, Outbox};
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::dhcp::{DhcpHost, DhcpRole, DhcpSubnet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

/// Byte offset of `chaddr` in a BOOTP message.
const CHADDR: usize = 28;

/// Frames taken off the wire but not handed to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDrop {
    /// UDP header shorter than 8 bytes or longer than its IPv4 payload.
    MalformedUdp,
    /// A non-zero UDP checksum that does not match.
    BadUdpChecksum,
    /// A fragmented datagram to port 67 (DHCP messages are never fragmented).
    Fragmented,
    /// Unicast to an address of someone else's.
    NotOurAddress,
}

impl FrameDrop {
    pub const ALL: [FrameDrop; 4] = [
        FrameDrop::MalformedUdp,
        FrameDrop::BadUdpChecksum,
        FrameDrop::Fragmented,
        FrameDrop::NotOurAddress,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FrameDrop::MalformedUdp => "malformed_udp",
            FrameDrop::BadUdpChecksum => "bad_udp_checksum",
            FrameDrop::Fragmented => "fragmented",
            FrameDrop::NotOurAddress => "not_our_address",
        }
    }
}

/// Why a configuration or a live change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The role lists no subnet.
    NoSubnet,
    /// A reservation's address is in none of the served subnets.
    NoSubnetFor { ip: Ipv4Addr },
    /// The engine refused a reservation.
    Reservation {
        mac: [u8; 6],
        ip: Ipv4Addr,
        error: ReservationError,
    },
    /// The request is not for a DHCP appliance.
    NotDhcp,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NoSubnet => write!(f, "the DHCP role lists no subnet"),
            ServiceError::NoSubnetFor { ip } => write!(f, "{ip} is in no served subnet"),
            ServiceError::Reservation { mac, ip, error } => {
                let m = mac;
                write!(
                    f,
                    "reservation {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} -> {ip}: ",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                )?;
                match error {
                    ReservationError::OutsideSubnet => {
                        write!(f, "outside the subnet or its network/broadcast address")
                    }
                    ReservationError::AddressInUse { by } => write!(
                        f,
                        "address already reserved for {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        by[0], by[1], by[2], by[3], by[4], by[5]
                    ),
                    ReservationError::TableFull => write!(f, "the reservation table is full"),
                }
            }
            ServiceError::NotDhcp => write!(f, "not an operation a DHCP appliance performs"),
        }
    }
}

/// The DHCP appliance's engine for one NIC: a [`Server`] per subnet.
pub struct Service {
    servers: Vec<Server>,
    mac: [u8; 6],
    now_secs: u64,
    frame_drops: [u64; FrameDrop::ALL.len()],
}

fn server_config(s: &DhcpSubnet, mtu: u16) -> ServerConfig {
    let mut c = ServerConfig::new(s.server_ip, (s.cidr.addr, s.cidr.prefix_len));
    c.gateway = s.gateway;
    c.dns_servers = s.dns_servers.clone();
    c.domain = s.domain.clone();
    c.lease_secs = s.lease_secs;
    c.mtu = mtu;
    c.host_routes = s
        .host_routes
        .iter()
        .map(|r| (r.destination.addr, r.destination.prefix_len, r.nexthop))
        .collect();
    c.other_subnets = s
        .other_subnets
        .iter()
        .map(|c| (c.addr, c.prefix_len))
        .collect();
    c.metadata_ip = s.metadata_ip;
    c
}

impl Service {
    /// Serves `role` on the NIC with this MAC and MTU (option 26).
    pub fn new(role: &DhcpRole, mac: [u8; 6], mtu: u16) -> Result<Self, ServiceError> {
        if role.subnets.is_empty() {
            return Err(ServiceError::NoSubnet);
        }
        let mut service = Service {
            servers: role
                .subnets
                .iter()
                .map(|s| Server::new(server_config(s, mtu)))
                .collect(),
            mac,
            now_secs: 0,
            frame_drops: [0; FrameDrop::ALL.len()],
        };
        for host in &role.hosts {
            service.upsert(host)?;
        }
        Ok(service)
    }

    /// The time, in seconds on any monotonic clock, for lease expiry.
    pub fn set_time(&mut self, now_secs: u64) {
        self.now_secs = now_secs;
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Applies a live change from the manager. Removing an unknown MAC is not an error
    /// (the manager's retry after a lost answer must succeed).
    pub fn apply(&mut self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::DhcpUpsert(host) => self.upsert(host),
            Op::DhcpRemove { mac } => {
                for s in &mut self.servers {
                    s.remove(*mac);
                }
                Ok(())
            }
            _ => Err(ServiceError::NotDhcp),
        }
    }

    fn upsert(&mut self, host: &DhcpHost) -> Result<(), ServiceError> {
        let Some(target) = self
            .servers
            .iter()
            .position(|s| s.config().contains(host.ip))
        else {
            return Err(ServiceError::NoSubnetFor { ip: host.ip });
        };
        let res = Reservation {
            mac: host.mac,
            ip: host.ip,
            hostname: host.hostname.clone(),
        };
        self.servers[target]
            .add_or_update(res)
            .map_err(|error| ServiceError::Reservation {
                mac: host.mac,
                ip: host.ip,
                error,
            })?;
        // A port that moved to another subnet of the network leaves its old one.
        for (i, s) in self.servers.iter_mut().enumerate() {
            if i != target {
                s.remove(host.mac);
            }
        }
        Ok(())
    }

    /// Every counter, summed over the subnets: replies by kind, engine drops by reason
    /// (`drop_<reason>`) and frame drops, plus the number of reservations.
    pub fn counters(&self) -> Vec<Counter> {
        let sum = |f: &dyn Fn(&server::Counters) -> u64| -> u64 {
            self.servers.iter().map(|s| f(s.counters())).sum()
        };
        let mut out = alloc::vec![
            Counter::new("offers", sum(&|c| c.offers)),
            Counter::new("acks", sum(&|c| c.acks)),
            Counter::new("naks", sum(&|c| c.naks)),
            Counter::new("releases", sum(&|c| c.releases)),
            Counter::new("declines", sum(&|c| c.declines)),
            Counter::new("informs", sum(&|c| c.informs)),
        ];
        for reason in DropReason::ALL {
            let n = sum(&|c| c.drops(reason));
            out.push(Counter::new(format!("drop_{}", reason.name()), n));
        }
        for (i, d) in FrameDrop::ALL.iter().enumerate() {
            out.push(Counter::new(
                format!("drop_{}", d.name()),
                self.frame_drops[i],
            ));
        }
        let reservations = self.servers.iter().map(|s| s.len() as u64).sum();
        out.push(Counter::new("reservations", reservations));
        out
    }

    /// Frame-level drops under `reason`.
    pub fn frame_drops(&self, reason: FrameDrop) -> u64 {
        self.frame_drops[reason as usize]
    }

    fn drop_frame(&mut self, reason: FrameDrop) -> bool {
        self.frame_drops[reason as usize] += 1;
        true
    }

    /// The server for a message: the subnet of a relay's `giaddr`, else the one that
    /// reserves `chaddr`, else the first (which counts the unknown client).
    fn pick(&self, dhcp: &[u8]) -> usize {
        let word = |at: usize| -> Option<[u8; 4]> { dhcp.get(at..at + 4)?.try_into().ok() };
        if let Some(giaddr) = word(24).map(Ipv4Addr::from)
            && !giaddr.is_unspecified()
            && let Some(i) = self
                .servers
                .iter()
                .position(|s| s.config().contains(giaddr))
        {
            return i;
        }
        let chaddr: Option<[u8; 6]> = dhcp.get(CHADDR..CHADDR + 6).and_then(|m| m.try_into().ok());
        chaddr
            .and_then(|mac| self.servers.iter().position(|s| s.reserves(mac)))
            .unwrap_or(0)
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
        if ip.next_header() != IpProtocol::Udp {
            return false;
        }
        let l4 = ip.payload();
        let dst_port = l4.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
        if ip.frag_offset() != 0 {
            return false; // a later fragment: smoltcp's to reassemble or drop
        }
        if dst_port != Some(server::SERVER_PORT) {
            return false;
        }
        if ip.more_frags() {
            return self.drop_frame(FrameDrop::Fragmented);
        }
        let dst = ip.dst_addr();
        if !dst.is_broadcast() && !self.servers.iter().any(|s| s.config().server_ip == dst) {
            return self.drop_frame(FrameDrop::NotOurAddress);
        }
        let Ok(udp) = UdpPacket::new_checked(l4) else {
            return self.drop_frame(FrameDrop::MalformedUdp);
        };
        let src = ip.src_addr();
        if udp.checksum() != 0 && !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst))
        {
            return self.drop_frame(FrameDrop::BadUdpChecksum);
        }
        let meta = RxMeta {
            src_mac: eth.src_addr().0,
            src_ip: src,
            src_port: udp.src_port(),
        };
        let payload = udp.payload();
        let i = self.pick(payload);
        let server_ip = self.servers[i].config().server_ip;
        if let Some(reply) = self.servers[i].handle(payload, meta, self.now_secs) {
            emit_reply(out, self.mac, server_ip, &reply);
        }
        true
    }
}

/// Writes `reply` as an Ethernet/IPv4/UDP frame from port 67 into the outbox.
fn emit_reply(out: &mut Outbox, mac: [u8; 6], server_ip: Ipv4Addr, reply: &server::Reply) {
    let udp = UdpRepr {
        src_port: server::SERVER_PORT,
        dst_port: reply.dst_port,
    };
    let udp_len = udp.header_len() + reply.payload.len();
    let ip = Ipv4Repr {
        src_addr: server_ip,
        dst_addr: reply.dst_ip,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress(reply.dst_mac.unwrap_or([0xff; 6])),
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
        &IpAddress::Ipv4(server_ip),
        &IpAddress::Ipv4(reply.dst_ip),
        reply.payload.len(),
        |p| p.copy_from_slice(&reply.payload),
        &caps,
    );
}
