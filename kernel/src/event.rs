//! The appliance event loop: poll until idle, then arm device interrupts and the deadline
//! timer and halt. An idle appliance executes `hlt` and costs its host nothing.

/// What one poll pass reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Poll {
    /// More work is ready right now (poll again without sleeping).
    pub busy: bool,
    /// The next time (ns since boot) the appliance must be polled even without traffic.
    pub deadline_ns: Option<u64>,
}

/// An appliance as the event loop sees it.
pub trait Appliance {
    /// Handles everything that is ready at `now_ns`.
    fn poll(&mut self, now_ns: u64) -> Poll;
    /// Acknowledges the devices behind the IRQ lines in `irqs` (bit n = IRQ n).
    fn acknowledge(&mut self, irqs: u16);
    /// Enables device interrupts before halting; returns true when work arrived meanwhile,
    /// in which case the loop polls again instead of halting.
    fn prepare_to_sleep(&mut self) -> bool;
    /// Disables device interrupts again after waking (polling is cheaper while busy).
    fn woke(&mut self);
}

/// How long to sleep before `deadline_ns`, or `None` when it has passed.
pub fn sleep_for(now_ns: u64, deadline_ns: u64) -> Option<u64> {
    deadline_ns.checked_sub(now_ns).filter(|&d| d > 0)
}

/// Whether the deadline timer must be programmed for `deadline_ns` when it is already
/// armed for `armed_ns` (and has not fired): only to wake earlier. A timer armed for an
/// earlier time fires, the loop polls and arms it again; programming it costs a trap to
/// the hypervisor (under TCG, QEMU's main loop is woken for each), so a forwarder that
/// halts thousands of times a second between frames leaves it alone.
pub fn needs_arming(armed_ns: Option<u64>, deadline_ns: u64) -> bool {
    armed_ns.is_none_or(|a| a > deadline_ns)
}

#[cfg(target_os = "none")]
pub fn run(app: &mut impl Appliance) -> ! {
    use crate::arch::{interrupts, timer};
    use x86_64::instructions::interrupts as cpu;

    interrupts::unmask(0);
    // The deadline the timer is armed for, until it fires (IRQ 0).
    let mut armed: Option<u64> = None;
    loop {
        let pending = interrupts::take_pending();
        if pending & 1 != 0 {
            armed = None;
        }
        let irqs = pending & !1;
        if irqs != 0 {
            app.acknowledge(irqs);
            for irq in 0..16u8 {
                if irqs & (1 << irq) != 0 {
                    interrupts::unmask(irq);
                }
            }
        }
        let poll = app.poll(timer::now_ns());
        if poll.busy {
            continue;
        }
        cpu::disable();
        // A device interrupt taken while we polled left its line masked and unacknowledged:
        // halting now would sleep through it until the next timer.
        if interrupts::device_pending() {
            cpu::enable();
            continue;
        }
        if app.prepare_to_sleep() {
            app.woke();
            cpu::enable();
            continue;
        }
        if let Some(deadline) = poll.deadline_ns {
            match sleep_for(timer::now_ns(), deadline) {
                Some(ns) => {
                    if needs_arming(armed, deadline) {
                        timer::arm_oneshot(ns);
                        armed = Some(deadline);
                    }
                }
                None => {
                    app.woke();
                    cpu::enable();
                    continue;
                }
            }
        }
        // `sti; hlt` is atomic: an interrupt that arrives after the check above still
        // wakes the halt.
        cpu::enable_and_hlt();
        app.woke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_for_past_and_future_deadlines() {
        assert_eq!(sleep_for(100, 50), None);
        assert_eq!(sleep_for(100, 100), None);
        assert_eq!(sleep_for(100, 150), Some(50));
    }

    #[test]
    fn the_timer_is_programmed_only_to_wake_earlier() {
        assert!(needs_arming(None, 500));
        assert!(!needs_arming(Some(500), 500));
        assert!(!needs_arming(Some(400), 500));
        assert!(needs_arming(Some(600), 500));
    }
}
