//! The values of AWS IoT SQL, their conversions and their JSON form.
//!
//! AWS keeps types apart that JSON does not: Int and Decimal, Null and Undefined, and
//! binary payloads. The conversion functions here follow the tables of the AWS IoT SQL
//! reference ("Data types", "Conversions"); everything else in the language goes through
//! them, so a rule of the reference lives in one place.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::str::FromStr;

use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, ToPrimitive, Zero};

use super::SqlVersion;

/// An object's members, in the order they were written.
/// foldhash rather than SipHash: hashing keys is a tenth of decoding a payload, and foldhash
/// is seeded per process, so crafted keys cannot flood one bucket.
pub type Object = indexmap::IndexMap<String, Value, foldhash::fast::RandomState>;

/// The precision of AWS IoT's Decimal: 34 significant digits (IEEE 754 decimal128).
pub const DECIMAL_DIGITS: u64 = 34;

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
    /// A whole number that fits 64 bits: `42`. Larger ones are whole Decimals.
    Int(i64),
    /// A number with a fraction or an exponent: `1.5`, `2E3`, or an integer beyond 64 bits.
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
    Int(i64),
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

/// Whether `text` is a number by AWS's String-to-Decimal rule: `^-?\d+(\.\d+)?((?i)E-?\d+)?$`.
/// `"+5"`, `".5"`, `"5."`, `" 5"` and `"0x10"` are not.
pub fn is_numeric_text(text: &str) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let n = digits(&b[i..]);
    if n == 0 {
        return false;
    }
    i += n;
    if b.get(i) == Some(&b'.') {
        let n = digits(&b[i + 1..]);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let n = digits(&b[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

/// Parses JSON or SQL number text into an Int when it is a plain integer that fits, into a
/// Decimal otherwise. The text must already be a valid number.
///
/// AWS keeps 34 significant digits; longer numbers are cut to that many before they are
/// parsed, so that a hostile 200,000-digit number costs no more than a short one.
pub fn parse_number(text: &str) -> Option<Value> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Int(i));
        }
    }
    if let Some(d) = short_decimal(text) {
        return Some(Value::Decimal(d));
    }
    let value = if text.len() > 2 * DECIMAL_DIGITS as usize {
        parse_long_number(text)?
    } else {
        Value::Decimal(BigDecimal::from_str(text).ok()?)
    };
    match value {
        Value::Decimal(d) => Some(decimal_value(d)),
        other => Some(other),
    }
}

/// The common case, read without `BigDecimal::from_str`: a plain decimal such as `-31.25`
/// with at most 18 digits, which is within AWS's range and precision by its length.
fn short_decimal(text: &str) -> Option<BigDecimal> {
    let (int_part, frac_part) = text.split_once('.')?;
    let digits = int_part.len() + frac_part.len();
    if digits > 19 || frac_part.is_empty() || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int_value: i64 = int_part.parse().ok()?;
    let frac_value: i64 = frac_part.parse().ok()?;
    let scale = frac_part.len() as u32;
    let magnitude = int_value
        .unsigned_abs()
        .checked_mul(10u64.checked_pow(scale)?)?
        .checked_add(frac_value as u64)?;
    let unscaled = i64::try_from(magnitude).ok()?;
    let unscaled = if int_part.starts_with('-') {
        -unscaled
    } else {
        unscaled
    };
    Some(BigDecimal::new(BigInt::from(unscaled), i64::from(scale)))
}

/// Parses a long number by keeping its first 34 significant digits (rounded toward zero)
/// and moving the rest into the exponent.
fn parse_long_number(text: &str) -> Option<Value> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = int_part.bytes().chain(frac_part.bytes());
    let leading_zeros = all_digits.clone().take_while(|c| *c == b'0').count();
    let kept: String = all_digits
        .skip(leading_zeros)
        .take(DECIMAL_DIGITS as usize)
        .map(char::from)
        .collect();
    if kept.is_empty() {
        return Some(Value::Decimal(BigDecimal::zero()));
    }
    // The value is 0.KEPT × 10^point, point being where the first significant digit sits.
    let point = int_part.len() as i64 - leading_zeros as i64 + exponent;
    let scale = kept.len() as i64 - point;
    let coefficient = BigInt::from_str(&kept).ok()?;
    let coefficient = if negative { -coefficient } else { coefficient };
    Some(decimal_value(BigDecimal::new(coefficient, scale)))
}

