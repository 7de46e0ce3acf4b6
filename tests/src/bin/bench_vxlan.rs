//! `bench-vxlan`: iperf3 TCP throughput and UDP 64-byte packets/s between a local instance
//! and a remote instance across a VXLAN overlay, through (a) the VXLAN gateway appliance
//! (tenant bridge ↔ underlay bridge; the remote end is Linux's own vxlan), (b) the wire
//! appliance (the I/O floor, no encapsulation; with offloads it carries superframes whole,
//! without them every frame pays QEMU's per-frame cost, as the gateway's underlay frames
//! do) and (c) Linux vxlan devices on both ends
//! with no VM. Appliances under TCG, and KVM with `--accel tcg,kvm`. One table;
//! `--json PATH|-`.
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-vxlan -- \
//!     [--targets gateway,wire,wire-no-offloads,linux-vxlan] [--accel tcg,kvm] [--seconds 5] [--json PATH|-]
//! ```

use std::process::ExitCode;

use anyhow::bail;
use nanovnf_qemu::{Accel, Vm};
use nanovnf_schema::vxlan::{DEFAULT_AGEING_SECS, DEFAULT_FDB_CAPACITY, VxlanRole};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use nanovnf_tests::appliance::appliance_mac;
use nanovnf_tests::bench;
use nanovnf_tests::forward::{self, Iperf, boot_forwarder, iperf3, wire_config};
use nanovnf_tests::{World, process_cpu_time};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::Instant;

const USAGE: &str =
    "usage: bench-vxlan [--targets NAME,...] [--accel tcg,kvm] [--seconds N] [--json PATH|-]";
const KNOWN_TARGETS: &[&str] = &["gateway", "wire", "wire-no-offloads", "linux-vxlan"];
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 11);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 20);
const LOCAL_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const REMOTE_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const OVERLAY_MTU: u16 = 1450;

