//! Two nanovnf hosts on one VXLAN network (issue 8): each host is its own network namespace
//! with its own topology file, state directory and `nanovnf up`, and the two are joined by
//! an underlay cable (a veth pair between their underlay interfaces). Same VNI on both; each
//! lists the other's VTEP in `remote_vteps` and the other's instance as a `remote_vtep` port
//! (l2population), with the ARP responder on, as Neutron's OVS/Linux bridge agents run with
//! `l2_population` and `arp_responder`. On each host an instance namespace takes a DHCP lease;
//! then the two instances talk across the overlay.
//!
//! Where DHCP runs: a subnet with `enable_dhcp` gives *this* host a DHCP appliance (and a
//! metadata appliance), each holding the first free addresses of the allocation pool.
//! Neutron runs one DHCP agent per network (`dhcp_agents_per_network = 1`), on one host,
//! not one per compute host; two files that both enabled DHCP would put two servers on one
//! segment holding the same addresses. So host A's file enables DHCP and declares host B's
//! instance as a `remote_vtep` port (its reservation and metadata live on A), while host
//! B's file declares the same subnet with `enable_dhcp = false`: B runs only its VXLAN
//! gateway, and B's instance takes its lease from A's appliance across the overlay.
//!
//! Both hosts name the network alike, as Neutron's hosts share one network; their gateways
//! still need MACs of their own, since their underlay NICs meet on one segment.

mod common;

use common::{Capture, Host};
use nanovnf_tests::dhcp_clients::mtu;
use nanovnf_tests::{Instance, mac_to_string};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VTEP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const MAC_A: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0xa0, 0x01];
const MAC_B: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0xb0, 0x01];
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 11);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 12);
const VNI: u32 = 1001;
/// The overlay's MTU: the vxlan default, 1500 minus VXLAN's 50 bytes.
const OVERLAY_MTU: u32 = 1450;
/// Bytes sent each way over TCP.
const TRANSFER_BYTES: usize = 4 << 20;

/// Host A (`dhcp = true`) or host B's topology: both instances' ports, each with
/// `remote_vtep` on the host it does not live on.
fn topology(underlay: &str, local: Ipv4Addr, remote: Ipv4Addr, dhcp: bool) -> String {
    let port = |name: &str, mac: [u8; 6], ip: Ipv4Addr, vtep: Ipv4Addr| {
        let remote_vtep = if vtep == local {
            String::new()
        } else {
            format!("remote_vtep = \"{vtep}\"\n")
        };
        format!(
            "[[port]]\nname = \"{name}\"\nnetwork = \"overlay\"\nmac_address = \"{}\"\n\
             fixed_ip = \"{ip}\"\n{remote_vtep}",
            mac_to_string(mac)
        )
    };
    format!(
        r#"
[underlay]
interface = "{underlay}"
udp_port = 4789

[[network]]
name = "overlay"
segment = {{ type = "vxlan", vni = {VNI}, local_vtep = "{local}/24", remote_vteps = ["{remote}"], arp_responder = true }}

[[subnet]]
name = "overlay-subnet"
network = "overlay"
cidr = "10.40.0.0/24"
enable_dhcp = {dhcp}

{}
{}"#,
        port("vm-a", MAC_A, IP_A, VTEP_A),
        port("vm-b", MAC_B, IP_B, VTEP_B),
    )
}

/// `(kind, mac)` of every appliance `host` runs, sorted.
fn appliances(host: &Host) -> Vec<(String, String)> {
    let status = host.status();
    let mut all: Vec<(String, String)> = status["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["appliances"].as_array().into_iter().flatten())
        .map(|a| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (field("kind"), field("mac"))
        })
        .collect();
    all.sort();
    all
}

/// `len` bytes that compress badly and differ per `seed` (xorshift64).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends the file `data` from instance `from` to `to` (at `dst`) over TCP, socat at both
/// ends, and returns what the receiver wrote.
fn transfer(
    sender: &Host,
    from: &Instance,
    receiver: &mut Host,
    to: &Instance,
    dst: Ipv4Addr,
    data: &Path,
) -> Vec<u8> {
    let out = receiver.world.scratch_dir().join("received");
    let mut srv = Command::new("socat");
    srv.args(["-u", "TCP-LISTEN:7300,reuseaddr"])
        .arg(format!("CREATE:{}", out.display()))
        .stdout(Stdio::null());
    let pid = receiver.world.spawn(&to.ns, srv).expect("socat server");
    // The client retries its connect until the server listens.
    let sent = sender
        .world
        .exec(
            &from.ns,
            &[
                "timeout",
                "60",
                "socat",
                "-u",
                &format!("OPEN:{}", data.display()),
                &format!("TCP:{dst}:7300,retry=100,interval=0.1"),
            ],
        )
        .expect("socat client");
    assert!(
        sent.status.success(),
        "sending to {dst}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // The server exits once it has written everything up to the client's FIN.
    let server = receiver.world.child_mut(pid).expect("socat server child");
    let mut status = None;
    nanovnf_tests::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        status = server.try_wait().expect("wait for socat");
        status.is_some()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "the socat server at {dst} did not finish: {status:?}"
    );
    std::fs::read(&out).expect("received file")
}

