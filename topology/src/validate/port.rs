//! Rules for `[[port]]` and `[port.instance]`: network, MAC, fixed IP and the subnet it
//! falls in, hostname, tap name, and the instance's metadata (reading `user_data_file`).

use std::collections::HashMap;
use std::path::Path;

use super::subnet::host_address;
use super::{Plan, line, lookup};
use crate::names::RESERVED_PREFIXES;
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawInstance, RawPort, RawTopology, S, SegmentType, Text, val};
use crate::types::{MacAddr, check_dns_label, check_ifname, check_uuid};
use std::net::Ipv4Addr;

/// Largest user data accepted (Nova's limit is 64 KiB too, before base64).
pub const MAX_USER_DATA: usize = 64 * 1024;
/// Nova's limit on metadata keys and values.
const MAX_META_LEN: usize = 255;

pub(super) fn check(raw: &RawTopology, plan: &mut Plan, base_dir: &Path, report: &mut Report) {
    let mut macs: HashMap<(usize, MacAddr), usize> = HashMap::new();
    let mut taps: HashMap<&str, usize> = HashMap::new();
    let mut uuids: HashMap<&str, usize> = HashMap::new();
    for e in &raw.ports {
        let p = &e.raw;
        let res = Res::new(ResourceKind::Port, p.name.get_ref());
        let network = lookup(
            raw,
            &plan.networks,
            ResourceKind::Network,
            "network",
            &p.network,
            &res,
            report,
        );
        plan.port_network.push(network);
        let subnet = network.and_then(|n| port_subnet(raw, plan, n, p, &res, report));
        plan.port_subnet.push(subnet);
        if let Some(mac) = &p.mac_address {
            let m = val(mac);
            if m.is_broadcast() || m.is_multicast() || m.is_zero() {
                let what = if m.is_zero() {
                    "all-zero"
                } else if m.is_broadcast() {
                    "broadcast"
                } else {
                    "multicast"
                };
                report.at(
                    &mac.span(),
                    Some(&res),
                    format!("mac_address {m} is a {what} address"),
                );
            } else if let Some(n) = network
                && let Some(first) = macs.insert((n, m), line(report, &mac.span()))
            {
                report.at(
                    &mac.span(),
                    Some(&res),
                    format!("mac_address {m} is already used by the port on line {first}"),
                );
            }
        }
        if let Some(hostname) = &p.hostname
            && let Err(why) = check_dns_label(hostname.get_ref())
        {
            report.at(&hostname.span(), Some(&res), format!("hostname {why}"));
        }
        if let Some(tap) = &p.tap {
            check_tap(raw, tap, &mut taps, &res, report);
        }
        if let Some(vtep) = &p.remote_vtep {
            check_remote_vtep(raw, network, p, vtep, &res, report);
        }
        let user_data = match &p.instance {
            Some(inst) => check_instance(inst, &mut uuids, base_dir, &res, report),
            None => None,
        };
        plan.user_data.push(user_data);
    }
}

/// `remote_vtep`: the port lives behind one of its vxlan network's remote VTEPs, so it
/// has no tap here.
fn check_remote_vtep(
    raw: &RawTopology,
    network: Option<usize>,
    p: &RawPort,
    vtep: &S<Text<Ipv4Addr>>,
    res: &Res,
    report: &mut Report,
) {
    let ip = val(vtep);
    let Some(n) = network else { return };
    let net = &raw.networks[n].raw;
    let seg = net.segment.as_ref();
    if seg.is_none_or(|s| *s.kind.get_ref() != SegmentType::Vxlan) {
        report.at(
            &vtep.span(),
            Some(res),
            format!(
                "remote_vtep is only for ports of vxlan networks; network \"{}\" is not one",
                net.name.get_ref()
            ),
        );
    } else if !seg
        .and_then(|s| s.remote_vteps.as_ref())
        .is_some_and(|r| r.get_ref().iter().any(|v| val(v) == ip))
    {
        report.at(
            &vtep.span(),
            Some(res),
            format!(
                "remote_vtep {ip} is not among the remote_vteps of network \"{}\"",
                net.name.get_ref()
            ),
        );
    }
    if let Some(tap) = &p.tap {
        report.at(
            &tap.span(),
            Some(res),
            "a port with remote_vtep lives on another host and has no tap here".to_owned(),
        );
    }
}

