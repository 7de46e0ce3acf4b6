//! The appliance end of the control channel: bytes from COM2 split into requests, the
//! requests every appliance understands (ping, generation, counters) answered here, the
//! rest handed to the appliance's engine. A silent or absent manager costs nothing.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use nanovnf_kernel::arch::control::{self as control_port, ControlPort};
use nanovnf_schema::control::{self, Counter, FrameReader, Op, Report, Request};

/// Bytes read per poll before the NICs get their turn again.
const BYTES_PER_POLL: usize = 2048;

/// What an appliance offers the manager beyond the common requests.
pub trait Engine {
    /// Applies a live change; the error says why it was refused (nothing changed).
    fn apply(&mut self, op: &Op) -> Result<(), String>;
    /// Every counter, by stable name.
    fn counters(&self) -> Vec<Counter>;
    /// Answers a request that reads the appliance's state rather than changing it
    /// (`MetadataPasswords`); `None` hands it to [`Engine::apply`], which refuses what
    /// the appliance does not know.
    fn answer(&mut self, _seq: u32, _op: &Op) -> Option<Report> {
        None
    }
}

pub struct Channel {
    port: Option<ControlPort>,
    reader: FrameReader,
    generation: u64,
    /// Frames that did not decode as a request.
    pub malformed: u64,
    /// Reports the host did not take in time.
    pub unsent: u64,
    /// The UART signalled input that has not all been read yet. Polls touch the UART only
    /// then: each register read is an I/O exit, which must not be paid per packet.
    pending: bool,
}

impl Channel {
    /// Opens COM2 when the VM has one.
    pub fn open(generation: u64) -> Self {
        let port = ControlPort::open();
        if port.is_none() {
            log::info!("no control channel (no second UART)");
        }
        Channel {
            port,
            reader: FrameReader::new(),
            generation,
            malformed: 0,
            unsent: 0,
            pending: true, // whatever arrived before the interrupt was enabled
        }
    }

    /// Notes the control UART's interrupt among the lines in `irqs` (bit n = IRQ n).
    pub fn acknowledge(&mut self, irqs: u16) {
        if irqs & (1 << control_port::IRQ) != 0 {
            self.pending = true;
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when input was signalled and not yet all read.
    pub fn has_input(&self) -> bool {
        self.pending && self.port.is_some()
    }

    pub fn send(&mut self, report: &Report) {
        if let Some(port) = &mut self.port
            && !port.write_all(&control::encode(report))
        {
            self.unsent += 1;
        }
    }

    /// Reads what arrived and answers every complete request: `Ping`, `SetGeneration`
    /// and `Counters` here, everything else through `engine` (its answer to a query, or
    /// `Done`/`Refused` for a change). Returns true when more bytes may be waiting (the
    /// caller should poll again soon).
    pub fn serve(&mut self, engine: &mut dyn Engine) -> bool {
        if !self.has_input() {
            return false;
        }
        for _ in 0..BYTES_PER_POLL {
            let Some(byte) = self.port.as_mut().and_then(|p| p.read_byte()) else {
                // Drained: the next byte raises the interrupt again.
                self.pending = false;
                return false;
            };
            let Some(frame) = self.reader.push(byte) else {
                continue;
            };
            let Ok(Request { seq, op }) = control::decode::<Request>(frame) else {
                self.malformed += 1;
                continue;
            };
            let report = match op {
                Op::Ping => Report::Done {
                    seq,
                    generation: self.generation,
                },
                Op::SetGeneration { generation } => {
                    self.generation = generation;
                    Report::Done { seq, generation }
                }
                Op::Counters => {
                    let mut all = engine.counters();
                    all.push(Counter::new("control_malformed", self.malformed));
                    all.push(Counter::new("control_oversized", self.reader.oversized));
                    Report::Counters { seq, counters: all }
                }
                op => match engine.answer(seq, &op) {
                    Some(report) => report,
                    None => match engine.apply(&op) {
                        Ok(()) => Report::Done {
                            seq,
                            generation: self.generation,
                        },
                        Err(reason) => Report::Refused { seq, reason },
                    },
                },
            };
            self.send(&report);
        }
        true
    }
}

/// Formats an engine error for a `Refused` report.
pub fn reason(e: impl core::fmt::Display) -> String {
    format!("{e}")
}
