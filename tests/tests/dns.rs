//! End to end: DNS in the DHCP appliance, as Neutron's dnsmasq serves it. An instance gets
//! its lease — and so its resolver and search domain — from the appliance with ISC
//! dhclient (Debian's dhclient-script writes the namespace's own resolv.conf), then
//! resolves its peers with `dig` and glibc (`getent hosts`) by short name, FQDN and
//! address, over UDP and TCP; live reservation changes show at once; names outside the
//! network go to an upstream dnsmasq in an "outside" namespace behind a router namespace.

use nanovnf_qemu::{ControlClient, Vm};
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::Role;
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::DhcpHost;
use nanovnf_tests::appliance::{self, DhcpNet, TestNic, boot_dhcp_config, dhcp_config};
use nanovnf_tests::dhcp_clients::Client;
use nanovnf_tests::{Instance, World, environment_ready, find_tool, wait_until};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const DOMAIN: &str = "nanovnf.test";
const TOOLS: &[&str] = &[
    "ip",
    "qemu-system-x86_64",
    "dig",
    "getent",
    "dhclient",
    "dhclient-script",
];

fn mac(last: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0xd0, 0x00, last]
}

fn host(last: u8, name: &str) -> DhcpHost {
    DhcpHost {
        mac: mac(last),
        ip: Ipv4Addr::new(192, 168, 1, last),
        hostname: name.into(),
    }
}

fn net() -> DhcpNet {
    DhcpNet {
        cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
        server_ip: SERVER_IP,
        gateway: Some(GATEWAY),
        metadata_ip: None,
        host_routes: Vec::new(),
        other_subnets: Vec::new(),
        domain: DOMAIN.into(),
        lease_secs: 3600,
        mtu: 1500,
    }
}

/// A world with a tenant bridge and the DHCP appliance on it.
struct Net {
    // Fields drop in order: the appliance goes before its world.
    ctl: ControlClient,
    vm: Vm,
    br: String,
    world: World,
}

fn boot(name: &str, upstreams: Vec<Ipv4Addr>, hosts: Vec<DhcpHost>) -> Net {
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", 1500).expect("bridge");
    let tap = world.add_tap("tap", &br, 1500).expect("tap");
    let nic = TestNic {
        tap,
        mac: appliance::appliance_mac(&world, 0),
        addr: SERVER_IP,
        prefix_len: 24,
    };
    let mut config = dhcp_config(name, &nic, &net(), hosts);
    if let Role::Dhcp(role) = &mut config.role {
        role.upstream_resolvers = upstreams;
    }
    let vm = boot_dhcp_config(&world, name, &nic, &config).expect("boot");
    let ctl = ControlClient::connect(
        vm.control_socket().expect("control socket"),
        Duration::from_secs(5),
    )
    .expect("control channel");
    Net { ctl, vm, br, world }
}

impl Net {
    /// An instance that takes its lease, resolver and search domain from the appliance.
    fn leased_instance(&mut self, short: &str, last: u8) -> Instance {
        let inst = self
            .world
            .add_instance(short, &self.br, None, Some(mac(last)), 1500)
            .expect("instance");
        let running = Client::Dhclient
            .start(&mut self.world, &inst, short)
            .expect("dhclient");
        let bound = running
            .wait_bound(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", self.vm.serial_output()));
        assert_eq!(bound.ip, Some(Ipv4Addr::new(192, 168, 1, last)));
        // dhclient-script writes resolv.conf after the hook has logged the event.
        let resolv = format!("/etc/netns/{}/resolv.conf", inst.ns);
        let mut text = String::new();
        let written = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            text = std::fs::read_to_string(&resolv).unwrap_or_default();
            text.contains("nameserver")
        });
        assert!(
            written,
            "dhclient wrote no resolver into {resolv}: {text:?}"
        );
        // Option 6 is the appliance itself (the subnet sets no dns_nameservers), and
        // option 15 the search domain.
        assert!(
            text.lines()
                .any(|l| l.trim() == format!("nameserver {SERVER_IP}")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.trim() == format!("search {DOMAIN}")),
            "{text}"
        );
        inst
    }

    fn counter(&mut self, name: &str) -> u64 {
        let all = self.ctl.counters(Duration::from_secs(5)).expect("counters");
        all.iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no counter {name} in {all:?}"))
            .value
    }
}

