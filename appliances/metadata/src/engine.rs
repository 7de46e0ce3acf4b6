//! The metadata service proper, sans IO: instances known by MAC and address, and HTTP
//! connections that take bytes and the time and give back bytes to send. Each request is
//! answered only if its connection's source address *and* source MAC are those of one
//! instance; anything else gets a 404 that says nothing. Everything is bounded: the
//! instance table, a connection's input (one request head and body), its queued output
//! (one response at a time beyond a small high-water mark) and its time. Passwords the
//! instances set are numbered, so the manager can fetch the new ones and give them back
//! at the next boot.

use crate::http::{self, HttpError, MAX_BODY, MAX_HEAD, Method, Status};
use crate::tree::{self, Entry, Network, Resource, Rng};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use nanovnf_schema::control::{Counter, Op};
use nanovnf_schema::metadata::{
    InstancePassword, MAX_INSTANCES, MAX_PASSWORD, MAX_PASSWORDS_PER_PAGE, MAX_USER_DATA,
    MetadataInstance, MetadataRole, MetadataSubnet, PasswordPage,
};

const SECOND_NS: u64 = 1_000_000_000;

/// A request must arrive whole within this time of its first byte (slow clients).
pub const REQUEST_TIMEOUT_NS: u64 = 10 * SECOND_NS;
/// An idle keep-alive connection is closed after this (haproxy's `http-keep-alive` in
/// Neutron's configuration is 30 s).
pub const IDLE_TIMEOUT_NS: u64 = 30 * SECOND_NS;
/// A response must make progress within this time (a client that stopped reading).
pub const SEND_TIMEOUT_NS: u64 = 10 * SECOND_NS;

/// Bytes a connection buffers: one head (after at most [`MAX_LEADING_EMPTY`] bytes of
/// empty lines) and one body; the rest waits in the TCP window.
pub const INPUT_LIMIT: usize = MAX_HEAD + http::MAX_LEADING_EMPTY + MAX_BODY;
/// Pipelined requests wait while this many bytes of answers are queued.
pub const OUTPUT_HIGH_WATER: usize = 16 * 1024;

/// What the network layer saw of a connection's source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMac {
    /// Every segment of the connection came from this MAC.
    Seen([u8; 6]),
    /// The connection was not tracked (its SYN never passed the tracker).
    Unseen,
    /// Segments of the connection came from more than one MAC.
    Changed,
}

/// The other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub mac: SourceMac,
}

/// Every event the service counts, by stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connections,
    Requests,
    /// 404 to a source address that is no instance's.
    UnknownAddress,
    /// 404 to an instance's address from another MAC.
    MacMismatch,
    /// 404 to a connection whose MAC the tracker did not see.
    MacUnseen,
    /// 404 to a connection whose segments came from more than one MAC.
    MacChanged,
    /// 404 to a known caller for a path that does not exist.
    NoSuchPath,
    Malformed,
    HeadTooLarge,
    BodyTooLarge,
    MethodNotAllowed,
    PasswordConflict,
    PasswordsSet,
    /// Passwords taken from the boot configuration (set before a restart).
    PasswordsRestored,
    TimeoutRequest,
    TimeoutIdle,
    TimeoutSend,
}

impl Event {
    pub const ALL: [Event; 17] = [
        Event::Connections,
        Event::Requests,
        Event::UnknownAddress,
        Event::MacMismatch,
        Event::MacUnseen,
        Event::MacChanged,
        Event::NoSuchPath,
        Event::Malformed,
        Event::HeadTooLarge,
        Event::BodyTooLarge,
        Event::MethodNotAllowed,
        Event::PasswordConflict,
        Event::PasswordsSet,
        Event::PasswordsRestored,
        Event::TimeoutRequest,
        Event::TimeoutIdle,
        Event::TimeoutSend,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Event::Connections => "connections",
            Event::Requests => "requests",
            Event::UnknownAddress => "refused_unknown_address",
            Event::MacMismatch => "refused_mac_mismatch",
            Event::MacUnseen => "refused_mac_unseen",
            Event::MacChanged => "refused_mac_changed",
            Event::NoSuchPath => "not_found_path",
            Event::Malformed => "bad_request_malformed",
            Event::HeadTooLarge => "bad_request_head_too_large",
            Event::BodyTooLarge => "bad_request_body_too_large",
            Event::MethodNotAllowed => "method_not_allowed",
            Event::PasswordConflict => "password_conflict",
            Event::PasswordsSet => "passwords_set",
            Event::PasswordsRestored => "passwords_restored",
            Event::TimeoutRequest => "timeout_request",
            Event::TimeoutIdle => "timeout_idle",
            Event::TimeoutSend => "timeout_send",
        }
    }
}

