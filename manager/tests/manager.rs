//! End to end: the `nanovnf` binary itself, run inside a namespace of its own test world
//! (`ip netns exec NS nanovnf …`), making real bridges and taps through netlink and
//! booting real appliances, checked with `ip`, `status --json`, real DHCP clients and
//! `curl` against the metadata service.

use nanovnf_tests::mac_to_string;
use nanovnf_tests::metadata::curl;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Host, MTU, alive, wait_until};

const VM1: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x11];
const VM2: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x12];

fn network(name: &str, third_octet: u8) -> String {
    format!(
        r#"
[[network]]
name = "{name}"
mtu = {MTU}

[[subnet]]
name = "{name}-subnet"
network = "{name}"
cidr = "192.168.{third_octet}.0/24"
gateway_ip = "192.168.{third_octet}.1"
"#
    )
}

fn port(name: &str, network: &str, mac: [u8; 6], extra: &str) -> String {
    format!(
        "\n[[port]]\nname = \"{name}\"\nnetwork = \"{network}\"\nmac_address = \"{}\"\n{extra}\n",
        mac_to_string(mac)
    )
}

fn one_network() -> String {
    network("demo-net", 1)
        + &port(
            "vm1",
            "demo-net",
            VM1,
            "fixed_ip = \"192.168.1.11\"\ntap = \"tapvm1\"",
        )
}