/// The subnet holding the port's `fixed_ip`, or the network's first subnet, which the
/// address will be allocated from.
fn port_subnet(
    raw: &RawTopology,
    plan: &mut Plan,
    network: usize,
    p: &RawPort,
    res: &Res,
    report: &mut Report,
) -> Option<usize> {
    let mut subnets = (0..raw.subnets.len()).filter(|&s| plan.subnet_network[s] == Some(network));
    let Some(fixed) = &p.fixed_ip else {
        return subnets.next();
    };
    let ip = val(fixed);
    let Some(s) = subnets.find(|&s| val(&raw.subnets[s].raw.cidr).contains(ip)) else {
        report.at(
            &fixed.span(),
            Some(res),
            format!(
                "fixed_ip {ip} is in no subnet of network {:?}",
                p.network.get_ref()
            ),
        );
        return None;
    };
    host_address(
        val(&raw.subnets[s].raw.cidr),
        fixed,
        "fixed_ip",
        res,
        report,
    );
    plan.claimed[s].insert(ip);
    Some(s)
}

/// A user-declared tap: a valid ifname, not one the manager would generate, not a host
/// interface the file maps, not used twice.
fn check_tap<'r>(
    raw: &'r RawTopology,
    tap: &'r crate::raw::S<String>,
    taps: &mut HashMap<&'r str, usize>,
    res: &Res,
    report: &mut Report,
) {
    let name = tap.get_ref().as_str();
    if let Err(why) = check_ifname(name) {
        report.at(&tap.span(), Some(res), format!("tap {why}"));
    } else if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        report.at(
            &tap.span(),
            Some(res),
            format!(
                "tap {name:?} starts with {prefix:?}, which is reserved for links nanovnf names"
            ),
        );
    } else if raw.physical_networks.values().any(|i| i.get_ref() == name)
        || raw
            .underlay
            .as_ref()
            .is_some_and(|u| u.raw.interface.get_ref() == name)
    {
        report.at(
            &tap.span(),
            Some(res),
            format!("tap {name:?} is a host interface named in [physical_networks] or [underlay]"),
        );
    } else if let Some(first) = taps.insert(name, line(report, &tap.span())) {
        report.at(
            &tap.span(),
            Some(res),
            format!("tap {name:?} is already used by the port on line {first}"),
        );
    }
}

/// `[port.instance]`; returns its user data.
fn check_instance<'r>(
    inst: &'r RawInstance,
    uuids: &mut HashMap<&'r str, usize>,
    base_dir: &Path,
    res: &Res,
    report: &mut Report,
) -> Option<Vec<u8>> {
    if let Some(uuid) = &inst.uuid {
        if let Err(why) = check_uuid(uuid.get_ref()) {
            report.at(&uuid.span(), Some(res), format!("instance.uuid {why}"));
        } else if let Some(first) = uuids.insert(uuid.get_ref(), line(report, &uuid.span())) {
            report.at(
                &uuid.span(),
                Some(res),
                format!(
                    "instance.uuid {} is already used by the port on line {first}",
                    uuid.get_ref()
                ),
            );
        }
    }
    for (key, value) in inst.meta.iter().flatten() {
        if key.is_empty() || key.len() > MAX_META_LEN {
            report.at(
                &value.span(),
                Some(res),
                format!("instance.meta key {key:?} must be 1 to {MAX_META_LEN} characters long"),
            );
        } else if value.get_ref().len() > MAX_META_LEN {
            report.at(
                &value.span(),
                Some(res),
                format!("instance.meta.{key} is longer than {MAX_META_LEN} characters"),
            );
        }
    }
    for (key, value) in inst.public_keys.iter().flatten() {
        if key.is_empty() || value.get_ref().trim().is_empty() {
            report.at(
                &value.span(),
                Some(res),
                format!("instance.public_keys: key {key:?} needs a name and a non-empty key"),
            );
        }
    }
    let data = match (&inst.user_data, &inst.user_data_file) {
        (Some(_), Some(file)) => {
            report.at(
                &file.span(),
                Some(res),
                "instance.user_data_file and instance.user_data are mutually exclusive",
            );
            return None;
        }
        (Some(text), None) => (
            text.span(),
            text.get_ref().as_bytes().to_vec(),
            "instance.user_data",
        ),
        (None, Some(file)) => {
            let path = base_dir.join(file.get_ref());
            match std::fs::read(&path) {
                Ok(bytes) => (file.span(), bytes, "instance.user_data_file"),
                Err(e) => {
                    report.at(
                        &file.span(),
                        Some(res),
                        format!(
                            "instance.user_data_file {:?} cannot be read: {e}",
                            file.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    let (span, bytes, field) = data;
    if bytes.len() > MAX_USER_DATA {
        report.at(
            &span,
            Some(res),
            format!(
                "{field} is {} bytes, at most {MAX_USER_DATA} are allowed",
                bytes.len()
            ),
        );
        return None;
    }
    Some(bytes)
}
