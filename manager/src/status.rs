//! `nanovnf status`: what runs now, from the state database and the live processes, as a
//! table or as the JSON object TOPOLOGY.md promises.

use crate::apply::record_alive;
use crate::plan::{ApplianceKind, Plan};
use crate::state::{ApplianceRecord, State};
use nanovnf_qemu::format_mac;
use serde::Serialize;

#[derive(Serialize, Debug)]
pub struct Status {
    /// The topology file last applied.
    pub file: Option<String>,
    pub networks: Vec<NetworkStatus>,
    pub routers: Vec<RouterStatus>,
    pub ports: Vec<PortStatus>,
}

#[derive(Serialize, Debug)]
pub struct NetworkStatus {
    pub name: String,
    pub bridge: String,
    pub mtu: u16,
    pub segment: String,
    pub external: bool,
    pub appliances: Vec<ApplianceStatus>,
}

#[derive(Serialize, Debug)]
pub struct ApplianceStatus {
    pub kind: ApplianceKind,
    /// `booting`, `ready`, `failed`, `restarting`; `unavailable` when this build has no
    /// image for the kind.
    pub state: String,
    pub pid: Option<u32>,
    pub mac: String,
    pub ips: Vec<String>,
    pub generation: Option<u64>,
    pub restarts: u32,
    pub accel: Option<String>,
    pub taps: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct RouterStatus {
    pub name: String,
    pub state: String,
    pub pid: Option<u32>,
    pub interfaces: Vec<RouterInterface>,
}

#[derive(Serialize, Debug)]
pub struct RouterInterface {
    pub network: String,
    pub ip: String,
    pub mac: String,
}

#[derive(Serialize, Debug)]
pub struct PortStatus {
    pub name: String,
    pub network: String,
    pub mac: String,
    pub ip: Option<String>,
    pub tap: Option<String>,
}

/// A recorded appliance's state now: what the record says, unless its process is gone.
fn live_state(record: &ApplianceRecord) -> String {
    match record.state.as_str() {
        "ready" | "booting" if !record_alive(record) => "failed".into(),
        other => other.into(),
    }
}

pub fn collect(state: &State) -> anyhow::Result<Status> {
    let (file, plan) = match state.plan()? {
        Some((file, plan)) => (Some(file), plan),
        None => (None, Plan::default()),
    };
    let records = state.appliances()?;
    let appliance = |id: &str| -> Option<ApplianceStatus> {
        let a = plan.appliance(id)?;
        let record = records.iter().find(|r| r.id == id);
        Some(ApplianceStatus {
            kind: a.kind,
            state: match (record, &a.config) {
                (_, None) => "unavailable".into(),
                (Some(r), _) => live_state(r),
                (None, Some(_)) => "failed".into(),
            },
            pid: record
                .and_then(|r| r.pid)
                .filter(|_| record.is_some_and(record_alive)),
            mac: a
                .nics
                .first()
                .map(|n| format_mac(n.mac))
                .unwrap_or_default(),
            ips: a.nics.iter().flat_map(|n| n.ips.clone()).collect(),
            generation: record.map(|r| r.generation),
            restarts: record.map_or(0, |r| r.restarts),
            accel: record.map(|r| r.accel.clone()),
            taps: a.nics.iter().map(|n| n.tap.clone()).collect(),
        })
    };
    let networks = plan
        .networks
        .iter()
        .map(|n| NetworkStatus {
            name: n.name.clone(),
            bridge: n.bridge.clone(),
            mtu: n.mtu,
            segment: n.segment.clone(),
            external: n.external,
            appliances: plan
                .appliances
                .iter()
                .filter(|a| a.owner == n.name && a.kind != ApplianceKind::Router)
                .filter_map(|a| appliance(&a.id))
                .collect(),
        })
        .collect();
    let routers = plan
        .routers
        .iter()
        .filter_map(|r| {
            let a = plan.appliance(&r.appliance)?;
            let s = appliance(&r.appliance)?;
            Some(RouterStatus {
                name: r.name.clone(),
                state: s.state,
                pid: s.pid,
                interfaces: a
                    .nics
                    .iter()
                    .map(|n| RouterInterface {
                        network: n.network.clone(),
                        ip: n.ips.first().cloned().unwrap_or_default(),
                        mac: format_mac(n.mac),
                    })
                    .collect(),
            })
        })
        .collect();
    let ports = plan
        .ports
        .iter()
        .map(|p| PortStatus {
            name: p.name.clone(),
            network: p.network.clone(),
            mac: p.mac.clone(),
            ip: p.ip.clone(),
            tap: p.tap.clone(),
        })
        .collect();
    Ok(Status {
        file,
        networks,
        routers,
        ports,
    })
}

/// The human-readable form.
pub fn table(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match &status.file {
        Some(file) => {
            let _ = writeln!(out, "topology: {file}");
        }
        None => {
            out.push_str("nothing applied (run `nanovnf up FILE`)\n");
            return out;
        }
    }
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:<12} {:<8} {:>8} {:>4} {:<18} ADDRESSES",
        "NETWORK", "KIND", "STATE", "ACCEL", "PID", "GEN", "MAC"
    );
    let mut row = |owner: &str, a: &ApplianceStatus| {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<12} {:<8} {:>8} {:>4} {:<18} {}",
            owner,
            a.kind.as_str(),
            a.state,
            a.accel.as_deref().unwrap_or("-"),
            a.pid.map_or("-".into(), |p| p.to_string()),
            a.generation.map_or("-".into(), |g| g.to_string()),
            a.mac,
            a.ips.join(" ")
        );
    };
    for n in &status.networks {
        for a in &n.appliances {
            row(&n.name, a);
        }
    }
    for r in &status.routers {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<12} {:<8} {:>8} {:>4} {:<18} {}",
            r.name,
            "router",
            r.state,
            "-",
            r.pid.map_or("-".into(), |p| p.to_string()),
            "-",
            r.interfaces.first().map_or("", |i| i.mac.as_str()),
            r.interfaces
                .iter()
                .map(|i| i.ip.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:<6} SEGMENT",
        "NETWORK", "BRIDGE", "MTU"
    );
    for n in &status.networks {
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<6} {}",
            n.name,
            n.bridge,
            n.mtu,
            if n.external {
                format!("{} external", n.segment)
            } else {
                n.segment.clone()
            }
        );
    }
    if !status.ports.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<18} {:<16} TAP",
            "PORT", "NETWORK", "MAC", "IP"
        );
        for p in &status.ports {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<18} {:<16} {}",
                p.name,
                p.network,
                p.mac,
                p.ip.as_deref().unwrap_or("-"),
                p.tap.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
