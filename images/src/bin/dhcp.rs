//! The DHCP appliance image: Neutron's per-network dnsmasq as a unikernel. DHCP frames go
//! to the engine ahead of smoltcp, which answers ARP and ping for the appliance's own
//! addresses; reservations change live over the control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use nanovnf_dhcp::Service;
    use nanovnf_drivers::discover::Nic;
    use nanovnf_images::control::{self, Channel, Engine};
    use nanovnf_images::glue;
    use nanovnf_kernel::arch::{serial, timer};
    use nanovnf_kernel::event::{self, Poll};
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_port::Port;
    use nanovnf_schema::Role;
    use nanovnf_schema::control::{Counter, Op, Report};
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
            self.service.apply(op).map_err(control::reason)?;
            if let Op::DhcpUpsert(h) = op {
                log::debug!("reservation {} -> {}", h.hostname, h.ip);
            }
            Ok(())
        }

        fn counters(&self) -> Vec<Counter> {
            let mut all = self.service.counters();
            for (reason, n) in self.port.drops.nonzero() {
                all.push(Counter::new(format!("filter_{}", reason.name()), n));
            }
            let stats = self.nic.stats();
            all.push(Counter::new("rx_bad_length", stats.rx_bad_length));
            all.push(Counter::new(
                "outbox_overflows",
                self.port.outbox_overflows(),
            ));
            all
        }
    }

    struct Dhcp {
        state: State,
        control: Channel,
    }

    impl event::Appliance for Dhcp {
        fn poll(&mut self, now_ns: u64) -> Poll {
            let s = &mut self.state;
            s.service.set_time(now_ns / 1_000_000_000);
            let at = s
                .port
                .poll_with(&mut s.nic, instant(now_ns), &mut s.service);
            s.nic.flush();
            let more_control = self.control.serve(&mut self.state);
            Poll {
                busy: more_control || self.state.nic.rx.has_frames(),
                deadline_ns: at.map(|at| at.total_micros().max(0) as u64 * 1000),
            }
        }

        fn acknowledge(&mut self, irqs: u16) {
            // The control UART needs no device acknowledgement: reading its bytes clears it.
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
        let boot = nanovnf_kernel::init();
        let Role::Dhcp(role) = &boot.config.role else {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "this image serves DHCP, the config asks for {:?}",
                    boot.config.role
                ),
            )
        };
        let mut nics = glue::configured_nics(&boot).into_iter();
        let Some((cfg, mut nic)) = nics.next() else {
            fatal(
                exit_code::APPLIANCE,
                format_args!("the config lists no NIC"),
            )
        };
        let service = match Service::new(role, cfg.mac, cfg.mtu) {
            Ok(s) => s,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("dhcp: {e}")),
        };
        let port = match Port::new(&cfg, &mut nic, instant(timer::now_ns()), timer::rdtsc()) {
            Ok(p) => p,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("nic: {e:?}")),
        };
        let control = Channel::open(boot.config.generation);
        log::info!(
            "{} up: {} subnet(s), {} reservation(s), mtu {}, clock {:?}, heap {} KiB",
            boot.config.name,
            role.subnets.len(),
            role.hosts.len(),
            cfg.mtu,
            boot.clock,
            boot.heap_bytes / 1024
        );
        let mut app = Dhcp {
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
