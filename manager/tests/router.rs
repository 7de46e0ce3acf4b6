//! The router appliance end to end, through `nanovnf up`, with the checks Tempest and
//! neutron-tempest-plugin run against a Neutron router: instance namespaces on two tenant
//! networks, an "outside" namespace on the external network running servers, and only
//! real tools (ping, socat, traceroute) on both sides.

mod common;

use common::Host;
use nanovnf_tests::{Instance, World};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

const GW_A: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 1);
const VM_A: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 11);
const VM_A2: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 12);
const VM_B: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 11);
const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 101);
const FLOATING: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 102);
const OUTSIDE_GW: &str = "203.0.113.1/24";
/// A server "on the Internet": behind the external subnet's gateway, so reaching it takes
/// the router's default route.
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// net-b is narrower, as a VXLAN network would be: the router must fragment or refuse.
const MTU_B: u16 = 1400;

fn topology(floating_port: Option<&str>) -> String {
    let floating = match floating_port {
        Some(port) => format!("port = \"{port}\""),
        None => String::new(),
    };
    format!(
        r#"
[[network]]
name = "ext-net"
external = true
segment = {{ type = "local" }}

[[subnet]]
name = "ext-sub"
network = "ext-net"
cidr = "203.0.113.0/24"
gateway_ip = "203.0.113.1"
enable_dhcp = false

[[network]]
name = "net-a"
mtu = 1500
segment = {{ type = "local" }}

[[subnet]]
name = "sub-a"
network = "net-a"
cidr = "10.10.1.0/24"
gateway_ip = "{GW_A}"
enable_dhcp = false

[[network]]
name = "net-b"
mtu = {MTU_B}
segment = {{ type = "local" }}

[[subnet]]
name = "sub-b"
network = "net-b"
cidr = "10.10.2.0/24"
gateway_ip = "{GW_B}"
enable_dhcp = false

[[port]]
name = "vm-a"
network = "net-a"
fixed_ip = "{VM_A}"

[[port]]
name = "vm-a2"
network = "net-a"
fixed_ip = "{VM_A2}"

[[port]]
name = "vm-b"
network = "net-b"
fixed_ip = "{VM_B}"

[[router]]
name = "r1"
interfaces = ["sub-a", "sub-b"]
external_gateway = {{ network = "ext-net", ip = "{ROUTER_EXT}" }}

[[floating_ip]]
ip = "{FLOATING}"
network = "ext-net"
{floating}
"#
    )
}

/// An instance namespace on `network`'s bridge at `ip`, default route via `gw`.
fn instance(
    host: &mut Host,
    short: &str,
    network: &str,
    ip: Ipv4Addr,
    gw: &str,
    mtu: u16,
) -> Instance {
    let bridge = host.bridge(network);
    host.world.adopt_bridge(&bridge);
    let inst = host
        .world
        .add_instance(short, &bridge, Some(&format!("{ip}/24")), None, mtu)
        .expect("instance");
    host.world
        .ip(&inst.ns, &["route", "add", "default", "via", gw])
        .expect("default route");
    inst
}

