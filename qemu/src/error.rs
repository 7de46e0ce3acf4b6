//! The one error type of this crate. Every variant names the VM (where there is one) and
//! says what an operator can do about it; waits that fail carry the tail of the VM's serial
//! and QEMU logs so the reason is visible without opening files.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::vm::Vm;

/// Everything that can go wrong while preparing, starting or watching a QEMU appliance VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The QEMU binary is not installed (or not where the spec says).
    #[error(
        "QEMU binary `{}` was not found; install it with `apt-get install -y qemu-system-x86`",
        binary.display()
    )]
    QemuMissing {
        /// The binary that was looked for.
        binary: PathBuf,
    },

    /// The tun driver is not loaded, so no tap device can exist.
    #[error("/dev/net/tun does not exist; load it with `modprobe tun`")]
    TunMissing,

    /// KVM was asked for (by the spec or `NANOVNF_ACCEL=kvm`) but cannot be used.
    #[error("KVM was requested but is unavailable: {reason}")]
    KvmUnavailable {
        /// What is wrong, in words.
        reason: String,
        /// The failed open of `/dev/kvm`, when there was one.
        #[source]
        source: Option<io::Error>,
    },

    /// `NANOVNF_ACCEL` holds something other than `kvm`, `tcg` or `auto`.
    #[error("NANOVNF_ACCEL={value:?} is not understood; use `kvm`, `tcg` or `auto`")]
    BadAccelOverride {
        /// The value found in the environment.
        value: String,
    },

    /// The VM spec cannot be turned into a QEMU invocation.
    #[error("VM `{vm}` has an invalid spec: {reason}")]
    InvalidSpec {
        /// The VM's name.
        vm: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The network namespace the VM should run in cannot be entered.
    #[error("VM `{vm}`: network namespace `{netns}` cannot be used: {reason}")]
    BadNetns {
        /// The VM's name.
        vm: String,
        /// The namespace name (or path) from the spec.
        netns: String,
        /// What is wrong with it.
        reason: String,
        /// The failed system call, when there was one.
        #[source]
        source: Option<io::Error>,
    },

    /// Starting the QEMU process failed (other than because the binary is missing).
    #[error("cannot start QEMU for VM `{vm}`")]
    Spawn {
        /// The VM's name.
        vm: String,
        /// Why `fork`/`setns`/`exec` failed.
        #[source]
        source: io::Error,
    },

    /// A file or process operation failed.
    #[error("cannot {what}")]
    Io {
        /// The operation, including the path it was done on.
        what: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// QEMU exited while we were waiting for something else.
    #[error("QEMU for VM `{vm}` exited ({}) while waiting for {what}\n{log_tail}", describe_status(*.status))]
    Exited {
        /// The VM's name.
        vm: String,
        /// What we were waiting for.
        what: String,
        /// QEMU's exit status.
        status: ExitStatus,
        /// The last lines of the serial log and of QEMU's own output.
        log_tail: String,
    },

    /// A deadline passed before the awaited event.
    #[error("VM `{vm}`: timed out after {timeout:?} waiting for {what}\n{log_tail}")]
    Timeout {
        /// The VM's name.
        vm: String,
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last lines of the serial log and of QEMU's own output.
        log_tail: String,
    },

    /// The guest printed its ready line, but not in the form `READY <generation>`.
    #[error("VM `{vm}` printed a malformed ready line {line:?}; expected `READY <generation>`")]
    BadReadyLine {
        /// The VM's name.
        vm: String,
        /// The line as printed.
        line: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// "exit status: 7, guest exit code 3" — the debug-exit decoding saves the reader the arithmetic.
fn describe_status(status: ExitStatus) -> String {
    match Vm::guest_exit_code(status) {
        // QEMU itself exits with 1 on its own errors, which looks like the guest writing 0.
        Some(0) => format!("{status}: a QEMU error, or guest exit code 0"),
        Some(code) => format!("{status}, guest exit code {code}"),
        None => status.to_string(),
    }
}
