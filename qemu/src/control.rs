//! The host end of an appliance's control channel: a unix-socket client that sends
//! [`Request`]s and reads [`Report`]s, both as COBS frames (see `nanovnf_schema::control`).
//! QEMU listens on the socket for the whole life of the VM, so a restarted manager simply
//! connects again.

use nanovnf_schema::control::{self, Counter, FrameReader, Op, Report, Request};
use nanovnf_schema::metadata::PasswordPage;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to control socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {}: I/O failed", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {}: the appliance closed the channel", path.display())]
    Closed { path: PathBuf },
    #[error("control socket {}: no answer to request {seq} within {timeout:?}", path.display())]
    Timeout {
        path: PathBuf,
        seq: u32,
        timeout: Duration,
    },
    #[error("control socket {}: the appliance refused request {seq}: {reason}", path.display())]
    Refused {
        path: PathBuf,
        seq: u32,
        reason: String,
    },
    #[error("control socket {}: unexpected answer to request {seq}: {report:?}", path.display())]
    Unexpected {
        path: PathBuf,
        seq: u32,
        report: Report,
    },
}

/// A connected control channel.
pub struct ControlClient {
    path: PathBuf,
    stream: UnixStream,
    reader: FrameReader,
    next_seq: u32,
    /// Reports read while waiting for another one (e.g. `Ready`).
    backlog: VecDeque<Report>,
    /// Frames that did not decode.
    pub malformed: u64,
}

impl ControlClient {
    /// Connects to `path`, retrying until `timeout` while the socket does not exist yet
    /// or QEMU does not listen on it yet.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ControlError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(source) => {
                    return Err(ControlError::Connect {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        };
        Ok(Self {
            path: path.to_owned(),
            stream,
            reader: FrameReader::new(),
            next_seq: 1,
            backlog: VecDeque::new(),
            malformed: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `op` without waiting; returns its sequence number.
    pub fn send(&mut self, op: Op) -> Result<u32, ControlError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let frame = control::encode(&Request { seq, op });
        self.stream
            .write_all(&frame)
            .map_err(|source| self.io(source))?;
        Ok(seq)
    }

    /// Sends `op` and waits for its answer. `Refused` becomes an error; other reports
    /// that arrive meanwhile are kept for [`ControlClient::next_report`].
    pub fn call(&mut self, op: Op, timeout: Duration) -> Result<Report, ControlError> {
        let seq = self.send(op)?;
        self.wait_for(seq, timeout)
    }

    /// Waits for the answer to request `seq` (sent with [`ControlClient::send`]).
    pub fn wait_for(&mut self, seq: u32, timeout: Duration) -> Result<Report, ControlError> {
        let deadline = Instant::now() + timeout;
        let queued = self.backlog.iter().position(|r| answer_seq(r) == Some(seq));
        if let Some(report) = queued.and_then(|i| self.backlog.remove(i)) {
            return self.answer(seq, report);
        }
        loop {
            let report = self.read_report(deadline).map_err(|e| match e {
                ControlError::Timeout { path, .. } => ControlError::Timeout { path, seq, timeout },
                e => e,
            })?;
            if answer_seq(&report) == Some(seq) {
                return self.answer(seq, report);
            }
            self.backlog.push_back(report);
        }
    }

    /// The next report, answered or unsolicited, waiting at most `timeout`.
    pub fn next_report(&mut self, timeout: Duration) -> Result<Report, ControlError> {
        if let Some(r) = self.backlog.pop_front() {
            return Ok(r);
        }
        self.read_report(Instant::now() + timeout)
    }

    /// Liveness check: the appliance's current generation.
    pub fn ping(&mut self, timeout: Duration) -> Result<u64, ControlError> {
        match self.call(Op::Ping, timeout)? {
            Report::Done { generation, .. } => Ok(generation),
            report => Err(self.unexpected(report)),
        }
    }

    /// Every counter of the appliance, by name.
    pub fn counters(&mut self, timeout: Duration) -> Result<Vec<Counter>, ControlError> {
        match self.call(Op::Counters, timeout)? {
            Report::Counters { counters, .. } => Ok(counters),
            report => Err(self.unexpected(report)),
        }
    }

    /// One page of the passwords a metadata appliance's instances set after serial
    /// `since` (0: all). An appliance built before this request existed does not answer:
    /// the call times out.
    pub fn metadata_passwords(
        &mut self,
        since: u64,
        timeout: Duration,
    ) -> Result<PasswordPage, ControlError> {
        match self.call(Op::MetadataPasswords { since }, timeout)? {
            Report::MetadataPasswords { page, .. } => Ok(page),
            report => Err(self.unexpected(report)),
        }
    }

    fn answer(&self, seq: u32, report: Report) -> Result<Report, ControlError> {
        match report {
            Report::Refused { reason, .. } => Err(ControlError::Refused {
                path: self.path.clone(),
                seq,
                reason,
            }),
            r => Ok(r),
        }
    }

    fn unexpected(&self, report: Report) -> ControlError {
        ControlError::Unexpected {
            path: self.path.clone(),
            seq: answer_seq(&report).unwrap_or(0),
            report,
        }
    }

    fn read_report(&mut self, deadline: Instant) -> Result<Report, ControlError> {
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ControlError::Timeout {
                    path: self.path.clone(),
                    seq: 0,
                    timeout: Duration::ZERO,
                });
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .map_err(|source| self.io(source))?;
            let n = match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(ControlError::Closed {
                        path: self.path.clone(),
                    });
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(self.io(source)),
            };
            // Split into frames; keep every complete report, in order.
            let mut first = None;
            for &b in &buf[..n] {
                if let Some(frame) = self.reader.push(b) {
                    match control::decode::<Report>(frame) {
                        Ok(r) if first.is_none() => first = Some(r),
                        Ok(r) => self.backlog.push_back(r),
                        Err(_) => self.malformed += 1,
                    }
                }
            }
            if let Some(r) = first {
                return Ok(r);
            }
        }
    }

    fn io(&self, source: io::Error) -> ControlError {
        ControlError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// The request a report answers, if it answers one.
fn answer_seq(report: &Report) -> Option<u32> {
    match report {
        Report::Ready { .. } => None,
        Report::Done { seq, .. }
        | Report::Refused { seq, .. }
        | Report::Counters { seq, .. }
        | Report::MetadataPasswords { seq, .. } => Some(*seq),
    }
}
