//! Why frames are dropped, and the gateway's counters under their stable names.

use alloc::format;
use alloc::vec::Vec;
use nanovnf_schema::control::Counter;

/// Why a frame (or one encapsulated copy of it) was dropped. Each has a `drop_<name>`
/// counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `handle` was given a NIC index other than [`crate::TENANT`] or [`crate::UNDERLAY`].
    BadNic,
    /// A tenant frame shorter than an Ethernet header.
    TenantRunt,
    /// The encapsulated frame would exceed the underlay MTU (never truncated).
    TooBig,
    /// A superframe of a kind this gateway cannot segment (TCP/IPv6, UDP, unknown).
    UnsupportedGso,
    /// A TCP/IPv4 superframe that is not Ethernet + IPv4 + TCP, or has no usable MSS.
    BadGso,
    /// A partial checksum whose offsets lie outside the frame.
    BadChecksumOffload,
    /// Broadcast, multicast or unknown unicast with no remote VTEP to send it to.
    NoRemote,
    /// A VTEP outside the underlay subnet and no underlay gateway.
    NoRoute,
    /// No room for one more learnt VTEP's underlay neighbour.
    NeighborTableFull,
    /// The VTEP's MAC is being resolved and its queue (or the global byte cap) is full.
    QueueFull,
    /// The VTEP's MAC could not be resolved: its queued frames are dropped.
    VtepUnresolved,
    /// The device refused the frame (no transmit buffer).
    TxFull,
    /// An underlay frame shorter than an Ethernet header.
    UnderlayRunt,
    /// An underlay frame neither IPv4 nor ARP.
    UnsupportedEthertype,
    /// An ARP packet that is not well-formed Ethernet/IPv4 ARP.
    BadArp,
    /// For another host: another MAC or IPv4 address, or ARP about others.
    NotForUs,
    /// Outer IPv4, UDP or VXLAN header cut short.
    Truncated,
    /// Outer IPv4 version or header length invalid.
    BadIpHeader,
    /// Outer IPv4 or UDP length fields inconsistent with each other or the frame.
    BadLength,
    /// Outer IPv4 header checksum wrong.
    BadIpChecksum,
    /// An outer IPv4 fragment (VTEPs must not fragment, RFC 7348 §4.3).
    Fragment,
    /// Outer source address not a unicast host (or our own).
    BadSource,
    /// For local_vtep but neither UDP nor ICMP.
    UnsupportedProtocol,
    /// An ICMP message other than a well-formed echo request.
    BadIcmp,
    /// UDP to local_vtep on a port other than the VXLAN port.
    WrongPort,
    /// Non-zero outer UDP checksum that does not verify.
    BadUdpChecksum,
    /// VXLAN header without the I flag.
    NoVniFlag,
    /// VXLAN header for another VNI.
    WrongVni,
    /// Inner frame shorter than an Ethernet header.
    InnerRunt,
    /// Inner frame larger than the tenant MTU allows.
    InnerTooBig,
    /// Inner source MAC is a static entry behind another VTEP (spoofed or stale: Linux
    /// drops these too rather than migrate a static entry).
    StaticConflict,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 31] = [
        DropReason::BadNic,
        DropReason::TenantRunt,
        DropReason::TooBig,
        DropReason::UnsupportedGso,
        DropReason::BadGso,
        DropReason::BadChecksumOffload,
        DropReason::NoRemote,
        DropReason::NoRoute,
        DropReason::NeighborTableFull,
        DropReason::QueueFull,
        DropReason::VtepUnresolved,
        DropReason::TxFull,
        DropReason::UnderlayRunt,
        DropReason::UnsupportedEthertype,
        DropReason::BadArp,
        DropReason::NotForUs,
        DropReason::Truncated,
        DropReason::BadIpHeader,
        DropReason::BadLength,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::BadSource,
        DropReason::UnsupportedProtocol,
        DropReason::BadIcmp,
        DropReason::WrongPort,
        DropReason::BadUdpChecksum,
        DropReason::NoVniFlag,
        DropReason::WrongVni,
        DropReason::InnerRunt,
        DropReason::InnerTooBig,
        DropReason::StaticConflict,
    ];

    /// The counter's name without its `drop_` prefix.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadNic => "bad_nic",
            DropReason::TenantRunt => "tenant_runt",
            DropReason::TooBig => "too_big",
            DropReason::UnsupportedGso => "unsupported_gso",
            DropReason::BadGso => "bad_gso",
            DropReason::BadChecksumOffload => "bad_checksum_offload",
            DropReason::NoRemote => "no_remote",
            DropReason::NoRoute => "no_route",
            DropReason::NeighborTableFull => "neighbor_table_full",
            DropReason::QueueFull => "queue_full",
            DropReason::VtepUnresolved => "vtep_unresolved",
            DropReason::TxFull => "tx_full",
            DropReason::UnderlayRunt => "underlay_runt",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::BadArp => "bad_arp",
            DropReason::NotForUs => "not_for_us",
            DropReason::Truncated => "truncated",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::BadLength => "bad_length",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Fragment => "fragment",
            DropReason::BadSource => "bad_source",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::BadIcmp => "bad_icmp",
            DropReason::WrongPort => "wrong_port",
            DropReason::BadUdpChecksum => "bad_udp_checksum",
            DropReason::NoVniFlag => "no_vni_flag",
            DropReason::WrongVni => "wrong_vni",
            DropReason::InnerRunt => "inner_runt",
            DropReason::InnerTooBig => "inner_too_big",
            DropReason::StaticConflict => "static_conflict",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $field:ident),* $(,)?) => {
        /// Event counters; each field's name is its counter's name.
        #[derive(Debug, Default, Clone)]
        pub(crate) struct Stats {
            $($(#[doc = $doc])* pub $field: u64,)*
            drops: [u64; DropReason::ALL.len()],
        }

        impl Stats {
            pub fn push_all(&self, out: &mut Vec<Counter>) {
                $(out.push(Counter::new(stringify!($field), self.$field));)*
                for r in DropReason::ALL {
                    out.push(Counter::new(format!("drop_{}", r.name()), self.drops(r)));
                }
            }
        }
    };
}

stats! {
    /// Frames received on the tenant NIC.
    tenant_rx,
    /// Frames received on the underlay NIC.
    underlay_rx,
    /// Outer frames handed to the underlay NIC (flushed queue entries included).
    encapsulated,
    /// Tenant frames sent to the one VTEP their destination MAC lives behind.
    unicast,
    /// Broadcast, multicast and unknown-unicast tenant frames (head-end replicated).
    flooded,
    /// Of those, unknown unicast.
    unknown_unicast,
    /// Outer copies made by head-end replication.
    flood_copies,
    /// Inner frames delivered to the tenant NIC.
    decapsulated,
    /// TCP/IPv4 superframes cut in software, and the segments they made.
    segmented,
    segments,
    /// Of those segments, sent with their TCP checksum left to the underlay device.
    segments_checksum_offloaded,
    /// Partial checksums completed in software before encapsulation.
    checksums_completed,
    /// New FDB entries learnt, learnt entries that moved VTEP, learnt entries aged out,
    /// evicted for room, and dropped because their MAC showed up on the tenant side.
    learnt,
    learn_moved,
    aged,
    evicted,
    moved_local,
    /// Source MACs not learnt: the table is full of static entries.
    learn_table_full,
    /// ARP requests for static entries' addresses answered on the tenant side.
    arp_responder_answers,
    /// ARP requests for local_vtep answered, ICMP echo requests to it answered.
    arp_replies,
    echo_replies,
    /// ARP requests sent for VTEPs (or the underlay gateway), VTEP MACs resolved (or
    /// changed), and resolved MACs forgotten after unanswered refreshes.
    vtep_arp_requests,
    vtep_resolved,
    vtep_expired,
    /// Outer frames queued while their VTEP was being resolved.
    queued,
    /// Frames the device refused for lack of a buffer, control frames included.
    tx_failed,
}

impl Stats {
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            for s in &DropReason::ALL[i + 1..] {
                assert_ne!(r.name(), s.name());
            }
        }
    }
}