/// Turns a double result (from `sqrt`, `sin`, `power`, ...) into a Decimal that prints as
/// Java prints the double: `32.0`, `1.4142135623730951`. NaN and infinities are Undefined.
pub fn from_f64(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Undefined;
    }
    let mut text = format!("{x:?}");
    if !text.contains(['.', 'e']) {
        text.push_str(".0");
    }
    BigDecimal::from_str(&text)
        .map(Value::Decimal)
        .unwrap_or(Value::Undefined)
}

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
    /// a numeric string goes through Decimal.
    pub fn to_int(&self) -> Conv<i64> {
        match self.to_num() {
            Conv::Ok(Num::Int(i)) => Conv::Ok(i),
            Conv::Ok(Num::Dec(d)) => match decimal_to_i64(&d) {
                Some(i) => Conv::Ok(i),
                None => Conv::Undefined,
            },
            Conv::Null => Conv::Null,
            Conv::Undefined => Conv::Undefined,
        }
    }

    /// To Int like [`Value::to_int`], but a number beyond 64 bits saturates to `i64::MIN` or
    /// `i64::MAX` instead of being Undefined: for counts and indexes that are clamped anyway
    /// (`lpad(s, 1E30)`, `substring(s, -2.411E247)`).
    pub fn to_int_saturating(&self) -> Conv<i64> {
        match self.to_num() {
            Conv::Ok(Num::Int(i)) => Conv::Ok(i),
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
            Value::Int(i) => push_i64(out, *i),
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
fn push_i64(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.push(b'-');
    }
    push_u64(out, i.unsigned_abs(), 0);
}

/// Writes `n`'s digits, at least `min_digits` of them (zero-padded on the left).
fn push_u64(out: &mut Vec<u8>, mut n: u64, min_digits: usize) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    while n > 0 || buf.len() - at < min_digits.max(1) {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[at..]);
}

