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
/// Ring depth for a forwarder's MTU-sized buffers (when the device refused superframes).
const SMALL_FORWARDER_QUEUE: u16 = 256;
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
    /// With `offload`, the buffer size in a direction where the device refused
    /// superframes: one frame of the largest MTU.
    pub frame_buf_len: usize,
    /// Negotiate the transmit checksum offload alone (`CSUM`): the smoltcp device then
    /// leaves TCP checksums to the device. For an appliance that serves TCP itself.
    pub tx_checksum: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            rx_queue: 128,
            tx_queue: 64,
            buf_len: 2048,
            offload: false,
            frame_buf_len: 2048,
            tx_checksum: false,
        }
    }
}

impl NetConfig {
    /// Big buffers and offloads, for forwarders on networks whose largest MTU is
    /// `max_mtu` (a 9000-byte underlay needs bigger frame buffers when the device offers
    /// no offloads).
    pub fn offload(max_mtu: u16) -> Self {
        Self {
            rx_queue: 64,
            tx_queue: 64,
            buf_len: OFFLOAD_BUF_LEN,
            offload: true,
            frame_buf_len: frame_buf_len(max_mtu),
            tx_checksum: false,
        }
    }
}

/// A buffer for one frame of `mtu` bytes (a VLAN tag allowed), its Ethernet header and
/// the virtio-net header; never less than the default 2 KiB.
pub fn frame_buf_len(mtu: u16) -> usize {
    (usize::from(mtu) + ETHERNET_HEADER_LEN + 4 + NET_HDR_LEN)
        .next_multiple_of(64)
        .clamp(2048, OFFLOAD_BUF_LEN)
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

/// Bytes before each buffer's virtio-net header: room for a forwarder to write headers in
/// front of a received frame (VXLAN's 50) and send it from the same buffer.
pub const HEADROOM: usize = 64;

/// The buffers behind a ring's descriptors. A ring starts with `count` slots of its own
/// memory (`HEADROOM` + `buf_len` bytes each); a zero-copy hand-over ([`TxSet`]) gives a
/// receive slot to a transmit descriptor and one of that ring's free slots to the receive
/// descriptor, so slots move between rings. Their memory is therefore never freed (see
/// [`DmaRegion::leak`]), and each descriptor's slot is looked up in `addrs`. A slot
/// belongs to exactly one descriptor of one ring at a time.
struct Slots {
    addrs: Vec<u64>,
    stride: usize,
}

impl Slots {
    fn new(count: u16, buf_len: usize) -> Result<Self, NetError> {
        let stride = HEADROOM + buf_len;
        let base = DmaRegion::new(usize::from(count) * stride)
            .ok_or(NetError::OutOfMemory)?
            .leak();
        let addrs = (0..u64::from(count))
            .map(|i| base + i * stride as u64)
            .collect();
        Ok(Self { addrs, stride })
    }

    fn buf_len(&self) -> usize {
        self.stride - HEADROOM
    }

    /// Where descriptor `id`'s buffer (its virtio-net header) starts.
    fn buf(&self, id: u16) -> u64 {
        self.addrs[usize::from(id)] + HEADROOM as u64
    }

    /// `len` bytes of descriptor `id`'s buffer from `offset` (which may reach back into
    /// the headroom down to `-HEADROOM`).
    ///
    /// # Safety
    /// The device must not own the descriptor (it is free, or was returned through the
    /// used ring and not yet published again), and no other view of these bytes may live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes(&self, id: u16, offset: isize, len: usize) -> &mut [u8] {
        let from = HEADROOM
            .checked_add_signed(offset)
            .expect("inside the headroom");
        assert!(from + len <= self.stride, "inside the slot");
        // SAFETY: the slot is `stride` bytes of leaked (never freed) memory, in bounds
        // (asserted); the caller guarantees the device and everyone else keep off it.
        unsafe {
            core::slice::from_raw_parts_mut((self.addrs[usize::from(id)] as *mut u8).add(from), len)
        }
    }
}

pub struct RxRing {
    q: SplitQueue,
    slots: Slots,
    pub stats: NetStats,
}

