//! End-to-end test world for nanovnf appliances: private network namespaces with
//! bridges, taps and veth-attached instances ([`World`]), raw frame injection and capture
//! ([`RawSocket`], [`malformed_frames`]), boot-time probing ([`first_echo_reply`]) and
//! the skip-or-fail prologue ([`environment_ready`]). Nothing touches the root namespace.
//!
//! ```no_run
//! use std::time::Duration;
//! if !nanovnf_tests::environment_ready("example", &["ip", "ping"]) {
//!     return;
//! }
//! let mut world = nanovnf_tests::World::new("example").unwrap();
//! let br = world.add_bridge("br", 1500).unwrap();
//! let _tap = world.add_tap("tap", &br, 1500).unwrap(); // QEMU attaches here
//! let a = world.add_instance("a", &br, Some("198.19.0.10/24"), None, 1500).unwrap();
//! let b = world.add_instance("b", &br, Some("198.19.0.11/24"), None, 1500).unwrap();
//! assert!(a.ping(&world, b.ip().unwrap(), 1, Duration::from_secs(2)).unwrap());
//! // dropping `world` deletes every namespace, bridge, tap and veth it made
//! ```

pub mod appliance;
pub mod bench;
pub mod dhcp_appliance_target;
pub mod dhcp_clients;
pub mod dhcpload;
mod echo;
mod env;
pub mod forward;
mod frames;
pub mod metadata;
mod netns;
mod raw;
mod world;

#[cfg(test)]
mod world_tests;

use std::time::{Duration, Instant};

pub use echo::{EchoProber, first_echo_reply};
pub use env::{environment_ready, find_tool, must_run, require_root_and_tools};
pub use frames::{
    BROADCAST_MAC, ETHERTYPE_ARP, ETHERTYPE_EXPERIMENTAL, ETHERTYPE_IPV4, ETHERTYPE_VLAN,
    MALFORMED_KINDS, OVERSIZED_LENGTHS, XorShift64, arp, ethernet, fits_mtu, icmp_echo,
    internet_checksum, ipv4_header, ipv4_packet, malformed_frames,
};
pub use netns::{NETNS_RUN_DIR, in_netns, netns_path};
pub use raw::RawSocket;
pub use world::{Instance, MAX_IFNAME_LEN, PREFIX_ROOT, World, cleanup_stale, mac_to_string};

/// Polls `cond` every `step` until it holds (`true`) or `timeout` passes (`false`).
/// `cond` is always checked at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}

/// CPU time (user + system, children excluded) process `pid` has used so far, from
/// `/proc/<pid>/stat`; `None` if the process is gone or the file unreadable.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields are counted
    // from the last ')'. After it come state (field 3) ... utime (14) and stime (15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let total = utime + stime;
    Some(
        Duration::from_secs(total / ticks)
            + Duration::from_nanos(total % ticks * 1_000_000_000 / ticks),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_some_and_grows() {
        let before = process_cpu_time(std::process::id()).expect("own /proc stat");
        // Burn a little CPU so the counter (10 ms ticks) moves.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_time(std::process::id()).expect("own /proc stat");
        assert!(after >= before);
        assert!(process_cpu_time(u32::MAX).is_none());
    }

    #[test]
    fn wait_until_true_false_and_eventually() {
        assert!(wait_until(Duration::ZERO, Duration::from_millis(1), || {
            true
        }));
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
    }
}
