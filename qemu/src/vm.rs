//! A running appliance VM. [`Vm`] owns the QEMU child: it watches the serial log for the
//! guest's lines, reports QEMU's exit, reads its resource use from `/proc`, and kills the
//! whole process group when dropped, so no test or crash leaves a VM behind.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::Error;
use crate::accel::ResolvedAccel;

/// How often waits poll the serial log and the child.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// How many lines of each log an error shows.
const TAIL_LINES: usize = 20;

/// How much of the end of each log an error reads to find those lines.
const TAIL_BYTES: u64 = 4096;

/// A guest line longer than this is cut and treated as complete, so a guest that never
/// prints a newline cannot grow the buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// The serial line announcing that the appliance is configured and serving.
pub const READY_PREFIX: &str = "READY ";

/// A QEMU appliance VM, killed (with its whole process group) when dropped.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Child,
    pid: u32,
    /// Set once the child has been reaped; after that its pid may belong to someone else.
    status: Option<ExitStatus>,
    accel: ResolvedAccel,
    accel_reason: &'static str,
    serial: File,
    lines: LineBuffer,
    serial_log: PathBuf,
    qemu_log: PathBuf,
    pub(crate) control_socket: Option<PathBuf>,
    /// Set by [`Vm::detach`]: dropping the handle leaves QEMU running.
    detached: bool,
}

impl Vm {
    pub(crate) fn new(
        name: String,
        child: Child,
        accel: ResolvedAccel,
        accel_reason: &'static str,
        serial: File,
        serial_log: PathBuf,
        qemu_log: PathBuf,
    ) -> Self {
        let pid = child.id();
        Vm {
            name,
            child,
            pid,
            status: None,
            accel,
            accel_reason,
            serial,
            lines: LineBuffer::default(),
            serial_log,
            qemu_log,
            control_socket: None,
            detached: false,
        }
    }

