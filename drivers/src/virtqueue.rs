//! A split virtqueue (virtio 1.x §2.7) written for batching: descriptors are published
//! without notifying, and [`SplitQueue::should_notify`] tells once per batch whether the
//! device asked to be kicked. Interrupts are suppressed with the avail ring's
//! NO_INTERRUPT flag while the driver is busy polling.
//!
//! The ring memory uses the legacy layout (used ring page-aligned after the avail ring),
//! which modern devices accept too. Addresses handed to the device are the memory's own
//! addresses: the appliance kernel identity-maps RAM, and host tests play the device on
//! the same memory.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};

const DESC_LEN: usize = 16;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Avail ring flag: please do not interrupt.
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used ring flag: please do not notify.
const USED_F_NO_NOTIFY: u16 = 1;
const PAGE: usize = 4096;

/// Page-aligned, zeroed memory shared with the device.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl DmaRegion {
    pub fn new(len: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1).next_multiple_of(PAGE), PAGE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(Self { ptr, layout })
    }

    /// The address the device uses for byte `offset` of the region.
    pub fn addr(&self, offset: usize) -> u64 {
        self.ptr.as_ptr() as u64 + offset as u64
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    /// Gives up ownership: the memory is never freed and stays at the returned address.
    /// Buffers that move between rings (zero-copy forwarding) live this way, so no ring's
    /// drop can free a buffer another ring still points the device at.
    pub fn leak(self) -> u64 {
        let addr = self.addr(0);
        core::mem::forget(self);
        addr
    }

    /// A raw pointer to byte `offset`; the caller keeps within `len()`.
    pub fn ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len());
        // SAFETY: callers stay inside the allocation (checked in debug builds).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// The bytes `[offset, offset + len)`.
    ///
    /// # Safety
    /// The device must not be writing these bytes while the slice lives.
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len());
        // SAFETY: in bounds (asserted); the caller guarantees the device is not writing.
        unsafe { core::slice::from_raw_parts(self.ptr(offset), len) }
    }

    /// The bytes `[offset, offset + len)`, mutably.
    ///
    /// # Safety
    /// The device must not be reading or writing these bytes while the slice lives.
    pub unsafe fn slice_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.len());
        // SAFETY: in bounds (asserted); the caller guarantees exclusive access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr(offset), len) }
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

pub struct SplitQueue {
    mem: DmaRegion,
    size: u16,
    avail_off: usize,
    used_off: usize,
    /// Next avail index we publish (a shadow of avail.idx).
    avail_idx: u16,
    /// avail.idx when the device was last considered for a notification.
    kicked_idx: u16,
    /// Next used index we consume.
    last_used: u16,
}

/// Byte offsets of a queue of `size` entries: (avail ring, used ring, total).
pub fn layout(size: u16) -> (usize, usize, usize) {
    let n = usize::from(size);
    let avail = DESC_LEN * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(PAGE);
    (avail, used, used + 6 + 8 * n)
}

