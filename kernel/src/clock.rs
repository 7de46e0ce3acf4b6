//! Monotonic time from the TSC. The conversion factor comes from kvmclock under KVM or
//! from a short calibration against the PIT elsewhere; the arithmetic lives here so that it
//! is tested on the host.

/// Converts TSC ticks to nanoseconds: `ns = ticks * mult >> 32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscScale {
    pub mult: u64,
}

impl TscScale {
    pub fn from_hz(hz: u64) -> Option<Self> {
        if hz == 0 {
            return None;
        }
        let mult = (1_000_000_000u128 << 32) / u128::from(hz);
        u64::try_from(mult).ok().map(|mult| Self { mult })
    }

    /// kvmclock's `pvclock_vcpu_time_info` scale: `ns = ((ticks << shift) * mul) >> 32`
    /// (a negative shift shifts right).
    pub fn from_pvclock(mul: u32, shift: i8) -> Option<Self> {
        let mult = if shift >= 0 {
            u64::from(mul).checked_shl(u32::from(shift.unsigned_abs()))?
        } else {
            u64::from(mul) >> shift.unsigned_abs()
        };
        (mult != 0).then_some(Self { mult })
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64
    }

    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        let ticks = (u128::from(ns) << 32) / u128::from(self.mult);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    pub fn hz(&self) -> u64 {
        ((1_000_000_000u128 << 32) / u128::from(self.mult)) as u64
    }
}

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// Largest one-shot interval of the PIT in nanoseconds (65536 counts).
pub const PIT_MAX_NS: u64 = 65_536 * 1_000_000_000 / PIT_HZ;

/// TSC frequency from `tsc_delta` ticks measured over `pit_counts` PIT counts.
pub fn tsc_hz_from_pit(tsc_delta: u64, pit_counts: u64) -> u64 {
    if pit_counts == 0 {
        return 0;
    }
    (u128::from(tsc_delta) * u128::from(PIT_HZ) / u128::from(pit_counts)) as u64
}

/// PIT counts for a one-shot of `ns` nanoseconds, clamped to `1..=65535` (65536 is written
/// as 0, which we avoid so that the count read back is never ambiguous).
pub fn pit_counts_for(ns: u64) -> u16 {
    let counts = u128::from(ns) * u128::from(PIT_HZ) / 1_000_000_000;
    counts.clamp(1, 65_535) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_gigahertz_round_trips() {
        let s = TscScale::from_hz(3_000_000_000).unwrap();
        assert_eq!(s.ticks_to_ns(3_000_000_000), 999_999_999);
        assert!((s.ns_to_ticks(1_000_000) as i64 - 3_000_000).abs() <= 1);
        assert!((s.hz() as i64 - 3_000_000_000).abs() < 10);
        assert_eq!(TscScale::from_hz(0), None);
    }

    #[test]
    fn pvclock_scale_matches_frequency() {
        // A 2 GHz TSC as KVM describes it: mul = 2^31 (0.5 ns per tick), shift 0.
        let s = TscScale::from_pvclock(1 << 31, 0).unwrap();
        assert_eq!(s.ticks_to_ns(2_000), 1_000);
        // The same with shift -1 and a doubled multiplier.
        let t = TscScale::from_pvclock(u32::MAX, -1).unwrap();
        assert!((t.ticks_to_ns(2_000_000) as i64 - 1_000_000).abs() <= 1);
        // And with a positive shift.
        let u = TscScale::from_pvclock(1 << 30, 1).unwrap();
        assert_eq!(u.ticks_to_ns(2_000), 1_000);
    }

    #[test]
    fn pit_calibration_math() {
        // 1193 counts ~ 1 ms; a 2.5 GHz TSC advances ~2.5M ticks meanwhile.
        let hz = tsc_hz_from_pit(2_499_900, 1193);
        assert!((hz as i64 - 2_500_000_000).abs() < 1_000_000, "{hz}");
        assert_eq!(tsc_hz_from_pit(5, 0), 0);
    }

    #[test]
    fn pit_counts_are_clamped() {
        assert_eq!(pit_counts_for(0), 1);
        assert_eq!(pit_counts_for(1_000_000), 1193);
        assert_eq!(pit_counts_for(u64::MAX), 65_535);
        const { assert!(PIT_MAX_NS > 54_000_000 && PIT_MAX_NS < 55_000_000) };
    }
}
