//! The one thing shared across the VM boundary: the boot configuration the manager writes
//! into fw_cfg, and the control-channel messages ([`control`]). Encoded with postcard inside a
//! small envelope (magic, length, CRC-32) so a truncated or corrupt blob is refused with a
//! precise reason instead of being half-parsed.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod control;
pub mod dhcp;
pub mod metadata;
pub mod router;
pub mod vxlan;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize};

/// Name of the fw_cfg file that carries the encoded [`BootConfig`].
pub const FW_CFG_NAME: &str = "opt/nanovnf/config";

/// First bytes of every encoded configuration blob.
pub const MAGIC: [u8; 4] = *b"NVC1";

/// Envelope: magic (4) + payload length (u32 LE) + CRC-32 of the payload (u32 LE).
pub const HEADER_LEN: usize = 12;

/// Upper bound on an accepted blob; anything larger is refused before allocation. A
/// metadata appliance's full network (250 instances with 64 KiB of user data each, keys
/// and names besides) encodes to about 17 MiB.
pub const MAX_BLOB_LEN: usize = 24 << 20;

/// Everything an appliance needs to start serving.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Incremented by the manager each time it (re)configures this appliance; the appliance
    /// announces it in its `READY <generation>` line.
    pub generation: u64,
    /// Human-readable name, used in the appliance's log lines.
    pub name: String,
    /// Serial log verbosity.
    pub log_level: LogLevel,
    /// The network interfaces, matched to virtio-net devices by MAC address.
    pub nics: Vec<NicConfig>,
    /// What the appliance does.
    pub role: Role,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// One virtio-net interface of the appliance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    pub mac: [u8; 6],
    pub addresses: Vec<Ipv4Cidr>,
    pub mtu: u16,
}

/// An IPv4 address with its prefix length, e.g. 192.168.1.2/24.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Self { addr, prefix_len }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The appliance's function. Each later appliance adds its variant here.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Answers ARP and ICMP echo on every NIC address; the foundation's proof of life.
    Ping,
    /// A DHCP server for one network (first NIC), like Neutron's dnsmasq.
    Dhcp(dhcp::DhcpRole),
    /// The OpenStack and EC2 metadata service at 169.254.169.254 for one network (first
    /// NIC), like Neutron's haproxy + metadata agent + Nova's API in one.
    Metadata(metadata::MetadataRole),
    /// A router between tenant subnets and an external network: forwarding, SNAT and
    /// floating IPs, like Neutron's L3 agent's namespace.
    Router(router::RouterRole),
    /// A VTEP joining the tenant bridge (NIC 0) to its VXLAN overlay (NIC 1).
    Vxlan(vxlan::VxlanRole),
    /// Copies every frame from NIC 0 to NIC 1 and back, with no processing: the floor the
    /// virtio-net I/O path allows, for benchmarks.
    Wire,
}

/// Why a configuration blob was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Shorter than the envelope header.
    Truncated { len: usize },
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// The header's length does not match the bytes that follow it.
    LengthMismatch { declared: usize, actual: usize },
    /// The payload's CRC-32 does not match the header.
    BadChecksum { expected: u32, actual: u32 },
    /// The payload is not a valid postcard-encoded [`BootConfig`].
    Malformed,
    /// The blob exceeds [`MAX_BLOB_LEN`].
    TooLarge { len: usize },
}

impl ConfigError {
    /// A distinct, stable code per reason: the appliance exits QEMU with it.
    pub const fn code(&self) -> u8 {
        match self {
            ConfigError::Truncated { .. } => 1,
            ConfigError::BadMagic => 2,
            ConfigError::LengthMismatch { .. } => 3,
            ConfigError::BadChecksum { .. } => 4,
            ConfigError::Malformed => 5,
            ConfigError::TooLarge { .. } => 6,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Truncated { len } => {
                write!(
                    f,
                    "config blob truncated: {len} bytes, header needs {HEADER_LEN}"
                )
            }
            ConfigError::BadMagic => write!(f, "config blob has bad magic (expected NVC1)"),
            ConfigError::LengthMismatch { declared, actual } => write!(
                f,
                "config blob length mismatch: header says {declared} bytes, {actual} present"
            ),
            ConfigError::BadChecksum { expected, actual } => write!(
                f,
                "config blob checksum mismatch: header {expected:#010x}, payload {actual:#010x}"
            ),
            ConfigError::Malformed => write!(f, "config payload is not a valid BootConfig"),
            ConfigError::TooLarge { len } => {
                write!(f, "config blob too large: {len} bytes (max {MAX_BLOB_LEN})")
            }
        }
    }
}

