//! `bench-router`: iperf3 TCP throughput and UDP 64-byte packets/s from a tenant namespace
//! to an "outside" namespace through (a) the router appliance with SNAT, (b) a floating IP
//! (outside → tenant, DNAT), (c) the wire appliance (our kernel copying frames between two
//! NICs: the floor of this I/O path) and (d) a Linux namespace router with iptables
//! MASQUERADE (Neutron's way, no VM); each with and without offloads (for the VMs: QEMU's
//! virtio-net offloads; for the namespace router: TSO/GSO/GRO on its legs). Appliances run
//! under TCG and, with `--accel tcg,kvm`, under KVM too. Cases without offloads run twice
//! (`--receive thread,inline`): with the tenant and outside namespaces receiving in their own
//! NAPI threads, as separate hosts do, and with Linux's veth default, where the receiving
//! namespace's whole stack runs inside the thread that wrote the frame (for the appliances,
//! QEMU's one I/O thread). `--repeat N` measures in N rounds, each running every case
//! once in turn, so that a slow phase of this machine hits all cases alike: the table
//! shows each case's median over the rounds, and a second table each appliance's ratio to
//! the wire and to the namespace router, taken round by round (paired) and then the
//! median. `--json PATH|-`.
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-router -- \
//!     [--targets router-snat,router-floating,wire,linux-ns] [--accel tcg,kvm] \
//!     [--offloads on,off] [--receive thread,inline] [--seconds 5] [--repeat 3] \
//!     [--json PATH|-]
//! ```

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use nanovnf_qemu::{Accel, Vm};
use nanovnf_schema::dhcp::Route;
use nanovnf_schema::router::{DEFAULT_CONNTRACK_CAPACITY, FloatingIp, RouterRole};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use nanovnf_tests::appliance::appliance_mac;
use nanovnf_tests::bench;
use nanovnf_tests::forward::{self, Iperf, Receive, boot_forwarder, wire_config};
use nanovnf_tests::{World, process_cpu_time};
use serde_json::{Value, json};

const USAGE: &str = "usage: bench-router [--targets NAME,...] [--accel tcg,kvm] \
                     [--offloads on,off] [--receive thread,inline] [--seconds N] \
                     [--repeat N] [--json PATH|-]";
const KNOWN_TARGETS: &[&str] = &["router-snat", "router-floating", "wire", "linux-ns"];

const TENANT: Ipv4Addr = Ipv4Addr::new(10, 60, 1, 10);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 60, 1, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 101);
const FLOATING: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// For the wire: the outside namespace also sits in the tenant subnet.
const OUTSIDE_ON_WIRE: Ipv4Addr = Ipv4Addr::new(10, 60, 1, 20);

struct Case {
    target: String,
    accel: Option<Accel>,
    offloads: bool,
    receive: Receive,
}

