//! The wire appliance, end to end: two bridges joined only by the appliance, which copies
//! frames (superframes with their offload header included) between its two NICs.

use nanovnf_qemu::Accel;
use nanovnf_tests::forward::{boot_forwarder, iperf3, wire_config};
use nanovnf_tests::{World, environment_ready};
use std::time::Duration;

const TOOLS: &[&str] = &["ip", "ping", "iperf3", "qemu-system-x86_64"];

fn wire_carries_ping_and_tcp(name: &str, offloads: bool) {
    if !environment_ready(name, TOOLS) {
        return;
    }
    let mut world = World::new(name).expect("world");
    let left = world.add_bridge("bl", 1500).expect("bridge");
    let right = world.add_bridge("br", 1500).expect("bridge");
    let tap_l = world.add_tap("tl", &left, 1500).expect("tap");
    let tap_r = world.add_tap("tr", &right, 1500).expect("tap");
    let a = world
        .add_instance("a", &left, Some("198.19.40.1/24"), None, 1500)
        .expect("instance");
    let b = world
        .add_instance("b", &right, Some("198.19.40.2/24"), None, 1500)
        .expect("instance");
    let config = wire_config(&world, name, 1500);
    let vm = boot_forwarder(
        &world,
        name,
        "wire",
        &config,
        &[tap_l, tap_r],
        offloads,
        Accel::Auto,
    )
    .expect("boot wire");
    assert!(
        a.ping(&world, b.ip().unwrap(), 3, Duration::from_secs(10))
            .expect("ping"),
        "no ping across the wire; serial:\n{}",
        vm.serial_output()
    );
    // 20 MB of TCP: with offloads the instances' stacks hand 64 KB superframes to the
    // taps, and they must cross whole.
    let run = iperf3(&mut world, &b.ns, &a.ns, b.ip().unwrap(), &["-n", "20M"])
        .unwrap_or_else(|e| panic!("iperf3: {e:#}; serial:\n{}", vm.serial_output()));
    assert!(run.bits_per_second > 0.0, "{run:?}");
    eprintln!("{name}: {:.2} Gbit/s", run.bits_per_second / 1e9);
}

#[test]
fn wire_with_offloads() {
    wire_carries_ping_and_tcp("wire_off", true);
}

#[test]
fn wire_without_offloads() {
    wire_carries_ping_and_tcp("wire_noff", false);
}
