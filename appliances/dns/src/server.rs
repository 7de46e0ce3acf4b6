//! The DNS server engine, as Neutron's dnsmasq behaves for a tenant network: authoritative
//! answers for the network's names from the [`Zone`], everything else forwarded to the
//! configured upstream resolvers (or REFUSED without any, as `--no-resolv`). Sans-IO:
//! [`Server::query`] takes one message, who sent it and the time, and returns a reply or a
//! message for an upstream; [`Server::upstream_answer`] relays answers back and
//! [`Server::poll`] retries or fails queries whose upstream stays silent.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::wire::{
    self, CLASSIC_UDP_LIMIT, Error, HEADER_LEN, Header, Name, Query, Writer, class, flag, rcode,
    rtype,
};
use crate::zone::{Lookup, Zone};

/// TTL of the network's own records: 0, dnsmasq's `--local-ttl` default, so a port that
/// comes or goes is seen at once by every client.
pub const LOCAL_TTL: u32 = 0;
/// TTL of the SOA in negative answers, and its MINIMUM field (RFC 2308): short, so a
/// name added live is not hidden long by a caching resolver.
pub const NEGATIVE_TTL: u32 = 10;
/// The UDP payload size this server advertises and caps answers at (DNS flag day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// How long one upstream may take to answer before the next one is tried.
pub const FORWARD_TIMEOUT_MS: u64 = 2000;
/// Queries forwarded and not yet answered, at most (dnsmasq's `--dns-forward-max` is 150).
pub const DEFAULT_MAX_PENDING: usize = 256;
/// Longer queries are not forwarded (a real query is well under 512 bytes).
pub const MAX_FORWARD_LEN: usize = 4096;
/// Largest message over TCP (its 16-bit length prefix).
pub const TCP_LIMIT: usize = 65535;
/// The DNS port.
pub const PORT: u16 = 53;

/// How the server is set up besides its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where names outside the network go, tried in order; empty = REFUSED.
    pub upstreams: Vec<Ipv4Addr>,
    /// The largest UDP payload sent to a client (and advertised in OPT).
    pub max_udp: u16,
    /// Capacity of the table of forwarded queries.
    pub max_pending: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            upstreams: Vec::new(),
            max_udp: EDNS_UDP_SIZE,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// How a query arrived (and how its answer leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a message got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header: nothing to answer with.
    TooShort,
    /// A response (QR set) sent to the server port; answering could loop.
    NotAQuery,
    /// A retransmission of a query already forwarded and pending.
    Duplicate,
    /// The table of forwarded queries is full.
    PendingFull,
    /// An upstream answer that is no answer (short, QR clear).
    UpstreamMalformed,
    /// An upstream answer whose ID (or source) matches no pending query.
    UpstreamUnknown,
    /// An upstream answer whose question is not the one asked (spoofed or confused).
    UpstreamMismatch,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::TooShort,
        DropReason::NotAQuery,
        DropReason::Duplicate,
        DropReason::PendingFull,
        DropReason::UpstreamMalformed,
        DropReason::UpstreamUnknown,
        DropReason::UpstreamMismatch,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::NotAQuery => "not_a_query",
            DropReason::Duplicate => "duplicate",
            DropReason::PendingFull => "pending_full",
            DropReason::UpstreamMalformed => "upstream_malformed",
            DropReason::UpstreamUnknown => "upstream_unknown",
            DropReason::UpstreamMismatch => "upstream_mismatch",
        }
    }
}

/// What the server did, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub queries_udp: u64,
    pub queries_tcp: u64,
    /// Answers with data from the zone.
    pub answers: u64,
    /// NOERROR without data (AAAA for a known name, say).
    pub nodata: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub notimp: u64,
    pub servfail: u64,
    pub badvers: u64,
    /// Answers cut to fit the client's UDP limit (TC set).
    pub truncated: u64,
    /// Queries sent upstream (first tries), retries to the next upstream, upstream
    /// answers relayed, queries that no upstream answered.
    pub forwarded: u64,
    pub forward_retries: u64,
    pub forward_answers: u64,
    pub forward_timeouts: u64,
    /// Malformed queries answered FORMERR, by reason.
    formerr: [u64; Error::ALL.len()],
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    pub fn formerr(&self, e: Error) -> u64 {
        self.formerr[e as usize]
    }
    pub fn total_formerr(&self) -> u64 {
        self.formerr.iter().sum()
    }
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this answer to the client now.
    Reply(Vec<u8>),
    /// Send this message to `upstream`, port 53; its answer comes back through
    /// [`Server::upstream_answer`].
    Forward { upstream: Ipv4Addr, query: Vec<u8> },
    /// Nothing to send (counted).
    Drop(DropReason),
}

