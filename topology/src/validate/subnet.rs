//! Rules for `[[subnet]]`: its network, gateway, allocation pools, DNS settings, lease time
//! and host routes, and that the subnets of one network do not overlap.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::Range;

use super::{Plan, in_range, line, lookup};
use crate::model::Pool;
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawRoute, RawSubnet, RawTopology, val};
use crate::types::{Ipv4Cidr, check_dns_domain};

/// Neutron's `max_dns_nameservers` default.
const MAX_DNS_NAMESERVERS: usize = 5;
/// Neutron's `max_subnet_host_routes` default.
const MAX_HOST_ROUTES: usize = 20;

pub(super) fn check(raw: &RawTopology, plan: &mut Plan, report: &mut Report) {
    for (i, e) in raw.subnets.iter().enumerate() {
        let s = &e.raw;
        let res = Res::new(ResourceKind::Subnet, s.name.get_ref());
        let network = lookup(
            raw,
            &plan.networks,
            ResourceKind::Network,
            "network",
            &s.network,
            &res,
            report,
        );
        plan.subnet_network.push(network);
        let cidr = val(&s.cidr);
        let gateway = s.gateway_ip.as_ref().map(val);
        if let Some(gw) = &s.gateway_ip {
            host_address(cidr, gw, "gateway_ip", &res, report);
        }
        let pools = match &s.allocation_pools {
            Some(pools) => explicit_pools(cidr, gateway, s, pools, &res, report),
            None => default_pools(cidr, gateway),
        };
        plan.pools.push(pools);
        plan.claimed
            .push(gateway.into_iter().collect::<BTreeSet<_>>());
        check_dns(s, &res, report);
        if let Some(lease) = &s.lease_seconds
            && *lease.get_ref() != -1
        {
            in_range(
                lease,
                "lease_seconds",
                1,
                i64::from(u32::MAX - 1),
                &res,
                report,
            );
        }
        if let Some(routes) = &s.host_routes {
            check_routes(
                routes,
                "host_routes",
                MAX_HOST_ROUTES,
                &e.header,
                &res,
                report,
                |nexthop| {
                    cidr.contains(nexthop)
                        .then_some(())
                        .ok_or_else(|| format!("is outside cidr {cidr}"))
                },
            );
        }
        // Overlaps with earlier subnets of the same network (Neutron refuses them).
        for (j, other) in raw.subnets[..i].iter().enumerate() {
            let other_cidr = val(&other.raw.cidr);
            if network.is_some() && plan.subnet_network[j] == network && other_cidr.overlaps(&cidr)
            {
                report.at(
                    &s.cidr.span(),
                    Some(&res),
                    format!(
                        "cidr {cidr} overlaps cidr {other_cidr} of subnet {:?} (line {}) on network {:?}",
                        other.raw.name.get_ref(),
                        line(report, &other.raw.cidr.span()),
                        s.network.get_ref()
                    ),
                );
            }
        }
    }
}

/// An address that a host holds in `cidr`: inside it, not its network or broadcast address.
pub(super) fn host_address(
    cidr: Ipv4Cidr,
    addr: &crate::raw::S<crate::raw::Text<Ipv4Addr>>,
    field: &str,
    res: &Res,
    report: &mut Report,
) -> bool {
    let ip = val(addr);
    let why = if !cidr.contains(ip) {
        format!("is outside cidr {cidr}")
    } else if ip == cidr.network() && cidr.prefix_len() <= 30 {
        format!("is the network address of {cidr}")
    } else if cidr.is_network_or_broadcast(ip) {
        format!("is the broadcast address of {cidr}")
    } else {
        return true;
    };
    report.at(&addr.span(), Some(res), format!("{field} {ip} {why}"));
    false
}

