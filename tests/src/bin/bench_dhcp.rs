//! `bench-dhcp`: full DORA exchanges per second and DISCOVER→OFFER latency of each DHCP
//! server target, from one load generator ([`Generator`]) on the same bridge, in the
//! same run, with the same reservations (1,000 by default) for every target.
//!
//! Targets run one after another (never side by side, so they never share the CPU) and,
//! with `--reps`, alternate so that drift in host load hits them alike. Each run: start,
//! wait for the first OFFER, one unrecorded warm-up round of DORA over every
//! reservation, `--rounds` recorded rounds (at most `--window` exchanges outstanding),
//! then `--samples` DISCOVERs one at a time, paced, for latency. Prints a table with one
//! column per target; `--json PATH` (or `-` for stdout) also writes the details. Needs
//! root; all traffic stays inside the namespaces of one [`World`].
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-dhcp -- \
//!     [--targets dnsmasq,...] [--reservations 1000] [--rounds 10] [--window 64] \
//!     [--samples 1000] [--reps 1] [--json PATH|-]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use nanovnf_qemu::Accel;
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::DhcpHost;
use nanovnf_tests::World;
use nanovnf_tests::bench::{self, ms};
use nanovnf_tests::dhcp_appliance_target::ApplianceTarget;
use nanovnf_tests::dhcpload::{
    DhcpNet, DhcpTarget, DnsmasqTarget, DoraOptions, DoraReport, Generator, LatencyOptions,
    LatencyReport, RunningTarget, percentile,
};
use serde_json::{Value, json};

const USAGE: &str = "usage: bench-dhcp [--targets NAME,...] [--reservations N] [--rounds N] \
                     [--window N] [--samples N] [--reps N] [--json PATH|-]";

/// Every target this benchmark can run, in table order.
const KNOWN_TARGETS: &[&str] = &["dnsmasq", "appliance-tcg", "appliance-kvm"];

/// Builds target `name`.
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