/// Why a configuration or a live change was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// [`MAX_INSTANCES`] instances are served already.
    TableFull,
    /// Another MAC has this address.
    AddressInUse { ip: Ipv4Addr, by: [u8; 6] },
    /// User data beyond [`MAX_USER_DATA`].
    UserDataTooLarge { len: usize },
    /// The request is not for a metadata appliance.
    NotMetadata,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::TableFull => {
                write!(f, "the instance table is full ({MAX_INSTANCES} instances)")
            }
            ServiceError::AddressInUse { ip, by } => write!(
                f,
                "{ip} belongs to {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                by[0], by[1], by[2], by[3], by[4], by[5]
            ),
            ServiceError::UserDataTooLarge { len } => {
                write!(f, "user data of {len} bytes (max {MAX_USER_DATA})")
            }
            ServiceError::NotMetadata => {
                write!(f, "not an operation a metadata appliance performs")
            }
        }
    }
}

/// Queued output: bytes of our own, or a reference to shared user data.
#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// One HTTP connection's state.
#[derive(Debug)]
pub struct Conn {
    peer: Peer,
    input: Vec<u8>,
    out: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    sent: usize,
    /// Bytes queued, all chunks.
    queued: usize,
    /// Close once the output is drained; take no more requests.
    closing: bool,
    /// The peer sent its FIN: answer what is complete, then close.
    peer_done: bool,
    /// When the first byte of the pending request arrived.
    request_started: Option<u64>,
    /// The last time bytes came in, went out or a response was queued.
    last_activity: u64,
    /// Requests taken from this connection so far.
    requests: u32,
}

impl Conn {
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The next bytes to send, if any.
    pub fn output(&self) -> Option<&[u8]> {
        self.out.front().map(|c| &c.bytes()[self.sent..])
    }

    /// `n` bytes of [`Conn::output`] were sent.
    pub fn advance(&mut self, n: usize, now_ns: u64) {
        if n == 0 {
            return;
        }
        self.last_activity = now_ns;
        self.queued = self.queued.saturating_sub(n);
        self.sent += n;
        while let Some(front) = self.out.front() {
            if self.sent < front.bytes().len() {
                break;
            }
            self.sent -= front.bytes().len();
            self.out.pop_front();
        }
    }

