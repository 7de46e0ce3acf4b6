//! Checks a raw topology against TOPOLOGY.md's rules (and Neutron's where it is silent),
//! recording every problem, and builds the `Plan` that resolution follows: which subnet
//! each address lives in, every subnet's pools, and which router serves each floating IP.

mod addresses;
mod network;
mod port;
pub use port::MAX_USER_DATA;
mod router;
mod subnet;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

use crate::model::Pool;
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{Entry, RawTopology, S};

/// Decisions made while validating, indexed like the raw resources. Only meaningful when
/// validation found no problem.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Name → index of the first resource of that name.
    pub networks: HashMap<String, usize>,
    pub subnets: HashMap<String, usize>,
    pub ports: HashMap<String, usize>,
    /// Per subnet: index of its network.
    pub subnet_network: Vec<Option<usize>>,
    /// Per subnet: explicit pools, or the whole CIDR minus network, broadcast and gateway.
    pub pools: Vec<Vec<Pool>>,
    /// Per subnet: addresses written in the file (gateway, fixed IPs, floating IPs, router
    /// gateway IPs) that allocation must skip.
    pub claimed: Vec<BTreeSet<Ipv4Addr>>,
    /// Per port: its network and the subnet its address is in (or allocated from).
    pub port_network: Vec<Option<usize>>,
    pub port_subnet: Vec<Option<usize>>,
    /// Per port: the instance's user data, read from `user_data_file` if need be.
    pub user_data: Vec<Option<Vec<u8>>>,
    /// Per router: the subnets of its interfaces.
    pub router_interfaces: Vec<Vec<usize>>,
    /// Per router: the external network and the subnet its gateway IP is in (`None` if
    /// the network declares no subnet).
    pub router_gateway: Vec<Option<(usize, Option<usize>)>>,
    /// Per floating IP: its network, its subnet, and the port and router it is bound to.
    pub fip_subnet: Vec<Option<(usize, Option<usize>)>>,
    pub fip_binding: Vec<Option<(usize, usize)>>,
}

/// Validates `raw`; problems go to `report`. `base_dir` is where `user_data_file` paths
/// start.
pub(crate) fn check(raw: &RawTopology, base_dir: &Path, report: &mut Report) -> Plan {
    let mut plan = Plan {
        networks: unique_names(&raw.networks, ResourceKind::Network, |n| &n.name, report),
        subnets: unique_names(&raw.subnets, ResourceKind::Subnet, |s| &s.name, report),
        ports: unique_names(&raw.ports, ResourceKind::Port, |p| &p.name, report),
        ..Plan::default()
    };
    unique_names(&raw.routers, ResourceKind::Router, |r| &r.name, report);
    network::check_host(raw, report);
    network::check_dns(raw, report);
    network::check(raw, report);
    subnet::check(raw, &mut plan, report);
    port::check(raw, &mut plan, base_dir, report);
    router::check_routers(raw, &mut plan, report);
    router::check_floating_ips(raw, &mut plan, report);
    addresses::check(raw, &mut plan, report);
    plan
}

/// Resource names: non-empty, at most 255 characters (Neutron's limit), unique per kind.
fn unique_names<T>(
    entries: &[Entry<T>],
    kind: ResourceKind,
    name: impl Fn(&T) -> &S<String>,
    report: &mut Report,
) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let n = name(&e.raw);
        let res = Res::new(kind, n.get_ref());
        if n.get_ref().is_empty() || n.get_ref().len() > 255 {
            report.at(
                &n.span(),
                Some(&res),
                "name must be 1 to 255 characters long",
            );
        }
        if let Some(&first) = seen.get(n.get_ref()) {
            let line = report.line_of(name(&entries[first].raw).span().start);
            report.at(
                &n.span(),
                Some(&res),
                format!(
                    "name {:?} is already used by the {kind} on line {line}",
                    n.get_ref()
                ),
            );
        } else {
            seen.insert(n.get_ref().clone(), i);
        }
    }
    seen
}

/// Looks up a reference; reports it unless the target was declared but is broken (its own
/// problem is already reported).
fn lookup(
    raw: &RawTopology,
    names: &HashMap<String, usize>,
    kind: ResourceKind,
    field: &str,
    target: &S<String>,
    res: &Res,
    report: &mut Report,
) -> Option<usize> {
    let found = names.get(target.get_ref()).copied();
    if found.is_none() && !raw.is_broken(kind, target.get_ref()) {
        report.at(
            &target.span(),
            Some(res),
            format!("{field} {:?} is not a declared {kind}", target.get_ref()),
        );
    }
    found
}

/// An integer field checked against an inclusive range.
fn in_range(
    value: &S<i64>,
    field: &str,
    min: i64,
    max: i64,
    res: &Res,
    report: &mut Report,
) -> Option<i64> {
    let v = *value.get_ref();
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        report.at(
            &value.span(),
            Some(res),
            format!("{field} {v} is not between {min} and {max}"),
        );
        None
    }
}

/// The line of a span, for "already used on line N" messages.
fn line(report: &Report, span: &Range<usize>) -> usize {
    report.line_of(span.start)
}
