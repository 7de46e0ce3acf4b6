//! DHCPv4 wire format (RFC 2131 / RFC 2132): a zero-copy [`Packet`] view over a UDP
//! payload, an option iterator that follows option overload (52) into `file` and `sname`,
//! and a layout writer that fits a reply's options into the client's maximum size.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// The magic cookie that starts the options area (RFC 2131 §3).
pub const MAGIC_COOKIE: u32 = 0x6382_5363;
/// Smallest message every client must accept, as an IP datagram (RFC 2131 §2).
pub const MIN_MESSAGE_SIZE: usize = 576;
/// IPv4 (20, no options) plus UDP (8) header bytes: option 57 counts them, we do not.
pub const IP_UDP_HEADER_LEN: usize = 28;
/// Upper bound on non-PAD options the iterator yields, so hostile packets made of thousands
/// of tiny options are refused early rather than walked to the end.
pub const MAX_OPTIONS: usize = 255;

/// BOOTP op codes.
pub const OP_BOOTREQUEST: u8 = 1;
pub const OP_BOOTREPLY: u8 = 2;
/// `htype` for Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;
/// The broadcast bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes this crate reads or writes.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const MS_CLASSLESS_ROUTES: u8 = 249;
    pub const END: u8 = 255;
}

/// Why a buffer is not an acceptable DHCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Error {
    /// Shorter than the fixed BOOTP header plus the magic cookie.
    Truncated,
    /// The four bytes after `file` are not 99.130.83.99.
    BadMagicCookie,
    /// An option's length byte runs past the end of its area (or is missing).
    BadOptionLength,
    /// `op` is not BOOTREQUEST (for a server) or not a known op at all.
    BadOp,
    /// `htype`/`hlen` are not Ethernet/6.
    BadHardwareAddress,
    /// Option 52 has a length other than 1 or a value other than 1, 2 or 3.
    BadOverload,
    /// More than [`MAX_OPTIONS`] options.
    TooManyOptions,
    /// No option 53, or one of the wrong length.
    MissingMessageType,
    /// Option 53 holds a value outside 1..=8.
    BadMessageType,
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Field = 4..8;
    pub const SECS: Field = 8..10;
    pub const FLAGS: Field = 10..12;
    pub const CIADDR: Field = 12..16;
    pub const YIADDR: Field = 16..20;
    pub const SIADDR: Field = 20..24;
    pub const GIADDR: Field = 24..28;
    pub const CHADDR: Field = 28..44;
    pub const SNAME: Field = 44..108;
    pub const FILE: Field = 108..236;
    pub const MAGIC: Field = 236..240;
    pub const OPTIONS: usize = 240;
}

/// Length of the fixed header including the magic cookie.
pub const HEADER_LEN: usize = field::OPTIONS;

/// A read/write view of a DHCP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap a buffer and check it is long enough and carries the magic cookie.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure every fixed field is in bounds and the magic cookie is right. After this
    /// succeeds no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC_COOKIE.to_be_bytes() {
            return Err(Error::BadMagicCookie);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn op(&self) -> u8 {
        self.buffer.as_ref()[field::OP]
    }
    pub fn htype(&self) -> u8 {
        self.buffer.as_ref()[field::HTYPE]
    }
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }
    pub fn xid(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::XID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn secs(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::SECS];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn flags(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn broadcast_flag(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::CIADDR])
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::YIADDR])
    }
    pub fn siaddr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SIADDR])
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::GIADDR])
    }
    /// The whole 16-byte `chaddr` field.
    pub fn chaddr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHADDR]
    }
    /// The first six bytes of `chaddr` (an Ethernet MAC when `htype`/`hlen` say so).
    pub fn client_mac(&self) -> [u8; 6] {
        let b = &self.buffer.as_ref()[field::CHADDR];
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }
    pub fn sname(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SNAME]
    }
    pub fn file(&self) -> &[u8] {
        &self.buffer.as_ref()[field::FILE]
    }
    pub fn magic_cookie(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::MAGIC];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Iterate the options: the options area, then `file` and `sname` if option 52 says so.
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter::new(self.buffer.as_ref())
    }
}