    /// Bytes of input held: a request not answered yet, at most [`INPUT_LIMIT`].
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Bytes of answers queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Bytes the connection would take now (0 while it waits for its output to drain or
    /// is closing).
    pub fn room(&self) -> usize {
        if self.closing || self.peer_done {
            return 0;
        }
        INPUT_LIMIT.saturating_sub(self.input.len())
    }

    /// True when the connection should be closed now: it decided to, and all is sent.
    pub fn finished(&self) -> bool {
        (self.closing || self.peer_done) && self.out.is_empty()
    }

    /// A keep-alive connection between requests (one answered, nothing pending, nothing to
    /// send): may be closed to free its socket. A connection that has not sent its first
    /// request yet is not idle: closing it would leave its client an empty reply.
    pub fn is_idle(&self) -> bool {
        self.requests > 0 && self.input.is_empty() && self.out.is_empty()
    }

    /// The peer will send no more: answer what is complete, then close.
    pub fn peer_closed(&mut self) {
        self.peer_done = true;
    }

    /// When the connection expires unless something happens.
    pub fn deadline(&self) -> u64 {
        if !self.out.is_empty() {
            self.last_activity.saturating_add(SEND_TIMEOUT_NS)
        } else if let Some(start) = self.request_started {
            start.saturating_add(REQUEST_TIMEOUT_NS)
        } else {
            self.last_activity.saturating_add(IDLE_TIMEOUT_NS)
        }
    }
}

/// The metadata service for one network.
pub struct Engine {
    network_id: String,
    subnets: Vec<MetadataSubnet>,
    instances: BTreeMap<[u8; 6], Entry>,
    by_ip: BTreeMap<Ipv4Addr, [u8; 6]>,
    rng: Rng,
    /// Passwords set since boot, restored ones included: the serial of the latest.
    password_serial: u64,
    events: [u64; Event::ALL.len()],
    statuses: [u64; Status::ALL.len()],
}

impl Engine {
    /// Serves `role`; `seed` seeds `random_seed` (the image passes its clock). A password
    /// of `role.passwords` is restored when its MAC and UUID name an instance and it is
    /// one an instance could have set (1 to [`MAX_PASSWORD`] bytes); others are ignored.
    pub fn new(role: MetadataRole, seed: u64) -> Result<Self, ServiceError> {
        let MetadataRole {
            network_id,
            subnets,
            instances,
            passwords,
        } = role;
        let mut engine = Engine {
            network_id,
            subnets,
            instances: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            rng: Rng::new(seed),
            password_serial: 0,
            events: [0; Event::ALL.len()],
            statuses: [0; Status::ALL.len()],
        };
        for inst in instances {
            engine.upsert(inst)?;
        }
        for p in passwords {
            let Some(entry) = engine.instances.get_mut(&p.mac) else {
                continue;
            };
            if entry.inst.uuid != p.uuid
                || entry.password.is_some()
                || p.password.is_empty()
                || p.password.len() > MAX_PASSWORD
            {
                continue;
            }
            engine.password_serial += 1;
            entry.password = Some(p.password);
            entry.password_serial = engine.password_serial;
            engine.events[Event::PasswordsRestored as usize] += 1;
        }
        Ok(engine)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn instance(&self, mac: [u8; 6]) -> Option<&Entry> {
        self.instances.get(&mac)
    }

    /// Applies a live change. Removing an unknown MAC is not an error (a retry after a
    /// lost answer must succeed).
    pub fn apply(&mut self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::MetadataUpsert(inst) => self.upsert(MetadataInstance::clone(inst)),
            Op::MetadataRemove { mac } => {
                if let Some(old) = self.instances.remove(mac) {
                    self.by_ip.remove(&old.inst.ip);
                }
                Ok(())
            }
            _ => Err(ServiceError::NotMetadata),
        }
    }

    /// Adds an instance or replaces the one with the same MAC. The password the instance
    /// set survives a replacement of the same instance (same UUID).
    pub fn upsert(&mut self, inst: MetadataInstance) -> Result<(), ServiceError> {
        if let Some(len) = inst.user_data.as_ref().map(Vec::len)
            && len > MAX_USER_DATA
        {
            return Err(ServiceError::UserDataTooLarge { len });
        }
        if let Some(&by) = self.by_ip.get(&inst.ip)
            && by != inst.mac
        {
            return Err(ServiceError::AddressInUse { ip: inst.ip, by });
        }
        let old = self.instances.get(&inst.mac);
        if old.is_none() && self.instances.len() >= MAX_INSTANCES {
            return Err(ServiceError::TableFull);
        }
        let (password, password_serial) = old
            .filter(|o| o.inst.uuid == inst.uuid)
            .map_or((None, 0), |o| (o.password.clone(), o.password_serial));
        if let Some(old_ip) = old.map(|o| o.inst.ip) {
            self.by_ip.remove(&old_ip);
        }
        let mut entry = Entry::new(inst);
        entry.password = password;
        entry.password_serial = password_serial;
        self.by_ip.insert(entry.inst.ip, entry.inst.mac);
        self.instances.insert(entry.inst.mac, entry);
        Ok(())
    }

    /// The passwords set after serial `since` (restored ones count from 1 at boot), oldest
    /// first, one page at a time: the manager asks again from `upto` while `more`.
    pub fn passwords(&self, since: u64) -> PasswordPage {
        let newer = |after: u64| {
            self.instances
                .values()
                .filter(move |e| e.password.is_some() && e.password_serial > after)
        };
        // Successive minimums rather than a sort: a page is short, and this is smaller
        // code in the image.
        let mut passwords = Vec::new();
        let mut upto = since;
        while passwords.len() < MAX_PASSWORDS_PER_PAGE {
            let Some(e) = newer(upto).min_by_key(|e| e.password_serial) else {
                break;
            };
            upto = e.password_serial;
            passwords.push(InstancePassword {
                mac: e.inst.mac,
                uuid: e.inst.uuid.clone(),
                password: e.password.clone().unwrap_or_default(),
            });
        }
        let more = newer(upto).next().is_some();
        if !more {
            upto = self.password_serial.max(since);
        }
        PasswordPage {
            upto,
            more,
            passwords,
        }
    }

