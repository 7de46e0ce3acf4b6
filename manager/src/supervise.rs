//! `nanovnf up --watch`: after applying the file, stay in the foreground, restart any
//! appliance whose QEMU exits (at once, then with backoff if it keeps dying) with the
//! configuration it held, fetch the passwords instances set through metadata appliances
//! into the state (so a restart gives them back), and re-apply the file on SIGHUP.
//! SIGTERM or SIGINT ends the watch and leaves the appliances running; `nanovnf down`
//! stops them.

use crate::apply::{Manager, record_alive};
use crate::plan::{ApplianceKind, Plan};
use crate::state::ApplianceRecord;
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

/// How often a metadata appliance is asked for new passwords: a password set less than
/// this before the appliance dies is lost (the instance got its 200 and will not POST
/// again). Each ask wakes the VM for one small report, about 0.6 ms of QEMU's CPU under
/// TCG: 0.012 % of a core per metadata appliance at this period.
const PASSWORD_POLL: Duration = Duration::from_secs(5);

/// After a failed ask, the next waits this long, doubling up to [`MAX_PASSWORD_RETRY`]
/// (an appliance built before passwords were reported never answers).
const FIRST_PASSWORD_RETRY: Duration = Duration::from_secs(10);
const MAX_PASSWORD_RETRY: Duration = Duration::from_secs(600);

/// Where the watch is with one metadata appliance's passwords.
#[derive(Debug)]
struct PasswordPoll {
    /// The VM asked (pid, start time): serials count from its boot.
    vm: (Option<u32>, Option<u64>),
    since: u64,
    next: Instant,
    retry: Duration,
}

/// Asks every ready metadata appliance whose turn it is for the passwords set since it
/// was last asked, and saves them.
fn poll_passwords(
    manager: &mut Manager,
    records: &[ApplianceRecord],
    polls: &mut HashMap<String, PasswordPoll>,
) {
    polls.retain(|id, _| records.iter().any(|r| &r.id == id));
    let now = Instant::now();
    for record in records {
        if record.kind != ApplianceKind::Metadata
            || record.state != "ready"
            || !record_alive(record)
        {
            continue;
        }
        let vm = (record.pid, record.start_time);
        let poll = polls.entry(record.id.clone()).or_insert(PasswordPoll {
            vm,
            since: 0,
            next: now,
            retry: FIRST_PASSWORD_RETRY,
        });
        if poll.vm != vm {
            // Restarted: a new count, from the passwords it was given back.
            *poll = PasswordPoll {
                vm,
                since: 0,
                next: now,
                retry: FIRST_PASSWORD_RETRY,
            };
        }
        if now < poll.next {
            continue;
        }
        match manager.collect_passwords(record, poll.since) {
            Ok(upto) => {
                poll.since = upto;
                poll.next = now + PASSWORD_POLL;
                poll.retry = FIRST_PASSWORD_RETRY;
            }
            Err(e) => {
                eprintln!(
                    "passwords of {} not fetched (next try in {:?}): {e:#}",
                    record.id, poll.retry
                );
                poll.next = now + poll.retry;
                poll.retry = (poll.retry * 2).min(MAX_PASSWORD_RETRY);
            }
        }
    }
}

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
    let mut password_polls: HashMap<String, PasswordPoll> = HashMap::new();
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
        let records = manager.state.appliances()?;
        poll_passwords(manager, &records, &mut password_polls);
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
