//! End to end: a tenant network (MTU 1450) with its DHCP and metadata appliances in real
//! QEMU. Instances take their lease with busybox udhcpc, so the route to 169.254.169.254
//! is the one DHCP handed out; `curl` walks every path; cloud-init's own readers read
//! both trees from two instances at once, each getting its own data; a namespace that
//! spoofs an instance's address from another MAC gets 404; a live change of the floating
//! IP shows without a reboot; bad input is counted and others are still served.

use nanovnf_qemu::ControlClient;
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::metadata::MetadataInstance;
use nanovnf_tests::dhcp_clients::{Client, expect_route, routes};
use nanovnf_tests::metadata::{
    Fetched, TenantNet, boot_pair, cloud_init_available, cloud_init_read, curl,
};
use nanovnf_tests::{Instance, World, environment_ready, must_run, wait_until};
use std::net::Ipv4Addr;
use std::time::Duration;

const MTU: u16 = 1450;
const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

fn mac(last: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0x6d, 0x00, last]
}

fn counter(ctl: &mut ControlClient, name: &str) -> u64 {
    let all: Vec<Counter> = ctl.counters(Duration::from_secs(5)).expect("counters");
    all.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name} in {all:?}"))
        .value
}

/// An instance namespace on `br` that took its lease from the DHCP appliance.
fn leased(world: &mut World, br: &str, short: &str, inst: &MetadataInstance) -> Instance {
    let ns = world
        .add_instance(short, br, None, Some(inst.mac), 1500)
        .expect("instance");
    let running = Client::Udhcpc.start(world, &ns, short).expect("udhcpc");
    let bound = running
        .wait_bound(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(bound.ip, Some(inst.ip));
    // The hook logs the lease before it installs the routes.
    let mut table = Vec::new();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        table = routes(world, &ns).unwrap_or_default();
        expect_route(&table, "169.254.169.254 via 192.168.1.3").is_ok()
    });
    expect_route(&table, "169.254.169.254 via 192.168.1.3").unwrap();
    ns
}

fn tools_ready(name: &str, extra: &[&str]) -> bool {
    let mut tools = vec!["ip", "qemu-system-x86_64", "busybox", "curl"];
    tools.extend_from_slice(extra);
    if !environment_ready(name, &tools) {
        return false;
    }
    if !cloud_init_available() {
        assert!(
            !must_run(),
            "{name}: cloud-init's Python modules are missing (scripts/setup.sh)"
        );
        eprintln!("SKIPPED {name}: cloud-init's Python modules are missing (scripts/setup.sh)");
        return false;
    }
    true
}

fn expect(f: &Fetched, status: u16, content_type: &str, path: &str) {
    assert_eq!(f.status, status, "{path}: {f:?}");
    assert_eq!(f.content_type, content_type, "{path}");
}

