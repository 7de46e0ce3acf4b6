//! The RFC 2131 server, behaving as Neutron's dnsmasq does in `static` mode: only MACs with
//! a reservation get answers, each always gets its reserved address. Sans-IO: `handle`
//! takes one UDP payload, where it came from and the time, and returns at most one reply.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::wire::{self, MessageType, Packet, opt};

/// An offer not taken up within this many seconds is forgotten.
pub const OFFER_TIMEOUT_SECS: u64 = 60;
/// After a DECLINE the address is not offered again for this long (dnsmasq's
/// `DECLINE_BACKOFF`).
pub const DECLINE_BACKOFF_SECS: u64 = 600;
/// Default number of reservations (and so leases) a server holds.
pub const DEFAULT_CAPACITY: usize = 4096;
/// DHCP server and client UDP ports.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// Replies are padded to this many bytes: some BOOTP-era clients drop shorter ones
/// (dnsmasq does the same).
pub const MIN_REPLY_LEN: usize = 300;

/// How one tenant subnet is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The appliance's own address: server identifier, and default DNS server.
    pub server_ip: Ipv4Addr,
    /// Network address and prefix length.
    pub subnet: (Ipv4Addr, u8),
    /// Option 3 and the default route in 121/249; `None` for a subnet without gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Option 6. Empty = our own address; `[0.0.0.0]` = announce none.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15; empty = not sent.
    pub domain: String,
    /// Option 51.
    pub lease_secs: u32,
    /// Option 26, always sent.
    pub mtu: u16,
    /// The subnet's `host_routes`: (destination, prefix length, next hop).
    pub host_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Other subnets of the same network, announced on-link (next hop 0.0.0.0).
    pub other_subnets: Vec<(Ipv4Addr, u8)>,
    /// The metadata appliance: route 169.254.169.254/32 via this address.
    pub metadata_ip: Option<Ipv4Addr>,
}

impl ServerConfig {
    /// A config with Neutron's defaults for everything but the addresses.
    pub fn new(server_ip: Ipv4Addr, subnet: (Ipv4Addr, u8)) -> Self {
        ServerConfig {
            server_ip,
            subnet,
            gateway: None,
            dns_servers: Vec::new(),
            domain: String::from("openstacklocal"),
            lease_secs: 86400,
            mtu: 1500,
            host_routes: Vec::new(),
            other_subnets: Vec::new(),
            metadata_ip: None,
        }
    }

    fn mask(&self) -> u32 {
        wire::prefix_mask(self.subnet.1)
    }

    /// Is `ip` inside our subnet?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.subnet.0) & self.mask()
    }
}

/// A static host: dnsmasq's `dhcp-host=MAC,hostname,IP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// Option 12; empty = not sent.
    pub hostname: String,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationError {
    /// The address is not in the served subnet (or is its network/broadcast address).
    OutsideSubnet,
    /// Another MAC already holds this address; remove that reservation first.
    AddressInUse { by: [u8; 6] },
    /// The table is at its capacity.
    TableFull,
}

/// Why a received message got no reply. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not a well-formed DHCP request.
    Malformed(wire::Error),
    /// No reservation for this MAC (dnsmasq's "no address available" in static mode).
    UnknownClient,
    /// A REQUEST/DECLINE/RELEASE naming another server: the client chose someone else.
    WrongServer,
    /// A relayed message whose `giaddr` is outside our subnet.
    WrongNetwork,
    /// A DISCOVER for an address declined within [`DECLINE_BACKOFF_SECS`].
    AddressDeclined,
    /// A server-to-client type (OFFER, ACK, NAK) sent to us.
    UnexpectedMessageType,
    /// A REQUEST in no recognisable state (no server id, requested IP or ciaddr), or a
    /// RELEASE/DECLINE for an address the client does not hold.
    BadState,
    /// The reply would not fit in the client's maximum message size.
    ReplyTooBig,
}

