//! The full example of TOPOLOGY.md (copied verbatim into `example.toml`) and smaller valid
//! files: defaults, allocation order, stable names, and what each appliance is told.

use std::net::Ipv4Addr;
use std::path::Path;

use nanovnf_topology::{
    ApplianceKind, LinkKind, METADATA_IP, MacAddr, Route, Segment, Topology, link_name, load,
    parse, stable_mac,
};

const SALT: &str = "/var/lib/nanovnf";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn example() -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/example.toml");
    match load(&path, SALT) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

fn parse_ok(text: &str) -> Topology {
    match parse(text, "t.toml", Path::new("."), SALT) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn example_parses_with_defaults() {
    let t = example();
    assert_eq!(
        t.physical_networks.get("external").map(String::as_str),
        Some("eth1")
    );
    let underlay = t.underlay.as_ref().unwrap();
    assert_eq!(
        (underlay.interface.as_str(), underlay.udp_port),
        ("eth2", 4789)
    );

    let ext = t.network("ext-net").unwrap();
    assert!(ext.external);
    assert_eq!(ext.mtu, 1500);
    assert!(
        matches!(&ext.segment, Segment::Flat { physical_network, interface }
        if physical_network == "external" && interface == "eth1")
    );
    assert!(ext.dhcp.is_none() && ext.metadata.is_none() && ext.vxlan_gateway.is_none());

    let demo = t.network("demo-net").unwrap();
    assert!(!demo.external);
    assert_eq!(demo.mtu, 1450, "vxlan default MTU");
    match &demo.segment {
        Segment::Vxlan {
            vni,
            local_vtep,
            remote_vteps,
            udp_port,
            arp_responder,
        } => {
            assert!(!arp_responder, "off unless the segment asks");
            assert_eq!(*vni, 1001);
            assert_eq!(local_vtep.to_string(), "192.0.2.11/24");
            assert_eq!(remote_vteps, &[ip("192.0.2.20")]);
            assert_eq!(*udp_port, 4789);
        }
        other => panic!("{other:?}"),
    }
    assert!(demo.vxlan_gateway.is_some());

    let subnet = t.subnet("demo-subnet").unwrap();
    assert_eq!(subnet.cidr.to_string(), "192.168.1.0/24");
    assert_eq!(subnet.gateway_ip, Some(ip("192.168.1.1")));
    assert!(subnet.enable_dhcp);
    assert_eq!(subnet.dns_domain, "openstacklocal");
    assert_eq!(subnet.lease_seconds, 86400);
    assert_eq!(subnet.allocation_pools.len(), 1);
    assert_eq!(subnet.allocation_pools[0].start, ip("192.168.1.100"));

    let vm1 = t.port("vm1").unwrap();
    assert_eq!(vm1.mac.to_string(), "fa:16:3e:00:00:11");
    assert_eq!(
        vm1.ip.as_ref().map(|a| (a.ip, a.prefix_len)),
        Some((ip("192.168.1.11"), 24))
    );
    assert_eq!(vm1.hostname.as_deref(), Some("vm1"));
    assert_eq!(vm1.tap.as_deref(), Some("tap-vm1"));
    let inst = vm1.instance.as_ref().unwrap();
    assert_eq!(inst.uuid, "8c0e8d40-0f0e-4d8e-9d53-3f2a6a1c0a11");
    assert_eq!(inst.project_id, "demo");
    assert_eq!(
        inst.user_data.as_deref(),
        Some(&b"#cloud-config\nhostname: vm1\n"[..])
    );
    assert_eq!(inst.meta.get("role").map(String::as_str), Some("web"));
    assert!(inst.public_keys.contains_key("mykey"));
}

#[test]
fn example_appliances_take_the_first_free_pool_addresses() {
    let t = example();
    let demo = t.network("demo-net").unwrap();
    let dhcp = demo.dhcp.as_ref().unwrap();
    let metadata = demo.metadata.as_ref().unwrap();
    assert_eq!(dhcp.kind, ApplianceKind::Dhcp);
    assert_eq!(dhcp.ips.len(), 1);
    assert_eq!(dhcp.ips[0].interface_addr().to_string(), "192.168.1.100/24");
    assert_eq!(
        metadata.ips[0].interface_addr().to_string(),
        "192.168.1.101/24"
    );
    assert_eq!(dhcp.mac, stable_mac("dhcp/demo-net"));
    assert_eq!(metadata.mac, stable_mac("metadata/demo-net"));

    let cfg = t.subnet("demo-subnet").unwrap().dhcp.as_ref().unwrap();
    assert_eq!(cfg.server_ip, ip("192.168.1.100"));
    assert_eq!(cfg.metadata_ip, ip("192.168.1.101"));
    assert_eq!(cfg.router, Some(ip("192.168.1.1")));
    assert_eq!(cfg.dns_servers, vec![ip("192.0.2.53")]);
    assert_eq!(cfg.mtu, 1450);
    assert_eq!(cfg.reservations.len(), 1);
    assert_eq!(cfg.reservations[0].hostname, "vm1");
    let routes = cfg.classless_routes();
    assert_eq!(
        routes[0],
        Route {
            destination: "10.10.0.0/16".parse().unwrap(),
            nexthop: ip("192.168.1.254")
        }
    );
    assert!(routes.contains(&Route {
        destination: "169.254.169.254/32".parse().unwrap(),
        nexthop: ip("192.168.1.101")
    }));
    assert_eq!(
        routes
            .last()
            .map(|r| (r.destination.to_string(), r.nexthop)),
        Some(("0.0.0.0/0".into(), ip("192.168.1.1")))
    );
    assert_eq!(METADATA_IP, ip("169.254.169.254"));
}

#[test]
fn example_router_and_floating_ip() {
    let t = example();
    let router = t.router("demo-router").unwrap();
    assert_eq!(router.interfaces.len(), 1);
    let nic = &router.interfaces[0];
    assert_eq!(
        (nic.network.as_str(), nic.addr.interface_addr().to_string()),
        ("demo-net", "192.168.1.1/24".into())
    );
    let gw = router.external_gateway.as_ref().unwrap();
    assert_eq!(
        (gw.network.as_str(), gw.ip, gw.enable_snat),
        ("ext-net", ip("203.0.113.101"), true)
    );
    // ext-net declares no subnet in the example: the address is taken as written.
    assert_eq!(
        (gw.subnet.as_deref(), gw.prefix_len, gw.default_route),
        (None, 32, None)
    );
    assert_eq!(router.routes.len(), 1);
    assert_eq!(router.floating_ips, vec![0]);

    let fip = &t.floating_ips[0];
    assert_eq!(fip.ip, ip("203.0.113.102"));
    assert_eq!(fip.port.as_deref(), Some("vm1"));
    assert_eq!(fip.fixed_ip, Some(ip("192.168.1.11")));
    assert_eq!(fip.router.as_deref(), Some("demo-router"));

    // Every generated MAC is distinct and none is the port's.
    let mut macs: Vec<MacAddr> = vec![t.port("vm1").unwrap().mac, nic.mac, gw.mac];
    let demo = t.network("demo-net").unwrap();
    macs.extend([
        demo.dhcp.as_ref().unwrap().mac,
        demo.metadata.as_ref().unwrap().mac,
    ]);
    let vx = demo.vxlan_gateway.as_ref().unwrap();
    macs.extend([vx.mac, vx.underlay_mac]);
    let n = macs.len();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), n);
}

