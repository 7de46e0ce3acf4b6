//! The VXLAN gateway end to end, through `nanovnf up`, against a peer nobody here wrote:
//! "remote host" namespaces on the underlay bridge run Linux's own `vxlan` device (same
//! VNI and port, `remote` = our local_vtep) and play the remote instance themselves.

mod common;

use common::{Capture, Host, MTU};
use nanovnf_tests::dhcp_clients::{Client, addresses};
use nanovnf_tests::{Instance, mac_to_string};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

const LOCAL_VTEP: &str = "192.0.2.11";
const REMOTE_VTEP: &str = "192.0.2.20";
const THIRD_VTEP: &str = "192.0.2.30";
const REMOTE_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x20, 0x01];
const THIRD_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x30, 0x01];
const LOCAL_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x11, 0x01];
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 20);
const THIRD_IP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 30);
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 11);

fn topology(underlay: &str) -> String {
    format!(
        r#"
[underlay]
interface = "{underlay}"
udp_port = 4789

[[network]]
name = "overlay"
segment = {{ type = "vxlan", vni = 1001, local_vtep = "{LOCAL_VTEP}/24", remote_vteps = ["{REMOTE_VTEP}", "{THIRD_VTEP}"], arp_responder = true }}

[[subnet]]
name = "overlay-subnet"
network = "overlay"
cidr = "10.30.0.0/24"
gateway_ip = "10.30.0.1"

[[port]]
name = "local-vm"
network = "overlay"
mac_address = "{local}"
fixed_ip = "{LOCAL_IP}"

[[port]]
name = "remote-vm"
network = "overlay"
mac_address = "{remote}"
fixed_ip = "{REMOTE_IP}"
remote_vtep = "{REMOTE_VTEP}"

[[port]]
name = "third-vm"
network = "overlay"
mac_address = "{third}"
fixed_ip = "{THIRD_IP}"
remote_vtep = "{THIRD_VTEP}"
"#,
        local = mac_to_string(LOCAL_MAC),
        remote = mac_to_string(REMOTE_MAC),
        third = mac_to_string(THIRD_MAC),
    )
}

/// A remote host on the underlay bridge at `vtep`, with Linux's vxlan device `vx0`
/// (VNI 1001, port 4789, towards our local_vtep) carrying `mac`: the remote instance,
/// and the host's underlay interface (where its VXLAN packets can be captured).
fn remote_host(
    host: &mut Host,
    short: &str,
    underlay_bridge: &str,
    vtep: &str,
    mac: [u8; 6],
) -> (Instance, String) {
    host.world.adopt_bridge(underlay_bridge);
    let rh = host
        .world
        .add_instance(
            short,
            underlay_bridge,
            Some(&format!("{vtep}/24")),
            None,
            1500,
        )
        .expect("remote host");
    let mac_s = mac_to_string(mac);
    host.world
        .ip(
            &rh.ns,
            &[
                "link", "add", "vx0", "address", &mac_s, "type", "vxlan", "id", "1001", "local",
                vtep, "remote", LOCAL_VTEP, "dstport", "4789", "dev", &rh.ifname,
            ],
        )
        .expect("linux vxlan");
    host.world
        .ip(
            &rh.ns,
            &["link", "set", "vx0", "mtu", &MTU.to_string(), "up"],
        )
        .expect("vx0 up");
    let instance = Instance {
        ns: rh.ns.clone(),
        ifname: "vx0".into(),
        mac,
        addr: None,
        host_port: rh.host_port.clone(),
    };
    (instance, rh.ifname)
}

fn underlay_bridge(host: &Host) -> String {
    let out = host
        .world
        .ip(
            host.world.host_ns(),
            &["-o", "link", "show", "type", "bridge"],
        )
        .unwrap();
    let status = host.status();
    let overlay = status["networks"][0]["bridge"].as_str().unwrap().to_owned();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_owned())
        .find(|n| *n != overlay && n.starts_with("nvb"))
        .expect("the underlay bridge")
}

