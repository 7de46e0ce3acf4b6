//! Tests of the test world itself, run for real (root, namespaces). Addresses come from
//! 198.18.0.0/15 (RFC 2544 benchmarking), and only ever exist inside our namespaces.

use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::netns::{netns_inode, pid_netns_inode};
use crate::*;

const A_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const ABSENT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 99);

fn ready(name: &str) -> bool {
    environment_ready(name, &["ip", "ping"])
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let dash = format!("{prefix}-");
    std::fs::read_dir(NETNS_RUN_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&dash))
                .collect()
        })
        .unwrap_or_default()
}

fn root_links() -> Vec<String> {
    let out = Command::new(find_tool("ip").unwrap())
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split(':').nth(1)?.trim().to_owned()))
        .collect();
    names.sort();
    names
}

/// A bridge with two addressed instances.
fn two_instances(world: &mut World, mtu: u16) -> (Instance, Instance) {
    let br = world.add_bridge("br", mtu).unwrap();
    let a = world
        .add_instance("a", &br, Some("198.19.0.10/24"), None, mtu)
        .unwrap();
    let b = world
        .add_instance("b", &br, Some("198.19.0.11/24"), None, mtu)
        .unwrap();
    (a, b)
}

#[test]
fn instances_ping_each_other_and_drop_removes_everything() {
    if !ready("instances_ping_each_other") {
        return;
    }
    let root_before = root_links();
    let mut world = World::new("ping_each_other").unwrap();
    let prefix = world.prefix().to_owned();
    assert!(
        prefix.starts_with(PREFIX_ROOT) && prefix.len() == 8,
        "{prefix}"
    );
    let (a, b) = two_instances(&mut world, 1500);
    let tap = world.add_tap("tap", &format!("{prefix}-br"), 1500).unwrap();
    for name in [&a.ns, &a.ifname, &a.host_port, &b.ns, &tap] {
        assert!(
            name.starts_with(&format!("{prefix}-")) && name.len() <= 15,
            "{name}"
        );
    }
    assert_ne!(a.mac, b.mac);
    assert_eq!(a.mac[0] & 0x03, 0x02, "locally administered unicast");

    assert!(a.ping(&world, B_IP, 2, Duration::from_secs(5)).unwrap());
    assert!(b.ping(&world, A_IP, 2, Duration::from_secs(5)).unwrap());
    assert!(
        !a.ping(&world, ABSENT_IP, 1, Duration::from_secs(1))
            .unwrap()
    );

    let links = world.ip(world.host_ns(), &["-o", "link", "show"]).unwrap();
    assert!(
        links.contains(&format!("{tap}:")) && links.contains("master"),
        "{links}"
    );
    let neigh = world.exec(&a.ns, &["ip", "neigh", "show"]).unwrap();
    assert!(neigh.status.success());
    assert_eq!(
        namespaces_with(&prefix).len(),
        3,
        "host + 2 instances: {:?}",
        namespaces_with(&prefix)
    );

    drop(world);
    assert!(namespaces_with(&prefix).is_empty());
    let lock = std::path::Path::new("/run/nanovnf-tests").join(format!("{prefix}.lock"));
    assert!(!lock.exists(), "{} left behind", lock.display());
    assert_eq!(root_links(), root_before, "root namespace links changed");
}

#[test]
fn drop_cleans_up_when_the_test_panics() {
    if !ready("drop_cleans_up_when_the_test_panics") {
        return;
    }
    let prefix = Mutex::new(String::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut world = World::new("panics").unwrap();
        *prefix.lock().unwrap() = world.prefix().to_owned();
        let (_a, _b) = two_instances(&mut world, 1500);
        let pid = world
            .spawn(world.host_ns().to_owned().as_str(), sleeper())
            .unwrap();
        assert!(pid > 0);
        panic!("test body failed on purpose");
    }));
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert!(
        namespaces_with(&prefix).is_empty(),
        "{:?}",
        namespaces_with(&prefix)
    );
}

fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("60");
    c
}

#[test]
fn spawned_and_tracked_processes_die_with_the_world() {
    if !ready("spawned_and_tracked_processes_die_with_the_world") {
        return;
    }
    let mut world = World::new("processes").unwrap();
    let host = world.host_ns().to_owned();
    let ns_ino = netns_inode(&host).unwrap();

    let owned = world.spawn(&host, sleeper()).unwrap();
    assert_eq!(
        pid_netns_inode(owned),
        Some(ns_ino),
        "spawned inside the namespace"
    );
    assert!(
        world
            .child_mut(owned)
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none()
    );
    let killed = world.spawn(&host, sleeper()).unwrap();
    assert!(!world.kill(killed).unwrap().success());

    // Started elsewhere, as a QEMU wrapper would: `ip netns exec` execs in place.
    let mut outside = Command::new(find_tool("ip").unwrap())
        .args(["netns", "exec", &host, "sleep", "60"])
        .spawn()
        .unwrap();
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(5),
        || { pid_netns_inode(outside.id()) == Some(ns_ino) }
    ));
    world.track_pid(outside.id());
    // A tracked PID outside our namespaces is never signalled: our own.
    world.track_pid(std::process::id());

    drop(world);
    let status = outside.wait().unwrap();
    assert!(!status.success(), "tracked process was killed");
    assert!(
        std::fs::read_to_string(format!("/proc/{owned}/stat")).is_err(),
        "owned child reaped"
    );
}

#[test]
fn raw_socket_broadcast_reaches_the_other_instance() {
    if !ready("raw_socket_broadcast") {
        return;
    }
    let mut world = World::new("raw_socket").unwrap();
    let (a, b) = two_instances(&mut world, 9000);
    let tx = RawSocket::open(&a.ns, &a.ifname).unwrap();
    let rx = RawSocket::open(&b.ns, &b.ifname).unwrap();
    let marker = format!("nanovnf {}", world.prefix());

    let frame = ethernet(
        BROADCAST_MAC,
        a.mac,
        ETHERTYPE_EXPERIMENTAL,
        marker.as_bytes(),
    );
    tx.send(&frame).unwrap();
    let got = rx
        .recv_matching(Duration::from_secs(3), |f| f == frame.as_slice())
        .unwrap();
    assert_eq!(got.as_deref(), Some(frame.as_slice()));
    // The sender does not see its own transmission.
    assert!(
        tx.recv_matching(Duration::from_millis(200), |f| f == frame.as_slice())
            .unwrap()
            .is_none()
    );

    // Jumbo frames pass where the MTU allows; the kernel refuses what does not fit.
    let mut jumbo = ethernet(BROADCAST_MAC, a.mac, ETHERTYPE_EXPERIMENTAL, &[0x5a; 8986]);
    jumbo[14..14 + marker.len()].copy_from_slice(marker.as_bytes());
    assert!(fits_mtu(&jumbo, 9000));
    tx.send(&jumbo).unwrap();
    let got = rx
        .recv_matching(Duration::from_secs(3), |f| f.len() == jumbo.len())
        .unwrap();
    assert_eq!(got.as_deref(), Some(jumbo.as_slice()));
    let too_big = vec![0xffu8; 9015];
    assert!(tx.send(&too_big).is_err());
    assert!(tx.send(&[0xff; 6]).is_err(), "short frames are refused");

    // Every malformed frame that Linux will send goes out without a hiccup.
    let frames = malformed_frames(3, b.mac, a.mac, B_IP, A_IP);
    for (kind, f) in &frames {
        if f.len() >= 14 && fits_mtu(f, 9000) {
            tx.send(f)
                .unwrap_or_else(|e| panic!("{kind} ({} bytes): {e}", f.len()));
        }
    }
}

