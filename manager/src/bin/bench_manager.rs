//! `bench-manager`: how long `nanovnf up` takes from start to every appliance ready for 1,
//! 10 and 50 tenant networks (each with its DHCP and metadata appliances), QEMU's RSS per
//! appliance, and the host CPU that 50 idle networks use over 10 s — and, in the same run,
//! the same networks built the Neutron way: a namespace, a veth on a bridge and a dnsmasq
//! (Neutron's command line) per network, timed until every dnsmasq listens on UDP 67.
//!
//! ```text
//! cargo build --release -p nanovnf && \
//! cargo run --release -p nanovnf --bin bench-manager -- [--networks 1,10,50] \
//!     [--idle-secs 10] [--accel tcg|kvm|tcg,kvm] [--json PATH|-]
//! ```
//! Needs root; everything happens inside namespaces of one test world, removed at exit.

use anyhow::{Context, bail};
use nanovnf_qemu::{process_cpu_time, process_rss_kib};
use nanovnf_tests::World;
use nanovnf_tests::dhcpload::{DhcpNet, dnsmasq_args, write_dnsmasq_files};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: bench-manager [--networks 1,10,50] [--idle-secs 10] \
                     [--accel tcg,kvm] [--json PATH|-]";

struct Options {
    networks: Vec<usize>,
    idle: Duration,
    accels: Vec<String>,
    json: Option<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        networks: vec![1, 10, 50],
        idle: Duration::from_secs(10),
        accels: vec!["tcg".into()],
        json: None,
    };
    for (flag, value) in nanovnf_tests::bench::flags(std::env::args().skip(1), USAGE)? {
        match flag.as_str() {
            "--networks" => {
                o.networks = value
                    .split(',')
                    .map(|n| nanovnf_tests::bench::positive(&flag, n))
                    .collect::<anyhow::Result<_>>()?
            }
            "--idle-secs" => {
                o.idle = Duration::from_secs(nanovnf_tests::bench::positive(&flag, &value)? as u64)
            }
            "--accel" => o.accels = value.split(',').map(str::to_owned).collect(),
            "--json" => o.json = Some(value),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(o)
}

fn topology(networks: usize) -> String {
    let mut text = String::new();
    for i in 0..networks {
        let _ = write!(
            text,
            "[[network]]\nname = \"net{i}\"\nmtu = 1450\n\n\
             [[subnet]]\nname = \"sub{i}\"\nnetwork = \"net{i}\"\n\
             cidr = \"10.{}.{}.0/24\"\ngateway_ip = \"10.{}.{}.1\"\n\n\
             [[port]]\nname = \"vm{i}\"\nnetwork = \"net{i}\"\n\
             mac_address = \"fa:16:3e:10:{:02x}:{:02x}\"\n\n",
            i / 256,
            i % 256,
            i / 256,
            i % 256,
            i / 256,
            i % 256
        );
    }
    text
}

/// Percent of one core used by `pids` over `window`.
fn idle_cpu(pids: &[u32], window: Duration) -> f64 {
    let used = || -> Duration { pids.iter().filter_map(|&p| process_cpu_time(p)).sum() };
    let before = used();
    std::thread::sleep(window);
    let after = used();
    after.saturating_sub(before).as_secs_f64() / window.as_secs_f64() * 100.0
}

fn rss_kib(pid: u32) -> u64 {
    process_rss_kib(pid).unwrap_or(0)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

struct Measured {
    ready: Duration,
    processes: usize,
    rss_median_kib: u64,
    rss_total_kib: u64,
    idle_cpu_percent: Option<f64>,
    down: Duration,
}

fn nanovnf_run(
    nanovnf: &Path,
    world: &World,
    state: &Path,
    accel: &str,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    let out = Command::new("ip")
        .args(["netns", "exec", world.host_ns()])
        .arg(nanovnf)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .args(if args[0] == "up" {
            vec!["--quiet", "--accel", accel]
        } else {
            vec![]
        })
        .stdin(Stdio::null())
        .output()?;
    Ok(out)
}

fn bench_nanovnf(
    nanovnf: &Path,
    networks: usize,
    accel: &str,
    idle: Option<Duration>,
) -> anyhow::Result<Measured> {
    let world = World::new(&format!("bm{networks}{accel}"))?;
    std::fs::create_dir_all(world.scratch_dir())?;
    let state = world.scratch_dir().join("state");
    let file = world.scratch_dir().join("topology.toml");
    std::fs::write(&file, topology(networks))?;
    let t = Instant::now();
    let up = nanovnf_run(
        nanovnf,
        &world,
        &state,
        accel,
        &["up", file.to_str().unwrap()],
    )?;
    let ready = t.elapsed();
    let result = (|| {
        if !up.status.success() {
            bail!(
                "nanovnf up failed: {}{}",
                String::from_utf8_lossy(&up.stdout),
                String::from_utf8_lossy(&up.stderr)
            );
        }
        let status: Value = serde_json::from_slice(
            &nanovnf_run(nanovnf, &world, &state, accel, &["status", "--json"])?.stdout,
        )?;
        let pids: Vec<u32> = status["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["appliances"].as_array().into_iter().flatten())
            .filter_map(|a| a["pid"].as_u64().map(|p| p as u32))
            .collect();
        if pids.len() != networks * 2 {
            bail!("{} appliances run, expected {}", pids.len(), networks * 2);
        }
        // Let boot-time work settle before measuring idle use.
        std::thread::sleep(Duration::from_secs(1));
        let rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
        let idle_cpu_percent = idle.map(|w| idle_cpu(&pids, w));
        Ok((pids.len(), rss, idle_cpu_percent))
    })();
    let t = Instant::now();
    let down = nanovnf_run(nanovnf, &world, &state, accel, &["down"]);
    let down_time = t.elapsed();
    let (processes, rss, idle_cpu_percent) = result?;
    anyhow::ensure!(down?.status.success(), "nanovnf down failed");
    Ok(Measured {
        ready,
        processes,
        rss_median_kib: median(rss.clone()),
        rss_total_kib: rss.iter().sum(),
        idle_cpu_percent,
        down: down_time,
    })
}

/// True once the process's network namespace has a UDP socket bound to port 67.
fn listens_on_67(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .map(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(":0043"))
            })
        })
        .unwrap_or(false)
}