struct Row {
    case: String,
    tcp: anyhow::Result<Iperf>,
    udp: anyhow::Result<Iperf>,
    /// CPU the appliance's QEMU used per second of the TCP run.
    qemu_cpu: Option<f64>,
    ready_ms: Option<f64>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-router: some runs failed (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-router: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut targets: Vec<String> = KNOWN_TARGETS.iter().map(|s| (*s).to_owned()).collect();
    let mut accels = vec![Accel::Tcg];
    let mut offloads = vec![true, false];
    let mut seconds = 5;
    let mut repeat = 3;
    let mut json_path = None;
    let mut receives = vec![Receive::Thread, Receive::Inline];
    for (flag, value) in bench::flags(std::env::args().skip(1), USAGE)? {
        match flag.as_str() {
            "--targets" => targets = bench::targets(&value, KNOWN_TARGETS)?,
            "--accel" => accels = forward::accels(&value)?,
            "--offloads" => {
                offloads = bench::choices(&flag, &value, &[("on", true), ("off", false)])?
            }
            "--seconds" => seconds = bench::positive(&flag, &value)?,
            "--repeat" => repeat = bench::positive(&flag, &value)?,
            "--receive" => receives = forward::receives(&value)?,
            "--json" => json_path = Some(value),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    nanovnf_tests::require_root_and_tools(&["ip", "iperf3", "iptables", "ethtool"])
        .map_err(anyhow::Error::msg)?;
    let mut cases = Vec::new();
    for t in &targets {
        for &o in &offloads {
            // With offloads, frames reach the namespaces as superframes, which Linux never
            // hands to a veth's NAPI thread.
            let modes = if o {
                vec![Receive::Inline]
            } else {
                receives.clone()
            };
            let runs: Vec<Option<Accel>> = if t == "linux-ns" {
                vec![None]
            } else {
                accels.iter().copied().map(Some).collect()
            };
            for accel in runs {
                for &receive in &modes {
                    cases.push(Case {
                        target: t.clone(),
                        accel,
                        offloads: o,
                        receive,
                    });
                }
            }
        }
    }
    // Built before any clock runs: a case's "ready" is its boot, not a compile.
    nanovnf_tests::appliance::image("router")?;
    let names: Vec<String> = cases.iter().map(case_name).collect();
    // runs[case][round]
    let mut runs: Vec<Vec<Row>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=repeat {
        for (i, case) in cases.iter().enumerate() {
            eprintln!("bench-router: round {round}/{repeat}: {} ...", names[i]);
            let row = measure(case, seconds).unwrap_or_else(|e| Row {
                case: names[i].clone(),
                tcp: Err(anyhow::anyhow!("{e:#}")),
                udp: Err(anyhow::anyhow!("setup failed")),
                qemu_cpu: None,
                ready_ms: None,
            });
            runs[i].push(row);
        }
    }
    let ratios = ratios(&cases, &names, &runs);
    let rows: Vec<Row> = runs
        .into_iter()
        .zip(&names)
        .map(|(r, name)| summarize(name, r))
        .collect();
    print_table(&rows);
    print_ratios(&ratios);
    if let Some(path) = json_path {
        let report = json!({
            "seconds": seconds,
            "rounds": repeat,
            "rows": rows.iter().map(row_json).collect::<Vec<Value>>(),
            "ratios": ratios.iter().map(|r| json!({
                "case": r.case, "tcp_vs_wire": r.tcp_vs_wire, "udp_vs_wire": r.udp_vs_wire,
                "tcp_vs_linux_ns": r.tcp_vs_linux})).collect::<Vec<Value>>(),
        });
        if path == "-" {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            bench::write_json(std::path::Path::new(&path), &report)?;
        }
    }
    Ok(rows.iter().all(|r| r.tcp.is_ok() && r.udp.is_ok()))
}

fn row_json(r: &Row) -> Value {
    json!({"case": r.case, "tcp": forward::iperf_json(&r.tcp), "udp_64": forward::iperf_json(&r.udp),
           "qemu_cpu_per_second": r.qemu_cpu, "ready_ms": r.ready_ms})
}

fn case_name(case: &Case) -> String {
    format!(
        "{}{} offloads {}{}",
        case.target,
        match case.accel {
            Some(Accel::Kvm) => " KVM",
            Some(_) => " TCG",
            None => "",
        },
        if case.offloads { "on" } else { "off" },
        if case.offloads {
            String::new()
        } else {
            format!(", {}", case.receive.label())
        }
    )
}

/// One case over its rounds: the median run (range beside it); a failed round fails it.
fn summarize(name: &str, rounds: Vec<Row>) -> Row {
    let mut tcp = Ok(Vec::new());
    let mut udp = Ok(Vec::new());
    let (mut cpu, mut ready) = (Vec::new(), Vec::new());
    for r in rounds {
        for (all, run) in [(&mut tcp, r.tcp), (&mut udp, r.udp)] {
            match (all.as_mut(), run) {
                (Ok(v), Ok(i)) => v.push(i),
                (Ok(_), Err(e)) => *all = Err(e),
                (Err(_), _) => {}
            }
        }
        cpu.extend(r.qemu_cpu);
        ready.extend(r.ready_ms);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Row {
        case: name.to_owned(),
        tcp: tcp.map(|v| forward::median_run(v, false)),
        udp: udp.map(|v| forward::median_run(v, true)),
        qemu_cpu: median(cpu),
        ready_ms: median(ready),
    }
}

/// An appliance's figures over its partners' of the same round.
struct Ratio {
    case: String,
    tcp_vs_wire: Vec<f64>,
    udp_vs_wire: Vec<f64>,
    tcp_vs_linux: Vec<f64>,
}

/// For every router case: its TCP and UDP figures over the wire's with the same
/// accelerator, offloads and receive mode, and its TCP over the namespace router's with
/// the same offloads and receive mode, round by round.
fn ratios(cases: &[Case], names: &[String], runs: &[Vec<Row>]) -> Vec<Ratio> {
    let partner = |c: &Case, target: &str| {
        cases.iter().position(|p| {
            p.target == target
                && p.offloads == c.offloads
                && p.receive == c.receive
                && (target == "linux-ns" || p.accel == c.accel)
        })
    };
    let paired = |a: usize, b: Option<usize>, udp: bool| -> Vec<f64> {
        let figure = |r: &Row| {
            let run = if udp { &r.udp } else { &r.tcp };
            run.as_ref().ok().map(|i| i.headline(udp))
        };
        let Some(b) = b else { return Vec::new() };
        runs[a]
            .iter()
            .zip(&runs[b])
            .filter_map(|(x, y)| Some((figure(x)?, figure(y)?)))
            .filter(|&(_, y)| y > 0.0)
            .map(|(x, y)| x / y)
            .collect()
    };
    cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.target.starts_with("router"))
        .map(|(i, c)| Ratio {
            case: names[i].clone(),
            tcp_vs_wire: paired(i, partner(c, "wire"), false),
            udp_vs_wire: paired(i, partner(c, "wire"), true),
            tcp_vs_linux: paired(i, partner(c, "linux-ns"), false),
        })
        .collect()
}

fn print_ratios(ratios: &[Ratio]) {
    if ratios.is_empty() {
        return;
    }
    println!();
    println!(
        "| {:<46} | {:>20} | {:>20} | {:>20} |",
        "appliance, paired by round", "TCP / wire", "UDP / wire", "TCP / linux-ns"
    );
    println!("|{:-<48}|{:->22}|{:->22}|{:->22}|", "", "", "", "");
    for r in ratios {
        println!(
            "| {:<46} | {:>20} | {:>20} | {:>20} |",
            r.case,
            forward::ratio_cell(&r.tcp_vs_wire),
            forward::ratio_cell(&r.udp_vs_wire),
            forward::ratio_cell(&r.tcp_vs_linux)
        );
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<46} | {:>20} | {:>34} | {:>9} | {:>8} |",
        "path", "TCP Gbit/s", "UDP 64 B packets/s", "QEMU CPU", "ready"
    );
    println!(
        "|{:-<48}|{:->22}|{:->36}|{:->11}|{:->10}|",
        "", "", "", "", ""
    );
    for r in rows {
        let (tcp, udp) = (forward::gbits_cell(&r.tcp), forward::packets_cell(&r.udp));
        let cpu = r
            .qemu_cpu
            .map_or("–".into(), |c| format!("{:.0}%", c * 100.0));
        let ready = r.ready_ms.map_or("–".into(), |m| format!("{m:.0} ms"));
        println!(
            "| {:<46} | {:>20} | {:>34} | {:>9} | {:>8} |",
            r.case, tcp, udp, cpu, ready
        );
    }
    for r in rows {
        for (what, res) in [("TCP", &r.tcp), ("UDP", &r.udp)] {
            if let Err(e) = res {
                println!("{} {what}: {e:#}", r.case);
            }
        }
    }
}

fn cidr(a: Ipv4Addr, len: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(a, len)
}

fn measure(case: &Case, seconds: usize) -> anyhow::Result<Row> {
    let mut world = World::new(&format!("brt_{}", case.target.replace('-', "_")))?;
    let left = world.add_bridge("bl", 1500)?;
    let right = world.add_bridge("br", 1500)?;
    let tenant = world.add_instance("ten", &left, Some(&format!("{TENANT}/24")), None, 1500)?;
    let outside = world.add_instance("out", &right, Some(&format!("{OUTSIDE}/24")), None, 1500)?;
    world.ip(
        &tenant.ns,
        &["route", "add", "default", "via", &GATEWAY.to_string()],
    )?;
    let mut vm: Option<Vm> = None;
    let started = Instant::now();
    let (client_ns, server_ns, server) = match case.target.as_str() {
        "linux-ns" => {
            let r = world.add_instance("rtr", &left, Some(&format!("{GATEWAY}/24")), None, 1500)?;
            let ext = world.add_interface(
                &r.ns,
                "rx",
                &right,
                Some(&format!("{ROUTER_EXT}/24")),
                1500,
            )?;
            world.sysctl(&r.ns, "net.ipv4.ip_forward", "1")?;
            let out = world.exec(
                &r.ns,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    &ext,
                    "-j",
                    "MASQUERADE",
                ],
            )?;
            if !out.status.success() {
                bail!("iptables: {}", String::from_utf8_lossy(&out.stderr));
            }
            if !case.offloads {
                for dev in [&r.ifname, &ext] {
                    world.exec(
                        &r.ns,
                        &[
                            "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                        ],
                    )?;
                }
            }
            (tenant.ns.clone(), outside.ns.clone(), OUTSIDE)
        }
        "wire" => {
            let tl = world.add_tap("tl", &left, 1500)?;
            let tr = world.add_tap("tr", &right, 1500)?;
            world.ip(
                &outside.ns,
                &[
                    "addr",
                    "add",
                    &format!("{OUTSIDE_ON_WIRE}/24"),
                    "dev",
                    &outside.ifname,
                ],
            )?;
            let config = wire_config(&world, "wire", 1500);
            vm = Some(boot_forwarder(
                &world,
                "wire",
                "wire",
                &config,
                &[tl, tr],
                case.offloads,
                case.accel.unwrap_or(Accel::Tcg),
            )?);
            (tenant.ns.clone(), outside.ns.clone(), OUTSIDE_ON_WIRE)
        }
        _ => {
            let tl = world.add_tap("tl", &left, 1500)?;
            let tr = world.add_tap("tr", &right, 1500)?;
            let floating = case.target == "router-floating";
            let config = BootConfig {
                generation: 1,
                name: "router".into(),
                log_level: LogLevel::Info,
                nics: vec![
                    NicConfig {
                        mac: appliance_mac(&world, 0),
                        addresses: vec![cidr(GATEWAY, 24)],
                        mtu: 1500,
                    },
                    NicConfig {
                        mac: appliance_mac(&world, 1),
                        addresses: vec![cidr(ROUTER_EXT, 24)],
                        mtu: 1500,
                    },
                ],
                role: Role::Router(RouterRole {
                    external_nic: Some(1),
                    default_gateway: Some(OUTSIDE),
                    enable_snat: true,
                    routes: Vec::<Route>::new(),
                    floating_ips: if floating {
                        vec![FloatingIp {
                            floating: FLOATING,
                            fixed: TENANT,
                        }]
                    } else {
                        Vec::new()
                    },
                    conntrack_capacity: DEFAULT_CONNTRACK_CAPACITY,
                }),
            };
            vm = Some(boot_forwarder(
                &world,
                "router",
                "router",
                &config,
                &[tl, tr],
                case.offloads,
                case.accel.unwrap_or(Accel::Tcg),
            )?);
            if floating {
                // The outside opens the connections, to the floating IP (DNAT).
                (outside.ns.clone(), tenant.ns.clone(), FLOATING)
            } else {
                (tenant.ns.clone(), outside.ns.clone(), OUTSIDE)
            }
        }
    };
    let ready_ms = vm.as_ref().map(|_| bench::ms(started.elapsed()));
    case.receive.apply(&world, &[&tenant, &outside])?;
    // The path works before it is measured.
    let client = if client_ns == tenant.ns {
        &tenant
    } else {
        &outside
    };
    if !client.ping(&world, server, 3, std::time::Duration::from_secs(10))? {
        bail!("no ping {} -> {server} before measuring", client.ns);
    }
    let secs = seconds.to_string();
    let cpu_before = vm.as_ref().and_then(|v| process_cpu_time(v.pid()));
    let t0 = Instant::now();
    let tcp = forward::iperf3(&mut world, &server_ns, &client_ns, server, &["-t", &secs]);
    let qemu_cpu = match (
        vm.as_ref().and_then(|v| process_cpu_time(v.pid())),
        cpu_before,
    ) {
        (Some(after), Some(before)) => {
            Some((after - before).as_secs_f64() / t0.elapsed().as_secs_f64())
        }
        _ => None,
    };
    let udp = forward::iperf3(
        &mut world,
        &server_ns,
        &client_ns,
        server,
        &["-u", "-l", "64", "-b", "0", "-t", &secs],
    )
    .context("UDP");
    if let (Some(vm), Err(_)) = (&vm, &tcp) {
        eprintln!("serial:\n{}", vm.serial_output());
    }
    Ok(Row {
        case: String::new(),
        tcp,
        udp,
        qemu_cpu,
        ready_ms,
    })
}