#[test]
fn echo_prober_sees_a_live_host_and_times_out_on_an_absent_one() {
    if !ready("echo_prober") {
        return;
    }
    let mut world = World::new("echo_prober").unwrap();
    let (a, b) = two_instances(&mut world, 1500);

    let start = Instant::now();
    let at = first_echo_reply(
        &a.ns,
        B_IP,
        Duration::from_millis(20),
        Duration::from_secs(5),
    )
    .unwrap()
    .expect("reply from a live instance");
    assert!(
        at > start && at - start < Duration::from_secs(2),
        "{:?}",
        at - start
    );

    // With the neighbour known in advance, the first reply needs no ARP at all.
    a.set_neighbor(&world, B_IP, b.mac).unwrap();
    let prober = EchoProber::start(
        &a.ns,
        B_IP,
        Duration::from_millis(10),
        Duration::from_secs(5),
    )
    .unwrap();
    let at = prober.join().unwrap().expect("background reply");
    assert!(at - start < Duration::from_secs(3));

    let timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let none = first_echo_reply(&a.ns, ABSENT_IP, Duration::from_millis(50), timeout).unwrap();
    assert_eq!(none, None);
    assert!(start.elapsed() >= timeout);
    assert!(start.elapsed() < timeout + Duration::from_secs(1));

    // No route at all is a setup error, not "no reply".
    let err = first_echo_reply(
        world.host_ns(),
        B_IP,
        Duration::from_millis(50),
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("could be sent"), "{err:#}");

    // Dropping a running prober stops it promptly.
    let prober = EchoProber::start(
        &a.ns,
        ABSENT_IP,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .unwrap();
    let start = Instant::now();
    drop(prober);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn names_and_ownership_are_checked() {
    if !ready("names_and_ownership_are_checked") {
        return;
    }
    let mut world = World::new("names").unwrap();
    assert!(world.name("toolong").is_err(), "8+1+7 > 15");
    assert!(world.name("abcdef").is_ok());
    assert!(world.name("Br").is_err() && world.name("a-b").is_err() && world.name("").is_err());
    let br = world.add_bridge("br", 1500).unwrap();
    assert!(world.add_bridge("br", 1500).is_err(), "duplicate");
    assert!(world.add_tap("t", "br0", 1500).is_err(), "foreign bridge");
    assert!(
        world.add_instance("br", &br, None, None, 1500).is_err(),
        "clashes with bridge"
    );
    assert!(
        world
            .add_instance("x", &br, Some("1.2.3.4"), None, 1500)
            .is_err()
    );
    assert!(world.exec("somebody-else", &["true"]).is_err());
    assert!(world.ip("somebody-else", &["link"]).is_err());
    assert!(
        world
            .sysctl(world.host_ns(), "kernel.hostname", "x")
            .is_err()
    );

    let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    let i = world.add_instance("i", &br, None, Some(mac), 1400).unwrap();
    assert_eq!(i.mac, mac);
    let link = world
        .ip(&i.ns, &["-o", "link", "show", "dev", &i.ifname])
        .unwrap();
    assert!(
        link.contains("02:aa:bb:cc:dd:ee") && link.contains("mtu 1400"),
        "{link}"
    );
    assert!(i.ip().is_err());
}

#[test]
fn namespaces_are_quiet_and_the_root_is_untouched() {
    if !ready("namespaces_are_quiet") {
        return;
    }
    const KEY: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";
    if !std::path::Path::new(KEY).exists() {
        return;
    }
    let root_before = std::fs::read_to_string(KEY).unwrap();
    let world = World::new("quiet").unwrap();
    let inside = in_netns(world.host_ns(), || std::fs::read_to_string(KEY).unwrap()).unwrap();
    assert_eq!(inside.trim(), "1");
    assert_eq!(std::fs::read_to_string(KEY).unwrap(), root_before);
    world
        .sysctl(world.host_ns(), "net.ipv4.ip_forward", "1")
        .unwrap();
    let fwd = in_netns(world.host_ns(), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
    })
    .unwrap();
    assert_eq!(fwd.trim(), "1");
}

#[test]
fn in_netns_only_moves_its_own_thread_and_forwards_panics() {
    if !ready("in_netns") {
        return;
    }
    let world = World::new("in_netns").unwrap();
    let host = world.host_ns().to_owned();
    let me = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    let there = in_netns(&host, || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    })
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(there, netns_inode(&host).unwrap());
    assert_eq!(
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
        me.ino()
    );

    let h = host.clone();
    let panicked = catch_unwind(move || in_netns(&h, || panic!("inner")).unwrap());
    assert!(panicked.is_err());
    assert!(in_netns("nvt-does-not-exist", || ()).is_err());
}