    pub fn count(&mut self, event: Event) {
        self.events[event as usize] += 1;
    }

    pub fn events(&self, event: Event) -> u64 {
        self.events[event as usize]
    }

    /// Answers sent with `status`.
    pub fn statuses(&self, status: Status) -> u64 {
        self.statuses[status as usize]
    }

    /// Every counter by stable name: events, answers by status (`status_404`) and the
    /// number of instances.
    pub fn counters(&self) -> Vec<Counter> {
        let mut out: Vec<Counter> = Event::ALL
            .iter()
            .map(|&e| Counter::new(e.name(), self.events(e)))
            .collect();
        for s in Status::ALL {
            out.push(Counter::new(
                format!("status_{}", s.code()),
                self.statuses(s),
            ));
        }
        out.push(Counter::new("instances", self.instances.len() as u64));
        out
    }

    /// A new connection from `peer`.
    pub fn connect(&mut self, peer: Peer, now_ns: u64) -> Conn {
        self.count(Event::Connections);
        Conn {
            peer,
            input: Vec::new(),
            out: VecDeque::new(),
            sent: 0,
            queued: 0,
            closing: false,
            peer_done: false,
            request_started: None,
            last_activity: now_ns,
            requests: 0,
        }
    }

    /// Takes bytes received on `conn` and answers every complete request (as output
    /// allows). Returns how many bytes were taken; the rest must be offered again later.
    pub fn feed(&mut self, conn: &mut Conn, data: &[u8], now_ns: u64) -> usize {
        let n = data.len().min(conn.room());
        if n > 0 {
            if conn.input.is_empty() {
                conn.request_started = Some(now_ns);
            }
            conn.input.extend_from_slice(&data[..n]);
            conn.last_activity = now_ns;
        }
        self.drive(conn, now_ns);
        n
    }

    /// Answers requests already buffered on `conn` once its output has room again.
    pub fn drive(&mut self, conn: &mut Conn, now_ns: u64) {
        while !conn.input.is_empty() && conn.queued < OUTPUT_HIGH_WATER && !conn.closing {
            let head = match http::parse_head(&conn.input) {
                Ok(None) => break,
                Ok(Some(head)) => head,
                Err(e) => {
                    self.refuse(conn, e, now_ns);
                    break;
                }
            };
            let total = head.head_len + head.content_length;
            if conn.input.len() < total {
                break;
            }
            let request = Request {
                method: head.method,
                path: http::target_path(head.target),
                persist: head.persist(),
                body: conn.input[head.head_len..total].to_vec(),
            };
            conn.input.drain(..total);
            conn.requests = conn.requests.saturating_add(1);
            conn.request_started = (!conn.input.is_empty()).then_some(now_ns);
            self.count(Event::Requests);
            self.answer(conn, request, now_ns);
        }
        if conn.closing {
            // Whatever else arrives is not read.
            conn.input.clear();
            conn.request_started = None;
        }
    }

    /// Whether `conn` has expired at `now_ns` (counted under its reason): abort it.
    pub fn expired(&mut self, conn: &Conn, now_ns: u64) -> bool {
        if now_ns < conn.deadline() {
            return false;
        }
        let event = if !conn.out.is_empty() {
            Event::TimeoutSend
        } else if conn.request_started.is_some() {
            Event::TimeoutRequest
        } else {
            Event::TimeoutIdle
        };
        self.count(event);
        true
    }

    fn refuse(&mut self, conn: &mut Conn, e: HttpError, now_ns: u64) {
        self.count(match e {
            HttpError::Malformed => Event::Malformed,
            HttpError::HeadTooLarge => Event::HeadTooLarge,
            HttpError::BodyTooLarge => Event::BodyTooLarge,
        });
        conn.closing = true;
        self.respond_error(conn, e.status(), http::Persist::Close, false, None, now_ns);
    }

    /// The instance behind `peer`, or why there is none.
    fn identify(&self, peer: Peer) -> Result<[u8; 6], Event> {
        let &mac = self.by_ip.get(&peer.ip).ok_or(Event::UnknownAddress)?;
        match peer.mac {
            SourceMac::Seen(seen) if seen == mac => Ok(mac),
            SourceMac::Seen(_) => Err(Event::MacMismatch),
            SourceMac::Unseen => Err(Event::MacUnseen),
            SourceMac::Changed => Err(Event::MacChanged),
        }
    }

