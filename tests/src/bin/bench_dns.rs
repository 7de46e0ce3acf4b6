//! `bench-dns`: DNS queries per second and latency for the network's own names, the DHCP
//! appliance against dnsmasq as Neutron's DHCP agent runs it, serving the same hosts in the
//! same run and driven by the same standard load tool, `dnsperf` (Debian's `dnsperf`).
//!
//! Each target is started on one bridge with the same reservations (1,000 by default:
//! `host-198-18-0-10.openstacklocal` …, as Neutron names ports without a DNS name) and
//! probed with `dig` until it answers. Then, from a client namespace on the bridge: a
//! throughput run (`dnsperf -l SECS -c 4 -q 100` over an A and a PTR query per host,
//! looping) and a paced run for latency (`-Q RATE -v`, every query's latency kept: p50 and
//! p99). Targets run one after another and, with `--reps`, alternate. Prints a table with
//! one column per target; `--json PATH` (or `-`) writes the details. Needs root.
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-dns -- \
//!     [--targets dnsmasq,appliance-tcg,appliance-kvm] [--reservations 1000] \
//!     [--seconds 10] [--rate 2000] [--reps 1] [--json PATH|-]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nanovnf_qemu::Accel;
use nanovnf_tests::bench::{self, ms};
use nanovnf_tests::dhcp_appliance_target::ApplianceTarget;
use nanovnf_tests::dhcpload::{DhcpNet, DhcpTarget, DnsmasqTarget, RunningTarget, percentile};
use nanovnf_tests::{Instance, World, find_tool, process_cpu_time, wait_until};
use serde_json::{Value, json};

const USAGE: &str = "usage: bench-dns [--targets NAME,...] [--reservations N] [--seconds N] \
                     [--rate QPS] [--reps N] [--json PATH|-]";

const KNOWN_TARGETS: &[&str] = &["dnsmasq", "appliance-tcg", "appliance-kvm"];

/// How long a freshly started target may take to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn make_target(name: &str) -> anyhow::Result<Box<dyn DhcpTarget>> {
    match name {
        "dnsmasq" => Ok(Box::new(DnsmasqTarget::new()?)),
        "appliance-tcg" => Ok(Box::new(ApplianceTarget::new(Accel::Tcg))),
        "appliance-kvm" => Ok(Box::new(ApplianceTarget::new(Accel::Kvm))),
        _ => bail!(
            "unknown target {name:?}; known: {}",
            KNOWN_TARGETS.join(", ")
        ),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-dns: some runs failed or lost queries (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-dns: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, PartialEq)]
