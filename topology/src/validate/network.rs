//! Rules for `[physical_networks]`, `[underlay]`, `[dns]` and `[[network]]`: interface
//! names, MTUs, upstream resolvers and segments (physical network references, VLAN ids,
//! VNIs, VTEPs), including the segments two networks may not share.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{in_range, line};
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawSegment, RawTopology, SegmentType, val};
use crate::types::check_ifname;

/// Largest VXLAN network identifier (24 bits).
pub(crate) const MAX_VNI: i64 = 16_777_215;

/// `[physical_networks]` and `[underlay]`: valid, distinct host interfaces.
pub(super) fn check_host(raw: &RawTopology, report: &mut Report) {
    let physnets = Res::unnamed(ResourceKind::PhysicalNetworks);
    let mut by_iface: HashMap<&str, &str> = HashMap::new();
    for (name, iface) in &raw.physical_networks {
        if let Err(why) = check_ifname(iface.get_ref()) {
            report.at(
                &iface.span(),
                Some(&physnets),
                format!("{name}: interface {why}"),
            );
        }
        if let Some(other) = by_iface.insert(iface.get_ref(), name) {
            report.at(
                &iface.span(),
                Some(&physnets),
                format!(
                    "{name}: interface {:?} is already mapped by physical network {other:?}",
                    iface.get_ref()
                ),
            );
        }
    }
    if let Some(u) = &raw.underlay {
        let res = Res::unnamed(ResourceKind::Underlay);
        let iface = &u.raw.interface;
        if let Err(why) = check_ifname(iface.get_ref()) {
            report.at(&iface.span(), Some(&res), format!("interface {why}"));
        }
        if let Some(physnet) = by_iface.get(iface.get_ref().as_str()) {
            report.at(
                &iface.span(),
                Some(&res),
                format!(
                    "interface {:?} is already mapped by physical network {physnet:?}",
                    iface.get_ref()
                ),
            );
        }
        if let Some(port) = &u.raw.udp_port {
            in_range(port, "udp_port", 1, 65535, &res, report);
        }
    }
}

/// At most this many upstream resolvers (Neutron's `max_dns_nameservers` default).
pub(crate) const MAX_UPSTREAM_RESOLVERS: usize = 5;

