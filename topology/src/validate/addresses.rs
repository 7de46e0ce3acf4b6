//! Rules across resources about addresses: no address written twice on one network
//! (gateways, fixed IPs, router gateway IPs, floating IPs), and allocation pools big enough
//! for the appliances and the ports and routers that take their address from them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use super::{Plan, line};
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawTopology, val};

pub(super) fn check(raw: &RawTopology, plan: &mut Plan, report: &mut Report) {
    used_once(raw, plan, report);
    capacity(raw, plan, report);
}

/// One claim on an address, in the order the file is read.
struct Claim {
    network: Option<usize>,
    ip: Ipv4Addr,
    span: Range<usize>,
    res: Res,
    field: &'static str,
}

fn used_once(raw: &RawTopology, plan: &Plan, report: &mut Report) {
    let mut claims: Vec<Claim> = Vec::new();
    for (s, e) in raw.subnets.iter().enumerate() {
        if let Some(gw) = &e.raw.gateway_ip {
            claims.push(Claim {
                network: plan.subnet_network[s],
                ip: val(gw),
                span: gw.span(),
                res: Res::new(ResourceKind::Subnet, e.raw.name.get_ref()),
                field: "gateway_ip",
            });
        }
    }
    for (r, e) in raw.routers.iter().enumerate() {
        if let Some(ip) = e.raw.external_gateway.as_ref().and_then(|g| g.ip.as_ref()) {
            claims.push(Claim {
                network: plan.router_gateway[r].map(|(n, _)| n),
                ip: val(ip),
                span: ip.span(),
                res: Res::new(ResourceKind::Router, e.raw.name.get_ref()),
                field: "external_gateway.ip",
            });
        }
    }
    for (p, e) in raw.ports.iter().enumerate() {
        if let Some(ip) = &e.raw.fixed_ip {
            claims.push(Claim {
                network: plan.port_network[p],
                ip: val(ip),
                span: ip.span(),
                res: Res::new(ResourceKind::Port, e.raw.name.get_ref()),
                field: "fixed_ip",
            });
        }
    }
    for (f, e) in raw.floating_ips.iter().enumerate() {
        let ip = val(&e.raw.ip);
        claims.push(Claim {
            network: plan.fip_subnet[f].map(|(n, _)| n),
            ip,
            span: e.raw.ip.span(),
            res: Res::new(ResourceKind::FloatingIp, ip.to_string()),
            field: "ip",
        });
    }
    let mut first: HashMap<(usize, Ipv4Addr), &Claim> = HashMap::new();
    for c in &claims {
        let Some(n) = c.network else { continue };
        match first.get(&(n, c.ip)) {
            Some(prev) => {
                let what = match (&prev.res.kind, &prev.res.name) {
                    (ResourceKind::FloatingIp, _) => "a floating IP".to_owned(),
                    (kind, Some(name)) => format!("{} of {kind} {name:?}", prev.field),
                    (kind, None) => format!("{} of a {kind}", prev.field),
                };
                report.at(
                    &c.span,
                    Some(&c.res),
                    format!(
                        "{} {} is already used as {what} (line {})",
                        c.field,
                        c.ip,
                        line(report, &prev.span)
                    ),
                );
            }
            None => {
                first.insert((n, c.ip), c);
            }
        }
    }
}

/// Walks the allocation order (appliances, then ports, then router gateways) counting
/// free pool addresses; the first consumer that finds none is reported.
fn capacity(raw: &RawTopology, plan: &Plan, report: &mut Report) {
    let mut free: Vec<u64> = plan
        .pools
        .iter()
        .zip(&plan.claimed)
        .map(|(pools, claimed)| {
            let size: u64 = pools.iter().map(|p| p.len()).sum();
            let taken = claimed
                .iter()
                .filter(|ip| pools.iter().any(|p| p.contains(**ip)))
                .count();
            size.saturating_sub(taken as u64)
        })
        .collect();
    for (s, e) in raw.subnets.iter().enumerate() {
        let sub = &e.raw;
        let dhcp = sub.enable_dhcp.as_ref().is_none_or(|d| *d.get_ref());
        if !dhcp || plan.subnet_network[s].is_none() {
            continue;
        }
        if free[s] < 2 {
            let span = match sub.allocation_pools.as_deref() {
                Some([first, ..]) => first.start.span(),
                _ => sub.cidr.span(),
            };
            let field = if sub.allocation_pools.is_some() {
                "allocation_pools"
            } else {
                "cidr"
            };
            report.at(
                &span,
                Some(&Res::new(ResourceKind::Subnet, sub.name.get_ref())),
                format!(
                    "{field} leave{} {} free address{}, but the DHCP and metadata appliances need 2",
                    if field == "cidr" { "s" } else { "" },
                    free[s],
                    if free[s] == 1 { "" } else { "es" }
                ),
            );
        }
        free[s] = free[s].saturating_sub(2);
    }
    let ports = raw.ports.iter().enumerate().filter_map(|(p, e)| {
        let s = plan.port_subnet[p]?;
        e.raw.fixed_ip.is_none().then(|| {
            (
                s,
                e.raw.network.span(),
                Res::new(ResourceKind::Port, e.raw.name.get_ref()),
                "network",
            )
        })
    });
    let routers = raw.routers.iter().enumerate().filter_map(|(r, e)| {
        let (_, s) = plan.router_gateway[r]?;
        let s = s?;
        let gw = e.raw.external_gateway.as_ref()?;
        gw.ip.is_none().then(|| {
            (
                s,
                gw.network.span(),
                Res::new(ResourceKind::Router, e.raw.name.get_ref()),
                "external_gateway.network",
            )
        })
    });
    for (s, span, res, field) in ports.chain(routers).collect::<Vec<_>>() {
        if free[s] == 0 {
            report.at(
                &span,
                Some(&res),
                format!(
                    "{field}: no free address left in the allocation pools of subnet {:?}",
                    raw.subnets[s].raw.name.get_ref()
                ),
            );
        }
        free[s] = free[s].saturating_sub(1);
    }
}
