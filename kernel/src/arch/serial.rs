//! COM1 output for the `log` crate. QEMU's 16550 accepts a byte at any time, so we skip
//! the line-status poll that would double the I/O exits per byte.

use super::io::outb;
use core::fmt::{self, Write};

const COM1: u16 = 0x3F8;

pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: writing the transmit holding register of COM1.
            unsafe { outb(COM1, b) };
        }
        Ok(())
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = super::timer::now_ns() / 1000;
        let level = match record.level() {
            log::Level::Error => 'E',
            log::Level::Warn => 'W',
            log::Level::Info => 'I',
            log::Level::Debug => 'D',
            log::Level::Trace => 'T',
        };
        let _ = writeln!(
            Serial,
            "[{}.{:06}] {level} {}",
            us / 1_000_000,
            us % 1_000_000,
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes a line verbatim (no timestamp): used for `READY <generation>`, which the
/// manager matches at the start of a line.
pub fn write_line(args: fmt::Arguments<'_>) {
    let _ = Serial.write_fmt(args);
    let _ = Serial.write_str("\n");
}
