//! Appliance processes by pid: whether the recorded QEMU still runs (pid *and* start time,
//! so a recycled pid is never mistaken for it), stopping it, and reaping children.

use std::time::{Duration, Instant};

/// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), and
/// whether it is a zombie; `None` when there is no such process.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is index 19.
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(t, _)| t)
}

/// True when `pid` is the process that started at `start_time` and has not exited.
pub fn alive(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some((t, false)) if t == start_time)
}

/// Stops the recorded process (SIGTERM to its process group, SIGKILL after `grace`) if it
/// is still the one recorded; waits until it is gone.
pub fn stop(pid: u32, start_time: u64, grace: Duration) {
    if !alive(pid, start_time) {
        return;
    }
    signal_group(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid, start_time) && Instant::now() < deadline {
        reap_children();
        std::thread::sleep(Duration::from_millis(5));
    }
    if alive(pid, start_time) {
        signal_group(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid, start_time) && Instant::now() < deadline {
            reap_children();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    reap_children();
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // QEMU runs in its own process group (its pid), so the group holds only it.
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// QEMU processes started for this state directory (their control socket lies in
/// `run_dir`) whose pid is not in `known`: VMs a killed manager started but did not live to
/// record. Returns (pid, start time).
pub fn strays(run_dir: &std::path::Path, known: &[u32]) -> Vec<(u32, u64)> {
    let needle = format!("path={}/", run_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !known.contains(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
            })
        })
        .filter_map(|pid| Some((pid, start_time(pid)?)))
        .collect()
}

/// Reaps every exited child (appliances this manager started), so none stays a zombie.
pub fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through the valid pointer `&mut status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_a_live_process_and_a_gone_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = start_time(pid).expect("sleep has a start time");
        assert!(alive(pid, t));
        assert!(!alive(pid, t + 1), "another start time is another process");
        child.kill().unwrap();
        // A zombie is not alive: once the kernel has made it one, `alive` says so.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(stat(pid), Some((_, true))) {
            assert!(Instant::now() < deadline, "sleep never became a zombie");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!alive(pid, t));
        child.wait().unwrap();
        assert!(!alive(pid, t));
    }
}