impl<'a> OptionIter<'a> {
    /// Iterate the options of a whole message `b` that passed [`Packet::check_len`]; a
    /// shorter buffer yields nothing.
    pub fn new(b: &'a [u8]) -> Self {
        OptionIter {
            packet: b,
            area: Area::Options,
            pos: field::OPTIONS,
            end: b.len(),
            overload: 0,
            count: 0,
            failed: b.len() < HEADER_LEN,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn buf(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_op(&mut self, v: u8) {
        self.buf()[field::OP] = v;
    }
    pub fn set_htype(&mut self, v: u8) {
        self.buf()[field::HTYPE] = v;
    }
    pub fn set_hlen(&mut self, v: u8) {
        self.buf()[field::HLEN] = v;
    }
    pub fn set_hops(&mut self, v: u8) {
        self.buf()[field::HOPS] = v;
    }
    pub fn set_xid(&mut self, v: u32) {
        self.buf()[field::XID].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_secs(&mut self, v: u16) {
        self.buf()[field::SECS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_flags(&mut self, v: u16) {
        self.buf()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ciaddr(&mut self, v: Ipv4Addr) {
        self.buf()[field::CIADDR].copy_from_slice(&v.octets());
    }
    pub fn set_yiaddr(&mut self, v: Ipv4Addr) {
        self.buf()[field::YIADDR].copy_from_slice(&v.octets());
    }
    pub fn set_siaddr(&mut self, v: Ipv4Addr) {
        self.buf()[field::SIADDR].copy_from_slice(&v.octets());
    }
    pub fn set_giaddr(&mut self, v: Ipv4Addr) {
        self.buf()[field::GIADDR].copy_from_slice(&v.octets());
    }
    pub fn set_chaddr(&mut self, v: &[u8]) {
        let n = v.len().min(16);
        let f = &mut self.buf()[field::CHADDR];
        f.fill(0);
        f[..n].copy_from_slice(&v[..n]);
    }
    pub fn set_magic_cookie(&mut self) {
        self.buf()[field::MAGIC].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    }
    pub fn sname_mut(&mut self) -> &mut [u8] {
        &mut self.buf()[field::SNAME]
    }
    pub fn file_mut(&mut self) -> &mut [u8] {
        &mut self.buf()[field::FILE]
    }
}

/// One option as found in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpOption<'a> {
    pub code: u8,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Options,
    File,
    Sname,
    Done,
}

/// Iterator over a packet's options. Yields `Err` once (then stops) on a malformed area.
/// Option 52 is honoured only in the options area (RFC 2131 §4.1); the areas are read in
/// the order options, `file`, `sname`.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    packet: &'a [u8],
    area: Area,
    pos: usize,
    end: usize,
    overload: u8,
    count: usize,
    failed: bool,
}

impl<'a> OptionIter<'a> {
    fn next_area(&mut self) {
        let next = match self.area {
            Area::Options if self.overload & 1 != 0 => Area::File,
            Area::Options | Area::File if self.overload & 2 != 0 => Area::Sname,
            _ => Area::Done,
        };
        self.area = next;
        let range = match next {
            Area::File => field::FILE,
            Area::Sname => field::SNAME,
            _ => 0..0,
        };
        self.pos = range.start;
        self.end = range.end;
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<DhcpOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.area == Area::Done {
                return None;
            }
            // A missing END at the end of an area is tolerated, as dnsmasq and ISC do.
            let Some(&code) = self.packet.get(self.pos).filter(|_| self.pos < self.end) else {
                self.next_area();
                continue;
            };
            match code {
                opt::PAD => {
                    self.pos += 1;
                    continue;
                }
                opt::END => {
                    self.next_area();
                    continue;
                }
                _ => {}
            }
            let fail = |s: &mut Self, e| {
                s.failed = true;
                Some(Err(e))
            };
            let Some(&len) = self
                .packet
                .get(self.pos + 1)
                .filter(|_| self.pos + 1 < self.end)
            else {
                return fail(self, Error::BadOptionLength);
            };
            let start = self.pos + 2;
            let stop = start + len as usize;
            if stop > self.end {
                return fail(self, Error::BadOptionLength);
            }
            self.count += 1;
            if self.count > MAX_OPTIONS {
                return fail(self, Error::TooManyOptions);
            }
            self.pos = stop;
            let data = &self.packet[start..stop];
            if code == opt::OVERLOAD && self.area == Area::Options {
                match data {
                    [v @ 1..=3] => self.overload = *v,
                    _ => return fail(self, Error::BadOverload),
                }
            }
            return Some(Ok(DhcpOption { code, data }));
        }
    }
}

/// Lays a reply's options out in a fixed-size message: options area first, then (with
/// option 52) `file` and `sname`. Options are placed in the order given; one that does
/// not fit anywhere is left out (we do not split long options, RFC 3396).
#[derive(Debug)]
pub struct Layout {
    /// The encoded options that were placed, in order, and the area each went to.
    pub placed: Vec<(u8, AreaKind)>,
    /// Option codes left out for lack of room.
    pub dropped: Vec<u8>,
}

/// Which area an option was placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AreaKind {
    Options,
    File,
    Sname,
}

/// Encoded size of an option with `len` data bytes.
fn opt_size(len: usize) -> usize {
    2 + len
}

/// Write `options` (code, data ≤ 255 bytes) into the DHCP message `buf`, whose header is
/// already filled, growing `buf` to at most `max_len` bytes (at least [`HEADER_LEN`] + 1).
/// `leading` options (e.g. 53, 54) are always put first in the options area. Returns what
/// went where. The message is padded to `min_len` bytes.
pub fn emit_options(
    buf: &mut Vec<u8>,
    leading: &[(u8, &[u8])],
    options: &[(u8, &[u8])],
    max_len: usize,
    min_len: usize,
) -> Layout {
    let max_len = max_len.max(HEADER_LEN + 1);
    // Data longer than 255 bytes cannot be one option (RFC 3396 splitting is not done).
    let (leading, mut dropped): (Vec<_>, Vec<_>) =
        leading.iter().copied().partition(|(_, d)| d.len() <= 255);
    let (options, too_long): (Vec<_>, Vec<_>) =
        options.iter().copied().partition(|(_, d)| d.len() <= 255);
    dropped.extend(too_long);
    let (leading, options) = (&leading[..], &options[..]);
    buf.truncate(HEADER_LEN);
    buf.resize(HEADER_LEN, 0);
    let mut layout = Layout {
        placed: Vec::new(),
        dropped: dropped.iter().map(|(c, _)| *c).collect(),
    };
    let room = max_len - HEADER_LEN;
    let all: usize = leading
        .iter()
        .chain(options)
        .map(|(_, d)| opt_size(d.len()))
        .sum();
    let put = |buf: &mut Vec<u8>, code: u8, data: &[u8]| {
        buf.push(code);
        buf.push(data.len() as u8);
        buf.extend_from_slice(data);
    };
    if all < room {
        for (c, d) in leading.iter().chain(options) {
            put(buf, *c, d);
            layout.placed.push((*c, AreaKind::Options));
        }
        buf.push(opt::END);
    } else {
        // Overload: the options area keeps the leading options and 52; later options
        // flow into `file`, then `sname`, each ended by END, keeping their order. An
        // option too big for `file` can only live in the options area, so room is set
        // aside there for such options (those that fit, in order) before smaller ones
        // are placed; they may then read earlier than their position in `options`.
        let mut used = 0usize; // bytes of the options area; END and 52 reserved
        let reserve = 1 + 3;
        let mut file: Vec<u8> = Vec::new();
        let mut sname: Vec<u8> = Vec::new();
        let mut area = AreaKind::Options;
        for (c, d) in leading {
            let s = opt_size(d.len());
            if used + s + reserve <= room {
                put(buf, *c, d);
                used += s;
                layout.placed.push((*c, AreaKind::Options));
            } else {
                layout.dropped.push(*c);
            }
        }
        let big = |s: usize| s >= field::FILE.len();
        let mut big_ok: Vec<bool> = Vec::with_capacity(options.len());
        let mut pending = 0usize;
        for (_, d) in options {
            let s = opt_size(d.len());
            let ok = big(s) && used + pending + s + reserve <= room;
            if ok {
                pending += s;
            }
            big_ok.push(ok);
        }
        for ((c, d), ok) in options.iter().zip(big_ok) {
            let s = opt_size(d.len());
            if big(s) {
                if ok {
                    put(buf, *c, d);
                    used += s;
                    pending -= s;
                    layout.placed.push((*c, AreaKind::Options));
                } else {
                    layout.dropped.push(*c);
                }
                continue;
            }
            loop {
                let fits = match area {
                    AreaKind::Options => used + pending + s + reserve <= room,
                    AreaKind::File => file.len() + s < field::FILE.len(),
                    AreaKind::Sname => sname.len() + s < field::SNAME.len(),
                };
                if fits {
                    match area {
                        AreaKind::Options => {
                            put(buf, *c, d);
                            used += s;
                        }
                        AreaKind::File => put(&mut file, *c, d),
                        AreaKind::Sname => put(&mut sname, *c, d),
                    }
                    layout.placed.push((*c, area));
                    break;
                }
                // Too big for this area: move on only if it would fit in a later one,
                // so one large option does not waste the rest of an area.
                let later_fits = match area {
                    // Without room for option 52 itself there is no overload.
                    AreaKind::Options => room >= reserve,
                    AreaKind::File => s < field::SNAME.len(),
                    AreaKind::Sname => false,
                };
                if !later_fits {
                    layout.dropped.push(*c);
                    break;
                }
                area = match area {
                    AreaKind::Options => AreaKind::File,
                    _ => AreaKind::Sname,
                };
            }
        }
        let mut overload = 0u8;
        if !file.is_empty() {
            overload |= 1;
            file.push(opt::END);
        }
        if !sname.is_empty() {
            overload |= 2;
            sname.push(opt::END);
        }
        if overload != 0 {
            put(buf, opt::OVERLOAD, &[overload]);
            buf[field::FILE][..file.len()].copy_from_slice(&file);
            buf[field::SNAME][..sname.len()].copy_from_slice(&sname);
        }
        buf.push(opt::END);
    }
    if buf.len() < min_len.min(max_len) {
        buf.resize(min_len.min(max_len), 0);
    }
    layout
}

/// Encode classless static routes (RFC 3442): prefix length, the significant octets of
/// the destination, then the router. Routes are added whole while they fit in `limit` bytes.
pub fn encode_classless_routes(routes: &[(Ipv4Addr, u8, Ipv4Addr)], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for &(dst, len, via) in routes {
        let len = len.min(32);
        let sig = (len as usize).div_ceil(8);
        let dst = Ipv4Addr::from(u32::from(dst) & prefix_mask(len));
        if out.len() + 1 + sig + 4 > limit {
            break;
        }
        out.push(len);
        out.extend_from_slice(&dst.octets()[..sig]);
        out.extend_from_slice(&via.octets());
    }
    out
}

/// The netmask of a prefix length (0..=32) as a host-order `u32`.
pub fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - l),
    }
}
