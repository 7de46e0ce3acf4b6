//! `bench-vxlan`: iperf3 TCP throughput and UDP 64-byte packets/s between a local instance
//! and a remote instance across a VXLAN overlay, through (a) the VXLAN gateway appliance
//! (tenant bridge ↔ underlay bridge; the remote end is Linux's own vxlan), (b) the wire
//! appliance (the I/O floor, no encapsulation; with offloads it carries superframes whole,
//! without them every frame pays QEMU's per-frame cost, as the gateway's underlay frames
//! do) and (c) Linux vxlan devices on both ends with no VM. The gateway runs with offloads
//! (tenant superframes segmented inside it: QEMU 7.2 has no UDP-tunnel segmentation
//! offload for the underlay) and without. `--underlay-mtu 1500,9000` repeats every case
//! over a jumbo underlay (overlay MTU = underlay − 50). Cases without offloads run twice
//! (`--receive thread,inline`): with both instances receiving in their own NAPI threads,
//! as the hosts at either end of a real overlay do, and with Linux's veth default, where
//! the receiving instance's whole stack runs inside the QEMU thread that wrote the frame.
//! Appliances under TCG, and KVM with `--accel tcg,kvm`. One table; `--json PATH|-`.
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-vxlan -- \
//!     [--targets gateway,gateway-no-offloads,wire,wire-no-offloads,linux-vxlan] \
//!     [--accel tcg,kvm] [--underlay-mtu 1500,9000] [--receive thread,inline] \
//!     [--seconds 5] [--repeat 3] [--json PATH|-]
//! ```

use std::process::ExitCode;

use anyhow::bail;
use nanovnf_qemu::{Accel, Vm};
use nanovnf_schema::vxlan::{DEFAULT_AGEING_SECS, DEFAULT_FDB_CAPACITY, VxlanRole};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use nanovnf_tests::appliance::appliance_mac;
use nanovnf_tests::bench;
use nanovnf_tests::forward::{self, Iperf, Receive, boot_forwarder, iperf3_median, wire_config};
use nanovnf_tests::{World, process_cpu_time};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::Instant;

const USAGE: &str = "usage: bench-vxlan [--targets NAME,...] [--accel tcg,kvm] \
                     [--underlay-mtu 1500,9000] [--receive thread,inline] [--seconds N] \
                     [--repeat N] [--json PATH|-]";
const KNOWN_TARGETS: &[&str] = &[
    "gateway",
    "gateway-no-offloads",
    "wire",
    "wire-no-offloads",
    "linux-vxlan",
];
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 11);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 20);
const LOCAL_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const REMOTE_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
/// VXLAN's outer headers: the overlay MTU is the underlay's less this.
const VXLAN_OVERHEAD: u16 = 50;