#[test]
fn instances_read_their_own_metadata_with_curl_and_cloud_init() {
    let name = "metadata_e2e";
    if !tools_ready(name, &[]) {
        return;
    }
    let net = TenantNet::new(MTU);
    let vm1 = net.instance(1, mac(0x11), Ipv4Addr::new(192, 168, 1, 11));
    let vm2 = net.instance(2, mac(0x22), Ipv4Addr::new(192, 168, 1, 12));
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", MTU).expect("bridge");
    let (_dhcp, md) =
        boot_pair(&mut world, &br, &net, &[vm1.clone(), vm2.clone()]).expect("appliances");
    let mut ctl = ControlClient::connect(
        md.control_socket().expect("control socket"),
        Duration::from_secs(5),
    )
    .expect("control channel");
    let ns1 = leased(&mut world, &br, "vm1", &vm1);
    let ns2 = leased(&mut world, &br, "vm2", &vm2);
    // Instance 1's address on another MAC (used at the end).
    let spoofer = world
        .add_instance("spoof", &br, Some("192.168.1.11/24"), Some(mac(0x99)), 1500)
        .expect("spoofer");
    world
        .ip(
            &spoofer.ns,
            &["route", "add", "169.254.169.254/32", "via", "192.168.1.3"],
        )
        .expect("route");

    // Every path with curl.
    let get = |path: &str| curl(&world, &ns1, path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let versions = get("/");
    expect(&versions, 200, TEXT, "/");
    assert!(versions.text().ends_with("2009-04-04\nlatest"));
    let os = get("/openstack");
    expect(&os, 200, TEXT, "/openstack");
    assert_eq!(
        os.text(),
        "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n\
         2018-08-27\nlatest"
    );
    let listing = get("/openstack/latest/");
    assert_eq!(
        listing.text(),
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"
    );
    let md_json = get("/openstack/latest/meta_data.json");
    expect(&md_json, 200, JSON, "meta_data.json");
    let v: serde_json::Value = serde_json::from_slice(&md_json.body).unwrap();
    assert_eq!(v["uuid"], vm1.uuid.as_str());
    assert_eq!(v["hostname"], "vm1");
    assert_eq!(v["public_keys"]["key1"], vm1.public_keys[0].1.as_str());
    let nd = get("/openstack/2018-08-27/network_data.json");
    expect(&nd, 200, TEXT, "network_data.json");
    let v: serde_json::Value = serde_json::from_slice(&nd.body).unwrap();
    assert_eq!(v["networks"][0]["ip_address"], "192.168.1.11");
    assert_eq!(v["links"][0]["ethernet_mac_address"], "fa:16:3e:6d:00:11");
    for path in [
        "/openstack/latest/vendor_data.json",
        "/openstack/latest/vendor_data2.json",
    ] {
        let f = get(path);
        expect(&f, 200, JSON, path);
        assert_eq!(f.text(), "{}");
    }
    let ud = get("/openstack/latest/user_data");
    expect(&ud, 200, TEXT, "user_data");
    assert_eq!(ud.body, vm1.user_data.clone().unwrap());
    assert_eq!(
        get("/latest/user-data").body,
        vm1.user_data.clone().unwrap()
    );
    let meta = get("/latest/meta-data/");
    assert!(
        meta.text().starts_with("ami-id\nami-launch-index\n"),
        "{}",
        meta.text()
    );
    for (path, want) in [
        ("/latest/meta-data/hostname", "vm1"),
        ("/latest/meta-data/local-hostname", "vm1.nanovnf.test"),
        ("/latest/meta-data/local-ipv4", "192.168.1.11"),
        ("/latest/meta-data/public-ipv4", "203.0.113.1"),
        ("/latest/meta-data/placement/availability-zone", "nova"),
        ("/latest/meta-data/public-keys/", "0=key1"),
        ("/latest/meta-data/public-keys/0/", "openssh-key"),
        ("/2009-04-04/meta-data/security-groups", "default"),
    ] {
        let f = get(path);
        expect(&f, 200, TEXT, path);
        assert_eq!(f.text(), want, "{path}");
    }
    let id = get("/latest/meta-data/instance-id").text();
    assert!(id.starts_with("i-") && id.len() == 10, "{id}");
    for path in [
        "/2021-03-23/meta-data/instance-id",
        "/2018-09-24/meta-data/instance-id",
        "/2016-09-02/meta-data/instance-id",
        "/openstack/2020-10-14/meta_data.json",
        "/latest/meta-data/nope",
    ] {
        expect(&get(path), 404, TEXT, path);
    }
    // HEAD: the headers alone.
    let head = curl(&world, &ns1, "/openstack/latest/meta_data.json", &["-I"]).unwrap();
    assert_eq!(head.status, 200);
    assert!(String::from_utf8_lossy(&head.body).contains("Content-Type: application/json"));
    // A method the resource does not take.
    let put = curl(&world, &ns1, "/latest/meta-data/hostname", &["-X", "PUT"]).unwrap();
    assert_eq!(put.status, 405);
    // The password: set once, then 409.
    let post = |body: &str| {
        curl(
            &world,
            &ns1,
            "/openstack/latest/password",
            &["--data-binary", body],
        )
        .unwrap()
    };
    assert_eq!(post("c2VjcmV0").status, 200);
    assert_eq!(post("other").status, 409);
    assert_eq!(get("/openstack/latest/password").text(), "c2VjcmV0");

    // cloud-init's own readers, in both instances at once.
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| cloud_init_read(&world, &ns1));
        let b = s.spawn(|| cloud_init_read(&world, &ns2));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (r, inst, n) in [(r1, &vm1, 1), (r2, &vm2, 2)] {
        let r = r.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r["version"], "2018-08-27");
        assert_eq!(r["uuid"], inst.uuid.as_str());
        assert_eq!(r["instance-id"], inst.uuid.as_str());
        assert_eq!(r["local-hostname"], format!("vm{n}").as_str());
        assert_eq!(r["name"], format!("server-{n}").as_str());
        assert_eq!(r["meta"]["role"], format!("web{n}").as_str());
        assert_eq!(r["random_seed_len"], 512);
        assert_eq!(
            r["userdata"],
            format!("#cloud-config\nhostname: vm{n}\n").as_str()
        );
        assert_eq!(r["ec2_userdata"], r["userdata"]);
        assert_eq!(r["vendordata"], serde_json::json!({}));
        assert_eq!(r["ec2"]["hostname"], format!("vm{n}").as_str());
        assert_eq!(
            r["ec2"]["local-ipv4"],
            inst.ip.to_string().as_str(),
            "{n}: {r}"
        );
        assert_eq!(r["ec2"]["placement"]["availability-zone"], "nova");
        assert!(
            r["ec2"]["public-keys"][format!("key{n}")]
                .to_string()
                .contains("ssh-ed25519"),
            "{r}"
        );
        // network_data.json converted to cloud-init's network config: a static address.
        let cfg = r["net"]["config"].as_array().expect("network config");
        let phys = cfg
            .iter()
            .find(|c| c["type"] == "physical")
            .expect("a link");
        assert_eq!(phys["mac_address"], cloud_mac(inst.mac));
        assert_eq!(phys["mtu"], MTU);
        let subnet = &phys["subnets"][0];
        assert_eq!(subnet["type"], "static", "{r}");
        assert_eq!(subnet["address"], inst.ip.to_string().as_str());
    }

    // Instance 1's address from another MAC gets 404 and nothing else.
    for path in [
        "/",
        "/openstack/latest/meta_data.json",
        "/latest/meta-data/instance-id",
    ] {
        let f = curl(&world, &spoofer, path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(f.status, 404, "spoofer got {path}: {f:?}");
        assert!(!f.text().contains("vm1"));
    }
    assert!(counter(&mut ctl, "refused_mac_mismatch") >= 3);
    // The real instance is still answered (the spoofer's ARP did not steal its replies).
    assert_eq!(get("/latest/meta-data/hostname").text(), "vm1");

    // A live change: a new floating IP shows at once.
    let mut moved = vm1.clone();
    moved.floating_ip = Some(Ipv4Addr::new(198, 51, 100, 77));
    ctl.call(Op::MetadataUpsert(Box::new(moved)), Duration::from_secs(5))
        .expect("upsert");
    assert_eq!(get("/latest/meta-data/public-ipv4").text(), "198.51.100.77");
    ctl.call(Op::MetadataRemove { mac: vm2.mac }, Duration::from_secs(5))
        .expect("remove");
    assert_eq!(curl(&world, &ns2, "/", &[]).unwrap().status, 404);
    assert_eq!(counter(&mut ctl, "passwords_set"), 1);
    assert_eq!(counter(&mut ctl, "password_conflict"), 1);
    eprintln!("appliance log:\n{}", md.serial_output());
}

