//! `nanovnf demo`: the main job on an embedded topology, in a sandbox it creates and
//! removes. The sandbox's "host" namespace stands in for a compute host: this same binary
//! runs `nanovnf up` inside it, an "outside" namespace sits on the external network's
//! physical interface, and instance namespaces take their leases from the DHCP appliance
//! with a real DHCP client and read the metadata service with curl.

use anyhow::{Context, bail};
use nanovnf_tests::World;
use nanovnf_tests::dhcp_clients::{Client, addresses, mtu, routes};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Accelerator: auto (TCG where this host's KVM is the slow nested kvm_pvm), kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = crate::parse_accel)]
    accel: nanovnf_qemu::Accel,
    /// Where to write the topology picture (`.dot` and `.svg` are added).
    #[arg(long, default_value = "nanovnf-demo")]
    picture: PathBuf,
}

const VM1_MAC: &str = "fa:16:3e:00:00:11";
const VM2_MAC: &str = "fa:16:3e:00:00:12";

/// The embedded topology; `{phys}` is the sandbox's stand-in for a physical NIC.
fn topology(phys: &str, with_vm2: bool) -> String {
    let mut text = format!(
        r##"# nanovnf demo: an external flat network and one tenant network.
[physical_networks]
external = "{phys}"

[[network]]
name = "ext-net"
external = true
segment = {{ type = "flat", physical_network = "external" }}

[[subnet]]
name = "ext-subnet"
network = "ext-net"
cidr = "203.0.113.0/24"
gateway_ip = "203.0.113.1"
enable_dhcp = false

[[network]]
name = "demo-net"
mtu = 1450

[[subnet]]
name = "demo-subnet"
network = "demo-net"
cidr = "192.168.10.0/24"
gateway_ip = "192.168.10.1"
dns_domain = "demo.nanovnf"
host_routes = [{{ destination = "10.10.0.0/16", nexthop = "192.168.10.254" }}]
allocation_pools = [{{ start = "192.168.10.2", end = "192.168.10.200" }}]

[[port]]
name = "vm1"
network = "demo-net"
mac_address = "{VM1_MAC}"
fixed_ip = "192.168.10.11"
hostname = "vm1"

[port.instance]
name = "vm1"
project_id = "demo"
public_keys = {{ demo = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnly demo@nanovnf" }}
user_data = "#cloud-config\nhostname: vm1\n"
meta = {{ role = "web" }}
"##
    );
    if with_vm2 {
        let _ = write!(
            text,
            "\n[[port]]\nname = \"vm2\"\nnetwork = \"demo-net\"\nmac_address = \"{VM2_MAC}\"\n"
        );
    }
    text
}

struct Checks {
    all: bool,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str, detail: &str) {
        println!(
            "  [{}] {what}{}",
            if ok { "ok" } else { "FAILED" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        );
        self.all &= ok;
    }
}

fn ms(since: Instant) -> String {
    format!("{:.0} ms", since.elapsed().as_secs_f64() * 1000.0)
}

/// This binary, run inside the sandbox's host namespace.
fn nanovnf(world: &World, state: &Path, args: &[&str], accel: &str) -> anyhow::Result<Output> {
    let exe = std::env::current_exe().context("find this binary")?;
    Command::new("ip")
        .args(["netns", "exec", world.host_ns()])
        .arg(exe)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("NANOVNF_ACCEL", accel)
        .stdin(Stdio::null())
        .output()
        .context("run nanovnf in the sandbox")
}

pub fn run(args: &Args) -> anyhow::Result<bool> {
    nanovnf_qemu::preflight()?;
    if is_not_root() {
        bail!("the demo creates network namespaces and taps: run it as root");
    }
    let accel = args.accel.resolve()?.0.as_str();
    println!("building appliance images (x86_64-unknown-none, release)...");
    for image in nanovnf_build_images::build_all()? {
        println!(
            "  {:<9} {:>7} bytes ({:.1} KiB)",
            image.name,
            image.size,
            image.size as f64 / 1024.0
        );
    }

    let mut world = World::new("demo")?;
    std::fs::create_dir_all(world.scratch_dir())?;
    let state = world.scratch_dir().join("state");
    let ns = world.host_ns().to_owned();
    // The "physical" NIC of ext-net: a veth whose other end joins an uplink bridge where
    // the outside namespace lives.
    let uplink = world.add_bridge("up", 1500)?;
    let phys = world.name("eth1")?;
    let phys_peer = world.name("eth1p")?;
    world.ip(
        &ns,
        &[
            "link", "add", &phys, "type", "veth", "peer", "name", &phys_peer,
        ],
    )?;
    world.ip(&ns, &["link", "set", &phys_peer, "master", &uplink, "up"])?;
    let outside = world.add_instance("out", &uplink, Some("203.0.113.50/24"), None, 1500)?;
    let file = world.scratch_dir().join("topology.toml");
    std::fs::write(&file, topology(&phys, false))?;
    let file_s = file.display().to_string();

    let mut checks = Checks { all: true };
    println!();
    println!("sandbox: netns {ns} is the host; the topology is {file_s}");
    let t = Instant::now();
    let up = nanovnf(&world, &state, &["up", &file_s], accel)?;
    print!("{}", indent(&String::from_utf8_lossy(&up.stdout)));
    print!("{}", indent(&String::from_utf8_lossy(&up.stderr)));
    checks.check(
        up.status.success(),
        "`nanovnf up` made the sandbox match the file",
        &format!("{} to every appliance ready", ms(t)),
    );
    let status: serde_json::Value =
        serde_json::from_slice(&nanovnf(&world, &state, &["status", "--json"], accel)?.stdout)
            .context("status --json")?;
    println!();
    print!("{}", picture(&status, &phys, &outside.ns, &args.picture)?);
    println!();

    let bridge = |name: &str| -> String {
        status["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == name)
            .and_then(|n| n["bridge"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let ext_bridge = bridge("ext-net");
    let tenant = bridge("demo-net");
    let phys_shown = world.ip(&ns, &["-d", "link", "show", &phys])?;
    checks.check(
        phys_shown.contains(&format!("master {ext_bridge}")),
        "ext-net's bridge enslaves the mapped physical interface",
        &format!("{phys} -> {ext_bridge}"),
    );

    world.adopt_bridge(&tenant);
    let vm1 = world.add_instance("vm1", &tenant, None, Some(parse_mac(VM1_MAC)), 1500)?;
    let t = Instant::now();
    let (leased, _) = Client::Udhcpc.try_once(&world, &vm1, "vm1", 10)?;
    let got = addresses(&world, &vm1)?;
    checks.check(
        leased && got.iter().any(|a| a == "192.168.10.11/24"),
        "instance vm1 took its lease with busybox udhcpc",
        &format!("{} in {}", got.join(" "), ms(t)),
    );
    let link_mtu = mtu(&world, &vm1)?;
    checks.check(
        link_mtu == 1450,
        "MTU from option 26",
        &format!("{link_mtu}"),
    );
    let table = routes(&world, &vm1)?;
    let has = |prefix: &str| table.iter().any(|r| r.starts_with(prefix));
    checks.check(
        has("default via 192.168.10.1") && has("169.254.169.254 via") && has("10.10.0.0/16 via"),
        "classless routes (option 121): default, metadata, host route",
        &table.join("; "),
    );
    let dhcp_ip = "192.168.10.2";
    let t = Instant::now();
    let pinged = vm1.ping(&world, dhcp_ip.parse()?, 3, Duration::from_secs(5))?;
    checks.check(pinged, "ping the DHCP appliance", &ms(t));

    if nanovnf_tests::find_tool("dig").is_some() {
        let t = Instant::now();
        let out = world.exec(
            &vm1.ns,
            &[
                "dig",
                "+short",
                "+time=2",
                "@192.168.10.2",
                "vm1.demo.nanovnf",
            ],
        )?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        checks.check(
            answer == "192.168.10.11",
            "DNS: the DHCP appliance resolves vm1.demo.nanovnf",
            &format!("{answer} in {}", ms(t)),
        );
    }
    if nanovnf_tests::find_tool("curl").is_some() {
        let t = Instant::now();
        let out = world.exec(
            &vm1.ns,
            &[
                "curl",
                "-sf",
                "-m",
                "5",
                "http://169.254.169.254/openstack/latest/meta_data.json",
            ],
        )?;
        let body = String::from_utf8_lossy(&out.stdout);
        checks.check(
            out.status.success() && body.contains("\"hostname\"") && body.contains("vm1"),
            "metadata: curl http://169.254.169.254/openstack/latest/meta_data.json",
            &format!("{} bytes in {}", body.len(), ms(t)),
        );
    }

    // A live change: one more port, applied without rebooting anything.
    let pids_before = pids(&status);
    std::fs::write(&file, topology(&phys, true))?;
    let t = Instant::now();
    let again = nanovnf(&world, &state, &["up", &file_s], accel)?;
    let after: serde_json::Value =
        serde_json::from_slice(&nanovnf(&world, &state, &["status", "--json"], accel)?.stdout)?;
    checks.check(
        again.status.success() && pids(&after) == pids_before,
        "new port vm2 applied live (no appliance rebooted)",
        &ms(t),
    );
    let vm2 = world.add_instance("vm2", &tenant, None, Some(parse_mac(VM2_MAC)), 1500)?;
    let (leased, _) = Client::Udhcpc.try_once(&world, &vm2, "vm2", 10)?;
    let got = addresses(&world, &vm2)?;
    checks.check(
        leased && got.iter().any(|a| a.starts_with("192.168.10.")),
        "instance vm2 took its lease",
        &got.join(" "),
    );

    let t = Instant::now();
    let down = nanovnf(&world, &state, &["down"], accel)?;
    let left: Vec<String> = world
        .ip(&ns, &["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .filter(|l| l.starts_with("nv") && !l.starts_with(world.prefix()))
        .collect();
    checks.check(
        down.status.success() && left.is_empty(),
        "`nanovnf down` removed every link and appliance",
        &ms(t),
    );
    drop(world);
    println!("sandbox removed.");
    println!(
        "{}",
        if checks.all {
            "demo: every check passed"
        } else {
            "demo: some checks FAILED"
        }
    );
    Ok(checks.all)
}

fn pids(status: &serde_json::Value) -> Vec<u64> {
    status["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["appliances"].as_array().into_iter().flatten())
        .filter_map(|a| a["pid"].as_u64())
        .collect()
}

fn parse_mac(text: &str) -> [u8; 6] {
    text.parse::<nanovnf_topology::MacAddr>()
        .map(|m| m.octets())
        .unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// An ASCII picture of what runs (returned), and the same as DOT and SVG files.
fn picture(
    status: &serde_json::Value,
    phys: &str,
    outside_ns: &str,
    base: &Path,
) -> anyhow::Result<String> {
    let mut ascii = String::new();
    let mut dot = String::from("graph nanovnf {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut boxes: Vec<(String, Vec<String>)> = Vec::new();
    for n in status["networks"].as_array().into_iter().flatten() {
        let name = n["name"].as_str().unwrap_or_default();
        let bridge = n["bridge"].as_str().unwrap_or_default();
        let _ = writeln!(
            ascii,
            "  [{name}] bridge {bridge}, MTU {}, {}",
            n["mtu"],
            n["segment"].as_str().unwrap_or_default()
        );
        let _ = writeln!(
            dot,
            "  \"{name}\" [shape=ellipse, label=\"{name}\\n{bridge}\"];"
        );
        let mut members = Vec::new();
        if n["segment"] == "flat" {
            let _ = writeln!(ascii, "     ├── {phys} (physical) ── netns {outside_ns}");
            let _ = writeln!(
                dot,
                "  \"{name}\" -- \"{phys}\";\n  \"{phys}\" -- \"outside\";"
            );
            members.push(format!("{phys} (physical) — outside"));
        }
        for a in n["appliances"].as_array().into_iter().flatten() {
            let kind = a["kind"].as_str().unwrap_or_default();
            let ips: Vec<&str> = a["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str())
                .collect();
            let label = format!(
                "{kind} appliance {} pid {} {}",
                ips.join(" "),
                a["pid"],
                a["state"].as_str().unwrap_or_default()
            );
            let _ = writeln!(ascii, "     ├── [{label}]");
            let _ = writeln!(
                dot,
                "  \"{name}-{kind}\" [label=\"{kind}\\n{}\"];",
                ips.join("\\n")
            );
            let _ = writeln!(dot, "  \"{name}\" -- \"{name}-{kind}\";");
            members.push(label);
        }
        for p in status["ports"].as_array().into_iter().flatten() {
            if p["network"] == name {
                let label = format!(
                    "port {} {} {}",
                    p["name"].as_str().unwrap_or_default(),
                    p["mac"].as_str().unwrap_or_default(),
                    p["ip"].as_str().unwrap_or("-")
                );
                let _ = writeln!(ascii, "     └── {label} (instance namespace)");
                let pname = p["name"].as_str().unwrap_or_default();
                let _ = writeln!(dot, "  \"{name}\" -- \"{pname}\";");
                members.push(label);
            }
        }
        boxes.push((format!("{name} — {bridge}, MTU {}", n["mtu"]), members));
    }
    dot.push_str("}\n");
    let dot_path = base.with_extension("dot");
    std::fs::write(&dot_path, dot)?;
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg(&boxes))?;
    let _ = writeln!(
        ascii,
        "  (also drawn in {} and {})",
        dot_path.display(),
        svg_path.display()
    );
    Ok(ascii)
}

/// A plain SVG: one column per network, its bridge on top and its members below.
fn svg(boxes: &[(String, Vec<String>)]) -> String {
    let width = 420;
    let row = 34;
    let height = 60 + row * boxes.iter().map(|(_, m)| m.len() + 1).max().unwrap_or(1) as i32;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"monospace\" font-size=\"12\">\n",
        width * boxes.len().max(1) as i32 + 20
    );
    for (i, (title, members)) in boxes.iter().enumerate() {
        let x = 10 + width * i as i32;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"10\" width=\"{}\" height=\"26\" fill=\"#dde8f5\" stroke=\"#336\"/>\
             <text x=\"{}\" y=\"28\">{}</text>",
            width - 20,
            x + 6,
            xml(title)
        );
        for (j, m) in members.iter().enumerate() {
            let y = 50 + row * j as i32;
            let _ = writeln!(
                out,
                "<line x1=\"{}\" y1=\"36\" x2=\"{}\" y2=\"{y}\" stroke=\"#336\"/>\
                 <rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"24\" fill=\"#f4f4f4\" stroke=\"#666\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                x + 16,
                x + 16,
                x + 30,
                width - 50,
                x + 36,
                y + 16,
                xml(m)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
