//! The forwarding table: which VTEP a tenant MAC lives behind. Static entries (from the
//! boot configuration and l2population) are never aged, evicted or overwritten by
//! learning; learnt entries age after `ageing_ms` without traffic and, when the table is
//! full, the least recently refreshed one makes room for a new one.

use alloc::collections::{BTreeMap, BTreeSet};
use core::net::Ipv4Addr;

/// A learnt entry's age is refreshed at most this often (saves two index updates per
/// received frame; ageing is then exact to within this).
const REFRESH_GRANULARITY_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Static { ip: Option<Ipv4Addr> },
    Learnt { seen_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub vtep: Ipv4Addr,
    pub kind: Kind,
}

/// What learning a source MAC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learn {
    /// A new entry (`evicted`: the oldest learnt one made room for it).
    New { evicted: bool },
    /// The entry exists with this VTEP (its age refreshed if learnt).
    Known,
    /// A learnt entry moved to another VTEP.
    Moved,
    /// A static entry names another VTEP: learning never overrides it.
    StaticConflict,
    /// Full of static entries: nothing learnt.
    Full,
}

#[derive(Debug)]
pub(crate) struct Fdb {
    map: BTreeMap<[u8; 6], Entry>,
    /// Learnt entries by (last refresh, MAC): the first is the oldest.
    by_age: BTreeSet<(u64, [u8; 6])>,
    /// Static entries' addresses, for the ARP responder.
    by_ip: BTreeMap<Ipv4Addr, [u8; 6]>,
    capacity: usize,
    /// 0: learnt entries never age.
    ageing_ms: u64,
    statics: usize,
}