/// The whole CIDR minus network, broadcast and gateway addresses (Neutron's default).
pub(crate) fn default_pools(cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Vec<Pool> {
    let (first, last) = cidr.host_range();
    let whole = Pool {
        start: first,
        end: last,
    };
    match gateway {
        Some(gw) if whole.contains(gw) => {
            let gw = u32::from(gw);
            let below = (gw > u32::from(first)).then(|| Pool {
                start: first,
                end: Ipv4Addr::from(gw - 1),
            });
            let above = (gw < u32::from(last)).then(|| Pool {
                start: Ipv4Addr::from(gw + 1),
                end: last,
            });
            below.into_iter().chain(above).collect()
        }
        _ => vec![whole],
    }
}

/// Explicit pools: ordered, inside the subnet's host range, disjoint, clear of the gateway.
fn explicit_pools(
    cidr: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    s: &RawSubnet,
    pools: &[crate::raw::RawPool],
    res: &Res,
    report: &mut Report,
) -> Vec<Pool> {
    let mut out: Vec<Pool> = Vec::new();
    for p in pools {
        let ok_start = host_address(cidr, &p.start, "allocation_pools.start", res, report);
        let ok_end = host_address(cidr, &p.end, "allocation_pools.end", res, report);
        let pool = Pool {
            start: val(&p.start),
            end: val(&p.end),
        };
        if pool.start > pool.end {
            report.at(
                &p.start.span(),
                Some(res),
                format!(
                    "allocation_pools.start {} is after end {}",
                    pool.start, pool.end
                ),
            );
            continue;
        }
        if !(ok_start && ok_end) {
            continue;
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.start <= pool.end && pool.start <= o.end)
        {
            report.at(
                &p.start.span(),
                Some(res),
                format!(
                    "allocation_pools: pool {}-{} overlaps pool {}-{}",
                    pool.start, pool.end, other.start, other.end
                ),
            );
            continue;
        }
        if let (Some(gw), Some(gw_field)) = (gateway, &s.gateway_ip)
            && pool.contains(gw)
        {
            report.at(
                &gw_field.span(),
                Some(res),
                format!(
                    "gateway_ip {gw} is inside allocation pool {}-{}",
                    pool.start, pool.end
                ),
            );
        }
        out.push(pool);
    }
    out
}

fn check_dns(s: &RawSubnet, res: &Res, report: &mut Report) {
    if let Some(servers) = &s.dns_nameservers {
        let list = servers.get_ref();
        if list.len() > MAX_DNS_NAMESERVERS {
            report.at(
                &servers.span(),
                Some(res),
                format!(
                    "dns_nameservers lists {} servers, at most {MAX_DNS_NAMESERVERS} are allowed",
                    list.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for server in list {
            let ip = val(server);
            if !seen.insert(ip) {
                report.at(
                    &server.span(),
                    Some(res),
                    format!("dns_nameservers lists {ip} twice"),
                );
            } else if ip.is_unspecified() && list.len() > 1 {
                report.at(
                    &server.span(),
                    Some(res),
                    "dns_nameservers: 0.0.0.0 (no DNS servers) must be the only entry",
                );
            } else if ip.is_broadcast() || ip.is_multicast() {
                report.at(
                    &server.span(),
                    Some(res),
                    format!("dns_nameservers: {ip} is not a unicast address"),
                );
            }
        }
    }
    if let Some(domain) = &s.dns_domain
        && let Err(why) = check_dns_domain(domain.get_ref())
    {
        report.at(&domain.span(), Some(res), format!("dns_domain {why}"));
    }
}

/// Routes (a subnet's `host_routes`, a router's `routes`): at most `max`, no route listed
/// twice, each nexthop accepted by `nexthop_ok`.
pub(super) fn check_routes(
    routes: &[RawRoute],
    field: &str,
    max: usize,
    header: &Range<usize>,
    res: &Res,
    report: &mut Report,
    nexthop_ok: impl Fn(Ipv4Addr) -> Result<(), String>,
) {
    if routes.len() > max {
        let span = routes
            .first()
            .map_or_else(|| header.clone(), |r| r.destination.span());
        report.at(
            &span,
            Some(res),
            format!(
                "{field} lists {} routes, at most {max} are allowed",
                routes.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for r in routes {
        let (dest, nexthop) = (val(&r.destination), val(&r.nexthop));
        if !seen.insert((dest, nexthop)) {
            report.at(
                &r.destination.span(),
                Some(res),
                format!("{field}: route to {dest} via {nexthop} is listed twice"),
            );
        }
        if let Err(why) = nexthop_ok(nexthop) {
            report.at(
                &r.nexthop.span(),
                Some(res),
                format!("{field}.nexthop {nexthop} {why}"),
            );
        }
    }
}
