//! The kernel command line: `virtio_mmio.device=` entries that QEMU's microvm appends, and
//! `nanovnf.*` keys that override boot configuration.

use core::str::FromStr;

/// One virtio-mmio device announced as `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub size: u64,
    pub irq: u8,
}

fn parse_number(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => u64::from_str(digits).ok()?,
    };
    value.checked_mul(mult)
}

impl MmioDevice {
    pub fn parse(value: &str) -> Option<Self> {
        let (size, rest) = value.split_once('@')?;
        let mut parts = rest.split(':');
        let base = parse_number(parts.next()?)?;
        let irq = u8::try_from(parse_number(parts.next()?)?).ok()?;
        Some(Self {
            base,
            size: parse_number(size)?,
            irq,
        })
    }
}

/// Iterates `key=value` words of the command line (words without `=` yield an empty value).
pub fn words(cmdline: &str) -> impl Iterator<Item = (&str, &str)> {
    cmdline
        .split_ascii_whitespace()
        .map(|w| w.split_once('=').unwrap_or((w, "")))
}

/// The value of the last occurrence of `key`, as Linux does for repeated parameters.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    words(cmdline)
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .last()
}

/// Every virtio-mmio device the command line announces; malformed entries are skipped.
pub fn mmio_devices(cmdline: &str) -> impl Iterator<Item = MmioDevice> + '_ {
    words(cmdline)
        .filter(|(k, _)| *k == "virtio_mmio.device")
        .filter_map(|(_, v)| MmioDevice::parse(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_microvm_entries() {
        let line = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                    virtio_mmio.device=512@0xfeb00c00:11 nanovnf.log=debug";
        let devs: [MmioDevice; 2] = {
            let mut it = mmio_devices(line);
            [it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(
            devs[0],
            MmioDevice {
                base: 0xfeb0_0e00,
                size: 512,
                irq: 12
            }
        );
        assert_eq!(
            devs[1],
            MmioDevice {
                base: 0xfeb0_0c00,
                size: 512,
                irq: 11
            }
        );
        assert_eq!(value(line, "nanovnf.log"), Some("debug"));
        assert_eq!(value(line, "missing"), None);
    }

    #[test]
    fn accepts_suffixes_and_ids_and_skips_garbage() {
        assert_eq!(
            MmioDevice::parse("4K@0x1000:5:3"),
            Some(MmioDevice {
                base: 0x1000,
                size: 4096,
                irq: 5
            })
        );
        for bad in [
            "",
            "512",
            "512@",
            "512@zz:1",
            "512@0x10",
            "512@0x10:999",
            "x@0x10:1",
        ] {
            assert_eq!(MmioDevice::parse(bad), None, "{bad}");
        }
        assert_eq!(mmio_devices("virtio_mmio.device=garbage").count(), 0);
    }

    #[test]
    fn last_occurrence_wins() {
        assert_eq!(value("a=1 a=2 b", "a"), Some("2"));
        assert_eq!(value("a=1 a=2 b", "b"), Some(""));
    }
}