struct Row {
    case: String,
    tcp: anyhow::Result<Iperf>,
    udp: anyhow::Result<Iperf>,
    qemu_cpu: Option<f64>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-vxlan: some runs failed (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-vxlan: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut targets: Vec<String> = KNOWN_TARGETS.iter().map(|s| (*s).to_owned()).collect();
    let mut accels = vec![Accel::Tcg];
    let mut seconds = 5;
    let mut json_path = None;
    for (flag, value) in bench::flags(std::env::args().skip(1), USAGE)? {
        match flag.as_str() {
            "--targets" => targets = bench::targets(&value, KNOWN_TARGETS)?,
            "--accel" => accels = forward::accels(&value)?,
            "--seconds" => seconds = bench::positive(&flag, &value)?,
            "--json" => json_path = Some(value),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    nanovnf_tests::require_root_and_tools(&["ip", "iperf3"]).map_err(anyhow::Error::msg)?;
    let mut rows = Vec::new();
    for t in &targets {
        let runs: Vec<Option<Accel>> = if t == "linux-vxlan" {
            vec![None]
        } else {
            accels.iter().copied().map(Some).collect()
        };
        for accel in runs {
            let case = match accel {
                Some(Accel::Kvm) => format!("{t} KVM"),
                Some(_) => format!("{t} TCG"),
                None => t.clone(),
            };
            eprintln!("bench-vxlan: {case} ...");
            let row = measure(t, accel, seconds).unwrap_or_else(|e| Row {
                case: String::new(),
                tcp: Err(anyhow::anyhow!("{e:#}")),
                udp: Err(anyhow::anyhow!("setup failed")),
                qemu_cpu: None,
            });
            rows.push(Row { case, ..row });
        }
    }
    println!();
    println!(
        "| {:<20} | {:>10} | {:>24} | {:>9} |",
        "path", "TCP Gbit/s", "UDP 64 B packets/s", "QEMU CPU"
    );
    println!("|{:-<22}|{:->12}|{:->26}|{:->11}|", "", "", "", "");
    for r in &rows {
        let (tcp, udp) = (forward::gbits_cell(&r.tcp), forward::packets_cell(&r.udp));
        let cpu = r
            .qemu_cpu
            .map_or("–".into(), |c| format!("{:.0}%", c * 100.0));
        println!(
            "| {:<20} | {:>10} | {:>24} | {:>9} |",
            r.case, tcp, udp, cpu
        );
    }
    for r in &rows {
        for (what, res) in [("TCP", &r.tcp), ("UDP", &r.udp)] {
            if let Err(e) = res {
                println!("{} {what}: {e:#}", r.case);
            }
        }
    }
    if let Some(path) = json_path {
        let report = json!({
            "seconds": seconds,
            "rows": rows.iter().map(|r| json!({"case": r.case, "tcp": forward::iperf_json(&r.tcp),
                "udp_64": forward::iperf_json(&r.udp), "qemu_cpu_per_second": r.qemu_cpu}))
                .collect::<Vec<Value>>(),
        });
        if path == "-" {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            bench::write_json(std::path::Path::new(&path), &report)?;
        }
    }
    Ok(rows.iter().all(|r| r.tcp.is_ok() && r.udp.is_ok()))
}

/// A Linux vxlan device `vx0` in `ns` over `dev` (VNI 1001, port 4789) holding `inner`.
fn linux_vxlan(
    world: &World,
    ns: &str,
    dev: &str,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    inner: Ipv4Addr,
) -> anyhow::Result<()> {
    let (l, r) = (local.to_string(), remote.to_string());
    world.ip(
        ns,
        &[
            "link", "add", "vx0", "type", "vxlan", "id", "1001", "local", &l, "remote", &r,
            "dstport", "4789", "dev", dev,
        ],
    )?;
    world.ip(
        ns,
        &["link", "set", "vx0", "mtu", &OVERLAY_MTU.to_string(), "up"],
    )?;
    world.ip(ns, &["addr", "add", &format!("{inner}/24"), "dev", "vx0"])?;
    Ok(())
}

fn measure(target: &str, accel: Option<Accel>, seconds: usize) -> anyhow::Result<Row> {
    let mut world = World::new(&format!("bvx_{}", target.replace('-', "_")))?;
    let underlay = world.add_bridge("ul", 1500)?;
    let remote_host = world.add_instance(
        "rh",
        &underlay,
        Some(&format!("{REMOTE_VTEP}/24")),
        None,
        1500,
    )?;
    let mut vm: Option<Vm> = None;
    let local_ns;
    match target {
        "linux-vxlan" => {
            let lh = world.add_instance(
                "lh",
                &underlay,
                Some(&format!("{LOCAL_VTEP}/24")),
                None,
                1500,
            )?;
            linux_vxlan(&world, &lh.ns, &lh.ifname, LOCAL_VTEP, REMOTE_VTEP, LOCAL)?;
            linux_vxlan(
                &world,
                &remote_host.ns,
                &remote_host.ifname,
                REMOTE_VTEP,
                LOCAL_VTEP,
                REMOTE,
            )?;
            local_ns = lh.ns.clone();
        }
        "wire" | "wire-no-offloads" => {
            // No overlay: the remote instance's address sits on the underlay side.
            world.ip(
                &remote_host.ns,
                &[
                    "addr",
                    "add",
                    &format!("{REMOTE}/24"),
                    "dev",
                    &remote_host.ifname,
                ],
            )?;
            let tenant = world.add_bridge("tn", OVERLAY_MTU)?;
            let local = world.add_instance(
                "li",
                &tenant,
                Some(&format!("{LOCAL}/24")),
                None,
                OVERLAY_MTU,
            )?;
            let tt = world.add_tap("tt", &tenant, OVERLAY_MTU)?;
            let tu = world.add_tap("tu", &underlay, 1500)?;
            let config = wire_config(&world, "wire");
            vm = Some(boot_forwarder(
                &world,
                "wire",
                "wire",
                &config,
                &[tt, tu],
                target == "wire",
                accel.unwrap_or(Accel::Tcg),
            )?);
            local_ns = local.ns.clone();
        }
        _ => {
            linux_vxlan(
                &world,
                &remote_host.ns,
                &remote_host.ifname,
                REMOTE_VTEP,
                LOCAL_VTEP,
                REMOTE,
            )?;
            let tenant = world.add_bridge("tn", OVERLAY_MTU)?;
            let local = world.add_instance(
                "li",
                &tenant,
                Some(&format!("{LOCAL}/24")),
                None,
                OVERLAY_MTU,
            )?;
            let tt = world.add_tap("tt", &tenant, OVERLAY_MTU)?;
            let tu = world.add_tap("tu", &underlay, 1500)?;
            let config = BootConfig {
                generation: 1,
                name: "vxlan".into(),
                log_level: LogLevel::Info,
                nics: vec![
                    NicConfig {
                        mac: appliance_mac(&world, 0),
                        addresses: Vec::new(),
                        mtu: OVERLAY_MTU,
                    },
                    NicConfig {
                        mac: appliance_mac(&world, 1),
                        addresses: vec![Ipv4Cidr::new(LOCAL_VTEP, 24)],
                        mtu: 1500,
                    },
                ],
                role: Role::Vxlan(VxlanRole {
                    vni: 1001,
                    udp_port: 4789,
                    remote_vteps: vec![REMOTE_VTEP],
                    underlay_gateway: None,
                    static_entries: Vec::new(),
                    arp_responder: false,
                    ageing_secs: DEFAULT_AGEING_SECS,
                    fdb_capacity: DEFAULT_FDB_CAPACITY,
                    ttl: 64,
                    df: false,
                }),
            };
            vm = Some(boot_forwarder(
                &world,
                "vxlan",
                "vxlan",
                &config,
                &[tt, tu],
                true,
                accel.unwrap_or(Accel::Tcg),
            )?);
            local_ns = local.ns.clone();
        }
    }
    let probe = world.exec(
        &local_ns,
        &["ping", "-c", "3", "-W", "3", &REMOTE.to_string()],
    )?;
    if !probe.status.success() {
        bail!("no ping {LOCAL} -> {REMOTE} before measuring");
    }
    let secs = seconds.to_string();
    let cpu_before = vm.as_ref().and_then(|v| process_cpu_time(v.pid()));
    let t0 = Instant::now();
    let server_ns = remote_host.ns.clone();
    let tcp = iperf3(&mut world, &server_ns, &local_ns, REMOTE, &["-t", &secs]);
    let qemu_cpu = match (
        vm.as_ref().and_then(|v| process_cpu_time(v.pid())),
        cpu_before,
    ) {
        (Some(a), Some(b)) => Some((a - b).as_secs_f64() / t0.elapsed().as_secs_f64()),
        _ => None,
    };
    let udp = iperf3(
        &mut world,
        &server_ns,
        &local_ns,
        REMOTE,
        &["-u", "-l", "64", "-b", "0", "-t", &secs],
    );
    Ok(Row {
        case: String::new(),
        tcp,
        udp,
        qemu_cpu,
    })
}
