//! IPv4 fragmentation (RFC 791 §3.2) of an Ethernet + IPv4 frame too big for the next
//! link: each fragment gets its own length, offset, MF flag and header checksum; options
//! without the "copied" bit stay in the first fragment only.

use crate::checksum::ipv4_header;
use crate::{ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, Fill, be16, put_be16};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentError {
    /// Not Ethernet + IPv4 with consistent lengths.
    NotIpv4,
    /// The MTU leaves no room for 8 payload bytes after the header.
    MtuTooSmall,
}

const MF: u16 = 0x2000;
const DF: u16 = 0x4000;
const OFFSET_MASK: u16 = 0x1fff;

/// The options of a non-first fragment: only those whose type has the copied bit, padded
/// with end-of-options to a multiple of 4. Returns their length in `out`.
fn copied_options(options: &[u8], out: &mut [u8; 40]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < options.len() {
        let kind = options[i];
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let len = options.get(i + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || i + len > options.len() {
                    break;
                }
                if kind & 0x80 != 0 && n + len <= out.len() {
                    out[n..n + len].copy_from_slice(&options[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = n.div_ceil(4) * 4;
    out[n..padded].fill(0);
    padded
}

/// Cuts `frame` (Ethernet + IPv4; checksums of the payload complete) into fragments whose
/// IP packets are at most `mtu` bytes. A fragment of a fragment keeps its offset and, on
/// the last piece, the original MF. DF is cleared. For each, `emit(len, fill)` is called;
/// `fill` writes the fragment into the buffer it is given. Returns the number emitted.
pub fn fragment_ipv4(
    frame: &[u8],
    mtu: usize,
    emit: &mut dyn FnMut(usize, &mut Fill<'_>),
) -> Result<usize, FragmentError> {
    const E: usize = ETHERNET_HEADER_LEN;
    if frame.len() < E + 20 || be16(frame, 12) != ETHERTYPE_IPV4 || frame[E] >> 4 != 4 {
        return Err(FragmentError::NotIpv4);
    }
    let ihl = usize::from(frame[E] & 0x0f) * 4;
    let total = usize::from(be16(frame, E + 2));
    if ihl < 20 || total < ihl || E + total > frame.len() {
        return Err(FragmentError::NotIpv4);
    }
    let mut opts = [0u8; 40];
    let later_ihl = 20 + copied_options(&frame[E + 20..E + ihl], &mut opts);
    if mtu < ihl + 8 {
        return Err(FragmentError::MtuTooSmall);
    }
    let frag = be16(frame, E + 6);
    let base = usize::from(frag & OFFSET_MASK) * 8;
    let orig_mf = frag & MF != 0;
    let flags_keep = frag & !(MF | DF | OFFSET_MASK);
    let payload = &frame[E + ihl..E + total];
    let mut off = 0;
    let mut count = 0;
    loop {
        let first = off == 0;
        let h = if first { ihl } else { later_ihl };
        let room = ((mtu - h) / 8) * 8;
        let len = room.min(payload.len() - off);
        let last = off + len >= payload.len();
        let mut fill = |out: &mut [u8]| {
            out[..E].copy_from_slice(&frame[..E]);
            out[E..E + 20].copy_from_slice(&frame[E..E + 20]);
            if first {
                out[E + 20..E + h].copy_from_slice(&frame[E + 20..E + ihl]);
            } else {
                out[E + 20..E + h].copy_from_slice(&opts[..h - 20]);
            }
            out[E] = 0x40 | (h / 4) as u8;
            put_be16(out, E + 2, (h + len) as u16);
            let mf = if !last || orig_mf { MF } else { 0 };
            let offset = ((base + off) / 8) as u16 & OFFSET_MASK;
            put_be16(out, E + 6, flags_keep | mf | offset);
            put_be16(out, E + 10, 0);
            let c = ipv4_header(&out[E..E + h]);
            put_be16(out, E + 10, c);
            out[E + h..E + h + len].copy_from_slice(&payload[off..off + len]);
        };
        emit(E + h + len, &mut fill);
        count += 1;
        off += len;
        if last {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum::ipv4_header_ok;
    use std::vec;
    use std::vec::Vec;

    fn packet(payload_len: usize, options: &[u8]) -> Vec<u8> {
        let ihl = 20 + options.len();
        let mut f = vec![0u8; 14 + ihl + payload_len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x40 | (ihl / 4) as u8;
        put_be16(&mut f, 16, (ihl + payload_len) as u16);
        put_be16(&mut f, 18, 0x4242);
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 1, 1]);
        f[34..34 + options.len()].copy_from_slice(options);
        for (i, b) in f[14 + ihl..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = ipv4_header(&f[14..14 + ihl]);
        put_be16(&mut f, 24, c);
        f
    }

    fn run(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = fragment_ipv4(frame, mtu, &mut |len, fill| {
            let mut b = vec![0u8; len];
            fill(&mut b);
            out.push(b);
        })
        .unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let f = packet(3000, &[]);
        let frags = run(&f, 1500);
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, fr) in frags.iter().enumerate() {
            assert!(ipv4_header_ok(&fr[14..34]));
            assert!(fr.len() - 14 <= 1500);
            let fo = be16(fr, 20);
            assert_eq!(usize::from(fo & OFFSET_MASK) * 8, joined.len());
            assert_eq!(fo & MF != 0, i < 2);
            assert_eq!(be16(fr, 18), 0x4242);
            joined.extend_from_slice(&fr[34..]);
        }
        assert_eq!(joined, f[34..]);
        assert_eq!(frags[0].len() - 34, 1480);
    }

    #[test]
    fn refragmenting_keeps_offset_and_mf_and_copied_options() {
        // Options: NOP, a copied 4-byte option (0x94, router alert), a non-copied one
        // (0x07 record route, length 3, padded by EOL).
        let opts = [1, 0x94, 4, 0, 0, 0x07, 3, 0];
        let mut f = packet(400, &opts[..8]);
        put_be16(&mut f, 20, MF | 100); // a middle fragment at offset 800
        let c = {
            put_be16(&mut f, 24, 0);
            ipv4_header(&f[14..42])
        };
        put_be16(&mut f, 24, c);
        let frags = run(&f, 200);
        assert!(frags.len() > 2);
        assert_eq!(frags[0][14] & 0x0f, 7);
        assert_eq!(frags[1][14] & 0x0f, 6, "only the copied option remains");
        assert_eq!(&frags[1][34..38], &[0x94, 4, 0, 0]);
        for fr in &frags {
            let ihl = usize::from(fr[14] & 0x0f) * 4;
            assert!(ipv4_header_ok(&fr[14..14 + ihl]));
            assert!(be16(fr, 20) & MF != 0, "the original MF stays on the last");
        }
        assert_eq!(be16(&frags[0], 20) & OFFSET_MASK, 100);
        assert_eq!(
            fragment_ipv4(&f, 30, &mut |_, _| {}),
            Err(FragmentError::MtuTooSmall)
        );
        assert_eq!(
            fragment_ipv4(&f[..30], 1500, &mut |_, _| {}),
            Err(FragmentError::NotIpv4)
        );
    }
}
