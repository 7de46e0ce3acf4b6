//! A tenant network with its DHCP and metadata appliances, as the manager would build it:
//! the DHCP appliance routes 169.254.169.254 (option 121) via the metadata appliance's
//! subnet address, and instances that took a lease reach the metadata service through
//! that route. Helpers to boot the pair, describe instances, fetch with `curl` and read
//! with cloud-init's own Python readers from inside an instance namespace.

use crate::appliance::{self, DhcpNet, READY_TIMEOUT, TestNic};
use crate::{Instance, World, find_tool};
use anyhow::{Context, anyhow, bail};
use nanovnf_qemu::Vm;
use nanovnf_schema::dhcp::{DhcpHost, Route};
use nanovnf_schema::metadata::{MetadataInstance, MetadataRole, MetadataSubnet};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use std::net::Ipv4Addr;

/// The Debian interpreter, which sees the `cloud-init` package's modules (a `python3`
/// earlier on `PATH`, pyenv's say, may not).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The test network: 192.168.1.0/24, DHCP at .2, metadata at .3, gateway .1.
pub struct TenantNet {
    pub cidr: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub dhcp_ip: Ipv4Addr,
    pub metadata_ip: Ipv4Addr,
    pub domain: String,
    pub mtu: u16,
    pub host_routes: Vec<Route>,
}

impl TenantNet {
    pub fn new(mtu: u16) -> Self {
        TenantNet {
            cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
            gateway: Ipv4Addr::new(192, 168, 1, 1),
            dhcp_ip: Ipv4Addr::new(192, 168, 1, 2),
            metadata_ip: Ipv4Addr::new(192, 168, 1, 3),
            domain: "nanovnf.test".into(),
            mtu,
            host_routes: vec![Route {
                destination: Ipv4Cidr::new(Ipv4Addr::new(10, 10, 0, 0), 16),
                nexthop: Ipv4Addr::new(192, 168, 1, 254),
            }],
        }
    }

    pub fn dhcp(&self) -> DhcpNet {
        DhcpNet {
            cidr: self.cidr,
            server_ip: self.dhcp_ip,
            gateway: Some(self.gateway),
            metadata_ip: Some(self.metadata_ip),
            host_routes: self.host_routes.clone(),
            other_subnets: Vec::new(),
            domain: self.domain.clone(),
            lease_secs: 3600,
            mtu: self.mtu,
        }
    }

    pub fn subnet(&self) -> MetadataSubnet {
        MetadataSubnet {
            id: "0b5d8f7e-5a1e-4c3b-9d7e-5ab5e1a0c001".into(),
            cidr: self.cidr,
            gateway: Some(self.gateway),
            dns_servers: vec![self.dhcp_ip],
            host_routes: self.host_routes.clone(),
        }
    }

    /// An instance of this network as Nova and Neutron would describe it.
    pub fn instance(&self, n: u8, mac: [u8; 6], ip: Ipv4Addr) -> MetadataInstance {
        MetadataInstance {
            mac,
            ip,
            port_id: format!("6f1c2a4e-71b3-4a8e-9f00-0000000000{n:02x}"),
            uuid: format!("d2c4a1b0-5e6f-4a7b-8c9d-0000000000{n:02x}"),
            name: format!("server-{n}"),
            hostname: format!("vm{n}"),
            domain: self.domain.clone(),
            availability_zone: "nova".into(),
            project_id: "9a8b7c6d5e4f40312233445566778899".into(),
            launch_index: 0,
            public_keys: vec![(
                format!("key{n}"),
                format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n:02} vm{n}@nanovnf\n"),
            )],
            meta: vec![("role".into(), format!("web{n}"))],
            user_data: Some(format!("#cloud-config\nhostname: vm{n}\n").into_bytes()),
            floating_ip: Some(Ipv4Addr::new(203, 0, 113, n)),
            mtu: self.mtu,
        }
    }

    /// The metadata appliance's boot configuration: one NIC at its subnet address.
    pub fn metadata_config(
        &self,
        name: &str,
        mac: [u8; 6],
        instances: Vec<MetadataInstance>,
    ) -> BootConfig {
        BootConfig {
            generation: 1,
            name: name.to_owned(),
            log_level: LogLevel::Info,
            nics: vec![NicConfig {
                mac,
                addresses: vec![Ipv4Cidr::new(self.metadata_ip, self.cidr.prefix_len)],
                mtu: self.mtu,
            }],
            role: Role::Metadata(MetadataRole {
                network_id: "3c0e0e4b-2b7c-4f0a-8a7e-7a0e5c1b0001".into(),
                subnets: vec![self.subnet()],
                instances,
                passwords: Vec::new(),
            }),
        }
    }
}

