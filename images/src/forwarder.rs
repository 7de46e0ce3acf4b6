//! The harness of the frame-forwarding appliances (router, VXLAN gateway): NICs with
//! offloads, the receive/transmit pass with back-pressure, the engine's timers and the
//! control channel. An image supplies its engine as a [`Datapath`].

use crate::control::{Channel, Engine};
use crate::glue;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use nanovnf_drivers::NetConfig;
use nanovnf_drivers::discover::Nic;
use nanovnf_drivers::net::{TxRing, TxSet};
use nanovnf_frame::{Offload, Transmit};
use nanovnf_kernel::arch::{serial, timer};
use nanovnf_kernel::event::{self, Poll};
use nanovnf_kernel::{Boot, exit_code, fatal};
use nanovnf_schema::NicConfig;
use nanovnf_schema::control::{Counter, Op, Report};

/// What a forwarding engine offers its image (the engines' own APIs, adapted).
pub trait Datapath {
    /// After boot: gratuitous ARP, first resolutions.
    fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit);
    /// One frame received on NIC `nic`.
    fn handle(
        &mut self,
        now_ms: u64,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        tx: &mut dyn Transmit,
    );
    /// Timers due at `now_ms`.
    fn poll(&mut self, now_ms: u64, tx: &mut dyn Transmit);
    fn poll_at_ms(&self) -> Option<u64>;
    fn apply(&mut self, op: &Op, now_ms: u64, tx: &mut dyn Transmit) -> Result<(), String>;
    fn counters(&self) -> Vec<Counter>;
}

/// The engines already have the [`Datapath`] methods; this lends them the trait.
macro_rules! engine_datapath {
    ($engine:ty) => {
        impl Datapath for $engine {
            fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
                <$engine>::start(self, now_ms, tx);
            }

            fn handle(
                &mut self,
                now_ms: u64,
                nic: usize,
                frame: &mut [u8],
                offload: &Offload,
                tx: &mut dyn Transmit,
            ) {
                <$engine>::handle(self, now_ms, nic, frame, offload, tx);
            }

            fn poll(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
                <$engine>::poll(self, now_ms, tx);
            }

            fn poll_at_ms(&self) -> Option<u64> {
                <$engine>::poll_at_ms(self)
            }

            fn apply(&mut self, op: &Op, now_ms: u64, tx: &mut dyn Transmit) -> Result<(), String> {
                <$engine>::apply(self, op, now_ms, tx)
            }

            fn counters(&self) -> Vec<Counter> {
                <$engine>::counters(self)
            }
        }
    };
}

engine_datapath!(nanovnf_router::Router);
engine_datapath!(nanovnf_vxlan::Gateway);

/// The configured NICs, with offloads asked for, in configuration order.
pub fn nics(boot: &Boot) -> (Vec<NicConfig>, Vec<Nic>) {
    glue::configured_nics_with(boot, NetConfig::offload(glue::max_mtu(boot)))
        .into_iter()
        .unzip()
}

struct State<D> {
    nics: Vec<Nic>,
    scratch: Vec<u8>,
    datapath: D,
}

impl<D: Datapath> State<D> {
    /// Runs `f` with the NICs' transmit rings as one sink.
    fn with_tx<R>(&mut self, f: impl FnOnce(&mut D, &mut TxSet<'_, '_>) -> R) -> R {
        let mut rings: Vec<&mut TxRing> = self.nics.iter_mut().map(|n| &mut n.tx).collect();
        let mut set = TxSet::new(&mut rings, &mut self.scratch);
        f(&mut self.datapath, &mut set)
    }
}

impl<D: Datapath> Engine for State<D> {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        let now_ms = timer::now_ns() / 1_000_000;
        let r = self.with_tx(|d, tx| d.apply(op, now_ms, tx));
        glue::flush(&mut self.nics);
        r
    }

    fn counters(&self) -> Vec<Counter> {
        let mut all = self.datapath.counters();
        for (i, nic) in self.nics.iter().enumerate() {
            let s = nic.stats();
            all.push(Counter::new(format!("nic{i}_rx_frames"), s.rx_frames));
            all.push(Counter::new(format!("nic{i}_tx_frames"), s.tx_frames));
            all.push(Counter::new(
                format!("nic{i}_rx_bad_length"),
                s.rx_bad_length,
            ));
            all.push(Counter::new(format!("nic{i}_tx_no_buffer"), s.tx_no_buffer));
        }
        all
    }
}

struct Forwarder<D> {
    state: State<D>,
    control: Channel,
    tx_blocked: bool,
    spin: glue::Spin,
}

impl<D: Datapath> event::Appliance for Forwarder<D> {
    fn poll(&mut self, now_ns: u64) -> Poll {
        let now_ms = now_ns / 1_000_000;
        let s = &mut self.state;
        let datapath = &mut s.datapath;
        let pass = glue::forward_pass(&mut s.nics, &mut s.scratch, |i, frame, o, tx| {
            datapath.handle(now_ms, i, frame, o, tx);
        });
        self.tx_blocked = pass.blocked;
        if s.datapath.poll_at_ms().is_some_and(|at| at <= now_ms) {
            s.with_tx(|d, tx| d.poll(now_ms, tx));
        }
        glue::flush(&mut s.nics);
        let more_control = self.control.serve(&mut self.state);
        Poll {
            busy: more_control | self.spin.busy(now_ns, pass),
            deadline_ns: self
                .state
                .datapath
                .poll_at_ms()
                .map(|ms| ms.saturating_mul(1_000_000)),
        }
    }

    fn acknowledge(&mut self, irqs: u16) {
        self.control.acknowledge(irqs);
        glue::acknowledge(self.state.nics.iter_mut(), irqs);
    }

    fn prepare_to_sleep(&mut self) -> bool {
        glue::arm_forwarder(&mut self.state.nics, self.tx_blocked) | self.control.has_input()
    }

    fn woke(&mut self) {
        glue::disarm_forwarder(&mut self.state.nics);
    }
}

/// Starts `datapath` on `nics`, announces READY and runs the event loop.
pub fn run<D: Datapath>(boot: &Boot, nics: Vec<Nic>, datapath: D) -> ! {
    if nics.is_empty() {
        fatal(
            exit_code::APPLIANCE,
            format_args!("the config lists no NIC"),
        )
    }
    log::info!(
        "{} up: {} nics, offloads {:?}, clock {:?}, heap {} KiB",
        boot.config.name,
        nics.len(),
        nics[0].offloads(),
        boot.clock,
        boot.heap_bytes / 1024
    );
    let mut state = State {
        nics,
        scratch: Vec::new(),
        datapath,
    };
    let now_ms = timer::now_ns() / 1_000_000;
    state.with_tx(|d, tx| d.start(now_ms, tx));
    glue::flush(&mut state.nics);
    let mut app = Forwarder {
        state,
        control: Channel::open(boot.config.generation),
        tx_blocked: false,
        spin: glue::Spin::default(),
    };
    serial::write_line(format_args!("READY {}", boot.config.generation));
    app.control.send(&Report::Ready {
        generation: boot.config.generation,
    });
    event::run(&mut app)
}