/// Encodes `config` into the envelope the appliance's [`decode`] accepts.
pub fn encode(config: &BootConfig) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail: postcard only errors on unsupported
    // types or a full fixed buffer, neither of which exists here.
    let payload = postcard::to_allocvec(config).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks the envelope's header and returns the total blob length it declares.
pub fn declared_len(header: &[u8]) -> Result<usize, ConfigError> {
    if header.len() < HEADER_LEN {
        return Err(ConfigError::Truncated { len: header.len() });
    }
    if header[..4] != MAGIC {
        return Err(ConfigError::BadMagic);
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let total = HEADER_LEN.saturating_add(len);
    if total > MAX_BLOB_LEN {
        return Err(ConfigError::TooLarge { len: total });
    }
    Ok(total)
}

/// Validates the envelope and decodes the configuration.
pub fn decode(blob: &[u8]) -> Result<BootConfig, ConfigError> {
    let total = declared_len(blob)?;
    if blob.len() != total {
        return Err(ConfigError::LengthMismatch {
            declared: total - HEADER_LEN,
            actual: blob.len().saturating_sub(HEADER_LEN),
        });
    }
    let expected = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]);
    let payload = &blob[HEADER_LEN..];
    let actual = crc32(payload);
    if expected != actual {
        return Err(ConfigError::BadChecksum { expected, actual });
    }
    postcard::from_bytes(payload).map_err(|_| ConfigError::Malformed)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it). Bitwise: the blob is read once at
/// boot, so a table would cost more image bytes than it saves time.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> BootConfig {
        BootConfig {
            generation: 7,
            name: "ping-1".into(),
            log_level: LogLevel::Info,
            nics: vec![NicConfig {
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                addresses: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 2), 24)],
                mtu: 1500,
            }],
            role: Role::Ping,
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip() {
        let blob = encode(&sample());
        assert_eq!(&blob[..4], b"NVC1");
        assert_eq!(declared_len(&blob), Ok(blob.len()));
        assert_eq!(decode(&blob), Ok(sample()));
    }

    #[test]
    fn refuses_truncation_magic_length_and_checksum() {
        let blob = encode(&sample());
        assert_eq!(decode(&blob[..5]), Err(ConfigError::Truncated { len: 5 }));
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(ConfigError::BadMagic));
        assert!(matches!(
            decode(&blob[..blob.len() - 1]),
            Err(ConfigError::LengthMismatch { .. })
        ));
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode(&flipped),
            Err(ConfigError::BadChecksum { .. })
        ));
    }

    #[test]
    fn refuses_a_valid_envelope_around_garbage() {
        let payload = [0xFFu8; 9];
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC);
        blob.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        blob.extend_from_slice(&crc32(&payload).to_le_bytes());
        blob.extend_from_slice(&payload);
        assert_eq!(decode(&blob), Err(ConfigError::Malformed));
    }

    #[test]
    fn refuses_absurd_lengths_before_allocating() {
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC);
        blob.extend_from_slice(&u32::MAX.to_le_bytes());
        blob.extend_from_slice(&[0; 4]);
        assert!(matches!(decode(&blob), Err(ConfigError::TooLarge { .. })));
    }

    #[test]
    fn error_codes_are_distinct() {
        let errors = [
            ConfigError::Truncated { len: 0 },
            ConfigError::BadMagic,
            ConfigError::LengthMismatch {
                declared: 0,
                actual: 0,
            },
            ConfigError::BadChecksum {
                expected: 0,
                actual: 0,
            },
            ConfigError::Malformed,
            ConfigError::TooLarge { len: 0 },
        ];
        for (i, a) in errors.iter().enumerate() {
            for b in &errors[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
    }
}
