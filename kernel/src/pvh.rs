//! The `hvm_start_info` structure a PVH loader hands to the entry point (Xen's
//! `arch-x86/hvm/start_info.h`), decoded from bytes so that it is tested on the host.

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of the version-1 structure in bytes.
pub const START_INFO_LEN: usize = 56;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_LEN: usize = 24;
/// E820 type of usable RAM.
pub const MEMMAP_RAM: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    pub version: u32,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    BadMagic(u32),
    /// Version 0 has no memory map, which the heap needs.
    NoMemoryMap,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl StartInfo {
    pub fn parse(bytes: &[u8; START_INFO_LEN]) -> Result<Self, StartInfoError> {
        let magic = u32_at(bytes, 0);
        if magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(magic));
        }
        let version = u32_at(bytes, 4);
        if version < 1 {
            return Err(StartInfoError::NoMemoryMap);
        }
        Ok(Self {
            version,
            cmdline_paddr: u64_at(bytes, 24),
            rsdp_paddr: u64_at(bytes, 32),
            memmap_paddr: u64_at(bytes, 40),
            memmap_entries: u32_at(bytes, 48),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl MemoryRegion {
    pub fn parse(entry: &[u8; MEMMAP_ENTRY_LEN]) -> Self {
        Self {
            addr: u64_at(entry, 0),
            size: u64_at(entry, 8),
            kind: u32_at(entry, 16),
        }
    }

    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// The largest usable range `[start, end)` of RAM at or above `floor` (the end of the
/// kernel image), clipped to `ceiling` (the identity-mapped limit).
pub fn heap_range(
    regions: impl IntoIterator<Item = MemoryRegion>,
    floor: u64,
    ceiling: u64,
) -> Option<(u64, u64)> {
    regions
        .into_iter()
        .filter(|r| r.kind == MEMMAP_RAM)
        .filter_map(|r| {
            let start = r.addr.max(floor);
            let end = r.end().min(ceiling);
            (start < end).then_some((start, end))
        })
        .max_by_key(|(start, end)| end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_info(version: u32) -> [u8; START_INFO_LEN] {
        let mut b = [0u8; START_INFO_LEN];
        b[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[24..32].copy_from_slice(&0x2_0000u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x1_0000_7000u64.to_le_bytes());
        b[48..52].copy_from_slice(&3u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_version_1() {
        let info = StartInfo::parse(&start_info(1)).unwrap();
        assert_eq!(info.cmdline_paddr, 0x2_0000);
        assert_eq!(info.memmap_paddr, 0x1_0000_7000);
        assert_eq!(info.memmap_entries, 3);
    }

    #[test]
    fn refuses_bad_magic_and_version_0() {
        let mut b = start_info(1);
        b[0] = 0;
        assert!(matches!(
            StartInfo::parse(&b),
            Err(StartInfoError::BadMagic(_))
        ));
        assert_eq!(
            StartInfo::parse(&start_info(0)),
            Err(StartInfoError::NoMemoryMap)
        );
    }

    #[test]
    fn memory_region_from_bytes() {
        let mut e = [0u8; MEMMAP_ENTRY_LEN];
        e[0..8].copy_from_slice(&0x10_0000u64.to_le_bytes());
        e[8..16].copy_from_slice(&0x30_0000u64.to_le_bytes());
        e[16..20].copy_from_slice(&1u32.to_le_bytes());
        let r = MemoryRegion::parse(&e);
        assert_eq!(
            (r.addr, r.end(), r.kind),
            (0x10_0000, 0x40_0000, MEMMAP_RAM)
        );
    }

    #[test]
    fn heap_takes_largest_ram_above_the_kernel() {
        let map = [
            MemoryRegion {
                addr: 0,
                size: 0x9_fc00,
                kind: 1,
            },
            MemoryRegion {
                addr: 0x9_fc00,
                size: 0x400,
                kind: 2,
            },
            MemoryRegion {
                addr: 0x10_0000,
                size: 0x30_0000,
                kind: 1,
            },
            MemoryRegion {
                addr: 0xfeff_c000,
                size: 0x4000,
                kind: 2,
            },
        ];
        assert_eq!(
            heap_range(map, 0x13_0000, 1 << 32),
            Some((0x13_0000, 0x40_0000))
        );
        // Nothing usable above the floor.
        assert_eq!(heap_range(map, 0x50_0000, 1 << 32), None);
        // Clipped by the mapped ceiling.
        assert_eq!(
            heap_range(map, 0x13_0000, 0x20_0000),
            Some((0x13_0000, 0x20_0000))
        );
    }
}