impl RxRing {
    pub fn new(size: u16, buf_len: usize) -> Result<Self, NetError> {
        let q = SplitQueue::new(size).ok_or(NetError::OutOfMemory)?;
        let slots = Slots::new(size, buf_len)?;
        let mut rx = Self {
            q,
            slots,
            stats: NetStats::default(),
        };
        for id in 0..size {
            rx.recycle(id);
        }
        rx.q.suppress_interrupts(true);
        Ok(rx)
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
            if len < NET_HDR_LEN || len > self.slots.buf_len() {
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
        // SAFETY: the device returned this buffer through the used ring and does not touch
        // it again until `recycle` publishes it; `&self` lends no mutable view.
        unsafe { self.slots.bytes(id, NET_HDR_LEN as isize, len) }
    }

    /// The frame in buffer `id`, writable (a forwarder rewrites headers in place), with
    /// the offload facts of its virtio-net header.
    pub fn frame_mut(&mut self, id: u16, len: usize) -> (&mut [u8], Offload) {
        // SAFETY: as in `frame`; `&mut self` makes this the only view of the buffer.
        let buf = unsafe { self.slots.bytes(id, 0, NET_HDR_LEN + len) };
        let (hdr, frame) = buf.split_at_mut(NET_HDR_LEN);
        let mut raw = [0u8; NET_HDR_LEN];
        raw.copy_from_slice(hdr);
        (frame, Offload::parse(&raw))
    }

    /// Gives buffer `id` back to the device (published now, kicked at the next flush).
    pub fn recycle(&mut self, id: u16) {
        let (addr, len) = (self.slots.buf(id), self.slots.buf_len() as u32);
        self.q.set_desc(id, addr, len, DESC_F_WRITE);
        self.q.publish(id);
    }

    pub fn has_frames(&self) -> bool {
        self.q.has_used()
    }

    /// Bytes per buffer, virtio-net header included.
    pub fn buf_len(&self) -> usize {
        self.slots.buf_len()
    }
}

pub struct TxRing {
    q: SplitQueue,
    slots: Slots,
    /// What the device agreed to take: superframes, partial checksums.
    pub(crate) offloads: Offloads,
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
            slots: Slots::new(size, buf_len)?,
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
        self.slots.buf_len() - NET_HDR_LEN
    }

    pub fn can_send(&mut self) -> bool {
        if self.free.is_empty() {
            self.reclaim();
        }
        !self.free.is_empty()
    }

    /// True when the device agreed to carry `offload` as it is.
    fn takes(&self, offload: &Offload) -> bool {
        (!offload.is_gso() || self.offloads.tx_tso4)
            && (!offload.needs_csum() || self.offloads.tx_csum)
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
        self.send_with(len, |frame| (fill(frame), *offload))
    }

    /// [`TxRing::send`] for a frame of smoltcp's: where the device agreed to finish
    /// checksums, smoltcp left TCP's to it (`phy`'s capabilities) and the header says so.
    pub fn send_from_stack<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if !self.offloads.tx_csum {
            return self.send(len, fill);
        }
        self.send_with(len, |frame| {
            let r = fill(frame);
            (r, Offload::leave_tcp4_checksum(frame).unwrap_or_default())
        })
    }

    /// [`TxRing::send`] where `fill` also says, once the frame is written, what its
    /// virtio-net header carries; the device must have agreed to it.
    pub fn send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> (R, Offload)) -> R {
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
                return fill(&mut self.scratch).0;
            }
        };
        // SAFETY: `id` came from the free list, so the device does not own this buffer.
        let buf = unsafe { self.slots.bytes(id, 0, NET_HDR_LEN + len) };
        let (hdr, frame) = buf.split_at_mut(NET_HDR_LEN);
        let (r, offload) = fill(frame);
        let mut raw = [0u8; NET_HDR_LEN];
        offload.write(&mut raw);
        hdr.copy_from_slice(&raw);
        let addr = self.slots.buf(id);
        self.q.set_desc(id, addr, (NET_HDR_LEN + len) as u32, 0);
        self.q.publish(id);
        self.stats.tx_frames += 1;
        r
    }
}

/// What a zero-copy send covers: `head` (outer headers, written in front of the bytes)
/// and `len` bytes from byte `start` of the received frame.
#[derive(Debug, Clone, Copy)]
struct Span<'h> {
    head: &'h [u8],
    start: usize,
    len: usize,
}

