//! One fuzz input through the metadata engine's HTTP path: connections from several
//! sources take arbitrary bytes in arbitrary chunks, clients read their answers at their
//! own pace, peers close or reset, the clock runs, instances change live and the manager
//! asks for passwords. Checks what must always hold: every answer is a well-formed
//! HTTP/1.1 response whose Content-Length matches its body, one per request, in order;
//! a caller that is no instance (by address *and* MAC) gets nothing but the fixed error
//! answers; an instance never gets another instance's data; buffers, queues and deadlines
//! stay bounded. Shared by the cargo-fuzz target (`fuzz_targets/metadata_http.rs`) and the
//! stable test in `appliances/metadata/src/tests.rs`, which both include this file with
//! `#[path]` and name the engine crate `metadata` in the including module (`use
//! nanovnf_metadata as metadata;`, or `use crate as metadata;` inside the crate).
//!
//! Input layout (every byte string is a valid input; what is missing reads as zero):
//!
//! ```text
//! header   1 byte: bit 0: instance 2 has user data; bit 1: instance 1 boots with a
//!          restored password (and two passwords that must be ignored)
//! records  until the end, each a 5-byte head and a body of `len` bytes (fewer if the
//!          input ends first): [op, dt, sel, len_hi, len_lo] body
//!          slot = sel % 8 (at most 8 connections at once)
//!          op % 6: 0  `body` arrives on the slot's connection, opened from source
//!                     sel / 8 (SOURCES) if the slot is free
//!                  1  the slot's client reads up to 64 << (sel / 8 % 11) bytes
//!                  2  the slot's peer sends its FIN (sel bit 3 clear) or resets
//!                  3  a live change of instance K = 1 + (sel / 4) % 3: sel % 4 = 0 upsert
//!                     at its own address, 1 move to 192.168.1.50, 2 upsert with its
//!                     other UUID, 3 remove; `body` (dashes made underscores) follows
//!                     its user data marker
//!                  4  the manager asks for the passwords set after serial sel % 8
//!                  5  nothing but the time step
//!          dt: the clock moves dt * 200 ms before the record
//! ```

extern crate alloc;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::metadata::engine::{
    Conn, Engine, Event, IDLE_TIMEOUT_NS, INPUT_LIMIT, OUTPUT_HIGH_WATER, Peer, REQUEST_TIMEOUT_NS,
    SEND_TIMEOUT_NS, SourceMac,
};
use super::metadata::http::{self, Method, Status};
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::control::Op;
use nanovnf_schema::metadata::{
    InstancePassword, MAX_PASSWORD, MAX_PASSWORDS_PER_PAGE, MAX_USER_DATA, MetadataInstance,
    MetadataRole, MetadataSubnet,
};

pub const OP_DATA: u8 = 0;
pub const OP_READ: u8 = 1;
pub const OP_CLOSE: u8 = 2;
pub const OP_LIVE: u8 = 3;
pub const OP_PASSWORDS: u8 = 4;
pub const OP_IDLE: u8 = 5;

/// Connections open at once: the harness's cap (the appliance's is its socket pool).
pub const SLOTS: usize = 8;

/// Where the live change "move" puts an instance.
pub const MOVED_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);

/// The largest answer: user data (a record body is at most 64 KiB − 1 plus its marker)
/// and a head; `meta_data.json` and listings are far smaller.
const MAX_RESPONSE: usize = MAX_USER_DATA + 1024;

/// The MAC of instance `k`.
pub fn mac(k: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, k]
}

/// The address instance `k` has until it moves.
pub fn home_ip(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 10 + k)
}

/// What the connections of a source look like to the engine (selector `sel / 8`).
pub fn source(sel: u8) -> Peer {
    let (ip, mac) = match (sel / 8) % 8 {
        0 => (home_ip(1), SourceMac::Seen(mac(1))),
        1 => (home_ip(2), SourceMac::Seen(mac(2))),
        2 => (home_ip(3), SourceMac::Seen(mac(3))),
        3 => (home_ip(1), SourceMac::Seen(mac(2))),
        4 => (home_ip(1), SourceMac::Unseen),
        5 => (home_ip(2), SourceMac::Changed),
        6 => (Ipv4Addr::new(192, 168, 1, 99), SourceMac::Seen(mac(1))),
        _ => (MOVED_IP, SourceMac::Seen(mac(1))),
    };
    Peer {
        ip,
        port: 40000 + u16::from(sel),
        mac,
    }
}

