//! The control channel between the manager and a running appliance: a byte stream (the
//! appliance's second serial port, a unix socket on the host) carrying postcard messages
//! in COBS frames, each ended by a zero byte. The manager sends [`Request`]s; the
//! appliance answers each with a [`Report`] carrying the same `seq`, and may report on its
//! own (`Ready` after boot).

use crate::dhcp::DhcpHost;
use crate::metadata::{MetadataInstance, PasswordPage};
use crate::router::FloatingIp;
use crate::vxlan::FdbEntry;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The largest frame either side accepts, encoded. A longer one is discarded (up to its
/// terminating zero) and counted, so a corrupt stream resynchronises at the next frame.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the manager; echoed in the answer.
    pub seq: u32,
    pub op: Op,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Liveness: answered with `Done` and the appliance's generation.
    Ping,
    /// Answered with `Counters`.
    Counters,
    /// Adds a reservation or replaces the one with the same MAC. A changed address
    /// releases the old lease at once.
    DhcpUpsert(DhcpHost),
    /// Removes the reservation of this MAC and releases its lease at once, so the address
    /// can go to another MAC (Nova's `force_dhcp_release`).
    DhcpRemove { mac: [u8; 6] },
    /// Makes `generation` the appliance's configuration generation (after a batch of
    /// changes).
    SetGeneration { generation: u64 },
    /// Adds an instance to a metadata appliance or replaces the one with the same MAC
    /// (a new floating IP, new user data).
    MetadataUpsert(alloc::boxed::Box<MetadataInstance>),
    /// Forgets the instance with this MAC: its requests get 404 from now on.
    MetadataRemove { mac: [u8; 6] },
    /// Adds a floating IP to a router or re-points it at another fixed address (the
    /// old mapping's connections are dropped, as Neutron flushes conntrack).
    FloatingIpUpsert(FloatingIp),
    /// Removes a floating IP and drops its connections.
    FloatingIpRemove { floating: Ipv4Addr },
    /// Replaces a VXLAN gateway's flood list.
    VxlanRemotes(Vec<Ipv4Addr>),
    /// Adds or replaces the static forwarding entry for `entry.mac` (l2population).
    VxlanStaticUpsert(FdbEntry),
    /// Removes the static forwarding entry for this MAC.
    VxlanStaticRemove { mac: [u8; 6] },
    /// Asks a metadata appliance for the passwords its instances set after serial `since`
    /// (0: all of them); answered with [`Report::MetadataPasswords`]. Variants are only
    /// ever appended: postcard numbers them by position, and an appliance built before
    /// one exists cannot decode it (it counts a malformed frame and stays silent).
    MetadataPasswords { since: u64 },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Sent once after boot, when the appliance serves.
    Ready { generation: u64 },
    /// The request `seq` was applied; `generation` is the appliance's generation now.
    Done { seq: u32, generation: u64 },
    /// The request `seq` was refused and changed nothing.
    Refused { seq: u32, reason: String },
    /// Answer to [`Op::Counters`]: every counter by name (stable snake_case names).
    Counters { seq: u32, counters: Vec<Counter> },
    /// Answer to [`Op::MetadataPasswords`].
    MetadataPasswords { seq: u32, page: PasswordPage },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

impl Counter {
    pub fn new(name: impl Into<String>, value: u64) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// Encodes `msg` as one COBS frame, zero terminator included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail (see `crate::encode`).
    postcard::to_allocvec_cobs(msg).unwrap_or_default()
}

/// Decodes one frame as returned by [`FrameReader`] or [`encode`] (COBS-encoded, its
/// terminating zero included). The buffer is decoded in place.
pub fn decode<T: DeserializeOwned>(frame: &mut [u8]) -> Result<T, FrameError> {
    postcard::from_bytes_cobs(frame).map_err(|_| FrameError::Malformed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not a valid COBS frame or not a valid message.
    Malformed,
}

/// Splits a byte stream into frames at zero bytes, bounded by [`MAX_FRAME_LEN`].
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// True while discarding the rest of an oversized frame.
    discarding: bool,
    /// True when `buf` holds the frame returned by the last push.
    complete: bool,
    /// Frames discarded for exceeding [`MAX_FRAME_LEN`].
    pub oversized: u64,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one byte; returns a complete frame (ending with its zero) when this byte ended
    /// one. Empty frames (consecutive zeros) are skipped.
    pub fn push(&mut self, byte: u8) -> Option<&mut [u8]> {
        if self.complete {
            // The frame returned by the previous push has been used.
            self.buf.clear();
            self.complete = false;
        }
        if byte == 0 {
            if core::mem::take(&mut self.discarding) || self.buf.is_empty() {
                self.buf.clear();
                return None;
            }
            self.buf.push(0);
            self.complete = true;
            return Some(&mut self.buf[..]);
        }
        if self.discarding {
            return None;
        }
        if self.buf.len() >= MAX_FRAME_LEN {
            self.buf.clear();
            self.discarding = true;
            self.oversized += 1;
            return None;
        }
        self.buf.push(byte);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(seq: u32) -> Request {
        Request {
            seq,
            op: Op::DhcpUpsert(DhcpHost {
                mac: [0xfa, 0x16, 0x3e, 0, 0, 1],
                ip: Ipv4Addr::new(192, 168, 1, 11),
                hostname: "vm1".into(),
            }),
        }
    }

    fn frames(reader: &mut FrameReader, bytes: &[u8]) -> Vec<Request> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(frame) = reader.push(b) {
                out.push(decode(frame).expect("a valid frame"));
            }
        }
        out
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut stream = encode(&upsert(1));
        assert_eq!(stream.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(stream.last(), Some(&0));
        stream.extend(encode(&upsert(2)));
        stream.push(0); // an empty frame is skipped
        stream.extend(encode(&Request {
            seq: 3,
            op: Op::Ping,
        }));
        let got = frames(&mut FrameReader::new(), &stream);
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(got[0], upsert(1));
    }

    #[test]
    fn garbage_is_refused_and_the_stream_resynchronises() {
        let mut reader = FrameReader::new();
        let junk = [7u8, 200, 3, 9, 0];
        let mut frame = None;
        for &b in &junk[..] {
            frame = reader.push(b).map(|f| f.to_vec());
        }
        let mut frame = frame.expect("a frame");
        assert_eq!(frame, junk);
        assert_eq!(decode::<Request>(&mut frame), Err(FrameError::Malformed));
        assert_eq!(frames(&mut reader, &encode(&upsert(9)))[0].seq, 9);
    }

    #[test]
    fn oversized_frames_are_discarded_and_counted() {
        let mut reader = FrameReader::new();
        for _ in 0..MAX_FRAME_LEN + 10 {
            assert!(reader.push(1).is_none());
        }
        assert!(
            reader.push(0).is_none(),
            "the oversized frame is not returned"
        );
        assert_eq!(reader.oversized, 1);
        assert_eq!(frames(&mut reader, &encode(&upsert(4)))[0].seq, 4);
    }

    #[test]
    fn reports_round_trip() {
        let report = Report::Counters {
            seq: 5,
            counters: alloc::vec![Counter::new("acks", 3), Counter::new("naks", 0)],
        };
        let mut bytes = encode(&report);
        assert_eq!(decode::<Report>(&mut bytes), Ok(report));
    }

    #[test]
    fn a_full_password_page_round_trips_within_one_frame() {
        use crate::metadata::{InstancePassword, MAX_PASSWORD, MAX_PASSWORDS_PER_PAGE};
        let page = PasswordPage {
            upto: 40,
            more: true,
            passwords: (0..MAX_PASSWORDS_PER_PAGE as u8)
                .map(|i| InstancePassword {
                    mac: [0xfa, 0x16, 0x3e, 0, 0, i],
                    uuid: alloc::format!("d2c4a1b0-1111-4222-8333-4444444444{i:02}"),
                    // Zeros: the worst case of COBS, which replaces each one.
                    password: alloc::vec![0; MAX_PASSWORD],
                })
                .collect(),
        };
        let report = Report::MetadataPasswords { seq: 9, page };
        let mut bytes = encode(&report);
        assert!(bytes.len() < MAX_FRAME_LEN / 8, "{} bytes", bytes.len());
        let mut reader = FrameReader::new();
        let mut frame = None;
        for &b in &bytes {
            frame = reader.push(b).map(|f| f.to_vec());
        }
        assert_eq!(frame.as_deref(), Some(&bytes[..]));
        assert_eq!(decode::<Report>(&mut bytes), Ok(report));
    }

    /// Postcard numbers enum variants by position: a variant added anywhere but last
    /// would change how every later one is read by an appliance or manager built before.
    #[test]
    fn existing_variants_keep_their_wire_numbers() {
        let op_index = |op: Op| postcard::to_allocvec(&Request { seq: 1, op }).unwrap()[1];
        assert_eq!(op_index(Op::Ping), 0);
        assert_eq!(op_index(Op::Counters), 1);
        assert_eq!(op_index(Op::MetadataRemove { mac: [0; 6] }), 6);
        assert_eq!(op_index(Op::VxlanStaticRemove { mac: [0; 6] }), 11);
        assert_eq!(op_index(Op::MetadataPasswords { since: 0 }), 12);
        let report_index = |r: Report| postcard::to_allocvec(&r).unwrap()[0];
        assert_eq!(report_index(Report::Ready { generation: 0 }), 0);
        assert_eq!(
            report_index(Report::Counters {
                seq: 0,
                counters: Vec::new()
            }),
            3
        );
        assert_eq!(
            report_index(Report::MetadataPasswords {
                seq: 0,
                page: PasswordPage::default()
            }),
            4
        );
    }
}