struct Args {
    targets: Vec<String>,
    reservations: usize,
    seconds: u32,
    rate: u32,
    reps: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut parsed = Args {
            targets: vec!["dnsmasq".into(), "appliance-tcg".into()],
            reservations: 1000,
            seconds: 10,
            rate: 2000,
            reps: 1,
            json: None,
        };
        for (flag, value) in bench::flags(args, USAGE)? {
            match flag.as_str() {
                "--targets" => parsed.targets = bench::targets(&value, KNOWN_TARGETS)?,
                "--reservations" => parsed.reservations = bench::positive(&flag, &value)?,
                "--seconds" => parsed.seconds = u32::try_from(bench::positive(&flag, &value)?)?,
                "--rate" => parsed.rate = u32::try_from(bench::positive(&flag, &value)?)?,
                "--reps" => parsed.reps = bench::positive(&flag, &value)?,
                "--json" => parsed.json = Some(PathBuf::from(value)),
                _ => bail!("unknown argument {flag:?}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

/// What one dnsperf run reported.
#[derive(Debug, Default, Clone)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    qps: f64,
    /// Response codes other than NOERROR, as dnsperf lists them.
    rcodes: String,
    /// Per-query latencies (verbose runs only).
    latencies: Vec<Duration>,
}

/// Reads dnsperf's summary (and, when verbose, its `> RCODE name type secs` lines).
fn parse_dnsperf(out: &str) -> anyhow::Result<Perf> {
    let mut p = Perf::default();
    let number = |line: &str| -> Option<f64> {
        line.split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("> ") {
            if let Some(secs) = rest.split_whitespace().last().and_then(|s| s.parse().ok()) {
                p.latencies.push(Duration::from_secs_f64(secs));
            }
        } else if t.starts_with("Queries sent:") {
            p.sent = number(t).unwrap_or(0.0) as u64;
        } else if t.starts_with("Queries completed:") {
            p.completed = number(t).unwrap_or(0.0) as u64;
        } else if t.starts_with("Queries lost:") {
            p.lost = number(t).unwrap_or(0.0) as u64;
        } else if t.starts_with("Queries per second:") {
            p.qps = number(t).unwrap_or(0.0);
        } else if let Some(codes) = t.strip_prefix("Response codes:") {
            p.rcodes = codes.trim().to_owned();
        }
    }
    if p.sent == 0 {
        bail!("dnsperf sent nothing; its output:\n{out}");
    }
    Ok(p)
}

/// One query per host for its name (A) and its address (PTR), in dnsperf's format.
fn write_queries(path: &Path, net: &DhcpNet) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in &net.reservations {
        let [a, b, c, d] = r.ip.octets();
        text.push_str(&format!("{}.{} A\n", r.hostname(), net.domain));
        text.push_str(&format!("{d}.{c}.{b}.{a}.in-addr.arpa PTR\n"));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn dnsperf(world: &World, client: &Instance, args: &[&str]) -> anyhow::Result<Perf> {
    let tool = find_tool("dnsperf")
        .ok_or_else(|| anyhow!("dnsperf not found: apt-get install dnsperf"))?
        .display()
        .to_string();
    let mut argv = vec![tool.as_str()];
    argv.extend_from_slice(args);
    let out = world.exec(&client.ns, &argv)?;
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_dnsperf(&String::from_utf8_lossy(&out.stdout))
}

/// One start-to-stop run of one target.
struct Run {
    ready_after: Duration,
    load: Perf,
    paced: Perf,
    /// CPU time of the target's process during the load run.
    target_cpu: Option<Duration>,
}

struct TargetResult {
    name: String,
    describe: String,
    runs: Vec<Run>,
    failures: Vec<String>,
}

impl TargetResult {
    fn qps(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().map(|r| r.load.qps).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    fn latency_ms(&self, p: f64) -> Option<f64> {
        let all: Vec<Duration> = self
            .runs
            .iter()
            .flat_map(|r| r.paced.latencies.iter().copied())
            .collect();
        percentile(&all, p).map(ms)
    }

    fn lost(&self) -> u64 {
        self.runs.iter().map(|r| r.load.lost + r.paced.lost).sum()
    }

    fn cpu_us_per_query(&self) -> Option<f64> {
        let (cpu, n) = self
            .runs
            .iter()
            .filter_map(|r| Some((r.target_cpu?, r.load.completed)))
            .fold((Duration::ZERO, 0u64), |(c, n), (rc, rn)| (c + rc, n + rn));
        (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64)
    }

    fn all_ok(&self) -> bool {
        self.failures.is_empty() && !self.runs.is_empty()
    }
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse(std::env::args().skip(1))?;
    nanovnf_tests::require_root_and_tools(&["ip", "dig", "dnsperf"]).map_err(anyhow::Error::msg)?;
    let mut targets = args
        .targets
        .iter()
        .map(|n| make_target(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let net = DhcpNet::new(args.reservations)?;

    let mut world = World::new("bench-dns")?;
    let bridge = world.add_bridge("br", 1500)?;
    let client = world.add_instance("gen", &bridge, Some("198.18.0.5/21"), None, 1500)?;
    let queries = world.scratch_dir().join("queries.txt");
    std::fs::create_dir_all(world.scratch_dir())?;
    write_queries(&queries, &net)?;

    let mut results: Vec<TargetResult> = targets
        .iter()
        .map(|t| TargetResult {
            name: t.name(),
            describe: t.describe(),
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    for rep in 0..args.reps {
        for (target, result) in targets.iter_mut().zip(&mut results) {
            eprintln!(
                "rep {}/{}: {}: {} hosts, {} s of load, {} s paced at {}/s...",
                rep + 1,
                args.reps,
                result.name,
                args.reservations,
                args.seconds,
                args.seconds.div_ceil(2),
                args.rate
            );
            match measure(
                target.as_mut(),
                &mut world,
                &bridge,
                &net,
                &client,
                &queries,
                &args,
            ) {
                Ok(run) => result.runs.push(run),
                Err(e) => {
                    eprintln!("{}: {e:#}", result.name);
                    result.failures.push(format!("{e:#}"));
                }
            }
        }
    }

    print_report(&args, &results);
    if let Some(path) = &args.json {
        let report = to_json(&args, &results);
        if path.as_os_str() == "-" {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            nanovnf_tests::bench::write_json(path, &report)?;
            println!("\nJSON written to {}", path.display());
        }
    }
    Ok(results.iter().all(TargetResult::all_ok))
}

fn measure(
    target: &mut dyn DhcpTarget,
    world: &mut World,
    bridge: &str,
    net: &DhcpNet,
    client: &Instance,
    queries: &Path,
    args: &Args,
) -> anyhow::Result<Run> {
    let mut running = target.start(world, bridge, net)?;
    let measured = measure_running(running.as_mut(), world, net, client, queries, args);
    let stopped = running.stop(world);
    let run = measured?;
    stopped?;
    Ok(run)
}

fn measure_running(
    running: &mut dyn RunningTarget,
    world: &World,
    net: &DhcpNet,
    client: &Instance,
    queries: &Path,
    args: &Args,
) -> anyhow::Result<Run> {
    let server = net.server_ip.to_string();
    let first = format!("{}.{}", net.reservations[0].hostname(), net.domain);
    let expected = net.reservations[0].ip.to_string();
    // The previous target held the same address with another MAC.
    world.ip(&client.ns, &["neigh", "flush", "all"])?;
    let started = Instant::now();
    let ready = wait_until(READY_TIMEOUT, Duration::from_millis(50), || {
        world
            .exec(
                &client.ns,
                &[
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    &format!("@{server}"),
                    &first,
                ],
            )
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == expected)
    });
    if !ready {
        bail!(
            "{first} did not resolve to {expected} within {READY_TIMEOUT:?}\n{}",
            running.diagnostics()
        );
    }
    let ready_after = started.elapsed();
    let file = queries.display().to_string();
    let secs = args.seconds.to_string();
    // Warm-up: one pass over every name.
    dnsperf(
        world,
        client,
        &["-s", &server, "-d", &file, "-n", "1", "-q", "20"],
    )?;
    let cpu0 = running.pid().and_then(process_cpu_time);
    let load = dnsperf(
        world,
        client,
        &[
            "-s", &server, "-d", &file, "-l", &secs, "-c", "4", "-q", "100", "-t", "2",
        ],
    )?;
    let cpu1 = running.pid().and_then(process_cpu_time);
    let paced_secs = args.seconds.div_ceil(2).to_string();
    let rate = args.rate.to_string();
    let paced = dnsperf(
        world,
        client,
        &[
            "-s",
            &server,
            "-d",
            &file,
            "-l",
            &paced_secs,
            "-Q",
            &rate,
            "-q",
            "20",
            "-t",
            "2",
            "-v",
        ],
    )?;
    if load.rcodes.contains("SERVFAIL")
        || load.rcodes.contains("REFUSED")
        || load.rcodes.contains("NXDOMAIN")
    {
        bail!("wrong answers under load: {}", load.rcodes);
    }
    Ok(Run {
        ready_after,
        load,
        paced,
        target_cpu: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

type Row = (&'static str, fn(&TargetResult, Option<f64>) -> String);

fn print_report(args: &Args, results: &[TargetResult]) {
    println!(
        "nanovnf DNS benchmark: {} hosts (A + PTR each); dnsperf {} s of load (4 sockets, \
         100 outstanding), {} s paced at {}/s for latency; {} rep(s); {} host CPUs",
        args.reservations,
        args.seconds,
        args.seconds.div_ceil(2),
        args.rate,
        args.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for r in results {
        println!("  {}: {}", r.name, r.describe);
    }
    let baseline = results
        .iter()
        .find(|r| r.name == "dnsmasq")
        .and_then(TargetResult::qps);
    let rows: [Row; 7] = [
        ("queries/s", |r, _| fmt_opt(r.qps(), 0)),
        ("x dnsmasq", |r, base| {
            fmt_opt(r.qps().zip(base).map(|(q, b)| q / b), 2)
        }),
        ("latency p50 (ms, paced)", |r, _| {
            fmt_opt(r.latency_ms(50.0), 3)
        }),
        ("latency p99 (ms, paced)", |r, _| {
            fmt_opt(r.latency_ms(99.0), 3)
        }),
        ("lost queries", |r, _| {
            if r.runs.is_empty() {
                "run failed".to_owned()
            } else {
                r.lost().to_string()
            }
        }),
        ("target CPU per query (us)", |r, _| {
            fmt_opt(r.cpu_us_per_query(), 1)
        }),
        ("ready after (ms)", |r, _| {
            fmt_opt(r.runs.first().map(|x| ms(x.ready_after)), 0)
        }),
    ];
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    print!("\n{:<28}", "");
    for r in results {
        print!(" {:>width$}", r.name);
    }
    println!();
    for (label, cell) in &rows {
        print!("{label:<28}");
        for r in results {
            print!(" {:>width$}", cell(r, baseline));
        }
        println!();
    }
    for r in results {
        for f in &r.failures {
            println!("\n{} failed: {f}", r.name);
        }
    }
}

fn to_json(args: &Args, results: &[TargetResult]) -> Value {
    json!({
        "benchmark": "dns",
        "reservations": args.reservations,
        "seconds": args.seconds,
        "paced_rate": args.rate,
        "reps": args.reps,
        "targets": results.iter().map(|r| json!({
            "name": r.name,
            "describe": r.describe,
            "queries_per_sec": r.qps(),
            "latency_ms": {
                "p50": r.latency_ms(50.0),
                "p99": r.latency_ms(99.0),
            },
            "lost": r.lost(),
            "cpu_us_per_query": r.cpu_us_per_query(),
            "runs": r.runs.iter().map(|run| json!({
                "ready_after_ms": ms(run.ready_after),
                "load": {
                    "sent": run.load.sent,
                    "completed": run.load.completed,
                    "lost": run.load.lost,
                    "qps": run.load.qps,
                    "rcodes": run.load.rcodes,
                },
                "paced": {
                    "sent": run.paced.sent,
                    "completed": run.paced.completed,
                    "lost": run.paced.lost,
                    "samples": run.paced.latencies.len(),
                },
                "target_cpu_ms": run.target_cpu.map(ms),
            })).collect::<Vec<_>>(),
            "failures": r.failures,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_summary_and_verbose_lines_parse() {
        let out = "\
> NOERROR host-198-18-0-10.openstacklocal A 0.000213
> NOERROR 10.0.18.198.in-addr.arpa PTR 0.001000
Statistics:

  Queries sent:         4
  Queries completed:    4 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 4 (100.00%)
  Queries per second:   1650.846059
";
        let p = parse_dnsperf(out).unwrap();
        assert_eq!((p.sent, p.completed, p.lost), (4, 4, 0));
        assert!((p.qps - 1650.846059).abs() < 1e-6);
        assert_eq!(p.rcodes, "NOERROR 4 (100.00%)");
        assert_eq!(
            p.latencies,
            [Duration::from_micros(213), Duration::from_millis(1)]
        );
        assert!(parse_dnsperf("nothing").is_err());
    }

    #[test]
    fn args_parse() {
        let a = Args::parse(
            ["--targets", "dnsmasq", "--seconds", "3", "--rate", "100"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        assert_eq!(a.targets, ["dnsmasq"]);
        assert_eq!((a.seconds, a.rate), (3, 100));
        assert!(Args::parse(["--targets", "bind"].into_iter().map(String::from)).is_err());
    }
}