const WIRE_ERRORS: [wire::Error; 9] = [
    wire::Error::Truncated,
    wire::Error::BadMagicCookie,
    wire::Error::BadOptionLength,
    wire::Error::BadOp,
    wire::Error::BadHardwareAddress,
    wire::Error::BadOverload,
    wire::Error::TooManyOptions,
    wire::Error::MissingMessageType,
    wire::Error::BadMessageType,
];
const DROP_SLOTS: usize = WIRE_ERRORS.len() + 7;

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DROP_SLOTS] = [
        DropReason::Malformed(WIRE_ERRORS[0]),
        DropReason::Malformed(WIRE_ERRORS[1]),
        DropReason::Malformed(WIRE_ERRORS[2]),
        DropReason::Malformed(WIRE_ERRORS[3]),
        DropReason::Malformed(WIRE_ERRORS[4]),
        DropReason::Malformed(WIRE_ERRORS[5]),
        DropReason::Malformed(WIRE_ERRORS[6]),
        DropReason::Malformed(WIRE_ERRORS[7]),
        DropReason::Malformed(WIRE_ERRORS[8]),
        DropReason::UnknownClient,
        DropReason::WrongServer,
        DropReason::WrongNetwork,
        DropReason::AddressDeclined,
        DropReason::UnexpectedMessageType,
        DropReason::BadState,
        DropReason::ReplyTooBig,
    ];

    /// A stable snake_case name for counters.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(e) => match e {
                wire::Error::Truncated => "truncated",
                wire::Error::BadMagicCookie => "bad_magic_cookie",
                wire::Error::BadOptionLength => "bad_option_length",
                wire::Error::BadOp => "bad_op",
                wire::Error::BadHardwareAddress => "bad_hardware_address",
                wire::Error::BadOverload => "bad_overload",
                wire::Error::TooManyOptions => "too_many_options",
                wire::Error::MissingMessageType => "missing_message_type",
                wire::Error::BadMessageType => "bad_message_type",
            },
            DropReason::UnknownClient => "unknown_client",
            DropReason::WrongServer => "wrong_server",
            DropReason::WrongNetwork => "wrong_network",
            DropReason::AddressDeclined => "address_declined",
            DropReason::UnexpectedMessageType => "unexpected_message_type",
            DropReason::BadState => "bad_state",
            DropReason::ReplyTooBig => "reply_too_big",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::Malformed(e) => WIRE_ERRORS.iter().position(|w| *w == e).unwrap_or(0),
            DropReason::UnknownClient => WIRE_ERRORS.len(),
            DropReason::WrongServer => WIRE_ERRORS.len() + 1,
            DropReason::WrongNetwork => WIRE_ERRORS.len() + 2,
            DropReason::AddressDeclined => WIRE_ERRORS.len() + 3,
            DropReason::UnexpectedMessageType => WIRE_ERRORS.len() + 4,
            DropReason::BadState => WIRE_ERRORS.len() + 5,
            DropReason::ReplyTooBig => WIRE_ERRORS.len() + 6,
        }
    }
}

/// What the manager reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub informs: u64,
    drops: [u64; DROP_SLOTS],
}

impl Counters {
    /// Drops counted under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Where a UDP payload came from (filled in by the glue from the frame's headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Ethernet source: the client, or the relay / router that forwarded the message.
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
}

/// A reply to send from our address, port 67.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub payload: Vec<u8>,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    /// Link destination; `None` = Ethernet broadcast.
    pub dst_mac: Option<[u8; 6]>,
}

/// A lease's state. Leases live inside their reservation, so they are bounded by the
/// reservation table and unknown MACs never create any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Offered { until: u64 },
    Bound { until: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    res: Reservation,
    lease: Option<LeaseState>,
    declined_until: u64,
}

/// What the client asked for, gathered from its options.
#[derive(Debug, Default)]
struct ClientOpts<'a> {
    msg_type: Option<MessageType>,
    requested_ip: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    prl: Option<&'a [u8]>,
    max_size: Option<u16>,
}

fn ipv4(d: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(d).ok().map(Ipv4Addr::from)
}

