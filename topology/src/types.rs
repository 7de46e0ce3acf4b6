//! Value types of the topology file (MAC addresses, IPv4 prefixes, interface addresses)
//! and the name rules the validator applies (Linux ifnames, DNS labels and domains, UUIDs).
//! Parsers return a one-line reason that the validator puts after the field's name.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An Ethernet MAC address, written `fa:16:3e:00:00:11`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group bit set: a multicast (or broadcast) address no NIC may own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// `00:00:00:00:00:00`.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Six pairs of hex digits separated by `:` (or all by `-`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex pairs like fa:16:3e:00:00:11)")
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IPv4 prefix whose host bits are zero, written `192.168.1.0/24` (a subnet's `cidr`, a
/// route's `destination`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// `None` if `prefix_len > 32` or `network` has host bits set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 32 || u32::from(network) & !mask(prefix_len) != 0 {
            return None;
        }
        Some(Ipv4Cidr {
            network,
            prefix_len,
        })
    }

    /// The prefix that contains `addr` (host bits cleared).
    pub fn containing(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let prefix_len = prefix_len.min(32);
        Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix_len))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// True if the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// True if `addr` is this prefix's network or broadcast address, which no host may
    /// hold (prefixes /31 and /32 have neither, RFC 3021).
    pub fn is_network_or_broadcast(&self, addr: Ipv4Addr) -> bool {
        self.prefix_len <= 30 && (addr == self.network || addr == self.broadcast())
    }

    /// The first and last address a host may hold (Neutron's subnet ip range).
    pub fn host_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let (first, last) = (u32::from(self.network), u32::from(self.broadcast()));
        if self.prefix_len <= 30 {
            (Ipv4Addr::from(first + 1), Ipv4Addr::from(last - 1))
        } else {
            (Ipv4Addr::from(first), Ipv4Addr::from(last))
        }
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

fn split_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr = addr.parse::<Ipv4Addr>().ok()?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len = len.parse::<u8>().ok()?;
    (len <= 32).then_some((addr, len))
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_prefix(s)
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR like 192.168.1.0/24"))?;
        Ipv4Cidr::new(addr, len).ok_or_else(|| {
            format!(
                "{s:?} has host bits set, did you mean {}?",
                Ipv4Cidr::containing(addr, len)
            )
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// An address with its prefix length as configured on an interface, written
/// `192.0.2.11/24` (a VXLAN segment's `local_vtep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl InterfaceAddr {
    /// The prefix the address lives in.
    pub fn subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr::containing(self.addr, self.prefix_len)
    }
}

impl FromStr for InterfaceAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix_len) = split_prefix(s).ok_or_else(|| {
            format!("{s:?} is not an IPv4 address with prefix like 192.0.2.11/24")
        })?;
        Ok(InterfaceAddr { addr, prefix_len })
    }
}

impl fmt::Display for InterfaceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Parses an IPv4 address in dotted-quad form with a reason that names the text.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

/// Linux's `IFNAMSIZ - 1`.
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks a Linux interface name the way the kernel's `dev_valid_name` does, and refuses
/// characters that `ip` and udev treat specially.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "{name:?} is {} bytes long, Linux allows at most {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; interface names use letters, digits, '-', '_', '.' and '@'"
        ));
    }
    Ok(())
}

/// Checks one DNS label (RFC 1123 host name part): 1–63 letters, digits and hyphens, not
/// starting or ending with a hyphen.
pub fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!("{label:?} must be 1 to 63 characters long"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{label:?} may contain only letters, digits and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("{label:?} must not start or end with '-'"));
    }
    Ok(())
}

/// Checks a DNS domain such as `openstacklocal` or `example.org` (a trailing dot is allowed).
pub fn check_dns_domain(domain: &str) -> Result<(), String> {
    let body = domain.strip_suffix('.').unwrap_or(domain);
    if body.is_empty() || body.len() > 253 {
        return Err(format!("{domain:?} must be 1 to 253 characters long"));
    }
    body.split('.').try_for_each(check_dns_label)
}

/// Checks a UUID in its canonical 8-4-4-4-12 hex form.
pub fn check_uuid(uuid: &str) -> Result<(), String> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{uuid:?} is not a UUID like 8c0e8d40-0f0e-4d8e-9d53-3f2a6a1c0a11"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let mac: MacAddr = "FA:16:3e:00:00:11".parse().unwrap();
        assert_eq!(mac.to_string(), "fa:16:3e:00:00:11");
        assert_eq!("fa-16-3e-00-00-11".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:11:22",
            "fa:16:3e:0:00:11",
            "fa:16:3e-00:00:11",
            "zz:16:3e:00:00:11",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap()
                .is_multicast()
        );
    }

    #[test]
    fn cidr_math() {
        let c: Ipv4Cidr = "192.168.1.0/24".parse().unwrap();
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 168, 1, 255));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            c.host_range(),
            (
                Ipv4Addr::new(192, 168, 1, 1),
                Ipv4Addr::new(192, 168, 1, 254)
            )
        );
        assert!(c.overlaps(&"192.168.0.0/16".parse().unwrap()));
        assert!(!c.overlaps(&"192.168.2.0/24".parse().unwrap()));
        assert!(
            "192.168.1.5/24"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .contains("192.168.1.0/24")
        );
        assert!("192.168.1.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("192.168.1.0".parse::<Ipv4Cidr>().is_err());
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let p2p: Ipv4Cidr = "10.0.0.0/31".parse().unwrap();
        assert_eq!(
            p2p.host_range(),
            (Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn name_rules() {
        assert!(check_ifname("tap-vm1").is_ok());
        assert!(check_ifname("a-very-long-name1").is_err());
        assert!(check_ifname("tap vm").is_err());
        assert!(check_ifname("tap/vm").is_err());
        assert!(check_dns_label("host-192-168-1-11").is_ok());
        assert!(check_dns_label("-x").is_err());
        assert!(check_dns_domain("openstacklocal").is_ok());
        assert!(check_dns_domain("example.org.").is_ok());
        assert!(check_dns_domain("a..b").is_err());
        assert!(check_uuid("8c0e8d40-0f0e-4d8e-9d53-3f2a6a1c0a11").is_ok());
        assert!(check_uuid("8c0e8d40").is_err());
    }
}
