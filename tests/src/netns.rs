//! Running code inside a named network namespace: one dedicated thread calls `setns`, so
//! only that thread (and threads it spawns) changes namespace; the caller never does.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, anyhow};

/// Where `ip netns add` bind-mounts named namespaces (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Path of the bind mount that names namespace `ns`.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(ns)
}

/// Inode of the namespace named `ns`: the identity `/proc/<pid>/ns/net` links point at.
pub(crate) fn netns_inode(ns: &str) -> std::io::Result<u64> {
    Ok(std::fs::metadata(netns_path(ns))?.ino())
}

/// Inode of the network namespace process `pid` lives in, if the process exists.
pub(crate) fn pid_netns_inode(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Moves the calling thread into namespace `ns`. Only for threads this crate spawned.
pub(crate) fn enter_netns(ns: &str) -> anyhow::Result<()> {
    // std opens files with O_CLOEXEC, so a child spawned later does not inherit this fd.
    let file = File::open(netns_path(ns)).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns only reads the fd, which `file` keeps open for the duration of the
    // call; CLONE_NEWNET changes the network namespace of the calling thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    // Belt and braces: everything run afterwards assumes it is inside `ns`, never the root.
    let want = netns_inode(ns)?;
    let have = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    if want != have {
        return Err(anyhow!("setns into {ns} did not take effect"));
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered network namespace `ns` and returns its
/// result. The calling thread stays where it is. A panic inside `f` is re-raised here so
/// that assertion messages reach the test harness unchanged.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let ns_owned = ns.to_owned();
    let handle = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || -> anyhow::Result<T> {
            enter_netns(&ns_owned)?;
            Ok(f())
        })
        .context("spawning netns thread")?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
