//! The DHCP appliance as a benchmark target: the real image in QEMU on a tap of the
//! benchmark's bridge, configured to serve exactly the [`DhcpNet`] dnsmasq serves, with
//! its control channel open so that live changes can be timed too.

use crate::World;
use crate::appliance::{self, TestNic};
use crate::dhcpload::{DhcpNet, DhcpTarget, RunningTarget};
use anyhow::Context;
use nanovnf_qemu::{Accel, ControlClient, Vm};
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::dhcp::DhcpHost;
use std::time::Duration;

pub struct ApplianceTarget {
    accel: Accel,
    tap: Option<String>,
    runs: u32,
}

impl ApplianceTarget {
    pub fn new(accel: Accel) -> Self {
        ApplianceTarget {
            accel,
            tap: None,
            runs: 0,
        }
    }
}

pub struct RunningAppliance {
    vm: Vm,
    /// The control channel, connected once the VM is up.
    pub control: ControlClient,
}

impl DhcpTarget for ApplianceTarget {
    fn name(&self) -> String {
        format!("appliance-{}", accel_name(self.accel))
    }

    fn describe(&self) -> String {
        format!(
            "nanovnf dhcp image ({} bytes), QEMU microvm, accel {}",
            appliance::image("dhcp")
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len()),
            accel_name(self.accel)
        )
    }

    fn start(
        &mut self,
        world: &mut World,
        bridge: &str,
        net: &DhcpNet,
    ) -> anyhow::Result<Box<dyn RunningTarget>> {
        let tap = match &self.tap {
            Some(t) => t.clone(),
            None => {
                let short = format!("tap{}", &accel_name(self.accel)[..1]);
                let t = world.add_tap(&short, bridge, 1500)?;
                self.tap = Some(t.clone());
                t
            }
        };
        self.runs += 1;
        let nic = TestNic {
            tap,
            mac: appliance::appliance_mac(world, 7),
            addr: net.server_ip,
            prefix_len: net.subnet.1,
        };
        let shape = appliance::DhcpNet {
            cidr: Ipv4Cidr::new(net.subnet.0, net.subnet.1),
            server_ip: net.server_ip,
            gateway: Some(net.gateway),
            metadata_ip: Some(net.metadata_ip),
            host_routes: Vec::new(),
            other_subnets: Vec::new(),
            domain: net.domain.clone(),
            lease_secs: net.lease_secs,
            mtu: net.mtu,
        };
        let hosts = net
            .reservations
            .iter()
            .map(|r| DhcpHost {
                mac: r.mac,
                ip: r.ip,
                hostname: r.hostname(),
            })
            .collect();
        let name = format!("bench-dhcp-{}-{}", accel_name(self.accel), self.runs);
        let config = appliance::dhcp_config(&name, &nic, &shape, hosts);
        let spec = appliance::spec(world, &name, "dhcp", std::slice::from_ref(&nic))?
            .accel(self.accel)
            .memory_mib(16)
            .control(true)
            .config(nanovnf_schema::encode(&config));
        let mut vm = spec.spawn().with_context(|| format!("spawn {name}"))?;
        vm.wait_ready(appliance::READY_TIMEOUT)
            .with_context(|| format!("{name} ready"))?;
        let socket = vm
            .control_socket()
            .context("the appliance has no control socket")?
            .to_owned();
        let control = ControlClient::connect(&socket, Duration::from_secs(5))?;
        Ok(Box::new(RunningAppliance { vm, control }))
    }
}

impl RunningTarget for RunningAppliance {
    fn pid(&self) -> Option<u32> {
        Some(self.vm.pid())
    }

    fn diagnostics(&self) -> String {
        self.vm.serial_output()
    }

    fn control(&mut self) -> Option<&mut ControlClient> {
        Some(&mut self.control)
    }

    fn stop(self: Box<Self>, _world: &mut World) -> anyhow::Result<()> {
        drop(self.vm); // kills QEMU's process group
        Ok(())
    }
}

fn accel_name(accel: Accel) -> &'static str {
    match accel {
        Accel::Auto => "auto",
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    }
}
