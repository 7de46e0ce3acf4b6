//! nanovnf's router datapath: Neutron's L3 agent namespace (forwarding between tenant
//! subnets and an external network, ARP, ICMP errors, SNAT, floating IPs, fragmentation
//! and reassembly) as a sans-IO, `no_std` engine over raw Ethernet frames. The image feeds
//! [`Router::handle`] each received frame with its virtio-net offload header and the time;
//! everything that leaves goes through a [`Transmit`](nanovnf_frame::Transmit).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod conntrack;
mod neigh;
mod reasm;
mod router;

use alloc::string::String;
use core::fmt;
use core::net::Ipv4Addr;

pub use nanovnf_schema::control::Counter;
pub use router::Router;

/// Upper bound on the NICs of a router (tenant interfaces plus the external one).
pub const MAX_NICS: usize = 64;

/// What became of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent on (perhaps fragmented or segmented) by NIC `nic`.
    Forwarded {
        nic: usize,
    },
    /// For the router itself (ARP, ping, an answered probe).
    Local,
    /// Held: waiting for an ARP answer, or a fragment waiting for the rest.
    Queued,
    Dropped(DropReason),
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped; each has a `drop_<name>` counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// A stable snake_case name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// `handle` was given a NIC index the configuration does not have.
    UnknownNic => "unknown_nic",
    /// Shorter than its headers say.
    Truncated => "truncated",
    /// A unicast frame for another MAC, or a multicast one (the bridge floods them to us).
    NotForUs => "not_for_us",
    /// Neither IPv4 nor ARP.
    UnsupportedEthertype => "unsupported_ethertype",
    /// A malformed ARP packet, or one claiming one of our addresses.
    BadArp => "bad_arp",
    /// An ARP request for someone else's address.
    ArpNotForUs => "arp_not_for_us",
    BadVersion => "bad_version",
    /// IHL below 5.
    BadIhl => "bad_ihl",
    /// IPv4 options: not forwarded (as many routers' default).
    IpOptions => "ip_options",
    BadIpChecksum => "bad_ip_checksum",
    /// IPv4 total length below the header or past the frame.
    BadLength => "bad_length",
    /// A source address no host may have (0/8, 127/8, multicast, class E).
    MartianSource => "martian_source",
    /// A multicast, broadcast, loopback or subnet-broadcast destination.
    Broadcast => "broadcast",
    /// A tenant NIC's packet whose source is not on that NIC's subnets or routes.
    Spoofed => "spoofed",
    /// TTL ran out (time-exceeded sent).
    TtlExpired => "ttl_expired",
    /// No route (net-unreachable sent).
    NoRoute => "no_route",
    /// The next hop never answered ARP (host-unreachable sent).
    HostUnreachable => "host_unreachable",
    /// Too big for the egress MTU with DF set (fragmentation-needed sent).
    FragNeeded => "frag_needed",
    /// An offload header that does not fit the frame, or a GSO kind not handled.
    BadOffload => "bad_offload",
    /// A TCP, UDP or ICMP header cut short.
    BadL4 => "bad_l4",
    /// A packet for the router itself with a wrong TCP, UDP or ICMP checksum.
    BadL4Checksum => "bad_l4_checksum",
    /// A new NATed flow found the connection table full of assured flows.
    ConntrackFull => "conntrack_full",
    /// No free source port for a new SNAT flow.
    NatPortsExhausted => "nat_ports_exhausted",
    /// Gateway SNAT of a protocol without ports or identifiers (not TCP, UDP, echo).
    NatUnsupported => "nat_unsupported",
    /// The ARP queue's byte budget is spent.
    ArpQueueFull => "arp_queue_full",
    /// The oldest packet waiting for a destination, pushed out by a newer one.
    ArpQueueOverflow => "arp_queue_overflow",
    NeighbourTableFull => "neighbour_table_full",
    /// A fragment overlapping data already received (the datagram is discarded).
    FragOverlap => "frag_overlap",
    /// A fragment past 64 KiB or of a bad length.
    FragTooBig => "frag_too_big",
    /// Too many datagrams or bytes waiting for reassembly.
    FragTableFull => "frag_table_full",
    /// More fragments than one datagram may have.
    FragTooMany => "frag_too_many",
    /// A repeat of a fragment already held.
    FragDuplicate => "frag_duplicate",
    /// A datagram not completed in time.
    FragTimeout => "frag_timeout",
    /// For the router, answered by nothing (an ICMP message other than echo, a RST).
    LocalIgnored => "local_ignored",
    /// The transmit side refused the frame.
    TxFailed => "tx_failed",
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    NoNics,
    TooManyNics {
        count: usize,
    },
    /// `external_nic` names no NIC.
    ExternalNicOutOfRange {
        index: u8,
    },
    /// An MTU below IPv4's minimum of 68.
    BadMtu {
        nic: usize,
        mtu: u16,
    },
    /// A prefix length above 32 or an address that cannot be a host's.
    BadAddress {
        nic: usize,
        address: String,
    },
    /// A default gateway without an external NIC, or not on its subnets.
    GatewayNotOnExternal {
        gateway: Ipv4Addr,
    },
    /// An extra route whose next hop is on no connected subnet.
    NextHopNotConnected {
        destination: String,
        nexthop: Ipv4Addr,
    },
    /// More than [`conntrack::MAX_CAPACITY`](crate) entries asked for.
    ConntrackTooLarge {
        capacity: u32,
    },
    /// A floating IP without an external NIC, or colliding with an address.
    BadFloatingIp {
        floating: Ipv4Addr,
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoNics => write!(f, "router has no NICs"),
            ConfigError::TooManyNics { count } => {
                write!(f, "router has {count} NICs, at most {MAX_NICS} supported")
            }
            ConfigError::ExternalNicOutOfRange { index } => {
                write!(f, "role.external_nic = {index} names no NIC")
            }
            ConfigError::BadMtu { nic, mtu } => {
                write!(f, "nics[{nic}].mtu = {mtu} is below IPv4's minimum of 68")
            }
            ConfigError::BadAddress { nic, address } => {
                write!(f, "nics[{nic}].addresses has an invalid address {address}")
            }
            ConfigError::GatewayNotOnExternal { gateway } => write!(
                f,
                "role.default_gateway {gateway} is not on the external NIC's subnets"
            ),
            ConfigError::NextHopNotConnected {
                destination,
                nexthop,
            } => write!(
                f,
                "role.routes: next hop {nexthop} of {destination} is on no connected subnet"
            ),
            ConfigError::ConntrackTooLarge { capacity } => write!(
                f,
                "role.conntrack_capacity = {capacity} exceeds {}",
                conntrack::MAX_CAPACITY
            ),
            ConfigError::BadFloatingIp { floating, reason } => {
                write!(f, "role.floating_ips: {floating}: {reason}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