/// `[dns]`: upstream resolvers are distinct unicast addresses an appliance can reach (not
/// 0.0.0.0, loopback, broadcast or multicast), at most five.
pub(super) fn check_dns(raw: &RawTopology, report: &mut Report) {
    let Some(dns) = &raw.dns else { return };
    let res = Res::unnamed(ResourceKind::Dns);
    let Some(list) = &dns.raw.upstream_resolvers else {
        return;
    };
    if list.get_ref().len() > MAX_UPSTREAM_RESOLVERS {
        report.at(
            &list.span(),
            Some(&res),
            format!(
                "upstream_resolvers lists {} addresses, at most {MAX_UPSTREAM_RESOLVERS} are allowed",
                list.get_ref().len()
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for entry in list.get_ref() {
        let ip = val(entry);
        let why = if ip.is_unspecified() {
            "is unspecified"
        } else if ip.is_loopback() {
            "is a loopback address (the appliance's own, not the host's)"
        } else if ip.is_broadcast() || ip.is_multicast() {
            "is not a unicast address"
        } else if !seen.insert(ip) {
            "is listed twice"
        } else {
            continue;
        };
        report.at(
            &entry.span(),
            Some(&res),
            format!("upstream_resolvers: {ip} {why}"),
        );
    }
}

/// Per network: MTU and segment; across networks: flat physical networks, VLANs, VNIs and
/// VTEP addresses used once.
pub(super) fn check(raw: &RawTopology, report: &mut Report) {
    let mut flat: HashMap<&str, usize> = HashMap::new();
    let mut vlans: HashMap<(&str, i64), usize> = HashMap::new();
    let mut vnis: HashMap<i64, usize> = HashMap::new();
    let mut vteps: HashMap<Ipv4Addr, usize> = HashMap::new();
    for e in &raw.networks {
        let net = &e.raw;
        let res = Res::new(ResourceKind::Network, net.name.get_ref());
        if let Some(mtu) = &net.mtu {
            in_range(mtu, "mtu", 68, 9000, &res, report);
        }
        let Some(seg) = &net.segment else { continue };
        check_segment_keys(seg, &res, report);
        let kind_line = line(report, &seg.kind.span());
        match *seg.kind.get_ref() {
            SegmentType::Local => {}
            SegmentType::Flat => {
                if let Some(physnet) = physical_network(raw, seg, "flat", &res, report)
                    && let Some(first) = flat.insert(physnet, kind_line)
                {
                    report.at(
                        &seg.kind.span(),
                        Some(&res),
                        format!(
                            "segment.physical_network {physnet:?} already carries the flat network on line {first}"
                        ),
                    );
                }
            }
            SegmentType::Vlan => {
                let physnet = physical_network(raw, seg, "vlan", &res, report);
                let id = required(seg.vlan_id.as_ref(), "vlan_id", "vlan", seg, &res, report)
                    .and_then(|id| in_range(id, "segment.vlan_id", 1, 4094, &res, report));
                if let (Some(physnet), Some(id), Some(span)) =
                    (physnet, id, seg.vlan_id.as_ref().map(|v| v.span()))
                    && let Some(first) = vlans.insert((physnet, id), line(report, &span))
                {
                    report.at(
                        &span,
                        Some(&res),
                        format!(
                            "segment.vlan_id {id} on physical network {physnet:?} is already used by the network on line {first}"
                        ),
                    );
                }
            }
            SegmentType::Vxlan => check_vxlan(raw, seg, &mut vnis, &mut vteps, &res, report),
        }
    }
}

fn check_vxlan(
    raw: &RawTopology,
    seg: &RawSegment,
    vnis: &mut HashMap<i64, usize>,
    vteps: &mut HashMap<Ipv4Addr, usize>,
    res: &Res,
    report: &mut Report,
) {
    if raw.underlay.is_none() {
        report.at(
            &seg.kind.span(),
            Some(res),
            "segment.type vxlan needs an [underlay] table",
        );
    }
    if let Some(vni) = required(seg.vni.as_ref(), "vni", "vxlan", seg, res, report)
        && let Some(v) = in_range(vni, "segment.vni", 1, MAX_VNI, res, report)
        && let Some(first) = vnis.insert(v, line(report, &vni.span()))
    {
        report.at(
            &vni.span(),
            Some(res),
            format!("segment.vni {v} is already used by the network on line {first}"),
        );
    }
    let local = required(
        seg.local_vtep.as_ref(),
        "local_vtep",
        "vxlan",
        seg,
        res,
        report,
    );
    if let Some(local) = local {
        let addr = val(local);
        if addr.subnet().is_network_or_broadcast(addr.addr) || addr.addr.is_unspecified() {
            report.at(
                &local.span(),
                Some(res),
                format!("segment.local_vtep {addr} is not a host address"),
            );
        } else if let Some(first) = vteps.insert(addr.addr, line(report, &local.span())) {
            report.at(
                &local.span(),
                Some(res),
                format!(
                    "segment.local_vtep address {} is already used by the network on line {first}",
                    addr.addr
                ),
            );
        }
    }
    let mut seen = Vec::new();
    for remote in seg.remote_vteps.iter().flat_map(|r| r.get_ref()) {
        let ip = val(remote);
        if local.is_some_and(|l| val(l).addr == ip) {
            report.at(
                &remote.span(),
                Some(res),
                format!("segment.remote_vteps lists {ip}, which is local_vtep"),
            );
        } else if seen.contains(&ip) {
            report.at(
                &remote.span(),
                Some(res),
                format!("segment.remote_vteps lists {ip} twice"),
            );
        } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            report.at(
                &remote.span(),
                Some(res),
                format!("segment.remote_vteps: {ip} is not a unicast address"),
            );
        }
        seen.push(ip);
    }
}

/// Refuses segment keys that do not belong to the segment's type.
fn check_segment_keys(seg: &RawSegment, res: &Res, report: &mut Report) {
    let ty = *seg.kind.get_ref();
    let present = [
        (
            "physical_network",
            seg.physical_network.as_ref().map(|v| v.span()),
            matches!(ty, SegmentType::Flat | SegmentType::Vlan),
        ),
        (
            "vlan_id",
            seg.vlan_id.as_ref().map(|v| v.span()),
            ty == SegmentType::Vlan,
        ),
        (
            "vni",
            seg.vni.as_ref().map(|v| v.span()),
            ty == SegmentType::Vxlan,
        ),
        (
            "local_vtep",
            seg.local_vtep.as_ref().map(|v| v.span()),
            ty == SegmentType::Vxlan,
        ),
        (
            "remote_vteps",
            seg.remote_vteps.as_ref().map(|v| v.span()),
            ty == SegmentType::Vxlan,
        ),
        (
            "arp_responder",
            seg.arp_responder.as_ref().map(|v| v.span()),
            ty == SegmentType::Vxlan,
        ),
    ];
    for (key, span, allowed) in present {
        if let (Some(span), false) = (span, allowed) {
            report.at(
                &span,
                Some(res),
                format!(
                    "segment.{key} is not allowed in a {} segment",
                    type_name(ty)
                ),
            );
        }
    }
}

pub(crate) fn type_name(ty: SegmentType) -> &'static str {
    match ty {
        SegmentType::Local => "local",
        SegmentType::Flat => "flat",
        SegmentType::Vlan => "vlan",
        SegmentType::Vxlan => "vxlan",
    }
}

/// A key the segment type requires; missing is reported at `type`.
fn required<'a, T>(
    value: Option<&'a T>,
    key: &str,
    ty: &str,
    seg: &RawSegment,
    res: &Res,
    report: &mut Report,
) -> Option<&'a T> {
    if value.is_none() {
        report.at(
            &seg.kind.span(),
            Some(res),
            format!("segment.{key} is required for a {ty} segment"),
        );
    }
    value
}

/// The segment's physical network, which must be in `[physical_networks]`.
fn physical_network<'a>(
    raw: &RawTopology,
    seg: &'a RawSegment,
    ty: &str,
    res: &Res,
    report: &mut Report,
) -> Option<&'a str> {
    let physnet = required(
        seg.physical_network.as_ref(),
        "physical_network",
        ty,
        seg,
        res,
        report,
    )?;
    if raw.physical_networks.contains_key(physnet.get_ref()) {
        Some(physnet.get_ref())
    } else {
        report.at(
            &physnet.span(),
            Some(res),
            format!(
                "segment.physical_network {:?} is not in [physical_networks]",
                physnet.get_ref()
            ),
        );
        None
    }
}
