//! The nanovnf appliance kernel: PVH boot into 64-bit Rust, heap, interrupts, clock, serial
//! log, boot configuration from fw_cfg, and the event loop that halts the vCPU until a
//! device interrupt or the next deadline. Hardware access lives in `arch` (built only for
//! `x86_64-unknown-none`); everything else is plain logic tested on the host.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod clock;
pub mod cmdline;
pub mod event;
pub mod pvh;

#[cfg(target_os = "none")]
pub mod arch;

#[cfg(target_os = "none")]
pub use arch::{Boot, exit, fatal, init};

/// Guest exit codes written to the debug-exit port; QEMU exits with `(code << 1) | 1`.
pub mod exit_code {
    use nanovnf_schema::ConfigError;

    pub const PANIC: u32 = 1;
    pub const EXCEPTION: u32 = 2;
    pub const BAD_START_INFO: u32 = 3;
    pub const NO_MEMORY: u32 = 4;
    /// The appliance cannot find a device or address its configuration names.
    pub const APPLIANCE: u32 = 5;
    pub const CONFIG_MISSING: u32 = 0x10;
    pub const FW_CFG: u32 = 0x11;
    /// `0x20 + ConfigError::code()`: one status per way a blob can be corrupt.
    pub const CONFIG_CORRUPT_BASE: u32 = 0x20;

    pub const fn config_error(e: &ConfigError) -> u32 {
        CONFIG_CORRUPT_BASE + e.code() as u32
    }
}

pub fn level_filter(level: nanovnf_schema::LogLevel) -> log::LevelFilter {
    use nanovnf_schema::LogLevel;
    match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

/// Parses `off|error|warn|info|debug|trace` from the command line.
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    Some(match s {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

/// Declares the image's main: `nanovnf_kernel::entry!(main);` with `fn main() -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __nanovnf_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("debug"), Some(log::LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn exit_codes_are_distinct() {
        use nanovnf_schema::ConfigError;
        let mut codes = alloc::vec![
            exit_code::PANIC,
            exit_code::EXCEPTION,
            exit_code::BAD_START_INFO,
            exit_code::NO_MEMORY,
            exit_code::APPLIANCE,
            exit_code::CONFIG_MISSING,
            exit_code::FW_CFG,
            exit_code::config_error(&ConfigError::BadMagic),
            exit_code::config_error(&ConfigError::Malformed),
            exit_code::config_error(&ConfigError::BadChecksum {
                expected: 0,
                actual: 0
            }),
        ];
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }
}