/// Writes a Decimal as [`format_decimal`] does, without allocating for the common case of
/// an unscaled value that fits 64 bits and a scale of at most 18.
fn write_decimal(out: &mut Vec<u8>, d: &BigDecimal, version: SqlVersion) {
    let (digits, scale) = d.as_bigint_and_scale();
    let (Some(unscaled), Ok(scale)) = (digits.to_i64(), u32::try_from(scale)) else {
        return out.extend_from_slice(format_decimal(d, version).as_bytes());
    };
    let Some(pow) = 10u64.checked_pow(scale) else {
        return out.extend_from_slice(format_decimal(d, version).as_bytes());
    };
    let magnitude = unscaled.unsigned_abs();
    let whole = magnitude / pow;
    let fraction = magnitude % pow;
    // Java switches to scientific notation below 1E-6; leave that to the general path.
    if whole == 0 && fraction != 0 && fraction < pow / 1_000_000 {
        return out.extend_from_slice(format_decimal(d, version).as_bytes());
    }
    if unscaled < 0 {
        out.push(b'-');
    }
    push_u64(out, whole, 0);
    if scale > 0 && !(version == SqlVersion::V2016_03_23 && fraction == 0) {
        out.push(b'.');
        push_u64(out, fraction, scale as usize);
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is the reference: it cannot fail on a `Vec`.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Rounds a Decimal toward zero to an i64, or None when it does not fit.
pub fn decimal_to_i64(d: &BigDecimal) -> Option<i64> {
    // |d| >= 1E19 cannot fit; checking first keeps `1E+1000000000` from being expanded.
    if d.order_of_magnitude() > 18 {
        return None;
    }
    round_to_scale(d, 0, bigdecimal::RoundingMode::Down).to_i64()
}

/// `d.with_scale_round(scale, mode)` for `scale >= 0`, without its cost on extreme exponents:
/// a number that already has no more than `scale` fraction digits is returned as is (even
/// `1E+1000000000`), and one too small to reach the rounding position (`1E-1000000000`)
/// rounds directly to zero or to one unit of the last place.
pub fn round_to_scale(d: &BigDecimal, scale: i64, mode: bigdecimal::RoundingMode) -> BigDecimal {
    use bigdecimal::RoundingMode;
    if d.fractional_digit_count() <= scale {
        return d.clone();
    }
    if d.is_zero() {
        return BigDecimal::zero();
    }
    if d.order_of_magnitude() < -scale - 1 {
        // |d| < 10^-(scale+1): below half a unit of the last place, whatever the mode.
        let unit = BigDecimal::new(BigInt::from(1), scale);
        let positive = d.sign() == bigdecimal::num_bigint::Sign::Plus;
        return match mode {
            RoundingMode::Up if positive => unit,
            RoundingMode::Up => -unit,
            RoundingMode::Ceiling if positive => unit,
            RoundingMode::Floor if !positive => -unit,
            _ => BigDecimal::zero(),
        };
    }
    // Here the rescaling divides by at most 10^(number of digits + 1).
    d.with_scale_round(scale, mode)
}

/// The largest decimal exponent of AWS's Decimal (magnitudes from 1E-999 to 9.999…E999).
pub const MAX_EXPONENT: i64 = 999;

/// The exponent of a Decimal's first digit: 2 for `123.4`, -3 for `0.00123`.
fn adjusted_exponent(d: &BigDecimal) -> i64 {
    let (digits, scale) = d.as_bigint_and_exponent();
    let count = if digits.sign() == bigdecimal::num_bigint::Sign::NoSign {
        1
    } else {
        d.digits() as i64
    };
    count - 1 - scale
}

/// A Decimal result: rounded to 34 digits; Undefined beyond AWS's range (1E±999), so that
/// no value can make the engine write out a number of a million digits.
pub fn decimal_value(d: BigDecimal) -> Value {
    let d = round_decimal(d);
    if d.is_zero() {
        return Value::Decimal(d);
    }
    let exponent = adjusted_exponent(&d);
    if (-MAX_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
        Value::Decimal(d)
    } else {
        Value::Undefined
    }
}

/// Rounds a Decimal to AWS's 34 significant digits.
pub fn round_decimal(d: BigDecimal) -> BigDecimal {
    if d.digits() > DECIMAL_DIGITS {
        d.with_prec(DECIMAL_DIGITS)
    } else {
        d
    }
}

/// Writes a Decimal as AWS does. Under 2016-03-23 a whole number is written as an Int
/// (`10.0` → `10`, `1E+3` → `1000`); otherwise the text is Java's `BigDecimal.toString`
/// (the engine AWS runs on): plain notation unless the exponent is very small or large.
pub fn format_decimal(d: &BigDecimal, version: SqlVersion) -> String {
    // The range check keeps `with_scale(0)` from writing out a huge power of ten.
    let small_enough = d.as_bigint_and_exponent().1 >= -(MAX_EXPONENT + DECIMAL_DIGITS as i64);
    if version == SqlVersion::V2016_03_23 && small_enough && d.is_integer() {
        let (digits, _) = d.with_scale(0).into_bigint_and_exponent();
        return digits.to_string();
    }
    let (digits, scale) = d.as_bigint_and_exponent();
    java_decimal_string(&digits, scale)
}

/// `java.math.BigDecimal.toString()` for the unscaled value `digits` and `scale`.
fn java_decimal_string(digits: &BigInt, scale: i64) -> String {
    let negative = digits.sign() == bigdecimal::num_bigint::Sign::Minus;
    let coefficient = digits.magnitude().to_string();
    let adjusted = -scale + (coefficient.len() as i64 - 1);
    let mut out = String::with_capacity(coefficient.len() + 8);
    if negative {
        out.push('-');
    }
    if scale >= 0 && adjusted >= -6 {
        let scale = scale as usize;
        if scale == 0 {
            out.push_str(&coefficient);
        } else if coefficient.len() > scale {
            let (int, frac) = coefficient.split_at(coefficient.len() - scale);
            let _ = write!(out, "{int}.{frac}");
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', scale - coefficient.len()));
            out.push_str(&coefficient);
        }
        return out;
    }
    let (first, rest) = coefficient.split_at(1);
    out.push_str(first);
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
    let _ = write!(out, "E{}{adjusted}", if adjusted >= 0 { "+" } else { "" });
    out
}

/// Whether a number is zero, for division.
pub fn num_is_zero(n: &Num) -> bool {
    match n {
        Num::Int(i) => *i == 0,
        Num::Dec(d) => d.is_zero(),
    }
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

mod de {
    //! Decoding JSON into a [`Value`] directly, without an intermediate `serde_json::Value`.
    //! serde_json's `arbitrary_precision` hands numbers over as their text (as a one-entry
    //! map under a private key), so large integers and long decimals keep every digit.

    use super::{parse_number, Object, Value};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    const NUMBER_TOKEN: &str = "$serde_json::private::Number";

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(parse_number(&v.to_string()).unwrap_or_default())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(super::from_f64(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let first = match map.next_key_seed(KeyClassifier)? {
                None => return Ok(Value::Object(Object::default())),
                Some(Key::Number) => return map.next_value_seed(NumberText),
                Some(Key::Member(key)) => key,
            };
            let mut object = Object::with_capacity_and_hasher(
                map.size_hint().unwrap_or(0).min(64) + 1,
                Default::default(),
            );
            object.insert(first, map.next_value()?);
            while let Some((key, value)) = map.next_entry()? {
                object.insert(key, value);
            }
            Ok(Value::Object(object))
        }
    }

    /// A number's text, parsed where it lies.
    struct NumberText;

    impl<'de> de::DeserializeSeed<'de> for NumberText {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for NumberText {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Value, E> {
            parse_number(text).ok_or_else(|| E::custom("invalid number"))
        }
    }

    /// The first key of a map: serde_json's private number token, or a member name. Telling
    /// them apart without allocating saves an allocation for every number of a payload.
    enum Key {
        Number,
        Member(String),
    }

    struct KeyClassifier;

    impl<'de> de::DeserializeSeed<'de> for KeyClassifier {
        type Value = Key;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeyClassifier {
        type Value = Key;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
            Ok(if s == NUMBER_TOKEN {
                Key::Number
            } else {
                Key::Member(s.to_owned())
            })
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<Key, E> {
            Ok(if s == NUMBER_TOKEN {
                Key::Number
            } else {
                Key::Member(s)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str, version: SqlVersion) -> String {
        String::from_utf8(Value::from_payload(text.as_bytes()).to_json(version)).unwrap()
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