/// Text only instance `k` may be answered: in its UUID, hostname, name and user data.
/// The dash keeps it out of base64 (`random_seed`) and out of fuzzed user data.
fn marker(k: u8) -> String {
    format!("inst-{k}-")
}

/// Instance `k` with UUID variant `v` (0 or 1) at `ip`; `extra` follows its user data
/// marker (`None`: no user data).
pub fn instance(k: u8, v: u8, ip: Ipv4Addr, extra: Option<&[u8]>) -> MetadataInstance {
    let m = marker(k);
    MetadataInstance {
        mac: mac(k),
        ip,
        port_id: format!("port-{m}"),
        uuid: format!("uuid-{m}{v}"),
        name: format!("server-{m}"),
        hostname: format!("host-{m}"),
        domain: "nanovnf.test".into(),
        availability_zone: "nova".into(),
        project_id: "proj".into(),
        launch_index: 0,
        public_keys: alloc::vec![("key".into(), format!("ssh-ed25519 AAAA {m}"))],
        meta: alloc::vec![("role".into(), m.clone())],
        user_data: extra.map(|e| {
            let mut ud = format!("#user-data {m}\n").into_bytes();
            ud.extend(e.iter().map(|&b| if b == b'-' { b'_' } else { b }));
            ud.truncate(MAX_USER_DATA);
            ud
        }),
        floating_ip: Some(Ipv4Addr::new(203, 0, 113, k)),
        mtu: 1450,
    }
}

/// The role every run starts from: instances 1 and 2 (3 only arrives live).
pub fn role(h0: u8) -> MetadataRole {
    let passwords = if h0 & 2 != 0 {
        alloc::vec![
            InstancePassword {
                mac: mac(1),
                uuid: instance(1, 0, home_ip(1), None).uuid,
                password: b"restored-pw".to_vec(),
            },
            // Another instance's UUID on MAC 2, and a MAC nobody has: both ignored.
            InstancePassword {
                mac: mac(2),
                uuid: instance(1, 0, home_ip(1), None).uuid,
                password: b"wrong-uuid".to_vec(),
            },
            InstancePassword {
                mac: mac(9),
                uuid: "nobody".into(),
                password: b"nobody".to_vec(),
            },
        ]
    } else {
        Vec::new()
    };
    MetadataRole {
        network_id: "net-1".into(),
        subnets: alloc::vec![MetadataSubnet {
            id: "subnet-1".into(),
            cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
            gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            dns_servers: alloc::vec![Ipv4Addr::new(192, 168, 1, 2)],
            host_routes: Vec::new(),
        }],
        instances: alloc::vec![
            instance(1, 0, home_ip(1), Some(b"one")),
            instance(2, 0, home_ip(2), (h0 & 1 != 0).then_some(&b"two"[..])),
        ],
        passwords,
    }
}

