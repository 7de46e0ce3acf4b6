//! The underlay side: local_vtep's identity on NIC 1 and the ARP cache of next hops (each
//! VTEP on the underlay subnet, or the underlay gateway for the others). A next hop being
//! resolved holds a short queue of finished outer frames that leave when its MAC is known.
//! Resolution retries [`PROBE_INTERVAL_MS`] apart, [`MAX_PROBES`] times; a known MAC is
//! re-confirmed every [`REFRESH_MS`] while it stays in use.

use crate::UNDERLAY;
use crate::counters::{DropReason, Stats};
use crate::wire::{ARP_FRAME_LEN, ARP_REQUEST, Arp};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_frame::{Offload, Transmit};

pub(crate) const PROBE_INTERVAL_MS: u64 = 1000;
pub(crate) const MAX_PROBES: u8 = 3;
pub(crate) const REFRESH_MS: u64 = 60_000;
/// Frames queued per next hop while it is resolved.
pub const QUEUE_FRAMES: usize = 16;
/// Bytes queued over all next hops.
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Next hops that are not a remote VTEP, a static entry's VTEP or the underlay gateway
/// (VTEPs only learnt from traffic). Each is forgotten after [`REFRESH_MS`] unused.
pub const MAX_LEARNT_NEIGHBORS: usize = 256;

/// local_vtep on the underlay NIC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl Link {
    fn mask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.ip)) & self.mask() == 0
    }

    /// Where frames for `vtep` go on the underlay: itself when on-link, else the gateway.
    pub fn next_hop(&self, vtep: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(vtep) {
            Some(vtep)
        } else {
            self.gateway
        }
    }

    /// Sends an ARP packet from local_vtep on the underlay.
    pub fn send_arp(
        &self,
        tx: &mut dyn Transmit,
        stats: &mut Stats,
        op: u16,
        eth_dst: [u8; 6],
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> bool {
        let arp = Arp {
            op,
            sha: self.mac,
            spa: self.ip,
            tha,
            tpa,
        };
        let ok = tx.send(
            UNDERLAY,
            &Offload::default(),
            ARP_FRAME_LEN,
            &mut |b: &mut [u8]| arp.emit_frame(eth_dst, b),
        );
        if !ok {
            stats.tx_failed += 1;
        }
        ok
    }

    fn probe(&self, tx: &mut dyn Transmit, stats: &mut Stats, ip: Ipv4Addr, to: Option<[u8; 6]>) {
        stats.vtep_arp_requests += 1;
        self.send_arp(tx, stats, ARP_REQUEST, to.unwrap_or([0xff; 6]), [0; 6], ip);
    }
}

#[derive(Debug)]
pub(crate) struct Neighbor {
    pub mac: Option<[u8; 6]>,
    /// Next probe (resolving or refreshing) or refresh; None: idle.
    deadline: Option<u64>,
    /// Probes sent in the current round.
    probes: u8,
    /// A remote VTEP's, a static entry's or the gateway's next hop: never forgotten.
    pub pinned: bool,
    last_used_ms: u64,
    /// Finished outer frames; bytes 0..6 (destination MAC) are written at flush.
    queue: VecDeque<Vec<u8>>,
}

impl Neighbor {
    fn new(pinned: bool, now_ms: u64) -> Neighbor {
        Neighbor {
            mac: None,
            deadline: None,
            probes: 0,
            pinned,
            last_used_ms: now_ms,
            queue: VecDeque::new(),
        }
    }
}

/// What became of an outer frame offered to a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Out,
    Queued,
    Dropped(DropReason),
}

#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    map: BTreeMap<Ipv4Addr, Neighbor>,
    queued_bytes: usize,
}