fn parse_request(payload: &[u8]) -> Result<(Packet<&[u8]>, ClientOpts<'_>), wire::Error> {
    let p = Packet::new_checked(payload)?;
    if p.op() != wire::OP_BOOTREQUEST {
        return Err(wire::Error::BadOp);
    }
    if p.htype() != wire::HTYPE_ETHERNET || p.hlen() != 6 {
        return Err(wire::Error::BadHardwareAddress);
    }
    let mut o = ClientOpts::default();
    for item in wire::OptionIter::new(payload) {
        let item = item?;
        // First occurrence wins, like dnsmasq's option_find.
        match item.code {
            opt::MESSAGE_TYPE if o.msg_type.is_none() => {
                let [v] = item.data else {
                    return Err(wire::Error::MissingMessageType);
                };
                o.msg_type = Some(MessageType::from_u8(*v).ok_or(wire::Error::BadMessageType)?);
            }
            opt::REQUESTED_IP if o.requested_ip.is_none() => o.requested_ip = ipv4(item.data),
            opt::SERVER_ID if o.server_id.is_none() => o.server_id = ipv4(item.data),
            opt::PARAMETER_REQUEST_LIST if o.prl.is_none() => o.prl = Some(item.data),
            opt::MAX_MESSAGE_SIZE if o.max_size.is_none() => {
                if let [a, b] = item.data {
                    o.max_size = Some(u16::from_be_bytes([*a, *b]));
                }
            }
            _ => {}
        }
    }
    if o.msg_type.is_none() {
        return Err(wire::Error::MissingMessageType);
    }
    Ok((p, o))
}

/// Options derived from the config, encoded once when the config changes.
#[derive(Debug, Clone, Default)]
struct Prepared {
    by_code: BTreeMap<u8, Vec<u8>>,
}

impl Prepared {
    fn new(c: &ServerConfig) -> Self {
        let mut m = BTreeMap::new();
        let mask = c.mask();
        m.insert(opt::SUBNET_MASK, mask.to_be_bytes().to_vec());
        if let Some(gw) = c.gateway {
            m.insert(opt::ROUTER, gw.octets().to_vec());
        }
        let dns: Vec<u8> = if c.dns_servers.is_empty() {
            c.server_ip.octets().to_vec()
        } else {
            c.dns_servers
                .iter()
                .filter(|a| !a.is_unspecified())
                .take(63)
                .flat_map(|a| a.octets())
                .collect()
        };
        if !dns.is_empty() {
            m.insert(opt::DNS, dns);
        }
        if !c.domain.is_empty() {
            let d = c.domain.as_bytes();
            m.insert(opt::DOMAIN, d[..d.len().min(255)].to_vec());
        }
        m.insert(opt::MTU, c.mtu.to_be_bytes().to_vec());
        let bcast = u32::from(c.subnet.0) & mask | !mask;
        m.insert(opt::BROADCAST, bcast.to_be_bytes().to_vec());
        m.insert(opt::LEASE_TIME, c.lease_secs.to_be_bytes().to_vec());
        let lease = u64::from(c.lease_secs);
        m.insert(opt::T1, ((lease / 2) as u32).to_be_bytes().to_vec());
        m.insert(opt::T2, ((lease * 7 / 8) as u32).to_be_bytes().to_vec());
        m.insert(opt::SERVER_ID, c.server_ip.octets().to_vec());
        let routes = neutron_routes(c);
        if !routes.is_empty() {
            let enc = wire::encode_classless_routes(&routes, 255);
            m.insert(opt::CLASSLESS_ROUTES, enc.clone());
            m.insert(opt::MS_CLASSLESS_ROUTES, enc);
        }
        Prepared { by_code: m }
    }
}

/// Classless routes in Neutron's order: other subnets on-link, host routes, metadata,
/// then the default route.
pub fn neutron_routes(c: &ServerConfig) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
    let mut r = Vec::new();
    for &(net, len) in &c.other_subnets {
        r.push((net, len, Ipv4Addr::UNSPECIFIED));
    }
    r.extend(c.host_routes.iter().copied());
    if let Some(md) = c.metadata_ip {
        r.push((Ipv4Addr::new(169, 254, 169, 254), 32, md));
    }
    if let Some(gw) = c.gateway {
        r.push((Ipv4Addr::UNSPECIFIED, 0, gw));
    }
    r
}

/// What a client without a parameter request list (55) is sent.
const DEFAULT_OPTIONS: [u8; 9] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::HOSTNAME,
    opt::DOMAIN,
    opt::BROADCAST,
    opt::T1,
    opt::T2,
    opt::CLASSLESS_ROUTES,
];

/// The DHCP server engine for one subnet.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    prepared: Prepared,
    /// Reservations with their lease state. At most `capacity` entries; beyond that
    /// `add_or_update` refuses (the manager decides, nothing is evicted silently).
    entries: BTreeMap<[u8; 6], Entry>,
    by_ip: BTreeMap<Ipv4Addr, [u8; 6]>,
    capacity: usize,
    counters: Counters,
}

