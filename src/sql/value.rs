//! The values of AWS IoT SQL, their conversions and their JSON form.
//!
//! AWS keeps types apart that JSON does not: Int and Decimal, Null and Undefined, and
//! binary payloads. The conversion functions here follow the tables of the AWS IoT SQL
//! reference ("Data types", "Conversions"); everything else in the language goes through
//! them, so a rule of the reference lives in one place.
//!
//! `number`: number text read and written as AWS does (Decimal's 34 digits, Java's
//! `BigDecimal.toString`); `de`: JSON decoded straight into a `Value`.

use std::borrow::Cow;
use std::cmp::Ordering;

use bigdecimal::{BigDecimal, ToPrimitive};

use super::SqlVersion;

/// An object's members, in the order they were written.
/// foldhash rather than SipHash: hashing keys is a tenth of decoding a payload, and foldhash
/// is seeded per process, so crafted keys cannot flood one bucket.
pub type Object = indexmap::IndexMap<String, Value, foldhash::fast::RandomState>;

/// The precision of AWS IoT's Decimal: 34 significant digits (IEEE 754 decimal128).
pub const DECIMAL_DIGITS: u64 = 34;

/// The largest Int: 34 nines, AWS's Int having up to 34 digits.
pub const INT_MAX: i128 = 10i128.pow(DECIMAL_DIGITS as u32) - 1;

/// An integer as a value: an Int within 34 digits, a whole Decimal beyond.
pub fn int_value(i: i128) -> Value {
    if (-INT_MAX..=INT_MAX).contains(&i) {
        Value::Int(i)
    } else {
        decimal_value(BigDecimal::from(i))
    }
}

/// A value of AWS IoT SQL.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// A missing key, a bad function call: `payload.nope`. Dropped from objects.
    #[default]
    Undefined,
    /// JSON `null`, a real value: `NULL`.
    Null,
    /// `true`, `false`.
    Bool(bool),
    /// A whole number of at most 34 digits (AWS's Int): `42`. Always within
    /// `-INT_MAX..=INT_MAX`; larger ones are whole Decimals.
    Int(i128),
    /// A number with a fraction or an exponent: `1.5`, `2E3`, or an integer beyond 34 digits.
    Decimal(BigDecimal),
    /// UTF-8 text: `'abc'`.
    String(String),
    /// `[1, "a", {}]`; elements need not share a type.
    Array(Vec<Value>),
    /// `{"a": 1}`.
    Object(Object),
    /// A payload that is not JSON, as raw bytes; only `*` and `encode(*, ...)` see it.
    Binary(Vec<u8>),
}

/// A number, as the arithmetic and comparison rules see it.
#[derive(Clone, Debug)]
pub enum Num {
    Int(i128),
    Dec(BigDecimal),
}

/// The outcome of a conversion: a value, Null (for Null input) or Undefined.
#[derive(Clone, Debug, PartialEq)]
pub enum Conv<T> {
    Ok(T),
    Null,
    Undefined,
}

impl<T> Conv<T> {
    pub fn ok(self) -> Option<T> {
        match self {
            Conv::Ok(v) => Some(v),
            _ => None,
        }
    }
}

impl Num {
    pub fn to_decimal(&self) -> BigDecimal {
        match self {
            Num::Int(i) => BigDecimal::from(*i),
            Num::Dec(d) => d.clone(),
        }
    }

    pub fn to_f64(&self) -> f64 {
        match self {
            Num::Int(i) => *i as f64,
            Num::Dec(d) => d.to_f64().unwrap_or(f64::NAN),
        }
    }

    /// Compares two numbers by value, `1` and `1.0` being equal.
    pub fn compare(&self, other: &Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(b),
            _ => self.to_decimal().cmp(&other.to_decimal()),
        }
    }
}

mod de;
mod number;
mod payload;

pub use number::*;
pub use payload::Payload;