/// Guest RAM for a metadata appliance whose encoded configuration is `blob_len` bytes: a
/// fixed 16 MiB (sockets, queues, heap slack) plus twice the blob (it is read whole, then
/// decoded beside itself).
pub fn metadata_memory_mib(blob_len: usize) -> u32 {
    16 + 2 * (blob_len.div_ceil(1 << 20) as u32)
}

/// Boots a metadata appliance with a control channel and waits for `READY`.
pub fn boot_metadata(
    world: &World,
    name: &str,
    nic: &TestNic,
    config: &BootConfig,
) -> anyhow::Result<Vm> {
    boot_metadata_with(world, name, nic, config, None)
}

/// [`boot_metadata`] under `accel`, or the launcher's automatic choice.
pub fn boot_metadata_with(
    world: &World,
    name: &str,
    nic: &TestNic,
    config: &BootConfig,
    accel: Option<nanovnf_qemu::Accel>,
) -> anyhow::Result<Vm> {
    let blob = nanovnf_schema::encode(config);
    let mut spec = appliance::spec(world, name, "metadata", std::slice::from_ref(nic))?
        .memory_mib(metadata_memory_mib(blob.len()))
        .control(true)
        .config(blob);
    if let Some(a) = accel {
        spec = spec.accel(a);
    }
    let mut vm = spec.spawn().with_context(|| format!("spawn {name}"))?;
    vm.wait_ready(READY_TIMEOUT)
        .with_context(|| format!("{name} ready\n{}", vm.serial_output()))?;
    Ok(vm)
}

/// Both appliances of `net` on `bridge`: DHCP (reservations for `instances`) and
/// metadata. Returns (dhcp, metadata).
pub fn boot_pair(
    world: &mut World,
    bridge: &str,
    net: &TenantNet,
    instances: &[MetadataInstance],
) -> anyhow::Result<(Vm, Vm)> {
    let dhcp_tap = world.add_tap("tapd", bridge, net.mtu)?;
    let md_tap = world.add_tap("tapm", bridge, net.mtu)?;
    let dhcp_nic = TestNic {
        tap: dhcp_tap,
        mac: appliance::appliance_mac(world, 1),
        addr: net.dhcp_ip,
        prefix_len: net.cidr.prefix_len,
    };
    let md_nic = TestNic {
        tap: md_tap,
        mac: appliance::appliance_mac(world, 2),
        addr: net.metadata_ip,
        prefix_len: net.cidr.prefix_len,
    };
    let hosts = instances
        .iter()
        .map(|i| DhcpHost {
            mac: i.mac,
            ip: i.ip,
            hostname: i.hostname.clone(),
        })
        .collect();
    let prefix = world.prefix().to_owned();
    let dhcp = appliance::boot_dhcp(
        world,
        &format!("{prefix}-dhcp"),
        &dhcp_nic,
        &net.dhcp(),
        hosts,
    )?;
    let name = format!("{prefix}-md");
    let config = net.metadata_config(&name, md_nic.mac, instances.to_vec());
    let md = boot_metadata(world, &name, &md_nic, &config)?;
    Ok((dhcp, md))
}

