//! The DNS message format (RFC 1035 §4, EDNS(0) from RFC 6891), as much of it as a
//! stub-facing server needs: a checked view of a query (header, one question, the OPT
//! record) and a writer for answers. Names are read with every hostile form in mind:
//! compression pointers may only point backwards into the message past the header, a
//! name has at most 255 octets, and a label never runs past the end. After
//! [`parse_query`] succeeds nothing here can panic on the message.

use alloc::vec::Vec;

/// Bytes in a DNS header.
pub const HEADER_LEN: usize = 12;
/// The largest name on the wire, root label included (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;
/// The largest label.
pub const MAX_LABEL_LEN: usize = 63;
/// The classic UDP payload limit without EDNS (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// Record types this server names.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Classes.
pub mod class {
    pub const IN: u16 = 1;
    pub const ANY: u16 = 255;
}

/// Response codes (RFC 1035 §4.1.1, RFC 6891 §9 for the extended BADVERS).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// 16: upper 8 bits in the OPT record, lower 4 (0) in the header.
    pub const BADVERS: u16 = 16;
}

/// Header flag bits (the second 16-bit word).
pub mod flag {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
    pub const OPCODE_MASK: u16 = 0x7800;
    pub const RCODE_MASK: u16 = 0x000f;
}

/// The OPT record's DO bit, in its TTL field's lower half.
const EDNS_DO: u32 = 0x8000;

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Error {
    /// Shorter than a header, or a section ends before its count says.
    Truncated,
    /// A label runs past the end of the message.
    LabelPastEnd,
    /// A label type other than 0b00 (normal) and 0b11 (pointer).
    BadLabelType,
    /// A compression pointer into the header, to itself or forwards (a loop).
    BadPointer,
    /// More than 255 octets.
    NameTooLong,
    /// QDCOUNT is not 1.
    QuestionCount,
    /// More than one OPT record, or one whose owner is not the root.
    BadOpt,
}

impl Error {
    pub const ALL: [Error; 7] = [
        Error::Truncated,
        Error::LabelPastEnd,
        Error::BadLabelType,
        Error::BadPointer,
        Error::NameTooLong,
        Error::QuestionCount,
        Error::BadOpt,
    ];

    /// A stable snake_case name for counters.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::LabelPastEnd => "label_past_end",
            Error::BadLabelType => "bad_label_type",
            Error::BadPointer => "bad_pointer",
            Error::NameTooLong => "name_too_long",
            Error::QuestionCount => "question_count",
            Error::BadOpt => "bad_opt",
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, Error> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(Error::Truncated),
    }
}

fn u32_at(msg: &[u8], at: usize) -> Result<u32, Error> {
    match msg.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::Truncated),
    }
}

/// A header view. Every accessor is safe on any slice of at least [`HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a>(&'a [u8]);

impl<'a> Header<'a> {
    pub fn new_checked(msg: &'a [u8]) -> Result<Self, Error> {
        if msg.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Header(msg))
    }

    fn word(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[2 * i], self.0[2 * i + 1]])
    }

    pub fn id(&self) -> u16 {
        self.word(0)
    }
    pub fn flags(&self) -> u16 {
        self.word(1)
    }
    pub fn is_response(&self) -> bool {
        self.flags() & flag::QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags() & flag::OPCODE_MASK) >> 11) as u8
    }
    pub fn rcode(&self) -> u16 {
        self.flags() & flag::RCODE_MASK
    }
    pub fn qdcount(&self) -> u16 {
        self.word(2)
    }
    pub fn ancount(&self) -> u16 {
        self.word(3)
    }
    pub fn nscount(&self) -> u16 {
        self.word(4)
    }
    pub fn arcount(&self) -> u16 {
        self.word(5)
    }
}

