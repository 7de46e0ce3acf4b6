//! The gateway: tenant frames in on NIC 0 leave encapsulated on NIC 1 (to the VTEP their
//! destination lives behind, or to every remote VTEP), VXLAN datagrams for our VNI in on
//! NIC 1 leave decapsulated on NIC 0, and local_vtep answers ARP and ping on NIC 1.

use crate::counters::{DropReason, Stats};
use crate::fdb::{Fdb, Kind, Learn};
use crate::neighbor::{Link, Neighbors, Sent, put_parts};
use crate::wire::{self, ARP_FRAME_LEN, ARP_REPLY, ARP_REQUEST, Arp, OUTER_LEN, Outer};
use crate::{TENANT, UNDERLAY};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use nanovnf_frame::checksum::{self, fold, ipv4_header, ipv4_header_ok, pseudo_v4, sum};
use nanovnf_frame::offload::{F_DATA_VALID, F_NEEDS_CSUM};
use nanovnf_frame::segment::{TcpChecksum, segment_tcp4, segment_tcp4_with, tcp4_headers};
use nanovnf_frame::{
    ETHERNET_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, Fill, GsoKind, IP_PROTO_ICMP, IP_PROTO_TCP,
    IP_PROTO_UDP, Offload, Transmit, be16, put_be16,
};
use nanovnf_schema::NicConfig;
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::vxlan::{FdbEntry, VxlanRole};

/// The most remote VTEPs a flood list may hold.
pub const MAX_REMOTES: usize = 1024;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// Smallest MTU either NIC may have (IPv4's minimum).
const MIN_MTU: u16 = 68;

/// What became of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent over the overlay as `copies` outer frames (one per VTEP, times the segments of
    /// a superframe), some perhaps queued behind ARP.
    Encapsulated {
        copies: usize,
    },
    /// The inner frame went to the tenant NIC.
    Decapsulated,
    /// For the gateway itself: ARP or ping for local_vtep, ARP from a VTEP, an ARP
    /// request the responder answered.
    Local,
    /// Every copy is waiting for its VTEP's MAC.
    Queued,
    Dropped(DropReason),
}

/// Why the boot configuration (or a live change) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Fewer than two NICs (tenant and underlay).
    MissingNic { index: usize },
    /// The underlay NIC has no address to use as local_vtep.
    NoLocalVtep,
    /// local_vtep (or its prefix) is not a usable unicast address.
    BadLocalVtep { addr: Ipv4Addr, prefix_len: u8 },
    /// An MTU below 68.
    BadMtu { nic: usize, mtu: u16 },
    /// The VNI does not fit in 24 bits.
    BadVni { vni: u32 },
    /// UDP port 0.
    BadUdpPort,
    /// Outer TTL 0.
    BadTtl,
    /// FDB capacity 0.
    BadCapacity,
    /// A remote VTEP (or a static entry's) that is not a unicast address other than ours.
    BadVtep { vtep: Ipv4Addr },
    /// A VTEP outside the underlay subnet, and no underlay gateway.
    NoRouteTo { vtep: Ipv4Addr },
    /// The underlay gateway is not a unicast address on the underlay subnet.
    BadGateway { gateway: Ipv4Addr },
    /// More remote VTEPs than [`MAX_REMOTES`].
    TooManyRemotes { count: usize },
    /// A static entry's MAC is not unicast.
    BadStaticMac { mac: [u8; 6] },
    /// More static entries than the FDB holds.
    TooManyStatic { capacity: usize },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingNic { index } => {
                write!(f, "nics[{index}] missing: need tenant (0) and underlay (1)")
            }
            ConfigError::NoLocalVtep => write!(f, "nics[1] has no address for local_vtep"),
            ConfigError::BadLocalVtep { addr, prefix_len } => {
                write!(
                    f,
                    "local_vtep {addr}/{prefix_len} is not a unicast host address"
                )
            }
            ConfigError::BadMtu { nic, mtu } => {
                write!(f, "nics[{nic}].mtu {mtu} is below {MIN_MTU}")
            }
            ConfigError::BadVni { vni } => write!(f, "vni {vni} does not fit in 24 bits"),
            ConfigError::BadUdpPort => write!(f, "udp_port is 0"),
            ConfigError::BadTtl => write!(f, "ttl is 0"),
            ConfigError::BadCapacity => write!(f, "fdb_capacity is 0"),
            ConfigError::BadVtep { vtep } => {
                write!(
                    f,
                    "VTEP {vtep} is not a unicast address other than local_vtep"
                )
            }
            ConfigError::NoRouteTo { vtep } => write!(
                f,
                "VTEP {vtep} is outside the underlay subnet and no underlay_gateway is set"
            ),
            ConfigError::BadGateway { gateway } => write!(
                f,
                "underlay_gateway {gateway} is not a unicast address on the underlay subnet"
            ),
            ConfigError::TooManyRemotes { count } => {
                write!(f, "{count} remote_vteps (max {MAX_REMOTES})")
            }
            ConfigError::BadStaticMac { mac: m } => write!(
                f,
                "static entry MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} is not unicast",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            ConfigError::TooManyStatic { capacity } => {
                write!(f, "more static entries than fdb_capacity {capacity}")
            }
        }
    }
}

