//! Connection tracking for NATed flows: a table preallocated at its capacity, indexed by a
//! seeded hash over both directions' tuples (chained through the entries, so lookup,
//! insert and removal are O(1) and never allocate). Policy when full: reuse an expired
//! entry, else early-drop the oldest entry that never saw a reply; assured flows (replied)
//! are never evicted for a new one.

use alloc::vec;
use alloc::vec::Vec;

const NIL: u32 = u32::MAX;

/// A flow's identity in one direction as it appears on the wire. For ICMP echo, a request
/// carries its identifier in `sport` (`dport` 0), a reply in `dport` (`sport` 0), so a
/// request's reversed key is its reply's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Key {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Key {
    pub fn reversed(&self) -> Key {
        Key {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// Original (the initiator's) or reply direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// TCP's tracked state (a simplification of Linux's `nf_conntrack_proto_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    /// One side sent FIN.
    FinWait,
    /// Both sides sent FIN.
    TimeWait,
    /// A RST was seen.
    Close,
}

pub const SEC: u64 = 1000;
pub const TCP_SYN_SENT_MS: u64 = 120 * SEC;
pub const TCP_SYN_RECV_MS: u64 = 60 * SEC;
pub const TCP_ESTABLISHED_MS: u64 = 5 * 24 * 3600 * SEC;
/// An established-looking flow picked up mid-stream that has not been answered yet.
pub const TCP_UNREPLIED_MS: u64 = 120 * SEC;
pub const TCP_FIN_WAIT_MS: u64 = 120 * SEC;
pub const TCP_TIME_WAIT_MS: u64 = 120 * SEC;
pub const TCP_CLOSE_MS: u64 = 10 * SEC;
pub const UDP_UNREPLIED_MS: u64 = 30 * SEC;
pub const UDP_REPLIED_MS: u64 = 120 * SEC;
pub const ICMP_MS: u64 = 30 * SEC;
/// Upper bound on a configured capacity (about 120 bytes of memory per entry).
pub const MAX_CAPACITY: u32 = 1 << 22;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The forwarding decision the router took for one direction of a flow, kept with the
/// flow so that its next packets skip routing and neighbour lookup (the router's
/// shortcut, as Linux's flowtable). Valid before `until_ms` while `generation` is still
/// the router's; the default never is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hop {
    pub until_ms: u64,
    pub generation: u32,
    /// What the rewrite adds to the IP checksum (addresses, TTL) and to the TCP or UDP
    /// checksum (addresses, ports), folded (`checksum::apply_delta`).
    pub ip_delta: u16,
    pub l4_delta: u16,
    /// Where the direction's packets arrive, and where they leave to `mac`.
    pub in_nic: u8,
    pub out_nic: u8,
    pub mac: [u8; 6],
}

#[derive(Debug, Clone)]
struct Entry {
    /// `keys[Orig]` as the initiator sent it, `keys[Reply]` as the answer arrives.
    keys: [Key; 2],
    /// Hash-chain links, per direction: node ids (`entry * 2 + dir`).
    chain: [u32; 2],
    /// The unassured FIFO (oldest first) or, for a free slot, the free list (`next`).
    prev: u32,
    next: u32,
    expires: u64,
    hops: [Hop; 2],
    tcp: TcpState,
    used: bool,
    assured: bool,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            keys: [Key::default(); 2],
            chain: [NIL; 2],
            prev: NIL,
            next: NIL,
            expires: 0,
            hops: [Hop::default(); 2],
            tcp: TcpState::Close,
            used: false,
            assured: false,
        }
    }
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free, expired or unassured entry to take.
    Full,
    /// One of the keys is already tracked.
    Exists,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
    pub full: u64,
    pub removed: u64,
}