/// How long a freshly started target may take to answer its first DISCOVER.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-dhcp: some runs failed or saw errors (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-dhcp: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, PartialEq)]
struct Args {
    targets: Vec<String>,
    reservations: usize,
    rounds: usize,
    window: usize,
    samples: usize,
    reps: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut parsed = Args {
            targets: KNOWN_TARGETS.iter().map(|s| s.to_string()).collect(),
            reservations: 1000,
            rounds: 10,
            window: 64,
            samples: 1000,
            reps: 1,
            json: None,
        };
        for (flag, value) in bench::flags(args, USAGE)? {
            match flag.as_str() {
                "--targets" => parsed.targets = bench::targets(&value, KNOWN_TARGETS)?,
                "--reservations" => parsed.reservations = bench::positive(&flag, &value)?,
                "--rounds" => parsed.rounds = bench::positive(&flag, &value)?,
                "--window" => parsed.window = bench::positive(&flag, &value)?,
                "--samples" => parsed.samples = bench::positive(&flag, &value)?,
                "--reps" => parsed.reps = bench::positive(&flag, &value)?,
                "--json" => parsed.json = Some(PathBuf::from(value)),
                _ => bail!("unknown argument {flag:?}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }

    fn dora(&self, rounds: usize) -> DoraOptions {
        DoraOptions {
            window: self.window,
            rounds,
            ..DoraOptions::default()
        }
    }

    fn latency(&self) -> LatencyOptions {
        LatencyOptions {
            samples: self.samples,
            ..LatencyOptions::default()
        }
    }
}

/// One start-to-stop run of one target.
struct Run {
    ready_after: Duration,
    warmup: DoraReport,
    dora: DoraReport,
    latency: LatencyReport,
    /// CPU time of the target's process during the recorded DORA rounds.
    target_cpu: Option<Duration>,
    /// CPU time of this process (the generator) during the same rounds.
    generator_cpu: Option<Duration>,
    /// Round trips of live reservation changes over the control channel (targets that
    /// have one): from sending the change to the appliance's answer that it applied it.
    live: Vec<Duration>,
}

/// Everything measured for one target.
struct TargetResult {
    name: String,
    describe: String,
    runs: Vec<Run>,
    failures: Vec<String>,
}

impl TargetResult {
    fn dora_rates(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.dora.per_sec()).collect()
    }

    /// Median over runs of DORA/s.
    fn dora_per_sec(&self) -> Option<f64> {
        let mut v = self.dora_rates();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    /// DISCOVER→OFFER samples of every run, pooled.
    fn latency_samples(&self) -> Vec<Duration> {
        self.runs
            .iter()
            .flat_map(|r| r.latency.samples.iter().copied())
            .collect()
    }

    fn latency_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latency_samples(), p).map(ms)
    }

    fn live_ms(&self, p: f64) -> Option<f64> {
        let all: Vec<Duration> = self
            .runs
            .iter()
            .flat_map(|r| r.live.iter().copied())
            .collect();
        percentile(&all, p).map(ms)
    }

    fn sum(&self, f: impl Fn(&Run) -> u64) -> u64 {
        self.runs.iter().map(f).sum()
    }

    /// Errors of every kind in every phase, warm-up included.
    fn errors(&self) -> u64 {
        self.sum(|r| r.warmup.total_errors() + r.dora.total_errors() + r.latency.total_errors())
    }

    fn retransmits(&self) -> u64 {
        self.sum(|r| r.warmup.retransmits + r.dora.retransmits)
    }

    /// Target CPU time per completed DORA, over the runs where it was measured.
    fn target_cpu_us_per_dora(&self) -> Option<f64> {
        let (cpu, n) = self
            .runs
            .iter()
            .filter_map(|r| Some((r.target_cpu?, r.dora.completed)))
            .fold((Duration::ZERO, 0u64), |(c, n), (rc, rn)| (c + rc, n + rn));
        (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64)
    }

    /// Generator CPU over wall time of the recorded rounds, in % of one core.
    fn generator_cpu_pct(&self) -> Option<f64> {
        let (cpu, wall) = self
            .runs
            .iter()
            .filter_map(|r| Some((r.generator_cpu?, r.dora.elapsed)))
            .fold((Duration::ZERO, Duration::ZERO), |(c, w), (rc, rw)| {
                (c + rc, w + rw)
            });
        (!wall.is_zero()).then(|| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64())
    }

    /// The shortest round of recorded DORA (one exchange per reservation) in any run.
    fn shortest_round(&self) -> Option<Duration> {
        self.runs
            .iter()
            .flat_map(|r| {
                let marks = &r.dora.round_marks;
                let starts = std::iter::once(Duration::ZERO).chain(marks.iter().copied());
                starts.zip(marks.iter().copied()).map(|(a, b)| b - a)
            })
            .min()
    }

    fn all_ok(&self) -> bool {
        self.failures.is_empty() && !self.runs.is_empty() && self.errors() == 0
    }

    fn first_errors(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.warmup
                    .first_errors
                    .iter()
                    .chain(&r.dora.first_errors)
                    .chain(&r.latency.first_errors)
            })
            .take(8)
            .cloned()
            .collect()
    }
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse(std::env::args().skip(1))?;
    nanovnf_tests::require_root_and_tools(&["ip"]).map_err(anyhow::Error::msg)?;
    let mut targets = args
        .targets
        .iter()
        .map(|n| make_target(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let net = DhcpNet::new(args.reservations)?;

    let mut world = World::new("bench-dhcp")?;
    let bridge = world.add_bridge("br", 1500)?;
    let client = world.add_instance("gen", &bridge, None, None, 1500)?;
    let mut generator = Generator::on(&client)?;

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
                "rep {}/{}: {}: {} reservations, 1 warm-up + {} rounds of DORA, {} DISCOVERs...",
                rep + 1,
                args.reps,
                result.name,
                args.reservations,
                args.rounds,
                args.samples
            );
            match measure(
                target.as_mut(),
                &mut world,
                &bridge,
                &net,
                &mut generator,
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

/// Start, probe, warm up, measure and stop `target` once.
fn measure(
    target: &mut dyn DhcpTarget,
    world: &mut World,
    bridge: &str,
    net: &DhcpNet,
    generator: &mut Generator,
    args: &Args,
) -> anyhow::Result<Run> {
    let mut running = target.start(world, bridge, net)?;
    let measured = measure_running(running.as_mut(), net, generator, args);
    let stopped = running.stop(world);
    let run = measured?;
    stopped?;
    Ok(run)
}

fn measure_running(
    running: &mut dyn RunningTarget,
    net: &DhcpNet,
    generator: &mut Generator,
    args: &Args,
) -> anyhow::Result<Run> {
    let with_diagnostics = |e: anyhow::Error| e.context(running.diagnostics());
    let ready_after = generator
        .wait_ready(&net.reservations[0], READY_TIMEOUT)
        .map_err(with_diagnostics)?;
    let warmup = generator.run_dora(&net.reservations, &args.dora(1))?;
    let cpu = |pid: Option<u32>| pid.and_then(nanovnf_tests::process_cpu_time);
    let me = Some(std::process::id());
    let (target0, gen0) = (cpu(running.pid()), cpu(me));
    let dora = generator.run_dora(&net.reservations, &args.dora(args.rounds))?;
    let (target1, gen1) = (cpu(running.pid()), cpu(me));
    let latency = generator.discover_latency(&net.reservations, &args.latency())?;
    let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    let live = match running.control() {
        Some(control) => live_changes(control, net)?,
        None => Vec::new(),
    };
    Ok(Run {
        ready_after,
        warmup,
        dora,
        latency,
        target_cpu: diff(target0, target1),
        generator_cpu: diff(gen0, gen1),
        live,
    })
}

/// How many reservation changes are timed per run (half adds, half removals).
const LIVE_CHANGES: usize = 200;

/// Adds and removes a reservation for a port that is not in `net`, LIVE_CHANGES times,
/// timing each change from the call to the appliance's acknowledgement.
fn live_changes(
    control: &mut nanovnf_qemu::ControlClient,
    net: &DhcpNet,
) -> anyhow::Result<Vec<Duration>> {
    let last = net.reservations.last().context("no reservations")?;
    let ip = std::net::Ipv4Addr::from(u32::from(last.ip) + 1);
    let mac = [0xfa, 0x16, 0x3e, 0xee, 0xee, 0x01];
    let mut out = Vec::with_capacity(LIVE_CHANGES);
    for i in 0..LIVE_CHANGES {
        let op = if i % 2 == 0 {
            Op::DhcpUpsert(DhcpHost {
                mac,
                ip,
                hostname: "live".into(),
            })
        } else {
            Op::DhcpRemove { mac }
        };
        let t = std::time::Instant::now();
        control.call(op, Duration::from_secs(5))?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

/// A table row: its label and how to fill a target's cell.
type Row = (&'static str, fn(&TargetResult) -> String);

fn print_report(args: &Args, results: &[TargetResult]) {
    println!(
        "nanovnf DHCP benchmark: {} reservations; {} rounds of full DORA per run \
         (window {}, after 1 warm-up round); {} paced DISCOVERs for latency; {} rep(s); \
         {} host CPUs",
        args.reservations,
        args.rounds,
        args.window,
        args.samples,
        args.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for r in results {
        println!("  {}: {}", r.name, r.describe);
    }
    let rows: [Row; 9] = [
        ("DORA/s", |r| fmt_opt(r.dora_per_sec(), 0)),
        ("DISCOVER->OFFER p50 (ms)", |r| {
            fmt_opt(r.latency_ms(50.0), 3)
        }),
        ("DISCOVER->OFFER p99 (ms)", |r| {
            fmt_opt(r.latency_ms(99.0), 3)
        }),
        ("errors", |r| {
            if r.runs.is_empty() {
                "run failed".to_owned()
            } else {
                r.errors().to_string()
            }
        }),
        ("retransmits", |r| r.retransmits().to_string()),
        ("live change p50 (ms)", |r| fmt_opt(r.live_ms(50.0), 3)),
        ("live change p99 (ms)", |r| fmt_opt(r.live_ms(99.0), 3)),
        ("target CPU per DORA (us)", |r| {
            fmt_opt(r.target_cpu_us_per_dora(), 1)
        }),
        ("generator CPU (% of 1 core)", |r| {
            fmt_opt(r.generator_cpu_pct(), 0)
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
            print!(" {:>width$}", cell(r));
        }
        println!();
    }
    for r in results {
        // Only dnsmasq's cost depends on the wall-clock second (its lease-file rewrite).
        if let Some(short) = r
            .shortest_round()
            .filter(|&d| r.name == "dnsmasq" && d < Duration::from_secs(1))
        {
            println!(
                "note: {}: a round took {:.0} ms. A client repeating its DORA within the \
                 wall-clock second of its last one gets the same lease expiry, and dnsmasq \
                 then skips the lease-file rewrite it does after every other ACK: raise \
                 --reservations so that rounds last over a second for a steady-state figure.",
                r.name,
                ms(short)
            );
        }
        for e in r.first_errors() {
            println!("{} error: {e}", r.name);
        }
        for f in &r.failures {
            println!("{} run failed: {f}", r.name);
        }
    }
}

fn dora_json(d: &DoraReport) -> Value {
    json!({
        "attempted": d.attempted,
        "completed": d.completed,
        "elapsed_ms": ms(d.elapsed),
        "per_sec": d.per_sec(),
        "timeouts": d.errors.timeouts,
        "naks": d.errors.naks,
        "wrong_ip": d.errors.wrong_ip,
        "bad_offer": d.errors.bad_offer,
        "retransmits": d.retransmits,
        "send_errors": d.send_errors,
        "stray_replies": d.stray_replies,
        "round_marks_ms": d.round_marks.iter().map(|&t| ms(t)).collect::<Vec<_>>(),
    })
}

fn to_json(args: &Args, results: &[TargetResult]) -> Value {
    let lat = args.latency();
    let targets: serde_json::Map<String, Value> = results
        .iter()
        .map(|r| {
            let runs: Vec<Value> = r
                .runs
                .iter()
                .map(|run| {
                    json!({
                        "ready_after_ms": ms(run.ready_after),
                        "warmup": dora_json(&run.warmup),
                        "dora": dora_json(&run.dora),
                        "latency_timeouts": run.latency.timeouts,
                        "latency_wrong_ip": run.latency.wrong_ip,
                        "latency_samples": run.latency.samples.len(),
                        "target_cpu_ms": run.target_cpu.map(ms),
                        "generator_cpu_ms": run.generator_cpu.map(ms),
                    })
                })
                .collect();
            let value = json!({
                "describe": r.describe,
                "dora_per_sec": r.dora_per_sec(),
                "dora_per_sec_runs": r.dora_rates(),
                "discover_offer_ms": {
                    "p50": r.latency_ms(50.0),
                    "p90": r.latency_ms(90.0),
                    "p99": r.latency_ms(99.0),
                    "min": r.latency_ms(0.0),
                    "max": r.latency_ms(100.0),
                    "n": r.latency_samples().len(),
                },
                "errors": r.errors(),
                "retransmits": r.retransmits(),
                "live_change_ms": { "p50": r.live_ms(50.0), "p99": r.live_ms(99.0) },
                "target_cpu_us_per_dora": r.target_cpu_us_per_dora(),
                "generator_cpu_pct": r.generator_cpu_pct(),
                "shortest_round_ms": r.shortest_round().map(ms),
                "first_errors": r.first_errors(),
                "failures": r.failures,
                "runs": runs,
            });
            (r.name.clone(), value)
        })
        .collect();
    json!({
        "benchmark": "dhcp",
        "reservations": args.reservations,
        "rounds": args.rounds,
        "warmup_rounds": 1,
        "window": args.window,
        "retransmit_after_ms": ms(DoraOptions::default().retransmit_after),
        "max_tries": DoraOptions::default().max_tries,
        "latency_samples": args.samples,
        "latency_gap_ms": ms(lat.gap),
        "latency_timeout_ms": ms(lat.timeout),
        "reps": args.reps,
        "host_cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let d = parse(&[]).unwrap();
        assert_eq!(d.targets, KNOWN_TARGETS);
        assert_eq!((d.reservations, d.rounds, d.window), (1000, 10, 64));
        assert_eq!((d.samples, d.reps, d.json), (1000, 1, None));
        let a = parse(&[
            "--targets",
            "dnsmasq",
            "--reservations",
            "50",
            "--rounds",
            "2",
            "--window",
            "8",
            "--samples",
            "10",
            "--reps",
            "3",
            "--json",
            "-",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                targets: vec!["dnsmasq".to_owned()],
                reservations: 50,
                rounds: 2,
                window: 8,
                samples: 10,
                reps: 3,
                json: Some(PathBuf::from("-")),
            }
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--rounds", "0"][..],
            &["--window", "x"],
            &["--targets", "bind9"],
            &["--reps"],
            &["--frobnicate", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
