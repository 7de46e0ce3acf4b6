//! Finding the network namespace a VM runs in. The namespace file is opened and checked in
//! the parent, before fork, so the child only has to call `setns(2)` on a known-good fd and
//! a bad name is reported as such rather than as a failed exec.

use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::Error;

/// Where `ip netns add NAME` bind-mounts its namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// The namespace file for `netns`: `/var/run/netns/<name>`, or `netns` itself if it is an
/// absolute path (e.g. `/proc/<pid>/ns/net`). `None` for names that could escape the
/// directory.
pub(crate) fn netns_path(netns: &str) -> Option<PathBuf> {
    if netns.starts_with('/') {
        return Some(PathBuf::from(netns));
    }
    let plain = !netns.is_empty() && netns != "." && netns != ".." && !netns.contains('/');
    plain.then(|| PathBuf::from(NETNS_RUN_DIR).join(netns))
}

/// Opens (close-on-exec) and checks the namespace file for VM `vm`.
pub(crate) fn open(vm: &str, netns: &str) -> Result<OwnedFd, Error> {
    let bad = |reason: String, source| Error::BadNetns {
        vm: vm.to_owned(),
        netns: netns.to_owned(),
        reason,
        source,
    };
    let path = netns_path(netns).ok_or_else(|| {
        bad(
            format!("not a namespace name under {NETNS_RUN_DIR} nor an absolute path"),
            None,
        )
    })?;
    let file = File::open(&path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound && !netns.starts_with('/') {
            format!(" (create it with `ip netns add {netns}`)")
        } else {
            String::new()
        };
        bad(format!("cannot open {}{hint}", path.display()), Some(e))
    })?;

    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` is an open descriptor and `stat` is a writable statfs-sized buffer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } == -1 {
        let e = std::io::Error::last_os_error();
        return Err(bad(format!("cannot inspect {}", path.display()), Some(e)));
    }
    // SAFETY: fstatfs succeeded, so it filled in the whole struct.
    let stat = unsafe { stat.assume_init() };
    // A stale plain file (say, left behind when its bind mount went away) would make
    // setns fail with a bare EINVAL in the child.
    if stat.f_type != libc::NSFS_MAGIC {
        return Err(bad(
            format!("{} is not a namespace file", path.display()),
            None,
        ));
    }
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_var_run_netns() {
        assert_eq!(
            netns_path("tenant-a"),
            Some(PathBuf::from("/var/run/netns/tenant-a"))
        );
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            Some(PathBuf::from("/proc/1/ns/net"))
        );
        for bad in ["", ".", "..", "a/b", "../etc"] {
            assert_eq!(netns_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_namespace_opens() {
        assert!(open("vm", "/proc/self/ns/net").is_ok());
    }

    #[test]
    fn plain_file_is_not_a_namespace() {
        let err = open("vm", "/proc/self/status").unwrap_err();
        assert!(err.to_string().contains("not a namespace file"), "{err}");
    }

    #[test]
    fn missing_namespace_says_how_to_create_it() {
        let err = open("vm", "nanovnf-test-no-such-ns").unwrap_err();
        assert!(err.to_string().contains("ip netns add"), "{err}");
        assert!(matches!(
            err,
            Error::BadNetns {
                source: Some(_),
                ..
            }
        ));
    }
}