    /// The control channel's unix socket, when the spec asked for one.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        self.control_socket.as_deref()
    }

    /// The VM's name, from its spec.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The accelerator QEMU was started with.
    pub fn accel(&self) -> ResolvedAccel {
        self.accel
    }

    /// Why that accelerator was chosen.
    pub fn accel_reason(&self) -> &'static str {
        self.accel_reason
    }

    /// The guest's serial output file.
    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// QEMU's own stdout and stderr.
    pub fn qemu_log(&self) -> &Path {
        &self.qemu_log
    }

    /// The whole serial log so far (invalid UTF-8 replaced); empty if it cannot be read.
    pub fn serial_output(&self) -> String {
        fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for a serial line starting with `prefix` and returns it (without the line
    /// ending). Lines are consumed as they are searched, like `expect`: each call looks only
    /// at lines after the one the previous call returned, so waiting for `READY ` again
    /// finds the next generation. Fails early with [`Error::Exited`] if QEMU exits first.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, Error> {
        let what = || format!("a serial line starting with {prefix:?}");
        let deadline = Instant::now() + timeout;
        loop {
            self.read_serial()?;
            if let Some(line) = self.lines.take_line_starting_with(prefix, false) {
                return Ok(line);
            }
            if let Some(status) = self.try_wait()? {
                // The guest may have printed its last bytes just before QEMU exited.
                self.read_serial()?;
                if let Some(line) = self.lines.take_line_starting_with(prefix, true) {
                    return Ok(line);
                }
                return Err(self.exited(status, what()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(timeout, what()));
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    /// Waits for the guest's `READY <generation>` line and returns the generation.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<u64, Error> {
        let line = self.wait_for_line(READY_PREFIX, timeout)?;
        parse_ready(&line).ok_or_else(|| Error::BadReadyLine {
            vm: self.name.clone(),
            line,
        })
    }

    /// QEMU's exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|e| {
                Error::io(
                    format!("check whether QEMU of VM `{}` exited", self.name),
                    e,
                )
            })?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(timeout, "QEMU to exit".to_owned()));
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    /// Lets QEMU outlive this handle: the VM keeps running when the handle is dropped, and
    /// whoever holds its pid (the manager's state) owns it from now on. QEMU stays this
    /// process's child until it exits or this process does, so a long-lived caller must
    /// reap it (`waitpid`). Returns the pid.
    pub fn detach(mut self) -> u32 {
        self.detached = true;
        self.pid
    }

    /// Kills QEMU's whole process group with SIGKILL and reaps QEMU. Does nothing once QEMU
    /// has been reaped.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        // The child is not reaped yet, so its pid (our group id, thanks to
        // `process_group(0)`) cannot have been reused.
        let pgid = self.pid as libc::pid_t;
        // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
        if unsafe { libc::kill(-pgid, libc::SIGKILL) } == -1 {
            let e = io::Error::last_os_error();
            log::warn!("VM `{}`: cannot kill process group {pgid}: {e}", self.name);
            // At least the leader, which we own.
            let _ = self.child.kill();
        }
        match self.child.wait() {
            Ok(status) => {
                log::debug!("VM `{}` (pid {pgid}) killed: {status}", self.name);
                self.status = Some(status);
            }
            Err(e) => log::warn!("VM `{}`: cannot reap QEMU (pid {pgid}): {e}", self.name),
        }
    }

    /// Decodes QEMU's `isa-debug-exit` convention: the guest writes `v` to port 0xf4 and
    /// QEMU exits with `(v << 1) | 1`, so an odd exit code means the guest chose it. Only
    /// the low 7 bits of `v` survive. QEMU's own errors exit with 1, which reads as `v = 0`:
    /// guests should report success and failure with non-zero values.
    pub fn guest_exit_code(status: ExitStatus) -> Option<u32> {
        let code = u32::try_from(status.code()?).ok()?;
        (code & 1 == 1).then_some(code >> 1)
    }

    /// QEMU's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`); `None` once it
    /// has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status.is_none().then_some(())?;
        process_rss_kib(self.pid)
    }

    /// CPU time QEMU has used so far (user + system, all threads); `None` once it has been
    /// reaped.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.status.is_none().then_some(())?;
        process_cpu_time(self.pid)
    }

    /// Appends whatever the guest wrote since the last call to the line buffer.
    fn read_serial(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.serial.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => self.lines.push(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let what = format!("read serial log {}", self.serial_log.display());
                    return Err(Error::io(what, e));
                }
            }
        }
    }

    fn exited(&self, status: ExitStatus, what: String) -> Error {
        Error::Exited {
            vm: self.name.clone(),
            what,
            status,
            log_tail: self.log_tail(),
        }
    }

    fn timeout(&self, timeout: Duration, what: String) -> Error {
        Error::Timeout {
            vm: self.name.clone(),
            what,
            timeout,
            log_tail: self.log_tail(),
        }
    }

    /// The last lines of the serial log and of QEMU's own output, labelled, for errors.
    fn log_tail(&self) -> String {
        let mut out = String::new();
        for (label, path) in [
            ("serial log", &self.serial_log),
            ("QEMU output", &self.qemu_log),
        ] {
            out.push_str(&format!(
                "--- {label} ({}), last lines ---\n",
                path.display()
            ));
            match tail(path) {
                Ok(t) if t.is_empty() => out.push_str("(empty)\n"),
                Ok(t) => out.push_str(&t),
                Err(e) => out.push_str(&format!("(cannot read: {e})\n")),
            }
        }
        out.truncate(out.trim_end().len());
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
}

/// The last [`TAIL_LINES`] lines within the last [`TAIL_BYTES`] of `path`, newline-terminated.
fn tail(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the seek.
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(TAIL_LINES);
    Ok(lines[keep..].iter().map(|l| format!("{l}\n")).collect())
}

/// Serial bytes not yet consumed by a wait, split into lines on demand.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Consumes lines up to and including the first one starting with `prefix`, and returns
    /// it without its line ending. Without a match, every complete line is consumed and the
    /// partial last line is kept, unless `final_read` says no more bytes will come, in which
    /// case the partial line is searched too.
    fn take_line_starting_with(&mut self, prefix: &str, final_read: bool) -> Option<String> {
        let mut start = 0;
        let mut found = None;
        while start < self.buf.len() {
            let rest = &self.buf[start..];
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], start + i + 1),
                None if final_read || rest.len() >= MAX_LINE => (rest, self.buf.len()),
                None => break,
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            start = next;
            if line.starts_with(prefix.as_bytes()) {
                found = Some(String::from_utf8_lossy(line).into_owned());
                break;
            }
        }
        self.buf.drain(..start);
        found
    }
}

