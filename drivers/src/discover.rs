//! Finds the virtio-net devices of this VM. The one place that chooses the transport:
//! virtio-mmio when the command line announces devices (microvm), PCI otherwise (q35).

use crate::hal::IdentityHal;
use crate::net::{NetConfig, NetError, VirtioNet};
use alloc::vec::Vec;
use core::ptr::NonNull;
use nanovnf_kernel::arch::io::{inl, outl};
use nanovnf_kernel::cmdline::MmioDevice;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

pub type Nic = VirtioNet<SomeTransport<'static>>;

/// PCI configuration space through ports 0xCF8/0xCFC: works on every PC machine without
/// knowing where firmware put the ECAM window.
struct PortCam;

fn config_address(df: DeviceFunction, offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(df.bus) << 16)
        | (u32::from(df.device) << 11)
        | (u32::from(df.function) << 8)
        | u32::from(offset & 0xFC)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: the PCI configuration mechanism #1 ports; address then data.
        unsafe {
            outl(0xCF8, config_address(df, offset));
            inl(0xCFC)
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as above; the caller picks a register that is meant to be written.
        unsafe {
            outl(0xCF8, config_address(df, offset));
            outl(0xCFC, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Why a device was skipped; logged, never fatal by itself.
#[derive(Debug)]
pub enum SkipReason {
    Mmio(virtio_drivers::transport::mmio::MmioError),
    Pci(virtio_drivers::transport::pci::VirtioPciError),
    Net(NetError),
}

fn mmio_transports(devices: &[MmioDevice]) -> Vec<(SomeTransport<'static>, Option<u8>)> {
    let mut out = Vec::new();
    for dev in devices {
        let Some(header) = NonNull::new(dev.base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: QEMU announced a virtio-mmio register window of `size` bytes at `base`,
        // which the boot page tables identity-map uncached; nothing else aliases it.
        match unsafe { MmioTransport::new(header, dev.size as usize) } {
            Ok(t) if t.device_type() == DeviceType::Network => {
                out.push((SomeTransport::from(t), Some(dev.irq)));
            }
            Ok(_) => {}
            Err(e) => log::warn!("virtio-mmio at {:#x}: {:?}", dev.base, SkipReason::Mmio(e)),
        }
    }
    out
}

fn pci_transports() -> Vec<(SomeTransport<'static>, Option<u8>)> {
    let mut root = PciRoot::new(PortCam);
    let mut out = Vec::new();
    let functions: Vec<_> = root.enumerate_bus(0).collect();
    for (df, info) in functions {
        if virtio_device_type(&info) != Some(DeviceType::Network) {
            continue;
        }
        root.set_command(
            df,
            Command::MEMORY_SPACE | Command::BUS_MASTER | Command::IO_SPACE,
        );
        let line = (PortCam.read_word(df, 0x3C) & 0xFF) as u8;
        let irq = (line < 16).then_some(line);
        match PciTransport::new::<IdentityHal, _>(&mut root, df) {
            Ok(t) => out.push((SomeTransport::from(t), irq)),
            Err(e) => log::warn!("virtio-pci {df}: {:?}", SkipReason::Pci(e)),
        }
    }
    out
}

/// Every virtio-net device, initialised, with its interrupt line unmasked.
pub fn network_devices(mmio: &[MmioDevice], config: NetConfig) -> Vec<Nic> {
    let transports = if mmio.is_empty() {
        pci_transports()
    } else {
        mmio_transports(mmio)
    };
    let mut nics = Vec::new();
    for (transport, irq) in transports {
        match VirtioNet::new(transport, irq, config) {
            Ok(nic) => {
                if let Some(irq) = irq {
                    nanovnf_kernel::arch::interrupts::unmask(irq);
                }
                nics.push(nic);
            }
            Err(e) => log::warn!("virtio-net: {:?}", SkipReason::Net(e)),
        }
    }
    nics
}