/// What `curl` got: status, Content-Type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl` from inside `inst` to `http://169.254.169.254<path>` with extra arguments.
pub fn curl(world: &World, inst: &Instance, path: &str, extra: &[&str]) -> anyhow::Result<Fetched> {
    let curl = find_tool("curl").ok_or_else(|| anyhow!("curl is not installed"))?;
    let url = format!("http://169.254.169.254{path}");
    let marker = "\n@@nanovnf@@";
    let format = format!("{marker}%{{http_code}} %{{content_type}}");
    let mut argv = vec![
        curl.to_str().unwrap_or("curl"),
        "-s",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        &format,
    ];
    argv.extend_from_slice(extra);
    argv.push(&url);
    let out = world.exec(&inst.ns, &argv)?;
    let stdout = out.stdout;
    let at = stdout
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())
        .ok_or_else(|| {
            anyhow!(
                "curl {path} in {}: no status ({}; {})",
                inst.ns,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let tail = String::from_utf8_lossy(&stdout[at + marker.len()..]).into_owned();
    let (code, ct) = tail.split_once(' ').unwrap_or((&tail, ""));
    let status: u16 = code.trim().parse().context("curl status code")?;
    if status == 0 {
        bail!(
            "curl {path} in {}: no answer ({})",
            inst.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Fetched {
        status,
        content_type: ct.trim().to_owned(),
        body: stdout[..at].to_vec(),
    })
}

/// The Python program that reads both trees with cloud-init's own helpers and prints
/// what they returned as one JSON object.
pub const CLOUD_INIT_READER: &str = r#"
import json, sys
from cloudinit.sources.helpers import openstack, ec2
base = "http://169.254.169.254"
reader = openstack.MetadataReader(base, timeout=10, retries=3)
res = reader.read_v2()
md = res["metadata"]
net = openstack.convert_net_json(res.get("networkdata"), known_macs={sys.argv[1]: sys.argv[2]})
ec2md = ec2.get_instance_metadata(api_version="2009-04-04", metadata_address=base, timeout=10, retries=3)
ec2ud = ec2.get_instance_userdata(api_version="2009-04-04", metadata_address=base, timeout=10, retries=3)
print(json.dumps({
    "version": reader._find_working_version(),
    "uuid": md["uuid"],
    "instance-id": md["instance-id"],
    "hostname": md["hostname"],
    "local-hostname": md["local-hostname"],
    "name": md["name"],
    "public_keys": md.get("public_keys"),
    "meta": md.get("meta"),
    "random_seed_len": len(md["random_seed"]),
    "userdata": res["userdata"].decode(),
    "vendordata": res.get("vendordata"),
    "vendordata2": res.get("vendordata2"),
    "net": net,
    "ec2": ec2md,
    "ec2_userdata": ec2ud.decode(),
}, sort_keys=True))
"#;

/// Runs [`CLOUD_INIT_READER`] in `inst`; the parsed JSON.
pub fn cloud_init_read(world: &World, inst: &Instance) -> anyhow::Result<serde_json::Value> {
    let mac = crate::mac_to_string(inst.mac);
    // cloud-init names the link in its network config after the instance's own interface.
    let out = world.exec(
        &inst.ns,
        &[SYSTEM_PYTHON, "-c", CLOUD_INIT_READER, &mac, &inst.ifname],
    )?;
    if !out.status.success() {
        bail!(
            "cloud-init reader in {} failed ({}): {}",
            inst.ns,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "cloud-init reader output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Whether cloud-init's Python modules are importable by [`SYSTEM_PYTHON`].
pub fn cloud_init_available() -> bool {
    std::process::Command::new(SYSTEM_PYTHON)
        .args(["-c", "import cloudinit.sources.helpers.openstack"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a boot storm saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormReport {
    /// From the common start to the last correct answer.
    pub elapsed: std::time::Duration,
    pub correct: usize,
    /// Answers carrying another instance's data (or no recognisable data).
    pub wrong: usize,
    /// Connections that failed or timed out.
    pub failed: usize,
    pub first_errors: Vec<String>,
}

/// Every namespace in `instances` fetches `path` at the same moment, each over its own
/// TCP connection from its own thread inside its namespace; an answer is correct when
/// it is a 200 whose body contains that instance's `expect` string.
pub fn storm(
    instances: &[(String, String)],
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<StormReport> {
    use std::io::{Read, Write};
    use std::sync::{Arc, Barrier};
    use std::time::Instant;
    let barrier = Arc::new(Barrier::new(instances.len() + 1));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n");
    let mut handles = Vec::with_capacity(instances.len());
    for (ns, expect) in instances {
        let (ns, expect, barrier, request) =
            (ns.clone(), expect.clone(), barrier.clone(), request.clone());
        handles.push(std::thread::spawn(move || -> Result<Instant, String> {
            let entered = crate::netns::enter_netns(&ns).map_err(|e| format!("{e:#}"));
            barrier.wait();
            entered?;
            let addr = std::net::SocketAddr::from(([169, 254, 169, 254], 80));
            let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("{ns}: connect: {e}"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes())
                .map_err(|e| format!("{ns}: write: {e}"))?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)
                .map_err(|e| format!("{ns}: read: {e}"))?;
            let done = Instant::now();
            let text = String::from_utf8_lossy(&answer);
            if text.starts_with("HTTP/1.1 200 ") && text.contains(expect.as_str()) {
                Ok(done)
            } else {
                let first = text.lines().next().unwrap_or("").to_owned();
                Err(format!("wrong: {ns}: {first:?} ({} bytes)", answer.len()))
            }
        }));
    }
    // Timed from before the release: a main thread scheduled late cannot shorten it.
    let start = Instant::now();
    barrier.wait();
    let mut report = StormReport {
        elapsed: std::time::Duration::ZERO,
        correct: 0,
        wrong: 0,
        failed: 0,
        first_errors: Vec::new(),
    };
    for h in handles {
        match h.join() {
            Ok(Ok(done)) => {
                report.correct += 1;
                report.elapsed = report.elapsed.max(done - start);
            }
            Ok(Err(e)) => {
                if e.starts_with("wrong: ") {
                    report.wrong += 1;
                } else {
                    report.failed += 1;
                }
                if report.first_errors.len() < 5 {
                    report.first_errors.push(e);
                }
            }
            Err(_) => report.failed += 1,
        }
    }
    Ok(report)
}

/// The Python backend standing in for Neutron's metadata agent + Nova behind haproxy:
/// answers every GET on a unix socket with the same bytes.
pub const BACKEND_PY: &str = r#"
import http.server, os, socketserver, sys
body = open(sys.argv[2], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
    def address_string(self):
        return "unix"
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024
try:
    os.unlink(sys.argv[1])
except FileNotFoundError:
    pass
S(sys.argv[1], H).serve_forever()
"#;

/// haproxy's configuration as Neutron's metadata driver writes it (logging, user and
/// daemon mode left out), listening on 169.254.169.254:80 in front of `socket`.
pub fn neutron_haproxy_config(socket: &std::path::Path, network_id: &str) -> String {
    format!(
        "global\n    maxconn     1024\n\n\
         defaults\n    mode http\n    option http-server-close\n    option forwardfor\n\
         \x20   retries                 3\n    timeout http-request    30s\n\
         \x20   timeout connect         30s\n    timeout client          32s\n\
         \x20   timeout server          32s\n    timeout http-keep-alive 30s\n\n\
         listen listener\n    bind 169.254.169.254:80\n    server metadata {}\n\
         \x20   http-request del-header X-Neutron-Router-ID\n\
         \x20   http-request set-header X-Neutron-Network-ID {network_id}\n",
        socket.display()
    )
}
