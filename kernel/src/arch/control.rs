//! The control channel's wire: a second 16550 UART (COM2, I/O 0x2F8, IRQ 3) that the
//! launcher connects to a unix socket on the host. Receive interrupts wake the event loop;
//! the appliance drains bytes while polling. Framing lives in the schema crate.

use super::interrupts;
use super::io::{inb, outb};

const BASE: u16 = 0x2F8;
/// The UART's legacy interrupt line.
pub const IRQ: u8 = 3;

const RBR_THR: u16 = BASE; // receive buffer / transmit holding (DLAB=0)
const IER: u16 = BASE + 1;
const FCR: u16 = BASE + 2;
const LCR: u16 = BASE + 3;
const MCR: u16 = BASE + 4;
const LSR: u16 = BASE + 5;
const SCR: u16 = BASE + 7;

const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
/// The transmit FIFO's depth: after THR-empty this many bytes may be written at once.
const TX_FIFO: usize = 16;
/// How long a write waits for the host to take bytes before giving up (line-status
/// reads). The host side is a socket QEMU drains; it only backs up when nobody reads.
const TX_SPIN_LIMIT: u32 = 1_000_000;

/// The UART, once found and initialised.
pub struct ControlPort {
    _private: (),
}

impl ControlPort {
    /// Finds COM2 (its scratch register holds a value) and sets it up: 8N1, FIFOs on with
    /// a one-byte receive trigger, receive interrupts on IRQ 3 unmasked. `None` when the
    /// machine has no second UART (an appliance launched without a control socket).
    pub fn open() -> Option<ControlPort> {
        // SAFETY: COM2's registers; probing the scratch register has no side effects and
        // reads 0xFF when nothing decodes the port.
        let present = unsafe {
            outb(SCR, 0x5A);
            inb(SCR) == 0x5A
        };
        if !present {
            return None;
        }
        // SAFETY: the standard 16550 initialisation: interrupts off, divisor 1 (115200
        // baud; QEMU ignores the rate), 8 data bits no parity 1 stop bit, FIFOs enabled and
        // cleared, DTR|RTS|OUT2 (OUT2 gates the interrupt on PCs), then receive interrupts.
        unsafe {
            outb(IER, 0x00);
            outb(LCR, 0x80);
            outb(RBR_THR, 0x01);
            outb(IER, 0x00);
            outb(LCR, 0x03);
            outb(FCR, 0x07);
            outb(MCR, 0x0B);
            outb(IER, 0x01);
        }
        interrupts::unmask(IRQ);
        Some(ControlPort { _private: () })
    }

    /// True when a received byte is waiting.
    pub fn has_input(&self) -> bool {
        // SAFETY: reading the line-status register has no side effects on 16550 data.
        unsafe { inb(LSR) & LSR_DATA_READY != 0 }
    }

    /// The next received byte, if any.
    pub fn read_byte(&mut self) -> Option<u8> {
        if !self.has_input() {
            return None;
        }
        // SAFETY: reading the receive buffer pops one byte from the receive FIFO.
        Some(unsafe { inb(RBR_THR) })
    }

    /// Writes all of `bytes`, a FIFO-full at a time. Returns false when the host stopped
    /// taking bytes (the rest is dropped rather than stalling the appliance).
    pub fn write_all(&mut self, bytes: &[u8]) -> bool {
        for chunk in bytes.chunks(TX_FIFO) {
            let mut spins = 0;
            // SAFETY: reading the line-status register has no side effects on 16550 data.
            while unsafe { inb(LSR) } & LSR_THR_EMPTY == 0 {
                spins += 1;
                if spins == TX_SPIN_LIMIT {
                    return false;
                }
                core::hint::spin_loop();
            }
            for &b in chunk {
                // SAFETY: the transmit FIFO is empty and holds TX_FIFO bytes.
                unsafe { outb(RBR_THR, b) };
            }
        }
        true
    }
}