fn bench_neutron(networks: usize, idle: Option<Duration>) -> anyhow::Result<Measured> {
    let mut world = World::new(&format!("bq{networks}"))?;
    let scratch = world.scratch_dir();
    let net = DhcpNet::new(1)?;
    let t = Instant::now();
    let bridge = world.add_bridge("br", 1450)?;
    let mut pids = Vec::new();
    for i in 0..networks {
        let inst = world.add_instance(
            &format!("q{i}"),
            &bridge,
            Some(&net.server_cidr()),
            None,
            1450,
        )?;
        let dir = scratch.join(format!("q{i}"));
        std::fs::create_dir_all(&dir)?;
        write_dnsmasq_files(&dir, &net)?;
        let mut cmd = Command::new("dnsmasq");
        cmd.args(dnsmasq_args(&dir, &inst.ifname, &net))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        pids.push(world.spawn(&inst.ns, cmd)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids.iter().all(|&p| listens_on_67(p)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "dnsmasq did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    let idle_cpu_percent = idle.map(|w| idle_cpu(&pids, w));
    let t = Instant::now();
    drop(world);
    Ok(Measured {
        ready,
        processes: pids.len(),
        rss_median_kib: median(rss.clone()),
        rss_total_kib: rss.iter().sum(),
        idle_cpu_percent,
        down: t.elapsed(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let nanovnf: PathBuf = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .join("nanovnf");
    anyhow::ensure!(
        nanovnf.exists(),
        "{} missing: cargo build --release -p nanovnf first",
        nanovnf.display()
    );
    eprintln!("building images...");
    nanovnf_build_images::build_all()?;
    let max = o.networks.iter().copied().max().unwrap_or(0);
    let mut rows: Vec<(String, usize, Measured)> = Vec::new();
    for &n in &o.networks {
        let idle = (n == max).then_some(o.idle);
        for accel in &o.accels {
            eprintln!("nanovnf ({accel}): {n} network(s)...");
            match bench_nanovnf(&nanovnf, n, accel, idle) {
                Ok(m) => rows.push((format!("nanovnf {accel}"), n, m)),
                Err(e) => eprintln!("  failed: {e:#}"),
            }
        }
        eprintln!("namespace + veth + dnsmasq: {n} network(s)...");
        match bench_neutron(n, idle) {
            Ok(m) => rows.push(("netns+dnsmasq".into(), n, m)),
            Err(e) => eprintln!("  failed: {e:#}"),
        }
    }
    println!();
    println!(
        "| setup | networks | processes | up → all ready | RSS/process (median) | RSS total | idle CPU ({} s) | teardown |",
        o.idle.as_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut json_rows = Vec::new();
    for (setup, n, m) in &rows {
        println!(
            "| {setup} | {n} | {} | {:.2} s | {:.1} MiB | {:.0} MiB | {} | {:.2} s |",
            m.processes,
            m.ready.as_secs_f64(),
            m.rss_median_kib as f64 / 1024.0,
            m.rss_total_kib as f64 / 1024.0,
            m.idle_cpu_percent
                .map_or("-".into(), |c| format!("{c:.2} % of a core")),
            m.down.as_secs_f64()
        );
        json_rows.push(json!({
            "setup": setup, "networks": n, "processes": m.processes,
            "ready_s": m.ready.as_secs_f64(), "rss_median_kib": m.rss_median_kib,
            "rss_total_kib": m.rss_total_kib, "idle_cpu_percent": m.idle_cpu_percent,
            "teardown_s": m.down.as_secs_f64(),
        }));
    }
    if let Some(path) = &o.json {
        let report = json!({ "benchmark": "manager", "rows": json_rows });
        if path == "-" {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            nanovnf_tests::bench::write_json(Path::new(path), &report)?;
        }
    }
    Ok(())
}