/// Work that falls due later: a relayed answer or SERVFAIL for a client, or a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<C> {
    Reply {
        client: C,
        transport: Transport,
        payload: Vec<u8>,
    },
    Forward {
        upstream: Ipv4Addr,
        query: Vec<u8>,
    },
}

/// A forwarded query waiting for its answer.
#[derive(Debug, Clone)]
struct Pending<C> {
    client: C,
    transport: Transport,
    client_id: u16,
    upstream_id: u16,
    /// The message as sent upstream (our ID), for retries and for SERVFAIL.
    query: Vec<u8>,
    /// Index into the upstreams of the one asked last; how many have been asked.
    upstream: usize,
    tries: usize,
    deadline_ms: u64,
    /// The client's answer size limit.
    limit: usize,
}

/// The engine: a zone, the upstreams and the table of forwarded queries. `C` names a
/// client to the glue (an address and port, a TCP connection).
pub struct Server<C> {
    zone: Zone,
    config: ServerConfig,
    pending: Vec<Pending<C>>,
    rng: u64,
    counters: Counters,
}

impl<C: Copy + PartialEq> Server<C> {
    /// `seed` seeds the upstream transaction IDs (any value; the image uses the TSC).
    pub fn new(zone: Zone, config: ServerConfig, seed: u64) -> Self {
        Server {
            zone,
            config,
            pending: Vec::new(),
            rng: seed | 1,
            counters: Counters::default(),
        }
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    pub fn zone_mut(&mut self) -> &mut Zone {
        &mut self.zone
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Forwarded queries waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn random_u16(&mut self) -> u16 {
        // xorshift64*: IDs an off-path attacker cannot predict from earlier ones cheaply.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }

    fn drop(&mut self, r: DropReason) -> Outcome {
        self.counters.drops[r as usize] += 1;
        Outcome::Drop(r)
    }

    /// The answer size limit for a query over `transport`.
    fn limit(&self, q: &Query<'_>, transport: Transport) -> usize {
        match (transport, q.edns) {
            (Transport::Tcp, _) => TCP_LIMIT,
            (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(e)) => {
                let ours = usize::from(self.config.max_udp).max(CLASSIC_UDP_LIMIT);
                usize::from(e.udp_size).clamp(CLASSIC_UDP_LIMIT, ours)
            }
        }
    }

    /// Handles one query from `client`.
    pub fn query(&mut self, msg: &[u8], client: C, transport: Transport, now_ms: u64) -> Outcome {
        let Ok(h) = Header::new_checked(msg) else {
            return self.drop(DropReason::TooShort);
        };
        if h.is_response() {
            return self.drop(DropReason::NotAQuery);
        }
        match transport {
            Transport::Udp => self.counters.queries_udp += 1,
            Transport::Tcp => self.counters.queries_tcp += 1,
        }
        let echo = h.flags() & (flag::OPCODE_MASK | flag::RD | flag::CD);
        if h.opcode() != 0 {
            self.counters.notimp += 1;
            return Outcome::Reply(bare_reply(h.id(), echo | flag::QR | rcode::NOTIMP));
        }
        let q = match wire::parse_query(msg) {
            Ok(q) => q,
            Err(e) => {
                self.counters.formerr[e as usize] += 1;
                return Outcome::Reply(bare_reply(h.id(), echo | flag::QR | rcode::FORMERR));
            }
        };
        if let Some(e) = q.edns
            && e.version != 0
        {
            self.counters.badvers += 1;
            let mut w = self.start(&q, rcode::NOERROR, false);
            w.opt(
                self.config.max_udp,
                (rcode::BADVERS >> 4) as u8,
                e.dnssec_ok,
            );
            w.set_counts(1, 0, 0, 1);
            return Outcome::Reply(w.buf);
        }
        let limit = self.limit(&q, transport);
        if q.qclass != class::IN && q.qclass != class::ANY
            || q.qtype == rtype::AXFR
            || q.qtype == rtype::IXFR
        {
            self.counters.refused += 1;
            return Outcome::Reply(self.negative(&q, rcode::REFUSED, None, limit));
        }
        match self.zone.lookup(&q.name) {
            Lookup::Elsewhere => self.forward(msg, &q, client, transport, limit, now_ms),
            lookup => Outcome::Reply(self.local(&q, lookup, limit)),
        }
    }

    /// Header and question of an answer to `q`.
    fn start(&self, q: &Query<'_>, rc: u16, authoritative: bool) -> Writer {
        let mut flags = flag::QR | q.flags & (flag::OPCODE_MASK | flag::RD | flag::CD) | rc;
        if authoritative {
            flags |= flag::AA;
        }
        if !self.config.upstreams.is_empty() {
            flags |= flag::RA;
        }
        let mut w = Writer::new(q.id, flags);
        w.bytes(q.question);
        w
    }

    /// Ends an answer: OPT if the query had one, counts, and truncation to `limit`.
    fn finish(&mut self, mut w: Writer, q: &Query<'_>, an: u16, ns: u16, limit: usize) -> Vec<u8> {
        let ar = match q.edns {
            Some(e) => {
                w.opt(self.config.max_udp, 0, e.dnssec_ok);
                1
            }
            None => 0,
        };
        w.set_counts(1, an, ns, ar);
        if w.len() <= limit {
            return w.buf;
        }
        self.counters.truncated += 1;
        let flags = u16::from_be_bytes([w.buf[2], w.buf[3]]) | flag::TC;
        let mut t = Writer::new(q.id, flags);
        t.bytes(q.question);
        if let Some(e) = q.edns {
            t.opt(self.config.max_udp, 0, e.dnssec_ok);
        }
        t.set_counts(1, 0, 0, ar);
        t.buf
    }

    /// An answer without records, with the zone's SOA when `soa_at` names where the zone
    /// starts in the question.
    fn negative(&mut self, q: &Query<'_>, rc: u16, soa_at: Option<usize>, limit: usize) -> Vec<u8> {
        let authoritative = rc != rcode::REFUSED;
        let mut w = self.start(q, rc, authoritative);
        let ns = match soa_at {
            Some(at) => {
                self.soa(&mut w, &q.name, at);
                1
            }
            None => 0,
        };
        self.finish(w, q, 0, ns, limit)
    }

    /// The SOA of the zone starting at label `zone_at` of the question name (which sits
    /// uncompressed at offset 12, so the zone's name is a pointer into it).
    fn soa(&self, w: &mut Writer, name: &Name, zone_at: usize) {
        let apex = HEADER_LEN + name.wire().len() - name.suffix(zone_at).len();
        w.pointer(apex);
        let at = w.record_head(rtype::SOA, class::IN, NEGATIVE_TTL);
        w.pointer(apex); // MNAME: the zone itself (no name server of its own)
        w.bytes(b"\x0ahostmaster");
        w.pointer(apex); // RNAME: hostmaster@zone
        w.u32(self.zone.serial());
        w.u32(3600); // refresh
        w.u32(600); // retry
        w.u32(86400); // expire
        w.u32(NEGATIVE_TTL); // minimum: the negative TTL
        w.end_rdata(at);
    }

    fn local(&mut self, q: &Query<'_>, lookup: Lookup, limit: usize) -> Vec<u8> {
        let wants = |t: u16| q.qtype == t || q.qtype == rtype::ANY;
        match lookup {
            Lookup::Host { addrs, .. } if wants(rtype::A) && !addrs.is_empty() => {
                self.counters.answers += 1;
                let mut w = self.start(q, rcode::NOERROR, true);
                for ip in &addrs {
                    w.pointer(HEADER_LEN);
                    let at = w.record_head(rtype::A, class::IN, LOCAL_TTL);
                    w.bytes(&ip.octets());
                    w.end_rdata(at);
                }
                self.finish(
                    w,
                    q,
                    addrs.len().min(usize::from(u16::MAX)) as u16,
                    0,
                    limit,
                )
            }
            Lookup::Host { zone_at, .. } => {
                self.counters.nodata += 1;
                self.negative(q, rcode::NOERROR, zone_at, limit)
            }
            Lookup::Apex if wants(rtype::SOA) => {
                self.counters.answers += 1;
                let mut w = self.start(q, rcode::NOERROR, true);
                self.soa(&mut w, &q.name, 0);
                self.finish(w, q, 1, 0, limit)
            }
            Lookup::Apex => {
                self.counters.nodata += 1;
                self.negative(q, rcode::NOERROR, Some(0), limit)
            }
            Lookup::Unknown { zone_at } => {
                self.counters.nxdomain += 1;
                self.negative(q, rcode::NXDOMAIN, Some(zone_at), limit)
            }
            Lookup::UnknownBare => {
                self.counters.nxdomain += 1;
                self.negative(q, rcode::NXDOMAIN, None, limit)
            }
            Lookup::Reverse {
                target: Some(target),
                ..
            } if wants(rtype::PTR) => {
                self.counters.answers += 1;
                let mut w = self.start(q, rcode::NOERROR, true);
                w.pointer(HEADER_LEN);
                let at = w.record_head(rtype::PTR, class::IN, LOCAL_TTL);
                w.name(&target);
                w.end_rdata(at);
                self.finish(w, q, 1, 0, limit)
            }
            Lookup::Reverse {
                target: Some(_),
                zone_at,
            } => {
                self.counters.nodata += 1;
                self.negative(q, rcode::NOERROR, Some(zone_at), limit)
            }
            Lookup::Reverse {
                target: None,
                zone_at,
            } => {
                self.counters.nxdomain += 1;
                self.negative(q, rcode::NXDOMAIN, Some(zone_at), limit)
            }
            Lookup::ReverseApex => {
                self.counters.nodata += 1;
                self.negative(q, rcode::NOERROR, None, limit)
            }
            Lookup::Elsewhere => {
                // Not reached: `query` forwards these.
                self.counters.refused += 1;
                self.negative(q, rcode::REFUSED, None, limit)
            }
        }
    }

    fn forward(
        &mut self,
        msg: &[u8],
        q: &Query<'_>,
        client: C,
        transport: Transport,
        limit: usize,
        now_ms: u64,
    ) -> Outcome {
        if self.config.upstreams.is_empty() || msg.len() > MAX_FORWARD_LEN {
            self.counters.refused += 1;
            return Outcome::Reply(self.negative(q, rcode::REFUSED, None, limit));
        }
        if self
            .pending
            .iter()
            .any(|p| p.client == client && p.client_id == q.id)
        {
            return self.drop(DropReason::Duplicate);
        }
        if self.pending.len() >= self.config.max_pending {
            return self.drop(DropReason::PendingFull);
        }
        // A fresh ID unused by any pending query (the table is far smaller than 2^16).
        let mut upstream_id = self.random_u16();
        while self.pending.iter().any(|p| p.upstream_id == upstream_id) {
            upstream_id = self.random_u16();
        }
        let mut query = msg.to_vec();
        query[..2].copy_from_slice(&upstream_id.to_be_bytes());
        if let Some(e) = q.edns {
            // Ask upstream for no more than this client can take from us.
            let size = limit.min(usize::from(self.config.max_udp)) as u16;
            query[e.size_at..e.size_at + 2].copy_from_slice(&size.max(512).to_be_bytes());
        }
        let upstream = self.config.upstreams[0];
        self.counters.forwarded += 1;
        self.pending.push(Pending {
            client,
            transport,
            client_id: q.id,
            upstream_id,
            query: query.clone(),
            upstream: 0,
            tries: 1,
            deadline_ms: now_ms.saturating_add(FORWARD_TIMEOUT_MS),
            limit,
        });
        Outcome::Forward { upstream, query }
    }

    /// An answer from `from` (port 53) to a forwarded query: the client's answer, or
    /// `None` (counted) if it answers nothing we asked.
    pub fn upstream_answer(&mut self, msg: &[u8], from: Ipv4Addr) -> Option<Event<C>> {
        let h = match Header::new_checked(msg) {
            Ok(h) if h.is_response() => h,
            _ => {
                self.drop(DropReason::UpstreamMalformed);
                return None;
            }
        };
        let Some(i) = self.pending.iter().position(|p| {
            p.upstream_id == h.id() && self.config.upstreams.get(p.upstream) == Some(&from)
        }) else {
            self.drop(DropReason::UpstreamUnknown);
            return None;
        };
        let asked = wire::question_key(&self.pending[i].query);
        let got = wire::question_key(msg);
        let same = match (asked, got) {
            (Some((an, at, ac)), Some((gn, gt, gc))) => {
                wire::names_equal(&an, &gn) && at == gt && ac == gc
            }
            _ => false,
        };
        if !same {
            // The query stays pending: a forged answer must not cancel the real one.
            self.drop(DropReason::UpstreamMismatch);
            return None;
        }
        let p = self.pending.swap_remove(i);
        self.counters.forward_answers += 1;
        let mut payload = msg.to_vec();
        payload[..2].copy_from_slice(&p.client_id.to_be_bytes());
        if payload.len() > p.limit {
            payload = self.truncate_relayed(&payload, &p);
        }
        Some(Event::Reply {
            client: p.client,
            transport: p.transport,
            payload,
        })
    }

    /// An upstream answer too big for the client: header with TC, the question, and
    /// the client's OPT if it sent one.
    fn truncate_relayed(&mut self, answer: &[u8], p: &Pending<C>) -> Vec<u8> {
        self.counters.truncated += 1;
        let flags = u16::from_be_bytes([answer[2], answer[3]]) | flag::TC;
        let mut w = Writer::new(p.client_id, flags);
        let mut ar = 0;
        if let Ok(q) = wire::parse_query(&p.query) {
            w.bytes(q.question);
            if let Some(e) = q.edns {
                w.opt(self.config.max_udp, 0, e.dnssec_ok);
                ar = 1;
            }
        }
        w.set_counts(1, 0, 0, ar);
        w.buf
    }

    /// Retries or fails the forwarded queries whose time is up, at `now_ms`.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<Event<C>>) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline_ms > now_ms {
                i += 1;
                continue;
            }
            let upstreams = self.config.upstreams.len();
            if self.pending[i].tries < upstreams {
                let upstream_id = self.random_u16();
                let p = &mut self.pending[i];
                p.upstream = (p.upstream + 1) % upstreams;
                p.tries += 1;
                p.deadline_ms = now_ms.saturating_add(FORWARD_TIMEOUT_MS);
                // A new ID: a late answer from the previous upstream is then unknown.
                p.upstream_id = upstream_id;
                p.query[..2].copy_from_slice(&upstream_id.to_be_bytes());
                let (upstream, query) = (self.config.upstreams[p.upstream], p.query.clone());
                self.counters.forward_retries += 1;
                out.push(Event::Forward { upstream, query });
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.counters.forward_timeouts += 1;
            self.counters.servfail += 1;
            let payload = match wire::parse_query(&p.query) {
                Ok(mut q) => {
                    q.id = p.client_id;
                    let w = self.start(&q, rcode::SERVFAIL, false);
                    self.finish(w, &q, 0, 0, p.limit)
                }
                Err(_) => bare_reply(p.client_id, flag::QR | rcode::SERVFAIL),
            };
            out.push(Event::Reply {
                client: p.client,
                transport: p.transport,
                payload,
            });
        }
    }

    /// When [`Server::poll`] has work next (ms), if ever.
    pub fn poll_at(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.deadline_ms).min()
    }

    /// Forgets pending queries of clients that `gone` says went away (a closed TCP
    /// connection); their upstream answers will then count as unknown.
    pub fn forget(&mut self, gone: impl Fn(&C) -> bool) {
        self.pending.retain(|p| !gone(&p.client));
    }
}

/// A header-only answer (FORMERR, NOTIMP): no question is echoed, since it could not be
/// read or is not understood.
fn bare_reply(id: u16, flags: u16) -> Vec<u8> {
    Writer::new(id, flags).buf
}
