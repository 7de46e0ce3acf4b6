//! The ping appliance image: answers ARP and ICMP echo on every configured NIC address.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::vec::Vec;
    use core::fmt::Write;
    use nanovnf_drivers::discover::Nic;
    use nanovnf_images::glue;
    use nanovnf_kernel::arch::{serial, timer};
    use nanovnf_kernel::event::{self, Poll};
    use nanovnf_kernel::{exit_code, fatal};
    use nanovnf_port::Port;
    use smoltcp::time::Instant;

    const REPORT_INTERVAL_NS: u64 = 1_000_000_000;

    struct Ping {
        ports: Vec<(Port, Nic)>,
        reported_drops: u64,
        last_report_ns: u64,
    }

    fn instant(ns: u64) -> Instant {
        Instant::from_micros((ns / 1000) as i64)
    }

    impl Ping {
        fn nics(&mut self) -> impl Iterator<Item = &mut Nic> {
            self.ports.iter_mut().map(|(_, nic)| nic)
        }

        /// Logs the drop counters when they changed, at most once per second (a flood of
        /// bad frames must not become a flood of serial bytes, each one an I/O exit).
        /// Returns when to report next if a change is still unreported.
        fn report_drops(&mut self, now_ns: u64) -> Option<u64> {
            let total: u64 = self
                .ports
                .iter()
                .map(|(p, n)| p.drops.total() + n.stats().rx_bad_length)
                .sum();
            if total == self.reported_drops {
                return None;
            }
            let due = self.last_report_ns.saturating_add(REPORT_INTERVAL_NS);
            if self.last_report_ns != 0 && now_ns < due {
                return Some(due);
            }
            self.reported_drops = total;
            self.last_report_ns = now_ns.max(1);
            for (i, (port, nic)) in self.ports.iter().enumerate() {
                let mut line = alloc::string::String::new();
                for (reason, n) in port.drops.nonzero() {
                    let _ = write!(line, " {}={n}", reason.name());
                }
                let bad = nic.stats().rx_bad_length;
                if bad > 0 {
                    let _ = write!(line, " rx_bad_length={bad}");
                }
                if !line.is_empty() {
                    log::info!("nic{i} drops:{line}");
                }
            }
            None
        }
    }

    impl event::Appliance for Ping {
        fn poll(&mut self, now_ns: u64) -> Poll {
            let now = instant(now_ns);
            let mut deadline: Option<u64> = None;
            for (port, nic) in &mut self.ports {
                if let Some(at) = port.poll(nic, now) {
                    let at = at.total_micros().max(0) as u64 * 1000;
                    deadline = Some(deadline.map_or(at, |d| d.min(at)));
                }
                nic.flush();
            }
            if let Some(due) = self.report_drops(now_ns) {
                deadline = Some(deadline.map_or(due, |d| d.min(due)));
            }
            let busy = self.ports.iter().any(|(_, nic)| nic.rx.has_frames());
            Poll {
                busy,
                deadline_ns: deadline,
            }
        }

        fn acknowledge(&mut self, irqs: u16) {
            glue::acknowledge(self.nics(), irqs);
        }

        fn prepare_to_sleep(&mut self) -> bool {
            glue::arm(self.nics())
        }

        fn woke(&mut self) {
            glue::disarm(self.nics());
        }
    }

    fn main() -> ! {
        let boot = nanovnf_kernel::init();
        let now = instant(timer::now_ns());
        let mut ports = Vec::new();
        for (i, (cfg, mut nic)) in glue::configured_nics(&boot).into_iter().enumerate() {
            match Port::new(&cfg, &mut nic, now, timer::rdtsc()) {
                Ok(port) => ports.push((port, nic)),
                Err(e) => fatal(exit_code::APPLIANCE, format_args!("nic{i}: {e:?}")),
            }
            let addrs: Vec<_> = cfg
                .addresses
                .iter()
                .map(|a| alloc::format!("{a}"))
                .collect();
            log::info!("nic{i} {}", addrs.join(" "));
        }
        log::info!(
            "{} up: clock {:?}, heap {} KiB",
            boot.config.name,
            boot.clock,
            boot.heap_bytes / 1024
        );
        serial::write_line(format_args!("READY {}", boot.config.generation));
        let mut app = Ping {
            ports,
            reported_drops: 0,
            last_report_ns: 0,
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
