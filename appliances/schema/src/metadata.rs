//! What a metadata appliance is told: the instances of one tenant network (each known by
//! its MAC *and* address), and the subnets they live on, from which it answers the
//! OpenStack and EC2 metadata trees at 169.254.169.254.

use crate::Ipv4Cidr;
use crate::dhcp::Route;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize};

/// The metadata service's well-known address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The largest user data one instance may have (Nova's limit is 64 KiB as well).
pub const MAX_USER_DATA: usize = 64 * 1024;

/// The most instances one metadata appliance serves.
pub const MAX_INSTANCES: usize = 250;

/// The longest password an instance may set: Nova's limit (4 chunks of 255 bytes in its
/// `system_metadata`).
pub const MAX_PASSWORD: usize = 1020;

/// The most passwords one [`PasswordPage`] carries: 16 × ~1 KiB keeps a report far below
/// the control channel's frame limit, and the appliance's UART write short.
pub const MAX_PASSWORDS_PER_PAGE: usize = 16;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataRole {
    /// The network's id (Neutron's network UUID), for `network_data.json`.
    pub network_id: String,
    /// The network's subnets that have ports; the appliance's NIC holds an address in each
    /// DHCP-enabled one (listed in the NIC's addresses) besides 169.254.169.254.
    pub subnets: Vec<MetadataSubnet>,
    /// One entry per port of the network that has an address.
    pub instances: Vec<MetadataInstance>,
    /// Passwords instances set before this boot (the manager keeps them across restarts):
    /// each is restored when its MAC *and* UUID name one of `instances`, ignored
    /// otherwise. Last, so an image built before it still decodes the config (postcard
    /// leaves trailing bytes unread).
    pub passwords: Vec<InstancePassword>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataSubnet {
    /// Neutron's subnet UUID.
    pub id: String,
    pub cidr: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    /// The resolvers the instance was told about by DHCP (the DHCP appliance's own address
    /// when the subnet names none).
    pub dns_servers: Vec<Ipv4Addr>,
    pub host_routes: Vec<Route>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataInstance {
    /// The port's MAC: a request whose source MAC differs gets 404.
    pub mac: [u8; 6],
    /// The port's fixed address: the request's source address.
    pub ip: Ipv4Addr,
    /// Neutron's port UUID (`network_data.json` links).
    pub port_id: String,
    /// Nova's instance UUID.
    pub uuid: String,
    /// The instance's display name.
    pub name: String,
    /// The hostname DHCP hands out (`hostname` in both trees, without the domain).
    pub hostname: String,
    /// The network's DNS domain (EC2's `local-hostname` is `hostname.domain`).
    pub domain: String,
    pub availability_zone: String,
    pub project_id: String,
    /// Nova's `launch_index`, also EC2's `ami-launch-index`.
    pub launch_index: u32,
    /// Key name → public key, sorted by name (EC2 numbers them in this order).
    pub public_keys: Vec<(String, String)>,
    /// Nova's `meta`, sorted by key.
    pub meta: Vec<(String, String)>,
    /// Raw user data (at most [`MAX_USER_DATA`] bytes); `None` answers 404.
    pub user_data: Option<Vec<u8>>,
    /// The floating IP associated with the port (EC2's `public-ipv4`).
    pub floating_ip: Option<Ipv4Addr>,
    /// The network's MTU (`network_data.json` links).
    pub mtu: u16,
}

/// The password an instance set with `POST /openstack/<version>/password` (Nova's
/// encrypted, base64 password blob, kept as the bytes the instance sent).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InstancePassword {
    pub mac: [u8; 6],
    /// The instance it belongs to: a new instance on the same port starts without one.
    pub uuid: String,
    /// At most [`MAX_PASSWORD`] bytes.
    pub password: Vec<u8>,
}

/// One answer to `Op::MetadataPasswords { since }`: the passwords set after `since`,
/// oldest first, at most [`MAX_PASSWORDS_PER_PAGE`] of them.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordPage {
    /// Ask again with `since: upto` for what follows. Serials count from the appliance's
    /// boot (restored passwords first), so a restarted appliance is asked from 0 again.
    pub upto: u64,
    /// More passwords were set after `upto` than this page holds.
    pub more: bool,
    pub passwords: Vec<InstancePassword>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ipv4Cidr;
    use alloc::vec;

    /// `MetadataRole` as images built before `passwords` existed decode it.
    #[derive(Deserialize, Debug, PartialEq, Eq)]
    struct RoleBeforePasswords {
        network_id: String,
        subnets: Vec<MetadataSubnet>,
        instances: Vec<MetadataInstance>,
    }

    #[test]
    fn an_image_from_before_passwords_still_reads_the_role() {
        let role = MetadataRole {
            network_id: "net".into(),
            subnets: vec![MetadataSubnet {
                id: "sub".into(),
                cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
                gateway: None,
                dns_servers: Vec::new(),
                host_routes: Vec::new(),
            }],
            instances: Vec::new(),
            passwords: vec![InstancePassword {
                mac: [0xfa, 0x16, 0x3e, 0, 0, 1],
                uuid: "u".into(),
                password: b"c2VjcmV0".to_vec(),
            }],
        };
        // The role is the last thing in a BootConfig, so `passwords` is its tail.
        let bytes = postcard::to_allocvec(&role).unwrap();
        let old: RoleBeforePasswords = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            (old.network_id, old.subnets),
            (role.network_id, role.subnets)
        );
    }
}
