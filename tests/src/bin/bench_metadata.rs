//! `bench-metadata`: requests/s and p50/p99 latency of `meta_data.json` with `wrk` from an
//! instance namespace at 1, 16 and 128 connections, against (a) the metadata appliance
//! and (b) Neutron's path rebuilt in namespaces on the same bridge — haproxy with
//! Neutron's settings on 169.254.169.254:80 in front of a small Python backend on a unix
//! socket serving the same JSON — in the same run, one after the other. Then a boot
//! storm: `--storm` instances (200), each its own namespace and MAC, fetch their own
//! `meta_data.json` at the same moment; the time until all have their correct answer.
//! With `--accel tcg,kvm` (the default where `/dev/kvm` exists) the first accelerator runs
//! all of that and every further one boots the appliance again for its own `wrk` rows.
//! Needs root; all traffic stays inside the namespaces of one [`World`].
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-metadata -- \
//!     [--seconds 5] [--conns 1,16,128] [--storm 200] [--accel tcg,kvm] [--json PATH|-]
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use nanovnf_qemu::{Accel, ControlClient};
use nanovnf_schema::metadata::MetadataInstance;
use nanovnf_tests::appliance::{self, TestNic};
use nanovnf_tests::bench::{ms, write_json};
use nanovnf_tests::metadata::{
    BACKEND_PY, SYSTEM_PYTHON, TenantNet, boot_metadata_with, curl, neutron_haproxy_config, storm,
};
use nanovnf_tests::{Instance, World, find_tool, wait_until};
use serde_json::{Value, json};

const USAGE: &str = "usage: bench-metadata [--seconds N] [--conns N,N,...] [--storm N] \
                     [--accel tcg,kvm] [--json PATH|-]";
const PATH: &str = "/openstack/latest/meta_data.json";

struct Args {
    seconds: u32,
    conns: Vec<u32>,
    storm: usize,
    accels: Vec<Accel>,
    json: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 5,
        conns: vec![1, 16, 128],
        storm: 200,
        accels: if std::path::Path::new("/dev/kvm").exists() {
            vec![Accel::Tcg, Accel::Kvm]
        } else {
            vec![Accel::Tcg]
        },
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--conns" => {
                a.conns = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--storm" => a.storm = value()?.parse()?,
            "--accel" => a.accels = nanovnf_tests::forward::accels(&value()?)?,
            "--json" => a.json = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    if a.storm > 240 {
        bail!("--storm is at most 240 (one /24 with room for the appliances)");
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-metadata: some runs saw errors (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-metadata: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `wrk` against `target` at every connection count of `args`, after a warm-up (caches,
/// ARP, the first connections); a row each.
fn wrk_runs(
    world: &World,
    cl: &Instance,
    target: &str,
    args: &Args,
    rows: &mut Vec<(String, u32, WrkResult)>,
) -> anyhow::Result<()> {
    let _ = wrk(world, cl, 4, 1);
    for &c in &args.conns {
        let r = wrk(world, cl, c, args.seconds)?;
        eprintln!(
            "{target} c={c}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
            r.rps, r.p50_ms, r.p99_ms
        );
        rows.push((target.to_owned(), c, r));
    }
    Ok(())
}

/// One wrk run's figures.
#[derive(Debug, Default)]
struct WrkResult {
    /// Successful (2xx) responses per second: errors are not throughput.
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

/// `635.91us`, `1.07ms`, `2.00s` → milliseconds.
fn wrk_duration_ms(s: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", d] => r.p50_ms = wrk_duration_ms(d).unwrap_or(f64::NAN),
            ["99%", d] => r.p99_ms = wrk_duration_ms(d).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => r.rps = v.parse()?,
            [n, "requests", "in", ..] => r.requests = n.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                for w in rest.iter().map(|w| w.trim_end_matches(',')) {
                    if let Ok(n) = w.parse::<u64>() {
                        r.errors += n;
                    }
                }
            }
            _ => {}
        }
    }
    if r.requests == 0 {
        bail!("wrk made no request:\n{out}");
    }
    // wrk's own figure counts every response; keep only the good ones.
    r.rps *= r.requests.saturating_sub(r.errors) as f64 / r.requests as f64;
    Ok(r)
}

fn wrk(world: &World, client: &Instance, conns: u32, seconds: u32) -> anyhow::Result<WrkResult> {
    let wrk = find_tool("wrk").ok_or_else(|| anyhow!("wrk is not installed"))?;
    let url = format!("http://169.254.169.254{PATH}");
    let (c, d) = (conns.to_string(), format!("{seconds}s"));
    let argv = [
        wrk.to_str().unwrap_or("wrk"),
        "-t1",
        "-c",
        &c,
        "-d",
        &d,
        "--timeout",
        "5s",
        "--latency",
        &url,
    ];
    let out = world.exec(&client.ns, &argv)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text)
}

fn instance(net: &TenantNet, n: u8, ip: Ipv4Addr) -> MetadataInstance {
    let mut i = net.instance(n, [0xfa, 0x16, 0x3e, 0xbe, 0x00, n], ip);
    i.user_data = Some(format!("#cloud-config\nhostname: vm{n}\n").into_bytes());
    i
}

fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    for tool in ["ip", "qemu-system-x86_64", "wrk", "haproxy", "curl"] {
        find_tool(tool).ok_or_else(|| anyhow!("{tool} is not installed (scripts/setup.sh)"))?;
    }
    let net = TenantNet::new(1500);
    let client = instance(&net, 1, Ipv4Addr::new(192, 168, 1, 5));
    let stormers: Vec<MetadataInstance> = (0..args.storm)
        .map(|i| {
            let mut inst = instance(&net, 0, Ipv4Addr::new(192, 168, 1, 11 + i as u8));
            inst.mac = [0xfa, 0x16, 0x3e, 0xbe, 0x01, i as u8];
            inst.uuid = format!("7e57c0de-0000-4000-8000-{i:012}");
            inst.hostname = format!("storm{i}");
            inst
        })
        .collect();
    let mut instances = vec![client.clone()];
    instances.extend(stormers.iter().cloned());

