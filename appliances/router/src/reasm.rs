//! IPv4 reassembly of fragments that must be NATed or are for the router itself. Bounded:
//! [`MAX_DATAGRAMS`] in flight, [`MAX_BYTES`] of buffers in all, [`MAX_PIECES`] fragments
//! per datagram, [`TIMEOUT_MS`] to complete. Overlapping fragments discard the datagram
//! (RFC 5722's rule, applied to IPv4 as Linux does).

use alloc::vec::Vec;

pub const MAX_DATAGRAMS: usize = 64;
pub const MAX_BYTES: usize = 1024 * 1024;
pub const MAX_PIECES: usize = 64;
pub const TIMEOUT_MS: u64 = 30_000;
const MAX_PAYLOAD: usize = 65_535 - 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Overlaps data already received (or contradicts the known length).
    Overlap,
    /// Past 64 KiB, or a non-last fragment whose length is not a multiple of 8.
    TooBig,
    /// Too many datagrams or bytes in flight.
    TableFull,
    /// More than [`MAX_PIECES`] fragments.
    TooMany,
    /// An exact repeat of a fragment already held (harmless, dropped).
    Duplicate,
}

struct Datagram {
    src: u32,
    dst: u32,
    id: u16,
    proto: u8,
    /// Ethernet + IPv4 header (20 bytes) of the first fragment, once seen.
    head: Option<[u8; 34]>,
    data: Vec<u8>,
    pieces: Vec<(usize, usize)>,
    total: Option<usize>,
    expires: u64,
}

#[derive(Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    bytes: usize,
}

impl Reassembler {
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds one fragment: `frame` is Ethernet + a 20-byte IPv4 header + payload (trimmed
    /// to the IP length). Returns the whole datagram's frame when this one completed it.
    pub fn add(&mut self, frame: &[u8], now: u64) -> Result<Option<Vec<u8>>, Error> {
        let ip = &frame[14..];
        let src = nanovnf_frame::be32(ip, 12);
        let dst = nanovnf_frame::be32(ip, 16);
        let id = nanovnf_frame::be16(ip, 4);
        let proto = ip[9];
        let fo = nanovnf_frame::be16(ip, 6);
        let more = fo & 0x2000 != 0;
        let start = usize::from(fo & 0x1fff) * 8;
        let payload = &ip[20..];
        let end = start + payload.len();
        let pos = self
            .datagrams
            .iter()
            .position(|d| d.src == src && d.dst == dst && d.id == id && d.proto == proto);
        if end > MAX_PAYLOAD
            || (more && !payload.len().is_multiple_of(8))
            || (more && payload.is_empty())
        {
            if let Some(p) = pos {
                self.discard(p);
            }
            return Err(Error::TooBig);
        }
        let pos = match pos {
            Some(p) => p,
            None => {
                if self.datagrams.len() >= MAX_DATAGRAMS {
                    return Err(Error::TableFull);
                }
                self.datagrams.push(Datagram {
                    src,
                    dst,
                    id,
                    proto,
                    head: None,
                    data: Vec::new(),
                    pieces: Vec::new(),
                    total: None,
                    expires: now.saturating_add(TIMEOUT_MS),
                });
                self.datagrams.len() - 1
            }
        };
        let d = &mut self.datagrams[pos];
        if d.pieces.iter().any(|&(s, e)| s == start && e == end) {
            return Err(Error::Duplicate);
        }
        let overlaps = d.pieces.iter().any(|&(s, e)| start < e && s < end);
        let bad_total = match d.total {
            Some(t) => end > t || (!more && end != t),
            None => !more && d.pieces.iter().any(|&(_, e)| e > end),
        };
        if overlaps || bad_total {
            self.discard(pos);
            return Err(Error::Overlap);
        }
        if d.pieces.len() >= MAX_PIECES {
            self.discard(pos);
            return Err(Error::TooMany);
        }
        let grow = end.saturating_sub(d.data.len());
        if self.bytes + grow > MAX_BYTES {
            self.discard(pos);
            return Err(Error::TableFull);
        }
        let d = &mut self.datagrams[pos];
        if d.data.len() < end {
            d.data.resize(end, 0);
        }
        self.bytes += grow;
        d.data[start..end].copy_from_slice(payload);
        d.pieces.push((start, end));
        if !more {
            d.total = Some(end);
        }
        if start == 0 {
            let mut h = [0u8; 34];
            h.copy_from_slice(&frame[..34]);
            d.head = Some(h);
        }
        let complete = match (d.total, d.head) {
            (Some(t), Some(_)) => d.pieces.iter().map(|&(s, e)| e - s).sum::<usize>() == t,
            _ => false,
        };
        if !complete {
            return Ok(None);
        }
        let d = self.datagrams.swap_remove(pos);
        self.bytes -= d.data.len();
        let Some(head) = d.head else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(34 + d.data.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&d.data);
        let ip = &mut out[14..];
        nanovnf_frame::put_be16(ip, 2, (20 + d.data.len()) as u16);
        let df = nanovnf_frame::be16(ip, 6) & 0x4000;
        nanovnf_frame::put_be16(ip, 6, df);
        nanovnf_frame::put_be16(ip, 10, 0);
        let c = nanovnf_frame::checksum::ipv4_header(&ip[..20]);
        nanovnf_frame::put_be16(ip, 10, c);
        Ok(Some(out))
    }

    fn discard(&mut self, pos: usize) {
        let d = self.datagrams.swap_remove(pos);
        self.bytes -= d.data.len();
    }

    /// Drops datagrams past their deadline; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.datagrams.len();
        let mut freed = 0;
        self.datagrams.retain(|d| {
            let keep = d.expires > now;
            if !keep {
                freed += d.data.len();
            }
            keep
        });
        self.bytes -= freed;
        before - self.datagrams.len()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.datagrams.iter().map(|d| d.expires).min()
    }
}
