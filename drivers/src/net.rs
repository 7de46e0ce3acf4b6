//! virtio-net on our own queues. virtio-drivers gives us the transport (MMIO or PCI
//! discovery, status and feature registers, queue addresses); its `VirtIONetRaw` would
//! notify on every packet and cannot suppress interrupts (DESIGN.md), so the rings are ours:
//! receive buffers are recycled and transmit buffers published in batches, and [`VirtioNet::flush`]
//! kicks each queue at most once per batch.

use crate::virtqueue::{DESC_F_WRITE, DmaRegion, SplitQueue};
use alloc::vec::Vec;
use nanovnf_frame::{Fill, Offload, Transmit, checksum, segment};
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};

/// `virtio_net_hdr_v1`: with VIRTIO_F_VERSION_1 the header always has `num_buffers`.
pub const NET_HDR_LEN: usize = 12;
const FEATURE_CSUM: u64 = 1 << 0;
const FEATURE_GUEST_CSUM: u64 = 1 << 1;
const FEATURE_MTU: u64 = 1 << 3;
const FEATURE_MAC: u64 = 1 << 5;
const FEATURE_GUEST_TSO4: u64 = 1 << 7;
const FEATURE_GUEST_ECN: u64 = 1 << 9;
const FEATURE_HOST_TSO4: u64 = 1 << 11;
const FEATURE_HOST_ECN: u64 = 1 << 13;
const FEATURE_VERSION_1: u64 = 1 << 32;
/// Checksum offload both ways and TCP/IPv4 segmentation offload both ways (with ECN):
/// superframes of up to 64 KB pass with their header instead of being cut into MTU-sized
/// frames (DESIGN.md: the road to multi-gigabit under TCG).
const OFFLOAD_FEATURES: u64 = FEATURE_CSUM
    | FEATURE_GUEST_CSUM
    | FEATURE_GUEST_TSO4
    | FEATURE_GUEST_ECN
    | FEATURE_HOST_TSO4
    | FEATURE_HOST_ECN;
/// A buffer for the largest superframe: 64 KiB of IPv4 datagram, its Ethernet header and
/// the virtio-net header, rounded up. Without mergeable receive buffers every received
/// frame must fit one buffer.
pub const OFFLOAD_BUF_LEN: usize = 66 * 1024;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Ethernet header without FCS: the frame is at most MTU + this.
pub const ETHERNET_HEADER_LEN: usize = 14;

#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub rx_queue: u16,
    pub tx_queue: u16,
    /// Bytes per buffer, virtio-net header included.
    pub buf_len: usize,
    /// Negotiate checksum and TCP segmentation offloads (needs `buf_len` ≥
    /// [`OFFLOAD_BUF_LEN`]); only for appliances that forward frames and honour
    /// [`Offload`] both ways.
    pub offload: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            rx_queue: 128,
            tx_queue: 64,
            buf_len: 2048,
            offload: false,
        }
    }
}

impl NetConfig {
    /// Big buffers and offloads, for forwarders.
    pub fn offload() -> Self {
        Self {
            rx_queue: 64,
            tx_queue: 64,
            buf_len: OFFLOAD_BUF_LEN,
            offload: true,
        }
    }
}

/// The offloads a device agreed to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// We may send frames whose L4 checksum is left to the device (`NEEDS_CSUM`).
    pub tx_csum: bool,
    /// We may send TCP/IPv4 superframes (`HOST_TSO4`).
    pub tx_tso4: bool,
    /// The device may give us frames with partial checksums (`GUEST_CSUM`).
    pub rx_csum: bool,
    /// The device may give us TCP/IPv4 superframes (`GUEST_TSO4`).
    pub rx_tso4: bool,
}

impl Offloads {
    fn from_features(f: u64) -> Self {
        Self {
            tx_csum: f & FEATURE_CSUM != 0,
            tx_tso4: f & FEATURE_HOST_TSO4 != 0,
            rx_csum: f & FEATURE_GUEST_CSUM != 0,
            rx_tso4: f & FEATURE_GUEST_TSO4 != 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    NotANetworkDevice,
    NoVersion1,
    FeaturesRefused,
    QueueTooSmall { queue: u16, max: u32 },
    OutOfMemory,
}

/// Frames and drops seen by one NIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// The device returned a length shorter than the header or longer than the buffer.
    pub rx_bad_length: u64,
    /// A frame to send found no free buffer (or did not fit one) and was dropped.
    pub tx_no_buffer: u64,
}

/// A fixed pool of equally sized DMA buffers, buffer `i` at `i * buf_len`.
struct Buffers {
    mem: DmaRegion,
    buf_len: usize,
}

impl Buffers {
    fn new(count: u16, buf_len: usize) -> Result<Self, NetError> {
        let mem = DmaRegion::new(usize::from(count) * buf_len).ok_or(NetError::OutOfMemory)?;
        Ok(Self { mem, buf_len })
    }

