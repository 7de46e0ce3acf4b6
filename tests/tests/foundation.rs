//! End to end: the ping appliance booted by real QEMU on taps in private namespaces, checked
//! from an "instance" namespace with the real `ping`, raw frames and /proc.

use nanovnf_kernel::exit_code;
use nanovnf_qemu::{Accel, Machine, Vm};
use nanovnf_tests::appliance::{self, TestNic, boot_ping};
use nanovnf_tests::{Instance, RawSocket, World, environment_ready, fits_mtu, malformed_frames};
use std::net::Ipv4Addr;
use std::time::Duration;

const TOOLS: &[&str] = &["ip", "ping", "qemu-system-x86_64"];
const APPLIANCE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

/// A world with one bridge, one tap for the appliance and one instance on the bridge.
fn one_bridge(name: &str) -> (World, Instance, TestNic) {
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", 1500).expect("bridge");
    let tap = world.add_tap("tap", &br, 1500).expect("tap");
    let inst = world
        .add_instance("inst", &br, Some("198.19.1.10/24"), None, 1500)
        .expect("instance");
    let nic = TestNic {
        tap,
        mac: appliance::appliance_mac(&world, 0),
        addr: APPLIANCE_IP,
        prefix_len: 24,
    };
    (world, inst, nic)
}

fn assert_answers_ping(world: &World, inst: &Instance, addr: Ipv4Addr, vm: &Vm) {
    let ok = inst
        .ping(world, addr, 3, Duration::from_secs(10))
        .expect("run ping");
    assert!(
        ok,
        "{addr} did not answer ping; serial log:\n{}",
        vm.serial_output()
    );
}

fn boots_and_answers_ping(name: &str, machine: Machine, accel: Accel) {
    if !environment_ready(name, TOOLS) {
        return;
    }
    let (world, inst, nic) = one_bridge(name);
    let vm = boot_ping(&world, name, std::slice::from_ref(&nic), machine, accel).expect("boot");
    assert_answers_ping(&world, &inst, nic.addr, &vm);
    // The ARP answer carries the MAC from the configuration.
    let neigh = world
        .ip(&inst.ns, &["neigh", "show", &nic.addr.to_string()])
        .expect("neigh");
    assert!(
        neigh.contains(&nanovnf_tests::mac_to_string(nic.mac)),
        "neighbour entry {neigh:?} lacks the appliance MAC"
    );
}

#[test]
fn microvm_tcg_boots_and_answers_ping() {
    boots_and_answers_ping("microvm_tcg", Machine::Microvm, Accel::Tcg);
}

#[test]
fn microvm_kvm_boots_and_answers_ping() {
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(
            !nanovnf_tests::must_run(),
            "CI must have /dev/kvm for the KVM case"
        );
        eprintln!("\n*** SKIPPED microvm_kvm: /dev/kvm does not exist on this machine ***\n");
        return;
    }
    boots_and_answers_ping("microvm_kvm", Machine::Microvm, Accel::Kvm);
}

#[test]
fn q35_tcg_boots_and_answers_ping() {
    boots_and_answers_ping("q35_tcg", Machine::Q35, Accel::Tcg);
}

#[test]
fn two_nics_on_two_bridges_answer_on_both() {
    let name = "two_nics";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let mut world = World::new(name).expect("world");
    let mut nics = Vec::new();
    let mut instances = Vec::new();
    for (i, net) in [1u8, 2].into_iter().enumerate() {
        let br = world.add_bridge(&format!("br{net}"), 1500).expect("bridge");
        let tap = world.add_tap(&format!("tap{net}"), &br, 1500).expect("tap");
        let addr = format!("198.19.{net}.10/24");
        instances.push(
            world
                .add_instance(&format!("in{net}"), &br, Some(&addr), None, 1500)
                .expect("inst"),
        );
        nics.push(TestNic {
            tap,
            mac: appliance::appliance_mac(&world, i as u8),
            addr: Ipv4Addr::new(198, 19, net, 2),
            prefix_len: 24,
        });
    }
    let vm = boot_ping(&world, name, &nics, Machine::Microvm, Accel::Auto).expect("boot");
    for (inst, nic) in instances.iter().zip(&nics) {
        assert_answers_ping(&world, inst, nic.addr, &vm);
    }
    // Each address lives only on its own NIC: asked on the first bridge (an on-link route
    // makes the instance ARP there), nobody answers for the second network's address.
    world
        .ip(
            &instances[0].ns,
            &["route", "add", "198.19.2.0/24", "dev", &instances[0].ifname],
        )
        .expect("route");
    let cross = instances[0]
        .ping(&world, nics[1].addr, 1, Duration::from_secs(1))
        .expect("ping");
    assert!(!cross, "198.19.2.2 answered from the 198.19.1.0/24 bridge");
}

