//! The smoltcp sockets of the DNS service: a few TCP sockets listening on port 53 (RFC
//! 7766: length-prefixed messages, several per connection, idle connections closed) and
//! one UDP socket from which forwarded queries leave for the upstream resolvers and
//! their answers return. Polled by the image after each pass of the interface.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_port::Outbox;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::server::PORT;
use crate::service::{Out, Service};

/// Concurrent TCP connections (each costs its buffers up front).
pub const TCP_SLOTS: usize = 4;
/// A connection silent this long is closed (RFC 7766 §6.2.3 suggests seconds).
pub const TCP_IDLE_MS: u64 = 10_000;
/// The largest query accepted over TCP; a longer length prefix closes the connection.
pub const MAX_TCP_QUERY: usize = 4096;
const TCP_RX: usize = 2048;
const TCP_TX: usize = 8192;
/// The upstream socket: datagrams and bytes queued each way.
const UDP_PACKETS: usize = 64;
const UDP_BYTES: usize = 64 * 1024;

/// Socket-level events, for counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounters {
    pub tcp_connections: u64,
    /// Connections closed for a length prefix over [`MAX_TCP_QUERY`].
    pub tcp_oversized: u64,
    /// Connections closed for sitting idle.
    pub tcp_idle_closed: u64,
    /// Answers that did not fit the connection's send buffer (connection closed).
    pub tcp_send_full: u64,
    /// Upstream datagrams not from port 53, and queries the socket could not take.
    pub upstream_bad_port: u64,
    pub upstream_send_failed: u64,
}

struct Slot {
    handle: SocketHandle,
    /// The connection being served, numbered from 1.
    conn: Option<u32>,
    buf: Vec<u8>,
    last_ms: u64,
}

/// The DNS service's sockets.
pub struct Sockets {
    pub set: SocketSet<'static>,
    tcp: Vec<Slot>,
    upstream: SocketHandle,
    next_conn: u32,
    pub counters: SocketCounters,
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_RX]),
        tcp::SocketBuffer::new(vec![0; TCP_TX]),
    );
    // Each answer is one small message the client waits for: Nagle would hold a second
    // answer on the connection until the first is acknowledged (a delayed ACK away).
    s.set_nagle_enabled(false);
    s
}

