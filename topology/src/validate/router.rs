//! Rules for `[[router]]` and `[[floating_ip]]`: interfaces (subnets with a gateway, one
//! per network, not overlapping, not held by another router), the external gateway, extra
//! routes, and that a router joins each floating IP's port to its network.

use std::collections::HashMap;

use super::subnet::{check_routes, host_address};
use super::{Plan, line, lookup};
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawGateway, RawTopology, S, Text, val};

/// Neutron's `max_routes` default.
const MAX_ROUTES: usize = 30;

pub(super) fn check_routers(raw: &RawTopology, plan: &mut Plan, report: &mut Report) {
    // Subnet → (router, line of the interface) for gateway IPs already taken.
    let mut held: HashMap<usize, (&str, usize)> = HashMap::new();
    for e in &raw.routers {
        let r = &e.raw;
        let res = Res::new(ResourceKind::Router, r.name.get_ref());
        let gateway = r
            .external_gateway
            .as_ref()
            .and_then(|gw| external_gateway(raw, plan, gw, &res, report));
        plan.router_gateway.push(gateway);
        let mut joined: Vec<usize> = Vec::new();
        for iface in r.interfaces.iter().flat_map(|i| i.get_ref()) {
            let Some(s) = lookup(
                raw,
                &plan.subnets,
                ResourceKind::Subnet,
                "interfaces:",
                iface,
                &res,
                report,
            ) else {
                continue;
            };
            if let Some(why) = interface_conflict(raw, plan, s, &joined, gateway, &held) {
                report.at(
                    &iface.span(),
                    Some(&res),
                    format!("interfaces: subnet {:?} {why}", iface.get_ref()),
                );
                continue;
            }
            held.insert(s, (r.name.get_ref(), line(report, &iface.span())));
            joined.push(s);
        }
        if let Some(routes) = &r.routes {
            let connected: Vec<usize> = joined
                .iter()
                .copied()
                .chain(gateway.and_then(|(_, s)| s))
                .collect();
            let own: Vec<_> = joined
                .iter()
                .filter_map(|&s| raw.subnets[s].raw.gateway_ip.as_ref().map(val))
                .chain(
                    r.external_gateway
                        .as_ref()
                        .and_then(|g| g.ip.as_ref())
                        .map(val),
                )
                .collect();
            check_routes(
                routes,
                "routes",
                MAX_ROUTES,
                &e.header,
                &res,
                report,
                |nexthop| {
                    if own.contains(&nexthop) {
                        Err("is one of the router's own addresses".into())
                    } else if connected
                        .iter()
                        .any(|&s| val(&raw.subnets[s].raw.cidr).contains(nexthop))
                    {
                        Ok(())
                    } else {
                        Err("is not in any subnet the router is connected to".into())
                    }
                },
            );
        }
        plan.router_interfaces.push(joined);
    }
}

/// Why subnet `s` cannot be one more interface of a router that already joins `joined`
/// and has `gateway` (external network, subnet).
fn interface_conflict(
    raw: &RawTopology,
    plan: &Plan,
    s: usize,
    joined: &[usize],
    gateway: Option<(usize, Option<usize>)>,
    held: &HashMap<usize, (&str, usize)>,
) -> Option<String> {
    let subnet = &raw.subnets[s].raw;
    let cidr = val(&subnet.cidr);
    let network = plan.subnet_network[s];
    let Some(gw) = &subnet.gateway_ip else {
        return Some("has no gateway_ip for the router to take".into());
    };
    if joined.contains(&s) {
        return Some("is listed twice".into());
    }
    if let Some((router, at)) = held.get(&s) {
        return Some(format!(
            "has gateway_ip {}, which router {router:?} already holds (line {at})",
            val(gw)
        ));
    }
    if let (Some(net), Some((gateway_net, _))) = (network, gateway)
        && net == gateway_net
    {
        return Some("is on the router's external gateway network".into());
    }
    if let Some(&other) = joined.iter().find(|&&o| plan.subnet_network[o] == network) {
        return Some(format!(
            "is on network {:?}, which subnet {:?} already joins to this router",
            subnet.network.get_ref(),
            raw.subnets[other].raw.name.get_ref()
        ));
    }
    let others = joined.iter().copied().chain(gateway.and_then(|(_, g)| g));
    for o in others {
        let other = &raw.subnets[o].raw;
        if val(&other.cidr).overlaps(&cidr) {
            return Some(format!(
                "({cidr}) overlaps subnet {:?} ({}) on the same router",
                other.name.get_ref(),
                val(&other.cidr)
            ));
        }
    }
    None
}