/// Sends `span` of the frame in receive buffer `id` on `tx` without copying the frame: a
/// transmit descriptor takes the receive buffer (with `offload` and the span's head
/// written in front of its bytes, in the frame's stripped part or the headroom), and the
/// receive descriptor takes one of `tx`'s free buffers in exchange, published to the
/// device at once. False, with nothing changed, when that cannot be done (buffers of
/// another size, no free transmit buffer, an offload the device did not agree to, bytes
/// outside the frame, a head that does not fit); the caller copies instead.
fn hand_over(
    rx: &mut RxRing,
    id: u16,
    frame_len: usize,
    tx: &mut TxRing,
    offload: &Offload,
    span: Span<'_>,
) -> bool {
    // Where the transmitted virtio-net header goes, from the start of the received one.
    let at = span.start as isize - span.head.len() as isize;
    if rx.slots.stride != tx.slots.stride
        || id >= rx.q.size()
        || span
            .start
            .checked_add(span.len)
            .is_none_or(|end| end > frame_len)
        || NET_HDR_LEN + frame_len > rx.slots.buf_len()
        || at < -(HEADROOM as isize)
        || span.head.len() + span.len > tx.max_frame()
        || !tx.takes(offload)
        || !tx.can_send()
    {
        return false;
    }
    let Some(t) = tx.free.pop() else {
        return false;
    };
    // SAFETY: buffer `id` came back through the used ring and is not yet republished;
    // this function holds the only view of it.
    let front = unsafe { rx.slots.bytes(id, at, NET_HDR_LEN + span.head.len()) };
    let (hdr, head) = front.split_at_mut(NET_HDR_LEN);
    let mut raw = [0u8; NET_HDR_LEN];
    offload.write(&mut raw);
    hdr.copy_from_slice(&raw);
    head.copy_from_slice(span.head);
    let (ui, ti) = (usize::from(id), usize::from(t));
    core::mem::swap(&mut rx.slots.addrs[ui], &mut tx.slots.addrs[ti]);
    let addr = tx.slots.buf(t).wrapping_add_signed(at as i64);
    let len = NET_HDR_LEN + span.head.len() + span.len;
    tx.q.set_desc(t, addr, len as u32, 0);
    tx.q.publish(t);
    tx.stats.tx_frames += 1;
    rx.recycle(id);
    true
}

/// Outer headers a zero-copy send can put in front of a received frame: the headroom
/// less the transmitted virtio-net header (VXLAN needs 50).
pub const MAX_HEAD: usize = HEADROOM - NET_HDR_LEN;

/// A [`TxSet::send_parts`] of the frame being handled, done once the engine returns.
#[derive(Debug, Clone, Copy)]
struct HandOver {
    nic: usize,
    offload: Offload,
    head: [u8; MAX_HEAD],
    head_len: usize,
    start: usize,
    len: usize,
}

/// The transmit rings of an appliance's NICs as one [`Transmit`] sink, NIC `i` being
/// `rings[i]`. A frame carrying an offload its device did not agree to is finished here
/// (checksum completed, superframe segmented) so engines need not care. A received frame
/// the engine sends on with [`Transmit::send_bytes`] or [`Transmit::send_parts`] leaves
/// in its own buffer ([`TxSet::forward_one`]).
pub struct TxSet<'r, 'a> {
    rings: &'r mut [&'a mut TxRing],
    /// Where such a frame is built before it is finished.
    scratch: &'r mut Vec<u8>,
    /// The frame being handled: its address, length and buffer size.
    current: Option<(usize, usize, usize)>,
    pending: Option<HandOver>,
}

