//! `bench-boot`: how fast a nanovnf appliance comes up, measured against the least QEMU
//! itself can do on this host.
//!
//! For each accelerator (TCG, and KVM when `/dev/kvm` is usable) it boots, interleaved,
//! the `floor` image (spawn → QEMU exit) and the `ping` appliance (spawn → first ICMP echo
//! reply seen from a namespace on its bridge, and spawn → `READY` on serial) N times each.
//! It reports median/min/max, the ping/floor ratio of medians (target ≤ 1.3 under TCG),
//! image sizes, and a running appliance's QEMU RSS and idle CPU: a table on stdout and
//! JSON in `--json`. Needs root; all traffic stays inside the namespaces of one [`World`].
//!
//! ```text
//! cargo run --release -p nanovnf-tests --bin bench-boot -- [--boots N] [--json PATH] [--accel tcg|kvm|both]
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nanovnf_build_images::Image;
use nanovnf_qemu::{Accel, Machine, Nic, ResolvedAccel, Vm, VmSpec};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use nanovnf_tests::bench::{Samples, ms};
use nanovnf_tests::{EchoProber, Instance, World};
use serde_json::{Value, json};

const USAGE: &str = "usage: bench-boot [--boots N] [--json PATH] [--accel tcg|kvm|both]";

const DEFAULT_BOOTS: usize = 30;
/// Unrecorded boots of each image per accelerator before measuring, so first-run costs
/// (page cache, QEMU's lazy setup) do not land in the samples.
const WARMUP_BOOTS: usize = 1;
/// Generous: a boot takes tens of milliseconds, but a stuck one must not stall the run.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the prober sends echo requests. Requests sent before the guest's NIC is up
/// wait in the tap's queue and are answered in a burst, so the first reply follows guest
/// readiness. Under this machine's nested KVM a guest needs ~2.5 ms per packet, so a fast
/// prober would build a backlog that takes seconds to drain: it probes more slowly there.
fn probe_interval(accel: ResolvedAccel) -> Duration {
    match accel {
        ResolvedAccel::Tcg => Duration::from_micros(200),
        ResolvedAccel::Kvm => Duration::from_millis(5),
    }
}
/// Time for a booted appliance to drain what the prober queued before idle is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// How long a booted, unprobed appliance is watched for its idle CPU use.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// What the TCG ping/floor ratio of medians should not exceed.
const TCG_TARGET_RATIO: f64 = 1.3;

/// The floor image's debug-exit value.
const FLOOR_EXIT_CODE: u32 = 0x7e;
/// The floor needs no heap or NIC: the smallest RAM microvm boots with.
const FLOOR_MEMORY_MIB: u32 = 2;
const PING_MEMORY_MIB: u32 = 4;

