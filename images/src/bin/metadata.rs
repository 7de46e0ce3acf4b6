//! The metadata appliance image: Neutron's haproxy + metadata agent + Nova's metadata API
//! for one tenant network as a unikernel. It owns 169.254.169.254 (besides its subnet
//! address) on its one NIC, serves HTTP on port 80 from a pool of smoltcp sockets, knows
//! each caller by address and MAC, and follows instance changes over the control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use nanovnf_drivers::NetConfig;
    use nanovnf_drivers::discover::Nic;
    use nanovnf_images::control::{self, Channel, Engine};
    use nanovnf_images::glue;
    use nanovnf_kernel::arch::{serial, timer};
    use nanovnf_kernel::event::{self, Poll};
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_metadata::service::{SOCKETS, Service};
    use nanovnf_port::Port;
    use nanovnf_schema::control::{Counter, Op, Report};
    use nanovnf_schema::metadata::METADATA_IP;
    use nanovnf_schema::{Ipv4Cidr, Role};
    use smoltcp::time::Instant;

    fn instant(ns: u64) -> Instant {
        Instant::from_micros((ns / 1000) as i64)
    }

    /// Everything but the control channel, so that the channel can borrow it whole.
    struct State {
        port: Port,
        nic: Nic,
        service: Service,
    }

    impl Engine for State {
        fn apply(&mut self, op: &Op) -> Result<(), String> {
            self.service.engine.apply(op).map_err(control::reason)?;
            if let Op::MetadataUpsert(i) = op {
                log::debug!("instance {} at {}", i.hostname, i.ip);
            }
            Ok(())
        }

        fn answer(&mut self, seq: u32, op: &Op) -> Option<Report> {
            match op {
                Op::MetadataPasswords { since } => Some(Report::MetadataPasswords {
                    seq,
                    page: self.service.engine.passwords(*since),
                }),
                _ => None,
            }
        }

        fn counters(&self) -> Vec<Counter> {
            let mut all = self.service.counters();
            for (reason, n) in self.port.drops.nonzero() {
                all.push(Counter::new(format!("filter_{}", reason.name()), n));
            }
            let stats = self.nic.stats();
            all.push(Counter::new("rx_bad_length", stats.rx_bad_length));
            all.push(Counter::new("tx_no_buffer", stats.tx_no_buffer));
            all
        }
    }

    struct Metadata {
        state: State,
        control: Channel,
    }

    impl event::Appliance for Metadata {
        fn poll(&mut self, now_ns: u64) -> Poll {
            let s = &mut self.state;
            let at = s.service.poll(&mut s.port, &mut s.nic, instant(now_ns));
            s.nic.flush();
            let more_control = self.control.serve(&mut self.state);
            Poll {
                busy: more_control || self.state.nic.rx.has_frames(),
                deadline_ns: at.map(|at| at.total_micros().max(0) as u64 * 1000),
            }
        }

        fn acknowledge(&mut self, irqs: u16) {
            self.control.acknowledge(irqs);
            glue::acknowledge(core::iter::once(&mut self.state.nic), irqs);
        }

        fn prepare_to_sleep(&mut self) -> bool {
            glue::arm(core::iter::once(&mut self.state.nic)) | self.control.has_input()
        }

        fn woke(&mut self) {
            glue::disarm(core::iter::once(&mut self.state.nic));
        }
    }

    fn main() -> ! {
        let mut boot = nanovnf_kernel::init();
        // Moved out, not cloned: a full network's user data is megabytes.
        let role = match core::mem::replace(&mut boot.config.role, Role::Ping) {
            Role::Metadata(role) => role,
            other => fatal(
                exit_code::APPLIANCE,
                format_args!("this image serves metadata, the config asks for {other:?}"),
            ),
        };
        // Rings as deep as the pool of connections is wide: a pass that answers a request
        // on every connection sends all the answers at once. The device computes the TCP
        // checksums of the answers.
        let net = NetConfig {
            rx_queue: 256,
            tx_queue: 256,
            tx_checksum: true,
            ..NetConfig::default()
        };
        let mut nics = glue::configured_nics_with(&boot, net).into_iter();
        let Some((mut cfg, mut nic)) = nics.next() else {
            fatal(
                exit_code::APPLIANCE,
                format_args!("the config lists no NIC"),
            )
        };
        // The well-known address is the appliance's by definition, not by configuration.
        let metadata_ip = Ipv4Cidr::new(METADATA_IP, 32);
        if !cfg.addresses.contains(&metadata_ip) {
            cfg.addresses.push(metadata_ip);
        }
        let (subnets, instances, passwords) = (
            role.subnets.len(),
            role.instances.len(),
            role.passwords.len(),
        );
        let engine = match nanovnf_metadata::Engine::new(role, timer::rdtsc()) {
            Ok(e) => e,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("metadata: {e}")),
        };
        let port = match Port::new(&cfg, &mut nic, instant(timer::now_ns()), timer::rdtsc()) {
            Ok(p) => p,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("nic: {e:?}")),
        };
        let service = Service::new(engine, SOCKETS);
        let control = Channel::open(boot.config.generation);
        log::info!(
            "{} up: {} subnet(s), {} instance(s), {} of {} password(s) restored, {} sockets, \
             mtu {}, clock {:?}, heap {} KiB",
            boot.config.name,
            subnets,
            instances,
            service
                .engine
                .events(nanovnf_metadata::Event::PasswordsRestored),
            passwords,
            SOCKETS,
            cfg.mtu,
            boot.clock,
            boot.heap_bytes / 1024
        );
        let mut app = Metadata {
            state: State { port, nic, service },
            control,
        };
        serial::write_line(format_args!("READY {}", boot.config.generation));
        app.control.send(&Report::Ready {
            generation: boot.config.generation,
        });
        event::run(&mut app)
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}