/// Where a tenant frame goes.
#[derive(Clone, Copy)]
enum Target {
    One(Ipv4Addr),
    Flood,
}

/// A forwarding entry as the gateway sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    pub vtep: Ipv4Addr,
    pub is_static: bool,
}

/// The VTEP engine for one tenant network (see the crate docs).
#[derive(Debug)]
pub struct Gateway {
    tenant_mtu: usize,
    underlay_mtu: usize,
    link: Link,
    vni: u32,
    udp_port: u16,
    ttl: u8,
    df: bool,
    arp_responder: bool,
    remotes: Vec<Ipv4Addr>,
    fdb: Fdb,
    neigh: Neighbors,
    ip_id: u16,
    hash_key: u64,
    stats: Stats,
}

impl Gateway {
    /// nics[0] is the tenant NIC (its MTU is the tenant network's), nics[1] the underlay
    /// NIC (its first address is local_vtep, with the underlay prefix). `seed` keys the
    /// source-port hash and the first outer IP ID.
    pub fn new(nics: &[NicConfig], role: &VxlanRole, seed: u64) -> Result<Gateway, ConfigError> {
        let tenant = nics
            .get(TENANT)
            .ok_or(ConfigError::MissingNic { index: TENANT })?;
        let underlay = nics
            .get(UNDERLAY)
            .ok_or(ConfigError::MissingNic { index: UNDERLAY })?;
        for (nic, n) in [(TENANT, tenant), (UNDERLAY, underlay)] {
            if n.mtu < MIN_MTU {
                return Err(ConfigError::BadMtu { nic, mtu: n.mtu });
            }
        }
        let addr = underlay.addresses.first().ok_or(ConfigError::NoLocalVtep)?;
        if !wire::is_unicast_ip(addr.addr)
            || addr.prefix_len > 32
            || !wire::is_unicast_mac(&underlay.mac)
        {
            return Err(ConfigError::BadLocalVtep {
                addr: addr.addr,
                prefix_len: addr.prefix_len,
            });
        }
        if role.vni > wire::VNI_MAX {
            return Err(ConfigError::BadVni { vni: role.vni });
        }
        if role.udp_port == 0 {
            return Err(ConfigError::BadUdpPort);
        }
        if role.ttl == 0 {
            return Err(ConfigError::BadTtl);
        }
        if role.fdb_capacity == 0 {
            return Err(ConfigError::BadCapacity);
        }
        let link = Link {
            mac: underlay.mac,
            ip: addr.addr,
            prefix_len: addr.prefix_len,
            gateway: role.underlay_gateway,
        };
        if let Some(gw) = role.underlay_gateway
            && (!wire::is_unicast_ip(gw) || gw == link.ip || !link.on_link(gw))
        {
            return Err(ConfigError::BadGateway { gateway: gw });
        }
        let capacity = role.fdb_capacity as usize;
        let mut g = Gateway {
            tenant_mtu: usize::from(tenant.mtu),
            underlay_mtu: usize::from(underlay.mtu),
            link,
            vni: role.vni,
            udp_port: role.udp_port,
            ttl: role.ttl,
            df: role.df,
            arp_responder: role.arp_responder,
            remotes: Vec::new(),
            fdb: Fdb::new(capacity, u64::from(role.ageing_secs) * 1000),
            neigh: Neighbors::default(),
            ip_id: (seed >> 16) as u16,
            hash_key: splitmix(seed ^ 0x5658_4c41_4e00_0000),
            stats: Stats::default(),
        };
        g.remotes = g.checked_remotes(&role.remote_vteps)?;
        for e in &role.static_entries {
            g.check_static(e)?;
            g.fdb
                .upsert_static(e.mac, e.vtep, e.ip)
                .map_err(|()| ConfigError::TooManyStatic { capacity })?;
        }
        g.repin(0);
        Ok(g)
    }