#[test]
fn example_link_names_are_stable_and_short() {
    let a = example();
    let b = example();
    assert_eq!(a, b, "resolution is deterministic");
    let demo = a.network("demo-net").unwrap();
    assert_eq!(
        demo.bridge,
        link_name(LinkKind::Bridge, SALT, "network/demo-net")
    );
    assert!(demo.bridge.starts_with("nvb-"));
    assert_eq!(
        demo.dhcp.as_ref().unwrap().tap,
        link_name(LinkKind::Tap, SALT, "dhcp/demo-net")
    );
    let mut names = vec![a.underlay.as_ref().unwrap().bridge.clone()];
    for n in &a.networks {
        names.push(n.bridge.clone());
        names.extend(n.dhcp.iter().chain(&n.metadata).map(|x| x.tap.clone()));
        names.extend(
            n.vxlan_gateway
                .iter()
                .flat_map(|v| [v.tap.clone(), v.underlay_tap.clone()]),
        );
    }
    for r in &a.routers {
        names.extend(r.interfaces.iter().map(|i| i.tap.clone()));
        names.extend(r.external_gateway.iter().map(|g| g.tap.clone()));
    }
    for name in &names {
        assert!(name.len() <= 15, "{name}");
        assert!(nanovnf_topology::check_ifname(name).is_ok());
    }
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "link names are distinct");

    // Another salt (state dir), other names.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/example.toml");
    let other = load(&path, "/tmp/other-state").unwrap();
    assert_ne!(other.network("demo-net").unwrap().bridge, demo.bridge);
}