#[test]
fn up_status_down_leaves_nothing_behind() {
    let Some(mut host) = Host::new("mgr_up_down", &["busybox"]) else {
        return;
    };
    let file = host.write("topology.toml", &one_network());
    let before = host.links();
    host.up(&file);

    let status = host.status();
    let net = &status["networks"][0];
    assert_eq!(net["name"], "demo-net");
    assert_eq!(net["mtu"], MTU);
    let bridge = net["bridge"].as_str().unwrap().to_owned();
    assert!(bridge.len() <= 15, "{bridge}");
    let kinds: Vec<&str> = net["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dhcp", "metadata"]);
    for a in net["appliances"].as_array().unwrap() {
        assert_eq!(a["state"], "ready", "{a}");
        assert!(alive(a["pid"].as_u64().unwrap() as u32), "{a}");
        assert!(a["mac"].as_str().unwrap().starts_with("fa:16:3e:"), "{a}");
    }
    // The appliances take the first free addresses of the pool (.1 is the gateway).
    assert_eq!(net["appliances"][0]["ips"][0], "192.168.1.2/24");
    assert_eq!(net["appliances"][1]["ips"][0], "192.168.1.3/24");
    assert_eq!(status["ports"][0]["name"], "vm1");
    assert_eq!(status["ports"][0]["ip"], "192.168.1.11");
    assert_eq!(status["ports"][0]["tap"], "tapvm1");

    // Links: the bridge (MTU 1450), one tap per appliance and the port's tap, all on it.
    let links = host.links();
    assert!(links.contains(&bridge), "{links:?}");
    assert!(links.contains(&"tapvm1".to_owned()), "{links:?}");
    let tapvm1 = host
        .world
        .ip(host.world.host_ns(), &["-d", "link", "show", "tapvm1"])
        .unwrap();
    assert!(tapvm1.contains(&format!("master {bridge}")), "{tapvm1}");
    assert!(tapvm1.contains(&format!("mtu {MTU}")), "{tapvm1}");

    // The DHCP appliance serves the port.
    let got = host.lease("vm1", "demo-net", VM1);
    assert!(got.contains(&"192.168.1.11/24".to_owned()), "{got:?}");

    let pids: Vec<u32> = host.pids().into_values().collect();
    let out = host.run(&["down"]);
    assert_eq!(out.status.code(), Some(0));
    for pid in pids {
        assert!(!alive(pid), "appliance {pid} survived down");
    }
    let after: Vec<String> = host
        .links()
        .into_iter()
        .filter(|l| !l.starts_with(host.world.prefix()))
        .collect();
    assert_eq!(after, before, "down left links behind");
    let run = host.state.join("run");
    assert!(
        !run.exists() || std::fs::read_dir(&run).unwrap().next().is_none(),
        "down left files in {}",
        run.display()
    );
    let status = host.status();
    assert_eq!(status["networks"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_second_up_restarts_nothing_and_a_new_port_is_served_live() {
    let Some(mut host) = Host::new("mgr_live", &["busybox"]) else {
        return;
    };
    let file = host.write("topology.toml", &one_network());
    host.up(&file);
    let pids = host.pids();
    assert_eq!(pids.len(), 2, "{pids:?}");

    let again = host.up(&file);
    assert_eq!(host.pids(), pids, "a second up restarted something");
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("unchanged"), "{text}");

    // A new port: a live update of the running DHCP (and metadata) appliance.
    let file = host.write(
        "topology.toml",
        &(one_network() + &port("vm2", "demo-net", VM2, "fixed_ip = \"192.168.1.12\"")),
    );
    let changed = host.up(&file);
    assert_eq!(host.pids(), pids, "the new port rebooted an appliance");
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(text.contains("updated live"), "{text}");
    let got = host.lease("vm2", "demo-net", VM2);
    assert!(got.contains(&"192.168.1.12/24".to_owned()), "{got:?}");

    // A removed network stops its appliances and deletes its links.
    let bridge = host.bridge("demo-net");
    let file = host.write("topology.toml", &network("other-net", 7));
    host.up(&file);
    for pid in pids.values() {
        assert!(
            !alive(*pid),
            "appliance {pid} of the removed network survived"
        );
    }
    assert!(!host.links().contains(&bridge), "bridge {bridge} survived");
    assert!(!host.links().contains(&"tapvm1".to_owned()));
    assert_eq!(host.pids().len(), 2);
}

/// The password the manager keeps for the port with `mac` (state.db, read-only).
fn saved_password(state: &Path, mac: [u8; 6]) -> Option<Vec<u8>> {
    let db = rusqlite::Connection::open_with_flags(
        state.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT password FROM passwords WHERE mac = ?1",
        [mac_to_string(mac)],
        |r| r.get(0),
    )
    .ok()
}

#[test]
fn a_crashed_appliance_is_serving_again_within_a_second() {
    let Some(mut host) = Host::new("mgr_crash", &["busybox", "curl"]) else {
        return;
    };
    let file = host.write("topology.toml", &one_network());
    host.watch(&file);
    let pids = host.pids();
    let dhcp = pids["dhcp/demo-net"];

    // SAFETY: kill(2) on the appliance's pid, which the manager reports and which is
    // inside this test's namespace.
    unsafe {
        libc::kill(dhcp as i32, libc::SIGKILL);
    }
    let killed = Instant::now();
    wait_until(Duration::from_secs(5), "a new DHCP appliance", || {
        host.all_ready() && host.pids().get("dhcp/demo-net").is_some_and(|p| *p != dhcp)
    });
    let back = killed.elapsed();
    eprintln!(
        "DHCP appliance back {:.0} ms after kill -9",
        back.as_secs_f64() * 1000.0
    );
    assert!(back < Duration::from_secs(1), "took {back:?}");
    // Serving, with its configuration re-pushed: the port still gets its address.
    let (vm1, got) = host.lease_instance("vm1", "demo-net", VM1, MTU, 5);
    assert!(got.contains(&"192.168.1.11/24".to_owned()), "{got:?}");
    assert_eq!(host.pids()["metadata/demo-net"], pids["metadata/demo-net"]);

    // The password the instance sets reaches the manager's state, and a restarted
    // metadata appliance still has it: GET returns it and a second POST is refused.
    let password = "c2VjcmV0IGVuY3J5cHRlZCB3aXRoIHRoZSBpbnN0YW5jZSdzIGtleQ==";
    let post = |data: &str| {
        curl(
            &host.world,
            &vm1,
            "/openstack/latest/password",
            &["-X", "POST", "--data-binary", data],
        )
        .expect("curl POST")
    };
    assert_eq!(post(password).status, 200);
    let posted = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the password in the manager's state",
        || saved_password(&host.state, VM1).as_deref() == Some(password.as_bytes()),
    );
    eprintln!(
        "password saved by the manager {:.0} ms after the POST",
        posted.elapsed().as_secs_f64() * 1000.0
    );
    let metadata = pids["metadata/demo-net"];
    // SAFETY: kill(2) on the appliance's pid, which the manager reports and which is
    // inside this test's namespace.
    unsafe {
        libc::kill(metadata as i32, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(5), "a new metadata appliance", || {
        host.all_ready()
            && host
                .pids()
                .get("metadata/demo-net")
                .is_some_and(|p| *p != metadata)
    });
    let get = curl(&host.world, &vm1, "/openstack/latest/password", &[]).expect("curl GET");
    assert_eq!((get.status, get.text()), (200, password.to_owned()));
    assert_eq!(post("another").status, 409);

    // SIGHUP re-applies the changed file, live.
    let file2 = host.write(
        "topology.toml",
        &(one_network() + &port("vm2", "demo-net", VM2, "fixed_ip = \"192.168.1.12\"")),
    );
    assert_eq!(file, file2);
    let watcher = host.watcher.as_ref().unwrap().id();
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe {
        libc::kill(watcher as i32, libc::SIGHUP);
    }
    wait_until(
        Duration::from_secs(10),
        "the port of the re-applied file",
        || host.status()["ports"].as_array().map(Vec::len) == Some(2),
    );
    let got = host.lease("vm2", "demo-net", VM2);
    assert!(got.contains(&"192.168.1.12/24".to_owned()), "{got:?}");
}

#[test]
fn a_killed_manager_is_succeeded_by_one_that_adopts_what_runs() {
    let Some(mut host) = Host::new("mgr_adopt", &["ping"]) else {
        return;
    };
    // Killed mid-supervision: the appliances run on, and keep answering meanwhile.
    let file = host.write("topology.toml", &one_network());
    host.watch(&file);
    let pids = host.pids();
    let bridge = host.bridge("demo-net");
    host.world.adopt_bridge(&bridge);
    let probe = host
        .world
        .add_instance("probe", &bridge, Some("192.168.1.200/24"), None, MTU)
        .unwrap();
    let mut ping = Command::new("ip");
    ping.args([
        "netns",
        "exec",
        &probe.ns,
        "ping",
        "-q",
        "-i",
        "0.01",
        "-c",
        "300",
        "-W",
        "1",
        "192.168.1.2",
    ]);
    let pinger = ping.stdout(Stdio::piped()).spawn().unwrap();
    // Kill the manager only once replies flow (the probe has resolved the appliance).
    wait_until(Duration::from_secs(5), "the first echo replies", || {
        host.world
            .ip(&probe.ns, &["neigh", "show", "192.168.1.2"])
            .is_ok_and(|n| n.contains("REACHABLE"))
    });
    host.stop_watcher(libc::SIGKILL);
    let out = host.up(&file);
    let ping_out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&ping_out.stdout);
    eprintln!("{summary}");
    assert!(
        summary.contains(" 0% packet loss"),
        "packets lost while the manager was replaced: {summary}"
    );
    assert_eq!(host.pids(), pids, "the new manager rebooted an appliance");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));

    // Killed mid-up, while three networks boot: the next up converges and adopts.
    let mut text = one_network();
    for (i, name) in ["net-b", "net-c", "net-d"].iter().enumerate() {
        text += &network(name, 20 + i as u8);
    }
    let file = host.write("topology.toml", &text);
    let mut child = host
        .command(&["up", file.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the first new appliance", || {
        host.pids().len() > 2
    });
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let half = host.pids();
    host.up(&file);
    let all = host.pids();
    assert_eq!(all.len(), 8, "{all:?}");
    assert!(host.all_ready());
    for (id, pid) in &half {
        if alive(*pid) {
            assert_eq!(all[id], *pid, "{id} was rebooted instead of adopted");
        }
    }
    // No stray QEMU: every QEMU in this state dir is one the state knows.
    let run_dir = host.state.join("run");
    let qemus: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(run_dir.to_str().unwrap()))
                .unwrap_or(false)
        })
        .collect();
    let mut known: Vec<u32> = all.values().copied().collect();
    let mut found = qemus.clone();
    known.sort();
    found.sort();
    assert_eq!(found, known, "QEMU processes without a record");
}

