//! A tiny JSON writer producing what Python's `json.dumps` does with its defaults (as
//! Nova's `jsonutils.dump_as_bytes`): `", "` and `": "` separators, keys in insertion
//! order, non-ASCII escaped as `\uXXXX`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

pub struct Json {
    out: String,
    /// Per open container: whether it has no element yet.
    first: Vec<bool>,
    /// A key was written; the next value is its member's value.
    after_key: bool,
}

impl Default for Json {
    fn default() -> Self {
        Self::new()
    }
}

impl Json {
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(512),
            first: Vec::new(),
            after_key: false,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn sep(&mut self) {
        if core::mem::take(&mut self.after_key) {
            return;
        }
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push_str(", ");
            }
            *first = false;
        }
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.sep();
        self.out.push('{');
        self.first.push(true);
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.first.pop();
        self.out.push('}');
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.sep();
        self.out.push('[');
        self.first.push(true);
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.first.pop();
        self.out.push(']');
        self
    }

    /// Writes `"key": ` inside an object; the member's value comes next.
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, key);
        self.out.push_str(": ");
        self.after_key = true;
        self
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, value);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.out.push_str("null");
        self
    }

    pub fn uint(&mut self, value: u64) -> &mut Self {
        self.sep();
        let _ = write!(self.out, "{value}");
        self
    }

    /// `bytes` random bytes from `rng` in base64, as a string (needs no escaping).
    pub fn random_base64(&mut self, rng: &mut crate::tree::Rng, bytes: usize) -> &mut Self {
        self.sep();
        self.out.push('"');
        crate::tree::random_base64_into(&mut self.out, rng, bytes);
        self.out.push('"');
        self
    }

    /// `"key": "value"`.
    pub fn field(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key).str(value)
    }
}

/// Writes `s` as a JSON string literal, escaped as Python's `json.dumps` does.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        // The common case (names, keys, addresses): nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Whether any byte of `s` is outside printable ASCII or is `"` or `\\`: eight bytes at a
/// time (SWAR), since every string of every answer passes through here.
pub(crate) fn needs_escape(s: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bytes of `x` that are zero get their high bit set (exact when no byte of `x` has its
    // high bit set, which the check for non-ASCII below covers).
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let non_ascii = x & HI;
        // A byte below 0x20: (b + 0x60) has its high bit clear only then (for ASCII b),
        // and 0x7f (DEL): b + 1 reaches 0x80.
        let control = !(x.wrapping_add(0x6060_6060_6060_6060)) & HI;
        let del = x.wrapping_add(LO) & HI;
        let quote = zero(x ^ (LO * u64::from(b'"')));
        let backslash = zero(x ^ (LO * u64::from(b'\\')));
        if non_ascii | control | del | quote | backslash != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
}
