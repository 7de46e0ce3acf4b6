//! The DHCP appliance image: Neutron's per-network dnsmasq as a unikernel. DHCP frames and
//! UDP DNS queries go to their engines ahead of smoltcp, which answers ARP and ping for the
//! appliance's own addresses and carries DNS over TCP and to the upstream resolvers;
//! reservations (and so the DNS names) change live over the control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use nanovnf_dhcp::Service;
    use nanovnf_dns::Sockets;
    use nanovnf_drivers::discover::Nic;
    use nanovnf_images::control::{self, Channel, Engine};
    use nanovnf_images::glue;
    use nanovnf_kernel::arch::{serial, timer};
    use nanovnf_kernel::event::{self, Poll};
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_port::{Detour, Outbox, Port};
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
        dns: nanovnf_dns::Service,
        sockets: Sockets,
    }

    /// DHCP first (port 67), then DNS over UDP (port 53); the rest goes to smoltcp.
    struct Detours<'a> {
        dhcp: &'a mut Service,
        dns: &'a mut nanovnf_dns::Service,
    }

    impl Detour for Detours<'_> {
        fn take(&mut self, frame: &[u8], out: &mut Outbox) -> bool {
            self.dhcp.take(frame, out) || self.dns.take(frame, out)
        }
    }

    impl Engine for State {
        fn apply(&mut self, op: &Op) -> Result<(), String> {
            self.service.apply(op).map_err(control::reason)?;
            // The zone follows what DHCP accepted; it cannot refuse a host DHCP took
            // unless its own table is full, which leaves DHCP serving and is logged.
            if let Err(e) = self.dns.apply(op) {
                log::warn!("{e}");
            }
            if let Op::DhcpUpsert(h) = op {
                log::debug!("reservation {} -> {}", h.hostname, h.ip);
            }
            Ok(())
        }

        fn counters(&self) -> Vec<Counter> {
            let mut all = self.service.counters();
            all.extend(self.dns.counters());
            let t = self.sockets.counters;
            all.push(Counter::new("dns_tcp_connections", t.tcp_connections));
            all.push(Counter::new("dns_tcp_oversized", t.tcp_oversized));
            all.push(Counter::new("dns_tcp_idle_closed", t.tcp_idle_closed));
            all.push(Counter::new("dns_tcp_send_full", t.tcp_send_full));
            all.push(Counter::new("dns_upstream_bad_port", t.upstream_bad_port));
            all.push(Counter::new(
                "dns_upstream_send_failed",
                t.upstream_send_failed,
            ));
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
            let now_ms = now_ns / 1_000_000;
            s.service.set_time(now_ns / 1_000_000_000);
            s.dns.set_time_ms(now_ms);
            let mut detours = Detours {
                dhcp: &mut s.service,
                dns: &mut s.dns,
            };
            let mut at = s.port.poll_sockets(
                &mut s.nic,
                instant(now_ns),
                &mut detours,
                &mut s.sockets.set,
            );
            // TCP queries, upstream answers and timeouts; what they queued leaves now.
            if s.sockets.serve(&mut s.dns, s.port.outbox_mut(), now_ms) {
                let mut detours = Detours {
                    dhcp: &mut s.service,
                    dns: &mut s.dns,
                };
                at = s.port.poll_sockets(
                    &mut s.nic,
                    instant(now_ns),
                    &mut detours,
                    &mut s.sockets.set,
                );
            }
            s.nic.flush();
            let dns_at = [s.dns.poll_at_ms(), s.sockets.poll_at_ms()]
                .into_iter()
                .flatten()
                .min()
                .map(|ms| ms.saturating_mul(1_000_000));
            let net_at = at.map(|at| at.total_micros().max(0) as u64 * 1000);
            let more_control = self.control.serve(&mut self.state);
            Poll {
                busy: more_control || self.state.nic.rx.has_frames(),
                deadline_ns: [net_at, dns_at].into_iter().flatten().min(),
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
        let mut port = match Port::new(&cfg, &mut nic, instant(timer::now_ns()), timer::rdtsc()) {
            Ok(p) => p,
            Err(e) => fatal(exit_code::APPLIANCE, format_args!("nic: {e:?}")),
        };
        let dns = nanovnf_dns::Service::new(role, cfg.mac, cfg.mtu, timer::rdtsc());
        // Upstream resolvers off-link are reached through the first subnet's gateway, as
        // Neutron's DHCP namespace routes through it.
        if !role.upstream_resolvers.is_empty()
            && let Some(gw) = role.subnets.iter().find_map(|s| s.gateway)
            && !port.set_default_gateway(gw)
        {
            log::warn!("no room for the default route via {gw}");
        }
        // A random source port for upstream queries (with the random IDs, what a
        // spoofer must guess), in the dynamic range.
        let sockets = Sockets::new(49152 + (timer::rdtsc() % 16384) as u16);
        let control = Channel::open(boot.config.generation);
        log::info!(
            "{} up: {} subnet(s), {} reservation(s), {} upstream resolver(s), mtu {}, \
             clock {:?}, heap {} KiB",
            boot.config.name,
            role.subnets.len(),
            role.hosts.len(),
            role.upstream_resolvers.len(),
            cfg.mtu,
            boot.clock,
            boot.heap_bytes / 1024
        );
        let mut app = Dhcp {
            state: State {
                port,
                nic,
                service,
                dns,
                sockets,
            },
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