impl Value {
    /// The name of the type, as errors and `typeof`-like messages show it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Undefined => "Undefined",
            Value::Null => "Null",
            Value::Bool(_) => "Boolean",
            Value::Int(_) => "Int",
            Value::Decimal(_) => "Decimal",
            Value::String(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Object",
            Value::Binary(_) => "Binary",
        }
    }

    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    /// The member `key` of an object; Undefined for anything else.
    pub fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    /// To Decimal (and Int kept as Int), by the reference's table: numeric strings convert,
    /// Null stays Null, Boolean, Array, Object and Undefined give Undefined.
    pub fn to_num(&self) -> Conv<Num> {
        match self {
            Value::Int(i) => Conv::Ok(Num::Int(*i)),
            Value::Decimal(d) => Conv::Ok(Num::Dec(d.clone())),
            Value::String(s) if is_numeric_text(s) => match parse_number(s) {
                Some(Value::Int(i)) => Conv::Ok(Num::Dec(BigDecimal::from(i))),
                Some(Value::Decimal(d)) => Conv::Ok(Num::Dec(d)),
                _ => Conv::Undefined,
            },
            Value::Null => Conv::Null,
            _ => Conv::Undefined,
        }
    }

    /// To Int: a Decimal is rounded down (toward zero), as `cast` and the functions do;
    /// a numeric string goes through Decimal. Beyond 34 digits: Undefined.
    pub fn to_int(&self) -> Conv<i128> {
        match self.to_num() {
            Conv::Ok(Num::Int(i)) => Conv::Ok(i),
            Conv::Ok(Num::Dec(d)) => match decimal_to_int(&d) {
                Some(i) => Conv::Ok(i),
                None => Conv::Undefined,
            },
            Conv::Null => Conv::Null,
            Conv::Undefined => Conv::Undefined,
        }
    }

    /// To Int like [`Value::to_int`], for functions that work on 64 bits (bit operations,
    /// times, character codes): beyond 64 bits, Undefined.
    pub fn to_i64(&self) -> Conv<i64> {
        match self.to_int() {
            Conv::Ok(i) => i64::try_from(i).map_or(Conv::Undefined, Conv::Ok),
            Conv::Null => Conv::Null,
            Conv::Undefined => Conv::Undefined,
        }
    }

    /// To Int like [`Value::to_i64`], but a number beyond 64 bits saturates to `i64::MIN` or
    /// `i64::MAX` instead of being Undefined: for counts and indexes that are clamped anyway
    /// (`lpad(s, 1E30)`, `substring(s, -2.411E247)`).
    pub fn to_int_saturating(&self) -> Conv<i64> {
        match self.to_num() {
            Conv::Ok(Num::Int(i)) => Conv::Ok(i.clamp(i64::MIN.into(), i64::MAX.into()) as i64),
            Conv::Ok(Num::Dec(d)) => Conv::Ok(decimal_to_i64(&d).unwrap_or(
                if d.sign() == bigdecimal::num_bigint::Sign::Minus {
                    i64::MIN
                } else {
                    i64::MAX
                },
            )),
            Conv::Null => Conv::Null,
            Conv::Undefined => Conv::Undefined,
        }
    }

    /// To Boolean: only Booleans and the strings `"true"`/`"false"` (any case).
    pub fn to_bool(&self) -> Conv<bool> {
        match self {
            Value::Bool(b) => Conv::Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Conv::Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Conv::Ok(false),
            Value::Null => Conv::Null,
            _ => Conv::Undefined,
        }
    }

    /// To String: numbers as digits, Booleans as `true`/`false`, arrays and objects as
    /// compact JSON; Null and Undefined give Undefined.
    pub fn to_text(&self, version: SqlVersion) -> Option<Cow<'_, str>> {
        Some(match self {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Decimal(d) => Cow::Owned(format_decimal(d, version)),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Array(_) | Value::Object(_) => {
                Cow::Owned(String::from_utf8(self.to_json(version)).ok()?)
            }
            Value::Null | Value::Undefined | Value::Binary(_) => return None,
        })
    }

    /// AWS's `=`: Undefined on either side gives Undefined (None); numbers compare by value
    /// across Int and Decimal; strings, arrays (in order) and objects (any key order) by
    /// value; values of different types are not equal.
    pub fn sql_eq(&self, other: &Value) -> Option<bool> {
        use Value::*;
        Some(match (self, other) {
            (Undefined, _) | (_, Undefined) => return None,
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(_) | Decimal(_), Int(_) | Decimal(_)) => {
                let (Conv::Ok(a), Conv::Ok(b)) = (self.to_num(), other.to_num()) else {
                    return None;
                };
                a.compare(&b) == Ordering::Equal
            }
            (String(a), String(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (Array(a), Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.sql_eq(y) == Some(true))
            }
            (Object(a), Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.get(k).is_some_and(|w| v.sql_eq(w) == Some(true)))
            }
            _ => false,
        })
    }

    /// Decodes a payload: JSON when it parses as JSON, binary otherwise.
    pub fn from_payload(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Value::Binary(bytes.to_vec()))
    }

    /// The compact JSON text of the value, with Undefined members and elements left out.
    pub fn to_json(&self, version: SqlVersion) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out, version);
        out
    }

    /// Writes the value as it goes out on the wire: JSON for structured values, the bytes
    /// themselves for a binary payload, nothing for Undefined (it serializes as the empty
    /// string, as the reference says).
    pub fn write_payload(&self, out: &mut Vec<u8>, version: SqlVersion) {
        match self {
            Value::Binary(bytes) => out.extend_from_slice(bytes),
            Value::Undefined => {}
            _ => self.write_json(out, version),
        }
    }

    pub fn write_json(&self, out: &mut Vec<u8>, version: SqlVersion) {
        match self {
            Value::Undefined | Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => push_i128(out, *i),
            Value::Decimal(d) => write_decimal(out, d, version),
            Value::String(s) => write_json_string(out, s),
            Value::Binary(bytes) => write_json_string(out, &String::from_utf8_lossy(bytes)),
            Value::Array(items) => {
                out.push(b'[');
                let mut first = true;
                for item in items.iter().filter(|v| !v.is_undefined()) {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    item.write_json(out, version);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                out.push(b'{');
                let mut first = true;
                for (key, item) in map.iter().filter(|(_, v)| !v.is_undefined()) {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    write_json_string(out, key);
                    out.push(b':');
                    item.write_json(out, version);
                }
                out.push(b'}');
            }
        }
    }
}

