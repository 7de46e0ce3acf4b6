//! Allocation order: the addresses the file leaves open, taken from each subnet's pools
//! lowest first, skipping written addresses — per DHCP subnet the DHCP then the metadata
//! appliance, then ports, then router gateways, each in file order.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::model::Pool;
use crate::raw::{RawSubnet, RawTopology};
use crate::validate::Plan;

/// Hands out a subnet's free pool addresses in order.
struct Allocator {
    pools: Vec<Pool>,
    claimed: BTreeSet<Ipv4Addr>,
    /// Next candidate: (pool index, address as u32).
    next: Option<(usize, u32)>,
}

impl Allocator {
    fn new(pools: Vec<Pool>, claimed: BTreeSet<Ipv4Addr>) -> Self {
        let next = pools.first().map(|p| (0, u32::from(p.start)));
        Allocator {
            pools,
            claimed,
            next,
        }
    }

    fn take(&mut self) -> Option<Ipv4Addr> {
        loop {
            let (i, addr) = self.next?;
            let pool = self.pools.get(i)?;
            self.next = if addr < u32::from(pool.end) {
                Some((i, addr + 1))
            } else {
                self.pools.get(i + 1).map(|p| (i + 1, u32::from(p.start)))
            };
            let ip = Ipv4Addr::from(addr);
            if self.claimed.insert(ip) {
                return Some(ip);
            }
        }
    }
}

/// Addresses taken from pools, indexed like the raw resources.
#[derive(Default)]
pub(crate) struct Allocation {
    pub dhcp: HashMap<usize, (Ipv4Addr, Ipv4Addr)>,
    pub ports: HashMap<usize, Ipv4Addr>,
    pub routers: HashMap<usize, Ipv4Addr>,
}

pub(crate) fn allocate(raw: &RawTopology, plan: &Plan) -> Allocation {
    let mut pools: Vec<Allocator> = plan
        .pools
        .iter()
        .zip(&plan.claimed)
        .map(|(p, c)| Allocator::new(p.clone(), c.clone()))
        .collect();
    let mut out = Allocation::default();
    for (s, e) in raw.subnets.iter().enumerate() {
        if is_dhcp(&e.raw)
            && let (Some(dhcp), Some(metadata)) = (pools[s].take(), pools[s].take())
        {
            out.dhcp.insert(s, (dhcp, metadata));
        }
    }
    for (p, e) in raw.ports.iter().enumerate() {
        if e.raw.fixed_ip.is_none()
            && let Some(s) = plan.port_subnet[p]
            && let Some(ip) = pools[s].take()
        {
            out.ports.insert(p, ip);
        }
    }
    for (r, e) in raw.routers.iter().enumerate() {
        let explicit = e
            .raw
            .external_gateway
            .as_ref()
            .is_some_and(|g| g.ip.is_some());
        if !explicit
            && let Some((_, Some(s))) = plan.router_gateway[r]
            && let Some(ip) = pools[s].take()
        {
            out.routers.insert(r, ip);
        }
    }
    out
}

pub(crate) fn is_dhcp(s: &RawSubnet) -> bool {
    s.enable_dhcp.as_ref().is_none_or(|d| *d.get_ref())
}