impl Server {
    /// A server holding at most [`DEFAULT_CAPACITY`] reservations.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_capacity(config, DEFAULT_CAPACITY)
    }

    /// A server holding at most `capacity` reservations (and so leases).
    pub fn with_capacity(config: ServerConfig, capacity: usize) -> Self {
        Server {
            prepared: Prepared::new(&config),
            config,
            entries: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            capacity,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Replace the subnet config live. Reservations and leases are kept.
    pub fn set_config(&mut self, config: ServerConfig) {
        self.prepared = Prepared::new(&config);
        self.config = config;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// True when `mac` has a reservation here.
    pub fn reserves(&self, mac: [u8; 6]) -> bool {
        self.entries.contains_key(&mac)
    }

    /// The reservation holding `ip`, if any.
    pub fn holder_of(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.by_ip.get(&ip).copied()
    }

    /// Number of reservations (an upper bound on leases).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The lease state of `mac` at `now` (expired leases read as `None`).
    pub fn lease(&self, mac: [u8; 6], now: u64) -> Option<LeaseState> {
        self.entries.get(&mac)?.lease.filter(|l| match *l {
            LeaseState::Offered { until } | LeaseState::Bound { until } => until > now,
        })
    }

    /// Add a reservation or change one. Changing a MAC's address drops its lease.
    pub fn add_or_update(&mut self, res: Reservation) -> Result<(), ReservationError> {
        let len = self.config.subnet.1;
        let host = !wire::prefix_mask(len);
        let ipu = u32::from(res.ip);
        if !self.config.contains(res.ip) || (len < 31 && (ipu & host == 0 || ipu & host == host)) {
            return Err(ReservationError::OutsideSubnet);
        }
        if let Some(&other) = self.by_ip.get(&res.ip)
            && other != res.mac
        {
            return Err(ReservationError::AddressInUse { by: other });
        }
        match self.entries.get_mut(&res.mac) {
            Some(e) => {
                if e.res.ip != res.ip {
                    self.by_ip.remove(&e.res.ip);
                    self.by_ip.insert(res.ip, res.mac);
                    e.lease = None;
                    e.declined_until = 0;
                }
                e.res = res;
            }
            None => {
                if self.entries.len() >= self.capacity {
                    return Err(ReservationError::TableFull);
                }
                self.by_ip.insert(res.ip, res.mac);
                self.entries.insert(
                    res.mac,
                    Entry {
                        res,
                        lease: None,
                        declined_until: 0,
                    },
                );
            }
        }
        Ok(())
    }

    /// Remove a reservation and its lease at once (Nova's `force_dhcp_release`): the
    /// address can be reserved for another MAC straight away.
    pub fn remove(&mut self, mac: [u8; 6]) -> Option<Reservation> {
        let e = self.entries.remove(&mac)?;
        self.by_ip.remove(&e.res.ip);
        Some(e.res)
    }

    /// Handle one UDP payload received on port 67. Every message that gets no reply is
    /// either a RELEASE/DECLINE (counted as such) or a drop counted by reason.
    pub fn handle(&mut self, payload: &[u8], meta: RxMeta, now: u64) -> Option<Reply> {
        match self.process(payload, meta, now) {
            Ok(r) => r,
            Err(reason) => {
                self.counters.drops[reason.index()] += 1;
                None
            }
        }
    }

    /// Like [`Self::handle`], but says why nothing was sent. Counts replies, RELEASE and
    /// DECLINE; drops are counted only by `handle`.
    pub fn process(
        &mut self,
        payload: &[u8],
        meta: RxMeta,
        now: u64,
    ) -> Result<Option<Reply>, DropReason> {
        let (p, o) = parse_request(payload).map_err(DropReason::Malformed)?;
        let giaddr = p.giaddr();
        if !giaddr.is_unspecified() && !self.config.contains(giaddr) {
            return Err(DropReason::WrongNetwork);
        }
        let mac = p.client_mac();
        let msg_type = o
            .msg_type
            .ok_or(DropReason::Malformed(wire::Error::MissingMessageType))?;
        if matches!(
            msg_type,
            MessageType::Offer | MessageType::Ack | MessageType::Nak
        ) {
            return Err(DropReason::UnexpectedMessageType);
        }
        let server_ip = self.config.server_ip;
        let entry = self
            .entries
            .get_mut(&mac)
            .ok_or(DropReason::UnknownClient)?;
        let ip = entry.res.ip;
        let ours = |sid: Option<Ipv4Addr>| sid.is_none_or(|s| s == server_ip);
        let until = now.saturating_add(u64::from(self.config.lease_secs));
        let reply = match msg_type {
            MessageType::Discover => {
                if entry.declined_until > now {
                    return Err(DropReason::AddressDeclined);
                }
                let bound = matches!(entry.lease, Some(LeaseState::Bound { until }) if until > now);
                if !bound {
                    entry.lease = Some(LeaseState::Offered {
                        until: now + OFFER_TIMEOUT_SECS,
                    });
                }
                self.reply(&p, &o, meta, MessageType::Offer, Some(mac))
            }
            MessageType::Request => {
                let ciaddr = p.ciaddr();
                let good = if let Some(sid) = o.server_id {
                    // SELECTING.
                    if sid != server_ip {
                        if matches!(entry.lease, Some(LeaseState::Offered { .. })) {
                            entry.lease = None;
                        }
                        return Err(DropReason::WrongServer);
                    }
                    o.requested_ip.unwrap_or(ciaddr) == ip
                } else if let Some(req) = o.requested_ip {
                    // INIT-REBOOT: NAK a wrong address or one from another network.
                    self.config.contains(req) && req == ip
                } else if !ciaddr.is_unspecified() {
                    // RENEWING / REBINDING. No lease in the table (we restarted) is fine:
                    // the reservation is the truth, as Neutron's lease file makes it.
                    ciaddr == ip
                } else {
                    return Err(DropReason::BadState);
                };
                if good {
                    entry.lease = Some(LeaseState::Bound { until });
                    entry.declined_until = 0;
                    self.reply(&p, &o, meta, MessageType::Ack, Some(mac))
                } else {
                    if matches!(entry.lease, Some(LeaseState::Offered { .. })) {
                        entry.lease = None;
                    }
                    self.reply(&p, &o, meta, MessageType::Nak, Some(mac))
                }
            }
            MessageType::Decline => {
                if !ours(o.server_id) {
                    return Err(DropReason::WrongServer);
                }
                if o.requested_ip.is_some_and(|r| r != ip) {
                    return Err(DropReason::BadState);
                }
                entry.lease = None;
                entry.declined_until = now + DECLINE_BACKOFF_SECS;
                self.counters.declines += 1;
                Ok(None)
            }
            MessageType::Release => {
                if !ours(o.server_id) {
                    return Err(DropReason::WrongServer);
                }
                if p.ciaddr() != ip {
                    return Err(DropReason::BadState);
                }
                entry.lease = None;
                self.counters.releases += 1;
                Ok(None)
            }
            MessageType::Inform => self.reply(&p, &o, meta, MessageType::Ack, None),
            MessageType::Offer | MessageType::Ack | MessageType::Nak => {
                Err(DropReason::UnexpectedMessageType)
            }
        }?;
        if let Some(r) = &reply {
            match (msg_type, r.kind) {
                (MessageType::Inform, _) => self.counters.informs += 1,
                (_, MessageType::Offer) => self.counters.offers += 1,
                (_, MessageType::Nak) => self.counters.naks += 1,
                _ => self.counters.acks += 1,
            }
        }
        Ok(reply)
    }

    /// Build a reply. `lease_mac` is `None` for INFORM (no yiaddr, no lease times).
    fn reply(
        &self,
        req: &Packet<&[u8]>,
        o: &ClientOpts<'_>,
        meta: RxMeta,
        kind: MessageType,
        lease_mac: Option<[u8; 6]>,
    ) -> Result<Option<Reply>, DropReason> {
        let entry = self.entries.get(&req.client_mac());
        let giaddr = req.giaddr();
        let ciaddr = req.ciaddr();
        let yiaddr = match (kind, lease_mac.and_then(|m| self.entries.get(&m))) {
            (MessageType::Nak, _) | (_, None) => Ipv4Addr::UNSPECIFIED,
            (_, Some(e)) => e.res.ip,
        };
        let mut flags = req.flags() & wire::FLAG_BROADCAST;
        if kind == MessageType::Nak && !giaddr.is_unspecified() {
            // RFC 2131 §4.3.2: a relayed NAK asks the relay to broadcast.
            flags |= wire::FLAG_BROADCAST;
        }

        let mut buf = Vec::with_capacity(576);
        buf.resize(wire::HEADER_LEN, 0);
        {
            let mut p = Packet::new_unchecked(&mut buf[..]);
            p.set_op(wire::OP_BOOTREPLY);
            p.set_htype(wire::HTYPE_ETHERNET);
            p.set_hlen(6);
            p.set_xid(req.xid());
            p.set_flags(flags);
            if kind != MessageType::Nak && lease_mac.is_none() {
                p.set_ciaddr(ciaddr);
            }
            p.set_yiaddr(yiaddr);
            p.set_giaddr(giaddr);
            p.set_chaddr(req.chaddr());
            p.set_magic_cookie();
        }

        // Largest message: the client's option 57 (≥ 576, counting IP+UDP headers), never
        // more than our own MTU allows.
        let client_max = usize::from(o.max_size.unwrap_or(0)).max(wire::MIN_MESSAGE_SIZE);
        let link_max = usize::from(self.config.mtu).max(wire::MIN_MESSAGE_SIZE);
        let max_len = client_max.min(link_max) - wire::IP_UDP_HEADER_LEN;

        let type_byte = [kind as u8];
        let sid = self.config.server_ip.octets();
        let leading: [(u8, &[u8]); 2] = [(opt::MESSAGE_TYPE, &type_byte), (opt::SERVER_ID, &sid)];
        // Every distinct option code at most once: a fixed 256 slots, no allocation.
        let mut rest: heapless::Vec<(u8, &[u8]), 256> = heapless::Vec::new();
        if kind != MessageType::Nak {
            let prep = &self.prepared.by_code;
            let hostname = entry.map(|e| e.res.hostname.as_bytes()).unwrap_or(&[]);
            let hostname = &hostname[..hostname.len().min(255)];
            let is_lease = lease_mac.is_some();
            let lookup = |code: u8| -> Option<&[u8]> {
                match code {
                    opt::MESSAGE_TYPE | opt::SERVER_ID => None,
                    opt::HOSTNAME if !hostname.is_empty() => Some(hostname),
                    opt::LEASE_TIME | opt::T1 | opt::T2 if !is_lease => None,
                    c => prep.get(&c).map(|v| v.as_slice()),
                }
            };
            // Mandatory first, then what was asked in the order asked, then forced ones.
            let lease_first: &[u8] = if is_lease { &[opt::LEASE_TIME] } else { &[] };
            // No list: send everything we have, as dnsmasq does for old clients.
            let asked = o.prl.unwrap_or(&DEFAULT_OPTIONS);
            let codes = lease_first
                .iter()
                .chain(asked)
                .chain(&[opt::SUBNET_MASK, opt::MTU]);
            let mut seen = [false; 256];
            for &c in codes {
                if !core::mem::replace(&mut seen[c as usize], true)
                    && let Some(d) = lookup(c)
                    // Cannot fail: codes are distinct, so at most 256 of them.
                    && rest.push((c, d)).is_err()
                {
                    break;
                }
            }
        }
        let layout = wire::emit_options(&mut buf, &leading, &rest, max_len, MIN_REPLY_LEN);
        if layout
            .dropped
            .iter()
            .any(|c| matches!(*c, opt::MESSAGE_TYPE | opt::SERVER_ID | opt::LEASE_TIME))
        {
            return Err(DropReason::ReplyTooBig);
        }

        // RFC 2131 §4.1 addressing.
        let (dst_ip, dst_port, dst_mac) = if !giaddr.is_unspecified() {
            (giaddr, SERVER_PORT, Some(meta.src_mac))
        } else if kind == MessageType::Nak {
            (Ipv4Addr::BROADCAST, CLIENT_PORT, None)
        } else if !ciaddr.is_unspecified() {
            (ciaddr, CLIENT_PORT, Some(meta.src_mac))
        } else if req.broadcast_flag() || yiaddr.is_unspecified() {
            (Ipv4Addr::BROADCAST, CLIENT_PORT, None)
        } else {
            (yiaddr, CLIENT_PORT, Some(req.client_mac()))
        };
        Ok(Some(Reply {
            kind,
            payload: buf,
            dst_ip,
            dst_port,
            dst_mac,
        }))
    }
}