struct Row {
    case: String,
    underlay_mtu: u16,
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
    let mut repeat = 3;
    let mut underlay_mtus = vec![1500u16];
    let mut json_path = None;
    let mut receives = vec![Receive::Thread, Receive::Inline];
    for (flag, value) in bench::flags(std::env::args().skip(1), USAGE)? {
        match flag.as_str() {
            "--targets" => targets = bench::targets(&value, KNOWN_TARGETS)?,
            "--accel" => accels = forward::accels(&value)?,
            "--seconds" => seconds = bench::positive(&flag, &value)?,
            "--repeat" => repeat = bench::positive(&flag, &value)?,
            "--underlay-mtu" => {
                underlay_mtus = value
                    .split(',')
                    .map(|v| match v.trim().parse::<u16>() {
                        Ok(m) if (1280..=9000).contains(&m) => Ok(m),
                        _ => bail!("--underlay-mtu takes MTUs from 1280 to 9000, not {v:?}"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--receive" => receives = forward::receives(&value)?,
            "--json" => json_path = Some(value),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    nanovnf_tests::require_root_and_tools(&["ip", "iperf3", "ethtool"])
        .map_err(anyhow::Error::msg)?;
    let mut rows = Vec::new();
    for &underlay_mtu in &underlay_mtus {
        for t in &targets {
            let runs: Vec<Option<Accel>> = if t == "linux-vxlan" {
                vec![None]
            } else {
                accels.iter().copied().map(Some).collect()
            };
            // With offloads, frames reach the instances as superframes, which Linux
            // never hands to a veth's NAPI thread.
            let no_offloads = t.ends_with("-no-offloads");
            let modes = if no_offloads {
                receives.clone()
            } else {
                vec![Receive::Inline]
            };
            for accel in runs {
                for &receive in &modes {
                    let mut case = match accel {
                        Some(Accel::Kvm) => format!("{t} KVM"),
                        Some(_) => format!("{t} TCG"),
                        None => t.clone(),
                    };
                    if no_offloads {
                        case = format!("{case}, {}", receive.label());
                    }
                    eprintln!("bench-vxlan: {case}, underlay MTU {underlay_mtu} ...");
                    let row = measure(t, accel, receive, seconds, repeat, underlay_mtu)
                        .unwrap_or_else(|e| Row {
                            case: String::new(),
                            underlay_mtu,
                            tcp: Err(anyhow::anyhow!("{e:#}")),
                            udp: Err(anyhow::anyhow!("setup failed")),
                            qemu_cpu: None,
                        });
                    rows.push(Row { case, ..row });
                }
            }
        }
    }
    println!();
    println!(
        "| {:<40} | {:>8} | {:>20} | {:>34} | {:>9} |",
        "path", "underlay", "TCP Gbit/s", "UDP 64 B packets/s", "QEMU CPU"
    );
    println!(
        "|{:-<42}|{:->10}|{:->22}|{:->36}|{:->11}|",
        "", "", "", "", ""
    );
    for r in &rows {
        let (tcp, udp) = (forward::gbits_cell(&r.tcp), forward::packets_cell(&r.udp));
        let cpu = r
            .qemu_cpu
            .map_or("–".into(), |c| format!("{:.0}%", c * 100.0));
        println!(
            "| {:<40} | {:>8} | {:>20} | {:>34} | {:>9} |",
            r.case, r.underlay_mtu, tcp, udp, cpu
        );
    }
    for r in &rows {
        for (what, res) in [("TCP", &r.tcp), ("UDP", &r.udp)] {
            if let Err(e) = res {
                println!("{} (underlay {}) {what}: {e:#}", r.case, r.underlay_mtu);
            }
        }
    }
    if let Some(path) = json_path {
        let report = json!({
            "seconds": seconds,
            "repeat": repeat,
            "rows": rows.iter().map(|r| json!({"case": r.case, "underlay_mtu": r.underlay_mtu,
                "tcp": forward::iperf_json(&r.tcp),
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
    overlay_mtu: u16,
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
        &["link", "set", "vx0", "mtu", &overlay_mtu.to_string(), "up"],
    )?;
    world.ip(ns, &["addr", "add", &format!("{inner}/24"), "dev", "vx0"])?;
    Ok(())
}

fn measure(
    target: &str,
    accel: Option<Accel>,
    receive: Receive,
    seconds: usize,
    repeat: usize,
    underlay_mtu: u16,
) -> anyhow::Result<Row> {
    let overlay_mtu = underlay_mtu - VXLAN_OVERHEAD;
    let mut world = World::new(&format!("bvx_{}", target.replace('-', "_")))?;
    let underlay = world.add_bridge("ul", underlay_mtu)?;
    let remote_host = world.add_instance(
        "rh",
        &underlay,
        Some(&format!("{REMOTE_VTEP}/24")),
        None,
        underlay_mtu,
    )?;
    let mut vm: Option<Vm> = None;
    let local;
    match target {
        "linux-vxlan" => {
            let lh = world.add_instance(
                "lh",
                &underlay,
                Some(&format!("{LOCAL_VTEP}/24")),
                None,
                underlay_mtu,
            )?;
            linux_vxlan(
                &world,
                &lh.ns,
                &lh.ifname,
                LOCAL_VTEP,
                REMOTE_VTEP,
                LOCAL,
                overlay_mtu,
            )?;
            linux_vxlan(
                &world,
                &remote_host.ns,
                &remote_host.ifname,
                REMOTE_VTEP,
                LOCAL_VTEP,
                REMOTE,
                overlay_mtu,
            )?;
            local = lh;
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
            let tenant = world.add_bridge("tn", overlay_mtu)?;
            local = world.add_instance(
                "li",
                &tenant,
                Some(&format!("{LOCAL}/24")),
                None,
                overlay_mtu,
            )?;
            let tt = world.add_tap("tt", &tenant, overlay_mtu)?;
            let tu = world.add_tap("tu", &underlay, underlay_mtu)?;
            let config = wire_config(&world, "wire", underlay_mtu);
            vm = Some(boot_forwarder(
                &world,
                "wire",
                "wire",
                &config,
                &[tt, tu],
                target == "wire",
                accel.unwrap_or(Accel::Tcg),
            )?);
        }
        _ => {
            linux_vxlan(
                &world,
                &remote_host.ns,
                &remote_host.ifname,
                REMOTE_VTEP,
                LOCAL_VTEP,
                REMOTE,
                overlay_mtu,
            )?;
            let tenant = world.add_bridge("tn", overlay_mtu)?;
            local = world.add_instance(
                "li",
                &tenant,
                Some(&format!("{LOCAL}/24")),
                None,
                overlay_mtu,
            )?;
            let tt = world.add_tap("tt", &tenant, overlay_mtu)?;
            let tu = world.add_tap("tu", &underlay, underlay_mtu)?;
            let config = BootConfig {
                generation: 1,
                name: "vxlan".into(),
                log_level: LogLevel::Info,
                nics: vec![
                    NicConfig {
                        mac: appliance_mac(&world, 0),
                        addresses: Vec::new(),
                        mtu: overlay_mtu,
                    },
                    NicConfig {
                        mac: appliance_mac(&world, 1),
                        addresses: vec![Ipv4Cidr::new(LOCAL_VTEP, 24)],
                        mtu: underlay_mtu,
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
                target == "gateway",
                accel.unwrap_or(Accel::Tcg),
            )?);
        }
    }
    receive.apply(&world, &[&local, &remote_host])?;
    let local_ns = local.ns.clone();
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
    let tcp = iperf3_median(
        &mut world,
        &server_ns,
        &local_ns,
        REMOTE,
        &["-t", &secs],
        repeat,
    );
    let qemu_cpu = match (
        vm.as_ref().and_then(|v| process_cpu_time(v.pid())),
        cpu_before,
    ) {
        (Some(a), Some(b)) => Some((a - b).as_secs_f64() / t0.elapsed().as_secs_f64()),
        _ => None,
    };
    let udp = iperf3_median(
        &mut world,
        &server_ns,
        &local_ns,
        REMOTE,
        &["-u", "-l", "64", "-b", "0", "-t", &secs],
        repeat,
    );
    Ok(Row {
        case: String::new(),
        underlay_mtu,
        tcp,
        udp,
        qemu_cpu,
    })
}
