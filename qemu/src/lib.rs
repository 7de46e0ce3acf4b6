//! Runs nanovnf appliance VMs under QEMU: builds the command line from a [`VmSpec`]
//! (microvm or q35, PVH kernel, virtio-net on taps, boot config over fw_cfg), spawns QEMU in
//! its own process group (optionally inside a network namespace), and supervises it through
//! a [`Vm`] handle that waits for serial lines and kills the VM when dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use nanovnf_qemu::{Nic, VmSpec};
//!
//! # fn main() -> Result<(), nanovnf_qemu::Error> {
//! nanovnf_qemu::preflight()?;
//! let mut vm = VmSpec::new("dhcp-1", "/images/dhcp.elf")
//!     .nic(Nic::new("tap-dhcp1", [0x52, 0x54, 0, 0, 0, 1]))
//!     .config(vec![/* encoded nanovnf_schema::BootConfig */])
//!     .run_dir("/run/nanovnf")
//!     .spawn()?;
//! let generation = vm.wait_ready(Duration::from_secs(5))?;
//! # let _ = generation;
//! # Ok(())
//! # }
//! ```

mod accel;
mod control;
mod error;
mod netns;
mod spec;
mod vm;

use std::path::Path;

pub use accel::{ACCEL_ENV, Accel, ResolvedAccel};
pub use control::{ControlClient, ControlError};
pub use error::Error;
pub use netns::NETNS_RUN_DIR;
pub use spec::{
    DEBUG_EXIT_PORT, DEFAULT_MEMORY_MIB, DEFAULT_QEMU_BINARY, Machine, Nic, VmSpec, format_mac,
};
pub use vm::{READY_PREFIX, Vm, process_cpu_time, process_rss_kib};

/// The tun/tap control device, present when the `tun` module is loaded.
const DEV_NET_TUN: &str = "/dev/net/tun";

/// Checks that this host can run appliance VMs: [`DEFAULT_QEMU_BINARY`] is on `PATH` and
/// `/dev/net/tun` exists. Each failure says how to fix it.
pub fn preflight() -> Result<(), Error> {
    let qemu = Path::new(DEFAULT_QEMU_BINARY);
    if spec::find_binary(qemu).is_none() {
        return Err(Error::QemuMissing {
            binary: qemu.to_path_buf(),
        });
    }
    if !Path::new(DEV_NET_TUN).exists() {
        return Err(Error::TunMissing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_tell_the_operator_what_to_do() {
        let missing = Error::QemuMissing {
            binary: DEFAULT_QEMU_BINARY.into(),
        };
        assert!(
            missing
                .to_string()
                .contains("apt-get install -y qemu-system-x86")
        );
        assert!(Error::TunMissing.to_string().contains("modprobe tun"));
    }
}
