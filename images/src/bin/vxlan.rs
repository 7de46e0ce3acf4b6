//! The VXLAN gateway image: the VTEP of one tenant network (RFC 7348), interoperating with
//! Linux's vxlan. NIC 0 is on the tenant bridge, NIC 1 on the underlay holding local_vtep;
//! tenant superframes are segmented here so only underlay frames pay QEMU's per-frame
//! cost. Remote VTEPs and static entries (l2population) change live.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use nanovnf_images::forwarder;
    use nanovnf_kernel::arch::timer;
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_schema::Role;
    use nanovnf_vxlan::Gateway;

    fn main() -> ! {
        let boot = nanovnf_kernel::init();
        let Role::Vxlan(role) = &boot.config.role else {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "this image is a VXLAN gateway, the config asks for {:?}",
                    boot.config.role
                ),
            )
        };
        let (configs, nics) = forwarder::nics(&boot);
        let gateway = match Gateway::new(&configs, role, timer::rdtsc()) {
            Ok(g) => g,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("vxlan: {e}")),
        };
        log::info!(
            "vxlan: vni {}, udp port {}, {} remote VTEPs, {} static entries, arp responder {}",
            role.vni,
            role.udp_port,
            role.remote_vteps.len(),
            role.static_entries.len(),
            role.arp_responder
        );
        forwarder::run(&boot, nics, gateway)
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}
