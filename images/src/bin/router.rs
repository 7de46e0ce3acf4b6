//! The router appliance image: Neutron's L3 agent namespace as a unikernel. Every frame
//! goes to the router engine (ARP, forwarding, SNAT, floating IPs, ICMP), which rewrites
//! superframes whole; floating IPs change live over the control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::string::String;
    use alloc::vec::Vec;
    use nanovnf_frame::{Offload, Transmit};
    use nanovnf_images::forwarder::{self, Datapath};
    use nanovnf_kernel::arch::timer;
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_router::Router;
    use nanovnf_schema::Role;
    use nanovnf_schema::control::{Counter, Op};

    struct Path(Router);

    impl Datapath for Path {
        fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
            self.0.start(now_ms, tx);
        }

        fn handle(
            &mut self,
            now_ms: u64,
            nic: usize,
            frame: &mut [u8],
            offload: &Offload,
            tx: &mut dyn Transmit,
        ) {
            self.0.handle(now_ms, nic, frame, offload, tx);
        }

        fn poll(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
            self.0.poll(now_ms, tx);
        }

        fn poll_at_ms(&self) -> Option<u64> {
            self.0.poll_at_ms()
        }

        fn apply(&mut self, op: &Op, now_ms: u64, tx: &mut dyn Transmit) -> Result<(), String> {
            self.0.apply(op, now_ms, tx)
        }

        fn counters(&self) -> Vec<Counter> {
            self.0.counters()
        }
    }

    fn main() -> ! {
        let boot = nanovnf_kernel::init();
        let Role::Router(role) = &boot.config.role else {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "this image routes, the config asks for {:?}",
                    boot.config.role
                ),
            )
        };
        let (configs, nics) = forwarder::nics(&boot);
        let router = match Router::new(&configs, role, timer::rdtsc()) {
            Ok(r) => r,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("router: {e}")),
        };
        log::info!(
            "router: {} interfaces, snat {}, {} routes, {} floating IPs, conntrack {}",
            configs.len(),
            role.enable_snat,
            role.routes.len(),
            role.floating_ips.len(),
            role.conntrack_capacity
        );
        forwarder::run(&boot, nics, Path(router))
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}
