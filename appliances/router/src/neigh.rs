//! The ARP neighbour cache (per NIC, bounded) and the packets waiting for a resolution
//! (bounded per destination and in bytes). Entries are reachable for [`REACHABLE_MS`]
//! after the host last confirmed them; a stale entry is still used while it is probed
//! (one request a second), and dropped after [`MAX_PROBES`] unanswered probes.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use nanovnf_frame::Offload;

pub const REACHABLE_MS: u64 = 60_000;
pub const RETRY_MS: u64 = 1_000;
/// Requests sent before a resolution (or a stale entry) is given up.
pub const MAX_PROBES: u8 = 3;
/// Neighbours across all NICs.
pub const CAPACITY: usize = 1024;
/// Packets waiting per unresolved destination (the oldest goes first).
pub const QUEUE_PER_DEST: usize = 3;
/// Bytes of packets waiting, across all destinations.
pub const QUEUE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Being resolved: `probes` requests sent, the next at `next_ms`.
    Incomplete,
    Reachable,
}

#[derive(Debug, Clone)]
pub struct Neigh {
    pub mac: [u8; 6],
    pub state: State,
    /// When the host last confirmed the mapping (reachable), or resolution began.
    pub confirmed_ms: u64,
    pub probes: u8,
    pub next_ms: u64,
}

/// A packet waiting for its next hop's address: ready to go but for the MACs.
pub struct Queued {
    pub nic: usize,
    pub next_hop: u32,
    pub frame: Vec<u8>,
    pub offload: Offload,
    /// Where it came from, for the host-unreachable error.
    pub in_nic: usize,
    pub in_mac: [u8; 6],
}

/// What a lookup tells the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Send to this MAC; it needs no probe before `fresh_until` (0: it is stale, and
    /// probed meanwhile).
    Known { mac: [u8; 6], fresh_until: u64 },
    /// Send to this MAC and probe it (ARP request to this address) now.
    KnownProbe([u8; 6]),
    /// Queue; send an ARP request now (`true`) or wait for the pending one.
    Unknown(bool),
    /// No room for another neighbour.
    Full,
}

#[derive(Default)]
pub struct Cache {
    pub map: BTreeMap<(usize, u32), Neigh>,
    pub queue: VecDeque<Queued>,
    pub queued_bytes: usize,
    /// Changes whenever a known neighbour's MAC changes or an entry goes: a MAC cached
    /// from an older generation may be wrong.
    pub generation: u32,
}

impl Cache {
    /// The MAC of `ip` on `nic` at `now`, creating an incomplete entry when unknown.
    pub fn resolve(&mut self, nic: usize, ip: u32, now: u64) -> Resolve {
        if let Some(n) = self.map.get_mut(&(nic, ip)) {
            return match n.state {
                State::Incomplete => Resolve::Unknown(false),
                State::Reachable if now < n.confirmed_ms.saturating_add(REACHABLE_MS) => {
                    Resolve::Known {
                        mac: n.mac,
                        fresh_until: n.confirmed_ms.saturating_add(REACHABLE_MS),
                    }
                }
                State::Reachable if n.probes >= MAX_PROBES && now >= n.next_ms => {
                    // Probed in vain: resolve from scratch.
                    n.state = State::Incomplete;
                    n.probes = 1;
                    n.confirmed_ms = now;
                    n.next_ms = now.saturating_add(RETRY_MS);
                    Resolve::Unknown(true)
                }
                State::Reachable if now >= n.next_ms => {
                    n.probes += 1;
                    n.next_ms = now.saturating_add(RETRY_MS);
                    Resolve::KnownProbe(n.mac)
                }
                State::Reachable => Resolve::Known {
                    mac: n.mac,
                    fresh_until: 0,
                },
            };
        }
        if self.map.len() >= CAPACITY && !self.evict_one() {
            return Resolve::Full;
        }
        self.map.insert(
            (nic, ip),
            Neigh {
                mac: [0; 6],
                state: State::Incomplete,
                confirmed_ms: now,
                probes: 1,
                next_ms: now.saturating_add(RETRY_MS),
            },
        );
        Resolve::Unknown(true)
    }

    /// Drops the reachable entry confirmed longest ago. False when all are incomplete.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .map
            .iter()
            .filter(|(_, n)| n.state == State::Reachable)
            .min_by_key(|(_, n)| n.confirmed_ms)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.forget(k.0, k.1);
                true
            }
            None => false,
        }
    }

    /// Records `ip` at `mac` on `nic` (confirmed by the host). `create` when the ARP was
    /// addressed to us; otherwise only an existing entry is refreshed. Returns true when
    /// an entry is now reachable (its queue can go).
    pub fn learn(&mut self, nic: usize, ip: u32, mac: [u8; 6], now: u64, create: bool) -> bool {
        if let Some(n) = self.map.get_mut(&(nic, ip)) {
            if n.mac != mac {
                self.generation = self.generation.wrapping_add(1);
            }
            n.mac = mac;
            n.state = State::Reachable;
            n.confirmed_ms = now;
            n.probes = 0;
            n.next_ms = now;
            return true;
        }
        if !create || (self.map.len() >= CAPACITY && !self.evict_one()) {
            return false;
        }
        self.map.insert(
            (nic, ip),
            Neigh {
                mac,
                state: State::Reachable,
                confirmed_ms: now,
                probes: 0,
                next_ms: now,
            },
        );
        true
    }

    /// Drops the entry for `ip` on `nic`.
    pub fn forget(&mut self, nic: usize, ip: u32) {
        if self.map.remove(&(nic, ip)).is_some() {
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// Takes the packets waiting for `ip` on `nic`, oldest first.
    pub fn take_queued(&mut self, nic: usize, ip: u32) -> Vec<Queued> {
        let mut out = Vec::new();
        if !self.queue.iter().any(|q| q.nic == nic && q.next_hop == ip) {
            return out;
        }
        let mut rest = VecDeque::with_capacity(self.queue.len());
        for q in self.queue.drain(..) {
            if q.nic == nic && q.next_hop == ip {
                self.queued_bytes -= q.frame.len();
                out.push(q);
            } else {
                rest.push_back(q);
            }
        }
        self.queue = rest;
        out
    }

    /// Queues `q`; returns the number of packets dropped to make room (the oldest for the
    /// same destination), or `Err` when the byte budget refuses it.
    pub fn enqueue(&mut self, q: Queued) -> Result<usize, Queued> {
        let mut dropped = 0;
        let same = self
            .queue
            .iter()
            .filter(|x| x.nic == q.nic && x.next_hop == q.next_hop)
            .count();
        if same >= QUEUE_PER_DEST
            && let Some(pos) = self
                .queue
                .iter()
                .position(|x| x.nic == q.nic && x.next_hop == q.next_hop)
            && let Some(old) = self.queue.remove(pos)
        {
            self.queued_bytes -= old.frame.len();
            dropped += 1;
        }
        if self.queued_bytes + q.frame.len() > QUEUE_BYTES {
            return Err(q);
        }
        self.queued_bytes += q.frame.len();
        self.queue.push_back(q);
        Ok(dropped)
    }

    /// The earliest retry deadline among incomplete entries.
    pub fn next_deadline(&self) -> Option<u64> {
        self.map
            .values()
            .filter(|n| n.state == State::Incomplete)
            .map(|n| n.next_ms)
            .min()
    }
}