/// Runs `dig` in `inst`'s namespace (its resolv.conf) with short timeouts; stdout.
fn dig(world: &World, inst: &Instance, args: &[&str]) -> String {
    let mut argv = vec!["dig", "+time=2", "+tries=2"];
    argv.extend_from_slice(args);
    let out = world.exec(&inst.ns, &argv).expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` answers, one per line.
fn short(world: &World, inst: &Instance, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    dig(world, inst, &a)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect()
}

/// The `status:` of dig's header line.
fn status(world: &World, inst: &Instance, args: &[&str]) -> String {
    let out = dig(world, inst, args);
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{out}"))
        .to_owned()
}

/// `getent hosts KEY` through glibc's resolver: (exit ok, stdout words).
fn getent(world: &World, inst: &Instance, key: &str) -> (bool, Vec<String>) {
    let out = world
        .exec(&inst.ns, &["getent", "hosts", key])
        .expect("getent");
    let words = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (out.status.success(), words)
}

#[test]
fn peers_resolve_by_short_name_fqdn_and_address_and_follow_live_changes() {
    let name = "dns_local";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let hosts = vec![host(11, "vm1"), host(12, "vm2"), host(14, "")];
    let mut n = boot(name, Vec::new(), hosts);
    let vm1 = n.leased_instance("vm1", 11);
    let w = &n.world;

    // dig: FQDN, short name through the search domain, default name, reverse, TCP.
    assert_eq!(short(w, &vm1, &["vm2.nanovnf.test"]), ["192.168.1.12"]);
    assert_eq!(short(w, &vm1, &["+search", "vm2"]), ["192.168.1.12"]);
    assert_eq!(short(w, &vm1, &["VM2.NanoVNF.Test"]), ["192.168.1.12"]);
    assert_eq!(
        short(w, &vm1, &["host-192-168-1-14.nanovnf.test"]),
        ["192.168.1.14"]
    );
    assert_eq!(
        short(w, &vm1, &["-x", "192.168.1.12"]),
        ["vm2.nanovnf.test."]
    );
    assert_eq!(
        short(w, &vm1, &["-x", "192.168.1.14"]),
        ["host-192-168-1-14.nanovnf.test."]
    );
    assert_eq!(
        short(w, &vm1, &["+tcp", "vm2.nanovnf.test"]),
        ["192.168.1.12"]
    );
    assert_eq!(
        short(w, &vm1, &["+tcp", "-x", "192.168.1.11"]),
        ["vm1.nanovnf.test."]
    );
    // AAAA: no data, but the name exists; unknown names: NXDOMAIN; elsewhere: REFUSED
    // (no upstream configured, as dnsmasq with --no-resolv).
    assert_eq!(status(w, &vm1, &["vm2.nanovnf.test", "AAAA"]), "NOERROR");
    assert!(short(w, &vm1, &["vm2.nanovnf.test", "AAAA"]).is_empty());
    assert_eq!(status(w, &vm1, &["nobody.nanovnf.test"]), "NXDOMAIN");
    assert_eq!(status(w, &vm1, &["+notcp", "example.com"]), "REFUSED");
    // EDNS with a small buffer, and without: both answered.
    assert_eq!(
        short(w, &vm1, &["+bufsize=512", "vm1.nanovnf.test"]),
        ["192.168.1.11"]
    );
    assert_eq!(
        short(w, &vm1, &["+noedns", "vm1.nanovnf.test"]),
        ["192.168.1.11"]
    );

    // glibc: short name (search domain), FQDN, reverse.
    let (ok, words) = getent(w, &vm1, "vm2");
    assert!(ok, "getent hosts vm2: {words:?}");
    assert_eq!(words[..2], ["192.168.1.12", "vm2.nanovnf.test"]);
    let (ok, words) = getent(w, &vm1, "vm2.nanovnf.test");
    assert!(ok && words[0] == "192.168.1.12", "{words:?}");
    let (ok, words) = getent(w, &vm1, "192.168.1.12");
    assert!(ok, "getent hosts 192.168.1.12: {words:?}");
    assert_eq!(words[..2], ["192.168.1.12", "vm2.nanovnf.test"]);
    let (ok, _) = getent(w, &vm1, "nobody");
    assert!(!ok, "an unknown name resolves");

    // Live: a new port resolves at once, a removed one stops at once.
    n.ctl
        .call(Op::DhcpUpsert(host(13, "vm3")), Duration::from_secs(5))
        .expect("upsert");
    let w = &n.world;
    assert_eq!(short(w, &vm1, &["vm3.nanovnf.test"]), ["192.168.1.13"]);
    assert_eq!(getent(w, &vm1, "vm3").1[..1], ["192.168.1.13"]);
    n.ctl
        .call(Op::DhcpRemove { mac: mac(12) }, Duration::from_secs(5))
        .expect("remove");
    let w = &n.world;
    assert_eq!(status(w, &vm1, &["vm2.nanovnf.test"]), "NXDOMAIN");
    assert!(!getent(w, &vm1, "vm2").0, "vm2 still resolves");
    assert_eq!(status(w, &vm1, &["-x", "192.168.1.12"]), "NXDOMAIN");
    // Renamed in place: the new name resolves, the old one is gone.
    n.ctl
        .call(Op::DhcpUpsert(host(13, "db")), Duration::from_secs(5))
        .expect("rename");
    let w = &n.world;
    assert_eq!(short(w, &vm1, &["+search", "db"]), ["192.168.1.13"]);
    assert_eq!(status(w, &vm1, &["vm3.nanovnf.test"]), "NXDOMAIN");

    assert!(n.counter("dns_queries_udp") >= 15);
    assert!(n.counter("dns_queries_tcp") >= 2);
    assert!(n.counter("dns_tcp_connections") >= 2);
    assert_eq!(n.counter("dns_formerr"), 0);
    assert_eq!(n.counter("dns_names"), 3);
}

/// dnsmasq as an upstream resolver: one name, nothing forwarded further.
fn start_upstream(world: &mut World, inst: &Instance) -> u32 {
    let dnsmasq = find_tool("dnsmasq").expect("dnsmasq");
    let log = world.scratch_dir().join("upstream.log");
    let mut cmd = Command::new(dnsmasq);
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file",
        "--user=root",
        "--bind-interfaces",
        &format!("--listen-address={UPSTREAM}"),
        "--host-record=www.outside.example,203.0.113.8",
        "--local=/outside.example/",
        "--log-queries",
        &format!("--log-facility={}", log.display()),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    world.spawn(&inst.ns, cmd).expect("dnsmasq")
}

#[test]
fn outside_names_are_forwarded_to_an_upstream_resolver_through_the_gateway() {
    let name = "dns_forward";
    let mut tools = TOOLS.to_vec();
    tools.push("dnsmasq");
    if !environment_ready(name, &tools) {
        return;
    }
    let mut n = boot(name, vec![UPSTREAM], vec![host(11, "vm1")]);
    // The tenant subnet's router, and the outside network behind it.
    let out = n.world.add_bridge("out", 1500).expect("bridge");
    let rt = n
        .world
        .add_instance("rt", &n.br, Some("192.168.1.1/24"), None, 1500)
        .expect("router");
    n.world
        .add_interface(&rt.ns, "rtout", &out, Some("198.51.100.1/24"), 1500)
        .expect("router's outside leg");
    n.world
        .sysctl(&rt.ns, "net.ipv4.ip_forward", "1")
        .expect("forwarding");
    let up = n
        .world
        .add_instance("up", &out, Some(&format!("{UPSTREAM}/24")), None, 1500)
        .expect("upstream");
    n.world
        .ip(&up.ns, &["route", "add", "default", "via", "198.51.100.1"])
        .expect("route");
    let upstream = start_upstream(&mut n.world, &up);
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        short(
            &n.world,
            &rt,
            &[&format!("@{UPSTREAM}"), "www.outside.example"],
        ) == ["203.0.113.8"]
    });
    assert!(ready, "the upstream dnsmasq does not answer");

    let vm1 = n.leased_instance("vm1", 11);
    let w = &n.world;
    // Forwarded over UDP, relayed to UDP and TCP clients; glibc too.
    assert_eq!(short(w, &vm1, &["www.outside.example"]), ["203.0.113.8"]);
    assert_eq!(
        short(w, &vm1, &["+tcp", "www.outside.example"]),
        ["203.0.113.8"]
    );
    assert_eq!(status(w, &vm1, &["nobody.outside.example"]), "NXDOMAIN");
    let (ok, words) = getent(w, &vm1, "www.outside.example");
    assert!(ok && words[0] == "203.0.113.8", "{words:?}");
    // The recursion-available bit is set now that there is an upstream.
    assert!(dig(w, &vm1, &["www.outside.example"]).contains(" ra"));
    // The network's own names never leave the appliance.
    assert_eq!(short(w, &vm1, &["vm1.nanovnf.test"]), ["192.168.1.11"]);
    assert_eq!(status(w, &vm1, &["nobody.nanovnf.test"]), "NXDOMAIN");
    let forwarded = n.counter("dns_forwarded");
    let answers = n.counter("dns_forward_answers");
    assert!(
        forwarded >= 4 && answers == forwarded,
        "{forwarded} {answers}"
    );
    let log =
        std::fs::read_to_string(n.world.scratch_dir().join("upstream.log")).unwrap_or_default();
    assert!(
        !log.contains("nanovnf.test"),
        "a local name went upstream:\n{log}"
    );

    // The upstream goes away: the client gets SERVFAIL once the appliance gives up.
    n.world.kill(upstream).expect("stop dnsmasq");
    let w = &n.world;
    assert_eq!(
        status(w, &vm1, &["+time=5", "+tries=1", "gone.outside.example"]),
        "SERVFAIL"
    );
    assert!(n.counter("dns_forward_timeouts") >= 1);
}
