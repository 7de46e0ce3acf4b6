//! End to end: the DHCP appliance in real QEMU on a tenant bridge with MTU 1450 (a VXLAN
//! network), serving three real Debian clients — busybox udhcpc, ISC dhclient, dhcpcd —
//! each in its own instance namespace, and changed live over its control channel.

use nanovnf_qemu::ControlClient;
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::{DhcpHost, Route};
use nanovnf_tests::appliance::{self, DhcpNet, TestNic, boot_dhcp};
use nanovnf_tests::dhcp_clients::{Client, addresses, expect_route, mtu, routes};
use nanovnf_tests::{World, environment_ready};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NET_MTU: u16 = 1450;
const LEASE_SECS: u32 = 20; // T1 = 10 s: every client renews within the test
const VM_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);

fn net() -> DhcpNet {
    DhcpNet {
        cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
        server_ip: Ipv4Addr::new(192, 168, 1, 2),
        gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
        metadata_ip: Some(Ipv4Addr::new(192, 168, 1, 3)),
        host_routes: vec![Route {
            destination: Ipv4Cidr::new(Ipv4Addr::new(10, 10, 0, 0), 16),
            nexthop: Ipv4Addr::new(192, 168, 1, 254),
        }],
        other_subnets: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 2, 0), 24)],
        domain: "nanovnf.test".into(),
        lease_secs: LEASE_SECS,
        mtu: NET_MTU,
    }
}

fn mac(last: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0x5e, 0x00, last]
}

fn counter(ctl: &mut ControlClient, name: &str) -> u64 {
    let all = ctl.counters(Duration::from_secs(5)).expect("counters");
    all.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name} in {all:?}"))
        .value
}