    fn addr(&self, id: u16) -> u64 {
        self.mem.addr(usize::from(id) * self.buf_len)
    }
}

pub struct RxRing {
    q: SplitQueue,
    bufs: Buffers,
    pub stats: NetStats,
}

impl RxRing {
    pub fn new(size: u16, buf_len: usize) -> Result<Self, NetError> {
        let mut q = SplitQueue::new(size).ok_or(NetError::OutOfMemory)?;
        let bufs = Buffers::new(size, buf_len)?;
        for id in 0..size {
            q.set_desc(id, bufs.addr(id), buf_len as u32, DESC_F_WRITE);
            q.publish(id);
        }
        q.suppress_interrupts(true);
        Ok(Self {
            q,
            bufs,
            stats: NetStats::default(),
        })
    }

    /// The next received frame: (buffer id, frame length). Buffers with impossible
    /// lengths are counted, recycled and skipped.
    pub fn next_frame(&mut self) -> Option<(u16, usize)> {
        while let Some((id, len)) = self.q.pop_used() {
            let len = len as usize;
            if id >= self.q.size() {
                // A device bug; nothing to recycle.
                self.stats.rx_bad_length += 1;
                continue;
            }
            if len < NET_HDR_LEN || len > self.bufs.buf_len {
                self.stats.rx_bad_length += 1;
                self.recycle(id);
                continue;
            }
            self.stats.rx_frames += 1;
            return Some((id, len - NET_HDR_LEN));
        }
        None
    }

    /// The frame in buffer `id`, as returned by [`RxRing::next_frame`].
    pub fn frame(&self, id: u16, len: usize) -> &[u8] {
        let offset = usize::from(id) * self.bufs.buf_len + NET_HDR_LEN;
        // SAFETY: the device returned this buffer through the used ring and does not touch
        // it again until `recycle` publishes it; `len` was checked against the buffer size.
        unsafe { self.bufs.mem.slice(offset, len) }
    }

    /// The frame in buffer `id`, writable (a forwarder rewrites headers in place), with
    /// the offload facts of its virtio-net header.
    pub fn frame_mut(&mut self, id: u16, len: usize) -> (&mut [u8], Offload) {
        let offset = usize::from(id) * self.bufs.buf_len;
        // SAFETY: as in `frame`; `&mut self` makes this the only view of the buffer.
        let buf = unsafe { self.bufs.mem.slice_mut(offset, NET_HDR_LEN + len) };
        let (hdr, frame) = buf.split_at_mut(NET_HDR_LEN);
        let mut raw = [0u8; NET_HDR_LEN];
        raw.copy_from_slice(hdr);
        (frame, Offload::parse(&raw))
    }

    /// Gives buffer `id` back to the device (published now, kicked at the next flush).
    pub fn recycle(&mut self, id: u16) {
        self.q.publish(id);
    }

    pub fn has_frames(&self) -> bool {
        self.q.has_used()
    }
}

pub struct TxRing {
    q: SplitQueue,
    bufs: Buffers,
    /// What the device agreed to take: superframes, partial checksums.
    offloads: Offloads,
    free: Vec<u16>,
    /// Where a frame goes that has no buffer: it is built, counted and dropped.
    scratch: Vec<u8>,
    pub stats: NetStats,
}

impl TxRing {
    pub fn new(size: u16, buf_len: usize) -> Result<Self, NetError> {
        let mut q = SplitQueue::new(size).ok_or(NetError::OutOfMemory)?;
        // Completed transmissions are reclaimed lazily; they never need an interrupt.
        q.suppress_interrupts(true);
        Ok(Self {
            q,
            bufs: Buffers::new(size, buf_len)?,
            offloads: Offloads::default(),
            free: (0..size).rev().collect(),
            scratch: Vec::new(),
            stats: NetStats::default(),
        })
    }

    fn reclaim(&mut self) {
        while let Some((id, _)) = self.q.pop_used() {
            if id < self.q.size() {
                self.free.push(id);
            }
        }
    }