/// The external network and the subnet of the router's gateway address.
fn external_gateway(
    raw: &RawTopology,
    plan: &mut Plan,
    gw: &RawGateway,
    res: &Res,
    report: &mut Report,
) -> Option<(usize, Option<usize>)> {
    let n = lookup(
        raw,
        &plan.networks,
        ResourceKind::Network,
        "external_gateway.network",
        &gw.network,
        res,
        report,
    )?;
    if !is_external(raw, n) {
        report.at(
            &gw.network.span(),
            Some(res),
            format!(
                "external_gateway.network {:?} is not external = true",
                gw.network.get_ref()
            ),
        );
        return None;
    }
    address_subnet(
        raw,
        plan,
        n,
        gw.ip.as_ref(),
        "external_gateway.ip",
        &gw.network,
        res,
        report,
    )
    .ok()
    .map(|s| (n, s))
}

fn is_external(raw: &RawTopology, n: usize) -> bool {
    raw.networks[n]
        .raw
        .external
        .as_ref()
        .is_some_and(|e| *e.get_ref())
}

/// The subnet of network `n` holding `ip` (claimed), or without `ip` the first subnet,
/// which the address will be allocated from. `Ok(None)`: the network declares no subnet
/// and `ip` is taken as written (TOPOLOGY.md's own example has such an external network).
#[allow(clippy::too_many_arguments)]
fn address_subnet(
    raw: &RawTopology,
    plan: &mut Plan,
    n: usize,
    ip: Option<&S<Text<std::net::Ipv4Addr>>>,
    field: &str,
    network_field: &S<String>,
    res: &Res,
    report: &mut Report,
) -> Result<Option<usize>, ()> {
    let mut subnets = (0..raw.subnets.len())
        .filter(|&s| plan.subnet_network[s] == Some(n))
        .peekable();
    let has_subnets = subnets.peek().is_some();
    let Some(ip) = ip else {
        let first = subnets.next();
        if first.is_none() {
            report.at(
                &network_field.span(),
                Some(res),
                format!(
                    "network {:?} has no subnet to allocate {field} from",
                    network_field.get_ref()
                ),
            );
            return Err(());
        }
        return Ok(first);
    };
    let addr = val(ip);
    if !has_subnets {
        return Ok(None);
    }
    let Some(s) = subnets.find(|&s| val(&raw.subnets[s].raw.cidr).contains(addr)) else {
        report.at(
            &ip.span(),
            Some(res),
            format!(
                "{field} {addr} is in no subnet of network {:?}",
                network_field.get_ref()
            ),
        );
        return Err(());
    };
    host_address(val(&raw.subnets[s].raw.cidr), ip, field, res, report);
    plan.claimed[s].insert(addr);
    Ok(Some(s))
}

pub(super) fn check_floating_ips(raw: &RawTopology, plan: &mut Plan, report: &mut Report) {
    let mut bound: HashMap<usize, (std::net::Ipv4Addr, usize)> = HashMap::new();
    for e in &raw.floating_ips {
        let f = &e.raw;
        let ip = val(&f.ip);
        let res = Res::new(ResourceKind::FloatingIp, ip.to_string());
        let network = lookup(
            raw,
            &plan.networks,
            ResourceKind::Network,
            "network",
            &f.network,
            &res,
            report,
        );
        let subnet = network.and_then(|n| {
            if !is_external(raw, n) {
                report.at(
                    &f.network.span(),
                    Some(&res),
                    format!("network {:?} is not external = true", f.network.get_ref()),
                );
                return None;
            }
            address_subnet(raw, plan, n, Some(&f.ip), "ip", &f.network, &res, report)
                .ok()
                .map(|s| (n, s))
        });
        plan.fip_subnet.push(subnet);
        let binding = f.port.as_ref().and_then(|port| {
            let p = lookup(
                raw,
                &plan.ports,
                ResourceKind::Port,
                "port",
                port,
                &res,
                report,
            )?;
            let (n, _) = subnet?;
            let Some(port_subnet) = plan.port_subnet[p] else {
                report.at(
                    &port.span(),
                    Some(&res),
                    format!("port {:?} has no IPv4 address", port.get_ref()),
                );
                return None;
            };
            let router = (0..raw.routers.len()).find(|&r| {
                plan.router_gateway[r].is_some_and(|(gn, _)| gn == n)
                    && plan.router_interfaces[r].contains(&port_subnet)
            });
            let Some(router) = router else {
                report.at(
                    &port.span(),
                    Some(&res),
                    format!(
                        "port {:?}: no router joins its subnet {:?} to network {:?}",
                        port.get_ref(),
                        raw.subnets[port_subnet].raw.name.get_ref(),
                        f.network.get_ref()
                    ),
                );
                return None;
            };
            if let Some((other, at)) = bound.insert(p, (ip, line(report, &port.span()))) {
                report.at(
                    &port.span(),
                    Some(&res),
                    format!(
                        "port {:?} already has floating IP {other} (line {at})",
                        port.get_ref()
                    ),
                );
            }
            Some((p, router))
        });
        plan.fip_binding.push(binding);
    }
}