/// Builds an input from a header and records `(op, dt, sel, body)`.
pub fn encode(h0: u8, records: &[(u8, u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = alloc::vec![h0];
    for &(op, dt, sel, body) in records {
        let len = body.len().min(usize::from(u16::MAX)) as u16;
        out.extend_from_slice(&[op, dt, sel]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(len)]);
    }
    out
}

#[path = "reader.rs"]
mod reader;
use reader::Reader;

/// What the answer to one request must look like.
#[derive(Debug, Clone, Copy)]
struct Expect {
    head_only: bool,
    keep_alive: bool,
    /// The request did not parse: 400, 413 or 431, then the connection closes.
    refused: bool,
    /// A password path: its body is the instance's own (anything it posted).
    password: bool,
}

/// One open connection and everything its client knows.
struct Slot {
    conn: Conn,
    /// Bytes the peer sent that the engine has not taken yet (its TCP window).
    pending: Vec<u8>,
    fin: bool,
    /// Bytes the engine took and the client-side framing has not split into requests.
    taken: Vec<u8>,
    /// The engine stops reading after a refused or final request: so does the framing.
    stopped: bool,
    expect: VecDeque<Expect>,
    /// Received and not yet parsed; `rx_at` is its offset in the answer stream.
    rx: Vec<u8>,
    rx_at: u64,
    /// Bytes produced so far (received + queued) and, per engine call that produced
    /// some, where they end and which instance the peer was then (`None`: none).
    produced: VecDeque<(u64, Option<u8>)>,
}

struct Run {
    engine: Engine,
    now: u64,
    slots: [Option<Slot>; SLOTS],
    /// The instances as the engine holds them, by index.
    model: BTreeMap<u8, MetadataInstance>,
    connects: u64,
    responses: u64,
}

/// The fixed body of an error answer.
fn error_body(status: Status) -> String {
    format!(
        "{} {}\n\n{}\n\n   ",
        status.code(),
        status.reason(),
        status.explanation()
    )
}

impl Run {
    /// The instance `peer` is to the engine now.
    fn identity(&self, peer: Peer) -> Option<u8> {
        self.model
            .iter()
            .find(|(_, i)| i.ip == peer.ip && peer.mac == SourceMac::Seen(i.mac))
            .map(|(&k, _)| k)
    }

    /// Notes what the last engine call on slot `i` produced, and for whom.
    fn produced(&mut self, i: usize) {
        let Some(slot) = &self.slots[i] else { return };
        let who = self.identity(slot.conn.peer());
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        let end = slot.rx_at + slot.rx.len() as u64 + slot.conn.queued() as u64;
        let last = slot.produced.back().map_or(0, |p| p.0);
        assert!(end >= last, "output shrank without being read");
        if end > last {
            slot.produced.push_back((end, who));
        }
    }

    /// Opens slot `i` from source `sel` if it is free.
    fn open(&mut self, i: usize, sel: u8) {
        if self.slots[i].is_none() {
            self.connects += 1;
            self.slots[i] = Some(Slot {
                conn: self.engine.connect(source(sel), self.now),
                pending: Vec::new(),
                fin: false,
                taken: Vec::new(),
                stopped: false,
                expect: VecDeque::new(),
                rx: Vec::new(),
                rx_at: 0,
                produced: VecDeque::new(),
            });
        }
    }

    /// What the appliance's service does for a socket on each poll, with the client
    /// reading at most `budget` bytes: bytes in while the connection takes them, FIN once
    /// they are all in, answers out, close when finished, abort when expired.
    fn serve(&mut self, i: usize, mut budget: usize) {
        let now = self.now;
        loop {
            let Some(slot) = &mut self.slots[i] else {
                return;
            };
            if slot.pending.is_empty() || slot.conn.room() == 0 {
                break;
            }
            let room = slot.conn.room();
            let n = self.engine.feed(&mut slot.conn, &slot.pending, now);
            assert!(n <= room && n <= slot.pending.len(), "took {n} of {room}");
            slot.taken.extend(slot.pending.drain(..n));
            self.produced(i);
            if n == 0 {
                break;
            }
        }
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        if slot.fin && slot.pending.is_empty() {
            slot.conn.peer_closed();
        }
        loop {
            let Some(slot) = &mut self.slots[i] else {
                return;
            };
            self.engine.drive(&mut slot.conn, now);
            self.produced(i);
            let Some(slot) = &mut self.slots[i] else {
                return;
            };
            let Some(out) = slot.conn.output() else { break };
            let n = out.len().min(budget);
            if n == 0 {
                break;
            }
            slot.rx.extend_from_slice(&out[..n]);
            slot.conn.advance(n, now);
            budget -= n;
        }
        self.check_answers(i);
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        if slot.conn.finished() {
            assert!(slot.rx.is_empty(), "closed inside an answer");
            self.slots[i] = None;
        } else if self.engine.expired(&slot.conn, now) {
            self.drop_slot(i);
        }
    }

    /// The connection of slot `i` is aborted: what was queued is counted, not sent.
    fn drop_slot(&mut self, i: usize) {
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        while let Some(out) = slot.conn.output() {
            let n = out.len();
            slot.rx.extend_from_slice(out);
            slot.conn.advance(n, self.now);
        }
        self.check_answers(i);
        if let Some(slot) = &self.slots[i] {
            assert!(slot.rx.is_empty(), "a partial answer was queued");
        }
        self.slots[i] = None;
    }

    /// Splits what the engine took on slot `i` into requests, as the engine did.
    fn frame(slot: &mut Slot) {
        while !slot.stopped {
            let (expect, total) = match http::parse_head(&slot.taken) {
                Ok(None) => return,
                Err(_) => {
                    let e = Expect {
                        head_only: false,
                        keep_alive: false,
                        refused: true,
                        password: false,
                    };
                    (e, slot.taken.len())
                }
                Ok(Some(h)) => {
                    let total = h.head_len + h.content_length;
                    if slot.taken.len() < total {
                        return;
                    }
                    let path = http::target_path(h.target);
                    let tokens = http::path_tokens(&path);
                    let e = Expect {
                        head_only: h.method == Method::Head,
                        keep_alive: h.keep_alive,
                        refused: false,
                        password: tokens.last() == Some(&&b"password"[..]),
                    };
                    (e, total)
                }
            };
            slot.taken.drain(..total);
            slot.stopped = expect.refused || !expect.keep_alive;
            slot.expect.push_back(expect);
        }
    }

    /// Parses and checks every whole answer slot `i` received.
    fn check_answers(&mut self, i: usize) {
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        Self::frame(slot);
        loop {
            let Some(end) = slot.rx.windows(4).position(|w| w == b"\r\n\r\n") else {
                assert!(
                    slot.rx.len() < 1024,
                    "no end of head in {} bytes",
                    slot.rx.len()
                );
                return;
            };
            let head = core::str::from_utf8(&slot.rx[..end]).expect("an ASCII head");
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let (code, reason) = status_line
                .strip_prefix("HTTP/1.1 ")
                .and_then(|r| r.split_once(' '))
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let status = Status::ALL
                .into_iter()
                .find(|s| format!("{}", s.code()) == code)
                .unwrap_or_else(|| panic!("unknown status {code}"));
            assert_eq!(reason, status.reason());
            let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
            for line in lines {
                let (name, value) = line
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad header line {line:?}"));
                assert!(
                    ["Content-Type", "Content-Length", "Allow", "Connection"].contains(&name),
                    "unexpected header {name}"
                );
                assert!(fields.insert(name, value).is_none(), "{name} twice");
            }
            let length: usize = fields
                .get("Content-Length")
                .and_then(|v| v.parse().ok())
                .expect("a numeric Content-Length");
            assert!(length <= MAX_RESPONSE);
            assert!(matches!(
                fields.get("Content-Type"),
                Some(&"text/plain; charset=UTF-8" | &"application/json")
            ));
            assert_eq!(
                fields.contains_key("Allow"),
                status == Status::MethodNotAllowed
            );
            let expect = *slot
                .expect
                .front()
                .unwrap_or_else(|| panic!("an answer ({code}) to no request"));
            let body_len = if expect.head_only { 0 } else { length };
            let total = end + 4 + body_len;
            if slot.rx.len() < total {
                return; // the body is still on its way
            }
            slot.expect.pop_front();
            assert_eq!(
                fields.get("Connection") == Some(&"close"),
                !expect.keep_alive
            );
            if let Some(v) = fields.get("Connection") {
                assert_eq!(*v, "close");
            }
            let body = &slot.rx[end + 4..total];
            if status != Status::Ok && !expect.head_only {
                assert_eq!(body, error_body(status).as_bytes(), "{code}'s body");
            }
            if expect.refused {
                assert!(matches!(
                    status,
                    Status::BadRequest | Status::PayloadTooLarge | Status::HeaderFieldsTooLarge
                ));
            }
            // Who the peer was when the engine wrote this answer.
            while slot.produced.front().is_some_and(|p| p.0 <= slot.rx_at) {
                slot.produced.pop_front();
            }
            let who = slot
                .produced
                .front()
                .map(|p| p.1)
                .expect("the answer was produced by some call");
            match who {
                None => assert!(
                    expect.refused || status == Status::NotFound,
                    "{code} to a caller that is no instance"
                ),
                Some(k) if !expect.password => {
                    for other in (1..=3).filter(|&j| j != k) {
                        let m = marker(other);
                        assert!(
                            !body.windows(m.len()).any(|w| w == m.as_bytes()),
                            "instance {k} got instance {other}'s data"
                        );
                    }
                }
                Some(_) => assert!(body.len() <= MAX_PASSWORD),
            }
            slot.rx.drain(..total);
            slot.rx_at += total as u64;
            self.responses += 1;
        }
    }

    /// Bounds that must hold for every open connection after every step.
    fn check_bounds(&self) {
        for slot in self.slots.iter().flatten() {
            assert!(slot.conn.buffered() <= INPUT_LIMIT);
            assert!(
                slot.conn.queued() <= OUTPUT_HIGH_WATER + MAX_RESPONSE,
                "{} bytes queued",
                slot.conn.queued()
            );
            let longest = IDLE_TIMEOUT_NS.max(REQUEST_TIMEOUT_NS).max(SEND_TIMEOUT_NS);
            assert!(
                slot.conn.deadline() <= self.now + longest,
                "a deadline too far"
            );
        }
        assert!(self.engine.len() <= 3);
    }

    fn live(&mut self, sel: u8, body: &[u8]) {
        let k = 1 + (sel / 4) % 3;
        let current = self.model.get(&k);
        let ip = current.map_or(home_ip(k), |i| i.ip);
        let variant = current.map_or(0, |i| u8::from(i.uuid.ends_with('0')));
        let extra = (!body.is_empty()).then_some(body);
        let op = match sel % 4 {
            0 => {
                let keep = current.map_or(0, |i| u8::from(i.uuid.ends_with('1')));
                Op::MetadataUpsert(alloc::boxed::Box::new(instance(k, keep, home_ip(k), extra)))
            }
            1 => {
                let keep = current.map_or(0, |i| u8::from(i.uuid.ends_with('1')));
                Op::MetadataUpsert(alloc::boxed::Box::new(instance(k, keep, MOVED_IP, extra)))
            }
            2 => Op::MetadataUpsert(alloc::boxed::Box::new(instance(k, variant, ip, extra))),
            _ => Op::MetadataRemove { mac: mac(k) },
        };
        let before = self
            .engine
            .instance(mac(k))
            .map(|e| (e.inst.uuid.clone(), e.password.clone(), e.password_serial));
        match (self.engine.apply(&op), op) {
            (Ok(()), Op::MetadataUpsert(inst)) => {
                let entry = self.engine.instance(mac(k)).expect("upserted");
                // A password stays with its instance (same UUID), and only with it.
                match before {
                    Some((uuid, pw, serial)) if uuid == inst.uuid => {
                        assert_eq!((&entry.password, entry.password_serial), (&pw, serial));
                    }
                    _ => assert!(entry.password.is_none() && entry.password_serial == 0),
                }
                self.model.insert(k, *inst);
            }
            (Ok(()), _) => {
                assert!(self.engine.instance(mac(k)).is_none());
                self.model.remove(&k);
            }
            (Err(_), Op::MetadataUpsert(inst)) => {
                // Only a move onto an address another instance holds is refused.
                let by = self.model.values().find(|i| i.ip == inst.ip);
                assert!(by.is_some_and(|i| i.mac != inst.mac), "refused {inst:?}");
            }
            (Err(e), op) => panic!("{op:?} refused: {e:?}"),
        }
    }

    fn passwords(&mut self, since: u64) {
        let page = self.engine.passwords(since);
        assert!(page.passwords.len() <= MAX_PASSWORDS_PER_PAGE);
        assert!(page.upto >= since);
        assert!(!page.more || page.passwords.len() == MAX_PASSWORDS_PER_PAGE);
        for p in &page.passwords {
            let entry = self
                .engine
                .instance(p.mac)
                .expect("a password of an instance");
            assert_eq!(entry.inst.uuid, p.uuid);
            assert_eq!(entry.password.as_deref(), Some(&p.password[..]));
            assert!(!p.password.is_empty() && p.password.len() <= MAX_PASSWORD);
            assert!(entry.password_serial > since && entry.password_serial <= page.upto);
        }
        // Oldest first, and nothing newer than `upto` is left out of a last page.
        let serials: Vec<u64> = page
            .passwords
            .iter()
            .map(|p| self.engine.instance(p.mac).map_or(0, |e| e.password_serial))
            .collect();
        assert!(serials.windows(2).all(|w| w[0] < w[1]));
    }
}

/// Runs `data` through a fresh engine, panicking if an invariant breaks; returns the
/// engine at the end (all connections drained and closed).
pub fn run(data: &[u8]) -> Engine {
    let mut r = Reader { data };
    let h0 = r.byte();
    let role = role(h0);
    let mut run = Run {
        engine: Engine::new(role.clone(), 7).expect("a valid role"),
        now: 1_000_000_000,
        slots: Default::default(),
        model: role.instances.into_iter().map(|i| (i.mac[5], i)).collect(),
        connects: 0,
        responses: 0,
    };
    if h0 & 2 != 0 {
        assert_eq!(run.engine.events(Event::PasswordsRestored), 1);
        let restored = run.engine.instance(mac(1)).expect("instance 1");
        assert_eq!(restored.password.as_deref(), Some(&b"restored-pw"[..]));
        assert!(
            run.engine
                .instance(mac(2))
                .is_some_and(|e| e.password.is_none())
        );
    }

    while !r.data.is_empty() {
        let (op, dt, sel) = (r.byte(), r.byte(), r.byte());
        let len = usize::from(u16::from_be_bytes([r.byte(), r.byte()]));
        let body = r.bytes(len);
        run.now += u64::from(dt) * 200_000_000;
        let i = usize::from(sel) % SLOTS;
        match op % 6 {
            OP_DATA => {
                run.open(i, sel);
                if let Some(slot) = &mut run.slots[i]
                    && !slot.fin
                {
                    slot.pending.extend_from_slice(body);
                }
                run.serve(i, 0);
            }
            OP_READ => run.serve(i, 64 << ((sel / 8) % 11)),
            OP_CLOSE => {
                if sel & 8 == 0 {
                    if let Some(slot) = &mut run.slots[i] {
                        slot.fin = true;
                    }
                    run.serve(i, 0);
                } else {
                    run.drop_slot(i);
                }
            }
            OP_LIVE => run.live(sel, body),
            OP_PASSWORDS => run.passwords(u64::from(sel % 8)),
            _ => {}
        }
        // Every other socket is polled too (deadlines, answers that found room).
        for j in 0..SLOTS {
            run.serve(j, 0);
        }
        run.check_bounds();
    }

    // The clients read everything; every request they sent is answered.
    for i in 0..SLOTS {
        // Bytes still in a window go in as answers make room.
        let mut left = usize::MAX;
        while let Some(slot) = &run.slots[i] {
            let now_left = slot.pending.len();
            if now_left >= left {
                break;
            }
            left = now_left;
            run.serve(i, usize::MAX);
        }
        if let Some(slot) = &run.slots[i] {
            assert!(slot.conn.output().is_none());
            assert!(slot.expect.is_empty(), "requests left unanswered");
            assert!(slot.rx.is_empty(), "a partial answer");
        }
        run.drop_slot(i);
    }
    let e = &run.engine;
    let statuses: u64 = Status::ALL.iter().map(|&s| e.statuses(s)).sum();
    assert_eq!(statuses, run.responses, "every answer counted once");
    let refused =
        e.events(Event::Malformed) + e.events(Event::HeadTooLarge) + e.events(Event::BodyTooLarge);
    assert_eq!(statuses, e.events(Event::Requests) + refused);
    assert_eq!(e.events(Event::Connections), run.connects);
    run.passwords(0);
    run.engine
}
