//! Boot-time probing: a raw ICMP socket inside a namespace sends echo requests at a fixed
//! interval until the first matching reply, and reports when that reply arrived.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::frames::icmp_echo;
use crate::netns::enter_netns;
use crate::raw::poll_readable;

/// Shortest interval honoured; anything smaller would be a busy loop.
const MIN_INTERVAL: Duration = Duration::from_micros(100);
/// Longest the prober sleeps at once, so that dropping it stops the thread promptly.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Marks our requests in captures.
const PAYLOAD: &[u8] = b"nanovnf-boot-probe";

/// Sends echo requests to `dst` from inside `ns` every `interval`, starting at once,
/// until the first matching reply or until `timeout`. Returns when the reply arrived.
/// See [`EchoProber`] for the semantics.
pub fn first_echo_reply(
    ns: &str,
    dst: Ipv4Addr,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    EchoProber::start(ns, dst, interval, timeout)?.join()
}

/// A background [`first_echo_reply`]. When `start` returns, the socket is open and the
/// first request has been sent, so a VM spawned right after cannot answer too early to
/// be seen.
///
/// The result is `Ok(Some(t))` with `t` taken right after the reply was read, `Ok(None)`
/// when requests went out but none was answered in time, and `Err` when not a single
/// request could be sent (no route, interface down) or the socket failed: a broken
/// setup never looks like a VM that did not boot.
///
/// Replies are matched on source address and ICMP identifier (unique per prober), so
/// several probers may share a namespace. Sends failing with unreachable errors (ARP not
/// resolved yet) are retried at the next tick. Linux retries ARP only once a second: for
/// a sharp measurement, install the VM's MAC first with [`crate::Instance::set_neighbor`].
/// Dropping the prober stops it.
pub struct EchoProber {
    thread: Option<JoinHandle<anyhow::Result<Option<Instant>>>>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl EchoProber {
    pub fn start(
        ns: &str,
        dst: Ipv4Addr,
        interval: Duration,
        timeout: Duration,
    ) -> anyhow::Result<EchoProber> {
        let started = Instant::now();
        let deadline = started + timeout;
        let interval = interval.max(MIN_INTERVAL);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = sync_channel::<anyhow::Result<()>>(1);
        let ns_owned = ns.to_owned();
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("echo-{dst}"))
            .spawn(move || {
                let mut probe = match Probe::open(&ns_owned, dst) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(None);
                    }
                };
                probe.send_one();
                let _ = ready_tx.send(Ok(()));
                probe.run(interval, deadline, &stop_thread)
            })
            .context("spawning echo prober thread")?;
        let mut prober = EchoProber {
            thread: Some(thread),
            stop,
            started,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(prober),
            Ok(Err(e)) => Err(e.context(format!("echo prober to {dst} in {ns}"))),
            // The thread died before reporting: take_result re-raises its panic.
            Err(_) => Err(prober
                .take_result()
                .err()
                .unwrap_or_else(|| anyhow!("echo prober thread ended before starting"))),
        }
    }

    /// When `start` was called; the timeout counts from here.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Whether the prober has stopped (reply, timeout or error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the outcome.
    pub fn join(mut self) -> anyhow::Result<Option<Instant>> {
        self.take_result()
    }

    fn take_result(&mut self) -> anyhow::Result<Option<Instant>> {
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            None => Err(anyhow!("echo prober already joined")),
        }
    }
}

impl Drop for EchoProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The prober's socket and bookkeeping; lives on the prober thread.
struct Probe {
    fd: OwnedFd,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    sent: u32,
    last_error: Option<io::Error>,
}

impl Probe {
    fn open(ns: &str, dst: Ipv4Addr) -> anyhow::Result<Probe> {
        static NEXT_ID: AtomicU32 = AtomicU32::new(0);
        enter_netns(ns)?;
        // SAFETY: plain syscall with integer arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("raw ICMP socket");
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() as u16) ^ (n as u16).wrapping_mul(0x9e37);
        Ok(Probe {
            fd,
            dst,
            id,
            seq: 0,
            sent: 0,
            last_error: None,
        })
    }

    /// Sends the next request; unreachable-type errors are remembered, not fatal.
    fn send_one(&mut self) {
        let msg = icmp_echo(false, self.id, self.seq, PAYLOAD);
        self.seq = self.seq.wrapping_add(1);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(self.dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: buf/len describe the live `msg`; addr points at a live sockaddr_in
        // whose size is passed as addrlen.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc >= 0 {
            self.sent += 1;
        } else {
            self.last_error = Some(io::Error::last_os_error());
        }
    }

    fn run(
        &mut self,
        interval: Duration,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> anyhow::Result<Option<Instant>> {
        let mut next_send = Instant::now() + interval;
        let mut buf = [0u8; 2048];
        loop {
            if let Some(at) = self.read_replies(&mut buf)? {
                return Ok(Some(at));
            }
            let now = Instant::now();
            if now >= deadline || stop.load(Ordering::Relaxed) {
                break;
            }
            if now >= next_send {
                self.send_one();
                next_send += interval;
                if next_send <= now {
                    next_send = now + interval; // we fell behind; do not burst
                }
            }
            let wait = next_send
                .min(deadline)
                .saturating_duration_since(Instant::now());
            poll_readable(&self.fd, wait.min(MAX_WAIT))?;
        }
        if self.sent == 0 {
            let why = self
                .last_error
                .as_ref()
                .map_or_else(|| "no attempt".to_owned(), ToString::to_string);
            return Err(anyhow!(
                "no echo request to {} could be sent: {why}",
                self.dst
            ));
        }
        Ok(None)
    }

    /// Reads every queued packet; the receive time of the first matching reply.
    fn read_replies(&mut self, buf: &mut [u8]) -> anyhow::Result<Option<Instant>> {
        loop {
            // SAFETY: buf is live and writable for buf.len() bytes; no address wanted.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => return Ok(None),
                    // Pending socket errors from earlier sends (ARP failure and friends).
                    Some(
                        libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EHOSTDOWN
                        | libc::ENETDOWN
                        | libc::ECONNREFUSED
                        | libc::ENOBUFS,
                    ) => {
                        self.last_error = Some(err);
                        continue;
                    }
                    _ => return Err(err).context("receiving ICMP"),
                }
            }
            let at = Instant::now();
            if self.is_our_reply(&buf[..n as usize]) {
                return Ok(Some(at));
            }
        }
    }

    fn is_our_reply(&self, pkt: &[u8]) -> bool {
        let Some(&vihl) = pkt.first() else {
            return false;
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        vihl >> 4 == 4
            && ihl >= 20
            && pkt.len() >= ihl + 8
            && pkt[9] == libc::IPPROTO_ICMP as u8
            && pkt[12..16] == self.dst.octets()
            && pkt[ihl] == 0
            && pkt[ihl + 4..ihl + 6] == self.id.to_be_bytes()
    }
}