#[test]
fn cleanup_stale_removes_orphans_but_not_live_worlds() {
    if !ready("cleanup_stale") {
        return;
    }
    let live = World::new("cleanup_live").unwrap();
    // An orphan as a crashed run leaves it: made while holding its prefix's lock (so
    // that concurrent cleaners in other test processes keep off it), then let go.
    let root = format!("nvtzz{:x}", std::process::id());
    let orphan = format!("{root}-host");
    let lock_path = crate::world::lock_dir().join(format!("{root}.lock"));
    {
        let lock = std::fs::File::create(&lock_path).unwrap();
        assert!(crate::world::try_flock(&lock).unwrap());
        let ip = find_tool("ip").unwrap();
        assert!(
            Command::new(&ip)
                .args(["netns", "add", &orphan])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            cleanup_stale(&root).is_empty(),
            "a held lock means a live world"
        );
        assert!(netns_path(&orphan).exists());
    }
    // A cleaner in another test process may be sweeping it right now (holding the
    // lock, so ours skips it); either way it must soon be gone.
    let mut deleted = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            deleted.extend(cleanup_stale(&root));
            !netns_path(&orphan).exists()
        }),
        "{deleted:?}"
    );
    // A concurrent cleaner may briefly hold (recreate) the lock file; it unlinks it.
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || { !lock_path.exists() }
    ));

    // Sweeping the whole root leaves every live world (this one and parallel tests') be.
    cleanup_stale(PREFIX_ROOT);
    assert_eq!(namespaces_with(live.prefix()).len(), 1);
    assert!(cleanup_stale("other").is_empty(), "refuses foreign roots");
}

#[test]
fn an_instance_can_receive_in_a_napi_thread_of_its_own() {
    if !environment_ready("receive_in_own_thread", &["ip", "ping", "ethtool"]) {
        return;
    }
    let mut world = World::new("rx_thread").unwrap();
    let (a, b) = two_instances(&mut world, 1500);
    world.receive_in_own_thread(&b).unwrap();
    let features = |ns: &str, dev: &str| {
        String::from_utf8_lossy(&world.exec(ns, &["ethtool", "-k", dev]).unwrap().stdout)
            .into_owned()
    };
    assert!(features(&b.ns, &b.ifname).contains("generic-receive-offload: on"));
    assert!(features(world.host_ns(), &b.host_port).contains("tcp-segmentation-offload: off"));
    let threaded = world
        .exec(
            &b.ns,
            &["cat", &format!("/sys/class/net/{}/threaded", b.ifname)],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&threaded.stdout).trim(), "1");
    // The kernel names the thread after the device: "napi/<ifname>-<napi id>".
    let napi_threads: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(&format!("napi/{}", &b.ifname[..b.ifname.len().min(10)])))
        .collect();
    assert!(!napi_threads.is_empty(), "no NAPI thread for {}", b.ifname);
    assert!(a.ping(&world, B_IP, 2, Duration::from_secs(5)).unwrap());
    assert!(b.ping(&world, A_IP, 2, Duration::from_secs(5)).unwrap());
}