    fn check_vtep(&self, vtep: Ipv4Addr) -> Result<(), ConfigError> {
        if !wire::is_unicast_ip(vtep) || vtep == self.link.ip {
            return Err(ConfigError::BadVtep { vtep });
        }
        if self.link.next_hop(vtep).is_none() {
            return Err(ConfigError::NoRouteTo { vtep });
        }
        Ok(())
    }

    fn checked_remotes(&self, list: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, ConfigError> {
        let mut out: Vec<Ipv4Addr> = Vec::with_capacity(list.len().min(MAX_REMOTES));
        for &v in list {
            self.check_vtep(v)?;
            if !out.contains(&v) {
                if out.len() == MAX_REMOTES {
                    return Err(ConfigError::TooManyRemotes { count: list.len() });
                }
                out.push(v);
            }
        }
        Ok(out)
    }

    fn check_static(&self, e: &FdbEntry) -> Result<(), ConfigError> {
        if !wire::is_unicast_mac(&e.mac) {
            return Err(ConfigError::BadStaticMac { mac: e.mac });
        }
        self.check_vtep(e.vtep)
    }

    /// Pins the next hops of every remote VTEP and static entry.
    fn repin(&mut self, now_ms: u64) {
        let mut pins: Vec<Ipv4Addr> = Vec::new();
        let vteps = self.remotes.iter().copied().chain(self.fdb.static_vteps());
        for v in vteps {
            if let Some(hop) = self.link.next_hop(v)
                && !pins.contains(&hop)
            {
                pins.push(hop);
            }
        }
        self.neigh.set_pins(&pins, now_ms);
    }

    /// Announces local_vtep (gratuitous ARP) and starts resolving every remote VTEP, every
    /// static entry's VTEP, or the underlay gateway for those off the subnet.
    pub fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        let ip = self.link.ip;
        self.link
            .send_arp(tx, &mut self.stats, ARP_REQUEST, [0xff; 6], [0; 6], ip);
        self.neigh
            .resolve_pinned(now_ms, &self.link, tx, &mut self.stats);
    }