    let mut world = World::new("bench_metadata")?;
    let br = world.add_bridge("br", 1500)?;
    let tap = world.add_tap("tapm", &br, 1500)?;
    let nic = TestNic {
        tap,
        mac: appliance::appliance_mac(&world, 2),
        addr: net.metadata_ip,
        prefix_len: 24,
    };
    let name = format!("{}-md", world.prefix());
    let config = net.metadata_config(&name, nic.mac, instances);
    let mut vm = boot_metadata_with(&world, &name, &nic, &config, args.accels.first().copied())?;
    eprintln!(
        "appliance up ({}, {})",
        vm.accel().as_str(),
        vm.accel_reason()
    );

    let cl = world.add_instance(
        "client",
        &br,
        Some("192.168.1.5/24"),
        Some(client.mac),
        1500,
    )?;
    let route = |world: &World, via: &str| {
        world.ip(
            &cl.ns,
            &["route", "replace", "169.254.169.254/32", "via", via],
        )
    };
    route(&world, "192.168.1.3")?;
    let body = curl(&world, &cl, PATH, &[])?;
    if body.status != 200 {
        bail!("the appliance answered {PATH} with {}", body.status);
    }

    // Neutron's path: haproxy on 169.254.169.254 in its own namespace, a backend behind it.
    let px = world.add_instance("proxy", &br, Some("192.168.1.4/24"), None, 1500)?;
    world.ip(
        &px.ns,
        &["addr", "add", "169.254.169.254/32", "dev", &px.ifname],
    )?;
    let dir = world.scratch_dir().join("neutron");
    std::fs::create_dir_all(&dir)?;
    let json_file = dir.join("meta_data.json");
    std::fs::write(&json_file, &body.body)?;
    let socket = dir.join("metadata_proxy");
    let mut backend = Command::new(SYSTEM_PYTHON);
    backend
        .args(["-c", BACKEND_PY])
        .arg(&socket)
        .arg(&json_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    world.spawn(&px.ns, backend)?;
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        neutron_haproxy_config(&socket, "3c0e0e4b-2b7c-4f0a-8a7e-7a0e5c1b0001"),
    )?;
    let mut haproxy = Command::new(find_tool("haproxy").context("haproxy")?);
    haproxy
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    world.spawn(&px.ns, haproxy)?;
    route(&world, "192.168.1.4")?;
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        curl(&world, &cl, PATH, &[]).is_ok_and(|f| f.status == 200 && f.body == body.body)
    });
    if !ready {
        bail!("haproxy + backend never answered {PATH}");
    }

    let mut rows: Vec<(String, u32, WrkResult)> = Vec::new();
    for (target, via) in [
        ("appliance", "192.168.1.3"),
        ("neutron-haproxy", "192.168.1.4"),
    ] {
        route(&world, via)?;
        wrk_runs(&world, &cl, target, &args, &mut rows)?;
    }
    let mut clean = rows.iter().all(|(_, _, r)| r.errors == 0);

    // The boot storm, against the appliance.
    let mut storm_report = None;
    if args.storm > 0 {
        let mut members = Vec::new();
        for (i, inst) in stormers.iter().enumerate() {
            let ns = world.add_instance(
                &format!("s{i}"),
                &br,
                Some(&format!("{}/24", inst.ip)),
                Some(inst.mac),
                1500,
            )?;
            world.ip(
                &ns.ns,
                &["route", "add", "169.254.169.254/32", "via", "192.168.1.3"],
            )?;
            members.push((ns.ns.clone(), inst.uuid.clone()));
        }
        let r = storm(&members, PATH, Duration::from_secs(10))?;
        clean &= r.wrong == 0 && r.failed == 0;
        storm_report = Some(r);
    }
    if let Some(sock) = vm.control_socket() {
        let mut ctl = ControlClient::connect(sock, Duration::from_secs(5))?;
        let nonzero: Vec<String> = ctl
            .counters(Duration::from_secs(5))?
            .into_iter()
            .filter(|c| c.value > 0)
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        eprintln!("appliance counters: {}", nonzero.join(" "));
    }

    // Further accelerators: the same appliance booted again on the same tap, its own rows.
    let main_accel = vm.accel().as_str();
    for &accel in args.accels.iter().skip(1) {
        vm.kill();
        vm = boot_metadata_with(&world, &name, &nic, &config, Some(accel))?;
        let target = format!("appliance-{}", vm.accel().as_str());
        eprintln!("{target} up ({})", vm.accel_reason());
        route(&world, "192.168.1.3")?;
        let before = rows.len();
        wrk_runs(&world, &cl, &target, &args, &mut rows)?;
        clean &= rows[before..].iter().all(|(_, _, r)| r.errors == 0);
    }

    println!();
    println!(
        "meta_data.json over HTTP/1.1 keep-alive, wrk -t1, {} s per run; appliance under {main_accel}",
        args.seconds
    );
    println!(
        "{:<16} {:>6} {:>10} {:>9} {:>9} {:>8}",
        "target", "conns", "ok req/s", "p50 ms", "p99 ms", "errors"
    );
    for (t, c, r) in &rows {
        println!(
            "{:<16} {:>6} {:>10.0} {:>9.3} {:>9.3} {:>8}",
            t, c, r.rps, r.p50_ms, r.p99_ms, r.errors
        );
    }
    let ratio = |c: u32| {
        let rps = |t: &str| {
            rows.iter()
                .find(|(x, y, _)| *x == t && *y == c)
                .map(|r| r.2.rps)
        };
        Some(rps("appliance")? / rps("neutron-haproxy")?)
    };
    for &c in &args.conns {
        if let Some(x) = ratio(c) {
            println!("appliance / haproxy at {c} connection(s): {x:.2}x");
        }
    }
    if let Some(r) = &storm_report {
        println!(
            "boot storm: {} instances, all correct answers in {:.1} ms ({} correct, {} wrong, {} failed)",
            args.storm,
            ms(r.elapsed),
            r.correct,
            r.wrong,
            r.failed
        );
        for e in &r.first_errors {
            println!("  {e}");
        }
    }
    if let Some(path) = &args.json {
        let report = json!({
            "accel": main_accel,
            "seconds": args.seconds,
            "wrk": rows.iter().map(|(t, c, r)| json!({
                "target": t, "conns": c, "rps": r.rps, "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms, "requests": r.requests, "errors": r.errors,
            })).collect::<Vec<Value>>(),
            "storm": storm_report.as_ref().map(|r| json!({
                "instances": args.storm, "elapsed_ms": ms(r.elapsed), "correct": r.correct,
                "wrong": r.wrong, "failed": r.failed,
            })),
        });
        if path.as_os_str() == "-" {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            write_json(path, &report)?;
        }
    }
    Ok(clean)
}
