//! The network's own names, kept from the DHCP reservations as dnsmasq keeps them from its
//! hosts file: `hostname.domain` and Neutron's default `host-a-b-c-d.domain` resolve to
//! the port's address (A), the address's reverse name to `hostname.domain` (PTR). Names are
//! stored lowercased in wire form, so lookups are case-insensitive byte comparisons.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::wire::{self, MAX_NAME_LEN, Name};

/// How many reservations the zone follows (the DHCP engine's own default capacity).
pub const DEFAULT_CAPACITY: usize = 4096;

/// One served subnet: which addresses its reverse names cover, and its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSubnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    /// Lowercase dotted domain; empty = names answer only unqualified.
    pub domain: String,
}

impl ZoneSubnet {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix_len);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - l),
    }
}

#[derive(Debug, Clone)]
struct Host {
    ip: Ipv4Addr,
    /// Lowercase label, possibly empty (then only the default name exists).
    label: Vec<u8>,
    /// Index into `Zone::domains`.
    domain: usize,
}

/// What a question's name is, as far as this zone is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A host name: these addresses. The name's domain (the SOA owner of a NODATA answer)
    /// starts at label `zone_at` of the question; `None` for an unqualified name.
    Host {
        addrs: Vec<Ipv4Addr>,
        zone_at: Option<usize>,
    },
    /// The domain itself (label `0` of the question starts it).
    Apex,
    /// Under a domain of ours but not a host: NXDOMAIN, the zone starting at label
    /// `zone_at` of the question.
    Unknown { zone_at: usize },
    /// An unqualified name we do not know: NXDOMAIN, never forwarded (dnsmasq's
    /// `--domain-needed`).
    UnknownBare,
    /// A reverse name in one of our subnets. `target` is the PTR target in wire form (no
    /// root label); `None` for an unreserved address. The reverse zone starts at label
    /// `zone_at` of the question.
    Reverse {
        target: Option<Vec<u8>>,
        zone_at: usize,
    },
    /// A reverse zone of ours, above the addresses (`1.168.192.in-addr.arpa`).
    ReverseApex,
    /// Not ours: forward it (or refuse).
    Elsewhere,
}

/// The names of one network.
#[derive(Debug, Clone)]
pub struct Zone {
    subnets: Vec<ZoneSubnet>,
    /// Distinct domains in wire form, lowercase (empty = none).
    domains: Vec<Vec<u8>>,
    /// Per subnet, index into `domains`.
    subnet_domain: Vec<usize>,
    hosts: BTreeMap<[u8; 6], Host>,
    /// Lowercase FQDN (wire form, no root) → the MACs holding it.
    names: BTreeMap<Vec<u8>, Vec<[u8; 6]>>,
    by_ip: BTreeMap<Ipv4Addr, [u8; 6]>,
    capacity: usize,
    /// The SOA serial: bumped on every change.
    serial: u32,
}

/// Why a host could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneError {
    /// The address is in none of the zone's subnets.
    NoSubnet,
    /// The zone follows this many hosts already.
    Full,
}

/// `host-192-168-1-11`, Neutron's name for a port without a `dns_name`.
pub fn default_label(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("host-{a}-{b}-{c}-{d}")
}

/// The label a reservation's hostname gives: up to its first dot, lowercase; empty when
/// that is not a valid label.
fn host_label(hostname: &str) -> Vec<u8> {
    let first = hostname.split('.').next().unwrap_or("");
    if first.is_empty() || first.len() > wire::MAX_LABEL_LEN {
        return Vec::new();
    }
    first.bytes().map(|b| b.to_ascii_lowercase()).collect()
}

fn join(label: &[u8], domain: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(1 + label.len() + domain.len());
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.extend_from_slice(domain);
    (out.len() < MAX_NAME_LEN).then_some(out)
}

/// `in-addr.arpa` in wire form.
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa";