impl Neighbors {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.map.contains_key(&ip)
    }

    /// Marks exactly `pins` as pinned (creating them); the rest become learnt ones.
    pub fn set_pins(&mut self, pins: &[Ipv4Addr], now_ms: u64) {
        for n in self.map.values_mut() {
            n.pinned = false;
        }
        for &ip in pins {
            self.map
                .entry(ip)
                .or_insert_with(|| Neighbor::new(true, now_ms))
                .pinned = true;
        }
    }

    /// Starts resolving every pinned next hop whose MAC is unknown and that is idle.
    pub fn resolve_pinned(
        &mut self,
        now_ms: u64,
        link: &Link,
        tx: &mut dyn Transmit,
        stats: &mut Stats,
    ) {
        for (&ip, n) in self.map.iter_mut() {
            if n.pinned && n.mac.is_none() && n.deadline.is_none() {
                Self::start(ip, n, now_ms, link, tx, stats);
            }
        }
    }

    fn start(
        ip: Ipv4Addr,
        n: &mut Neighbor,
        now_ms: u64,
        link: &Link,
        tx: &mut dyn Transmit,
        stats: &mut Stats,
    ) {
        n.probes = 1;
        n.deadline = Some(now_ms.saturating_add(PROBE_INTERVAL_MS));
        link.probe(tx, stats, ip, None);
    }

    /// Sends (or queues) a finished outer frame `hdr` + `inner` to next hop `hop`.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        hop: Ipv4Addr,
        hdr: &mut [u8],
        inner: &[u8],
        now_ms: u64,
        link: &Link,
        tx: &mut dyn Transmit,
        stats: &mut Stats,
    ) -> Sent {
        if !self.map.contains_key(&hop) {
            let learnt = self.map.values().filter(|n| !n.pinned).count();
            if learnt >= MAX_LEARNT_NEIGHBORS {
                return Sent::Dropped(DropReason::NeighborTableFull);
            }
            self.map.insert(hop, Neighbor::new(false, now_ms));
        }
        let Some(n) = self.map.get_mut(&hop) else {
            return Sent::Dropped(DropReason::NeighborTableFull);
        };
        n.last_used_ms = now_ms;
        if let Some(mac) = n.mac {
            if let Some(d) = hdr.get_mut(..6) {
                d.copy_from_slice(&mac);
            }
            // A received frame gets its outer headers written in front of it and leaves
            // from its own buffer where the image can (no copy).
            let ok = tx.send_parts(UNDERLAY, &Offload::default(), hdr, inner);
            return if ok {
                stats.encapsulated += 1;
                Sent::Out
            } else {
                stats.tx_failed += 1;
                Sent::Dropped(DropReason::TxFull)
            };
        }
        let len = hdr.len() + inner.len();
        if n.queue.len() >= QUEUE_FRAMES || self.queued_bytes + len > QUEUE_BYTES {
            return Sent::Dropped(DropReason::QueueFull);
        }
        let mut frame = Vec::with_capacity(len);
        frame.extend_from_slice(hdr);
        frame.extend_from_slice(inner);
        n.queue.push_back(frame);
        self.queued_bytes += len;
        stats.queued += 1;
        if n.deadline.is_none() {
            Self::start(hop, n, now_ms, link, tx, stats);
        }
        Sent::Queued
    }

    /// An ARP packet from `ip` says its MAC is `mac`: records it and flushes the queue.
    /// False when `ip` is not a next hop of ours.
    pub fn confirm(
        &mut self,
        ip: Ipv4Addr,
        mac: [u8; 6],
        now_ms: u64,
        tx: &mut dyn Transmit,
        stats: &mut Stats,
    ) -> bool {
        let Some(n) = self.map.get_mut(&ip) else {
            return false;
        };
        if n.mac != Some(mac) {
            stats.vtep_resolved += 1;
        }
        n.mac = Some(mac);
        n.probes = 0;
        n.deadline = Some(now_ms.saturating_add(REFRESH_MS));
        while let Some(mut frame) = n.queue.pop_front() {
            self.queued_bytes = self.queued_bytes.saturating_sub(frame.len());
            if let Some(d) = frame.get_mut(..6) {
                d.copy_from_slice(&mac);
            }
            let ok = tx.send(
                UNDERLAY,
                &Offload::default(),
                frame.len(),
                &mut |b: &mut [u8]| {
                    put_parts(b, &[&frame]);
                },
            );
            if ok {
                stats.encapsulated += 1;
            } else {
                stats.tx_failed += 1;
                stats.drop(DropReason::TxFull);
            }
        }
        true
    }

    /// Probes, retries, refreshes, gives up and forgets, as deadlines pass.
    pub fn poll(&mut self, now_ms: u64, link: &Link, tx: &mut dyn Transmit, stats: &mut Stats) {
        let mut forget: Vec<Ipv4Addr> = Vec::new();
        for (&ip, n) in self.map.iter_mut() {
            let Some(deadline) = n.deadline else { continue };
            if deadline > now_ms {
                continue;
            }
            let next = Some(now_ms.saturating_add(PROBE_INTERVAL_MS));
            match n.mac {
                // Resolving.
                None if n.probes < MAX_PROBES => {
                    n.probes += 1;
                    n.deadline = next;
                    link.probe(tx, stats, ip, None);
                }
                None => {
                    for frame in n.queue.drain(..) {
                        self.queued_bytes = self.queued_bytes.saturating_sub(frame.len());
                        stats.drop(DropReason::VtepUnresolved);
                    }
                    n.probes = 0;
                    n.deadline = None;
                    if !n.pinned {
                        forget.push(ip);
                    }
                }
                // Refresh due: unused learnt next hops are forgotten instead.
                Some(_)
                    if n.probes == 0
                        && !n.pinned
                        && now_ms.saturating_sub(n.last_used_ms) >= REFRESH_MS =>
                {
                    forget.push(ip);
                }
                // Refreshing: first unicast to the MAC in use, then broadcast (in case it
                // changed). The old MAC stays in use meanwhile.
                Some(mac) if n.probes < MAX_PROBES => {
                    let to = if n.probes == 0 { Some(mac) } else { None };
                    n.probes += 1;
                    n.deadline = next;
                    link.probe(tx, stats, ip, to);
                }
                Some(_) => {
                    stats.vtep_expired += 1;
                    n.mac = None;
                    n.probes = 0;
                    n.deadline = None;
                    if !n.pinned {
                        forget.push(ip);
                    }
                }
            }
        }
        for ip in forget {
            self.map.remove(&ip);
        }
    }

    pub fn poll_at(&self) -> Option<u64> {
        self.map.values().filter_map(|n| n.deadline).min()
    }

    /// The MAC in use for `ip`, if resolved.
    pub fn mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.map.get(&ip).and_then(|n| n.mac)
    }

    /// The MAC to send to next hop `ip` now, if resolved (the entry counts as used, as
    /// [`Neighbors::send`] counts it); None sends the caller down the general path.
    pub fn use_mac(&mut self, ip: Ipv4Addr, now_ms: u64) -> Option<[u8; 6]> {
        let n = self.map.get_mut(&ip)?;
        let mac = n.mac?;
        n.last_used_ms = now_ms;
        Some(mac)
    }
}

/// Copies `parts` one after another into `out`, as far as `out` reaches.
pub(crate) fn put_parts(out: &mut [u8], parts: &[&[u8]]) {
    let mut at = 0;
    for p in parts {
        let Some(dst) = out.get_mut(at..) else { return };
        let n = p.len().min(dst.len());
        dst[..n].copy_from_slice(&p[..n]);
        at += n;
    }
}