/// A veth in the host namespace standing in for a physical NIC (its peer stays there too).
fn fake_nic(host: &mut Host) -> String {
    let ns = host.world.host_ns().to_owned();
    let phys = host.world.name("eth").unwrap();
    let peer = host.world.name("ethp").unwrap();
    host.world
        .ip(
            &ns,
            &["link", "add", &phys, "type", "veth", "peer", "name", &peer],
        )
        .unwrap();
    phys
}

#[test]
fn a_flat_network_enslaves_its_host_interface_and_down_releases_it() {
    let Some(mut host) = Host::new("mgr_flat", &[]) else {
        return;
    };
    let phys = fake_nic(&mut host);
    let file = host.write(
        "topology.toml",
        &format!(
            r#"
[physical_networks]
external = "{phys}"

[[network]]
name = "ext-net"
external = true
segment = {{ type = "flat", physical_network = "external" }}
"#
        ),
    );
    host.up(&file);
    let ns = host.world.host_ns().to_owned();
    let ext = host.bridge("ext-net");
    let shown = host.world.ip(&ns, &["-d", "link", "show", &phys]).unwrap();
    assert!(shown.contains(&format!("master {ext}")), "{shown}");
    assert!(shown.contains("mtu 1500"), "{shown}");

    host.run(&["down"]);
    let shown = host.world.ip(&ns, &["-d", "link", "show", &phys]).unwrap();
    assert!(!shown.contains("master"), "{phys} still enslaved: {shown}");
    assert!(
        host.links().contains(&phys),
        "down deleted a link it did not create"
    );
    assert!(!host.links().contains(&ext));
}