fn cloud_mac(mac: [u8; 6]) -> String {
    nanovnf_tests::mac_to_string(mac)
}

/// Sends `bytes` to 169.254.169.254:80 from `inst` and returns what came back (bash's
/// /dev/tcp; `timeout` bounds a connection the appliance keeps open).
fn raw_exchange(world: &World, inst: &Instance, bytes: &str, secs: u32) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/169.254.169.254/80; printf '{bytes}' >&3; timeout {secs} cat <&3"
    );
    let out = world
        .exec(&inst.ns, &["bash", "-c", &script])
        .expect("bash");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bad_input_is_counted_and_closed_and_others_are_still_served() {
    let name = "metadata_bad_input";
    if !tools_ready(name, &["bash", "timeout"]) {
        return;
    }
    let net = TenantNet::new(MTU);
    let vm1 = net.instance(1, mac(0x31), Ipv4Addr::new(192, 168, 1, 21));
    let vm2 = net.instance(2, mac(0x32), Ipv4Addr::new(192, 168, 1, 22));
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", MTU).expect("bridge");
    let (_dhcp, md) =
        boot_pair(&mut world, &br, &net, &[vm1.clone(), vm2.clone()]).expect("appliances");
    let mut ctl = ControlClient::connect(
        md.control_socket().expect("control socket"),
        Duration::from_secs(5),
    )
    .expect("control channel");
    let bad = leased(&mut world, &br, "bad", &vm1);
    let good = leased(&mut world, &br, "good", &vm2);

    // Malformed, oversized and binary requests: answered with 400/431/413, then closed
    // (`cat` returns well before its timeout).
    let malformed = raw_exchange(&world, &bad, "GET / HTTP/9.9\\r\\n\\r\\n", 5);
    assert!(malformed.starts_with("HTTP/1.1 400 "), "{malformed}");
    assert!(malformed.contains("Connection: close"));
    let long = format!("GET / HTTP/1.1\\r\\nX: {}\\r\\n\\r\\n", "a".repeat(9000));
    assert!(raw_exchange(&world, &bad, &long, 5).starts_with("HTTP/1.1 431 "));
    let absurd =
        "POST /openstack/latest/password HTTP/1.1\\r\\nContent-Length: 999999999\\r\\n\\r\\n";
    assert!(raw_exchange(&world, &bad, absurd, 5).starts_with("HTTP/1.1 413 "));
    let garbage = raw_exchange(
        &world,
        &bad,
        "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00\\r\\n\\r\\n",
        5,
    );
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage:?}");
    // Keep-alive pipelining over one connection.
    let two = raw_exchange(
        &world,
        &bad,
        "GET /latest/meta-data/hostname HTTP/1.1\\r\\n\\r\\nGET /latest/meta-data/local-ipv4 HTTP/1.1\\r\\nConnection: close\\r\\n\\r\\n",
        5,
    );
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");
    assert!(two.contains("\r\n\r\nvm1HTTP/1.1 200 OK") && two.ends_with("192.168.1.21"));

    // Half-open connections (a request never finished) and a SYN flood from one
    // instance while the other keeps asking.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut cmd = std::process::Command::new(nanovnf_tests::find_tool("ip").unwrap());
        cmd.args([
            "netns",
            "exec",
            &bad.ns,
            "bash",
            "-c",
            "exec 3<>/dev/tcp/169.254.169.254/80; printf 'GET /lat' >&3; sleep 30",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        held.push(world.spawn(&bad.ns, cmd).expect("spawn"));
    }
    let flood_script =
        "for i in $(seq 1 300); do (exec 3<>/dev/tcp/169.254.169.254/80) & done; wait";
    let mut flood = std::process::Command::new("bash");
    flood
        .args(["-c", flood_script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let flood_pid = world.spawn(&bad.ns, flood).expect("flood");
    for _ in 0..10 {
        let f = curl(&world, &good, "/latest/meta-data/hostname", &[])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((f.status, f.text().as_str()), (200, "vm2"));
    }
    let _ = world.kill(flood_pid);
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
            counter(&mut ctl, "timeout_request") >= 40
        }),
        "the half-open requests expire: {:?}",
        ctl.counters(Duration::from_secs(5))
    );
    for pid in held {
        let _ = world.kill(pid);
    }
    assert!(counter(&mut ctl, "bad_request_malformed") >= 2);
    assert!(counter(&mut ctl, "bad_request_head_too_large") >= 1);
    assert!(counter(&mut ctl, "bad_request_body_too_large") >= 1);
    let f = curl(&world, &bad, "/latest/meta-data/hostname", &[]).unwrap();
    assert_eq!(f.text(), "vm1", "the flooder is served again afterwards");
}

