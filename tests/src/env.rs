//! Deciding whether end-to-end tests can run here, and skipping loudly when they cannot.
//! Under CI (`CI` set) a missing prerequisite is a failure, never a silent skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Directories searched after `$PATH`: `ip` lives in `/usr/sbin`, which a non-login
/// environment may leave out of `PATH`.
const FALLBACK_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Capability bits (linux/capability.h) that the test world needs.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// Finds an executable named `tool` on `$PATH` or in the usual sbin/bin directories.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolved path of `ip` (falls back to the bare name so the error names the tool).
pub(crate) fn ip_path() -> &'static Path {
    static IP: OnceLock<PathBuf> = OnceLock::new();
    IP.get_or_init(|| find_tool("ip").unwrap_or_else(|| PathBuf::from("ip")))
}

/// `true` when the `CI` environment variable is set (and not empty, `0` or `false`):
/// end-to-end tests must then fail rather than skip.
pub fn must_run() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Checks that we are root with the capabilities namespaces need, that
/// `/dev/net/tun` exists and that every tool in `tools` is installed. The error lists
/// every missing piece at once.
pub fn require_root_and_tools(tools: &[&str]) -> Result<(), String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        missing.push(format!("must run as root (euid is {euid})"));
    } else {
        match effective_caps() {
            Some(caps) => {
                for (bit, name) in [
                    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                    (CAP_NET_RAW, "CAP_NET_RAW"),
                    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                ] {
                    if caps & (1 << bit) == 0 {
                        missing.push(format!("capability {name} is not effective"));
                    }
                }
            }
            None => missing.push("cannot read CapEff from /proc/self/status".to_owned()),
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun is missing (no tun/tap support)".to_owned());
    }
    for tool in tools {
        if find_tool(tool).is_none() {
            missing.push(format!("tool `{tool}` not found on PATH or in sbin"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "end-to-end prerequisites missing: {}",
            missing.join("; ")
        ))
    }
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The usual prologue of an end-to-end test: returns `true` when it can run. Otherwise
/// prints a loud `SKIPPED` line to stderr and returns `false`, or panics when
/// [`must_run`] says skipping is not allowed.
///
/// ```no_run
/// if !nanovnf_tests::environment_ready("ping_appliance", &["ip", "ping", "qemu-system-x86_64"]) {
///     return;
/// }
/// ```
pub fn environment_ready(test_name: &str, tools: &[&str]) -> bool {
    match require_root_and_tools(tools) {
        Ok(()) => true,
        Err(why) if must_run() => panic!("{test_name}: CI is set, refusing to skip: {why}"),
        Err(why) => {
            eprintln!("\n*** SKIPPED {test_name}: {why} ***\n");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("definitely-not-a-tool-nvt").is_none());
        let err = require_root_and_tools(&["definitely-not-a-tool-nvt"]).unwrap_err();
        assert!(err.contains("definitely-not-a-tool-nvt"), "{err}");
    }
}
