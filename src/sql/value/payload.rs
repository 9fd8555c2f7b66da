//! A message's payload as the engine holds it: its bytes, decoded the first time an
//! expression reads them, and whether `SELECT *` may pass them on as they came.
//!
//! Most devices send compact JSON, and the most common rule is `SELECT *` republished or
//! archived as is. Decoding such a payload into a [`Value`] and writing it out again gives back
//! the very same bytes, at the cost of an allocation per key, number and object; so when the
//! bytes are already written as [`Value::write_json`] writes them, they are the output.
//!
//! Invariant (tested against the decoder on generated JSON): when [`is_canonical`] says
//! true, `Value::from_payload(bytes).write_payload(..)` writes exactly `bytes`, in every SQL
//! version. It is conservative: a payload it turns down only costs the round trip.

use std::cell::OnceCell;

use bytes::Bytes;

use super::Value;

/// A message's payload.
#[derive(Debug)]
pub struct Payload {
    bytes: Bytes,
    decoded: OnceCell<Value>,
    canonical: OnceCell<bool>,
}

impl Payload {
    pub fn new(bytes: Bytes) -> Payload {
        Payload {
            bytes,
            decoded: OnceCell::new(),
            canonical: OnceCell::new(),
        }
    }

    /// The payload as expressions see it: JSON, or Binary. Decoded at the first call.
    pub fn value(&self) -> &Value {
        self.decoded
            .get_or_init(|| Value::from_payload(&self.bytes))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether an expression has read it yet.
    pub fn is_decoded(&self) -> bool {
        self.decoded.get().is_some()
    }

    /// Whether the payload is a JSON object written exactly as topicrule writes JSON: then
    /// `SELECT *` alone outputs these bytes, and need not decode them.
    pub fn is_canonical_object(&self) -> bool {
        *self
            .canonical
            .get_or_init(|| self.bytes.first() == Some(&b'{') && is_canonical(&self.bytes))
    }
}

/// Past this nesting, or this many keys in the objects being read, a payload is left to
/// the decoder (deeply nested JSON is not what devices send; the limits bound the stack).
const MAX_DEPTH: usize = 32;
const MAX_KEYS: usize = 64;

/// Whether `bytes` is one JSON value written as `Value::write_json` writes it: no
/// whitespace, strings without escapes, no key twice in an object, and numbers whose text
/// the engine writes back unchanged (integers of at most 34 digits, AWS's Int, and plain
/// decimals of at most 18).
pub fn is_canonical(bytes: &[u8]) -> bool {
    if std::str::from_utf8(bytes).is_err() {
        return false;
    }
    let mut scanner = Scanner {
        bytes,
        at: 0,
        keys: [&[]; MAX_KEYS],
        open_keys: 0,
    };
    scanner.value(0) && scanner.at == bytes.len()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The keys of the objects being read, innermost last.
    keys: [&'a [u8]; MAX_KEYS],
    open_keys: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn word(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        self.at += if found { word.len() } else { 0 };
        found
    }

    /// A string without escapes (which the writer might spell otherwise); its content.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.at + 1;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.at = start + len;
        self.eat(b'"').then(|| &self.bytes[start..start + len])
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let first = self.open_keys;
        loop {
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some(key) = self.string() else {
                return false;
            };
            // A repeated key keeps one member: the decoder would write the object shorter.
            if self.open_keys == MAX_KEYS || self.keys[first..self.open_keys].contains(&key) {
                return false;
            }
            self.keys[self.open_keys] = key;
            self.open_keys += 1;
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                self.open_keys = first;
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn digits(&mut self) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        &self.bytes[start..self.at]
    }

    /// A number the engine writes back as it is: `-?(0|[1-9]\d*)(\.\d+)?` with no exponent,
    /// not minus zero, an integer of at most 34 digits or a decimal of at most 18, whose
    /// fraction is neither all zeros (the 2016 version writes `2.0` as `2`) nor six zeros
    /// after `0.` (Java writes such small numbers in scientific notation).
    fn number(&mut self) -> bool {
        let negative = self.eat(b'-');
        let whole = self.digits();
        if whole.is_empty() || (whole.len() > 1 && whole[0] == b'0') {
            return false;
        }
        let mut zero = whole == b"0";
        let mut fits = whole.len() <= super::DECIMAL_DIGITS as usize;
        if self.eat(b'.') {
            let fraction = self.digits();
            if fraction.iter().all(|&d| d == b'0') || (zero && fraction.starts_with(b"000000")) {
                return false;
            }
            zero = false;
            fits = whole.len() + fraction.len() <= 18;
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        let minus_zero = negative && zero;
        fits && !exponent && !minus_zero
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::sql::SqlVersion;

    fn round_trip(text: &[u8], version: SqlVersion) -> Vec<u8> {
        let mut out = Vec::new();
        Value::from_payload(text).write_payload(&mut out, version);
        out
    }

    /// The invariant, for one text: accepted only when both versions write it back as is.
    fn check(text: &[u8]) -> bool {
        let accepted = is_canonical(text);
        if accepted {
            for version in [SqlVersion::V2015_10_08, SqlVersion::V2016_03_23] {
                assert_eq!(
                    String::from_utf8_lossy(&round_trip(text, version)),
                    String::from_utf8_lossy(text),
                    "accepted, but {version:?} writes it otherwise"
                );
            }
        }
        accepted
    }

    #[test]
    fn compact_json_as_devices_send_it_is_canonical() {
        for text in [
            r#"{"run":1,"ts_ns":1715678497512000000,"device":"d-7","temp":21.5,"pad":"xxxx"}"#,
            r#"{}"#,
            r#"{"a":[],"b":{},"c":[1,-2,0,0.5,-0.25,10.50],"d":null,"e":true,"f":false}"#,
            r#"{"nested":{"a":{"a":1}},"a":2}"#,
            "{\"text\":\"héllo → ✓ \u{7f}\"}",
            "[1,2]",
            "\"a string\"",
            "42",
        ] {
            assert!(check(text.as_bytes()), "{text} is canonical");
        }
    }

    #[test]
    fn what_the_writer_would_spell_otherwise_is_not() {
        for text in [
            r#"{ "a":1}"#,
            "{\"a\":1}\n",
            r#"{"a":"x\"y"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1.0}"#,
            r#"{"a":2.00}"#,
            r#"{"a":-0}"#,
            r#"{"a":-0.0}"#,
            r#"{"a":0.0000001}"#,
            r#"{"a":1e3}"#,
            r#"{"a":1E3}"#,
            r#"{"a":01}"#,
            r#"{"a":12345678901234567890123456789012345}"#,
            r#"{"a":1.234567890123456789}"#,
            r#"{"a":.5}"#,
            r#"{"a":5.}"#,
            r#"{"a":tru}"#,
            r#"{"a":1"#,
            r#"{"a":1}}"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{1:2}"#,
            "",
            "temperature=21;state=on",
        ] {
            assert!(!check(text.as_bytes()), "{text} is not canonical");
        }
        assert!(!check(b"{\"a\":\"\xff\"}"), "invalid UTF-8");
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(!check(deep.as_bytes()), "deeper than the scanner reads");
        let wide: Vec<String> = (0..70).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(!check(format!("{{{}}}", wide.join(",")).as_bytes()));
    }

    /// A random JSON value, as compact text with the spellings the writer uses and many it
    /// does not (whitespace, escapes, exponents, zeros, repeated keys).
    fn random_json(rng: &mut StdRng, depth: u32, out: &mut String) {
        const NUMBERS: &[&str] = &[
            "0",
            "7",
            "-3",
            "42",
            "100",
            "0.5",
            "-0.5",
            "21.5",
            "10.50",
            "0.000001",
            "0.0000001",
            "1.0",
            "-0",
            "-0.0",
            "1e2",
            "2E-3",
            "123456789012345678",
            "1234567890123456789",
            "0.12345678901234567",
            "99999999999999999.9",
            "1.5e10",
            "1234567890123456789012345678901234",
            "-1234567890123456789012345678901234",
            "12345678901234567890123456789012345",
        ];
        const STRINGS: &[&str] = &[
            "", "a", "d-1", "é✓", "x\\\"y", "tab\\t", "\\u0041", "\u{7f}",
        ];
        let pick = |rng: &mut StdRng, items: &[&'static str]| items[rng.gen_range(0..items.len())];
        match if depth == 0 {
            rng.gen_range(0..5)
        } else {
            rng.gen_range(0..7)
        } {
            0 => out.push_str(pick(rng, NUMBERS)),
            1 => {
                out.push('"');
                out.push_str(pick(rng, STRINGS));
                out.push('"');
            }
            2 => out.push_str(pick(rng, &["true", "false", "null"])),
            3 | 4 => out.push_str(pick(rng, NUMBERS)),
            5 => {
                out.push('[');
                for i in 0..rng.gen_range(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_json(rng, depth - 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.gen_range(0..5) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(pick(rng, &["\"a\"", "\"b\"", "\"c\"", "\"é\"", "\"d\\n\""]));
                    out.push(':');
                    random_json(rng, depth - 1, out);
                }
                out.push('}');
            }
        }
        if rng.gen_ratio(1, 40) {
            out.push(' ');
        }
    }

    #[test]
    fn whatever_it_accepts_the_engine_writes_back_unchanged() {
        let mut rng = StdRng::seed_from_u64(0x70_91c5);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            random_json(&mut rng, 4, &mut text);
            if check(text.as_bytes()) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both sides are exercised: the invariant is checked on thousands of accepted texts.
        assert!(
            accepted > 2_000 && refused > 2_000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn the_payload_decodes_only_when_read() {
        let payload = Payload::new(Bytes::from_static(br#"{"a":1}"#));
        assert!(payload.is_canonical_object());
        assert!(!payload.is_decoded());
        assert_eq!(
            round_trip(payload.bytes(), SqlVersion::default()),
            br#"{"a":1}"#
        );
        assert!(matches!(payload.value(), Value::Object(o) if o.len() == 1));
        assert!(payload.is_decoded());
        assert!(!Payload::new(Bytes::from_static(b"[1]")).is_canonical_object());
    }
}
