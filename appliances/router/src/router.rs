//! The router engine: validation, ARP, local delivery, routing, NAT through connection
//! tracking, MTU handling (fragmentation, segmentation, fragmentation-needed) and ICMP
//! errors. Frames are parsed as bytes at fixed offsets (IPv4 options are refused, so the
//! L4 header is always at 34) and rewritten in place; the forwarding paths allocate
//! nothing.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use nanovnf_frame::checksum::{
    apply_delta, complete_partial, delta16, delta32, finish, fold, ipv4_header, ipv4_header_ok,
    pseudo_v4, sum, update_partial32, update16, update32,
};
use nanovnf_frame::fragment::fragment_ipv4;
use nanovnf_frame::segment::{segment_tcp4, tcp4_headers};
use nanovnf_frame::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, Fill, GsoKind, IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP,
    Offload, Transmit, be16, be32, put_be16, put_be32,
};
use nanovnf_schema::NicConfig;
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::router::RouterRole;

use crate::conntrack::{self, Dir, Hop, InsertError, Key, Table};
use crate::neigh::{self, Cache, Queued, Resolve};
use crate::reasm::{self, Reassembler};
use crate::{ConfigError, DropReason, MAX_NICS, Outcome};

/// Ethernet header; IPv4 header (options refused, so always 20 bytes); L4 header.
const E: usize = 14;
const L4: usize = E + 20;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Largest ICMP error (IP header included), as RFC 1812 and Linux.
const ICMP_ERROR_MAX: usize = 576;
/// ICMP error rate limit: tokens per millisecond and burst (Linux: 1000/s, burst 50).
const ICMP_BURST: u64 = 50;
/// Conntrack entries examined per second for expiry.
const SWEEP_BUDGET: usize = 4096;
const SWEEP_EVERY_MS: u64 = 1000;

const TCP_RST: u8 = 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_FIN: u8 = 0x01;
const TCP_ACK: u8 = 0x10;

struct Nic {
    mac: [u8; 6],
    /// (address, mask)
    addrs: Vec<(u32, u32)>,
    mtu: usize,
    external: bool,
    /// Source prefixes accepted from this NIC (its subnets, extra routes via it).
    sources: Vec<(u32, u32)>,
}

#[derive(Clone, Copy)]
struct Route {
    net: u32,
    mask: u32,
    nic: usize,
    /// None: connected (the destination is the next hop).
    via: Option<u32>,
}

#[derive(Default, Clone, Copy)]
struct NicStats {
    rx: u64,
    tx: u64,
    drop: u64,
    tx_failed: u64,
}

#[derive(Default)]
struct Stats {
    drops: Vec<u64>,
    nics: Vec<NicStats>,
    forwarded: u64,
    /// Forwarded by the established-flow shortcut (counted in `forwarded` too).
    shortcut: u64,
    local: u64,
    arp_requests_sent: u64,
    arp_replies_sent: u64,
    arp_queued: u64,
    arp_queue_drops: u64,
    echo_replies: u64,
    tcp_resets_sent: u64,
    icmp_errors_sent: u64,
    icmp_errors_ratelimited: u64,
    icmp_errors_translated: u64,
    frag_received: u64,
    frag_reassembled: u64,
    frag_created: u64,
    gso_forwarded: u64,
    gso_segmented: u64,
    snat_flows: u64,
    dnat_flows: u64,
}

/// How a packet's addresses and ports are to be rewritten.
#[derive(Clone, Copy)]
enum Nat {
    /// Route as it is.
    None,
    /// A tracked flow: rewrite to `target`.
    Tracked { idx: usize, dir: Dir, target: Key },
    /// A new flow to track from `orig`, toward `src`/`dst`; `random` source port.
    New {
        orig: Key,
        src: u32,
        dst: u32,
        random: bool,
    },
    /// Addresses only, untracked (floating IPs for protocols without ports).
    Stateless { src: u32, dst: u32 },
}

/// What the L4 header says (only what NAT and local delivery need).
#[derive(Clone, Copy)]
struct L4Info {
    proto: u8,
    /// The conntrack key, for TCP, UDP and ICMP echo.
    key: Option<Key>,
    tcp_flags: u8,
    icmp_type: u8,
}

fn is_icmp_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

fn mac_of(f: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&f[at..at + 6]);
    m
}

fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// 0/8, 127/8, multicast and class E (broadcast included): never a source.
fn martian_source(a: u32) -> bool {
    let top = a >> 24;
    top == 0 || top == 127 || top >= 224
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Parses the L4 header of an unfragmented (or first-fragment) packet `f`.
fn parse_l4(f: &[u8]) -> Result<L4Info, DropReason> {
    let proto = f[E + 9];
    let src = be32(f, E + 12);
    let dst = be32(f, E + 16);
    let len = f.len() - L4;
    let mut info = L4Info {
        proto,
        key: None,
        tcp_flags: 0,
        icmp_type: 0,
    };
    let key = |sport, dport| Key {
        src,
        dst,
        sport,
        dport,
        proto,
    };
    match proto {
        IP_PROTO_TCP => {
            if len < 20 {
                return Err(DropReason::BadL4);
            }
            info.tcp_flags = f[L4 + 13];
            info.key = Some(key(be16(f, L4), be16(f, L4 + 2)));
        }
        IP_PROTO_UDP => {
            if len < 8 {
                return Err(DropReason::BadL4);
            }
            info.key = Some(key(be16(f, L4), be16(f, L4 + 2)));
        }
        IP_PROTO_ICMP => {
            if len < 8 {
                return Err(DropReason::BadL4);
            }
            info.icmp_type = f[L4];
            let id = be16(f, L4 + 4);
            info.key = match f[L4] {
                8 => Some(key(id, 0)),
                0 => Some(key(0, id)),
                _ => None,
            };
        }
        _ => {}
    }
    Ok(info)
}

/// Rewrites the addresses and ports of packet `f` (whose key is `from`) to `to`, keeping
/// the IP checksum complete and the L4 checksum complete or partial as it was.
fn rewrite(f: &mut [u8], from: &Key, to: &Key, partial: bool) {
    let mut ipc = be16(f, E + 10);
    let proto = f[E + 9];
    let len = f.len() - L4;
    let csum_at = match proto {
        IP_PROTO_TCP if len >= 18 => Some(L4 + 16),
        IP_PROTO_UDP if len >= 8 => Some(L4 + 6),
        _ => None,
    };
    let mut l4c = csum_at.map(|at| be16(f, at));
    let udp_none = proto == IP_PROTO_UDP && l4c == Some(0) && !partial;
    for (at, old, new) in [(E + 12, from.src, to.src), (E + 16, from.dst, to.dst)] {
        if old == new {
            continue;
        }
        put_be32(f, at, new);
        ipc = update32(ipc, old, new);
        if let Some(c) = l4c.as_mut()
            && !udp_none
        {
            *c = if partial {
                update_partial32(*c, old, new)
            } else {
                update32(*c, old, new)
            };
        }
    }
    put_be16(f, E + 10, ipc);
    match proto {
        IP_PROTO_TCP | IP_PROTO_UDP => {
            for (at, old, new) in [(L4, from.sport, to.sport), (L4 + 2, from.dport, to.dport)] {
                if old == new || len < 4 {
                    continue;
                }
                put_be16(f, at, new);
                if let Some(c) = l4c.as_mut()
                    && !partial
                    && !udp_none
                {
                    *c = update16(*c, old, new);
                }
            }
            if let (Some(at), Some(mut c)) = (csum_at, l4c) {
                if proto == IP_PROTO_UDP && !partial && !udp_none && c == 0 {
                    c = 0xffff;
                }
                put_be16(f, at, c);
            }
        }
        IP_PROTO_ICMP if len >= 8 => {
            let (old, new) = if f[L4] == 0 {
                (from.dport, to.dport)
            } else {
                (from.sport, to.sport)
            };
            if old != new {
                put_be16(f, L4 + 4, new);
                if !partial {
                    let c = update16(be16(f, L4 + 2), old, new);
                    put_be16(f, L4 + 2, c);
                }
            }
        }
        _ => {}
    }
}

/// Verifies the complete L4 checksum of packet `f` (TCP, UDP, ICMP).
fn l4_checksum_ok(f: &[u8]) -> bool {
    let seg = &f[L4..];
    let src: [u8; 4] = [f[E + 12], f[E + 13], f[E + 14], f[E + 15]];
    let dst: [u8; 4] = [f[E + 16], f[E + 17], f[E + 18], f[E + 19]];
    match f[E + 9] {
        IP_PROTO_ICMP => fold(sum(seg, 0)) == 0xffff,
        IP_PROTO_UDP if seg.len() >= 8 && be16(seg, 6) == 0 => true,
        p @ (IP_PROTO_TCP | IP_PROTO_UDP) => {
            let Ok(len) = u16::try_from(seg.len()) else {
                return false;
            };
            fold(sum(seg, pseudo_v4(src, dst, p, len))) == 0xffff
        }
        _ => true,
    }
}

pub struct Router {
    nics: Vec<Nic>,
    external: Option<usize>,
    /// Longest prefix first.
    routes: Vec<Route>,
    enable_snat: bool,
    /// The external NIC's first address: gateway SNAT and hairpin source.
    gw_addr: Option<u32>,
    fip_to_fixed: BTreeMap<u32, u32>,
    fixed_to_fip: BTreeMap<u32, u32>,
    ct: Table,
    neigh: Cache,
    reasm: Reassembler,
    rng: u64,
    icmp_tokens: u64,
    icmp_refill_ms: u64,
    ip_id: u16,
    next_sweep_ms: u64,
    /// Changes with every floating IP change (see [`Router::generation`]).
    config_generation: u32,
    stats: Stats,
}

impl Router {
    /// `nics[i]` is NIC i; `role.external_nic` names the external one; the others are
    /// tenant NICs.
    pub fn new(nics: &[NicConfig], role: &RouterRole, seed: u64) -> Result<Router, ConfigError> {
        if nics.is_empty() {
            return Err(ConfigError::NoNics);
        }
        if nics.len() > MAX_NICS {
            return Err(ConfigError::TooManyNics { count: nics.len() });
        }
        let external = match role.external_nic {
            Some(i) if usize::from(i) >= nics.len() => {
                return Err(ConfigError::ExternalNicOutOfRange { index: i });
            }
            Some(i) => Some(usize::from(i)),
            None => None,
        };
        let mut out = Vec::with_capacity(nics.len());
        let mut routes = Vec::new();
        for (i, n) in nics.iter().enumerate() {
            if n.mtu < 68 {
                return Err(ConfigError::BadMtu { nic: i, mtu: n.mtu });
            }
            let mut addrs = Vec::new();
            for c in &n.addresses {
                let a = u32::from(c.addr);
                if c.prefix_len > 32 || martian_source(a) {
                    return Err(ConfigError::BadAddress {
                        nic: i,
                        address: format!("{c}"),
                    });
                }
                let mask = mask_of(c.prefix_len);
                addrs.push((a, mask));
                routes.push(Route {
                    net: a & mask,
                    mask,
                    nic: i,
                    via: None,
                });
            }
            out.push(Nic {
                mac: n.mac,
                sources: addrs.iter().map(|&(a, m)| (a & m, m)).collect(),
                addrs,
                mtu: usize::from(n.mtu),
                external: Some(i) == external,
            });
        }
        let connected = |ip: u32, only: Option<usize>| {
            routes
                .iter()
                .find(|r| ip & r.mask == r.net && only.is_none_or(|n| n == r.nic))
                .map(|r| r.nic)
        };
        let mut extra = Vec::new();
        for r in &role.routes {
            let hop = u32::from(r.nexthop);
            let Some(nic) = connected(hop, None) else {
                return Err(ConfigError::NextHopNotConnected {
                    destination: format!("{}", r.destination),
                    nexthop: r.nexthop,
                });
            };
            let mask = mask_of(r.destination.prefix_len);
            let net = u32::from(r.destination.addr) & mask;
            extra.push(Route {
                net,
                mask,
                nic,
                via: Some(hop),
            });
            if let Some(n) = out.get_mut(nic) {
                n.sources.push((net, mask));
            }
        }
        if let Some(gw) = role.default_gateway {
            let hop = u32::from(gw);
            let Some(nic) = external.filter(|&e| connected(hop, Some(e)).is_some()) else {
                return Err(ConfigError::GatewayNotOnExternal { gateway: gw });
            };
            extra.push(Route {
                net: 0,
                mask: 0,
                nic,
                via: Some(hop),
            });
        }
        routes.extend(extra);
        // Longest prefix first; among equals, connected before via (stable sort).
        routes.sort_by_key(|r| core::cmp::Reverse(r.mask.count_ones()));
        if role.conntrack_capacity > conntrack::MAX_CAPACITY {
            return Err(ConfigError::ConntrackTooLarge {
                capacity: role.conntrack_capacity,
            });
        }
        let gw_addr = external.and_then(|e| out[e].addrs.first().map(|a| a.0));
        let mut rng = seed;
        let ct_seed = splitmix(&mut rng);
        let mut router = Router {
            nics: out,
            external,
            routes,
            enable_snat: role.enable_snat,
            gw_addr,
            fip_to_fixed: BTreeMap::new(),
            fixed_to_fip: BTreeMap::new(),
            ct: Table::new(role.conntrack_capacity as usize, ct_seed),
            neigh: Cache::default(),
            reasm: Reassembler::default(),
            rng,
            icmp_tokens: ICMP_BURST,
            icmp_refill_ms: 0,
            ip_id: 0,
            next_sweep_ms: 0,
            config_generation: 0,
            stats: Stats {
                drops: vec![0; DropReason::ALL.len()],
                nics: vec![NicStats::default(); nics.len()],
                ..Stats::default()
            },
        };
        for fip in &role.floating_ips {
            router
                .check_fip(u32::from(fip.floating), u32::from(fip.fixed))
                .map_err(|reason| ConfigError::BadFloatingIp {
                    floating: fip.floating,
                    reason,
                })?;
            router
                .fip_to_fixed
                .insert(u32::from(fip.floating), u32::from(fip.fixed));
            router
                .fixed_to_fip
                .insert(u32::from(fip.fixed), u32::from(fip.floating));
        }
        router.ip_id = splitmix(&mut router.rng) as u16;
        Ok(router)
    }

    fn check_fip(&self, floating: u32, fixed: u32) -> Result<(), &'static str> {
        if self.external.is_none() {
            return Err("the router has no external NIC");
        }
        if self.is_local(floating) || self.is_local(fixed) {
            return Err("collides with a router address");
        }
        if martian_source(floating) || martian_source(fixed) {
            return Err("not a host address");
        }
        if self
            .fixed_to_fip
            .get(&fixed)
            .is_some_and(|&f| f != floating)
        {
            return Err("the fixed address already has another floating IP");
        }
        Ok(())
    }

    /// Gratuitous ARP for every address of every NIC and every floating IP.
    pub fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        let _ = now_ms;
        for nic in 0..self.nics.len() {
            let addrs: Vec<u32> = self.nics[nic].addrs.iter().map(|a| a.0).collect();
            for a in addrs {
                self.gratuitous_arp(nic, a, tx);
            }
        }
        if let Some(ext) = self.external {
            let fips: Vec<u32> = self.fip_to_fixed.keys().copied().collect();
            for f in fips {
                self.gratuitous_arp(ext, f, tx);
            }
        }
    }

    /// One frame received on `nic` with the virtio-net header's `offload`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if nic >= self.nics.len() {
            return self.dropped(None, DropReason::UnknownNic);
        }
        self.stats.nics[nic].rx += 1;
        if let Some(out) = self.shortcut(now_ms, nic, frame, offload, tx) {
            return out;
        }
        let out = self.handle_frame(now_ms, nic, frame, offload, tx);
        match out {
            Outcome::Dropped(r) => self.dropped(Some(nic), r),
            Outcome::Forwarded { .. } => {
                self.stats.forwarded += 1;
                out
            }
            Outcome::Local => {
                self.stats.local += 1;
                out
            }
            Outcome::Queued => out,
        }
    }

    /// The established-flow shortcut (Linux's flowtable does the same): a TCP or UDP
    /// packet of a tracked flow whose direction already took the full path from the same
    /// NIC, under the same floating IPs and neighbour MACs, is checked only for what
    /// can differ from packet to packet (its IP header, TTL and size), then rewritten and
    /// sent where the last one went. Fragments, offload work, ICMP and anything the
    /// shortcut cannot vouch for take the full path (None).
    #[inline]
    fn shortcut(
        &mut self,
        now: u64,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Option<Outcome> {
        if offload.gso != GsoKind::None || offload.needs_csum() || frame.len() < L4 + 8 {
            return None;
        }
        if frame[..6] != self.nics[nic].mac || be16(frame, 12) != ETHERTYPE_IPV4 {
            return None;
        }
        // Version 4 without options, not a fragment, TTL left to decrement.
        let total = usize::from(be16(frame, E + 2));
        if frame[E] != 0x45
            || total < 28
            || E + total > frame.len()
            || be16(frame, E + 6) & 0x3fff != 0
        {
            return None;
        }
        let f = &mut frame[..E + total];
        let proto = f[E + 9];
        let tcp = match proto {
            IP_PROTO_TCP if total >= 40 => true,
            IP_PROTO_UDP if total >= 28 => false,
            _ => return None,
        };
        if f[E + 8] <= 1 || self.ct.is_empty() || !ipv4_header_ok(&f[E..L4]) {
            return None;
        }
        let key = Key {
            src: be32(f, E + 12),
            dst: be32(f, E + 16),
            sport: be16(f, L4),
            dport: be16(f, L4 + 2),
            proto,
        };
        let (idx, dir) = self.ct.find_live(&key, now)?;
        let hop = self.ct.hop(idx, dir);
        let out = usize::from(hop.out_nic);
        if now >= hop.until_ms
            || usize::from(hop.in_nic) != nic
            || hop.generation != self.generation()
            || total > self.nics.get(out)?.mtu
        {
            return None;
        }
        let to = self.ct.key(idx, dir.other());
        self.ct
            .update(idx, dir, if tcp { f[L4 + 13] } else { 0 }, now);
        // The reply key reversed: its destination is our source, its source our
        // destination.
        put_be32(f, E + 12, to.dst);
        put_be32(f, E + 16, to.src);
        put_be16(f, L4, to.dport);
        put_be16(f, L4 + 2, to.sport);
        f[E + 8] -= 1;
        put_be16(f, E + 10, apply_delta(be16(f, E + 10), hop.ip_delta));
        let at = if tcp { L4 + 16 } else { L4 + 6 };
        let check = be16(f, at);
        // A UDP checksum of zero means none; a computed zero is sent as all ones.
        if tcp || check != 0 {
            let c = apply_delta(check, hop.l4_delta);
            put_be16(f, at, if c == 0 && !tcp { 0xffff } else { c });
        }
        f[..6].copy_from_slice(&hop.mac);
        f[6..12].copy_from_slice(&self.nics[out].mac);
        if self.send(out, offload, f, tx) {
            self.stats.forwarded += 1;
            self.stats.shortcut += 1;
            Some(Outcome::Forwarded { nic: out })
        } else {
            Some(self.dropped(Some(nic), DropReason::TxFailed))
        }
    }

    /// Changes whenever a forwarding decision cached before may have become wrong: a
    /// floating IP changed, or a neighbour's MAC (both counters only grow, so their sum
    /// never repeats a value it left, short of wrapping).
    fn generation(&self) -> u32 {
        self.config_generation.wrapping_add(self.neigh.generation)
    }

    fn dropped(&mut self, nic: Option<usize>, r: DropReason) -> Outcome {
        self.count_drop(nic, r);
        Outcome::Dropped(r)
    }

    fn count_drop(&mut self, nic: Option<usize>, r: DropReason) {
        // `ALL` lists the reasons in declaration order.
        if let Some(c) = self.stats.drops.get_mut(r as usize) {
            *c += 1;
        }
        if let Some(s) = nic.and_then(|n| self.stats.nics.get_mut(n)) {
            s.drop += 1;
        }
    }

    fn handle_frame(
        &mut self,
        now: u64,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if frame.len() < E {
            return Outcome::Dropped(DropReason::Truncated);
        }
        let to_us = frame[..6] == self.nics[nic].mac;
        let broadcast = frame[..6] == BROADCAST;
        match be16(frame, 12) {
            ETHERTYPE_ARP if to_us || broadcast => self.handle_arp(now, nic, frame, tx),
            ETHERTYPE_IPV4 if to_us => self.handle_ipv4(now, nic, frame, offload, tx),
            ETHERTYPE_IPV4 if broadcast || frame[0] & 1 != 0 => {
                Outcome::Dropped(DropReason::Broadcast)
            }
            ETHERTYPE_ARP | ETHERTYPE_IPV4 => Outcome::Dropped(DropReason::NotForUs),
            _ => Outcome::Dropped(DropReason::UnsupportedEthertype),
        }
    }

    // ------------------------------------------------------------------------- ARP

    fn handle_arp(&mut self, now: u64, nic: usize, f: &mut [u8], tx: &mut dyn Transmit) -> Outcome {
        if f.len() < E + 28 {
            return Outcome::Dropped(DropReason::Truncated);
        }
        let a = &f[E..];
        if be16(a, 0) != 1 || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
            return Outcome::Dropped(DropReason::BadArp);
        }
        let op = be16(a, 6);
        let sha = mac_of(a, 8);
        let spa = be32(a, 14);
        let tpa = be32(a, 24);
        if sha[0] & 1 != 0 || self.is_local(spa) || self.fip_to_fixed.contains_key(&spa) {
            return Outcome::Dropped(DropReason::BadArp);
        }
        let on_subnet = self.nics[nic].addrs.iter().any(|&(x, m)| spa & m == x & m);
        let ours = self.nics[nic].addrs.iter().any(|&(x, _)| x == tpa)
            || (self.nics[nic].external && self.fip_to_fixed.contains_key(&tpa));
        if spa != 0 && on_subnet {
            let create = ours;
            if self.neigh.learn(nic, spa, sha, now, create) {
                self.flush_queue(now, nic, spa, sha, tx);
            }
        }
        match op {
            1 if ours => {
                let mac = self.nics[nic].mac;
                let mut r = [0u8; E + 28];
                r[..6].copy_from_slice(&sha);
                r[6..12].copy_from_slice(&mac);
                put_be16(&mut r, 12, ETHERTYPE_ARP);
                r[E..E + 8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
                r[E + 8..E + 14].copy_from_slice(&mac);
                put_be32(&mut r, E + 14, tpa);
                r[E + 18..E + 24].copy_from_slice(&sha);
                put_be32(&mut r, E + 24, spa);
                self.send(nic, &Offload::default(), &r, tx);
                self.stats.arp_replies_sent += 1;
                Outcome::Local
            }
            1 => Outcome::Dropped(DropReason::ArpNotForUs),
            2 => Outcome::Local,
            _ => Outcome::Dropped(DropReason::BadArp),
        }
    }

    fn arp_request(&mut self, nic: usize, target: u32, tx: &mut dyn Transmit) {
        let sender = self.source_for(nic, target).unwrap_or(0);
        self.send_arp(nic, sender, target, tx);
        self.stats.arp_requests_sent += 1;
    }

    fn gratuitous_arp(&mut self, nic: usize, addr: u32, tx: &mut dyn Transmit) {
        self.send_arp(nic, addr, addr, tx);
        self.stats.arp_requests_sent += 1;
    }

    fn send_arp(&mut self, nic: usize, sender: u32, target: u32, tx: &mut dyn Transmit) {
        let mac = self.nics[nic].mac;
        let mut r = [0u8; E + 28];
        r[..6].copy_from_slice(&BROADCAST);
        r[6..12].copy_from_slice(&mac);
        put_be16(&mut r, 12, ETHERTYPE_ARP);
        r[E..E + 8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        r[E + 8..E + 14].copy_from_slice(&mac);
        put_be32(&mut r, E + 14, sender);
        put_be32(&mut r, E + 24, target);
        self.send(nic, &Offload::default(), &r, tx);
    }

    /// Our address on `nic` in `dst`'s subnet, else its first.
    fn source_for(&self, nic: usize, dst: u32) -> Option<u32> {
        let addrs = &self.nics.get(nic)?.addrs;
        addrs
            .iter()
            .find(|&&(a, m)| a & m == dst & m)
            .or(addrs.first())
            .map(|a| a.0)
    }

    fn flush_queue(&mut self, now: u64, nic: usize, ip: u32, mac: [u8; 6], tx: &mut dyn Transmit) {
        let _ = now;
        for mut q in self.neigh.take_queued(nic, ip) {
            q.frame[..6].copy_from_slice(&mac);
            self.emit(q.nic, &mut q.frame, &q.offload, tx);
        }
    }

    // ------------------------------------------------------------------------ IPv4

    fn is_local(&self, a: u32) -> bool {
        self.nics.iter().any(|n| n.addrs.iter().any(|x| x.0 == a))
    }

    fn route(&self, dst: u32) -> Option<Route> {
        self.routes.iter().find(|r| dst & r.mask == r.net).copied()
    }

    fn is_subnet_broadcast(&self, dst: u32) -> bool {
        self.nics.iter().any(|n| {
            n.addrs
                .iter()
                .any(|&(a, m)| m.count_ones() < 31 && (dst == a | !m || dst == a & m))
        })
    }

    fn handle_ipv4(
        &mut self,
        now: u64,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if frame.len() < E + 20 {
            return Outcome::Dropped(DropReason::Truncated);
        }
        let v = frame[E];
        if v >> 4 != 4 {
            return Outcome::Dropped(DropReason::BadVersion);
        }
        let ihl = usize::from(v & 0x0f) * 4;
        if ihl < 20 {
            return Outcome::Dropped(DropReason::BadIhl);
        }
        if frame.len() < E + ihl {
            return Outcome::Dropped(DropReason::Truncated);
        }
        if !ipv4_header_ok(&frame[E..E + ihl]) {
            return Outcome::Dropped(DropReason::BadIpChecksum);
        }
        if ihl != 20 {
            return Outcome::Dropped(DropReason::IpOptions);
        }
        let total = usize::from(be16(frame, E + 2));
        if total < 20 || E + total > frame.len() {
            return Outcome::Dropped(DropReason::BadLength);
        }
        // Ethernet padding is not part of the packet.
        let f = &mut frame[..E + total];
        let src = be32(f, E + 12);
        let dst = be32(f, E + 16);
        if martian_source(src) {
            return Outcome::Dropped(DropReason::MartianSource);
        }
        let top = dst >> 24;
        if top == 0 || top == 127 || top >= 224 || self.is_subnet_broadcast(dst) {
            return Outcome::Dropped(DropReason::Broadcast);
        }
        let n = &self.nics[nic];
        if !n.external && !n.sources.iter().any(|&(net, m)| src & m == net) {
            return Outcome::Dropped(DropReason::Spoofed);
        }
        let proto = f[E + 9];
        match offload.gso {
            GsoKind::None => {}
            GsoKind::Tcp4 if proto == IP_PROTO_TCP && offload.gso_size > 0 => {
                if tcp4_headers(f).is_none() {
                    return Outcome::Dropped(DropReason::BadOffload);
                }
            }
            _ => return Outcome::Dropped(DropReason::BadOffload),
        }
        if offload.needs_csum() {
            let start = usize::from(offload.csum_start);
            let at = start + usize::from(offload.csum_offset);
            if start < L4 || at + 2 > f.len() {
                return Outcome::Dropped(DropReason::BadOffload);
            }
        }
        let frag = be16(f, E + 6);
        if frag & 0x3fff != 0 {
            self.stats.frag_received += 1;
            if offload.is_gso() || offload.needs_csum() {
                return Outcome::Dropped(DropReason::BadOffload);
            }
            if self.wants_reassembly(nic, src, dst) {
                return match self.reasm.add(f, now) {
                    Ok(None) => Outcome::Queued,
                    Ok(Some(mut whole)) => {
                        self.stats.frag_reassembled += 1;
                        self.handle_datagram(now, nic, &mut whole, &Offload::default(), tx)
                    }
                    Err(e) => Outcome::Dropped(match e {
                        reasm::Error::Overlap => DropReason::FragOverlap,
                        reasm::Error::TooBig => DropReason::FragTooBig,
                        reasm::Error::TableFull => DropReason::FragTableFull,
                        reasm::Error::TooMany => DropReason::FragTooMany,
                        reasm::Error::Duplicate => DropReason::FragDuplicate,
                    }),
                };
            }
            if frag & 0x1fff != 0 {
                // A later fragment that needs no NAT: routed as it is.
                return self.forward(now, nic, f, offload, None, Nat::None, tx);
            }
        }
        self.handle_datagram(now, nic, f, offload, tx)
    }

    /// Fragments are reassembled when the datagram is the router's or may be NATed.
    fn wants_reassembly(&self, nic: usize, src: u32, dst: u32) -> bool {
        if self.is_local(dst) || self.fip_to_fixed.contains_key(&dst) {
            return true;
        }
        if self.nics[nic].external {
            return false;
        }
        let egress_external = self
            .route(dst)
            .is_some_and(|r| Some(r.nic) == self.external);
        egress_external && (self.enable_snat || self.fixed_to_fip.contains_key(&src))
    }

    /// A whole datagram (or a first fragment routed without NAT).
    fn handle_datagram(
        &mut self,
        now: u64,
        nic: usize,
        f: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        let l4 = match parse_l4(f) {
            Ok(l) => l,
            Err(r) => return Outcome::Dropped(r),
        };
        let fragment = be16(f, E + 6) & 0x3fff != 0;
        let src = be32(f, E + 12);
        let dst = be32(f, E + 16);
        let in_external = self.nics[nic].external;
        let fixed = self.fip_to_fixed.get(&dst).copied();
        let local = fixed.is_none() && self.is_local(dst);
        let route0 = if local || fixed.is_some() {
            None
        } else {
            self.route(dst)
        };
        let egress_external =
            route0.is_some_and(|r| Some(r.nic) == self.external && self.external.is_some());
        let tracked = !fragment && (in_external || local || fixed.is_some() || egress_external);
        if tracked && !self.ct.is_empty() {
            if l4.proto == IP_PROTO_ICMP && is_icmp_error(l4.icmp_type) {
                match self.inbound_icmp_error(now, f, offload) {
                    Ok(true) => return self.forward(now, nic, f, offload, Some(l4), Nat::None, tx),
                    Ok(false) => {}
                    Err(r) => return Outcome::Dropped(r),
                }
            } else if let Some(key) = l4.key
                && let Some((idx, dir)) = self.ct.lookup(&key, now)
            {
                let other = dir.other();
                let target = self.ct.key(idx, other).reversed();
                let nat = Nat::Tracked { idx, dir, target };
                return self.forward(now, nic, f, offload, Some(l4), nat, tx);
            }
        }
        if let Some(fixed) = fixed {
            // DNAT to the fixed address; from a tenant (hairpin), SNAT too.
            let new_src = if in_external {
                src
            } else {
                self.fixed_to_fip
                    .get(&src)
                    .copied()
                    .or(self.gw_addr)
                    .unwrap_or(src)
            };
            let random = new_src != src && Some(new_src) == self.gw_addr;
            let nat = self.new_nat(&l4, fragment, new_src, fixed, random);
            return self.forward(now, nic, f, offload, Some(l4), nat, tx);
        }
        if local {
            return self.local(now, nic, f, offload, &l4, tx);
        }
        let mut nat = Nat::None;
        if egress_external && !in_external {
            if let Some(&fip) = self.fixed_to_fip.get(&src) {
                nat = self.new_nat(&l4, fragment, fip, dst, false);
            } else if self.enable_snat
                && let Some(gw) = self.gw_addr
            {
                nat = self.new_nat(&l4, fragment, gw, dst, true);
                if matches!(nat, Nat::Stateless { .. }) {
                    return Outcome::Dropped(DropReason::NatUnsupported);
                }
            }
        }
        self.forward(now, nic, f, offload, Some(l4), nat, tx)
    }

    /// The NAT for a new flow: tracked when it has a key (TCP, UDP, echo request),
    /// else addresses only.
    fn new_nat(&self, l4: &L4Info, fragment: bool, src: u32, dst: u32, random: bool) -> Nat {
        match l4.key {
            Some(orig) if !fragment && (l4.proto != IP_PROTO_ICMP || l4.icmp_type == 8) => {
                Nat::New {
                    orig,
                    src,
                    dst,
                    random,
                }
            }
            _ => Nat::Stateless { src, dst },
        }
    }

    /// Routes packet `f` (after `nat`) out of the router.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: u64,
        in_nic: usize,
        f: &mut [u8],
        offload: &Offload,
        l4: Option<L4Info>,
        nat: Nat,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        let in_mac = mac_of(f, 6);
        let dst = match nat {
            Nat::None => be32(f, E + 16),
            Nat::Tracked { target, .. } => target.dst,
            Nat::New { dst, .. } | Nat::Stateless { dst, .. } => dst,
        };
        let Some(route) = self.route(dst) else {
            self.icmp_error(now, in_nic, in_mac, f, offload, 3, 0, 0, false, tx);
            return Outcome::Dropped(DropReason::NoRoute);
        };
        if f[E + 8] <= 1 {
            self.icmp_error(now, in_nic, in_mac, f, offload, 11, 0, 0, false, tx);
            return Outcome::Dropped(DropReason::TtlExpired);
        }
        let out = route.nic;
        let mtu = self.nics[out].mtu;
        let df = be16(f, E + 6) & 0x4000 != 0;
        let size = if offload.gso == GsoKind::Tcp4 {
            tcp4_headers(f).map_or(usize::MAX, |(i, d)| i + d + usize::from(offload.gso_size))
        } else {
            f.len() - E
        };
        if size > mtu && df {
            self.icmp_error(now, in_nic, in_mac, f, offload, 3, 4, mtu as u16, false, tx);
            return Outcome::Dropped(DropReason::FragNeeded);
        }
        let partial = offload.needs_csum();
        match nat {
            Nat::None => {}
            Nat::Tracked { idx, dir, target } => {
                let Some(l4) = l4 else {
                    return Outcome::Dropped(DropReason::BadL4);
                };
                let Some(from) = l4.key else {
                    return Outcome::Dropped(DropReason::BadL4);
                };
                self.ct.update(idx, dir, l4.tcp_flags, now);
                rewrite(f, &from, &target, partial);
            }
            Nat::New {
                orig,
                src,
                dst,
                random,
            } => {
                let flags = l4.map_or(0, |l| l.tcp_flags);
                let target = match self.track(orig, src, dst, random, flags, now) {
                    Ok(t) => t,
                    Err(r) => return Outcome::Dropped(r),
                };
                if src != orig.src {
                    self.stats.snat_flows += 1;
                }
                if dst != orig.dst {
                    self.stats.dnat_flows += 1;
                }
                rewrite(f, &orig, &target, partial);
            }
            Nat::Stateless { src, dst } => {
                let from = Key {
                    src: be32(f, E + 12),
                    dst: be32(f, E + 16),
                    ..Key::default()
                };
                let to = Key { src, dst, ..from };
                rewrite(f, &from, &to, partial);
            }
        }
        // TTL - 1.
        let old = be16(f, E + 8);
        f[E + 8] -= 1;
        let c = update16(be16(f, E + 10), old, be16(f, E + 8));
        put_be16(f, E + 10, c);
        let hop = route.via.unwrap_or(dst);
        let mac = self.nics[out].mac;
        f[6..12].copy_from_slice(&mac);
        match self.neigh.resolve(out, hop, now) {
            Resolve::Known {
                mac: m,
                fresh_until,
            } => {
                if let (Nat::Tracked { idx, dir, target }, Some(from)) =
                    (nat, l4.and_then(|l| l.key))
                {
                    // The flow's next packets in this direction may take the shortcut.
                    let addrs = delta32(from.src, target.src) + delta32(from.dst, target.dst);
                    let ports =
                        delta16(from.sport, target.sport) + delta16(from.dport, target.dport);
                    let cached = Hop {
                        until_ms: fresh_until,
                        generation: self.generation(),
                        // TTL - 1 takes 0x100 off the TTL/protocol word: ~m + m' = 0xfeff.
                        ip_delta: fold(addrs + 0xfeff),
                        l4_delta: fold(addrs + ports),
                        in_nic: in_nic as u8,
                        out_nic: out as u8,
                        mac: m,
                    };
                    self.ct.set_hop(idx, dir, cached);
                }
                f[..6].copy_from_slice(&m);
                self.emit_outcome(out, f, offload, tx)
            }
            Resolve::KnownProbe(m) => {
                self.arp_request(out, hop, tx);
                f[..6].copy_from_slice(&m);
                self.emit_outcome(out, f, offload, tx)
            }
            Resolve::Unknown(ask) => {
                if ask {
                    self.arp_request(out, hop, tx);
                }
                let q = Queued {
                    nic: out,
                    next_hop: hop,
                    frame: f.to_vec(),
                    offload: *offload,
                    in_nic,
                    in_mac,
                };
                match self.neigh.enqueue(q) {
                    Ok(pushed_out) => {
                        self.stats.arp_queued += 1;
                        for _ in 0..pushed_out {
                            self.stats.arp_queue_drops += 1;
                            self.count_drop(Some(in_nic), DropReason::ArpQueueOverflow);
                        }
                        Outcome::Queued
                    }
                    Err(_) => {
                        self.stats.arp_queue_drops += 1;
                        Outcome::Dropped(DropReason::ArpQueueFull)
                    }
                }
            }
            Resolve::Full => Outcome::Dropped(DropReason::NeighbourTableFull),
        }
    }

    /// Tracks a new flow `orig` translated to `src`/`dst`; returns the translated key.
    fn track(
        &mut self,
        orig: Key,
        src: u32,
        dst: u32,
        random: bool,
        flags: u8,
        now: u64,
    ) -> Result<Key, DropReason> {
        let mut t = Key { src, dst, ..orig };
        let icmp_reply = orig.proto == IP_PROTO_ICMP && orig.sport == 0;
        for attempt in 0..32 {
            if random || attempt > 0 {
                let port = 1024 + (splitmix(&mut self.rng) % (65536 - 1024)) as u16;
                if icmp_reply {
                    t.dport = port;
                } else {
                    t.sport = port;
                }
            }
            match self.ct.insert(orig, t.reversed(), flags, now) {
                Ok(_) => return Ok(t),
                Err(InsertError::Exists) => continue,
                Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
            }
        }
        Err(DropReason::NatPortsExhausted)
    }

    fn emit_outcome(
        &mut self,
        nic: usize,
        f: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if self.emit(nic, f, offload, tx) {
            Outcome::Forwarded { nic }
        } else {
            Outcome::Dropped(DropReason::TxFailed)
        }
    }

    /// Sends an addressed IPv4 frame on `nic`: whole when it fits (a superframe when its
    /// segments fit), else segmented or fragmented.
    fn emit(&mut self, nic: usize, f: &mut [u8], offload: &Offload, tx: &mut dyn Transmit) -> bool {
        let mtu = self.nics[nic].mtu;
        if offload.gso == GsoKind::Tcp4 {
            let Some((ihl, doff)) = tcp4_headers(f) else {
                return false;
            };
            if ihl + doff + usize::from(offload.gso_size) <= mtu {
                self.stats.gso_forwarded += 1;
                return self.send(nic, offload, f, tx);
            }
            let mss = mtu.saturating_sub(ihl + doff);
            let mut ok = true;
            let mut sent = 0u64;
            let mut failed = 0u64;
            let r = segment_tcp4(f, mss, &mut |len: usize, fill: &mut Fill<'_>| {
                if tx.send(nic, &Offload::default(), len, fill) {
                    sent += 1;
                } else {
                    failed += 1;
                    ok = false;
                }
            });
            self.stats.gso_segmented += 1;
            self.stats.nics[nic].tx += sent;
            self.stats.nics[nic].tx_failed += failed;
            return r.is_ok() && ok;
        }
        if f.len() - E <= mtu {
            return self.send(nic, offload, f, tx);
        }
        if offload.needs_csum() {
            let udp = f[E + 9] == IP_PROTO_UDP;
            complete_partial(
                f,
                usize::from(offload.csum_start),
                usize::from(offload.csum_offset),
                udp,
            );
        }
        let mut ok = true;
        let mut sent = 0u64;
        let mut failed = 0u64;
        let r = fragment_ipv4(f, mtu, &mut |len: usize, fill: &mut Fill<'_>| {
            if tx.send(nic, &Offload::default(), len, fill) {
                sent += 1;
            } else {
                failed += 1;
                ok = false;
            }
        });
        self.stats.frag_created += sent;
        self.stats.nics[nic].tx += sent;
        self.stats.nics[nic].tx_failed += failed;
        r.is_ok() && ok
    }

    fn send(&mut self, nic: usize, offload: &Offload, bytes: &[u8], tx: &mut dyn Transmit) -> bool {
        // The received frame, rewritten in place, leaves from its own buffer (no copy);
        // nothing touches it after this.
        let ok = tx.send_bytes(nic, offload, bytes);
        if let Some(s) = self.stats.nics.get_mut(nic) {
            if ok {
                s.tx += 1;
            } else {
                s.tx_failed += 1;
            }
        }
        ok
    }

    // ---------------------------------------------------------------- local delivery

    fn local(
        &mut self,
        now: u64,
        nic: usize,
        f: &mut [u8],
        offload: &Offload,
        l4: &L4Info,
        tx: &mut dyn Transmit,
    ) -> Outcome {
        if be16(f, E + 6) & 0x3fff != 0 {
            // Unreachable: fragments for us are reassembled first.
            return Outcome::Dropped(DropReason::FragTooBig);
        }
        if offload.needs_csum()
            && !complete_partial(
                f,
                usize::from(offload.csum_start),
                usize::from(offload.csum_offset),
                l4.proto == IP_PROTO_UDP,
            )
        {
            return Outcome::Dropped(DropReason::BadOffload);
        }
        let done = Offload::default();
        if !l4_checksum_ok(f) {
            return Outcome::Dropped(DropReason::BadL4Checksum);
        }
        let in_mac = mac_of(f, 6);
        match l4.proto {
            IP_PROTO_ICMP if l4.icmp_type == 8 => {
                // Echo reply in place: swap addresses, type 8 → 0.
                let src = be32(f, E + 12);
                let dst = be32(f, E + 16);
                put_be32(f, E + 12, dst);
                put_be32(f, E + 16, src);
                f[E + 8] = 64;
                f[E + 6] &= !0x40;
                put_be16(f, E + 10, 0);
                let c = ipv4_header(&f[E..L4]);
                put_be16(f, E + 10, c);
                let c = update16(
                    be16(f, L4 + 2),
                    0x0800 | u16::from(f[L4 + 1]),
                    u16::from(f[L4 + 1]),
                );
                f[L4] = 0;
                put_be16(f, L4 + 2, c);
                f[..6].copy_from_slice(&in_mac);
                let mac = self.nics[nic].mac;
                f[6..12].copy_from_slice(&mac);
                self.stats.echo_replies += 1;
                self.emit(nic, f, &done, tx);
                Outcome::Local
            }
            IP_PROTO_UDP => {
                self.icmp_error(now, nic, in_mac, f, &done, 3, 3, 0, false, tx);
                Outcome::Local
            }
            IP_PROTO_TCP if l4.tcp_flags & TCP_RST == 0 => {
                self.tcp_reset(nic, in_mac, f, tx);
                Outcome::Local
            }
            IP_PROTO_ICMP | IP_PROTO_TCP => Outcome::Dropped(DropReason::LocalIgnored),
            _ => {
                self.icmp_error(now, nic, in_mac, f, &done, 3, 2, 0, false, tx);
                Outcome::Local
            }
        }
    }

    /// Answers a TCP segment for the router with a RST (RFC 793's reset generation).
    fn tcp_reset(&mut self, nic: usize, to_mac: [u8; 6], f: &[u8], tx: &mut dyn Transmit) {
        let t = &f[L4..];
        let flags = t[13];
        let doff = usize::from(t[12] >> 4) * 4;
        let seg_len = t.len().saturating_sub(doff) as u32
            + u32::from(flags & TCP_SYN != 0)
            + u32::from(flags & TCP_FIN != 0);
        let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
            (be32(t, 8), 0, TCP_RST)
        } else {
            (0, be32(t, 4).wrapping_add(seg_len), TCP_RST | TCP_ACK)
        };
        let mut r = [0u8; L4 + 20];
        r[..6].copy_from_slice(&to_mac);
        r[6..12].copy_from_slice(&self.nics[nic].mac);
        put_be16(&mut r, 12, ETHERTYPE_IPV4);
        let src = be32(f, E + 16);
        let dst = be32(f, E + 12);
        self.ip_header(&mut r, 40, IP_PROTO_TCP, src, dst);
        put_be16(&mut r, L4, be16(t, 2));
        put_be16(&mut r, L4 + 2, be16(t, 0));
        put_be32(&mut r, L4 + 4, seq);
        put_be32(&mut r, L4 + 8, ack);
        r[L4 + 12] = 5 << 4;
        r[L4 + 13] = out_flags;
        let c = finish(sum(
            &r[L4..],
            pseudo_v4(src.to_be_bytes(), dst.to_be_bytes(), IP_PROTO_TCP, 20),
        ));
        put_be16(&mut r, L4 + 16, c);
        self.stats.tcp_resets_sent += 1;
        self.send(nic, &Offload::default(), &r, tx);
    }

    fn ip_header(&mut self, f: &mut [u8], total: usize, proto: u8, src: u32, dst: u32) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let h = &mut f[E..L4];
        h.fill(0);
        h[0] = 0x45;
        put_be16(h, 2, total as u16);
        put_be16(h, 4, self.ip_id);
        h[8] = 64;
        h[9] = proto;
        put_be32(h, 12, src);
        put_be32(h, 16, dst);
        let c = ipv4_header(h);
        put_be16(h, 10, c);
    }

    // ----------------------------------------------------------------- ICMP errors

    fn icmp_allowed(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.icmp_refill_ms);
        if elapsed > 0 {
            self.icmp_tokens = (self.icmp_tokens + elapsed).min(ICMP_BURST);
            self.icmp_refill_ms = now;
        }
        if self.icmp_tokens == 0 {
            self.stats.icmp_errors_ratelimited += 1;
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Sends ICMP `typ`/`code` about packet `f` (an Ethernet frame) back to `in_mac` on
    /// `in_nic`, unless `f` is one ICMP errors are never sent for. `translate`: `f` may
    /// be post-NAT; undo that in the quoted packet and the destination.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &mut self,
        now: u64,
        in_nic: usize,
        in_mac: [u8; 6],
        f: &mut [u8],
        offload: &Offload,
        typ: u8,
        code: u8,
        mtu: u16,
        translate: bool,
        tx: &mut dyn Transmit,
    ) {
        let src = be32(f, E + 12);
        let frag = be16(f, E + 6);
        if martian_source(src) || frag & 0x1fff != 0 {
            return;
        }
        if f[E + 9] == IP_PROTO_ICMP
            && (f.len() < L4 + 1 || !matches!(f[L4], 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18))
        {
            return;
        }
        let Some(our) = self.source_for(in_nic, src) else {
            return;
        };
        if !self.icmp_allowed(now) {
            return;
        }
        if offload.needs_csum() {
            complete_partial(
                f,
                usize::from(offload.csum_start),
                usize::from(offload.csum_offset),
                f[E + 9] == IP_PROTO_UDP,
            );
        }
        let quote = (f.len() - E).min(ICMP_ERROR_MAX - 28);
        let total = 28 + quote;
        let mut buf = [0u8; E + ICMP_ERROR_MAX];
        let b = &mut buf[..E + total];
        b[..6].copy_from_slice(&in_mac);
        b[6..12].copy_from_slice(&self.nics[in_nic].mac);
        put_be16(b, 12, ETHERTYPE_IPV4);
        self.ip_header(b, total, IP_PROTO_ICMP, our, src);
        b[E + 1] = 0xc0; // precedence: internetwork control, as Linux
        put_be16(b, E + 10, 0);
        let c = ipv4_header(&b[E..L4]);
        put_be16(b, E + 10, c);
        b[L4] = typ;
        b[L4 + 1] = code;
        put_be16(b, L4 + 6, mtu);
        b[L4 + 8..].copy_from_slice(&f[E..E + quote]);
        // A quoted superframe says what the sender sent: its length is the real one.
        let c = finish(sum(&b[L4..], 0));
        put_be16(b, L4 + 2, c);
        if translate {
            match self.translate_icmp_error(now, b, true) {
                Some(_) => self.stats.icmp_errors_translated += 1,
                None if self.is_local(be32(b, E + 16)) => return,
                None => {}
            }
        }
        self.stats.icmp_errors_sent += 1;
        self.send(in_nic, &Offload::default(), b, tx);
    }

    /// An ICMP error arriving for a NATed flow: translated in place. Ok(true) when it
    /// matched a tracked flow.
    fn inbound_icmp_error(
        &mut self,
        now: u64,
        f: &mut [u8],
        offload: &Offload,
    ) -> Result<bool, DropReason> {
        // Stacks checksum ICMP errors in full; a partial one is left alone (routed as is).
        if offload.is_gso() || offload.needs_csum() || self.inner_key(f).is_none() {
            return Ok(false);
        }
        if fold(sum(&f[L4..], 0)) != 0xffff {
            return Err(DropReason::BadL4Checksum);
        }
        match self.translate_icmp_error(now, f, false) {
            Some(()) => {
                self.stats.icmp_errors_translated += 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The conntrack key of the packet quoted in ICMP error `f`, with its header length.
    fn inner_key(&self, f: &[u8]) -> Option<(Key, usize)> {
        let q = L4 + 8;
        if f.len() < q + 20 || f[q] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[q] & 0x0f) * 4;
        if ihl < 20 || f.len() < q + ihl + 8 || be16(f, q + 6) & 0x1fff != 0 {
            return None;
        }
        let proto = f[q + 9];
        let l = q + ihl;
        let (sport, dport) = match proto {
            IP_PROTO_TCP | IP_PROTO_UDP => (be16(f, l), be16(f, l + 2)),
            IP_PROTO_ICMP => match f[l] {
                8 => (be16(f, l + 4), 0),
                0 => (0, be16(f, l + 4)),
                _ => return None,
            },
            _ => return None,
        };
        Some((
            Key {
                src: be32(f, q + 12),
                dst: be32(f, q + 16),
                sport,
                dport,
                proto,
            },
            ihl,
        ))
    }

    /// Rewrites ICMP error `f` (Ethernet + IPv4 + ICMP + quoted packet) for the flow its
    /// quoted packet belongs to: the quoted packet back to what its sender sent, the
    /// destination to that sender, and (unless `local`, an error the router made) the
    /// source as the flow's NAT says. Fixes every checksum. None when no flow matches.
    fn translate_icmp_error(&mut self, now: u64, f: &mut [u8], local: bool) -> Option<()> {
        let (inner, ihl) = self.inner_key(f)?;
        let seen = inner.reversed();
        let (idx, dir) = self.ct.lookup(&seen, now)?;
        let other = dir.other();
        let t = self.ct.key(idx, other).reversed();
        let new_inner = t.reversed();
        let q = L4 + 8;
        let l = q + ihl;
        // The quoted header.
        let mut ipc = be16(f, q + 10);
        let quoted_l4 = f.len() - l;
        let l4c_at = match inner.proto {
            IP_PROTO_UDP => Some(l + 6),
            IP_PROTO_TCP if quoted_l4 >= 18 => Some(l + 16),
            IP_PROTO_ICMP => Some(l + 2),
            _ => None,
        };
        let mut l4c = l4c_at.map(|at| be16(f, at));
        let udp_none = inner.proto == IP_PROTO_UDP && l4c == Some(0);
        for (at, old, new) in [
            (q + 12, inner.src, new_inner.src),
            (q + 16, inner.dst, new_inner.dst),
        ] {
            if old != new {
                put_be32(f, at, new);
                ipc = update32(ipc, old, new);
                if let Some(c) = l4c.as_mut()
                    && inner.proto != IP_PROTO_ICMP
                    && !udp_none
                {
                    *c = update32(*c, old, new);
                }
            }
        }
        put_be16(f, q + 10, ipc);
        let ports: [(usize, u16, u16); 2] = if inner.proto == IP_PROTO_ICMP {
            let (o, n) = if f[l] == 0 {
                (inner.dport, new_inner.dport)
            } else {
                (inner.sport, new_inner.sport)
            };
            [(l + 4, o, n), (l + 4, o, o)]
        } else {
            [
                (l, inner.sport, new_inner.sport),
                (l + 2, inner.dport, new_inner.dport),
            ]
        };
        for (at, old, new) in ports {
            if old != new {
                put_be16(f, at, new);
                if let Some(c) = l4c.as_mut()
                    && !udp_none
                {
                    *c = update16(*c, old, new);
                }
            }
        }
        if let (Some(at), Some(c)) = (l4c_at, l4c) {
            put_be16(f, at, c);
        }
        // The outer header.
        put_be32(f, E + 16, t.dst);
        if !local && t.src != seen.src {
            put_be32(f, E + 12, t.src);
        }
        put_be16(f, E + 10, 0);
        let c = ipv4_header(&f[E..L4]);
        put_be16(f, E + 10, c);
        put_be16(f, L4 + 2, 0);
        let c = finish(sum(&f[L4..], 0));
        put_be16(f, L4 + 2, c);
        Some(())
    }

    // ----------------------------------------------------------------------- timers

    /// ARP retries and failures, reassembly and conntrack expiry.
    pub fn poll(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        let due: Vec<((usize, u32), u8)> = self
            .neigh
            .map
            .iter()
            .filter(|(_, n)| n.state == neigh::State::Incomplete && n.next_ms <= now_ms)
            .map(|(k, n)| (*k, n.probes))
            .collect();
        for ((nic, ip), probes) in due {
            if probes >= neigh::MAX_PROBES {
                self.neigh.forget(nic, ip);
                for mut q in self.neigh.take_queued(nic, ip) {
                    self.count_drop(Some(q.in_nic), DropReason::HostUnreachable);
                    let in_mac = q.in_mac;
                    self.icmp_error(
                        now_ms,
                        q.in_nic,
                        in_mac,
                        &mut q.frame,
                        &q.offload,
                        3,
                        1,
                        0,
                        true,
                        tx,
                    );
                }
            } else {
                if let Some(n) = self.neigh.map.get_mut(&(nic, ip)) {
                    n.probes += 1;
                    n.next_ms = now_ms.saturating_add(neigh::RETRY_MS);
                }
                self.arp_request(nic, ip, tx);
            }
        }
        for _ in 0..self.reasm.expire(now_ms) {
            self.count_drop(None, DropReason::FragTimeout);
        }
        if now_ms >= self.next_sweep_ms {
            self.ct.sweep(now_ms, SWEEP_BUDGET);
            self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
    }

    /// When [`poll`](Self::poll) next has work.
    pub fn poll_at_ms(&self) -> Option<u64> {
        let sweep = (!self.ct.is_empty()).then_some(self.next_sweep_ms);
        [
            self.neigh.next_deadline(),
            self.reasm.next_deadline(),
            sweep,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---------------------------------------------------------------------- control

    /// `FloatingIpUpsert` / `FloatingIpRemove`; other operations are refused.
    pub fn apply(&mut self, op: &Op, now_ms: u64, tx: &mut dyn Transmit) -> Result<(), String> {
        let _ = now_ms;
        self.config_generation = self.config_generation.wrapping_add(1);
        match op {
            Op::FloatingIpUpsert(fip) => {
                let floating = u32::from(fip.floating);
                let fixed = u32::from(fip.fixed);
                self.check_fip(floating, fixed)
                    .map_err(|r| format!("floating IP {}: {r}", fip.floating))?;
                match self.fip_to_fixed.insert(floating, fixed) {
                    Some(old) if old == fixed => return Ok(()),
                    Some(old) => {
                        self.fixed_to_fip.remove(&old);
                        self.ct.remove_address(floating);
                    }
                    None => {}
                }
                self.fixed_to_fip.insert(fixed, floating);
                if let Some(ext) = self.external {
                    self.gratuitous_arp(ext, floating, tx);
                }
                Ok(())
            }
            Op::FloatingIpRemove { floating } => {
                let f = u32::from(*floating);
                if let Some(fixed) = self.fip_to_fixed.remove(&f) {
                    self.fixed_to_fip.remove(&fixed);
                    self.ct.remove_address(f);
                }
                Ok(())
            }
            other => Err(format!("a router does not handle {other:?}")),
        }
    }

    // --------------------------------------------------------------------- counters

    /// Every counter by stable snake_case name.
    pub fn counters(&self) -> Vec<Counter> {
        let s = &self.stats;
        let mut out = Vec::with_capacity(64 + DropReason::ALL.len() + 4 * self.nics.len());
        for (r, v) in DropReason::ALL.iter().zip(&s.drops) {
            out.push(Counter::new(format!("drop_{}", r.name()), *v));
        }
        for (i, n) in s.nics.iter().enumerate() {
            out.push(Counter::new(format!("nic{i}_rx"), n.rx));
            out.push(Counter::new(format!("nic{i}_tx"), n.tx));
            out.push(Counter::new(format!("nic{i}_drop"), n.drop));
            out.push(Counter::new(format!("nic{i}_tx_failed"), n.tx_failed));
        }
        let ct = &self.ct.stats;
        let fixed: [(&str, u64); 32] = [
            ("forwarded", s.forwarded),
            ("forwarded_shortcut", s.shortcut),
            ("local", s.local),
            ("conntrack_entries", self.ct.len() as u64),
            ("conntrack_capacity", self.ct.capacity() as u64),
            ("conntrack_created", ct.created),
            ("conntrack_expired", ct.expired),
            ("conntrack_evicted", ct.evicted),
            ("conntrack_full", ct.full),
            ("conntrack_removed", ct.removed),
            ("snat_flows", s.snat_flows),
            ("dnat_flows", s.dnat_flows),
            ("floating_ips", self.fip_to_fixed.len() as u64),
            ("neighbours", self.neigh.map.len() as u64),
            ("arp_requests_sent", s.arp_requests_sent),
            ("arp_replies_sent", s.arp_replies_sent),
            ("arp_queued", s.arp_queued),
            ("arp_queue_drops", s.arp_queue_drops),
            ("arp_queue_bytes", self.neigh.queued_bytes as u64),
            ("echo_replies", s.echo_replies),
            ("tcp_resets_sent", s.tcp_resets_sent),
            ("icmp_errors_sent", s.icmp_errors_sent),
            ("icmp_errors_ratelimited", s.icmp_errors_ratelimited),
            ("icmp_errors_translated", s.icmp_errors_translated),
            ("fragments_received", s.frag_received),
            ("fragments_reassembled", s.frag_reassembled),
            ("fragments_created", s.frag_created),
            ("reassembly_in_flight", self.reasm.len() as u64),
            ("reassembly_bytes", self.reasm.bytes() as u64),
            ("gso_forwarded", s.gso_forwarded),
            ("gso_segmented", s.gso_segmented),
            ("routes", self.routes.len() as u64),
        ];
        for (name, v) in fixed {
            out.push(Counter::new(name, v));
        }
        out
    }

    /// Checks the bounded tables' limits and invariants (tests and the fuzzer).
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.ct.len() > self.ct.capacity() || !self.ct.check_invariants() {
            return Err(format!(
                "conntrack {} of {} or inconsistent",
                self.ct.len(),
                self.ct.capacity()
            ));
        }
        let bytes: usize = self.neigh.queue.iter().map(|q| q.frame.len()).sum();
        if bytes != self.neigh.queued_bytes || bytes > neigh::QUEUE_BYTES {
            return Err(format!("ARP queue holds {bytes} bytes"));
        }
        if self.neigh.map.len() > neigh::CAPACITY {
            return Err(format!("{} neighbours", self.neigh.map.len()));
        }
        if self.reasm.len() > reasm::MAX_DATAGRAMS || self.reasm.bytes() > reasm::MAX_BYTES {
            return Err(format!(
                "reassembly holds {} datagrams, {} bytes",
                self.reasm.len(),
                self.reasm.bytes()
            ));
        }
        for q in &self.neigh.queue {
            let n = self
                .neigh
                .queue
                .iter()
                .filter(|x| x.nic == q.nic && x.next_hop == q.next_hop)
                .count();
            if n > neigh::QUEUE_PER_DEST {
                return Err(format!("{n} packets queued for one destination"));
            }
        }
        Ok(())
    }
}