#[test]
fn malformed_frames_are_counted_and_dropped_and_ping_still_works() {
    let name = "malformed";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let (world, inst, nic) = one_bridge(name);
    let mut vm = boot_ping(
        &world,
        name,
        std::slice::from_ref(&nic),
        Machine::Microvm,
        Accel::Auto,
    )
    .expect("boot");
    let src_ip = Ipv4Addr::new(198, 19, 1, 10);
    let frames = malformed_frames(0x5eed, nic.mac, inst.mac, nic.addr, src_ip);
    let sock = RawSocket::open(&inst.ns, &inst.ifname).expect("raw socket");
    let mut sent = 0;
    for round in 0..5 {
        for (kind, frame) in &frames {
            if frame.len() >= 14 && fits_mtu(frame, 1500) {
                sock.send(frame)
                    .unwrap_or_else(|e| panic!("send {kind} (round {round}): {e}"));
                sent += 1;
            }
        }
    }
    assert!(sent > 100, "only {sent} frames could be sent");
    assert_answers_ping(&world, &inst, nic.addr, &vm);
    assert!(
        vm.try_wait().expect("try_wait").is_none(),
        "the appliance exited"
    );
    // The appliance logs its drop counters by named reason.
    let counted =
        nanovnf_tests::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let log = vm.serial_output();
            [
                "bad_ipv4_checksum",
                "malformed_ipv4",
                "bad_icmp_checksum",
                "malformed_arp",
            ]
            .iter()
            .all(|reason| log.contains(&format!(" {reason}=")))
        });
    assert!(
        counted,
        "drop reasons missing from the serial log:\n{}",
        vm.serial_output()
    );
    assert!(
        !vm.serial_output().contains("FATAL"),
        "{}",
        vm.serial_output()
    );
}

#[test]
fn idle_appliance_uses_under_two_percent_of_a_core() {
    let name = "idle_cpu";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let (world, inst, nic) = one_bridge(name);
    let vm = boot_ping(
        &world,
        name,
        std::slice::from_ref(&nic),
        Machine::Microvm,
        Accel::Auto,
    )
    .expect("boot");
    assert_answers_ping(&world, &inst, nic.addr, &vm);
    let before = vm.cpu_time().expect("cpu time");
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let used = vm.cpu_time().expect("cpu time") - before;
    let share = used.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "idle appliance CPU over {window:?}: {used:?} ({:.3}% of a core)",
        share * 100.0
    );
    assert!(
        share < 0.02,
        "idle appliance used {:.2}% of a core",
        share * 100.0
    );
}

/// Boots the ping image with `config` (or none) and returns (guest exit code, serial log).
fn boot_expecting_exit(name: &str, config: Option<Vec<u8>>) -> (u32, String) {
    let (world, _inst, nic) = one_bridge(name);
    let mut spec = appliance::spec(&world, name, "ping", std::slice::from_ref(&nic)).expect("spec");
    if let Some(blob) = config {
        spec = spec.config(blob);
    }
    let mut vm = spec.spawn().expect("spawn");
    let status = vm
        .wait_exit(Duration::from_secs(30))
        .expect("the appliance exits");
    let code = Vm::guest_exit_code(status).expect("a guest exit code");
    (code, vm.serial_output())
}

/// A valid ping configuration whose single NIC has `mac`.
fn config_with_nic(name: &str, mac: [u8; 6]) -> Vec<u8> {
    let nic = TestNic {
        tap: String::new(),
        mac,
        addr: APPLIANCE_IP,
        prefix_len: 24,
    };
    nanovnf_schema::encode(&appliance::ping_config(name, 1, std::slice::from_ref(&nic)))
}

#[test]
fn missing_config_stops_with_one_clear_line_and_its_own_status() {
    let name = "no_config";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let (code, log) = boot_expecting_exit(name, None);
    assert_eq!(code, exit_code::CONFIG_MISSING, "{log}");
    assert!(
        log.contains("FATAL config: fw_cfg file opt/nanovnf/config is missing"),
        "{log}"
    );
}

#[test]
fn corrupt_config_stops_with_a_status_per_reason() {
    let name = "bad_config";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let good = config_with_nic(name, [0x52, 0x54, 0, 0, 0, 1]);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut magic = good.clone();
    magic[0] = b'X';
    for (blob, reason, line) in [
        (
            flipped,
            nanovnf_schema::ConfigError::BadChecksum {
                expected: 0,
                actual: 0,
            },
            "checksum mismatch",
        ),
        (magic, nanovnf_schema::ConfigError::BadMagic, "bad magic"),
    ] {
        let (code, log) = boot_expecting_exit(name, Some(blob));
        assert_eq!(code, exit_code::config_error(&reason), "{log}");
        assert!(log.contains("FATAL config:") && log.contains(line), "{log}");
    }
}

#[test]
fn config_naming_an_absent_nic_stops_the_appliance() {
    let name = "absent_nic";
    if !environment_ready(name, TOOLS) {
        return;
    }
    let blob = config_with_nic(name, [0x52, 0x54, 0, 0xde, 0xad, 1]);
    let (code, log) = boot_expecting_exit(name, Some(blob));
    assert_eq!(code, exit_code::APPLIANCE, "{log}");
    assert!(
        log.contains("FATAL nic 52:54:00:de:ad:01 from the config has no virtio-net device"),
        "{log}"
    );
}