impl SplitQueue {
    /// A queue of `size` entries (a power of two, at most 32768).
    pub fn new(size: u16) -> Option<Self> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return None;
        }
        let (avail_off, used_off, total) = layout(size);
        Some(Self {
            mem: DmaRegion::new(total)?,
            size,
            avail_off,
            used_off,
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn desc_addr(&self) -> u64 {
        self.mem.addr(0)
    }

    pub fn driver_addr(&self) -> u64 {
        self.mem.addr(self.avail_off)
    }

    pub fn device_addr(&self) -> u64 {
        self.mem.addr(self.used_off)
    }

    fn write16(&mut self, offset: usize, v: u16) {
        // SAFETY: every caller's offset is inside the ring layout; u16 fields are 2-aligned.
        unsafe { core::ptr::write_volatile(self.mem.ptr(offset).cast::<u16>(), v.to_le()) }
    }

    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as for write16.
        u16::from_le(unsafe { core::ptr::read_volatile(self.mem.ptr(offset).cast::<u16>()) })
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: used ring elements are 4-aligned and inside the layout.
        u32::from_le(unsafe { core::ptr::read_volatile(self.mem.ptr(offset).cast::<u32>()) })
    }

    /// Points descriptor `id` at a buffer. Out-of-range ids are ignored.
    pub fn set_desc(&mut self, id: u16, addr: u64, len: u32, flags: u16) {
        if id >= self.size {
            return;
        }
        let at = DESC_LEN * usize::from(id);
        // SAFETY: the descriptor lies inside the table; the device does not read a
        // descriptor until it is published.
        unsafe {
            let p = self.mem.ptr(at);
            core::ptr::write_volatile(p.cast::<u64>(), addr.to_le());
            core::ptr::write_volatile(p.add(8).cast::<u32>(), len.to_le());
            core::ptr::write_volatile(p.add(12).cast::<u16>(), flags.to_le());
            core::ptr::write_volatile(p.add(14).cast::<u16>(), 0);
        }
    }

    /// Makes descriptor `id` available to the device (no notification).
    pub fn publish(&mut self, id: u16) {
        let slot = usize::from(self.avail_idx % self.size);
        self.write16(self.avail_off + 4 + 2 * slot, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The ring entry must be visible before the index that covers it.
        fence(Ordering::Release);
        self.write16(self.avail_off + 2, self.avail_idx);
    }

    /// The next buffer the device has finished with: (descriptor id, bytes written).
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if !self.has_used() {
            return None;
        }
        // Read the element only after seeing the index that covers it.
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used % self.size);
        let at = self.used_off + 4 + 8 * slot;
        let id = self.read32(at);
        let len = self.read32(at + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Some((id as u16, len))
    }

    pub fn has_used(&self) -> bool {
        self.read16(self.used_off + 2) != self.last_used
    }

    /// True when descriptors were published since the last call and the device has not
    /// asked to be left alone: the caller then notifies once for the whole batch.
    pub fn should_notify(&mut self) -> bool {
        if self.avail_idx == self.kicked_idx {
            return false;
        }
        self.kicked_idx = self.avail_idx;
        // The published index must be visible before we read the device's flag
        // (store→load ordering needs a full fence).
        fence(Ordering::SeqCst);
        self.read16(self.used_off) & USED_F_NO_NOTIFY == 0
    }

    /// Asks the device not to interrupt (`true`) or to interrupt again (`false`).
    pub fn suppress_interrupts(&mut self, suppress: bool) {
        let flags = if suppress { AVAIL_F_NO_INTERRUPT } else { 0 };
        self.write16(self.avail_off, flags);
        fence(Ordering::SeqCst);
    }

    /// Test support: the raw ring memory, for a device model.
    pub fn memory(&self) -> &DmaRegion {
        &self.mem
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A device model that serves a [`SplitQueue`] from the other side of the ring.
    use super::*;

    pub struct FakeDevice {
        pub last_avail: u16,
        pub used_idx: u16,
    }

    impl FakeDevice {
        pub fn new() -> Self {
            Self {
                last_avail: 0,
                used_idx: 0,
            }
        }

        fn r16(q: &SplitQueue, off: usize) -> u16 {
            q.read16(off)
        }

        /// Takes the next available descriptor: (id, addr, len, flags).
        pub fn take(&mut self, q: &SplitQueue) -> Option<(u16, u64, u32, u16)> {
            let idx = Self::r16(q, q.avail_off + 2);
            if idx == self.last_avail {
                return None;
            }
            let slot = usize::from(self.last_avail % q.size);
            let id = Self::r16(q, q.avail_off + 4 + 2 * slot);
            self.last_avail = self.last_avail.wrapping_add(1);
            let at = DESC_LEN * usize::from(id);
            // SAFETY: reading a descriptor inside the table.
            let (addr, len, flags) = unsafe {
                let p = q.mem.ptr(at);
                (
                    core::ptr::read_volatile(p.cast::<u64>()),
                    core::ptr::read_volatile(p.add(8).cast::<u32>()),
                    core::ptr::read_volatile(p.add(12).cast::<u16>()),
                )
            };
            Some((id, addr, len, flags))
        }

        /// Returns descriptor `id` with `len` bytes written.
        pub fn complete(&mut self, q: &mut SplitQueue, id: u16, len: u32) {
            let slot = usize::from(self.used_idx % q.size);
            let at = q.used_off + 4 + 8 * slot;
            // SAFETY: writing a used element inside the ring.
            unsafe {
                core::ptr::write_volatile(q.mem.ptr(at).cast::<u32>(), u32::from(id));
                core::ptr::write_volatile(q.mem.ptr(at + 4).cast::<u32>(), len);
            }
            self.used_idx = self.used_idx.wrapping_add(1);
            q.write16(q.used_off + 2, self.used_idx);
        }

        pub fn set_no_notify(&self, q: &mut SplitQueue, on: bool) {
            q.write16(q.used_off, u16::from(on));
        }

        pub fn interrupts_suppressed(&self, q: &SplitQueue) -> bool {
            Self::r16(q, q.avail_off) & AVAIL_F_NO_INTERRUPT != 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeDevice;
    use super::*;

    #[test]
    fn rejects_bad_sizes() {
        assert!(SplitQueue::new(0).is_none());
        assert!(SplitQueue::new(3).is_none());
        assert!(SplitQueue::new(65535).is_none());
        assert!(SplitQueue::new(256).is_some());
    }

    #[test]
    fn legacy_layout_puts_used_ring_on_a_page_boundary() {
        let (avail, used, total) = layout(256);
        assert_eq!(avail, 4096);
        assert_eq!(used, 8192);
        assert_eq!(total, 8192 + 6 + 8 * 256);
        let q = SplitQueue::new(256).unwrap();
        assert_eq!(q.device_addr() - q.desc_addr(), 8192);
        assert_eq!(q.desc_addr() % 4096, 0);
    }

    #[test]
    fn descriptors_round_trip_through_the_device_across_index_wrap() {
        let mut q = SplitQueue::new(8).unwrap();
        let mut dev = FakeDevice::new();
        // Far more than 65536 / 8 laps would take too long; start near the wrap instead.
        q.avail_idx = 65530;
        q.kicked_idx = 65530;
        q.last_used = 65530;
        dev.last_avail = 65530;
        dev.used_idx = 65530;
        for round in 0..40u32 {
            let id = (round % 8) as u16;
            q.set_desc(id, 0x1000 + u64::from(round), 100 + round, DESC_F_WRITE);
            q.publish(id);
            let (got, addr, len, flags) = dev.take(&q).unwrap();
            assert_eq!(
                (got, addr, len, flags),
                (id, 0x1000 + u64::from(round), 100 + round, 2)
            );
            assert!(dev.take(&q).is_none());
            dev.complete(&mut q, got, round);
            assert_eq!(q.pop_used(), Some((id, round)));
            assert_eq!(q.pop_used(), None);
        }
    }

    #[test]
    fn one_notification_per_batch_and_none_when_device_declines() {
        let mut q = SplitQueue::new(8).unwrap();
        let dev = FakeDevice::new();
        assert!(!q.should_notify(), "nothing published yet");
        for id in 0..4 {
            q.set_desc(id, 0, 0, 0);
            q.publish(id);
        }
        assert!(q.should_notify());
        assert!(!q.should_notify(), "same batch");
        dev.set_no_notify(&mut q, true);
        q.publish(4);
        assert!(!q.should_notify(), "device set NO_NOTIFY");
    }

    #[test]
    fn interrupt_suppression_flag() {
        let mut q = SplitQueue::new(8).unwrap();
        let dev = FakeDevice::new();
        q.suppress_interrupts(true);
        assert!(dev.interrupts_suppressed(&q));
        q.suppress_interrupts(false);
        assert!(!dev.interrupts_suppressed(&q));
    }

    #[test]
    fn out_of_range_descriptor_is_ignored() {
        let mut q = SplitQueue::new(8).unwrap();
        q.set_desc(8, 1, 1, 0);
        q.set_desc(u16::MAX, 1, 1, 0);
    }
}
