//! The DHCP load generator against dnsmasq started as Neutron starts it, and against our
//! appliance: proof that the generator completes real DORA exchanges, checks every ACKed
//! address against the reservation, and notices when a server stays silent or hands out
//! the wrong address — and that the appliance passes the same checks as dnsmasq.

use std::net::Ipv4Addr;
use std::time::Duration;

use nanovnf_qemu::Accel;
use nanovnf_tests::dhcp_appliance_target::ApplianceTarget;
use nanovnf_tests::dhcpload::{
    DhcpNet, DhcpTarget, DnsmasqTarget, DoraOptions, Generator, LatencyOptions, Reservation,
};
use nanovnf_tests::{World, environment_ready};

const RESERVATIONS: usize = 50;

#[test]
fn generator_gets_every_reserved_address_from_dnsmasq() {
    let name = "dhcp_load_dnsmasq";
    if !environment_ready(name, &["ip", "dnsmasq"]) {
        return;
    }
    every_reserved_address(name, &mut DnsmasqTarget::new().expect("dnsmasq"));
}

#[test]
fn generator_gets_every_reserved_address_from_the_appliance() {
    let name = "dhcp_load_appliance";
    if !environment_ready(name, &["ip", "qemu-system-x86_64"]) {
        return;
    }
    every_reserved_address(name, &mut ApplianceTarget::new(Accel::Tcg));
}

fn every_reserved_address(name: &str, target: &mut dyn DhcpTarget) {
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", 1500).expect("bridge");
    let client = world
        .add_instance("gen", &br, None, None, 1500)
        .expect("generator namespace");
    let net = DhcpNet::new(RESERVATIONS).expect("net");
    let server = target
        .start(&mut world, &br, &net)
        .expect("start the server");
    let mut generator = Generator::on(&client).expect("generator");
    if let Err(e) = generator.wait_ready(&net.reservations[0], Duration::from_secs(10)) {
        panic!("{e:#}; {}", server.diagnostics());
    }

    // Two rounds, a window smaller than the population: slots are reused.
    let opts = DoraOptions {
        window: 8,
        rounds: 2,
        ..DoraOptions::default()
    };
    let report = generator.run_dora(&net.reservations, &opts).expect("dora");
    assert_eq!(
        (report.attempted, report.completed, report.total_errors()),
        (2 * RESERVATIONS as u64, 2 * RESERVATIONS as u64, 0),
        "{report:#?}\n{}",
        server.diagnostics()
    );
    for (r, got) in net.reservations.iter().zip(&report.acked) {
        assert_eq!(*got, Some(r.ip), "{r:?}");
    }
    assert!(report.per_sec() > 0.0);

    let lat = generator
        .discover_latency(
            &net.reservations,
            &LatencyOptions {
                samples: 20,
                ..LatencyOptions::default()
            },
        )
        .expect("latency");
    assert_eq!((lat.samples.len(), lat.total_errors()), (20, 0), "{lat:?}");
    assert!(lat.percentile(99.0).unwrap() < Duration::from_secs(1));

    // Negative controls. A MAC without a reservation: the server stays silent, the
    // generator retransmits, then counts a timeout.
    let quick = DoraOptions {
        window: 4,
        rounds: 1,
        retransmit_after: Duration::from_millis(100),
        max_tries: 2,
    };
    let stranger = Reservation {
        mac: [0xfa, 0x16, 0x3e, 0xee, 0xee, 0xee],
        ip: Ipv4Addr::new(198, 18, 7, 7),
    };
    let r = generator.run_dora(&[stranger], &quick).expect("stranger");
    assert_eq!((r.completed, r.errors.timeouts, r.retransmits), (0, 1, 1));
    // A client expecting another address than its reservation's: a wrong-IP error.
    let mut confused = net.reservations[3];
    confused.ip = net.reservations[4].ip;
    let r = generator.run_dora(&[confused], &quick).expect("confused");
    assert_eq!((r.completed, r.errors.wrong_ip), (0, 1), "{r:?}");

    server.stop(&mut world).expect("stop the server");
}

/// A DISCOVER flood from random unknown MACs, plus malformed DHCP payloads, while the
/// known ports run full DORA: every known port still gets its address, the appliance
/// counts what it dropped, and its reservation table is unchanged.
#[test]
fn known_clients_keep_their_leases_during_a_flood_of_unknown_macs() {
    use nanovnf_tests::dhcpload::{client_frame, discover};
    use nanovnf_tests::{RawSocket, XorShift64};
    let name = "dhcp_flood";
    if !environment_ready(name, &["ip", "qemu-system-x86_64"]) {
        return;
    }
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", 1500).expect("bridge");
    let client = world
        .add_instance("gen", &br, None, None, 1500)
        .expect("gen");
    let flooder = world
        .add_instance("flood", &br, None, None, 1500)
        .expect("flood");
    let net = DhcpNet::new(RESERVATIONS).expect("net");
    let mut target = ApplianceTarget::new(Accel::Tcg);
    let mut server = target.start(&mut world, &br, &net).expect("start");
    let mut generator = Generator::on(&client).expect("generator");
    generator
        .wait_ready(&net.reservations[0], Duration::from_secs(10))
        .expect("ready");

    const FLOOD: u64 = 20_000;
    let socket = RawSocket::open(&flooder.ns, &flooder.ifname).expect("raw socket");
    let flood = std::thread::spawn(move || {
        let mut rng = XorShift64::new(0xF100D);
        for i in 0..FLOOD {
            let mut mac = rng.bytes(6);
            mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
            let mac: [u8; 6] = mac.try_into().unwrap_or([2, 0, 0, 0, 0, 1]);
            let mut payload = discover(mac, i as u32).expect("discover");
            if i % 10 == 0 {
                // Every tenth is hostile: a truncated or corrupted message.
                let cut = rng.range(1, payload.len());
                payload.truncate(cut);
                if let Some(b) = payload.last_mut() {
                    *b ^= 0xff;
                }
            }
            socket.send(&client_frame(mac, &payload)).expect("send");
        }
    });
    let opts = DoraOptions {
        window: 8,
        rounds: 3,
        ..DoraOptions::default()
    };
    let report = generator.run_dora(&net.reservations, &opts).expect("dora");
    flood.join().expect("flood thread");
    assert_eq!(
        (report.completed, report.errors.wrong_ip, report.errors.naks),
        (3 * RESERVATIONS as u64, 0, 0),
        "{report:#?}"
    );
    let control = server.control().expect("control channel");
    let counters = control.counters(Duration::from_secs(5)).expect("counters");
    let get = |n: &str| counters.iter().find(|c| c.name == n).map_or(0, |c| c.value);
    let dropped: u64 = counters
        .iter()
        .filter(|c| c.name.starts_with("drop_"))
        .map(|c| c.value)
        .sum();
    eprintln!(
        "flood: {FLOOD} sent; unknown_client {}, all drops {dropped}; DORA {:.0}/s during it",
        get("drop_unknown_client"),
        report.per_sec()
    );
    // Frames lost in a full queue are not the appliance's to count; most must arrive.
    assert!(dropped >= FLOOD / 2, "only {dropped} of {FLOOD} counted");
    assert!(
        get("drop_unknown_client") > 0 && get("drop_truncated") + get("drop_bad_option_length") > 0
    );
    assert_eq!(
        get("reservations"),
        RESERVATIONS as u64,
        "the table did not grow"
    );
    server.stop(&mut world).expect("stop");
}