const MTU: u16 = 1500;
/// Locally administered; unique within the benchmark's own namespaces is enough.
const APPLIANCE_MAC: [u8; 6] = [0x02, 0x4e, 0x56, 0x42, 0x00, 0x01];
const APPLIANCE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 77, 1);
const PREFIX_LEN: u8 = 24;
const CLIENT_ADDR: &str = "198.19.77.10/24";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench-boot: some boots failed (see the table and the JSON)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-boot: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(false)` when it completed but some boots failed.
fn run() -> anyhow::Result<bool> {
    let args = Args::parse(std::env::args().skip(1))?;
    nanovnf_tests::require_root_and_tools(&["ip"]).map_err(anyhow::Error::msg)?;
    nanovnf_qemu::preflight()?;
    let (accels, kvm_unavailable) = args.accels.resolve()?;
    if let Some(why) = &kvm_unavailable {
        let banner = format!("*** KVM UNAVAILABLE ({why}): reporting TCG only ***");
        eprintln!("\n{banner}\n");
        println!("{banner}\n");
    }

    let images = nanovnf_build_images::build_all().context("building the appliance images")?;
    let image = |name: &str| -> anyhow::Result<PathBuf> {
        let found = images.iter().find(|i| i.name == name);
        Ok(found
            .ok_or_else(|| anyhow!("image {name} not built"))?
            .path
            .clone())
    };
    let (floor, ping) = (image("floor")?, image("ping")?);
    let run_dir = nanovnf_build_images::workspace_root().join("target/bench/run");

    let net = PingNet::new()?;
    let mut results = Vec::new();
    for accel in accels {
        eprintln!(
            "{accel}: {WARMUP_BOOTS} warm-up + {} boots each of floor and ping...",
            args.boots
        );
        let bench = BootBench {
            accel,
            floor: &floor,
            ping: &ping,
            run_dir: &run_dir,
            net: &net,
        };
        results.push(bench.run(args.boots));
    }

    let header = Header::new(args.boots, kvm_unavailable);
    print_report(&header, &images, &results);
    write_json(&args.json, &header, &images, &results)?;
    println!("\nJSON written to {}", args.json.display());
    Ok(results.iter().all(AccelResult::all_ok))
}

/// Which accelerators to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccelChoice {
    Tcg,
    Kvm,
    Both,
}

impl AccelChoice {
    /// The accelerators to run, and why KVM was dropped from `Both` if it was. Asking for
    /// KVM alone where it is unusable is an error.
    fn resolve(self) -> anyhow::Result<(Vec<ResolvedAccel>, Option<String>)> {
        let kvm = Accel::Kvm.resolve().map(|_| ());
        Ok(match (self, kvm) {
            (AccelChoice::Tcg, _) => (vec![ResolvedAccel::Tcg], None),
            (AccelChoice::Kvm, Ok(())) => (vec![ResolvedAccel::Kvm], None),
            (AccelChoice::Kvm, Err(e)) => return Err(e).context("--accel kvm"),
            (AccelChoice::Both, Ok(())) => (vec![ResolvedAccel::Tcg, ResolvedAccel::Kvm], None),
            (AccelChoice::Both, Err(e)) => (vec![ResolvedAccel::Tcg], Some(format!("{e}"))),
        })
    }
}

#[derive(Debug, PartialEq)]
struct Args {
    boots: usize,
    json: PathBuf,
    accels: AccelChoice,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut parsed = Args {
            boots: DEFAULT_BOOTS,
            json: nanovnf_build_images::workspace_root().join("target/bench/boot.json"),
            accels: AccelChoice::Both,
        };
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = args
                .next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--boots" => {
                    parsed.boots = value
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| anyhow!("--boots {value:?}: need a positive integer"))?;
                }
                "--json" => parsed.json = PathBuf::from(value),
                "--accel" => {
                    parsed.accels = match value.as_str() {
                        "tcg" => AccelChoice::Tcg,
                        "kvm" => AccelChoice::Kvm,
                        "both" => AccelChoice::Both,
                        _ => bail!("--accel {value:?}: expected tcg, kvm or both"),
                    }
                }
                _ => bail!("unknown argument {flag:?}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

/// The network the ping appliance boots into: a bridge with the appliance's tap and one
/// client namespace that already knows the appliance's MAC (so no probe waits on ARP).
struct PingNet {
    /// Dropped last: deletes every namespace, bridge and tap below.
    world: World,
    tap: String,
    client: Instance,
}

impl PingNet {
    fn new() -> anyhow::Result<PingNet> {
        let mut world = World::new("bench-boot")?;
        let bridge = world.add_bridge("br", MTU)?;
        let tap = world.add_tap("tap", &bridge, MTU)?;
        let client = world.add_instance("cli", &bridge, Some(CLIENT_ADDR), None, MTU)?;
        client.set_neighbor(&world, APPLIANCE_IP, APPLIANCE_MAC)?;
        Ok(PingNet { world, tap, client })
    }
}

/// One accelerator's measurements.
struct BootBench<'a> {
    accel: ResolvedAccel,
    floor: &'a Path,
    ping: &'a Path,
    run_dir: &'a Path,
    net: &'a PingNet,
}

/// What one accelerator's run measured.
struct AccelResult {
    accel: ResolvedAccel,
    floor_exit: Samples,
    ping_first_reply: Samples,
    ping_ready: Samples,
    idle: anyhow::Result<IdleUse>,
}

impl AccelResult {
    fn all_ok(&self) -> bool {
        self.floor_exit.failures() == 0
            && self.ping_first_reply.failures() == 0
            && self.ping_ready.failures() == 0
            && self.idle.is_ok()
    }

    /// Median spawn→first reply over median spawn→exit of the floor.
    fn ratio(&self) -> Option<f64> {
        let ping = self.ping_first_reply.summary()?.median;
        let floor = self.floor_exit.summary()?.median;
        Some(ping.as_secs_f64() / floor.as_secs_f64())
    }
}

/// A booted appliance left alone for [`IDLE_WINDOW`].
struct IdleUse {
    rss_kib: u64,
    cpu: Duration,
}

/// The two timings of one ping appliance boot, each of which may fail on its own.
struct PingBoot {
    first_reply: anyhow::Result<Duration>,
    ready: anyhow::Result<Duration>,
    /// Still running; dropping it kills QEMU.
    vm: Vm,
}

impl BootBench<'_> {
    fn run(&self, boots: usize) -> AccelResult {
        for _ in 0..WARMUP_BOOTS {
            if let Err(e) = self.boot_floor() {
                eprintln!("{}: floor warm-up failed: {e:#}", self.accel);
            }
            if let Err(e) = self.boot_ping() {
                eprintln!("{}: ping warm-up failed: {e:#}", self.accel);
            }
        }
        let mut result = AccelResult {
            accel: self.accel,
            floor_exit: Samples::default(),
            ping_first_reply: Samples::default(),
            ping_ready: Samples::default(),
            idle: Err(anyhow!("not measured")),
        };
        // Interleaved, so drift in host load affects both sides of the ratio alike.
        for _ in 0..boots {
            result.floor_exit.push(self.boot_floor());
            match self.boot_ping() {
                Ok(boot) => {
                    result.ping_first_reply.push(boot.first_reply);
                    result.ping_ready.push(boot.ready);
                    drop(boot.vm); // killed before the next boot takes the tap
                }
                Err(e) => {
                    result.ping_ready.push(Err(anyhow!("{e:#}")));
                    result.ping_first_reply.push(Err(e));
                }
            }
        }
        result.idle = self.idle_use();
        result
    }

    fn accel(&self) -> Accel {
        match self.accel {
            ResolvedAccel::Tcg => Accel::Tcg,
            ResolvedAccel::Kvm => Accel::Kvm,
        }
    }

    /// Spawn → QEMU exit of the floor image, which must exit with [`FLOOR_EXIT_CODE`].
    fn boot_floor(&self) -> anyhow::Result<Duration> {
        let spec = VmSpec::new(format!("floor-{}", self.accel), self.floor)
            .machine(Machine::Microvm)
            .accel(self.accel())
            .memory_mib(FLOOR_MEMORY_MIB)
            .run_dir(self.run_dir);
        let start = Instant::now();
        let mut vm = spec.spawn()?;
        let status = vm.wait_exit(BOOT_TIMEOUT)?;
        let took = start.elapsed();
        match Vm::guest_exit_code(status) {
            Some(FLOOR_EXIT_CODE) => Ok(took),
            code => {
                bail!("floor exited with {status} (guest code {code:?}, want {FLOOR_EXIT_CODE:#x})")
            }
        }
    }

    /// Boots the ping appliance with a prober already sending from the client namespace.
    /// `Err` only when the boot could not even be started.
    fn boot_ping(&self) -> anyhow::Result<PingBoot> {
        let net = self.net;
        let config = BootConfig {
            generation: 1,
            name: "bench-ping".to_owned(),
            log_level: LogLevel::Info,
            nics: vec![NicConfig {
                mac: APPLIANCE_MAC,
                addresses: vec![Ipv4Cidr::new(APPLIANCE_IP, PREFIX_LEN)],
                mtu: MTU,
            }],
            role: Role::Ping,
        };
        let spec = VmSpec::new(format!("ping-{}", self.accel), self.ping)
            .machine(Machine::Microvm)
            .accel(self.accel())
            .memory_mib(PING_MEMORY_MIB)
            .nic(Nic::new(&net.tap, APPLIANCE_MAC))
            .config(nanovnf_schema::encode(&config))
            .netns(net.world.host_ns())
            .run_dir(self.run_dir);

        // The first request is out when `start` returns: the clock starts after it.
        let prober = EchoProber::start(
            &net.client.ns,
            APPLIANCE_IP,
            probe_interval(self.accel),
            BOOT_TIMEOUT,
        )?;
        let start = Instant::now();
        let mut vm = spec.spawn()?;
        // READY is watched on its own thread so the reply is timed without waiting on it.
        let watcher = std::thread::spawn(move || {
            let ready = vm.wait_ready(BOOT_TIMEOUT).map(|_| Instant::now());
            (vm, ready)
        });
        let reply = prober.join();
        let (vm, ready) = match watcher.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let first_reply = reply.and_then(|at| {
            let at = at.ok_or_else(|| anyhow!("no echo reply within {BOOT_TIMEOUT:?}"))?;
            Ok(at - start)
        });
        Ok(PingBoot {
            first_reply,
            ready: ready.map(|at| at - start).map_err(anyhow::Error::from),
            vm,
        })
    }

    /// QEMU's RSS and CPU use while a booted, answered appliance sits idle.
    fn idle_use(&self) -> anyhow::Result<IdleUse> {
        let boot = self.boot_ping()?;
        boot.first_reply
            .context("booting the appliance to watch idle")?;
        let vm = boot.vm;
        let gone = || anyhow!("QEMU of {} exited while idle", vm.name());
        std::thread::sleep(IDLE_SETTLE);
        let before = vm.cpu_time().ok_or_else(gone)?;
        std::thread::sleep(IDLE_WINDOW);
        let after = vm.cpu_time().ok_or_else(gone)?;
        let rss_kib = vm.rss_kib().ok_or_else(gone)?;
        Ok(IdleUse {
            rss_kib,
            cpu: after.saturating_sub(before),
        })
    }
}

/// What the run was, for both the table and the JSON.
struct Header {
    boots: usize,
    qemu_version: String,
    host_cpus: usize,
    kvm_pvm: bool,
    kvm_unavailable: Option<String>,
}

impl Header {
    fn new(boots: usize, kvm_unavailable: Option<String>) -> Header {
        let qemu_version = Command::new(nanovnf_qemu::DEFAULT_QEMU_BINARY)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        Header {
            boots,
            qemu_version,
            host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            kvm_unavailable,
        }
    }
}

fn print_report(header: &Header, images: &[Image], results: &[AccelResult]) {
    println!(
        "nanovnf boot benchmark: {} boots per metric (interleaved, after {WARMUP_BOOTS} warm-up)",
        header.boots
    );
    println!(
        "{}; {} host CPUs{}",
        header.qemu_version,
        header.host_cpus,
        if header.kvm_pvm {
            "; KVM is nested kvm_pvm"
        } else {
            ""
        }
    );

    println!("\n{:<8} {:>9}", "image", "bytes");
    for image in images {
        println!("{:<8} {:>9}", image.name, image.size);
    }

    println!(
        "\n{:<5} {:<34} {:>4} {:>4} {:>9} {:>8} {:>8}",
        "accel", "metric", "ok", "fail", "median ms", "min ms", "max ms"
    );
    for r in results {
        for (metric, samples) in [
            ("floor: spawn -> QEMU exit", &r.floor_exit),
            ("ping: spawn -> first echo reply", &r.ping_first_reply),
            ("ping: spawn -> READY (1 ms polls)", &r.ping_ready),
        ] {
            let stats = samples.summary().map_or_else(
                || format!("{:>9} {:>8} {:>8}", "-", "-", "-"),
                |s| {
                    format!(
                        "{:>9.2} {:>8.2} {:>8.2}",
                        ms(s.median),
                        ms(s.min),
                        ms(s.max)
                    )
                },
            );
            println!(
                "{:<5} {metric:<34} {:>4} {:>4} {stats}",
                r.accel.as_str(),
                samples.durations().len(),
                samples.failures()
            );
        }
    }

    println!(
        "\n{:<5} {:>16} {:<14} {:>14} {}",
        "accel",
        "ping/floor (med)",
        "target",
        "ping RSS KiB",
        format_args!("idle CPU over {} s", IDLE_WINDOW.as_secs())
    );
    for r in results {
        let ratio = r
            .ratio()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let target = match (r.accel, r.ratio()) {
            (ResolvedAccel::Tcg, Some(x)) if x <= TCG_TARGET_RATIO => {
                format!("<= {TCG_TARGET_RATIO}: met")
            }
            (ResolvedAccel::Tcg, _) => format!("<= {TCG_TARGET_RATIO}: MISSED"),
            (ResolvedAccel::Kvm, _) => "-".to_owned(),
        };
        let (rss, cpu) = match &r.idle {
            Ok(idle) => (
                idle.rss_kib.to_string(),
                format!(
                    "{:.0} ms ({:.1}%)",
                    ms(idle.cpu),
                    100.0 * idle.cpu.as_secs_f64() / IDLE_WINDOW.as_secs_f64()
                ),
            ),
            Err(e) => ("-".to_owned(), format!("failed: {e:#}")),
        };
        println!(
            "{:<5} {ratio:>16} {target:<14} {rss:>14} {cpu}",
            r.accel.as_str()
        );
    }

    for r in results {
        for (metric, samples) in [
            ("floor", &r.floor_exit),
            ("ping first reply", &r.ping_first_reply),
            ("ping READY", &r.ping_ready),
        ] {
            for why in samples.first_failures() {
                println!("{} {metric} failure: {why}", r.accel);
            }
        }
    }
}

fn write_json(
    path: &Path,
    header: &Header,
    images: &[Image],
    results: &[AccelResult],
) -> anyhow::Result<()> {
    let accelerators: serde_json::Map<String, Value> = results
        .iter()
        .map(|r| {
            let (rss_kib, idle_cpu_ms, idle_error) = match &r.idle {
                Ok(idle) => (Some(idle.rss_kib), Some(ms(idle.cpu)), None),
                Err(e) => (None, None, Some(format!("{e:#}"))),
            };
            let target = (r.accel == ResolvedAccel::Tcg).then_some(TCG_TARGET_RATIO);
            let value = json!({
                "floor_spawn_to_exit": r.floor_exit.to_json(),
                "ping_spawn_to_first_reply": r.ping_first_reply.to_json(),
                "ping_spawn_to_ready": r.ping_ready.to_json(),
                "ratio_ping_over_floor_median": r.ratio(),
                "target_ratio": target,
                "ping_qemu_rss_kib": rss_kib,
                "ping_idle_cpu_ms": idle_cpu_ms,
                "idle_window_ms": ms(IDLE_WINDOW),
                "idle_settle_ms": ms(IDLE_SETTLE),
                "idle_error": idle_error,
                "probe_interval_ms": ms(probe_interval(r.accel)),
            });
            (r.accel.to_string(), value)
        })
        .collect();
    let report = json!({
        "benchmark": "boot",
        "boots": header.boots,
        "warmup_boots": WARMUP_BOOTS,
        "ready_poll_ms": 1.0,
        "qemu_version": header.qemu_version,
        "host_cpus": header.host_cpus,
        "kvm_pvm": header.kvm_pvm,
        "kvm_unavailable": header.kvm_unavailable,
        "images": images
            .iter()
            .map(|i| json!({"name": i.name, "bytes": i.size, "path": i.path}))
            .collect::<Vec<_>>(),
        "accelerators": accelerators,
    });
    nanovnf_tests::bench::write_json(path, &report)
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
        assert_eq!((d.boots, d.accels), (DEFAULT_BOOTS, AccelChoice::Both));
        assert!(d.json.ends_with("target/bench/boot.json"));
        let a = parse(&["--boots", "5", "--accel", "tcg", "--json", "x.json"]).unwrap();
        assert_eq!(
            a,
            Args {
                boots: 5,
                json: PathBuf::from("x.json"),
                accels: AccelChoice::Tcg
            }
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--boots", "0"][..],
            &["--boots", "many"],
            &["--accel", "hvf"],
            &["--boots"],
            &["--frobnicate", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