#[test]
fn defaults_of_a_minimal_file() {
    let t = parse_ok(
        r#"
[[network]]
name = "n"

[[subnet]]
name = "s"
network = "n"
cidr = "10.0.0.0/29"
gateway_ip = "10.0.0.1"

[[port]]
name = "p"
network = "n"
"#,
    );
    let n = t.network("n").unwrap();
    assert_eq!(n.segment, Segment::Local, "default segment");
    assert_eq!(n.mtu, 1500);
    let s = t.subnet("s").unwrap();
    assert!(s.enable_dhcp);
    assert_eq!(s.lease_seconds, 86400);
    assert_eq!(s.dns_domain, "openstacklocal");
    // Whole CIDR minus network (.0), broadcast (.7) and gateway (.1).
    assert_eq!(s.allocation_pools.len(), 1);
    assert_eq!(
        (s.allocation_pools[0].start, s.allocation_pools[0].end),
        (ip("10.0.0.2"), ip("10.0.0.6"))
    );
    let cfg = s.dhcp.as_ref().unwrap();
    assert_eq!(
        (cfg.server_ip, cfg.metadata_ip),
        (ip("10.0.0.2"), ip("10.0.0.3"))
    );
    assert_eq!(
        cfg.dns_servers,
        vec![cfg.server_ip],
        "default DNS: the DHCP appliance"
    );
    let p = t.port("p").unwrap();
    assert_eq!(p.ip.as_ref().map(|a| a.ip), Some(ip("10.0.0.4")));
    assert_eq!(p.hostname.as_deref(), Some("host-10-0-0-4"));
    assert_eq!(p.mac, stable_mac("port/p"));
    assert_eq!(cfg.reservations[0].hostname, "host-10-0-0-4");
}

#[test]
fn allocation_order_skips_written_addresses() {
    let t = parse_ok(
        r#"
[[network]]
name = "ext"
external = true

[[subnet]]
name = "ext-sub"
network = "ext"
cidr = "203.0.113.0/24"
gateway_ip = "203.0.113.1"
enable_dhcp = false
allocation_pools = [{ start = "203.0.113.10", end = "203.0.113.20" }]

[[network]]
name = "n"

[[subnet]]
name = "a"
network = "n"
cidr = "10.0.0.0/24"
gateway_ip = "10.0.0.1"
allocation_pools = [{ start = "10.0.0.10", end = "10.0.0.11" }, { start = "10.0.0.20", end = "10.0.0.30" }]

[[subnet]]
name = "b"
network = "n"
cidr = "10.0.1.0/24"
dns_nameservers = ["0.0.0.0"]
lease_seconds = -1

[[port]]
name = "first"
network = "n"

[[port]]
name = "fixed"
network = "n"
fixed_ip = "10.0.0.20"

[[port]]
name = "second"
network = "n"

[[router]]
name = "r"
interfaces = ["a"]
external_gateway = { network = "ext" }

[[floating_ip]]
ip = "203.0.113.10"
network = "ext"
port = "first"
"#,
    );
    let n = t.network("n").unwrap();
    let dhcp: Vec<_> = n
        .dhcp
        .as_ref()
        .unwrap()
        .ips
        .iter()
        .map(|a| (a.subnet.as_str(), a.ip))
        .collect();
    let md: Vec<_> = n
        .metadata
        .as_ref()
        .unwrap()
        .ips
        .iter()
        .map(|a| (a.subnet.as_str(), a.ip))
        .collect();
    // Subnet a: .10 .11 for the appliances; .20 is a port's fixed_ip so the next is .21.
    assert_eq!(dhcp, vec![("a", ip("10.0.0.10")), ("b", ip("10.0.1.1"))]);
    assert_eq!(md, vec![("a", ip("10.0.0.11")), ("b", ip("10.0.1.2"))]);
    let addr = |p: &str| t.port(p).unwrap().ip.as_ref().map(|a| a.ip);
    assert_eq!(addr("first"), Some(ip("10.0.0.21")));
    assert_eq!(addr("fixed"), Some(ip("10.0.0.20")));
    assert_eq!(addr("second"), Some(ip("10.0.0.22")));
    // The router's external address comes after the ports, skipping the floating IP.
    let gw = t.router("r").unwrap().external_gateway.as_ref().unwrap();
    assert_eq!(
        (gw.ip, gw.prefix_len, gw.default_route),
        (ip("203.0.113.11"), 24, Some(ip("203.0.113.1")))
    );
    assert!(t.subnet("ext-sub").unwrap().dhcp.is_none());
    assert!(t.network("ext").unwrap().dhcp.is_none());
    // Subnet b: no gateway, no DNS servers, infinite lease, on-link route to a.
    let b = t.subnet("b").unwrap().dhcp.as_ref().unwrap();
    assert_eq!(b.router, None);
    assert!(b.dns_servers.is_empty());
    assert_eq!(b.lease_seconds, u32::MAX);
    assert_eq!(b.other_subnets, vec!["10.0.0.0/24".parse().unwrap()]);
    assert!(
        !b.classless_routes()
            .iter()
            .any(|r| r.destination.prefix_len() == 0)
    );
    assert_eq!(t.floating_ips[0].router.as_deref(), Some("r"));
    assert_eq!(t.floating_ips[0].subnet.as_deref(), Some("ext-sub"));
}

