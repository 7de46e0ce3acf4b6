//! Stable names for what the manager creates: link names that fit Linux's 15 characters
//! and MAC addresses in OpenStack's `fa:16:3e` range, derived with FNV-1a (implemented here
//! so that names never change with the Rust version or a dependency).

use crate::types::MacAddr;

/// Prefix of bridge names.
pub const BRIDGE_PREFIX: &str = "nvb-";
/// Prefix of tap names (appliance NICs).
pub const TAP_PREFIX: &str = "nvt-";
/// Prefix of VLAN sub-interface names.
pub const VLAN_PREFIX: &str = "nvv-";
/// Link-name prefixes the manager owns; a port's `tap` may not start with one.
pub const RESERVED_PREFIXES: [&str; 4] = [BRIDGE_PREFIX, TAP_PREFIX, VLAN_PREFIX, "nv-"];

/// OpenStack's (and so nanovnf's) MAC prefix for generated addresses.
pub const MAC_PREFIX: [u8; 3] = [0xfa, 0x16, 0x3e];

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The kinds of link the manager names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `nvb-…`: a network's bridge (key `network/<name>`), the underlay bridge (key
    /// `underlay`).
    Bridge,
    /// `nvt-…`: an appliance NIC (key as for `stable_mac`).
    Tap,
    /// `nvv-…`: a VLAN sub-interface (key `vlan/<physical_network>/<vlan_id>`).
    Vlan,
}

impl LinkKind {
    pub fn prefix(self) -> &'static str {
        match self {
            LinkKind::Bridge => BRIDGE_PREFIX,
            LinkKind::Tap => TAP_PREFIX,
            LinkKind::Vlan => VLAN_PREFIX,
        }
    }
}

/// The link name for `key` under `salt`: the kind's 4-character prefix and the 8 lowercase
/// hex digits of `fnv1a32(salt ++ "\0" ++ key)`, 12 characters in all. The salt separates
/// managers (state dirs) on one host; the same salt and key always give the same name.
///
/// Keys: `network/<network>` (bridge), `underlay` (bridge), `dhcp/<network>`,
/// `metadata/<network>`, `vxlan/<network>`, `vxlan-underlay/<network>`,
/// `router/<router>/<network>`, `router/<router>/external` (taps),
/// `vlan/<physical_network>/<vlan_id>`.
pub fn link_name(kind: LinkKind, salt: &str, key: &str) -> String {
    let mut bytes = Vec::with_capacity(salt.len() + 1 + key.len());
    bytes.extend_from_slice(salt.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    format!("{}{:08x}", kind.prefix(), fnv1a32(&bytes))
}

/// A MAC in `fa:16:3e:xx:xx:xx` whose last three bytes are the low bytes of
/// `fnv1a32(key)`. Keys as for `link_name`, plus `port/<port>` for ports without
/// `mac_address`; a VXLAN gateway's keys end in `/<local_vtep address>`, since every host
/// of the network runs one. Unicast and locally administered by construction.
pub fn stable_mac(key: &str) -> MacAddr {
    let [_, a, b, c] = fnv1a32(key.as_bytes()).to_be_bytes();
    let [p, q, r] = MAC_PREFIX;
    MacAddr([p, q, r, a, b, c])
}

/// A stable UUID (version 4 layout) derived from `key`, for instances without `uuid`.
pub fn stable_uuid(key: &str) -> String {
    let words: Vec<u32> = (0u8..4)
        .map(|i| {
            let mut bytes = key.as_bytes().to_vec();
            bytes.push(i);
            fnv1a32(&bytes)
        })
        .collect();
    let mut b = [0u8; 16];
    for (chunk, w) in b.chunks_mut(4).zip(&words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MAX_IFNAME_LEN, check_ifname, check_uuid};

    #[test]
    fn fnv1a_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn link_names_are_stable_short_and_salted() {
        let a = link_name(LinkKind::Bridge, "/var/lib/nanovnf", "network/demo-net");
        assert_eq!(
            a,
            link_name(LinkKind::Bridge, "/var/lib/nanovnf", "network/demo-net")
        );
        assert_ne!(
            a,
            link_name(LinkKind::Bridge, "/tmp/other", "network/demo-net")
        );
        assert_ne!(
            a,
            link_name(LinkKind::Bridge, "/var/lib/nanovnf", "network/ext-net")
        );
        // Pinned: these names are on hosts; changing them orphans links.
        assert_eq!(
            link_name(LinkKind::Bridge, "/var/lib/nanovnf", "network/demo-net"),
            "nvb-f5772872"
        );
        assert_eq!(stable_mac("dhcp/demo-net").to_string(), "fa:16:3e:04:11:36");
        assert_eq!(
            stable_uuid("port/vm1"),
            "019dd327-009d-4194-839d-d64d029dd4ba"
        );
        for kind in [LinkKind::Bridge, LinkKind::Tap, LinkKind::Vlan] {
            let name = link_name(kind, &"x".repeat(300), &"k".repeat(300));
            assert_eq!(name.len(), 12);
            assert!(name.len() <= MAX_IFNAME_LEN);
            assert!(check_ifname(&name).is_ok());
        }
    }

    #[test]
    fn stable_macs_and_uuids() {
        let m = stable_mac("dhcp/demo-net");
        assert_eq!(m, stable_mac("dhcp/demo-net"));
        assert_eq!(&m.0[..3], &MAC_PREFIX);
        assert!(!m.is_multicast());
        assert_ne!(m, stable_mac("metadata/demo-net"));
        let u = stable_uuid("port/vm1");
        assert_eq!(u, stable_uuid("port/vm1"));
        assert!(check_uuid(&u).is_ok());
        assert_eq!(&u[14..15], "4");
    }
}