/// A socat server in `ns` on `proto` port 7000 that answers each client with `tag` and
/// the address it saw the client come from.
fn peer_echo_server(world: &mut World, ns: &str, proto: &str, tag: &str) {
    let listen = match proto {
        "tcp" => "TCP-LISTEN:7000,reuseaddr,fork".to_owned(),
        // Bound to the address the client asks, so replies leave from it (an unbound
        // UDP socket would answer from the outgoing interface's address).
        _ => format!("UDP-RECVFROM:7000,bind={SERVER},fork"),
    };
    let mut cmd = Command::new("socat");
    cmd.arg(listen)
        .arg(format!("SYSTEM:echo {tag} $SOCAT_PEERADDR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    world.spawn(ns, cmd).expect("socat server");
}

/// What a server at `dst` answered (its tag and the client address it saw), asking until
/// one answers or 8 s pass (then "").
fn ask(world: &World, ns: &str, proto: &str, dst: Ipv4Addr) -> String {
    let target = match proto {
        "tcp" => format!("TCP:{dst}:7000,connect-timeout=3"),
        _ => format!("UDP:{dst}:7000"),
    };
    let mut text = String::new();
    nanovnf_tests::wait_until(Duration::from_secs(8), Duration::from_millis(200), || {
        let out = world
            .exec(
                ns,
                &[
                    "sh",
                    "-c",
                    &format!("echo hi | timeout 3 socat -t 2 - {target}"),
                ],
            )
            .expect("socat client");
        text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        !text.is_empty()
    });
    text
}

fn pings(world: &World, inst: &Instance, dst: Ipv4Addr) -> bool {
    inst.ping(world, dst, 2, Duration::from_secs(6))
        .expect("run ping")
}

fn ping_output(world: &World, ns: &str, args: &[&str], dst: Ipv4Addr) -> (bool, String) {
    let dst_s = dst.to_string();
    let mut argv = vec!["ping", "-n", "-c", "2", "-W", "2"];
    argv.extend_from_slice(args);
    argv.push(&dst_s);
    let out = world.exec(ns, &argv).expect("ping");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn router_passes_tempest_style_connectivity_checks() {
    let Some(mut host) = Host::new("rtr_tempest", &["socat", "traceroute", "ping"]) else {
        return;
    };
    let file = host.write("topology.toml", &topology(Some("vm-a")));
    host.up(&file);
    let status = host.status();
    let router = &status["routers"][0];
    assert_eq!(router["state"], "ready", "{status}");

    let a = instance(&mut host, "a", "net-a", VM_A, &GW_A.to_string(), 1500);
    let a2 = instance(&mut host, "a2", "net-a", VM_A2, &GW_A.to_string(), 1500);
    let b = instance(&mut host, "b", "net-b", VM_B, &GW_B.to_string(), MTU_B);
    let outside = {
        let bridge = host.bridge("ext-net");
        host.world.adopt_bridge(&bridge);
        host.world
            .add_instance("out", &bridge, Some(OUTSIDE_GW), None, 1500)
            .expect("outside")
    };
    host.world
        .ip(
            &outside.ns,
            &["addr", "add", &format!("{SERVER}/32"), "dev", "lo"],
        )
        .expect("server address");
    let world = &host.world;

    // The router's ports answer ping: both gateways and the external address.
    for dst in [GW_A, GW_B, ROUTER_EXT] {
        assert!(
            pings(world, &a, dst),
            "router port {dst} does not answer ping"
        );
    }
    // East-west, both ways, and TCP: no NAT between tenant networks.
    assert!(pings(world, &a, VM_B), "no east-west ping a -> b");
    assert!(pings(world, &b, VM_A), "no east-west ping b -> a");
    let world = &mut host.world;
    peer_echo_server(world, &b.ns, "tcp", "vm-b");
    peer_echo_server(world, &outside.ns, "tcp", "server");
    peer_echo_server(world, &outside.ns, "udp", "server");
    peer_echo_server(world, &a.ns, "tcp", "vm-a");
    let world = &host.world;
    let seen = ask(world, &a.ns, "tcp", VM_B);
    assert!(seen.starts_with("vm-b"), "east-west TCP got {seen:?}");
    assert!(
        seen.contains(&VM_A.to_string()),
        "east-west TCP was NATed: {seen:?}"
    );

    // SNAT: an instance without a floating IP reaches the outside server by TCP and UDP;
    // the server sees the router's gateway address.
    assert!(
        pings(world, &a2, SERVER),
        "no ping to the outside through SNAT"
    );
    for proto in ["tcp", "udp"] {
        let seen = ask(world, &a2.ns, proto, SERVER);
        assert!(
            seen.contains(&ROUTER_EXT.to_string()),
            "{proto} through SNAT: server saw {seen:?}, expected {ROUTER_EXT}"
        );
    }
    // The floating IP: vm-a leaves as it, and the outside reaches vm-a by it.
    let seen = ask(world, &a.ns, "tcp", SERVER);
    assert!(
        seen.contains(&FLOATING.to_string()),
        "vm-a left as {seen:?}"
    );
    assert!(
        pings(world, &outside, FLOATING),
        "floating IP does not answer"
    );
    let seen = ask(world, &outside.ns, "tcp", FLOATING);
    assert!(seen.starts_with("vm-a"), "floating IP reached {seen:?}");

    // MTU (neutron-tempest-plugin's test_mtu): net-b is 1400. DF set: 1372 bytes of
    // payload fit, one more is refused by the router with fragmentation-needed.
    let fit = (MTU_B - 28).to_string();
    let over = (MTU_B - 27).to_string();
    let (ok, text) = ping_output(world, &a.ns, &["-M", "do", "-s", &fit], VM_B);
    assert!(ok, "a DF ping of {fit} bytes failed: {text}");
    let (ok, text) = ping_output(world, &a.ns, &["-M", "do", "-s", &over], VM_B);
    assert!(
        !ok,
        "a DF ping of {over} bytes over a {MTU_B} network passed: {text}"
    );
    assert!(
        text.contains(&format!("mtu = {MTU_B}")) || text.contains(&format!("mtu={MTU_B}")),
        "no fragmentation-needed with the next-hop MTU: {text}"
    );
    // Without DF a big ping passes: the router fragments.
    let (ok, text) = ping_output(world, &b.ns, &["-M", "dont", "-s", "3000"], VM_A);
    assert!(ok, "a 3000-byte ping b -> a failed: {text}");
    let (ok, text) = ping_output(world, &a.ns, &["-M", "dont", "-s", "1450"], VM_B);
    assert!(
        ok,
        "a 1450-byte ping a -> b (fragmented by the router) failed: {text}"
    );

    // traceroute shows the router hop.
    let out = world
        .exec(
            &a2.ns,
            &[
                "traceroute",
                "-n",
                "-q",
                "1",
                "-w",
                "2",
                &SERVER.to_string(),
            ],
        )
        .expect("traceroute");
    let trace = String::from_utf8_lossy(&out.stdout);
    let first_hop = trace.lines().nth(1).unwrap_or_default();
    assert!(
        first_hop.contains(&GW_A.to_string()),
        "traceroute:\n{trace}"
    );

    // Disassociate the floating IP (live): the outside no longer reaches vm-a by it.
    let file = host.write("topology.toml", &topology(None));
    let out = host.up(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("updated live"), "{text}");
    let world = &host.world;
    assert!(
        !pings(world, &outside, FLOATING),
        "disassociated floating IP still answers"
    );
    assert!(ask(world, &outside.ns, "tcp", FLOATING).is_empty());
    // Associate it with vm-b: now the outside reaches vm-b by it.
    let file = host.write("topology.toml", &topology(Some("vm-b")));
    host.up(&file);
    let world = &host.world;
    let seen = ask(world, &outside.ns, "tcp", FLOATING);
    assert!(
        seen.starts_with("vm-b"),
        "re-associated floating IP reached {seen:?}"
    );
}