    fn answer(&mut self, conn: &mut Conn, req: Request, now_ns: u64) {
        if !req.persist.keeps() {
            conn.closing = true;
        }
        let head_only = req.method == Method::Head;
        let mac = match self.identify(conn.peer) {
            Ok(mac) => mac,
            Err(reason) => {
                self.count(reason);
                return self.respond_error(
                    conn,
                    Status::NotFound,
                    req.persist,
                    head_only,
                    None,
                    now_ns,
                );
            }
        };
        let tokens = http::path_tokens(&req.path);
        self.rng.mix(now_ns);
        let Engine {
            network_id,
            subnets,
            instances,
            rng,
            password_serial,
            ..
        } = self;
        let Some(entry) = instances.get_mut(&mac) else {
            return; // identify found it: unreachable
        };
        let net = Network {
            id: network_id,
            subnets,
        };
        let found = tree::lookup(&tokens, entry, net, rng);
        let outcome = match (found, req.method) {
            (None, _) => Err((Event::NoSuchPath, Status::NotFound, None)),
            (Some(Resource::Password), Method::Get | Method::Head) => {
                let pw = entry.password.clone().unwrap_or_default();
                Ok((tree::TEXT_PLAIN, Chunk::Owned(pw)))
            }
            (Some(Resource::Password), Method::Post) => {
                if entry.password.is_some() {
                    Err((Event::PasswordConflict, Status::Conflict, None))
                } else {
                    if !req.body.is_empty() {
                        *password_serial += 1;
                        entry.password = Some(req.body);
                        entry.password_serial = *password_serial;
                        self.count(Event::PasswordsSet);
                    }
                    Ok((tree::TEXT_PLAIN, Chunk::Owned(Vec::new())))
                }
            }
            (Some(Resource::Password), Method::Other) => Err((
                Event::MethodNotAllowed,
                Status::MethodNotAllowed,
                Some("GET, HEAD, POST"),
            )),
            (Some(_), Method::Post | Method::Other) => Err((
                Event::MethodNotAllowed,
                Status::MethodNotAllowed,
                Some("GET, HEAD"),
            )),
            (Some(r), Method::Get | Method::Head) => {
                let ct = r.content_type();
                let body = match r {
                    Resource::Text(s) | Resource::Json(s) => Chunk::Owned(s.into_bytes()),
                    Resource::Bytes(b) => Chunk::Shared(b),
                    Resource::Password => Chunk::Owned(Vec::new()),
                };
                Ok((ct, body))
            }
        };
        match outcome {
            Ok((content_type, body)) => {
                self.statuses[Status::Ok as usize] += 1;
                let mut head = Vec::with_capacity(160);
                let len = body.bytes().len();
                http::write_head(&mut head, Status::Ok, content_type, len, req.persist, None);
                if let (false, Chunk::Owned(b)) = (head_only, &body) {
                    head.extend_from_slice(b);
                    push(conn, Chunk::Owned(head), now_ns);
                } else {
                    push(conn, Chunk::Owned(head), now_ns);
                    if !head_only && len > 0 {
                        push(conn, body, now_ns);
                    }
                }
            }
            Err((event, status, allow)) => {
                self.count(event);
                self.respond_error(conn, status, req.persist, head_only, allow, now_ns);
            }
        }
    }

    fn respond_error(
        &mut self,
        conn: &mut Conn,
        status: Status,
        persist: http::Persist,
        head_only: bool,
        allow: Option<&str>,
        now_ns: u64,
    ) {
        self.statuses[status as usize] += 1;
        let body = format!(
            "{} {}\n\n{}\n\n   ",
            status.code(),
            status.reason(),
            status.explanation()
        );
        let mut out = Vec::with_capacity(body.len() + 160);
        http::write_head(
            &mut out,
            status,
            tree::TEXT_PLAIN,
            body.len(),
            persist,
            allow,
        );
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        push(conn, Chunk::Owned(out), now_ns);
    }
}

fn push(conn: &mut Conn, chunk: Chunk, now_ns: u64) {
    conn.queued += chunk.bytes().len();
    conn.last_activity = now_ns;
    conn.out.push_back(chunk);
}

/// A request taken off the connection's buffer.
struct Request {
    method: Method,
    path: Vec<u8>,
    persist: http::Persist,
    body: Vec<u8>,
}