#[test]
fn a_vlan_network_gets_a_vlan_link_or_a_clear_refusal() {
    let Some(mut host) = Host::new("mgr_vlan", &[]) else {
        return;
    };
    let phys = fake_nic(&mut host);
    let file = host.write(
        "topology.toml",
        &format!(
            r#"
[physical_networks]
physnet1 = "{phys}"

[[network]]
name = "vlan-net"
segment = {{ type = "vlan", physical_network = "physnet1", vlan_id = 100 }}
"#
        ),
    );
    let ns = host.world.host_ns().to_owned();
    let before = host.links();
    let supported = Path::new("/proc/net/vlan").exists()
        || host
            .world
            .ip(
                &ns,
                &[
                    "link", "add", "link", &phys, "name", "nvvprobe", "type", "vlan", "id", "9",
                ],
            )
            .is_ok();
    if !supported {
        eprintln!(
            "\n*** mgr_vlan: this kernel has no 802.1Q support; checking that up refuses \
             the vlan network clearly instead of creating it ***\n"
        );
        let out = host.run(&["up", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no 802.1Q"), "{stderr}");
        assert_eq!(host.links(), before, "a refused up created links");
        return;
    }
    let _ = host.world.ip(&ns, &["link", "del", "nvvprobe"]);
    host.up(&file);
    let bridge = host.bridge("vlan-net");
    let vlans = host
        .world
        .ip(&ns, &["-d", "link", "show", "type", "vlan"])
        .unwrap();
    assert!(vlans.contains("vlan protocol 802.1Q id 100"), "{vlans}");
    assert!(vlans.contains(&format!("master {bridge}")), "{vlans}");
    assert!(vlans.contains(&format!("@{phys}")), "{vlans}");
    host.run(&["down"]);
    let left = host
        .world
        .ip(&ns, &["-d", "link", "show", "type", "vlan"])
        .unwrap();
    assert!(left.trim().is_empty(), "VLAN link left: {left}");
    assert!(host.links().contains(&phys));
}

#[test]
fn invalid_files_are_refused_with_their_line_and_nothing_is_created() {
    let Some(mut host) = Host::new("mgr_invalid", &[]) else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/tests/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "only {} invalid files", cases.len());
    let before = host.links();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let expected = std::fs::read_to_string(case.with_extension("expected")).unwrap();
        let out = host
            .command(&["up", name])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        for line in expected.lines() {
            assert!(
                stderr.contains(line),
                "{name}: missing {line:?} in\n{stderr}"
            );
        }
        assert!(stderr.contains("nothing was changed"), "{stderr}");
    }
    assert_eq!(host.links(), before, "an invalid file created links");
    assert!(host.pids().is_empty());
    let _ = &mut host;
}