fn serves(client: Client) {
    let name = format!("dhcp_{}", client.name());
    let mut tools = vec!["ip", "qemu-system-x86_64"];
    tools.extend(client.tools());
    if !environment_ready(&name, &tools) {
        return;
    }
    let mut world = World::new(&name).expect("world");
    let br = world.add_bridge("br", NET_MTU).expect("bridge");
    let tap = world.add_tap("tap", &br, NET_MTU).expect("tap");
    let nic = TestNic {
        tap,
        mac: appliance::appliance_mac(&world, 0),
        addr: net().server_ip,
        prefix_len: 24,
    };
    let hosts = vec![DhcpHost {
        mac: mac(0x11),
        ip: VM_IP,
        hostname: "vm1".into(),
    }];
    let vm = boot_dhcp(&world, &name, &nic, &net(), hosts).expect("boot");
    let mut ctl = ControlClient::connect(
        vm.control_socket().expect("control socket"),
        Duration::from_secs(5),
    )
    .expect("control channel");
    let log = || vm.serial_output();

    // The instance's link starts at 1500: only option 26 can bring it to 1450.
    let vm1 = world
        .add_instance("vm1", &br, None, Some(mac(0x11)), 1500)
        .expect("instance");
    let running = client.start(&mut world, &vm1, "vm1").expect("start client");
    let bound = running
        .wait_bound(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", log()));
    assert_eq!(bound.ip, Some(VM_IP), "lease event {bound:?}");
    assert_eq!(
        bound.hostname,
        "vm1",
        "hostname handed to {}",
        client.name()
    );
    assert_eq!(
        bound.domain,
        "nanovnf.test",
        "domain handed to {}",
        client.name()
    );
    // dhcpcd may still be adding routes when its hook runs: wait for the last one.
    let mut table = Vec::new();
    nanovnf_tests::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        table = routes(&world, &vm1).unwrap_or_default();
        table.iter().any(|r| r.starts_with("default via"))
    });
    assert!(
        addresses(&world, &vm1)
            .unwrap()
            .contains(&format!("{VM_IP}/24")),
        "address/prefix on the instance: {:?}",
        addresses(&world, &vm1)
    );
    if client == Client::Dhcpcd {
        // dhcpcd has put option 26 on its routes instead of the link since 6.x
        // (dhcpcd commit ca6cdf58): every route it installed must carry it.
        for r in table.iter().filter(|r| r.contains("proto dhcp")) {
            assert!(
                r.contains(&format!("mtu {NET_MTU}")),
                "dhcpcd route without mtu: {r}"
            );
        }
    } else {
        assert_eq!(
            mtu(&world, &vm1).unwrap(),
            u32::from(NET_MTU),
            "interface MTU from option 26"
        );
    }
    // The network's other subnet is on-link (next hop 0.0.0.0). dhcpcd 9.4.1, Debian 12's,
    // installs such a route as a host route (dhcpcd issue #160, fixed upstream in 2023).
    let on_link = if client == Client::Dhcpcd {
        "192.168.2.0 dev"
    } else {
        "192.168.2.0/24 dev"
    };
    for route in [
        "default via 192.168.1.1",
        "169.254.169.254 via 192.168.1.3",
        "10.10.0.0/16 via 192.168.1.254",
        on_link,
    ] {
        expect_route(&table, route).unwrap_or_else(|e| panic!("{}: {e:#}", client.name()));
    }

    // A renewal at T1 (10 s) is acknowledged.
    let seen = running.events().unwrap().len();
    let renewed = running
        .wait_renewed(seen, Duration::from_secs(25))
        .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", log()));
    assert_eq!(renewed.ip, Some(VM_IP));
    assert_eq!(counter(&mut ctl, "naks"), 0);

    // A MAC without a reservation gets nothing.
    let stranger = world
        .add_instance("x", &br, None, Some(mac(0x99)), 1500)
        .expect("instance");
    let unknown_before = counter(&mut ctl, "drop_unknown_client");
    let (leased, events) = client
        .try_once(&world, &stranger, "x", 4)
        .expect("run client");
    assert!(!leased, "unknown MAC got a lease: {events:?}");
    assert!(
        !addresses(&world, &stranger)
            .unwrap()
            .iter()
            .any(|a| a.starts_with("192.168.1.")),
        "unknown MAC holds an address"
    );
    assert!(counter(&mut ctl, "drop_unknown_client") > unknown_before);

    // Live: vm1's port is deleted and its address goes to a new port at once.
    world.kill(running.pid).expect("stop vm1's client");
    world
        .ip(&vm1.ns, &["addr", "flush", "dev", &vm1.ifname])
        .expect("flush");
    let t = Instant::now();
    ctl.call(Op::DhcpRemove { mac: mac(0x11) }, Duration::from_secs(5))
        .expect("remove");
    let removed = t.elapsed();
    let t = Instant::now();
    ctl.call(
        Op::DhcpUpsert(DhcpHost {
            mac: mac(0x22),
            ip: VM_IP,
            hostname: "vm2".into(),
        }),
        Duration::from_secs(5),
    )
    .expect("add");
    let added = t.elapsed();
    eprintln!("{}: live remove {removed:?}, add {added:?}", client.name());
    let vm2 = world
        .add_instance("vm2", &br, None, Some(mac(0x22)), 1500)
        .expect("instance");
    let running2 = client.start(&mut world, &vm2, "vm2").expect("start client");
    let bound2 = running2
        .wait_bound(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", log()));
    assert_eq!(
        bound2.ip,
        Some(VM_IP),
        "the released address went to the new MAC"
    );
    assert_eq!(bound2.hostname, "vm2");
}

#[test]
fn udhcpc_gets_a_full_lease_renews_and_follows_live_changes() {
    serves(Client::Udhcpc);
}

#[test]
fn dhclient_gets_a_full_lease_renews_and_follows_live_changes() {
    serves(Client::Dhclient);
}

#[test]
fn dhcpcd_gets_a_full_lease_renews_and_follows_live_changes() {
    serves(Client::Dhcpcd);
}