pub struct Table {
    entries: Vec<Entry>,
    heads: Vec<u32>,
    mask: u32,
    seed: [u64; 2],
    free: u32,
    /// Unassured entries, oldest at `head`.
    unassured_head: u32,
    unassured_tail: u32,
    len: usize,
    sweep_at: usize,
    pub stats: Stats,
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Table {
    pub fn new(capacity: usize, seed: u64) -> Table {
        let buckets = (capacity * 2).next_power_of_two().max(16);
        let mut entries = vec![Entry::default(); capacity];
        for (i, e) in entries.iter_mut().enumerate() {
            e.next = if i + 1 < capacity {
                (i + 1) as u32
            } else {
                NIL
            };
        }
        Table {
            entries,
            heads: vec![NIL; buckets],
            mask: (buckets - 1) as u32,
            seed: [
                fmix64(seed ^ 0x5851_f42d_4c95_7f2d),
                fmix64(seed.wrapping_add(1)),
            ],
            free: if capacity > 0 { 0 } else { NIL },
            unassured_head: NIL,
            unassured_tail: NIL,
            len: 0,
            sweep_at: 0,
            stats: Stats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket(&self, k: &Key) -> usize {
        let a = (u64::from(k.src) << 32 | u64::from(k.dst)) ^ self.seed[0];
        let b = (u64::from(k.sport) << 24 | u64::from(k.dport) << 8 | u64::from(k.proto))
            ^ self.seed[1];
        let h = fmix64(a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b);
        (h as u32 & self.mask) as usize
    }

    /// The live entry holding `key` and the direction it matched, ignoring expiry.
    #[inline]
    fn find(&self, key: &Key) -> Option<(usize, Dir)> {
        let mut node = *self.heads.get(self.bucket(key))?;
        while node != NIL {
            let idx = (node / 2) as usize;
            let dir = (node & 1) as usize;
            let e = self.entries.get(idx)?;
            if e.keys[dir] == *key {
                return Some((idx, if dir == 0 { Dir::Orig } else { Dir::Reply }));
            }
            node = e.chain[dir];
        }
        None
    }

    /// The unexpired entry matching `key`; an expired one found on the way is freed.
    pub fn lookup(&mut self, key: &Key, now: u64) -> Option<(usize, Dir)> {
        let (idx, dir) = self.find(key)?;
        if self.entries[idx].expires <= now {
            self.remove(idx);
            self.stats.expired += 1;
            return None;
        }
        Some((idx, dir))
    }

    /// The unexpired entry matching `key`, leaving an expired one for [`Table::lookup`].
    #[inline]
    pub fn find_live(&self, key: &Key, now: u64) -> Option<(usize, Dir)> {
        self.find(key)
            .filter(|&(i, _)| self.entries[i].expires > now)
    }

    /// The decision cached for direction `dir` of entry `idx` ([`Hop::default`] if none).
    #[inline]
    pub fn hop(&self, idx: usize, dir: Dir) -> Hop {
        self.entries
            .get(idx)
            .map_or_else(Hop::default, |e| e.hops[dir as usize])
    }

    pub fn set_hop(&mut self, idx: usize, dir: Dir, hop: Hop) {
        if let Some(e) = self.entries.get_mut(idx).filter(|e| e.used) {
            e.hops[dir as usize] = hop;
        }
    }

    /// True when `key` is tracked by an unexpired entry.
    pub fn contains(&self, key: &Key, now: u64) -> bool {
        self.find(key)
            .is_some_and(|(i, _)| self.entries[i].expires > now)
    }

    pub fn key(&self, idx: usize, dir: Dir) -> Key {
        self.entries
            .get(idx)
            .map_or_else(Key::default, |e| e.keys[dir as usize])
    }

    /// Inserts a flow (`orig`, `reply`), with the timeout of its first packet.
    pub fn insert(
        &mut self,
        orig: Key,
        reply: Key,
        tcp_flags: u8,
        now: u64,
    ) -> Result<usize, InsertError> {
        if orig == reply || self.contains(&orig, now) || self.contains(&reply, now) {
            return Err(InsertError::Exists);
        }
        // Stale entries holding these keys go first.
        for k in [orig, reply] {
            if let Some((i, _)) = self.find(&k) {
                self.remove(i);
                self.stats.expired += 1;
            }
        }
        let idx = match self.take_slot(now) {
            Some(i) => i,
            None => {
                self.stats.full += 1;
                return Err(InsertError::Full);
            }
        };
        let (tcp, expires) = if orig.proto == 6 {
            if tcp_flags & TCP_RST != 0 {
                (TcpState::Close, TCP_CLOSE_MS)
            } else if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                (TcpState::SynSent, TCP_SYN_SENT_MS)
            } else {
                (TcpState::Established, TCP_UNREPLIED_MS)
            }
        } else if orig.proto == 17 {
            (TcpState::Close, UDP_UNREPLIED_MS)
        } else {
            (TcpState::Close, ICMP_MS)
        };
        let e = &mut self.entries[idx];
        e.keys = [orig, reply];
        e.hops = [Hop::default(); 2];
        e.used = true;
        e.assured = false;
        e.tcp = tcp;
        e.expires = now.saturating_add(expires);
        for dir in 0..2 {
            let b = self.bucket(&self.entries[idx].keys[dir]);
            self.entries[idx].chain[dir] = self.heads[b];
            self.heads[b] = (idx * 2 + dir) as u32;
        }
        self.push_unassured(idx);
        self.len += 1;
        self.stats.created += 1;
        Ok(idx)
    }

    fn take_slot(&mut self, now: u64) -> Option<usize> {
        if self.free == NIL {
            // Reclaim expired entries nearby, then early-drop the oldest unassured one.
            self.sweep(now, 64);
        }
        if self.free == NIL && self.unassured_head != NIL {
            let victim = self.unassured_head as usize;
            let expired = self.entries[victim].expires <= now;
            self.remove(victim);
            if expired {
                self.stats.expired += 1;
            } else {
                self.stats.evicted += 1;
            }
        }
        if self.free == NIL {
            return None;
        }
        let idx = self.free as usize;
        self.free = self.entries[idx].next;
        Some(idx)
    }

    fn push_unassured(&mut self, idx: usize) {
        let tail = self.unassured_tail;
        self.entries[idx].prev = tail;
        self.entries[idx].next = NIL;
        if tail == NIL {
            self.unassured_head = idx as u32;
        } else {
            self.entries[tail as usize].next = idx as u32;
        }
        self.unassured_tail = idx as u32;
    }

    fn unlink_unassured(&mut self, idx: usize) {
        let (p, n) = (self.entries[idx].prev, self.entries[idx].next);
        if p == NIL {
            self.unassured_head = n;
        } else {
            self.entries[p as usize].next = n;
        }
        if n == NIL {
            self.unassured_tail = p;
        } else {
            self.entries[n as usize].prev = p;
        }
        self.entries[idx].prev = NIL;
        self.entries[idx].next = NIL;
    }

    /// Frees entry `idx` (unlinking both keys).
    pub fn remove(&mut self, idx: usize) {
        if !self.entries.get(idx).is_some_and(|e| e.used) {
            return;
        }
        for dir in 0..2 {
            let key = self.entries[idx].keys[dir];
            let b = self.bucket(&key);
            let target = (idx * 2 + dir) as u32;
            let after = self.entries[idx].chain[dir];
            if self.heads[b] == target {
                self.heads[b] = after;
            } else {
                let mut node = self.heads[b];
                while node != NIL {
                    let (i, d) = ((node / 2) as usize, (node & 1) as usize);
                    if self.entries[i].chain[d] == target {
                        self.entries[i].chain[d] = after;
                        break;
                    }
                    node = self.entries[i].chain[d];
                }
            }
            self.entries[idx].chain[dir] = NIL;
        }
        if !self.entries[idx].assured {
            self.unlink_unassured(idx);
        }
        let e = &mut self.entries[idx];
        e.used = false;
        e.assured = false;
        e.next = self.free;
        e.prev = NIL;
        self.free = idx as u32;
        self.len -= 1;
    }

    /// Updates a flow's state and timeout for a packet in direction `dir`.
    pub fn update(&mut self, idx: usize, dir: Dir, tcp_flags: u8, now: u64) {
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        let newly_assured = dir == Dir::Reply && !e.assured;
        if newly_assured {
            e.assured = true;
        }
        let timeout = match e.keys[0].proto {
            6 => {
                let next = if tcp_flags & TCP_RST != 0 {
                    TcpState::Close
                } else {
                    match (e.tcp, dir) {
                        (TcpState::SynSent, Dir::Reply)
                            if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK =>
                        {
                            TcpState::SynRecv
                        }
                        (TcpState::SynRecv, Dir::Orig)
                            if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_ACK =>
                        {
                            TcpState::Established
                        }
                        (TcpState::Established, _) if tcp_flags & TCP_FIN != 0 => TcpState::FinWait,
                        (TcpState::FinWait, _) if tcp_flags & TCP_FIN != 0 => TcpState::TimeWait,
                        // A new SYN on a closed tuple reopens it.
                        (TcpState::Close | TcpState::TimeWait, Dir::Orig)
                            if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN =>
                        {
                            TcpState::SynSent
                        }
                        (s, _) => s,
                    }
                };
                e.tcp = next;
                match next {
                    TcpState::SynSent => TCP_SYN_SENT_MS,
                    TcpState::SynRecv => TCP_SYN_RECV_MS,
                    TcpState::Established if e.assured => TCP_ESTABLISHED_MS,
                    TcpState::Established => TCP_UNREPLIED_MS,
                    TcpState::FinWait => TCP_FIN_WAIT_MS,
                    TcpState::TimeWait => TCP_TIME_WAIT_MS,
                    TcpState::Close => TCP_CLOSE_MS,
                }
            }
            17 if e.assured => UDP_REPLIED_MS,
            17 => UDP_UNREPLIED_MS,
            _ => ICMP_MS,
        };
        e.expires = now.saturating_add(timeout);
        if newly_assured {
            self.unlink_unassured(idx);
        }
    }

    /// Frees up to `budget` slots' worth of expired entries, continuing where the last
    /// sweep stopped.
    pub fn sweep(&mut self, now: u64, budget: usize) {
        let n = self.entries.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            let i = self.sweep_at;
            self.sweep_at = if i + 1 >= n { 0 } else { i + 1 };
            if self.entries[i].used && self.entries[i].expires <= now {
                self.remove(i);
                self.stats.expired += 1;
            }
        }
    }

    /// Removes every entry one of whose addresses is `addr`; returns how many.
    pub fn remove_address(&mut self, addr: u32) -> usize {
        let mut n = 0;
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if e.used && e.keys.iter().any(|k| k.src == addr || k.dst == addr) {
                self.remove(i);
                n += 1;
            }
        }
        self.stats.removed += n as u64;
        n
    }

    /// Checks the table's internal invariants (for tests and the fuzzer).
    pub fn check_invariants(&self) -> bool {
        let used = self.entries.iter().filter(|e| e.used).count();
        if used != self.len || self.len > self.entries.len() {
            return false;
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.used)
            .all(|(i, e)| {
                e.keys
                    .iter()
                    .all(|k| self.find(k).is_some_and(|(j, _)| j == i))
            })
    }
}