#[test]
fn upstream_resolvers_are_host_wide_and_default_to_none() {
    let t = parse_ok("[[network]]\nname = \"n\"\n");
    assert!(t.dns.upstream_resolvers.is_empty());
    let t = parse_ok(
        "[dns]\nupstream_resolvers = [\"192.0.2.53\", \"198.51.100.53\"]\n\
         [[network]]\nname = \"n\"\n",
    );
    assert_eq!(
        t.dns.upstream_resolvers,
        [ip("192.0.2.53"), ip("198.51.100.53")]
    );
    // An empty table, and the inline spelling.
    assert!(parse_ok("[dns]\n").dns.upstream_resolvers.is_empty());
    let t = parse_ok("dns = { upstream_resolvers = [\"192.0.2.1\"] }\n");
    assert_eq!(t.dns.upstream_resolvers, [ip("192.0.2.1")]);
}

#[test]
fn default_pool_is_split_around_the_gateway() {
    let t = parse_ok(
        r#"
[[network]]
name = "n"
segment = { type = "local" }

[[subnet]]
name = "s"
network = "n"
cidr = "10.0.0.0/28"
gateway_ip = "10.0.0.5"
"#,
    );
    let pools: Vec<_> = t
        .subnet("s")
        .unwrap()
        .allocation_pools
        .iter()
        .map(|p| (p.start, p.end))
        .collect();
    assert_eq!(
        pools,
        vec![
            (ip("10.0.0.1"), ip("10.0.0.4")),
            (ip("10.0.0.6"), ip("10.0.0.14"))
        ]
    );
}