    /// Asks for an interrupt when the device has consumed transmitted buffers (a
    /// forwarder waiting for room); returns true when room is already there.
    pub fn arm_interrupts(&mut self) -> bool {
        self.q.suppress_interrupts(false);
        self.can_send()
    }

    pub fn disarm_interrupts(&mut self) {
        self.q.suppress_interrupts(true);
    }

    /// Largest frame one buffer holds.
    pub fn max_frame(&self) -> usize {
        self.bufs.buf_len - NET_HDR_LEN
    }

    pub fn can_send(&mut self) -> bool {
        if self.free.is_empty() {
            self.reclaim();
        }
        !self.free.is_empty()
    }

    /// Builds a frame of `len` bytes with `fill` and queues it (kicked at the next flush).
    /// Without a free buffer the frame is still built (callers expect their closure to
    /// run) but dropped and counted.
    pub fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        self.send_offload(&Offload::default(), len, fill)
    }

    /// [`TxRing::send`] with a virtio-net header carrying `offload` (a superframe or a
    /// partial checksum); the device must have agreed to it ([`VirtioNet::offloads`]).
    pub fn send_offload<R>(
        &mut self,
        offload: &Offload,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        if self.free.is_empty() {
            self.reclaim();
        }
        let id = match self.free.pop() {
            Some(id) if len <= self.max_frame() => id,
            other => {
                if let Some(id) = other {
                    self.free.push(id);
                }
                self.stats.tx_no_buffer += 1;
                self.scratch.clear();
                self.scratch.resize(len, 0);
                return fill(&mut self.scratch);
            }
        };
        let offset = usize::from(id) * self.bufs.buf_len;
        // SAFETY: `id` came from the free list, so the device does not own this buffer.
        let buf = unsafe { self.bufs.mem.slice_mut(offset, NET_HDR_LEN + len) };
        let (hdr, frame) = buf.split_at_mut(NET_HDR_LEN);
        let mut raw = [0u8; NET_HDR_LEN];
        offload.write(&mut raw);
        hdr.copy_from_slice(&raw);
        let r = fill(frame);
        let addr = self.bufs.addr(id);
        self.q.set_desc(id, addr, (NET_HDR_LEN + len) as u32, 0);
        self.q.publish(id);
        self.stats.tx_frames += 1;
        r
    }
}

/// The transmit rings of an appliance's NICs as one [`Transmit`] sink, NIC `i` being
/// `rings[i]`. A frame carrying an offload its device did not agree to is finished here
/// (checksum completed, superframe segmented) so engines need not care.
pub struct TxSet<'r, 'a> {
    pub rings: &'r mut [&'a mut TxRing],
    /// Where such a frame is built before it is finished.
    pub scratch: &'r mut Vec<u8>,
}

impl TxSet<'_, '_> {
    /// True when some ring has no free buffer: a forwarder stops taking frames until
    /// the device made room.
    pub fn any_full(&mut self) -> bool {
        self.rings.iter_mut().any(|r| !r.can_send())
    }
}

impl Transmit for TxSet<'_, '_> {
    fn send(&mut self, nic: usize, offload: &Offload, len: usize, fill: &mut Fill<'_>) -> bool {
        let Some(ring) = self.rings.get_mut(nic) else {
            return false;
        };
        let gso_unsupported = offload.is_gso() && !ring.offloads.tx_tso4;
        let csum_unsupported = offload.needs_csum() && !ring.offloads.tx_csum;
        if !gso_unsupported && !csum_unsupported {
            if !ring.can_send() || len > ring.max_frame() {
                ring.stats.tx_no_buffer += 1;
                return false;
            }
            ring.send_offload(offload, len, |b| fill(b));
            return true;
        }
        self.scratch.clear();
        self.scratch.resize(len, 0);
        fill(self.scratch);
        if gso_unsupported {
            let mss = usize::from(offload.gso_size);
            let mut all = true;
            let cut = segment::segment_tcp4(self.scratch, mss, &mut |seg_len, seg_fill| {
                if ring.can_send() && seg_len <= ring.max_frame() {
                    ring.send(seg_len, |b| seg_fill(b));
                } else {
                    ring.stats.tx_no_buffer += 1;
                    all = false;
                }
            });
            return cut.is_ok() && all;
        }
        let (start, offset) = (
            usize::from(offload.csum_start),
            usize::from(offload.csum_offset),
        );
        let udp = offset == 6;
        if !checksum::complete_partial(self.scratch, start, offset, udp)
            || !ring.can_send()
            || len > ring.max_frame()
        {
            ring.stats.tx_no_buffer += 1;
            return false;
        }
        let frame = &self.scratch[..];
        ring.send(len, |b| b.copy_from_slice(frame));
        true
    }
}

