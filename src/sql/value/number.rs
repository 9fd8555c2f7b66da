//! AWS IoT SQL's numbers as text: which strings are numbers, JSON and SQL number text read
//! into Int or Decimal (34 significant digits, AWS's Decimal), and Decimals written as
//! Java's `BigDecimal.toString` writes them (the engine AWS runs on).

use std::fmt::Write as _;
use std::str::FromStr;

use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, ToPrimitive, Zero};

use super::{push_u64, Num, Value, DECIMAL_DIGITS, INT_MAX};
use crate::sql::SqlVersion;

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

/// Parses JSON or SQL number text into an Int when it is a plain integer of at most 34
/// digits, into a Decimal otherwise. The text must already be a valid number.
///
/// AWS keeps 34 significant digits; longer numbers are cut to that many before they are
/// parsed, so that a hostile 200,000-digit number costs no more than a short one.
pub fn parse_number(text: &str) -> Option<Value> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Int(i.into()));
        }
        if text.trim_start_matches('-').len() <= DECIMAL_DIGITS as usize {
            if let Ok(i) = text.parse::<i128>() {
                return Some(Value::Int(i));
            }
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

/// Writes a Decimal as [`format_decimal`] does, without allocating for the common case of
/// an unscaled value that fits 64 bits and a scale of at most 18.
pub(super) fn write_decimal(out: &mut Vec<u8>, d: &BigDecimal, version: SqlVersion) {
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

/// Rounds a Decimal toward zero to an Int (34 digits), or None when it does not fit.
pub fn decimal_to_int(d: &BigDecimal) -> Option<i128> {
    // |d| >= 1E34 cannot fit; checking first keeps `1E+1000000000` from being expanded.
    if d.order_of_magnitude() > DECIMAL_DIGITS as i64 - 1 {
        return None;
    }
    let i = round_to_scale(d, 0, bigdecimal::RoundingMode::Down).to_i128()?;
    (-INT_MAX..=INT_MAX).contains(&i).then_some(i)
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
