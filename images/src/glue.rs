//! NIC matching and the event-loop adapter every image uses.

use alloc::vec::Vec;
use nanovnf_drivers::NetConfig;
use nanovnf_drivers::discover::{self, Nic};
use nanovnf_drivers::net::{RxRing, TxRing, TxSet};
use nanovnf_frame::Offload;
use nanovnf_kernel::{Boot, exit_code, fatal};
use nanovnf_schema::NicConfig;

fn mac_str(mac: [u8; 6]) -> impl core::fmt::Display {
    struct Mac([u8; 6]);
    impl core::fmt::Display for Mac {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let m = self.0;
            write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )
        }
    }
    Mac(mac)
}

/// The virtio-net devices in the order of `boot.config.nics`, matched by MAC address.
/// A configured NIC without a device stops the appliance with a line naming its MAC.
pub fn configured_nics(boot: &Boot) -> Vec<(NicConfig, Nic)> {
    configured_nics_with(boot, NetConfig::default())
}

/// [`configured_nics`] with queues set up by `net` (forwarders ask for offloads).
pub fn configured_nics_with(boot: &Boot, net: NetConfig) -> Vec<(NicConfig, Nic)> {
    log::debug!("discovering nics");
    let mut found = discover::network_devices(&boot.mmio_devices, net);
    log::debug!("{} nics up", found.len());
    let mut out = Vec::with_capacity(boot.config.nics.len());
    for cfg in &boot.config.nics {
        let Some(i) = found.iter().position(|nic| nic.mac() == cfg.mac) else {
            fatal(
                exit_code::APPLIANCE,
                format_args!(
                    "nic {} from the config has no virtio-net device ({} found)",
                    mac_str(cfg.mac),
                    found.len()
                ),
            )
        };
        let mut nic = found.swap_remove(i);
        nic.set_mtu(cfg.mtu);
        out.push((cfg.clone(), nic));
    }
    out
}

/// The largest MTU among the configured NICs (1500 when none says more).
pub fn max_mtu(boot: &Boot) -> u16 {
    boot.config.nics.iter().map(|n| n.mtu).fold(1500, u16::max)
}

/// Interrupt handling shared by images: acknowledge the NICs behind fired lines, arm and
/// disarm receive interrupts around a halt. They take iterators so that the sleep/wake
/// path never allocates.
pub fn acknowledge<'a>(nics: impl IntoIterator<Item = &'a mut Nic>, irqs: u16) {
    for nic in nics {
        if nic.irq().is_some_and(|irq| irqs & (1 << irq) != 0) {
            nic.acknowledge_interrupt();
        }
    }
}

/// Arms every NIC (all of them, even once one has work) and reports whether any has work.
pub fn arm<'a>(nics: impl IntoIterator<Item = &'a mut Nic>) -> bool {
    nics.into_iter()
        .fold(false, |pending, nic| nic.arm_interrupts() | pending)
}

pub fn disarm<'a>(nics: impl IntoIterator<Item = &'a mut Nic>) {
    for nic in nics {
        nic.disarm_interrupts();
    }
}

/// A forwarder's receive/transmit pass over all its NICs: every received frame goes to
/// `handle(nic index, frame, offload, transmit set)` until the receive rings are empty or
/// some transmit ring is full (then the rest waits in the device: back-pressure instead of
/// drops). A frame the engine sends on with `send_bytes` leaves in its own buffer
/// ([`TxSet::forward_one`]).
pub fn forward_pass(
    nics: &mut [Nic],
    scratch: &mut Vec<u8>,
    mut handle: impl FnMut(usize, &mut [u8], &Offload, &mut TxSet<'_, '_>),
) -> Pass {
    let mut rxs: Vec<&mut RxRing> = Vec::with_capacity(nics.len());
    let mut txs: Vec<&mut TxRing> = Vec::with_capacity(nics.len());
    for nic in nics.iter_mut() {
        rxs.push(&mut nic.rx);
        txs.push(&mut nic.tx);
    }
    let mut set = TxSet::new(&mut txs, scratch);
    let mut frames = 0;
    for (i, rx) in rxs.into_iter().enumerate() {
        loop {
            if set.any_full() {
                return Pass {
                    blocked: true,
                    frames,
                };
            }
            if !set.forward_one(rx, |frame, offload, set| handle(i, frame, offload, set)) {
                break;
            }
            frames += 1;
        }
    }
    Pass {
        blocked: false,
        frames,
    }
}

/// What one [`forward_pass`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pass {
    /// It stopped on a full transmit ring.
    pub blocked: bool,
    /// Frames it handled.
    pub frames: u32,
}

/// How long a forwarder keeps polling after its last frame before it arms interrupts and
/// halts: frames that follow within this time cost no interrupt (DESIGN.md: spin briefly,
/// then sleep; a vCPU that spins longer steals the core QEMU's I/O thread needs).
pub const SPIN_NS: u64 = 20_000;

/// Remembers when a forwarder last had work; `busy` says whether to poll again at once.
#[derive(Debug, Default)]
pub struct Spin {
    last_work_ns: u64,
}

impl Spin {
    pub fn busy(&mut self, now_ns: u64, pass: Pass) -> bool {
        if pass.frames > 0 {
            self.last_work_ns = now_ns;
        }
        now_ns.saturating_sub(self.last_work_ns) < SPIN_NS
    }
}

/// Kicks every NIC's transmit queue, then every receive queue: a forwarder's egress
/// frames start leaving before QEMU delivers the ingress frames a receive kick releases
/// (measured on the wire appliance, 64-byte UDP from NIC 0 to NIC 1: 69k packets/s with
/// per-NIC kicks, receive first, against 86k this way).
pub fn flush(nics: &mut [Nic]) {
    for nic in nics.iter_mut() {
        nic.flush_tx();
    }
    for nic in nics.iter_mut() {
        nic.flush_rx();
    }
}

/// Before a forwarder halts: arm receive interrupts everywhere, and transmit interrupts
/// where a ring is full (so the device wakes us when it made room). True when work is
/// already waiting.
pub fn arm_forwarder(nics: &mut [Nic], tx_blocked: bool) -> bool {
    let mut pending = arm(nics.iter_mut());
    if tx_blocked {
        for nic in nics.iter_mut() {
            if !nic.tx.can_send() {
                pending |= nic.tx.arm_interrupts();
            }
        }
    }
    pending
}

pub fn disarm_forwarder(nics: &mut [Nic]) {
    for nic in nics.iter_mut() {
        nic.disarm_interrupts();
        nic.tx.disarm_interrupts();
    }
}