impl Sockets {
    /// TCP on port 53 and the upstream socket on `upstream_port` (choose it at random:
    /// with the transaction ID it is what an off-path spoofer must guess).
    pub fn new(upstream_port: u16) -> Self {
        let mut set = SocketSet::new(Vec::new());
        let mut tcp = Vec::with_capacity(TCP_SLOTS);
        for _ in 0..TCP_SLOTS {
            let handle = set.add(tcp_socket());
            tcp.push(Slot {
                handle,
                conn: None,
                buf: Vec::new(),
                last_ms: 0,
            });
        }
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
        );
        // Binding a fresh socket to a non-zero port cannot fail.
        let _ = u.bind(upstream_port.max(1024));
        let upstream = set.add(u);
        Sockets {
            set,
            tcp,
            upstream,
            next_conn: 1,
            counters: SocketCounters::default(),
        }
    }

    /// Moves data between the sockets and `dns`: upstream answers in, TCP queries in and
    /// answers out, forwarded queries out. UDP answers go to `outbox`. Returns true when
    /// something was queued for sending (poll the interface again).
    pub fn serve(&mut self, dns: &mut Service, outbox: &mut Outbox, now_ms: u64) -> bool {
        let before = outbox.len();
        let u = self.set.get_mut::<udp::Socket>(self.upstream);
        while let Ok((data, meta)) = u.recv() {
            #[allow(irrefutable_let_patterns)]
            let IpAddress::Ipv4(from) = meta.endpoint.addr else {
                continue;
            };
            if meta.endpoint.port != PORT {
                self.counters.upstream_bad_port += 1;
                continue;
            }
            dns.upstream_answer(data, from, outbox);
        }
        let mut sent = false;
        for i in 0..self.tcp.len() {
            sent |= self.serve_tcp(i, dns, now_ms);
        }
        dns.poll(outbox);
        let work: Vec<Out> = dns.drain().collect();
        for o in work {
            match o {
                Out::Upstream { to, query } => {
                    let u = self.set.get_mut::<udp::Socket>(self.upstream);
                    match u.send_slice(&query, IpEndpoint::new(IpAddress::Ipv4(to), PORT)) {
                        Ok(()) => sent = true,
                        Err(_) => self.counters.upstream_send_failed += 1,
                    }
                }
                Out::Tcp { conn, payload } => {
                    if let Some(i) = self.tcp.iter().position(|s| s.conn == Some(conn)) {
                        sent |= self.send_framed(i, &payload);
                    }
                }
            }
        }
        sent || outbox.len() > before
    }

    /// Sends one length-prefixed message on slot `i`, or closes the connection if it
    /// does not fit.
    fn send_framed(&mut self, i: usize, payload: &[u8]) -> bool {
        let socket = self.set.get_mut::<tcp::Socket>(self.tcp[i].handle);
        let room = socket.send_capacity() - socket.send_queue();
        if !socket.may_send() || payload.len() > usize::from(u16::MAX) || room < payload.len() + 2 {
            self.counters.tcp_send_full += 1;
            socket.abort();
            return true;
        }
        // Both fit: checked above.
        let _ = socket.send_slice(&(payload.len() as u16).to_be_bytes());
        let _ = socket.send_slice(payload);
        true
    }

    fn serve_tcp(&mut self, i: usize, dns: &mut Service, now_ms: u64) -> bool {
        let slot = &mut self.tcp[i];
        let socket = self.set.get_mut::<tcp::Socket>(slot.handle);
        if !socket.is_open() {
            if let Some(conn) = slot.conn.take() {
                dns.forget_tcp(conn);
            }
            slot.buf = Vec::new();
            // Listening on a closed socket with a non-zero port cannot fail.
            let _ = socket.listen(PORT);
            return false;
        }
        if !socket.is_active() {
            return false; // listening
        }
        let conn = match slot.conn {
            Some(c) => c,
            None => {
                let c = self.next_conn;
                self.next_conn = self.next_conn.wrapping_add(1).max(1);
                self.counters.tcp_connections += 1;
                slot.conn = Some(c);
                slot.last_ms = now_ms;
                c
            }
        };
        let mut chunk = [0u8; 512];
        while socket.can_recv() {
            match socket.recv_slice(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    slot.buf.extend_from_slice(&chunk[..n]);
                    slot.last_ms = now_ms;
                }
            }
            if slot.buf.len() > MAX_TCP_QUERY + 2 {
                break;
            }
        }
        let mut replies = Vec::new();
        while let Some(len) = slot
            .buf
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        {
            if len > MAX_TCP_QUERY {
                self.counters.tcp_oversized += 1;
                socket.abort();
                return true;
            }
            if slot.buf.len() < 2 + len {
                break;
            }
            if let Some(r) = dns.tcp_query(conn, &slot.buf[2..2 + len]) {
                replies.push(r);
            }
            slot.buf.drain(..2 + len);
        }
        if now_ms.saturating_sub(slot.last_ms) > TCP_IDLE_MS {
            self.counters.tcp_idle_closed += 1;
            socket.abort();
            return true;
        }
        // CloseWait: the client sent FIN (not SynReceived, where nothing may be read yet).
        let client_done = socket.state() == tcp::State::CloseWait && slot.buf.is_empty();
        let mut sent = false;
        for r in replies {
            sent |= self.send_framed(i, &r);
        }
        if client_done {
            // The client has sent all it will: close our side after its answers.
            self.set.get_mut::<tcp::Socket>(self.tcp[i].handle).close();
            sent = true;
        }
        sent
    }

    /// The earliest time (ms) a TCP connection may need closing for idleness.
    pub fn poll_at_ms(&self) -> Option<u64> {
        self.tcp
            .iter()
            .filter(|s| s.conn.is_some())
            .map(|s| s.last_ms.saturating_add(TCP_IDLE_MS + 1))
            .min()
    }
}

/// An upstream address and port as smoltcp sees it (for tests).
pub fn endpoint(ip: Ipv4Addr, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(ip), port)
}
