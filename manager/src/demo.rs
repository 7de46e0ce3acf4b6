//! `nanovnf demo`: the main job on a sandbox it creates and removes. Today that is the ping
//! appliance (the foundation's proof of life); later stages add the tenant network with
//! DHCP, metadata, router and floating IP.

use anyhow::{Context, bail};
use nanovnf_qemu::{Accel, Nic, VmSpec};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use nanovnf_tests::{EchoProber, World};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Accelerator: auto (TCG where this host's KVM is the slow nested kvm_pvm), kvm or tcg.
    #[arg(long, default_value = "auto")]
    accel: String,
}

const APPLIANCE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const INSTANCE_CIDR: &str = "192.168.77.10/24";
const APPLIANCE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];

fn accel(name: &str) -> anyhow::Result<Accel> {
    Ok(match name {
        "auto" => Accel::Auto,
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => bail!("--accel {other}: expected auto, kvm or tcg"),
    })
}

fn check(ok: bool, what: &str, detail: &str, all: &mut bool) {
    println!(
        "  [{}] {what}{}",
        if ok { "ok" } else { "FAILED" },
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        }
    );
    *all &= ok;
}

pub fn run(args: &Args) -> anyhow::Result<bool> {
    let accel = accel(&args.accel)?;
    nanovnf_qemu::preflight()?;
    if is_not_root() {
        bail!("the demo creates network namespaces and taps: run it as root");
    }

    println!("building appliance images (x86_64-unknown-none, release)...");
    let images = nanovnf_build_images::build_all()?;
    for image in &images {
        println!(
            "  {:<6} {:>7} bytes ({:.1} KiB)",
            image.name,
            image.size,
            image.size as f64 / 1024.0
        );
    }
    let ping = images
        .iter()
        .find(|i| i.name == "ping")
        .context("ping image missing")?;

    let mut world = World::new("demo")?;
    let bridge = world.add_bridge("br", 1500)?;
    let tap = world.add_tap("tap", &bridge, 1500)?;
    let inst = world.add_instance("vm1", &bridge, Some(INSTANCE_CIDR), None, 1500)?;
    println!();
    println!("sandbox (removed at exit):");
    println!(
        "  netns {:<14}  bridge {bridge} ── tap {tap} ── [ping appliance {APPLIANCE_IP}]",
        world.host_ns()
    );
    println!(
        "  netns {:<14}  {} {INSTANCE_CIDR} ── veth ── bridge {bridge}",
        inst.ns, inst.ifname
    );
    println!();

    let config = BootConfig {
        generation: 1,
        name: "demo-ping".into(),
        log_level: LogLevel::Info,
        nics: vec![NicConfig {
            mac: APPLIANCE_MAC,
            addresses: vec![Ipv4Cidr::new(APPLIANCE_IP, 24)],
            mtu: 1500,
        }],
        role: Role::Ping,
    };
    // A static neighbour entry: the boot time measured is the appliance's, not Linux's
    // one-second ARP retry.
    inst.set_neighbor(&world, APPLIANCE_IP, APPLIANCE_MAC)?;
    let spec = VmSpec::new("demo-ping", &ping.path)
        .accel(accel)
        .memory_mib(4)
        .nic(Nic::new(tap.clone(), APPLIANCE_MAC))
        .config(nanovnf_schema::encode(&config))
        .run_dir(world.scratch_dir())
        .netns(world.host_ns());
    let prober = EchoProber::start(
        &inst.ns,
        APPLIANCE_IP,
        Duration::from_micros(250),
        Duration::from_secs(20),
    )?;
    let spawned = Instant::now();
    let mut vm = spec.spawn()?;
    let first_reply = prober.join()?;
    let ready = vm.wait_ready(Duration::from_secs(20));
    println!(
        "appliance: pid {}, accelerator {} ({})",
        vm.pid(),
        vm.accel(),
        vm.accel_reason()
    );

    let mut all = true;
    check(
        ready.is_ok(),
        "appliance printed READY",
        &ready
            .as_ref()
            .map(|g| format!("generation {g}"))
            .unwrap_or_else(|e| e.to_string()),
        &mut all,
    );
    match first_reply {
        Some(at) => check(
            true,
            "first ICMP echo reply",
            &format!(
                "{:.1} ms after QEMU was spawned",
                (at - spawned).as_secs_f64() * 1e3
            ),
            &mut all,
        ),
        None => check(false, "first ICMP echo reply", "none within 20 s", &mut all),
    }
    let t = Instant::now();
    let pinged = inst.ping(&world, APPLIANCE_IP, 3, Duration::from_secs(5))?;
    check(
        pinged,
        "`ping -c 3` from the instance namespace",
        &format!("{:.0} ms", t.elapsed().as_secs_f64() * 1e3),
        &mut all,
    );
    let rss = vm
        .rss_kib()
        .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_default();
    check(
        vm.try_wait()?.is_none(),
        "appliance still running",
        &format!("QEMU RSS {rss}"),
        &mut all,
    );
    drop(vm);
    drop(world);
    println!("sandbox removed.");
    println!(
        "{}",
        if all {
            "demo: every check passed"
        } else {
            "demo: some checks FAILED"
        }
    );
    Ok(all)
}

fn is_not_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) != Some("0"))
        })
        .unwrap_or(true)
}