#[test]
fn a_full_network_boots_in_its_memory_and_serves_64_kib_user_data() {
    let name = "metadata_full";
    if !tools_ready(name, &[]) {
        return;
    }
    use nanovnf_schema::metadata::{MAX_INSTANCES, MAX_USER_DATA};
    use nanovnf_tests::appliance::{self, TestNic};
    use nanovnf_tests::metadata::{boot_metadata, metadata_memory_mib};
    let net = TenantNet::new(1500);
    let instances: Vec<MetadataInstance> = (0..MAX_INSTANCES)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 1, 0)) + 4 + i as u32);
            let mut inst = net.instance(1, [0xfa, 0x16, 0x3e, 0x7f, 0, i as u8], ip);
            inst.uuid = format!("f0000000-0000-4000-8000-{i:012}");
            let mut ud = format!("#cloud-config\n# instance {i}\n").into_bytes();
            ud.resize(MAX_USER_DATA, b'#');
            inst.user_data = Some(ud);
            inst
        })
        .collect();
    let probe = instances[7].clone();
    let mut world = World::new(name).expect("world");
    let br = world.add_bridge("br", 1500).expect("bridge");
    let tap = world.add_tap("tapm", &br, 1500).expect("tap");
    let nic = TestNic {
        tap,
        mac: appliance::appliance_mac(&world, 2),
        addr: net.metadata_ip,
        prefix_len: 24,
    };
    let vm_name = format!("{}-md", world.prefix());
    let config = net.metadata_config(&vm_name, nic.mac, instances);
    let blob = nanovnf_schema::encode(&config).len();
    eprintln!(
        "config blob {} KiB, guest RAM {} MiB",
        blob / 1024,
        metadata_memory_mib(blob)
    );
    assert!(blob <= nanovnf_schema::MAX_BLOB_LEN);
    let md = boot_metadata(&world, &vm_name, &nic, &config).expect("boot");
    let inst = world
        .add_instance(
            "vm",
            &br,
            Some(&format!("{}/24", probe.ip)),
            Some(probe.mac),
            1500,
        )
        .expect("instance");
    world
        .ip(
            &inst.ns,
            &["route", "add", "169.254.169.254/32", "via", "192.168.1.3"],
        )
        .expect("route");
    let ud = curl(&world, &inst, "/openstack/latest/user_data", &[]).expect("curl");
    assert_eq!(ud.status, 200);
    assert_eq!(ud.body, probe.user_data.unwrap());
    let ec2 = curl(&world, &inst, "/latest/user-data", &[]).expect("curl");
    assert_eq!(ec2.body.len(), MAX_USER_DATA);
    eprintln!("{}", md.serial_output());
}