impl Fdb {
    pub fn new(capacity: usize, ageing_ms: u64) -> Fdb {
        Fdb {
            map: BTreeMap::new(),
            by_age: BTreeSet::new(),
            by_ip: BTreeMap::new(),
            capacity,
            ageing_ms,
            statics: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn statics(&self) -> usize {
        self.statics
    }

    pub fn get(&self, mac: &[u8; 6]) -> Option<&Entry> {
        self.map.get(mac)
    }

    fn expired(&self, seen_ms: u64, now_ms: u64) -> bool {
        self.ageing_ms != 0 && now_ms.saturating_sub(seen_ms) >= self.ageing_ms
    }

    /// The VTEP behind `mac`, if any; a learnt entry past its age is removed here (and
    /// `aged` is true) even if `poll` has not run yet.
    pub fn lookup(&mut self, mac: &[u8; 6], now_ms: u64) -> (Option<Ipv4Addr>, bool) {
        let Some(e) = self.map.get(mac).copied() else {
            return (None, false);
        };
        if let Kind::Learnt { seen_ms } = e.kind
            && self.expired(seen_ms, now_ms)
        {
            self.map.remove(mac);
            self.by_age.remove(&(seen_ms, *mac));
            return (None, true);
        }
        (Some(e.vtep), false)
    }

    fn evict_oldest_learnt(&mut self) -> bool {
        let Some((_, mac)) = self.by_age.pop_first() else {
            return false;
        };
        self.map.remove(&mac);
        true
    }

    /// Learns that `mac` lives behind `vtep` (the caller checked both are unicast).
    pub fn learn(&mut self, mac: [u8; 6], vtep: Ipv4Addr, now_ms: u64) -> Learn {
        if let Some(e) = self.map.get_mut(&mac) {
            let Kind::Learnt { seen_ms } = e.kind else {
                return if e.vtep == vtep {
                    Learn::Known
                } else {
                    Learn::StaticConflict
                };
            };
            let moved = e.vtep != vtep;
            e.vtep = vtep;
            if moved || now_ms.saturating_sub(seen_ms) >= REFRESH_GRANULARITY_MS {
                e.kind = Kind::Learnt { seen_ms: now_ms };
                self.by_age.remove(&(seen_ms, mac));
                self.by_age.insert((now_ms, mac));
            }
            return if moved { Learn::Moved } else { Learn::Known };
        }
        let mut evicted = false;
        if self.map.len() >= self.capacity {
            if !self.evict_oldest_learnt() {
                return Learn::Full;
            }
            evicted = true;
        }
        self.map.insert(
            mac,
            Entry {
                vtep,
                kind: Kind::Learnt { seen_ms: now_ms },
            },
        );
        self.by_age.insert((now_ms, mac));
        Learn::New { evicted }
    }

    /// Forgets a learnt entry (its MAC showed up on the tenant side); statics stay.
    pub fn forget_learnt(&mut self, mac: &[u8; 6]) -> bool {
        match self.map.get(mac) {
            Some(Entry {
                kind: Kind::Learnt { seen_ms },
                ..
            }) => {
                let key = (*seen_ms, *mac);
                self.by_age.remove(&key);
                self.map.remove(mac);
                true
            }
            _ => false,
        }
    }

    /// Adds or replaces a static entry (replacing a learnt one for the same MAC). Returns
    /// whether a learnt entry was evicted to make room; Err when the table is full of
    /// static entries.
    pub fn upsert_static(
        &mut self,
        mac: [u8; 6],
        vtep: Ipv4Addr,
        ip: Option<Ipv4Addr>,
    ) -> Result<bool, ()> {
        let mut evicted = false;
        match self.map.get(&mac).copied() {
            Some(Entry {
                kind: Kind::Learnt { seen_ms },
                ..
            }) => {
                self.by_age.remove(&(seen_ms, mac));
            }
            Some(Entry {
                kind: Kind::Static { ip: old },
                ..
            }) => {
                self.statics -= 1;
                self.unindex_ip(old, &mac);
            }
            None => {
                if self.map.len() >= self.capacity {
                    if !self.evict_oldest_learnt() {
                        return Err(());
                    }
                    evicted = true;
                }
            }
        }
        self.map.insert(
            mac,
            Entry {
                vtep,
                kind: Kind::Static { ip },
            },
        );
        self.statics += 1;
        if let Some(ip) = ip {
            self.by_ip.insert(ip, mac);
        }
        Ok(evicted)
    }

    /// Removes the static entry for `mac`; false when there is none (a learnt entry for
    /// that MAC stays).
    pub fn remove_static(&mut self, mac: &[u8; 6]) -> bool {
        let Some(Entry {
            kind: Kind::Static { ip },
            ..
        }) = self.map.get(mac).copied()
        else {
            return false;
        };
        self.map.remove(mac);
        self.statics -= 1;
        self.unindex_ip(ip, mac);
        true
    }

    /// Drops `ip`'s index entry if it points at `mac`, then lets another static entry
    /// with the same address (a duplicate) take its place.
    fn unindex_ip(&mut self, ip: Option<Ipv4Addr>, mac: &[u8; 6]) {
        let Some(ip) = ip else { return };
        if self.by_ip.get(&ip) != Some(mac) {
            return;
        }
        self.by_ip.remove(&ip);
        let other = self.map.iter().find_map(|(m, e)| match e.kind {
            Kind::Static { ip: Some(i) } if i == ip && m != mac => Some(*m),
            _ => None,
        });
        if let Some(m) = other {
            self.by_ip.insert(ip, m);
        }
    }

    /// The MAC of the static entry that owns `ip`, for the ARP responder.
    pub fn static_mac_for(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.by_ip.get(&ip).copied()
    }

    /// The VTEPs of static entries (with repeats).
    pub fn static_vteps(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.map.values().filter_map(|e| match e.kind {
            Kind::Static { .. } => Some(e.vtep),
            Kind::Learnt { .. } => None,
        })
    }

    /// Removes every learnt entry past its age; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut n = 0;
        while let Some(&(seen_ms, mac)) = self.by_age.first() {
            if !self.expired(seen_ms, now_ms) {
                break;
            }
            self.by_age.pop_first();
            self.map.remove(&mac);
            n += 1;
        }
        n
    }

    /// When the oldest learnt entry ages out.
    pub fn next_expiry(&self) -> Option<u64> {
        if self.ageing_ms == 0 {
            return None;
        }
        self.by_age
            .first()
            .map(|(seen, _)| seen.saturating_add(self.ageing_ms))
    }

    /// The table's own consistency (for tests and the fuzz target).
    pub fn consistent(&self) -> bool {
        let learnt = self.map.len() - self.statics;
        self.map.len() <= self.capacity
            && self.by_age.len() == learnt
            && self.by_age.iter().all(|(seen, mac)| {
                self.map.get(mac).map(|e| e.kind) == Some(Kind::Learnt { seen_ms: *seen })
            })
            && self.by_ip.iter().all(|(ip, mac)| {
                self.map.get(mac).map(|e| e.kind) == Some(Kind::Static { ip: Some(*ip) })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    #[test]
    fn learns_refreshes_moves_and_ages() {
        let mut t = Fdb::new(4, 10_000);
        assert_eq!(t.learn(mac(1), A, 0), Learn::New { evicted: false });
        assert_eq!(t.learn(mac(1), A, 500), Learn::Known);
        assert_eq!(t.learn(mac(1), A, 5_000), Learn::Known);
        assert_eq!(t.lookup(&mac(1), 14_999), (Some(A), false));
        assert_eq!(t.learn(mac(1), B, 14_999), Learn::Moved);
        assert_eq!(t.next_expiry(), Some(24_999));
        assert_eq!(t.expire(24_998), 0);
        assert_eq!(t.lookup(&mac(1), 24_999), (None, true));
        assert_eq!(t.len(), 0);
        assert!(t.consistent());
    }

    #[test]
    fn statics_win_and_survive_a_full_table() {
        let mut t = Fdb::new(3, 0);
        assert_eq!(t.upsert_static(mac(1), A, Some(B)), Ok(false));
        assert_eq!(t.learn(mac(1), B, 0), Learn::StaticConflict);
        assert_eq!(t.learn(mac(1), A, 0), Learn::Known);
        t.learn(mac(2), A, 1);
        t.learn(mac(3), A, 2);
        assert_eq!(t.learn(mac(4), A, 3), Learn::New { evicted: true });
        assert!(t.get(&mac(2)).is_none(), "the oldest learnt one went");
        assert_eq!(t.upsert_static(mac(5), B, None), Ok(true));
        assert_eq!(t.upsert_static(mac(6), B, None), Ok(true));
        assert_eq!(t.upsert_static(mac(7), B, None), Err(()));
        assert_eq!(t.learn(mac(8), A, 4), Learn::Full);
        assert_eq!(t.static_mac_for(B), Some(mac(1)));
        assert!(t.remove_static(&mac(1)));
        assert_eq!(t.static_mac_for(B), None);
        assert!(t.consistent());
        assert_eq!(t.expire(u64::MAX), 0, "ageing 0 never ages");
    }
}