/// A frame the underlay may carry.
#[derive(Debug, PartialEq, Eq)]
enum UnderlayFrame {
    /// VXLAN (UDP to port 4789, our VNI) from one VTEP to the other; the frame's length.
    Vxlan(usize),
    /// ARP between the two VTEPs.
    Arp,
    /// An IGMP membership report of a host's own underlay bridge: Linux announces the
    /// link-local groups of every interface that comes up.
    HostIgmp,
}

/// Classifies one packet of a [`common::Captured`]; `None` for anything the underlay
/// should not carry. `bridge_macs`: the MACs of both hosts' underlay bridges.
fn underlay_frame(packet: &str, bridge_macs: &[String]) -> Option<UnderlayFrame> {
    let vteps = [VTEP_A, VTEP_B];
    let outer = packet.split(" | ").next()?;
    let (ethernet, rest) = outer.split_once(", ethertype ")?;
    let src_mac = ethernet.split_whitespace().nth(1)?;
    let (ethertype, rest) = rest.split_once(", length ")?;
    let (len, l3) = rest.split_once(": ")?;
    if ethertype.starts_with("ARP") {
        let ips: Vec<Ipv4Addr> = l3
            .split([' ', ','])
            .filter_map(|w| w.parse().ok())
            .collect();
        let ok = !ips.is_empty() && ips.iter().all(|ip| vteps.contains(ip));
        return ok.then_some(UnderlayFrame::Arp);
    }
    if !ethertype.starts_with("IPv4") {
        return None;
    }
    let (src, rest) = l3.split_once(" > ")?;
    let (dst, what) = rest.split_once(": ")?;
    if bridge_macs.iter().any(|m| m == src_mac) && what.starts_with("igmp") {
        return Some(UnderlayFrame::HostIgmp);
    }
    let (src_ip, _) = src.rsplit_once('.')?;
    let (dst_ip, dst_port) = dst.rsplit_once('.')?;
    let (src_ip, dst_ip): (Ipv4Addr, Ipv4Addr) = (src_ip.parse().ok()?, dst_ip.parse().ok()?);
    let ok = vteps.contains(&src_ip)
        && vteps.contains(&dst_ip)
        && src_ip != dst_ip
        && dst_port == "4789"
        && what.starts_with("VXLAN")
        && what.ends_with(&format!("vni {VNI}"));
    ok.then(|| len.parse().ok().map(UnderlayFrame::Vxlan))
        .flatten()
}

/// The MAC of the bridge that `ifname` (in `host`'s namespace) is enslaved to.
fn master_mac(host: &Host, ifname: &str) -> String {
    let ns = host.world.host_ns();
    let word_after = |text: &str, word: &str| {
        let mut words = text.split_whitespace();
        words.position(|w| w == word);
        words
            .next()
            .unwrap_or_else(|| panic!("no {word} in {text:?}"))
            .to_owned()
    };
    let link = host.world.ip(ns, &["-o", "link", "show", ifname]).unwrap();
    let master = word_after(&link, "master");
    let bridge = host.world.ip(ns, &["-o", "link", "show", &master]).unwrap();
    word_after(&bridge, "link/ether")
}

