//! The router appliance image: Neutron's L3 agent namespace as a unikernel. Every frame
//! goes to the router engine (ARP, forwarding, SNAT, floating IPs, ICMP), which rewrites
//! superframes whole; floating IPs change live over the control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use nanovnf_images::forwarder;
    use nanovnf_kernel::arch::timer;
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_router::Router;
    use nanovnf_schema::Role;

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
        forwarder::run(&boot, nics, router)
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}
