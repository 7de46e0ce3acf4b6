//! AF_PACKET raw sockets bound to one interface of one namespace: inject arbitrary
//! Ethernet frames (including malformed ones) and capture what arrives.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::netns::in_netns;

/// Largest frame `recv` returns whole; anything longer is cut to this size.
const RECV_BUF: usize = 65_536;

/// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface, seeing every frame the
/// interface receives (its own transmissions excluded). The socket belongs to the
/// namespace it was opened in, so once open it can be used from any thread.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
    ifname: String,
}

impl RawSocket {
    /// Opens a raw socket on `ifname` inside namespace `ns`.
    pub fn open(ns: &str, ifname: &str) -> anyhow::Result<RawSocket> {
        let name = ifname.to_owned();
        in_netns(ns, move || RawSocket::open_here(&name))?
            .with_context(|| format!("raw socket on {ifname} in {ns}"))
    }

    /// Opens a raw socket on `ifname` in the calling thread's namespace. Use
    /// [`RawSocket::open`] unless the thread already is in the right namespace.
    pub fn open_here(ifname: &str) -> io::Result<RawSocket> {
        let cname = CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: the socket receives nothing until bind() names the interface, so no
        // frame from another interface sneaks in between socket() and bind().
        // SAFETY: plain syscall with integer arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // Ignoring our own transmissions in the kernel is an optimisation (Linux >= 4.20);
        // recv also filters PACKET_OUTGOING, so a failure here is harmless.
        // SAFETY: optval points at a live c_int whose size is passed as optlen.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: addr points at a live sockaddr_ll whose size is passed as addrlen.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawSocket {
            fd,
            ifindex,
            ifname: ifname.to_owned(),
        })
    }

    /// The interface this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Its interface index (inside its namespace).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Transmits `frame` as is (Ethernet header first). The kernel refuses frames shorter
    /// than an Ethernet header (`EINVAL`) and longer than MTU + 14 (`EMSGSIZE`).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: buf/len describe the live `frame` slice.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n >= 0 {
                return if n as usize == frame.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(io::ErrorKind::WriteZero, "short raw send"))
                };
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Waits up to `timeout` for the next received frame.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.recv_matching(timeout, |_| true)
    }

    /// Waits up to `timeout` for a received frame for which `want` is true, discarding
    /// the others.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            while let Some(n) = self.recv_now(&mut buf)? {
                if want(&buf[..n]) {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            poll_readable(&self.fd, deadline - now)?;
        }
    }

    /// Discards every frame already queued; returns how many there were.
    pub fn drain(&self) -> io::Result<usize> {
        let mut buf = vec![0u8; RECV_BUF];
        let mut count = 0;
        while self.recv_now(&mut buf)?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// One non-blocking receive of an incoming frame into `buf` (no allocation), skipping
    /// our own transmissions; `Ok(None)` when nothing is queued.
    pub fn recv_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are live, writable and their sizes are passed alongside.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut sll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }

    /// Waits until a frame is queued or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        poll_readable(&self.fd, timeout)
    }

    /// Asks for a receive buffer of `bytes` (best effort: the kernel caps it at
    /// `net.core.rmem_max`), for bursts of replies larger than the default holds.
    pub fn set_recv_buffer(&self, bytes: usize) {
        let value = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: optval points at a live c_int whose size is passed as optlen.
        let _ = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
}

/// Waits until `fd` is readable or `timeout` passes (both end the wait the same way).
pub(crate) fn poll_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up so a sub-millisecond remainder does not become a busy loop.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: pfd is one live pollfd and nfds is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}