    /// One frame received on `nic`, with its virtio-net offload header.
    pub fn handle(
        &mut self,
        now_ms: u64,
        nic: usize,
        frame: &[u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        match nic {
            TENANT => {
                self.stats.tenant_rx += 1;
                self.tenant_frame(now_ms, frame, offload, tx)
            }
            UNDERLAY => {
                self.stats.underlay_rx += 1;
                self.underlay_frame(now_ms, frame, offload, tx)
            }
            _ => self.dropped(DropReason::BadNic),
        }
    }

    /// Counts a dropped frame.
    fn dropped(&mut self, r: DropReason) -> Outcome {
        self.stats.drop(r);
        Outcome::Dropped(r)
    }

    /// ARP retries and refreshes, queued frames given up on, FDB ageing.
    pub fn poll(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        self.stats.aged += self.fdb.expire(now_ms);
        self.neigh.poll(now_ms, &self.link, tx, &mut self.stats);
    }

    /// When [`Gateway::poll`] next has work.
    pub fn poll_at_ms(&self) -> Option<u64> {
        match (self.fdb.next_expiry(), self.neigh.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a control-channel change: `VxlanRemotes`, `VxlanStaticUpsert`,
    /// `VxlanStaticRemove`. Anything refused changes nothing.
    pub fn apply(&mut self, op: &Op, now_ms: u64, tx: &mut dyn Transmit) -> Result<(), String> {
        match op {
            Op::VxlanRemotes(list) => {
                self.remotes = self.checked_remotes(list).map_err(|e| e.to_string())?;
            }
            Op::VxlanStaticUpsert(e) => {
                self.check_static(e).map_err(|e| e.to_string())?;
                let evicted = self.fdb.upsert_static(e.mac, e.vtep, e.ip).map_err(|()| {
                    ConfigError::TooManyStatic {
                        capacity: self.fdb_capacity(),
                    }
                    .to_string()
                })?;
                if evicted {
                    self.stats.evicted += 1;
                }
            }
            Op::VxlanStaticRemove { mac } => {
                // Removing an entry that is not there is done already.
                self.fdb.remove_static(mac);
            }
            other => return Err(format!("not a VXLAN gateway operation: {other:?}")),
        }
        self.repin(now_ms);
        self.neigh
            .resolve_pinned(now_ms, &self.link, tx, &mut self.stats);
        Ok(())
    }

    fn fdb_capacity(&self) -> usize {
        self.fdb.capacity()
    }

    /// Every counter by its stable name.
    pub fn counters(&self) -> Vec<Counter> {
        let mut out = Vec::with_capacity(64);
        self.stats.push_all(&mut out);
        out.push(Counter::new("fdb_entries", self.fdb.len() as u64));
        out.push(Counter::new("fdb_static", self.fdb.statics() as u64));
        out.push(Counter::new("remote_vteps", self.remotes.len() as u64));
        out.push(Counter::new("underlay_neighbors", self.neigh.len() as u64));
        out.push(Counter::new(
            "queued_bytes",
            self.neigh.queued_bytes() as u64,
        ));
        out
    }

    /// The forwarding entry for `mac`, if any (an aged one may linger until `poll`).
    pub fn forwarding(&self, mac: &[u8; 6]) -> Option<Forwarding> {
        self.fdb.get(mac).map(|e| Forwarding {
            vtep: e.vtep,
            is_static: matches!(e.kind, Kind::Static { .. }),
        })
    }

    pub fn fdb_len(&self) -> usize {
        self.fdb.len()
    }

    /// The flood list in use.
    pub fn remote_vteps(&self) -> &[Ipv4Addr] {
        &self.remotes
    }

    /// The underlay MAC in use for a next hop, if resolved.
    pub fn underlay_mac(&self, next_hop: Ipv4Addr) -> Option<[u8; 6]> {
        self.neigh.mac(next_hop)
    }

    /// The FDB's and the neighbour table's internal invariants (tests, fuzzing).
    pub fn consistent(&self) -> bool {
        self.fdb.consistent()
            && self.remotes.iter().all(|r| {
                self.link
                    .next_hop(*r)
                    .is_some_and(|h| self.neigh.contains(h))
            })
    }

    // ------------------------------------------------------------------ tenant → underlay

    fn tenant_frame(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if frame.len() < ETHERNET_HEADER_LEN {
            return self.dropped(DropReason::TenantRunt);
        }
        if self.arp_responder
            && let Some(out) = self.arp_respond(frame, tx)
        {
            return out;
        }
        let src: [u8; 6] = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
        if self.fdb.forget_learnt(&src) {
            self.stats.moved_local += 1;
        }
        let dst: [u8; 6] = [frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]];
        let target = if wire::is_multicast_mac(&dst) {
            Target::Flood
        } else {
            let (vtep, aged) = self.fdb.lookup(&dst, now_ms);
            if aged {
                self.stats.aged += 1;
            }
            match vtep {
                Some(v) => Target::One(v),
                None => {
                    self.stats.unknown_unicast += 1;
                    Target::Flood
                }
            }
        };
        if matches!(target, Target::Flood) {
            if self.remotes.is_empty() {
                return self.dropped(DropReason::NoRemote);
            }
            self.stats.flooded += 1;
        } else {
            self.stats.unicast += 1;
        }
        let mut tally = Tally::default();
        match offload.gso {
            GsoKind::None if offload.needs_csum() => {
                let mut copy = frame.to_vec();
                let udp = offload.csum_offset == 6;
                if !checksum::complete_partial(
                    &mut copy,
                    usize::from(offload.csum_start),
                    usize::from(offload.csum_offset),
                    udp,
                ) {
                    return self.dropped(DropReason::BadChecksumOffload);
                }
                self.stats.checksums_completed += 1;
                self.encap_all(now_ms, &copy, target, tx, &mut tally);
            }
            GsoKind::None => self.encap_all(now_ms, frame, target, tx, &mut tally),
            GsoKind::Tcp4 => {
                let Some((ihl, doff)) = tcp4_headers(frame) else {
                    return self.dropped(DropReason::BadGso);
                };
                // Each segment must fit the tenant MTU: the far side delivers it there.
                let mss =
                    usize::from(offload.gso_size).min(self.tenant_mtu.saturating_sub(ihl + doff));
                if mss == 0 {
                    return self.dropped(DropReason::BadGso);
                }
                if let Some(outcome) = self.encap_segments(now_ms, frame, target, mss, ihl, tx) {
                    return outcome;
                }
                let mut seg = Vec::new();
                let mut emit = |len: usize, fill: &mut Fill<'_>| {
                    seg.clear();
                    seg.resize(len, 0);
                    fill(&mut seg);
                    self.encap_all(now_ms, &seg, target, tx, &mut tally);
                };
                match segment_tcp4(frame, mss, &mut emit) {
                    Ok(n) => {
                        self.stats.segmented += 1;
                        self.stats.segments += n as u64;
                    }
                    Err(_) => return self.dropped(DropReason::BadGso),
                }
            }
            GsoKind::Tcp6 | GsoKind::Udp | GsoKind::Unknown(_) => {
                return self.dropped(DropReason::UnsupportedGso);
            }
        }
        tally.outcome()
    }

    /// A superframe for one VTEP whose MAC is known: each segment is cut straight into its
    /// transmit buffer behind the outer headers, its TCP checksum left to the underlay
    /// device (`NEEDS_CSUM` on the inner TCP header; the transmit set finishes it where the
    /// device cannot). None when the frame must take the general path (flooding, an
    /// unresolved VTEP, segments too big for the underlay).
    fn encap_segments(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        target: Target,
        mss: usize,
        ihl: usize,
        tx: &mut dyn Transmit,
    ) -> Option<Outcome> {
        let Target::One(vtep) = target else {
            return None;
        };
        let (_, doff) = tcp4_headers(frame)?;
        let largest = ETHERNET_HEADER_LEN + ihl + doff + mss;
        if largest + OUTER_LEN > self.underlay_mtu + ETHERNET_HEADER_LEN {
            return None;
        }
        let hop = self.link.next_hop(vtep)?;
        let dst_mac = self.neigh.use_mac(hop, now_ms)?;
        let mut outer = self.outer(vtep, dst_mac, self.source_port(frame));
        let partial = Offload {
            flags: F_NEEDS_CSUM,
            csum_start: (OUTER_LEN + ETHERNET_HEADER_LEN + ihl) as u16,
            csum_offset: 16,
            ..Offload::default()
        };
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut emit = |len: usize, fill: &mut Fill<'_>| {
            outer.ip_id = outer.ip_id.wrapping_add(1);
            let hdr = outer.emit(len);
            let ok = tx.send(
                UNDERLAY,
                &partial,
                OUTER_LEN + len,
                &mut |b: &mut [u8]| {
                    let (head, inner) = b.split_at_mut(OUTER_LEN);
                    head.copy_from_slice(&hdr);
                    fill(inner);
                },
            );
            if ok {
                sent += 1;
            } else {
                failed += 1;
            }
        };
        let cut = segment_tcp4_with(frame, mss, TcpChecksum::Partial, &mut emit);
        self.ip_id = outer.ip_id;
        let Ok(n) = cut else {
            return Some(self.dropped(DropReason::BadGso));
        };
        self.stats.segmented += 1;
        self.stats.segments += n as u64;
        self.stats.encapsulated += sent;
        self.stats.segments_checksum_offloaded += sent;
        self.stats.tx_failed += failed;
        let mut tally = Tally {
            sent: sent as usize,
            ..Tally::default()
        };
        if failed > 0 {
            tally.drop(DropReason::TxFull, &mut self.stats);
        }
        Some(tally.outcome())
    }