pub struct VirtioNet<T: Transport> {
    transport: T,
    mac: [u8; 6],
    mtu: u16,
    irq: Option<u8>,
    offloads: Offloads,
    pub rx: RxRing,
    pub tx: TxRing,
}

impl<T: Transport> VirtioNet<T> {
    /// Initialises the device (virtio 1.x §3.1.1) with our queues. `irq` is the legacy
    /// interrupt line the device raises, if the platform told us.
    pub fn new(mut transport: T, irq: Option<u8>, config: NetConfig) -> Result<Self, NetError> {
        if transport.device_type() != DeviceType::Network {
            return Err(NetError::NotANetworkDevice);
        }
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        if offered & FEATURE_VERSION_1 == 0 {
            return Err(NetError::NoVersion1);
        }
        let mut wanted = FEATURE_VERSION_1 | FEATURE_MAC | FEATURE_MTU;
        if config.offload && config.buf_len >= OFFLOAD_BUF_LEN {
            wanted |= OFFLOAD_FEATURES;
        }
        let mut accepted = offered & wanted;
        // Segmentation offload presupposes the matching checksum offload (virtio 1.x
        // §5.1.3.1).
        if accepted & FEATURE_GUEST_CSUM == 0 {
            accepted &= !(FEATURE_GUEST_TSO4 | FEATURE_GUEST_ECN);
        }
        if accepted & FEATURE_CSUM == 0 {
            accepted &= !(FEATURE_HOST_TSO4 | FEATURE_HOST_ECN);
        }
        transport.write_driver_features(accepted);
        let ok = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        transport.set_status(ok);
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(NetError::FeaturesRefused);
        }
        transport.set_guest_page_size(4096);

        let mut queue_len = |queue: u16, want: u16| -> Result<u16, NetError> {
            let max = transport.max_queue_size(queue);
            let len = u32::from(want).min(max);
            if len < 2 {
                return Err(NetError::QueueTooSmall { queue, max });
            }
            // Largest power of two not above `len`.
            Ok(1 << (31 - len.leading_zeros()))
        };
        // Superframe-sized buffers only in the directions the device agreed to.
        let small = NetConfig::default().buf_len;
        let rx_len = if config.offload && accepted & FEATURE_GUEST_TSO4 == 0 {
            small
        } else {
            config.buf_len
        };
        let tx_len = if config.offload && accepted & FEATURE_HOST_TSO4 == 0 {
            small
        } else {
            config.buf_len
        };
        let rx = RxRing::new(queue_len(RX_QUEUE, config.rx_queue)?, rx_len)?;
        let mut tx = TxRing::new(queue_len(TX_QUEUE, config.tx_queue)?, tx_len)?;
        tx.offloads = Offloads::from_features(accepted);
        for (index, q) in [(RX_QUEUE, &rx.q), (TX_QUEUE, &tx.q)] {
            transport.queue_set(
                index,
                u32::from(q.size()),
                q.desc_addr(),
                q.driver_addr(),
                q.device_addr(),
            );
        }
        let mac = if accepted & FEATURE_MAC != 0 {
            transport.read_config_space::<[u8; 6]>(0).unwrap_or([0; 6])
        } else {
            [0; 6]
        };
        let mtu = if accepted & FEATURE_MTU != 0 {
            transport.read_config_space::<u16>(10).unwrap_or(1500)
        } else {
            1500
        };
        transport.finish_init();
        let mut net = Self {
            transport,
            mac,
            mtu,
            irq,
            offloads: Offloads::from_features(accepted),
            rx,
            tx,
        };
        // The receive buffers were published before the queue was live.
        net.transport.notify(RX_QUEUE);
        Ok(net)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Overrides the MTU (the configuration knows the network's MTU better than QEMU).
    pub fn set_mtu(&mut self, mtu: u16) {
        let max = (self.tx.max_frame() - ETHERNET_HEADER_LEN) as u16;
        self.mtu = mtu.min(max);
    }

    pub fn irq(&self) -> Option<u8> {
        self.irq
    }

    /// What the device agreed to offload.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    pub fn stats(&self) -> NetStats {
        NetStats {
            rx_frames: self.rx.stats.rx_frames,
            rx_bad_length: self.rx.stats.rx_bad_length,
            tx_frames: self.tx.stats.tx_frames,
            tx_no_buffer: self.tx.stats.tx_no_buffer,
        }
    }