impl Zone {
    pub fn new(subnets: Vec<ZoneSubnet>) -> Self {
        Self::with_capacity(subnets, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(subnets: Vec<ZoneSubnet>, capacity: usize) -> Self {
        let mut domains: Vec<Vec<u8>> = Vec::new();
        let mut subnet_domain = Vec::new();
        for s in &subnets {
            let wire = wire::wire_from_dotted(&s.domain).unwrap_or_default();
            let i = match domains.iter().position(|d| *d == wire) {
                Some(i) => i,
                None => {
                    domains.push(wire);
                    domains.len() - 1
                }
            };
            subnet_domain.push(i);
        }
        Zone {
            subnets,
            domains,
            subnet_domain,
            hosts: BTreeMap::new(),
            names: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            capacity,
            serial: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The names a host holds (hostname first when it has one).
    fn host_names(&self, h: &Host) -> Vec<Vec<u8>> {
        let domain = &self.domains[h.domain];
        let default = default_label(h.ip);
        let mut out = Vec::with_capacity(2);
        if !h.label.is_empty() {
            out.extend(join(&h.label, domain));
        }
        if h.label != default.as_bytes() {
            out.extend(join(default.as_bytes(), domain));
        }
        out
    }

    /// Adds the host with this MAC or replaces it (its old names go).
    pub fn upsert(&mut self, mac: [u8; 6], ip: Ipv4Addr, hostname: &str) -> Result<(), ZoneError> {
        let subnet = self
            .subnets
            .iter()
            .position(|s| s.contains(ip))
            .ok_or(ZoneError::NoSubnet)?;
        if !self.hosts.contains_key(&mac) && self.hosts.len() >= self.capacity {
            return Err(ZoneError::Full);
        }
        self.remove(mac);
        let host = Host {
            ip,
            label: host_label(hostname),
            domain: self.subnet_domain[subnet],
        };
        for name in self.host_names(&host) {
            self.names.entry(name).or_default().push(mac);
        }
        // The DHCP engine keeps addresses unique; a stale holder loses its reverse name.
        self.by_ip.insert(ip, mac);
        self.hosts.insert(mac, host);
        self.serial = self.serial.wrapping_add(1);
        Ok(())
    }

    /// Forgets the host with this MAC; true if there was one.
    pub fn remove(&mut self, mac: [u8; 6]) -> bool {
        let Some(host) = self.hosts.remove(&mac) else {
            return false;
        };
        for name in self.host_names(&host) {
            if let Some(macs) = self.names.get_mut(&name) {
                macs.retain(|m| *m != mac);
                if macs.is_empty() {
                    self.names.remove(&name);
                }
            }
        }
        if self.by_ip.get(&host.ip) == Some(&mac) {
            self.by_ip.remove(&host.ip);
            // Another host may still claim the address (a transient duplicate).
            if let Some((&other, _)) = self.hosts.iter().find(|(_, h)| h.ip == host.ip) {
                self.by_ip.insert(host.ip, other);
            }
        }
        self.serial = self.serial.wrapping_add(1);
        true
    }

    fn addrs(&self, macs: &[[u8; 6]]) -> Vec<Ipv4Addr> {
        macs.iter()
            .filter_map(|m| self.hosts.get(m).map(|h| h.ip))
            .collect()
    }

    /// Classifies a question name.
    pub fn lookup(&self, name: &Name) -> Lookup {
        let mut lower = [0u8; MAX_NAME_LEN];
        let len = name.lowercase_into(&mut lower);
        let lower = &lower[..len];
        let labels = name.label_count();
        if let Some(macs) = self.names.get(lower) {
            let zone_at = self.domain_start(name, lower);
            return Lookup::Host {
                addrs: self.addrs(macs),
                zone_at,
            };
        }
        if let Some(r) = self.reverse(name, lower) {
            return r;
        }
        // The longest domain of ours that ends the name.
        if let Some(zone_at) = self.domain_start(name, lower) {
            return if zone_at == 0 {
                Lookup::Apex
            } else {
                Lookup::Unknown { zone_at }
            };
        }
        if labels == 1 {
            // An unqualified name: the host's label in any of our domains.
            let mut addrs = Vec::new();
            for d in &self.domains {
                if let Some(fqdn) = join(&lower[1..], d)
                    && let Some(macs) = self.names.get(&fqdn)
                {
                    addrs.extend(self.addrs(macs));
                }
            }
            return if addrs.is_empty() {
                Lookup::UnknownBare
            } else {
                Lookup::Host {
                    addrs,
                    zone_at: None,
                }
            };
        }
        Lookup::Elsewhere
    }

    /// The label of `name` where the longest of our (non-empty) domains starts.
    fn domain_start(&self, name: &Name, lower: &[u8]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for d in self.domains.iter().filter(|d| !d.is_empty()) {
            for i in 0..name.label_count() {
                let suffix_len = name.suffix(i).len();
                if lower[lower.len() - suffix_len..] == d[..] {
                    if best.is_none_or(|b| i < b) {
                        best = Some(i);
                    }
                    break;
                }
            }
        }
        best
    }

    /// Reverse names (`d.c.b.a.in-addr.arpa`) of addresses in our subnets.
    fn reverse(&self, name: &Name, lower: &[u8]) -> Option<Lookup> {
        let labels = name.label_count();
        if labels < 3 || !lower.ends_with(IN_ADDR_ARPA) || name.suffix(labels - 2).len() != 13 {
            return None;
        }
        let octets = labels - 2;
        if octets > 4 {
            return None;
        }
        let mut addr = [0u8; 4];
        for (i, octet) in addr.iter_mut().take(octets).enumerate() {
            *octet = parse_octet(name.label(octets - 1 - i))?;
        }
        if octets < 4 {
            // A reverse zone of ours: a subnet's octet-aligned zone, or any name between
            // it and the addresses.
            let n = Ipv4Addr::from(addr);
            let ours = self.subnets.iter().any(|s| {
                let zone_octets = usize::from(s.prefix_len / 8).max(1);
                octets >= zone_octets && s.contains(n)
            });
            return ours.then_some(Lookup::ReverseApex);
        }
        let ip = Ipv4Addr::from(addr);
        let subnet = self.subnets.iter().find(|s| s.contains(ip))?;
        let zone_octets = usize::from(subnet.prefix_len / 8).clamp(1, 3);
        let target = self.by_ip.get(&ip).and_then(|mac| {
            let h = self.hosts.get(mac)?;
            self.host_names(h).into_iter().next()
        });
        Some(Lookup::Reverse {
            target,
            zone_at: 4 - zone_octets,
        })
    }
}

/// A decimal octet label, 0..=255, without leading zeros.
fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    let mut v: u16 = 0;
    for &b in label {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u16::from(b - b'0');
    }
    u8::try_from(v).ok()
}