    /// Encapsulates one (non-superframe) inner frame to its target VTEP(s).
    fn encap_all(
        &mut self,
        now_ms: u64,
        inner: &[u8],
        target: Target,
        tx: &mut dyn Transmit,
        tally: &mut Tally,
    ) {
        if inner.len() + OUTER_LEN > self.underlay_mtu + ETHERNET_HEADER_LEN {
            // Every copy would be too big; count the frame once.
            tally.drop(DropReason::TooBig, &mut self.stats);
            return;
        }
        let src_port = self.source_port(inner);
        match target {
            Target::One(vtep) => self.encap_one(now_ms, inner, vtep, src_port, tx, tally),
            Target::Flood => {
                for i in 0..self.remotes.len() {
                    let Some(&vtep) = self.remotes.get(i) else {
                        break;
                    };
                    let before = tally.copies();
                    self.encap_one(now_ms, inner, vtep, src_port, tx, tally);
                    self.stats.flood_copies += (tally.copies() - before) as u64;
                }
            }
        }
    }

    fn encap_one(
        &mut self,
        now_ms: u64,
        inner: &[u8],
        vtep: Ipv4Addr,
        src_port: u16,
        tx: &mut dyn Transmit,
        tally: &mut Tally,
    ) {
        let Some(hop) = self.link.next_hop(vtep) else {
            tally.drop(DropReason::NoRoute, &mut self.stats);
            return;
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        // The next hop's MAC is written by `Neighbors::send`.
        let outer = self.outer(vtep, [0; 6], src_port);
        let mut hdr = outer.emit(inner.len());
        match self.neigh.send(
            hop,
            &mut hdr,
            inner,
            now_ms,
            &self.link,
            tx,
            &mut self.stats,
        ) {
            Sent::Out => tally.sent += 1,
            Sent::Queued => tally.queued += 1,
            Sent::Dropped(r) => tally.drop(r, &mut self.stats),
        }
    }

    /// The outer headers of a frame to `vtep` from our underlay address, with the current
    /// IP ID, TTL, DF, port and VNI.
    fn outer(&self, vtep: Ipv4Addr, dst_mac: [u8; 6], src_port: u16) -> Outer {
        Outer {
            dst_mac,
            src_mac: self.link.mac,
            src_ip: self.link.ip,
            dst_ip: vtep,
            ttl: self.ttl,
            df: self.df,
            ip_id: self.ip_id,
            src_port,
            dst_port: self.udp_port,
            vni: self.vni,
        }
    }

    /// RFC 7348 §5's source port: a hash of the inner flow (MACs, EtherType, and for IPv4
    /// the addresses, protocol and TCP/UDP ports) in 49152..=65535, so underlay ECMP
    /// spreads flows while each flow keeps its path.
    pub fn source_port(&self, inner: &[u8]) -> u16 {
        let mut h = self.hash_key;
        let word = |b: &[u8]| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        if inner.len() < ETHERNET_HEADER_LEN {
            return wire::SOURCE_PORT_MIN;
        }
        h = mix(h, word(&inner[0..6]));
        h = mix(h, word(&inner[6..12]));
        let mut l3 = ETHERNET_HEADER_LEN;
        let mut ethertype = be16(inner, 12);
        if ethertype == ETHERTYPE_VLAN && inner.len() >= ETHERNET_HEADER_LEN + 4 {
            h = mix(h, word(&inner[14..16]));
            ethertype = be16(inner, 16);
            l3 += 4;
        }
        h = mix(h, u64::from(ethertype));
        if ethertype == ETHERTYPE_IPV4
            && let Some(ip) = inner.get(l3..)
            && ip.len() >= 20
            && ip[0] >> 4 == 4
        {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let proto = ip[9];
            h = mix(h, word(&ip[12..20]));
            h = mix(h, u64::from(proto));
            // Ports only in an unfragmented datagram, so all fragments take one path.
            let fragment = be16(ip, 6) & 0x3fff != 0;
            if (proto == IP_PROTO_TCP || proto == IP_PROTO_UDP)
                && !fragment
                && ihl >= 20
                && let Some(ports) = ip.get(ihl..ihl + 4)
            {
                h = mix(h, word(ports));
            }
        }
        wire::SOURCE_PORT_MIN | (splitmix(h) as u16 & 0x3fff)
    }

    /// Answers an ARP request for a static entry's address on the tenant NIC.
    fn arp_respond(&mut self, frame: &[u8], tx: &mut dyn Transmit) -> Option<Outcome> {
        if be16(frame, 12) != ETHERTYPE_ARP {
            return None;
        }
        let req = Arp::parse_frame(frame)?;
        // A gratuitous ARP (or a probe) is an announcement: let it through.
        if req.op != ARP_REQUEST
            || req.spa == req.tpa
            || req.spa.is_unspecified()
            || !wire::is_unicast_mac(&req.sha)
        {
            return None;
        }
        let mac = self.fdb.static_mac_for(req.tpa)?;
        let reply = Arp {
            op: ARP_REPLY,
            sha: mac,
            spa: req.tpa,
            tha: req.sha,
            tpa: req.spa,
        };
        let ok = tx.send(
            TENANT,
            &Offload::default(),
            ARP_FRAME_LEN,
            &mut |b: &mut [u8]| reply.emit_frame(req.sha, b),
        );
        Some(if ok {
            self.stats.arp_responder_answers += 1;
            Outcome::Local
        } else {
            self.stats.tx_failed += 1;
            self.dropped(DropReason::TxFull)
        })
    }

    // ------------------------------------------------------------------ underlay → tenant

    fn underlay_frame(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if frame.len() < ETHERNET_HEADER_LEN {
            return self.dropped(DropReason::UnderlayRunt);
        }
        match be16(frame, 12) {
            ETHERTYPE_ARP => return self.underlay_arp(now_ms, frame, tx),
            ETHERTYPE_IPV4 => {}
            _ => return self.dropped(DropReason::UnsupportedEthertype),
        }
        if frame[0..6] != self.link.mac {
            return self.dropped(DropReason::NotForUs);
        }
        if offload.is_gso() {
            return self.dropped(DropReason::UnsupportedGso);
        }
        let ip = &frame[ETHERNET_HEADER_LEN..];
        if ip.len() < 20 {
            return self.dropped(DropReason::Truncated);
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 {
            return self.dropped(DropReason::BadIpHeader);
        }
        if ip.len() < ihl {
            return self.dropped(DropReason::Truncated);
        }
        let total = usize::from(be16(ip, 2));
        if total < ihl || total > ip.len() {
            return self.dropped(DropReason::BadLength);
        }
        if !ipv4_header_ok(&ip[..ihl]) {
            return self.dropped(DropReason::BadIpChecksum);
        }
        let ip = &ip[..total]; // Ethernet padding off
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if dst != self.link.ip {
            return self.dropped(DropReason::NotForUs);
        }
        if !wire::is_unicast_ip(src) || src == self.link.ip {
            return self.dropped(DropReason::BadSource);
        }
        if be16(ip, 6) & 0x3fff != 0 {
            return self.dropped(DropReason::Fragment);
        }
        let payload = &ip[ihl..];
        match ip[9] {
            IP_PROTO_UDP => {}
            IP_PROTO_ICMP => return self.echo_reply(frame, src, payload, tx),
            _ => return self.dropped(DropReason::UnsupportedProtocol),
        }
        if payload.len() < 8 {
            return self.dropped(DropReason::Truncated);
        }
        let udp_len = usize::from(be16(payload, 4));
        if udp_len < 8 || udp_len > payload.len() {
            return self.dropped(DropReason::BadLength);
        }
        let udp = &payload[..udp_len];
        if be16(udp, 2) != self.udp_port {
            return self.dropped(DropReason::WrongPort);
        }
        // NEEDS_CSUM on receive: the host left the field partial (its data is known good);
        // DATA_VALID: the device checked it.
        let trusted = offload.needs_csum() || offload.flags & F_DATA_VALID != 0;
        if be16(udp, 6) != 0 && !trusted {
            let pseudo = pseudo_v4(src.octets(), dst.octets(), IP_PROTO_UDP, udp_len as u16);
            if fold(sum(udp, pseudo)) != 0xffff {
                return self.dropped(DropReason::BadUdpChecksum);
            }
        }
        let vx = match wire::Packet::new_checked(&udp[8..]) {
            Ok(p) => p,
            Err(_) => return self.dropped(DropReason::Truncated),
        };
        match wire::Repr::parse(&vx) {
            Err(_) => return self.dropped(DropReason::NoVniFlag),
            Ok(r) if r.vni != self.vni => return self.dropped(DropReason::WrongVni),
            Ok(_) => {}
        }
        let inner = vx.payload();
        if inner.len() < ETHERNET_HEADER_LEN {
            return self.dropped(DropReason::InnerRunt);
        }
        let tag = if be16(inner, 12) == ETHERTYPE_VLAN {
            4
        } else {
            0
        };
        if inner.len() > self.tenant_mtu + ETHERNET_HEADER_LEN + tag {
            return self.dropped(DropReason::InnerTooBig);
        }
        let smac: [u8; 6] = [inner[6], inner[7], inner[8], inner[9], inner[10], inner[11]];
        if wire::is_unicast_mac(&smac) {
            match self.fdb.learn(smac, src, now_ms) {
                Learn::New { evicted } => {
                    self.stats.learnt += 1;
                    if evicted {
                        self.stats.evicted += 1;
                    }
                }
                Learn::Known => {}
                Learn::Moved => self.stats.learn_moved += 1,
                Learn::Full => self.stats.learn_table_full += 1,
                Learn::StaticConflict => return self.dropped(DropReason::StaticConflict),
            }
        }
        // A peer on this host (Linux's vxlan over a veth) may leave the *inner* L4
        // checksum partial: keep it partial, relative to the inner frame, for the tenant
        // NIC (the transmit set finishes it where the device cannot).
        let inner_at = ETHERNET_HEADER_LEN + ihl + 16;
        let inner_offload = if offload.needs_csum() && usize::from(offload.csum_start) >= inner_at {
            Offload {
                flags: F_NEEDS_CSUM,
                csum_start: offload.csum_start - inner_at as u16,
                csum_offset: offload.csum_offset,
                ..Offload::default()
            }
        } else {
            Offload::default()
        };
        // The inner frame leaves from the buffer it arrived in (no copy).
        let ok = tx.send_bytes(TENANT, &inner_offload, inner);
        if ok {
            self.stats.decapsulated += 1;
            Outcome::Decapsulated
        } else {
            self.stats.tx_failed += 1;
            self.dropped(DropReason::TxFull)
        }
    }

    /// ARP on the underlay: learn VTEP MACs from anything they send, answer for
    /// local_vtep.
    fn underlay_arp(&mut self, now_ms: u64, frame: &[u8], tx: &mut dyn Transmit) -> Outcome {
        let Some(arp) = Arp::parse_frame(frame) else {
            return self.dropped(DropReason::BadArp);
        };
        if !wire::is_unicast_mac(&arp.sha) || arp.sha == self.link.mac {
            return self.dropped(DropReason::BadArp);
        }
        let mut used = false;
        if arp.spa != self.link.ip && wire::is_unicast_ip(arp.spa) {
            used = self
                .neigh
                .confirm(arp.spa, arp.sha, now_ms, tx, &mut self.stats);
        }
        if arp.op == ARP_REQUEST && arp.tpa == self.link.ip && arp.spa != self.link.ip {
            if self
                .link
                .send_arp(tx, &mut self.stats, ARP_REPLY, arp.sha, arp.sha, arp.spa)
            {
                self.stats.arp_replies += 1;
            }
            used = true;
        }
        if used {
            Outcome::Local
        } else {
            self.dropped(DropReason::NotForUs)
        }
    }

    /// Answers an ICMP echo request to local_vtep (`icmp` is the IPv4 payload).
    fn echo_reply(
        &mut self,
        frame: &[u8],
        src: Ipv4Addr,
        icmp: &[u8],
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if icmp.len() < 8 || icmp[0] != 8 || icmp[1] != 0 || fold(sum(icmp, 0)) != 0xffff {
            return self.dropped(DropReason::BadIcmp);
        }
        let len = ETHERNET_HEADER_LEN + 20 + icmp.len();
        if len > self.underlay_mtu + ETHERNET_HEADER_LEN {
            return self.dropped(DropReason::TooBig);
        }
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut hdr = [0u8; ETHERNET_HEADER_LEN + 20];
        hdr[0..6].copy_from_slice(&frame[6..12]);
        hdr[6..12].copy_from_slice(&self.link.mac);
        put_be16(&mut hdr, 12, ETHERTYPE_IPV4);
        let ip = &mut hdr[14..];
        ip[0] = 0x45;
        put_be16(ip, 2, (20 + icmp.len()) as u16);
        put_be16(ip, 4, self.ip_id);
        ip[8] = 64;
        ip[9] = IP_PROTO_ICMP;
        ip[12..16].copy_from_slice(&self.link.ip.octets());
        ip[16..20].copy_from_slice(&src.octets());
        let c = ipv4_header(ip);
        put_be16(ip, 10, c);
        // Type 8 → 0 changes one checksummed word by 0x0800.
        let check = checksum::update16(be16(icmp, 2), 0x0800, 0x0000);
        let head = [0u8, 0, (check >> 8) as u8, check as u8];
        let ok = tx.send(UNDERLAY, &Offload::default(), len, &mut |b: &mut [u8]| {
            put_parts(b, &[&hdr, &head, &icmp[4..]])
        });
        if ok {
            self.stats.echo_replies += 1;
            Outcome::Local
        } else {
            self.stats.tx_failed += 1;
            self.dropped(DropReason::TxFull)
        }
    }
}

/// The copies one tenant frame made, and why any were dropped.
#[derive(Default)]
struct Tally {
    sent: usize,
    queued: usize,
    dropped: Option<DropReason>,
}

impl Tally {
    fn copies(&self) -> usize {
        self.sent + self.queued
    }

    /// Counts one dropped copy here; the frame's outcome names the first reason.
    fn drop(&mut self, r: DropReason, stats: &mut Stats) {
        stats.drop(r);
        self.dropped.get_or_insert(r);
    }

    fn outcome(&self) -> Outcome {
        match (self.sent, self.queued, self.dropped) {
            (0, 0, r) => Outcome::Dropped(r.unwrap_or(DropReason::NoRemote)),
            (0, _, _) => Outcome::Queued,
            _ => Outcome::Encapsulated {
                copies: self.copies(),
            },
        }
    }
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(27)
}

/// SplitMix64's finaliser: every input bit reaches every output bit.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
