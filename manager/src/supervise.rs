//! `nanovnf up --watch`: after applying the file, stay in the foreground, restart any
//! appliance whose QEMU exits (at once, then with backoff if it keeps dying) with the
//! configuration it held, and re-apply the file on SIGHUP. SIGTERM or SIGINT ends the
//! watch and leaves the appliances running; `nanovnf down` stops them.

use crate::apply::{Manager, record_alive};
use crate::plan::Plan;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the watch looks at its appliances.
const TICK: Duration = Duration::from_millis(50);

/// The delay after the second quick failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An appliance that ran this long since its last restart starts over with no backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Backoff {
    /// Restarts since the appliance last ran for [`STABLE_AFTER`].
    quick_failures: u32,
    last_restart: Instant,
    not_before: Instant,
}

/// The delay before the next restart, given how many quick failures preceded it.
fn delay(quick_failures: u32) -> Duration {
    match quick_failures {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

pub fn watch(
    manager: &mut Manager,
    reload: &mut dyn FnMut(&mut Manager) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let hup = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    eprintln!(
        "watching {} appliance(s) (pid {}): SIGHUP re-applies the file, SIGTERM/Ctrl-C \
         leaves them running",
        manager.state.appliances()?.len(),
        std::process::id()
    );
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            eprintln!("SIGHUP: re-applying the topology file");
            if let Err(e) = reload(manager) {
                eprintln!("re-apply failed, keeping what runs: {e:#}");
            }
        }
        crate::process::reap_children();
        let plan = manager
            .state
            .plan()?
            .map(|(_, p)| p)
            .unwrap_or_else(Plan::default);
        for record in manager.state.appliances()? {
            if record_alive(&record) {
                continue;
            }
            let Some(appliance) = plan.appliance(&record.id) else {
                continue;
            };
            let now = Instant::now();
            let entry = backoff.entry(record.id.clone()).or_insert(Backoff {
                quick_failures: 0,
                last_restart: now - STABLE_AFTER,
                not_before: now,
            });
            if now < entry.not_before {
                continue;
            }
            if now.duration_since(entry.last_restart) >= STABLE_AFTER {
                entry.quick_failures = 0;
            }
            eprintln!(
                "appliance {} (pid {}) is gone; restarting it{}",
                record.id,
                record.pid.map_or("-".into(), |p| p.to_string()),
                match entry.quick_failures {
                    0 => String::new(),
                    n => format!(" (quick failure {n})"),
                }
            );
            let started = Instant::now();
            let result = manager.restart(&record, appliance);
            entry.last_restart = Instant::now();
            entry.quick_failures += 1;
            entry.not_before = entry.last_restart + delay(entry.quick_failures);
            match result {
                Ok(()) => eprintln!(
                    "appliance {} serving again after {:.0} ms",
                    record.id,
                    started.elapsed().as_secs_f64() * 1000.0
                ),
                Err(e) => eprintln!("appliance {} did not come back: {e:#}", record.id),
            }
        }
        std::thread::sleep(TICK);
    }
    eprintln!("watch ended; appliances keep running (`nanovnf down` stops them)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_restart_is_immediate_then_backs_off_to_a_cap() {
        assert_eq!(delay(0), Duration::ZERO);
        assert_eq!(delay(1), Duration::from_millis(250));
        assert_eq!(delay(2), Duration::from_millis(500));
        assert_eq!(delay(3), Duration::from_secs(1));
        assert_eq!(delay(20), MAX_BACKOFF);
        assert_eq!(delay(u32::MAX), MAX_BACKOFF);
    }
}
