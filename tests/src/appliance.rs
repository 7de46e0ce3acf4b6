//! Booting appliances inside a [`World`]: build the images once per process, write the
//! boot configuration, start QEMU in the world's host namespace and wait for `READY`.

use crate::World;
use anyhow::Context;
use nanovnf_qemu::{Accel, Machine, Nic, Vm, VmSpec};
use nanovnf_schema::{BootConfig, Ipv4Cidr, LogLevel, NicConfig, Role};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// How long an appliance may take to print `READY` (generous: tests run in parallel on
/// two cores, and q35 under KVM spends seconds in SeaBIOS).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The image `name`, built (incrementally) on first use in this process.
pub fn image(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            nanovnf_build_images::build_all()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(nanovnf_build_images::image_path(name))
}

/// A locally administered MAC for appliance NIC `index` of `world`.
pub fn appliance_mac(world: &World, index: u8) -> [u8; 6] {
    let h = world
        .prefix()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let [a, b, c, _] = h.to_be_bytes();
    [0x52, 0x54, a, b, c, index]
}

/// One NIC of an appliance under test: the tap it attaches to and its address.
pub struct TestNic {
    pub tap: String,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

pub fn ping_config(name: &str, generation: u64, nics: &[TestNic]) -> BootConfig {
    BootConfig {
        generation,
        name: name.to_owned(),
        log_level: LogLevel::Info,
        nics: nics
            .iter()
            .map(|n| NicConfig {
                mac: n.mac,
                addresses: vec![Ipv4Cidr::new(n.addr, n.prefix_len)],
                mtu: 1500,
            })
            .collect(),
        role: Role::Ping,
    }
}

/// The launch description of appliance `name` in `world`, with `nics` attached.
pub fn spec(
    world: &World,
    name: &str,
    image_name: &str,
    nics: &[TestNic],
) -> anyhow::Result<VmSpec> {
    let run_dir = std::env::temp_dir()
        .join("nanovnf-tests")
        .join(world.prefix());
    let mut spec = VmSpec::new(name, image(image_name)?)
        .run_dir(run_dir)
        .netns(world.host_ns())
        .memory_mib(4);
    for nic in nics {
        spec = spec.nic(Nic::new(nic.tap.clone(), nic.mac));
    }
    Ok(spec)
}

/// Boots a ping appliance and waits for its `READY` line.
pub fn boot_ping(
    world: &World,
    name: &str,
    nics: &[TestNic],
    machine: Machine,
    accel: Accel,
) -> anyhow::Result<Vm> {
    let config = nanovnf_schema::encode(&ping_config(name, 1, nics));
    let spec = spec(world, name, "ping", nics)?
        .machine(machine)
        .accel(accel)
        .config(config);
    let mut vm = spec.spawn().with_context(|| format!("spawn {name}"))?;
    let generation = vm
        .wait_ready(READY_TIMEOUT)
        .with_context(|| format!("{name} ready"))?;
    anyhow::ensure!(
        generation == 1,
        "{name} announced generation {generation}, expected 1"
    );
    Ok(vm)
}

/// The tenant subnet the DHCP tests serve, as Neutron would describe it.
pub struct DhcpNet {
    pub cidr: Ipv4Cidr,
    pub server_ip: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub metadata_ip: Option<Ipv4Addr>,
    pub host_routes: Vec<nanovnf_schema::dhcp::Route>,
    pub other_subnets: Vec<Ipv4Cidr>,
    pub domain: String,
    pub lease_secs: u32,
    pub mtu: u16,
}

/// A DHCP appliance's boot configuration: one NIC on the subnet, these reservations.
pub fn dhcp_config(
    name: &str,
    nic: &TestNic,
    net: &DhcpNet,
    hosts: Vec<nanovnf_schema::dhcp::DhcpHost>,
) -> BootConfig {
    use nanovnf_schema::dhcp::{DhcpRole, DhcpSubnet};
    BootConfig {
        generation: 1,
        name: name.to_owned(),
        log_level: LogLevel::Info,
        nics: vec![NicConfig {
            mac: nic.mac,
            addresses: vec![Ipv4Cidr::new(net.server_ip, net.cidr.prefix_len)],
            mtu: net.mtu,
        }],
        role: Role::Dhcp(DhcpRole {
            subnets: vec![DhcpSubnet {
                cidr: net.cidr,
                server_ip: net.server_ip,
                gateway: net.gateway,
                dns_servers: Vec::new(),
                domain: net.domain.clone(),
                lease_secs: net.lease_secs,
                host_routes: net.host_routes.clone(),
                other_subnets: net.other_subnets.clone(),
                metadata_ip: net.metadata_ip,
            }],
            hosts,
            upstream_resolvers: Vec::new(),
        }),
    }
}

/// Boots a DHCP appliance with a control channel and waits for `READY`.
pub fn boot_dhcp(
    world: &World,
    name: &str,
    nic: &TestNic,
    net: &DhcpNet,
    hosts: Vec<nanovnf_schema::dhcp::DhcpHost>,
) -> anyhow::Result<Vm> {
    boot_dhcp_config(world, name, nic, &dhcp_config(name, nic, net, hosts))
}

/// Boots a DHCP appliance from a boot configuration (say [`dhcp_config`] with upstream
/// resolvers added) with a control channel, and waits for `READY`.
pub fn boot_dhcp_config(
    world: &World,
    name: &str,
    nic: &TestNic,
    config: &BootConfig,
) -> anyhow::Result<Vm> {
    let config = nanovnf_schema::encode(config);
    let spec = spec(world, name, "dhcp", std::slice::from_ref(nic))?
        .memory_mib(8)
        .control(true)
        .config(config);
    let mut vm = spec.spawn().with_context(|| format!("spawn {name}"))?;
    vm.wait_ready(READY_TIMEOUT)
        .with_context(|| format!("{name} ready"))?;
    Ok(vm)
}
