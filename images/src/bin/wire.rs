//! The wire appliance: passes every frame from NIC 0 to NIC 1 and back, offload headers
//! and all, from the buffer it arrived in (no copy), with no processing. It is the floor
//! this I/O path allows (QEMU's virtio-net, our rings, the event loop); forwarding
//! appliances are measured against it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::vec::Vec;
    use nanovnf_drivers::NetConfig;
    use nanovnf_drivers::discover::Nic;
    use nanovnf_frame::Transmit;
    use nanovnf_images::glue;
    use nanovnf_kernel::arch::serial;
    use nanovnf_kernel::event::{self, Poll};
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_schema::Role;

    struct Wire {
        nics: Vec<Nic>,
        scratch: Vec<u8>,
        tx_blocked: bool,
        dropped: u64,
        spin: glue::Spin,
    }

    impl event::Appliance for Wire {
        fn poll(&mut self, now_ns: u64) -> Poll {
            let dropped = &mut self.dropped;
            let pass = glue::forward_pass(
                &mut self.nics,
                &mut self.scratch,
                |i, frame, offload, tx| {
                    if !tx.send_bytes(1 - i, offload, frame) {
                        *dropped += 1;
                    }
                },
            );
            self.tx_blocked = pass.blocked;
            glue::flush(&mut self.nics);
            Poll {
                busy: self.spin.busy(now_ns, pass),
                deadline_ns: None,
            }
        }

        fn acknowledge(&mut self, irqs: u16) {
            glue::acknowledge(self.nics.iter_mut(), irqs);
        }

        fn prepare_to_sleep(&mut self) -> bool {
            glue::arm_forwarder(&mut self.nics, self.tx_blocked)
        }

        fn woke(&mut self) {
            glue::disarm_forwarder(&mut self.nics);
        }
    }

    fn main() -> ! {
        let boot = nanovnf_kernel::init();
        if boot.config.role != Role::Wire {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "this image is a wire, the config asks for {:?}",
                    boot.config.role
                ),
            )
        }
        let nics: Vec<Nic> =
            glue::configured_nics_with(&boot, NetConfig::offload(glue::max_mtu(&boot)))
                .into_iter()
                .map(|(_, nic)| nic)
                .collect();
        if nics.len() != 2 {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "a wire needs exactly 2 NICs, the config lists {}",
                    nics.len()
                ),
            )
        }
        log::info!(
            "{} up: offloads {:?}, heap {} KiB",
            boot.config.name,
            nics[0].offloads(),
            boot.heap_bytes / 1024
        );
        serial::write_line(format_args!("READY {}", boot.config.generation));
        let mut app = Wire {
            nics,
            scratch: Vec::new(),
            tx_blocked: false,
            dropped: 0,
            spin: glue::Spin::default(),
        };
        event::run(&mut app)
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}