/// A domain name as read from a message: its labels in wire form (length-prefixed, no
/// root label), case as sent, decompressed. At most 127 labels fit in 255 octets.
#[derive(Clone)]
pub struct Name {
    wire: [u8; MAX_NAME_LEN],
    len: u8,
    /// Offset in `wire` of each label's length byte.
    starts: [u8; 128],
    labels: u8,
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for i in 0..self.label_count() {
            for &b in self.label(i) {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", char::from(b))?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        if self.label_count() == 0 {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl Name {
    /// The root name.
    pub const fn root() -> Self {
        Name {
            wire: [0; MAX_NAME_LEN],
            len: 0,
            starts: [0; 128],
            labels: 0,
        }
    }

    /// The labels in wire form without the root label.
    pub fn wire(&self) -> &[u8] {
        &self.wire[..usize::from(self.len)]
    }

    pub fn label_count(&self) -> usize {
        usize::from(self.labels)
    }

    /// Label `i` (0 = leftmost), without its length byte. Empty past the last label.
    pub fn label(&self, i: usize) -> &[u8] {
        if i >= self.label_count() {
            return &[];
        }
        let at = usize::from(self.starts[i]);
        let len = usize::from(self.wire[at]);
        &self.wire[at + 1..at + 1 + len]
    }

    /// The wire form of the name made of labels `i..` (its `i`-th ancestor).
    pub fn suffix(&self, i: usize) -> &[u8] {
        if i >= self.label_count() {
            return &[];
        }
        &self.wire[usize::from(self.starts[i])..usize::from(self.len)]
    }

    /// The wire form, lowercased, into `out`; returns its length.
    pub fn lowercase_into(&self, out: &mut [u8; MAX_NAME_LEN]) -> usize {
        let w = self.wire();
        for (o, b) in out.iter_mut().zip(w) {
            *o = b.to_ascii_lowercase();
        }
        w.len()
    }

    /// Appends a label; fails past 255 octets (counting the root label).
    fn push(&mut self, label: &[u8]) -> Result<(), Error> {
        let len = usize::from(self.len);
        // +1 for the length byte, +1 for the root label that ends the name.
        if label.len() > MAX_LABEL_LEN || len + label.len() + 2 > MAX_NAME_LEN {
            return Err(Error::NameTooLong);
        }
        self.starts[usize::from(self.labels)] = len as u8;
        self.wire[len] = label.len() as u8;
        self.wire[len + 1..len + 1 + label.len()].copy_from_slice(label);
        self.len = (len + 1 + label.len()) as u8;
        self.labels += 1;
        Ok(())
    }
}

/// Reads the name at `at`. Returns it and the offset just past it in place (after its
/// root label or first pointer).
pub fn read_name(msg: &[u8], at: usize) -> Result<(Name, usize), Error> {
    let mut name = Name::root();
    let mut pos = at;
    let mut end = None;
    // Every pointer must go strictly below the previous position, so a chain ends; the
    // 255-octet limit bounds the labels.
    let mut floor = at;
    loop {
        let Some(&len) = msg.get(pos) else {
            return Err(Error::LabelPastEnd);
        };
        match len >> 6 {
            0b00 => {
                if len == 0 {
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(Error::LabelPastEnd)?;
                name.push(label)?;
                pos += 1 + usize::from(len);
            }
            0b11 => {
                let lo = *msg.get(pos + 1).ok_or(Error::LabelPastEnd)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(lo);
                if target < HEADER_LEN || target >= floor {
                    return Err(Error::BadPointer);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(Error::BadLabelType),
        }
    }
}

/// Skips a name without keeping it (same checks as [`read_name`]).
pub fn skip_name(msg: &[u8], at: usize) -> Result<usize, Error> {
    read_name(msg, at).map(|(_, next)| next)
}

/// The OPT record of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size (values below 512 count as 512).
    pub udp_size: u16,
    pub version: u8,
    /// DNSSEC OK: echoed in the answer's OPT (RFC 3225).
    pub dnssec_ok: bool,
    /// Offset of the OPT record's CLASS (payload size) field in the message, so a
    /// forwarder can rewrite it.
    pub size_at: usize,
}

/// A query, checked: one question and at most one well-formed OPT record.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as sent (name, type, class), to echo it verbatim.
    pub question: &'a [u8],
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn opcode(&self) -> u8 {
        ((self.flags & flag::OPCODE_MASK) >> 11) as u8
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & flag::RD != 0
    }
}

/// Reads the question and the OPT record. The caller has checked the header (length,
/// QR clear). Answer and authority records in a query are skipped (checked, not used).
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, Error> {
    let h = Header::new_checked(msg)?;
    if h.qdcount() != 1 {
        return Err(Error::QuestionCount);
    }
    let (name, at) = read_name(msg, HEADER_LEN)?;
    let qtype = u16_at(msg, at)?;
    let qclass = u16_at(msg, at + 2)?;
    let question = &msg[HEADER_LEN..at + 4];
    let mut pos = at + 4;
    // Each record is at least 11 bytes, so absurd counts end at the message's end.
    let others = u32::from(h.ancount()) + u32::from(h.nscount());
    for _ in 0..others {
        pos = skip_record(msg, pos)?.1;
    }
    let mut edns = None;
    for _ in 0..h.arcount() {
        let name_at = pos;
        let (rr, next) = skip_record(msg, pos)?;
        if rr.rtype == rtype::OPT {
            // The owner must be the root: a single zero byte, not a pointer to one.
            if edns.is_some() || msg.get(name_at) != Some(&0) {
                return Err(Error::BadOpt);
            }
            edns = Some(Edns {
                udp_size: rr.class,
                version: (rr.ttl >> 16) as u8,
                dnssec_ok: rr.ttl & EDNS_DO != 0,
                size_at: name_at + 3,
            });
        }
        pos = next;
    }
    Ok(Query {
        id: h.id(),
        flags: h.flags(),
        name,
        qtype,
        qclass,
        question,
        edns,
    })
}

/// A resource record's fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Offset and length of the RDATA.
    pub rdata_at: usize,
    pub rdata_len: usize,
}

/// Checks the record at `at`; returns its fixed fields and the offset after it.
pub fn skip_record(msg: &[u8], at: usize) -> Result<(RecordHead, usize), Error> {
    let at = skip_name(msg, at)?;
    let rtype = u16_at(msg, at)?;
    let class = u16_at(msg, at + 2)?;
    let ttl = u32_at(msg, at + 4)?;
    let rdata_len = usize::from(u16_at(msg, at + 8)?);
    let rdata_at = at + 10;
    if msg.len() < rdata_at + rdata_len {
        return Err(Error::Truncated);
    }
    let head = RecordHead {
        rtype,
        class,
        ttl,
        rdata_at,
        rdata_len,
    };
    Ok((head, rdata_at + rdata_len))
}

/// The question of a message (for matching an upstream answer to its query): the name
/// lowercased in wire form, type and class. `None` unless QDCOUNT is 1 and it reads.
pub fn question_key(msg: &[u8]) -> Option<(Name, u16, u16)> {
    let h = Header::new_checked(msg).ok()?;
    if h.qdcount() != 1 {
        return None;
    }
    let (name, at) = read_name(msg, HEADER_LEN).ok()?;
    Some((name, u16_at(msg, at).ok()?, u16_at(msg, at + 2).ok()?))
}

/// Case-insensitive name equality (RFC 4343).
pub fn names_equal(a: &Name, b: &Name) -> bool {
    a.wire().eq_ignore_ascii_case(b.wire())
}

/// Builds a message. Names go out either as a pointer to an earlier name or as labels.
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// Starts a message with this header; counts are filled in by `set_counts`.
    pub fn new(id: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Writer { buf }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn set_counts(&mut self, qd: u16, an: u16, ns: u16, ar: u16) {
        for (i, n) in [qd, an, ns, ar].into_iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&n.to_be_bytes());
        }
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A compression pointer to the name at `offset`.
    pub fn pointer(&mut self, offset: usize) {
        self.u16(0xc000 | (offset as u16 & 0x3fff));
    }

    /// A name in wire form (labels, no root), ended by the root label.
    pub fn name(&mut self, wire: &[u8]) {
        self.bytes(wire);
        self.buf.push(0);
    }

    /// A record's type, class, TTL; returns where to patch RDLENGTH with `end_rdata`.
    pub fn record_head(&mut self, rtype: u16, class: u16, ttl: u32) -> usize {
        self.u16(rtype);
        self.u16(class);
        self.u32(ttl);
        let at = self.buf.len();
        self.u16(0);
        at
    }

    /// Fills in RDLENGTH for the record whose head returned `at`.
    pub fn end_rdata(&mut self, at: usize) {
        let len = (self.buf.len() - at - 2) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// An OPT record advertising `udp_size`, with the extended RCODE bits and DO.
    pub fn opt(&mut self, udp_size: u16, ext_rcode: u8, dnssec_ok: bool) {
        self.buf.push(0);
        let ttl = u32::from(ext_rcode) << 24 | if dnssec_ok { EDNS_DO } else { 0 };
        let at = self.record_head(rtype::OPT, udp_size, ttl);
        self.end_rdata(at);
    }
}

/// Builds the wire form (no root label) of a dotted name; `None` if a label is empty or
/// too long or the name too long. Trailing dots are ignored; the empty string is the
/// root (an empty wire form).
pub fn wire_from_dotted(name: &str) -> Option<Vec<u8>> {
    let trimmed = name.trim_end_matches('.');
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() {
        return Some(out);
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return None;
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    (out.len() < MAX_NAME_LEN).then_some(out)
}
