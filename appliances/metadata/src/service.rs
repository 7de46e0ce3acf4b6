//! The metadata appliance around the engine: a pool of smoltcp TCP sockets listening on
//! 169.254.169.254:80, each with its [`Conn`], the [`Tracker`] that knows every
//! connection's MAC, and the policy that keeps the pool available (idle keep-alive
//! connections and TIME-WAIT sockets give way when sockets run short). Generic over the
//! device, so whole TCP exchanges test on the host.

use crate::engine::{Conn, Engine, Peer, SourceMac};
use crate::tracker::{HTTP_PORT, Inspect, Pinned, TrackEvent, Tracker};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use nanovnf_port::Port;
use nanovnf_schema::control::Counter;
use nanovnf_schema::metadata::METADATA_IP;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpListenEndpoint};

/// TCP sockets: one connection each (a boot storm of 250 instances mostly finds one).
pub const SOCKETS: usize = 256;
/// Receive buffer per socket: requests are small; a large head arrives in windows.
pub const RX_BUFFER: usize = 2048;
/// Transmit buffer per socket: answers stream through it (user data up to 64 KiB).
pub const TX_BUFFER: usize = 4096;
/// With fewer free sockets than this, idle keep-alive connections are closed and
/// TIME-WAIT sockets reclaimed.
pub const LOW_WATER: usize = 16;
/// smoltcp drops a handshake whose peer stays silent this long (a SYN never completed).
/// Established connections run on the engine's deadlines instead: smoltcp's timeout
/// counts from the peer's last segment and would end an idle keep-alive silently.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Socket-level events, by stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketEvent {
    /// Connections aborted at their engine deadline.
    Aborted,
    /// Idle keep-alive connections closed because sockets ran short.
    IdleReclaimed,
    /// TIME-WAIT sockets reclaimed because sockets ran short.
    TimeWaitReclaimed,
}

impl SocketEvent {
    pub const ALL: [SocketEvent; 3] = [
        SocketEvent::Aborted,
        SocketEvent::IdleReclaimed,
        SocketEvent::TimeWaitReclaimed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SocketEvent::Aborted => "connections_aborted",
            SocketEvent::IdleReclaimed => "idle_reclaimed",
            SocketEvent::TimeWaitReclaimed => "time_wait_reclaimed",
        }
    }
}

pub struct Service {
    pub engine: Engine,
    tracker: RefCell<Tracker>,
    sockets: SocketSet<'static>,
    handles: Vec<SocketHandle>,
    conns: Vec<Option<Conn>>,
    /// Scratch: the remote endpoints of all sockets, reused every poll.
    live: Vec<(core::net::Ipv4Addr, u16)>,
    events: [u64; SocketEvent::ALL.len()],
    /// Passes so far (requests per pass tell how well work is batched).
    polls: u64,
}

fn ns(t: Instant) -> u64 {
    t.total_micros().max(0) as u64 * 1000
}

/// The IPv4 address in `addr` (the only kind our sockets see).
fn v4(addr: IpAddress) -> Option<core::net::Ipv4Addr> {
    #[allow(unreachable_patterns)] // IPv6 exists only when some crate enables it
    match addr {
        IpAddress::Ipv4(a) => Some(a),
        _ => None,
    }
}

fn listen_endpoint() -> IpListenEndpoint {
    IpListenEndpoint {
        addr: Some(IpAddress::Ipv4(METADATA_IP)),
        port: HTTP_PORT,
    }
}