impl<'r, 'a> TxSet<'r, 'a> {
    pub fn new(rings: &'r mut [&'a mut TxRing], scratch: &'r mut Vec<u8>) -> Self {
        Self {
            rings,
            scratch,
            current: None,
            pending: None,
        }
    }

    /// True when some ring has no free buffer: a forwarder stops taking frames until
    /// the device made room.
    pub fn any_full(&mut self) -> bool {
        self.rings.iter_mut().any(|r| !r.can_send())
    }

    /// Takes the next frame from `rx` and gives it to `handle(frame, offload, self)`;
    /// afterwards the buffer goes back to the device, or out on a transmit ring when the
    /// engine sent (part of) the frame on with `send_bytes`/`send_parts`. False when `rx`
    /// had no frame.
    pub fn forward_one(
        &mut self,
        rx: &mut RxRing,
        handle: impl FnOnce(&mut [u8], &Offload, &mut Self),
    ) -> bool {
        let Some((id, len)) = rx.next_frame() else {
            return false;
        };
        let buf_len = rx.buf_len();
        let (frame, offload) = rx.frame_mut(id, len);
        self.current = Some((frame.as_ptr() as usize, len, buf_len));
        handle(frame, &offload, self);
        self.current = None;
        let Some(h) = self.pending.take() else {
            rx.recycle(id);
            return true;
        };
        let head = &h.head[..h.head_len];
        let span = Span {
            head,
            start: h.start,
            len: h.len,
        };
        if !hand_over(rx, id, len, &mut *self.rings[h.nic], &h.offload, span) {
            let bytes = &rx.frame(id, len)[h.start..h.start + h.len];
            self.send(h.nic, &h.offload, head.len() + h.len, &mut |b| {
                let (front, back) = b.split_at_mut(head.len());
                front.copy_from_slice(head);
                back.copy_from_slice(bytes);
            });
            rx.recycle(id);
        }
        true
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

    /// A slice of the frame being handled, which the device can take as it is with `head`
    /// in front (it fits the room before the slice), is handed over without a copy once
    /// the engine returns (one per frame); anything else is copied now.
    fn send_parts(&mut self, nic: usize, offload: &Offload, head: &[u8], bytes: &[u8]) -> bool {
        let at = bytes.as_ptr() as usize;
        if let Some((frame, frame_len, buf_len)) = self.current
            && self.pending.is_none()
            && head.len() <= MAX_HEAD
            && at >= frame
            && at + bytes.len() <= frame + frame_len
            && let Some(ring) = self.rings.get_mut(nic)
            && ring.slots.buf_len() == buf_len
            && ring.takes(offload)
            && head.len() + bytes.len() <= ring.max_frame()
        {
            if !ring.can_send() {
                ring.stats.tx_no_buffer += 1;
                return false;
            }
            let mut h = HandOver {
                nic,
                offload: *offload,
                head: [0; MAX_HEAD],
                head_len: head.len(),
                start: at - frame,
                len: bytes.len(),
            };
            h.head[..head.len()].copy_from_slice(head);
            self.pending = Some(h);
            return true;
        }
        let len = head.len() + bytes.len();
        self.send(nic, offload, len, &mut |b| {
            let (front, back) = b.split_at_mut(head.len());
            front.copy_from_slice(head);
            back.copy_from_slice(bytes);
        })
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
        if config.tx_checksum {
            wanted |= FEATURE_CSUM;
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
        let small = config.frame_buf_len;
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
        // A forwarder whose device refused superframes moves MTU-sized frames instead, many
        // more of them: deeper rings of small buffers cost little memory.
        let depth = |want: u16, len: usize| {
            if config.offload && len == small {
                SMALL_FORWARDER_QUEUE
            } else {
                want
            }
        };
        let rx = RxRing::new(queue_len(RX_QUEUE, depth(config.rx_queue, rx_len))?, rx_len)?;
        let mut tx = TxRing::new(queue_len(TX_QUEUE, depth(config.tx_queue, tx_len))?, tx_len)?;
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

    /// Kicks each queue that has new buffers, once, if the device wants a kick: transmit
    /// first. (QEMU answers a receive kick by delivering the frames it held back, inside
    /// the kick, under its global lock: a transmit kick after it waits for all of that.)
    pub fn flush(&mut self) {
        self.flush_tx();
        self.flush_rx();
    }

    /// Kicks the transmit queue if it has new frames and the device wants a kick.
    pub fn flush_tx(&mut self) {
        if self.tx.q.should_notify() {
            self.transport.notify(TX_QUEUE);
        }
    }

    /// Kicks the receive queue if it has new buffers and the device wants a kick.
    pub fn flush_rx(&mut self) {
        if self.rx.q.should_notify() {
            self.transport.notify(RX_QUEUE);
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
    fn the_stack_leaves_tcp_checksums_to_a_device_that_agreed() {
        let mut tx = TxRing::new(4, 2048).unwrap();
        let mut dev = FakeDevice::new();
        let tcp = tcp_superframe(100);
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        // Not agreed: frames go as built, with a plain header.
        tx.send_from_stack(tcp.len(), |b| b.copy_from_slice(&tcp));
        tx.offloads.tx_csum = true;
        tx.send_from_stack(tcp.len(), |b| b.copy_from_slice(&tcp));
        tx.send_from_stack(arp.len(), |b| b.copy_from_slice(&arp));
        let mut sent = Vec::new();
        while let Some((id, addr, len, _)) = dev.take(&tx.q) {
            sent.push(read(addr, len));
            dev.complete(&mut tx.q, id, 0);
        }
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0][..NET_HDR_LEN], [0; NET_HDR_LEN]);
        assert_eq!(sent[0][NET_HDR_LEN..], tcp[..]);
        let hdr: [u8; NET_HDR_LEN] = sent[1][..NET_HDR_LEN].try_into().unwrap();
        let o = Offload::parse(&hdr);
        assert!(o.needs_csum() && !o.is_gso());
        let mut finished = sent[1][NET_HDR_LEN..].to_vec();
        let (start, offset) = (usize::from(o.csum_start), usize::from(o.csum_offset));
        assert!(nanovnf_frame::checksum::complete_partial(
            &mut finished,
            start,
            offset,
            false
        ));
        let pseudo = nanovnf_frame::checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 120);
        let segment = &finished[start..];
        assert_eq!(
            nanovnf_frame::checksum::fold(nanovnf_frame::checksum::sum(segment, pseudo)),
            0xffff,
            "the device's rule yields a valid checksum"
        );
        assert_eq!(
            sent[2][..NET_HDR_LEN],
            [0; NET_HDR_LEN],
            "not TCP: as built"
        );
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
        let mut set = TxSet::new(&mut rings, &mut scratch);
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

    /// The bytes a device reads for a descriptor.
    fn read(addr: u64, len: u32) -> Vec<u8> {
        // SAFETY: reading our own buffer memory at the descriptor's address.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec()
    }

    #[test]
    fn a_forwarded_frame_leaves_in_its_receive_buffer() {
        let mut rx = RxRing::new(2, 2048).unwrap();
        let mut tx = TxRing::new(2, 2048).unwrap();
        let (mut rx_dev, mut tx_dev) = (FakeDevice::new(), FakeDevice::new());
        let (first, rx_addr, _, _) = rx_dev.take(&rx.q).unwrap();
        let frame: Vec<u8> = (0..100u8).collect();
        // SAFETY: the address is our own buffer pool memory (identity "DMA").
        unsafe {
            let p = rx_addr as *mut u8;
            core::ptr::write_bytes(p, 0, NET_HDR_LEN);
            core::ptr::copy_nonoverlapping(frame.as_ptr(), p.add(NET_HDR_LEN), frame.len());
        }
        rx_dev.complete(&mut rx.q, first, (NET_HDR_LEN + frame.len()) as u32);
        let mut scratch = Vec::new();
        let mut rings = [&mut tx];
        let mut set = TxSet::new(&mut rings, &mut scratch);
        assert!(set.forward_one(&mut rx, |f, _, set| {
            f[10] = 0xEE;
            // A decapsulation: the first 10 bytes stay behind.
            assert!(set.send_bytes(0, &Offload::default(), &f[10..]));
            // A second copy of the same frame is copied at once.
            assert!(set.send_bytes(0, &Offload::default(), &f[..20]));
        }));
        assert!(!set.forward_one(&mut rx, |_, _, _| unreachable!()));

        let (_, copy_addr, copy_len, _) = tx_dev.take(&tx.q).unwrap();
        let mut rewritten = frame.clone();
        rewritten[10] = 0xEE;
        assert_eq!(read(copy_addr, copy_len)[NET_HDR_LEN..], rewritten[..20]);
        let (sent, addr, len, _) = tx_dev.take(&tx.q).unwrap();
        assert_eq!(addr, rx_addr + 10, "no copy: the receive buffer itself");
        let bytes = read(addr, len);
        assert_eq!(bytes[..NET_HDR_LEN], [0; NET_HDR_LEN]);
        assert_eq!(bytes[NET_HDR_LEN..], rewritten[10..]);
        assert_eq!(tx.stats.tx_frames, 2);

        // The receive descriptor went back to the device with another buffer.
        let mut seen = Vec::new();
        while let Some((id, addr, len, _)) = rx_dev.take(&rx.q) {
            assert_eq!(len as usize, 2048);
            seen.push((id, addr));
        }
        assert_eq!(
            seen.len(),
            2,
            "the untouched buffer, and the used one republished"
        );
        assert_eq!(seen[1].0, first);
        assert_ne!(seen[1].1, rx_addr, "swapped for a transmit buffer");
        // Frames received into the swapped buffer read back right.
        // SAFETY: the address is our own buffer pool memory (identity "DMA").
        unsafe {
            let p = seen[1].1 as *mut u8;
            core::ptr::write_bytes(p, 0, NET_HDR_LEN);
            core::ptr::write_bytes(p.add(NET_HDR_LEN), 0x42, 60);
        }
        rx_dev.complete(&mut rx.q, first, (NET_HDR_LEN + 60) as u32);
        let (id, len) = rx.next_frame().unwrap();
        assert_eq!(rx.frame(id, len), &[0x42; 60]);
        rx.recycle(id);

        // Once the device is done with it, the handed-over buffer serves new frames.
        tx_dev.complete(&mut tx.q, sent, 0);
        assert!(tx.can_send());
    }

    #[test]
    fn outer_headers_go_into_the_headroom() {
        let mut rx = RxRing::new(2, 2048).unwrap();
        let mut tx = TxRing::new(2, 2048).unwrap();
        let (mut rx_dev, mut tx_dev) = (FakeDevice::new(), FakeDevice::new());
        let (_, rx_addr, _, _) = rx_dev.take(&rx.q).unwrap();
        rx_dev.complete(&mut rx.q, 0, 0); // a bad length: recycled
        deliver(&mut rx_dev, &mut rx, &[5; 1400]);
        let mut scratch = Vec::new();
        let outer = [0xAB; 50];
        let mut rings = [&mut tx];
        let mut set = TxSet::new(&mut rings, &mut scratch);
        while set.forward_one(&mut rx, |f, _, set| {
            assert!(set.send_parts(0, &Offload::default(), &outer, f));
        }) {}
        let (_, addr, len, _) = tx_dev.take(&tx.q).unwrap();
        assert_ne!(addr, rx_addr, "the second buffer took the frame");
        let bytes = read(addr, len);
        assert_eq!(bytes.len(), NET_HDR_LEN + 50 + 1400);
        assert_eq!(bytes[..NET_HDR_LEN], [0; NET_HDR_LEN]);
        assert_eq!(bytes[NET_HDR_LEN..][..50], outer);
        assert!(bytes[NET_HDR_LEN + 50..].iter().all(|&b| b == 5));
        // No room for more than MAX_HEAD in front: copied instead, still right.
        deliver(&mut rx_dev, &mut rx, &[6; 100]);
        let big = [0xCD; MAX_HEAD + 1];
        let mut rings = [&mut tx];
        let mut set = TxSet::new(&mut rings, &mut scratch);
        set.forward_one(&mut rx, |f, _, set| {
            assert!(set.send_parts(0, &Offload::default(), &big, f));
        });
        let (_, addr, len, _) = tx_dev.take(&tx.q).unwrap();
        let bytes = read(addr, len);
        assert_eq!(bytes[NET_HDR_LEN..][..MAX_HEAD + 1], big);
        assert_eq!(bytes[NET_HDR_LEN + MAX_HEAD + 1..], [6; 100]);
    }

    #[test]
    fn a_frame_is_copied_where_it_cannot_be_handed_over() {
        // Receive buffers smaller than the transmit ring's: buffers cannot swap.
        let mut rx = RxRing::new(2, 2048).unwrap();
        let mut tx = TxRing::new(2, OFFLOAD_BUF_LEN).unwrap();
        let mut rx_dev = FakeDevice::new();
        let mut tx_dev = FakeDevice::new();
        deliver(&mut rx_dev, &mut rx, &[7; 80]);
        let mut scratch = Vec::new();
        let mut rings = [&mut tx];
        let mut set = TxSet::new(&mut rings, &mut scratch);
        let other = [9u8; 30];
        set.forward_one(&mut rx, |f, _, set| {
            assert!(set.send_bytes(0, &Offload::default(), f));
            assert!(set.send_bytes(0, &Offload::default(), &other));
            // Partial checksums need a device that agreed to them: copied and finished.
            let partial = Offload {
                flags: nanovnf_frame::offload::F_NEEDS_CSUM,
                csum_start: 1000,
                csum_offset: 6,
                ..Offload::default()
            };
            assert!(
                !set.send_bytes(0, &partial, f),
                "csum_start beyond the frame"
            );
        });
        let (_, a, l, _) = tx_dev.take(&tx.q).unwrap();
        assert_eq!(read(a, l)[NET_HDR_LEN..], [7; 80], "copied at once");
        let (_, a, l, _) = tx_dev.take(&tx.q).unwrap();
        assert_eq!(read(a, l)[NET_HDR_LEN..], [9; 30]);
        // The receive buffer went back as it was.
        let (_, _, len, _) = rx_dev.take(&rx.q).unwrap();
        assert_eq!(len as usize, 2048);
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