    /// Kicks each queue that has new buffers, once, if the device wants a kick.
    pub fn flush(&mut self) {
        if self.rx.q.should_notify() {
            self.transport.notify(RX_QUEUE);
        }
        if self.tx.q.should_notify() {
            self.transport.notify(TX_QUEUE);
        }
    }

    /// Acknowledges the device's interrupt so that its line drops.
    pub fn acknowledge_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    /// Asks for an interrupt on the next received frame; returns true when one is already
    /// waiting (then the caller polls instead of sleeping).
    pub fn arm_interrupts(&mut self) -> bool {
        self.rx.q.suppress_interrupts(false);
        self.rx.has_frames()
    }

    /// Stops receive interrupts while the caller polls.
    pub fn disarm_interrupts(&mut self) {
        self.rx.q.suppress_interrupts(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtqueue::fake::FakeDevice;

    /// The device side writes `frame` (after a zero header) into the next RX buffer.
    fn deliver(dev: &mut FakeDevice, rx: &mut RxRing, frame: &[u8]) {
        let (id, addr, len, flags) = dev.take(&rx.q).expect("a posted buffer");
        assert_eq!(flags, DESC_F_WRITE);
        assert!(frame.len() + NET_HDR_LEN <= len as usize);
        // SAFETY: the address is our own buffer pool memory (identity "DMA").
        unsafe {
            let p = addr as *mut u8;
            core::ptr::write_bytes(p, 0, NET_HDR_LEN);
            core::ptr::copy_nonoverlapping(frame.as_ptr(), p.add(NET_HDR_LEN), frame.len());
        }
        dev.complete(&mut rx.q, id, (NET_HDR_LEN + frame.len()) as u32);
    }

    #[test]
    fn receives_and_recycles_frames_in_a_batch() {
        let mut rx = RxRing::new(4, 2048).unwrap();
        let mut dev = FakeDevice::new();
        assert!(rx.q.should_notify(), "initial buffers need one kick");
        for round in 0..3u8 {
            for i in 0..4u8 {
                deliver(&mut dev, &mut rx, &[round, i, 0xAA]);
            }
            for i in 0..4u8 {
                let (id, len) = rx.next_frame().unwrap();
                assert_eq!(rx.frame(id, len), &[round, i, 0xAA]);
                rx.recycle(id);
            }
            assert!(rx.next_frame().is_none());
            assert!(
                rx.q.should_notify(),
                "one kick per batch of recycled buffers"
            );
            assert!(!rx.q.should_notify());
        }
        assert_eq!(rx.stats.rx_frames, 12);
    }

    #[test]
    fn bad_lengths_are_counted_and_recycled() {
        let mut rx = RxRing::new(4, 2048).unwrap();
        let mut dev = FakeDevice::new();
        let (id, _, _, _) = dev.take(&rx.q).unwrap();
        dev.complete(&mut rx.q, id, 3);
        let (id2, _, _, _) = dev.take(&rx.q).unwrap();
        dev.complete(&mut rx.q, id2, 4096);
        dev.complete(&mut rx.q, 999, 100);
        assert_eq!(rx.next_frame(), None);
        assert_eq!(rx.stats.rx_bad_length, 3);
        // Both real buffers went back to the device.
        assert!(dev.take(&rx.q).is_some());
    }

    #[test]
    fn transmit_batches_and_reclaims() {
        let mut tx = TxRing::new(4, 2048).unwrap();
        let mut dev = FakeDevice::new();
        for i in 0..4u8 {
            tx.send(60, |b| b.fill(i));
        }
        assert!(tx.q.should_notify());
        // Ring full: the fifth frame is built but dropped and counted.
        let ran = tx.send(60, |b| b.len());
        assert_eq!(ran, 60);
        assert_eq!(tx.stats.tx_no_buffer, 1);
        for i in 0..4u8 {
            let (id, addr, len, flags) = dev.take(&tx.q).unwrap();
            assert_eq!((len as usize, flags), (NET_HDR_LEN + 60, 0));
            // SAFETY: reading our own buffer memory at the descriptor's address.
            let payload =
                unsafe { core::slice::from_raw_parts((addr as *const u8).add(NET_HDR_LEN), 60) };
            assert!(payload.iter().all(|&b| b == i));
            dev.complete(&mut tx.q, id, 0);
        }
        assert!(tx.can_send());
        tx.send(60, |_| ());
        assert_eq!(tx.stats.tx_frames, 5);
    }

    #[test]
    fn offload_headers_pass_both_ways() {
        use nanovnf_frame::GsoKind;
        let tso = Offload {
            flags: nanovnf_frame::offload::F_NEEDS_CSUM,
            gso: GsoKind::Tcp4,
            ecn: false,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut tx = TxRing::new(4, OFFLOAD_BUF_LEN).unwrap();
        let mut dev = FakeDevice::new();
        tx.send_offload(&tso, 40_000, |b| b.fill(7));
        let (_, addr, len, _) = dev.take(&tx.q).unwrap();
        assert_eq!(len as usize, NET_HDR_LEN + 40_000);
        // SAFETY: reading our own buffer memory at the descriptor's address.
        let hdr: [u8; NET_HDR_LEN] = unsafe { *(addr as *const [u8; NET_HDR_LEN]) };
        assert_eq!(Offload::parse(&hdr), tso);

        let mut rx = RxRing::new(2, OFFLOAD_BUF_LEN).unwrap();
        let (id, addr, _, _) = dev.take(&rx.q).unwrap();
        let mut raw = [0u8; NET_HDR_LEN];
        tso.write(&mut raw);
        // SAFETY: the address is our own buffer pool memory (identity "DMA").
        unsafe {
            let p = addr as *mut u8;
            core::ptr::copy_nonoverlapping(raw.as_ptr(), p, NET_HDR_LEN);
            core::ptr::write_bytes(p.add(NET_HDR_LEN), 9, 60_000);
        }
        dev.complete(&mut rx.q, id, (NET_HDR_LEN + 60_000) as u32);
        let (id, len) = rx.next_frame().unwrap();
        let (frame, offload) = rx.frame_mut(id, len);
        assert_eq!(offload, tso);
        assert_eq!(frame.len(), 60_000);
        assert!(frame.iter().all(|&b| b == 9));
    }

    /// Ethernet + IPv4 + TCP with `payload` bytes, TCP checksum field left partial.
    fn tcp_superframe(payload: usize) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 54 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[46] = 5 << 4;
        f[47] = 0x18;
        f
    }

    #[test]
    fn a_set_segments_or_finishes_what_its_device_cannot_take() {
        use nanovnf_frame::GsoKind;
        let mut plain = TxRing::new(8, 2048).unwrap(); // no offloads agreed
        let mut scratch = Vec::new();
        let frame = tcp_superframe(4000);
        let tso = Offload {
            flags: nanovnf_frame::offload::F_NEEDS_CSUM,
            gso: GsoKind::Tcp4,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        let mut rings = [&mut plain];
        let mut set = TxSet {
            rings: &mut rings,
            scratch: &mut scratch,
        };
        assert!(set.send(0, &tso, frame.len(), &mut |b| b.copy_from_slice(&frame)));
        assert!(!set.send(1, &tso, 10, &mut |_| ()), "no such NIC");
        assert_eq!(plain.stats.tx_frames, 3, "4000 bytes at MSS 1448");
        let mut dev = FakeDevice::new();
        let mut total = 0;
        while let Some((_, addr, len, _)) = dev.take(&plain.q) {
            // SAFETY: reading our own buffer memory at the descriptor's address.
            let seg = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
            assert_eq!(&seg[..NET_HDR_LEN], &[0; NET_HDR_LEN], "plain frames");
            let tcp = &seg[NET_HDR_LEN + 34..];
            let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp.len() as u16);
            assert_eq!(checksum::fold(checksum::sum(tcp, pseudo)), 0xffff);
            total += tcp.len() - 20;
        }
        assert_eq!(total, 4000);
    }

    #[test]
    fn oversized_transmit_is_dropped_not_truncated() {
        let mut tx = TxRing::new(4, 2048).unwrap();
        tx.send(4000, |b| assert_eq!(b.len(), 4000));
        assert_eq!(tx.stats.tx_no_buffer, 1);
        assert_eq!(tx.stats.tx_frames, 0);
        assert!(!tx.q.should_notify());
    }
}