#[test]
fn vlan_segment_and_user_data_file() {
    let dir = std::env::temp_dir().join(format!("nanovnf-topology-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cloud.yaml"), "#cloud-config\n").unwrap();
    let text = r#"
[physical_networks]
physnet1 = "eth1"

[[network]]
name = "v"
segment = { type = "vlan", physical_network = "physnet1", vlan_id = 100 }
mtu = 9000

[[port]]
name = "p"
network = "v"

[port.instance]
user_data_file = "cloud.yaml"
"#;
    std::fs::write(dir.join("t.toml"), text).unwrap();
    let t = load(&dir.join("t.toml"), SALT).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let v = t.network("v").unwrap();
    assert_eq!(v.mtu, 9000);
    match &v.segment {
        Segment::Vlan {
            interface,
            vlan_id,
            link,
            ..
        } => {
            assert_eq!((interface.as_str(), *vlan_id), ("eth1", 100));
            assert_eq!(link, &link_name(LinkKind::Vlan, SALT, "vlan/physnet1/100"));
        }
        other => panic!("{other:?}"),
    }
    let p = t.port("p").unwrap();
    assert_eq!(p.ip, None, "a network without subnets gives no address");
    assert_eq!(p.hostname, None);
    let inst = p.instance.as_ref().unwrap();
    assert_eq!(inst.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    assert_eq!(inst.availability_zone, "nova");
    assert_eq!(inst.name, "p");
    assert_eq!(inst.uuid, nanovnf_topology::stable_uuid("port/p"));
}

#[test]
fn other_toml_spellings_of_the_same_tables() {
    // Sub-tables, dotted keys and arrays of tables instead of inline tables.
    let t = parse_ok(
        r#"
physical_networks = { physnet1 = "eth1" }

[[network]]
name = "n"
segment.type = "vlan"
segment.physical_network = "physnet1"
segment.vlan_id = 42

[[network]]
name = "m"
[network.segment]
type = "local"

[[subnet]]
name = "s"
network = "n"
cidr = "10.0.0.0/24"
gateway_ip = "10.0.0.1"
[[subnet.allocation_pools]]
start = "10.0.0.100"
end = "10.0.0.110"
[[subnet.host_routes]]
destination = "10.10.0.0/16"
nexthop = "10.0.0.254"
"#,
    );
    assert!(matches!(
        t.network("n").unwrap().segment,
        Segment::Vlan { vlan_id: 42, .. }
    ));
    assert_eq!(t.network("m").unwrap().segment, Segment::Local);
    let s = t.subnet("s").unwrap();
    assert_eq!(s.allocation_pools[0].start, ip("10.0.0.100"));
    assert_eq!(s.host_routes.len(), 1);

    // Spans survive these spellings: problems still name the right line.
    let e = parse(
        "[[subnet]]\nname = \"s\"\nnetwork = \"n\"\ncidr = \"10.0.0.0/24\"\n[[subnet.allocation_pools]]\nstart = \"10.0.0.100\"\nend = \"10.1.0.1\"\n",
        "t.toml",
        Path::new("."),
        SALT,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "t.toml:3: subnet \"s\": network \"n\" is not a declared network\n\
         t.toml:7: subnet \"s\": allocation_pools.end 10.1.0.1 is outside cidr 10.0.0.0/24"
    );
}

#[test]
fn generated_mac_collisions_are_resolved() {
    // Find two port names whose derived MACs collide (24 bits: a birthday search is quick).
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..100_000)
        .find_map(|i| {
            let name = format!("p{i}");
            seen.insert(stable_mac(&format!("port/{name}")), name.clone())
                .map(|other| (other, name))
        })
        .unwrap();
    let t = parse_ok(&format!(
        "[[network]]\nname = \"n\"\n\n[[port]]\nname = \"{a}\"\nnetwork = \"n\"\n\n[[port]]\nname = \"{b}\"\nnetwork = \"n\"\n"
    ));
    let (ma, mb) = (t.port(&a).unwrap().mac, t.port(&b).unwrap().mac);
    assert_eq!(ma, stable_mac(&format!("port/{a}")));
    assert_ne!(ma, mb);
    assert_eq!(mb, stable_mac(&format!("port/{b}#1")));
}

#[test]
fn vxlan_gateway_macs_differ_between_the_hosts_of_a_network() {
    // Two hosts' files for one network, as two managers on a shared underlay read them:
    // their gateways' NICs meet on the underlay (and their frames on the overlay).
    let host = |local: &str, remote: &str| {
        let t = parse_ok(&format!(
            "[underlay]\ninterface = \"eth2\"\n\n[[network]]\nname = \"n\"\n\
             segment = {{ type = \"vxlan\", vni = 7, local_vtep = \"{local}/24\", \
             remote_vteps = [\"{remote}\"] }}\n"
        ));
        let gw = t.network("n").unwrap().vxlan_gateway.clone().unwrap();
        assert_eq!(gw.mac, stable_mac(&format!("vxlan/n/{local}")));
        assert_eq!(
            gw.underlay_mac,
            stable_mac(&format!("vxlan-underlay/n/{local}"))
        );
        gw
    };
    let (a, b) = (
        host("192.0.2.11", "192.0.2.12"),
        host("192.0.2.12", "192.0.2.11"),
    );
    assert_ne!(a.underlay_mac, b.underlay_mac);
    assert_ne!(a.mac, b.mac);
    // Taps keep their documented keys.
    assert_eq!(a.tap, link_name(LinkKind::Tap, SALT, "vxlan/n"));
}