#[test]
fn gateway_interoperates_with_linux_vxlan() {
    let Some(mut host) = Host::new("vx_linux", &["busybox", "tcpdump", "ping", "socat"]) else {
        return;
    };
    // The underlay's host interface: one end of a veth pair whose other end stays idle.
    let ns = host.world.host_ns().to_owned();
    let phys = host.world.name("ul").unwrap();
    let peer = host.world.name("ulp").unwrap();
    host.world
        .ip(
            &ns,
            &["link", "add", &phys, "type", "veth", "peer", "name", &peer],
        )
        .unwrap();
    let file = host.write("topology.toml", &topology(&phys));
    host.up(&file);
    let status = host.status();
    let kinds: Vec<&str> = status["networks"][0]["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"vxlan"), "{status}");
    let ul = underlay_bridge(&host);
    let (remote, remote_if) = remote_host(&mut host, "rh", &ul, REMOTE_VTEP, REMOTE_MAC);
    let (third, third_if) = remote_host(&mut host, "rh3", &ul, THIRD_VTEP, THIRD_MAC);

    // The remote instance takes its lease from our DHCP appliance, across the overlay,
    // with the overlay's MTU.
    let (ok, events) = Client::Udhcpc
        .try_once(&host.world, &remote, "remote", 10)
        .expect("udhcpc");
    assert!(
        ok,
        "the remote instance got no lease across the overlay: {events:?}"
    );
    let got = addresses(&host.world, &remote).unwrap();
    assert!(
        got.iter().any(|a| a.starts_with(&REMOTE_IP.to_string())),
        "{got:?}"
    );
    let mtu = host.world.ip(&remote.ns, &["link", "show", "vx0"]).unwrap();
    assert!(mtu.contains(&format!("mtu {MTU}")), "{mtu}");
    host.world
        .ip(
            &third.ns,
            &["addr", "add", &format!("{THIRD_IP}/24"), "dev", "vx0"],
        )
        .unwrap();

    // The local instance, on the tenant bridge, by DHCP too.
    let local_addrs = host.lease("li", "overlay", LOCAL_MAC);
    assert!(
        local_addrs
            .iter()
            .any(|a| a.starts_with(&LOCAL_IP.to_string())),
        "{local_addrs:?}"
    );
    let local = Instance {
        ns: format!("{}-li", host.world.prefix()),
        ifname: format!("{}-li", host.world.prefix()),
        mac: LOCAL_MAC,
        addr: Some((LOCAL_IP, 24)),
        host_port: String::new(),
    };

    // Ping both ways.
    assert!(
        local
            .ping(&host.world, REMOTE_IP, 3, Duration::from_secs(10))
            .unwrap(),
        "local -> remote"
    );
    assert!(
        remote
            .ping(&host.world, LOCAL_IP, 3, Duration::from_secs(10))
            .unwrap(),
        "remote -> local"
    );
    // TCP both ways (socat serves, busybox nc asks until the server listens).
    for (server, client, dst) in [(&remote, &local, REMOTE_IP), (&local, &remote, LOCAL_IP)] {
        let mut srv = Command::new("socat");
        srv.args(["TCP-LISTEN:7100,reuseaddr", "SYSTEM:echo over-the-overlay"])
            .stdout(Stdio::null());
        host.world.spawn(&server.ns, srv).unwrap();
        let mut text = String::new();
        nanovnf_tests::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let out = host
                .world
                .exec(
                    &client.ns,
                    &["busybox", "nc", "-w", "3", &dst.to_string(), "7100"],
                )
                .unwrap();
            text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("over-the-overlay")
        });
        assert!(text.contains("over-the-overlay"), "TCP to {dst}: {text:?}");
    }

    // Unicast goes to the right VTEP only: the third VTEP sees none of 20 pings.
    let quiet = Capture::start(
        &mut host,
        &third.ns,
        &third_if,
        &format!("dst host {THIRD_VTEP}"),
    );
    let busy = Capture::start(
        &mut host,
        &remote.ns,
        &remote_if,
        &format!("dst host {REMOTE_VTEP}"),
    );
    let _ = local.ping(&host.world, REMOTE_IP, 20, Duration::from_secs(10));
    // Every echo request reaches the remote VTEP (which shows the capture works) ...
    assert!(
        nanovnf_tests::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            busy.count() >= 20
        }),
        "the remote VTEP saw {} VXLAN packets for 20 pings",
        busy.count()
    );
    busy.stop();
    // ... and none reaches the third. (Broadcasts may: the instance's DHCP DISCOVER was
    // flooded to both VTEPs and may still be leaving the gateway's queue for the third
    // VTEP while its address resolves.)
    let stray: Vec<String> = quiet
        .stop_all()
        .packets
        .into_iter()
        .filter(|p| !p.contains("> ff:ff:ff:ff:ff:ff"))
        .collect();
    assert!(
        stray.is_empty(),
        "the third VTEP received unicast meant for the remote one: {stray:?}"
    );

    // ARP responder: the local instance's ARP for the remote instance is answered by the
    // gateway; no ARP crosses the overlay (inner EtherType 0x0806 at UDP offset 28).
    let arp_capture = Capture::start(
        &mut host,
        &remote.ns,
        &remote_if,
        &format!("dst host {REMOTE_VTEP} and udp[28:2] = 0x0806"),
    );
    host.world
        .ip(&local.ns, &["neigh", "flush", "all"])
        .unwrap();
    assert!(
        local
            .ping(&host.world, REMOTE_IP, 2, Duration::from_secs(6))
            .unwrap()
    );
    let arps = arp_capture.stop();
    assert_eq!(
        arps, 0,
        "an ARP request crossed the overlay despite the ARP responder"
    );
    let neigh = host
        .world
        .ip(&local.ns, &["neigh", "show", &REMOTE_IP.to_string()])
        .unwrap();
    assert!(neigh.contains(&mac_to_string(REMOTE_MAC)), "{neigh}");
}