/// Writes an integer's digits without allocating.
fn push_i128(out: &mut Vec<u8>, i: i128) {
    if i < 0 {
        out.push(b'-');
    }
    let magnitude = i.unsigned_abs();
    match u64::try_from(magnitude) {
        Ok(small) => push_u64(out, small, 0),
        Err(_) => {
            // At most 34 digits: the high part, then the low 19 digits zero-padded.
            const LOW: u128 = 10u128.pow(19);
            push_u64(out, (magnitude / LOW) as u64, 0);
            push_u64(out, (magnitude % LOW) as u64, 19);
        }
    }
}

/// Writes `n`'s digits, at least `min_digits` of them (zero-padded on the left).
pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64, min_digits: usize) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    while n > 0 || buf.len() - at < min_digits.max(1) {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is the reference: it cannot fail on a `Vec`.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl PartialEq for Value {
    /// Structural equality for tests: like `sql_eq`, but Undefined equals Undefined.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Undefined, Value::Undefined) => true,
            _ => self.sql_eq(other) == Some(true) && self.type_name() == other.type_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn json(text: &str, version: SqlVersion) -> String {
        String::from_utf8(Value::from_payload(text.as_bytes()).to_json(version)).unwrap()
    }

    #[test]
    fn ints_have_34_digits() {
        let v16 = SqlVersion::V2016_03_23;
        let nines = "9".repeat(34);
        assert!(matches!(parse_number(&nines), Some(Value::Int(_))));
        assert!(matches!(
            parse_number(&format!("-{nines}")),
            Some(Value::Int(_))
        ));
        assert!(matches!(
            parse_number(&format!("1{nines}")),
            Some(Value::Decimal(_))
        ));
        assert!(matches!(int_value(INT_MAX + 1), Value::Decimal(_)));
        for text in [
            "18446744073709551616",
            "-10000000000000000000",
            "10000000000000000001",
            "1000000000000000000000000000000000",
            &nines,
        ] {
            assert_eq!(json(text, v16), text);
            let Some(Value::Int(i)) = parse_number(text) else {
                panic!("{text} is not an Int");
            };
            assert_eq!(i.to_string(), text);
        }
        assert!(matches!(
            Value::String(nines.clone()).to_int(),
            Conv::Ok(i) if i == INT_MAX
        ));
        assert_eq!(Value::String(format!("1{nines}")).to_int(), Conv::Undefined);
        assert_eq!(
            Value::String("9223372036854775808".into()).to_i64(),
            Conv::Undefined
        );
        assert_eq!(
            Value::String("1e30".into()).to_int_saturating(),
            Conv::Ok(i64::MAX)
        );
        assert_eq!(Value::Int(-INT_MAX).to_int_saturating(), Conv::Ok(i64::MIN));
    }

    #[test]
    fn numbers_keep_their_digits() {
        let v16 = SqlVersion::V2016_03_23;
        let v15 = SqlVersion::V2015_10_08;
        assert_eq!(
            json("123456789012345678901234567890", v16),
            "123456789012345678901234567890"
        );
        assert_eq!(json("[10.0, 1.25, 1e3]", v16), "[10,1.25,1000]");
        assert_eq!(json("[10.0, 1.25, 1e3]", v15), "[10.0,1.25,1E+3]");
        assert_eq!(json("0.0000001", v15), "1E-7");
        assert_eq!(json("0.000001", v15), "0.000001");
        let long = "7".repeat(900);
        assert_eq!(json(&long, v15), format!("7.{}E+899", "7".repeat(33)));
        // Beyond AWS's range (1E±999) a number is Undefined, and Undefined members vanish.
        assert_eq!(
            json(
                &format!(r#"{{"a":{},"b":1e1000}}"#, "7".repeat(200_000)),
                v16
            ),
            r#"{}"#
        );
        assert_eq!(
            json(&format!("-0.000{}", "12".repeat(40)), v15),
            format!("-0.000{}", &"12".repeat(17))
        );
    }

    #[test]
    fn the_fast_decimal_writer_agrees_with_the_general_one() {
        let texts = [
            "0.5",
            "-0.5",
            "88.70",
            "10.0",
            "-10.00",
            "0.000001",
            "0.0000010",
            "0.0000001",
            "123456789.123456789",
            "-0.000000",
            "9223372036854775.807",
            "1.5E+3",
            "1E-3",
            "0.0",
        ];
        for version in [SqlVersion::V2015_10_08, SqlVersion::V2016_03_23] {
            for text in texts {
                let d = BigDecimal::from_str(text).unwrap();
                let mut fast = Vec::new();
                write_decimal(&mut fast, &d, version);
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    format_decimal(&d, version),
                    "{text} {version}"
                );
            }
        }
    }

    #[test]
    fn numeric_text_follows_the_reference() {
        for ok in ["5", "-5", "5.5", "5E-12", "1e3", "-0.5e-3"] {
            assert!(is_numeric_text(ok), "{ok}");
        }
        for bad in ["+5", ".5", "5.", " 5", "0x10", "", "-", "1e", "5 "] {
            assert!(!is_numeric_text(bad), "{bad}");
        }
    }

    #[test]
    fn non_json_is_binary() {
        assert!(matches!(Value::from_payload(b"\x00\x01"), Value::Binary(_)));
        assert!(matches!(Value::from_payload(b"{\"a\":"), Value::Binary(_)));
    }

    #[test]
    fn doubles_print_like_java() {
        let v15 = SqlVersion::V2015_10_08;
        assert_eq!(from_f64(32.0).to_json(v15), b"32.0");
        assert_eq!(from_f64(0.5).to_json(v15), b"0.5");
    }
}