/// The generation in a `READY <generation>` line.
fn parse_ready(line: &str) -> Option<u64> {
    line.strip_prefix(READY_PREFIX)?.trim().parse().ok()
}

/// `VmRSS:    38124 kB` from `/proc/<pid>/status`.
/// Resident memory in KiB of any process (`VmRSS` in `/proc/<pid>/status`), e.g. an
/// appliance's QEMU known only by its pid; `None` when it cannot be read.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss_kib(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU time (user + system, all threads) any process has used so far; `None` when it
/// cannot be read.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let ticks = parse_stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf only reads its integer argument.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    if hz == 0 {
        return None;
    }
    let nanos = u128::from(ticks % hz) * 1_000_000_000 / u128::from(hz);
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos(nanos as u64))
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// utime + stime, in clock ticks, from `/proc/<pid>/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the command; utime and stime are fields 14, 15.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exited_with(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn debug_exit_codes_decode() {
        assert_eq!(Vm::guest_exit_code(exited_with(7)), Some(3));
        assert_eq!(Vm::guest_exit_code(exited_with(1)), Some(0));
        assert_eq!(Vm::guest_exit_code(exited_with(0xff)), Some(0x7f));
        assert_eq!(Vm::guest_exit_code(exited_with(0)), None);
        assert_eq!(Vm::guest_exit_code(exited_with(2)), None);
        // Killed by SIGKILL: no exit code at all.
        assert_eq!(
            Vm::guest_exit_code(ExitStatus::from_raw(libc::SIGKILL)),
            None
        );
    }

    #[test]
    fn lines_are_found_across_chunks_and_consumed() {
        let mut b = LineBuffer::default();
        b.push(b"boot\r\nREA");
        assert_eq!(b.take_line_starting_with("READY ", false), None);
        b.push(b"DY 1\nREADY 2\npartial");
        assert_eq!(
            b.take_line_starting_with("READY ", false).as_deref(),
            Some("READY 1")
        );
        assert_eq!(
            b.take_line_starting_with("READY ", false).as_deref(),
            Some("READY 2")
        );
        assert_eq!(b.take_line_starting_with("READY ", false), None);
        assert_eq!(b.buf, b"partial");
        assert_eq!(
            b.take_line_starting_with("part", true).as_deref(),
            Some("partial")
        );
        assert!(b.buf.is_empty());
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let mut b = LineBuffer::default();
        b.push(b"READY 1");
        // "READY 1" could still become "READY 12".
        assert_eq!(b.take_line_starting_with("READY ", false), None);
        b.push(b"2\n");
        assert_eq!(
            b.take_line_starting_with("READY ", false).as_deref(),
            Some("READY 12")
        );
    }

    #[test]
    fn endless_line_is_cut() {
        let mut b = LineBuffer::default();
        b.push(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(b.take_line_starting_with("READY", false), None);
        assert!(b.buf.is_empty());
    }

    #[test]
    fn ready_line_parsing() {
        assert_eq!(parse_ready("READY 5"), Some(5));
        assert_eq!(parse_ready("READY 18446744073709551615 "), Some(u64::MAX));
        assert_eq!(parse_ready("READY five"), None);
        assert_eq!(parse_ready("READY "), None);
    }

    #[test]
    fn vm_rss_parsing() {
        let status = "Name:\tqemu-system-x86\nVmPeak:\t  400000 kB\nVmRSS:\t   38124 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(38124));
        assert_eq!(parse_vm_rss_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn stat_parsing_counts_from_the_last_paren() {
        let stat = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn own_stat_parses() {
        let own = fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
        assert!(parse_stat_cpu_ticks(&own).is_some());
        let own = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        assert!(parse_vm_rss_kib(&own).is_some_and(|kib| kib > 0));
    }
}