impl Service {
    /// `sockets` TCP sockets listening on 169.254.169.254:80.
    pub fn new(engine: Engine, sockets: usize) -> Self {
        let mut set = SocketSet::new(Vec::with_capacity(sockets));
        let mut handles = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
                tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
            );
            s.set_nagle_enabled(false);
            handles.push(set.add(s));
        }
        let mut service = Service {
            engine,
            tracker: RefCell::new(Tracker::new(sockets)),
            sockets: set,
            handles,
            conns: (0..sockets).map(|_| None).collect(),
            live: Vec::with_capacity(sockets),
            events: [0; SocketEvent::ALL.len()],
            polls: 0,
        };
        service.relisten();
        service
    }

    /// Puts closed sockets back to listening; returns how many listen.
    fn relisten(&mut self) -> usize {
        let mut listening = 0;
        for &h in &self.handles {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.state() == State::Closed {
                s.set_timeout(Some(HANDSHAKE_TIMEOUT));
                // Cannot fail: the socket is closed and the endpoint has a port.
                let _ = s.listen(listen_endpoint());
            }
            if s.state() == State::Listen {
                listening += 1;
            }
        }
        listening
    }

    /// One pass: frames in, every connection served, answers out. Returns when to poll
    /// again at the latest.
    pub fn poll<D: Device>(
        &mut self,
        port: &mut Port,
        device: &mut D,
        now: Instant,
    ) -> Option<Instant> {
        self.polls += 1;
        let listening = self.relisten();
        self.tracker.borrow_mut().set_free(listening);
        self.ingress(port, device, now);
        if !self.tracker.borrow().is_empty() {
            self.forget_closed_flows();
        }
        // Listening sockets the SYNs of this pass have not taken.
        let pressed = self.tracker.borrow().free() < LOW_WATER;
        let now_ns = ns(now);
        let mut deadline = u64::MAX;
        for i in 0..self.handles.len() {
            if let Some(d) = self.serve(i, now_ns, pressed) {
                deadline = deadline.min(d);
            }
        }
        // Answers, window updates, handshakes and FINs of this pass go out now.
        let next = self.egress(port, device, now);
        let conn_deadline =
            (deadline != u64::MAX).then(|| Instant::from_micros((deadline / 1000) as i64));
        match (next, conn_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn ingress<D: Device>(&mut self, port: &mut Port, device: &mut D, now: Instant) {
        let mut pinned = Pinned {
            inner: device,
            tracker: &self.tracker,
        };
        let mut inspect = Inspect(&self.tracker);
        port.ingress(&mut pinned, now, &mut inspect, &mut self.sockets);
    }

    fn egress<D: Device>(
        &mut self,
        port: &mut Port,
        device: &mut D,
        now: Instant,
    ) -> Option<Instant> {
        let mut pinned = Pinned {
            inner: device,
            tracker: &self.tracker,
        };
        let mut inspect = Inspect(&self.tracker);
        port.egress(&mut pinned, now, &mut inspect, &mut self.sockets)
    }

    /// Drops every flow no socket holds any more (closed, or a SYN smoltcp refused).
    fn forget_closed_flows(&mut self) {
        let live = &mut self.live;
        live.clear();
        for &h in &self.handles {
            let s = self.sockets.get::<tcp::Socket>(h);
            if let Some(ep) = s.remote_endpoint()
                && let Some(ip) = v4(ep.addr)
            {
                live.push((ip, ep.port));
            }
        }
        // Sorted once, searched per flow: this runs every poll, over hundreds of sockets.
        live.sort_unstable();
        self.tracker
            .borrow_mut()
            .retain(|ip, port| live.binary_search(&(ip, port)).is_ok());
    }

    /// Serves socket `i`; returns its connection's deadline.
    fn serve(&mut self, i: usize, now_ns: u64, pressed: bool) -> Option<u64> {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.handles[i]);
        let state = socket.state();
        if !matches!(state, State::Established | State::CloseWait) {
            self.conns[i] = None;
            if state == State::TimeWait && pressed {
                socket.abort();
                self.events[SocketEvent::TimeWaitReclaimed as usize] += 1;
            }
            return None;
        }
        let conn = match &mut self.conns[i] {
            Some(c) => c,
            slot => {
                let ep = socket.remote_endpoint()?;
                let ip = v4(ep.addr)?;
                let mac = self.tracker.borrow().source_mac(ip, ep.port);
                let peer = Peer {
                    ip,
                    port: ep.port,
                    mac,
                };
                socket.set_timeout(None);
                slot.insert(self.engine.connect(peer, now_ns))
            }
        };
        let engine = &mut self.engine;
        // Bytes in, as far as the connection takes them.
        while socket.can_recv() && conn.room() > 0 {
            let fed = socket.recv(|buf| {
                let n = engine.feed(conn, buf, now_ns);
                (n, n)
            });
            if !matches!(fed, Ok(n) if n > 0) {
                break;
            }
        }
        if !socket.may_recv() && socket.recv_queue() == 0 {
            conn.peer_closed();
        }
        // Answers out, taking pipelined requests as the output drains.
        loop {
            engine.drive(conn, now_ns);
            let Some(bytes) = conn.output() else {
                break;
            };
            let n = socket.send_slice(bytes).unwrap_or(0);
            if n == 0 {
                break;
            }
            conn.advance(n, now_ns);
        }
        if conn.finished() || (pressed && conn.is_idle()) {
            if !conn.finished() {
                self.events[SocketEvent::IdleReclaimed as usize] += 1;
            }
            socket.close();
            self.conns[i] = None;
            return None;
        }
        if engine.expired(conn, now_ns) {
            socket.abort();
            self.conns[i] = None;
            self.events[SocketEvent::Aborted as usize] += 1;
            return None;
        }
        Some(conn.deadline())
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    pub fn events(&self, e: SocketEvent) -> u64 {
        self.events[e as usize]
    }

    pub fn tracked(&self, e: TrackEvent) -> u64 {
        self.tracker.borrow().events(e)
    }

    /// The source MAC the tracker holds for `ip:port` (tests).
    pub fn source_mac(&self, ip: core::net::Ipv4Addr, port: u16) -> SourceMac {
        self.tracker.borrow().source_mac(ip, port)
    }

    /// Every counter: the engine's, the tracker's and the sockets'.
    pub fn counters(&self) -> Vec<Counter> {
        let mut all = self.engine.counters();
        for e in TrackEvent::ALL {
            all.push(Counter::new(e.name(), self.tracked(e)));
        }
        for e in SocketEvent::ALL {
            all.push(Counter::new(e.name(), self.events(e)));
        }
        all.push(Counter::new("connections_open", self.connections() as u64));
        all.push(Counter::new("service_polls", self.polls));
        all
    }
}