#[test]
fn two_hosts_share_a_vxlan_network() {
    let tools = ["busybox", "tcpdump", "ping", "socat", "timeout"];
    let Some(mut a) = Host::new("vx2_a", &tools) else {
        return;
    };
    let Some(mut b) = Host::new("vx2_b", &tools) else {
        return;
    };
    let started = Instant::now();

    // The underlay cable: one veth pair, one end in each host namespace.
    let ul_a = a.world.name("ul").unwrap();
    let ul_b = b.world.name("ul").unwrap();
    a.world
        .ip(
            a.world.host_ns(),
            &[
                "link",
                "add",
                &ul_a,
                "type",
                "veth",
                "peer",
                "name",
                &ul_b,
                "netns",
                b.world.host_ns(),
            ],
        )
        .expect("underlay veth pair");

    // Two managers, each with its own file and state dir, brought up at the same time.
    let file_a = a.write("topology.toml", &topology(&ul_a, VTEP_A, VTEP_B, true));
    let file_b = b.write("topology.toml", &topology(&ul_b, VTEP_B, VTEP_A, false));
    std::thread::scope(|s| {
        s.spawn(|| a.up(&file_a));
        s.spawn(|| b.up(&file_b));
    });
    let (on_a, on_b) = (appliances(&a), appliances(&b));
    let kinds = |on: &[(String, String)]| on.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&on_a), ["dhcp", "metadata", "vxlan"], "host A");
    assert_eq!(kinds(&on_b), ["vxlan"], "host B runs no DHCP of its own");
    assert_ne!(
        on_a[2].1, on_b[0].1,
        "both hosts' VXLAN gateways have one MAC"
    );

    // Everything on the underlay from here on, seen at host A's end of the cable.
    let ns_a = a.world.host_ns().to_owned();
    let underlay = Capture::all(&mut a, &ns_a, &ul_a);

    // Both instances take leases from host A's DHCP appliance (host B's across the
    // overlay) and apply the overlay's MTU from option 26: their links start at 1500.
    let (inst_a, addrs_a) = a.lease_instance("vm", "overlay", MAC_A, 1500, 10);
    let (inst_b, addrs_b) = b.lease_instance("vm", "overlay", MAC_B, 1500, 10);
    for (inst, host, addrs, ip) in [(&inst_a, &a, &addrs_a, IP_A), (&inst_b, &b, &addrs_b, IP_B)] {
        assert_eq!(addrs, &[format!("{ip}/24")], "lease of {}", inst.ns);
        assert_eq!(
            mtu(&host.world, inst).unwrap(),
            OVERLAY_MTU,
            "{} did not get MTU {OVERLAY_MTU} by DHCP",
            inst.ns
        );
    }
    let leased = started.elapsed();

    // Ping both ways.
    assert!(
        inst_a
            .ping(&a.world, IP_B, 3, Duration::from_secs(10))
            .unwrap(),
        "no ping A -> B across the overlay"
    );
    assert!(
        inst_b
            .ping(&b.world, IP_A, 3, Duration::from_secs(10))
            .unwrap(),
        "no ping B -> A across the overlay"
    );

    // TCP both ways: 4 MiB each, full-size segments (MSS 1410) that fill the underlay's
    // 1500 bytes once encapsulated, compared byte for byte.
    let data_ab = a.world.scratch_dir().join("a-to-b");
    std::fs::write(&data_ab, pattern(TRANSFER_BYTES, 0xa)).unwrap();
    let data_ba = b.world.scratch_dir().join("b-to-a");
    std::fs::write(&data_ba, pattern(TRANSFER_BYTES, 0xb)).unwrap();
    let t = Instant::now();
    let got = transfer(&a, &inst_a, &mut b, &inst_b, IP_B, &data_ab);
    let ab = t.elapsed();
    assert!(
        got == std::fs::read(&data_ab).unwrap(),
        "A -> B: received {} bytes that differ from the {TRANSFER_BYTES} sent",
        got.len()
    );
    let t = Instant::now();
    let got = transfer(&b, &inst_b, &mut a, &inst_a, IP_A, &data_ba);
    let ba = t.elapsed();
    assert!(
        got == std::fs::read(&data_ba).unwrap(),
        "B -> A: received {} bytes that differ from the {TRANSFER_BYTES} sent",
        got.len()
    );

    // The underlay carried only VXLAN between the two VTEPs (and their ARP), and the
    // transfers went that way: at least both payloads, encapsulated.
    let captured = underlay.stop_all();
    assert_eq!(captured.dropped, 0, "tcpdump missed frames on the underlay");
    let bridge_macs = [master_mac(&a, &ul_a), master_mac(&b, &ul_b)];
    let strays: Vec<&String> = captured
        .packets
        .iter()
        .filter(|p| underlay_frame(p, &bridge_macs).is_none())
        .collect();
    assert!(
        strays.is_empty(),
        "the underlay carried {} frame(s) other than VXLAN {VTEP_A} <-> {VTEP_B}: {strays:#?}",
        strays.len()
    );
    let vxlan_bytes: usize = captured
        .packets
        .iter()
        .filter_map(|p| match underlay_frame(p, &bridge_macs) {
            Some(UnderlayFrame::Vxlan(len)) => Some(len),
            _ => None,
        })
        .sum();
    assert!(
        vxlan_bytes >= 2 * TRANSFER_BYTES,
        "only {vxlan_bytes} bytes of VXLAN on the underlay for 2 x {TRANSFER_BYTES} sent"
    );
    eprintln!(
        "two hosts: leases after {leased:?}; 4 MiB A -> B in {ab:?}, B -> A in {ba:?}; \
         {} underlay frames, {vxlan_bytes} bytes of VXLAN; {:?} in all",
        captured.packets.len(),
        started.elapsed()
    );
}
