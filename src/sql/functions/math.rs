//! Math functions. `abs`, `sign`, `ceil`, `floor`, `round`, `trunc`, `mod` and the bit
//! operations are exact on Int and Decimal; the functions that the reference says return
//! "Decimal (with double precision)" (trigonometry, `exp`, `ln`, `log`, `power`, `sqrt`)
//! compute in f64 and print as Java prints a double (`32.0`), with NaN and infinite results
//! (`acos(2)`, `ln(-1)`, `exp(1000)`) Undefined.
//!
//! Arguments go through the To Decimal conversion: Ints and Decimals as they are, numeric
//! strings (`'-2.5'`) as Decimals, everything else (Booleans included) Undefined.

use bigdecimal::num_bigint::Sign;
use bigdecimal::{BigDecimal, RoundingMode};

use super::super::eval::Env;
use super::super::value::{
    decimal_to_int, from_f64, num_is_zero, round_decimal, round_to_scale, Conv, Num, Value,
};
use super::args_n;

/// The most decimal places `trunc` keeps, as the reference says.
const TRUNC_MAX_PLACES: i64 = 34;

/// How far apart (in powers of ten) the exponents of `mod`'s operands may be. Beyond that
/// the exact remainder would need numbers of millions of digits; such a call is Undefined
/// (AWS's own Decimal stops at 1E±999 anyway).
const MOD_MAX_RESCALE: i64 = 10_000;

fn one(args: Vec<Value>) -> Option<Num> {
    let [x] = args_n(args)?;
    x.to_num().ok()
}

fn two(args: Vec<Value>) -> Option<(Num, Num)> {
    let [x, y] = args_n(args)?;
    Some((x.to_num().ok()?, y.to_num().ok()?))
}

fn double(args: Vec<Value>, f: fn(f64) -> f64) -> Value {
    one(args).map_or(Value::Undefined, |n| from_f64(f(n.to_f64())))
}

fn double2(args: Vec<Value>, f: fn(f64, f64) -> f64) -> Value {
    two(args).map_or(Value::Undefined, |(x, y)| {
        from_f64(f(x.to_f64(), y.to_f64()))
    })
}

pub fn acos(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::acos)
}

pub fn asin(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::asin)
}

pub fn atan(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::atan)
}

/// `atan2(y, x)`: the angle of the point (x, y), as Java's `Math.atan2(y, x)`.
pub fn atan2(_: &Env, args: Vec<Value>) -> Value {
    double2(args, f64::atan2)
}

pub fn cos(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::cos)
}

pub fn cosh(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::cosh)
}

pub fn sin(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::sin)
}

pub fn sinh(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::sinh)
}

pub fn tan(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::tan)
}

pub fn tanh(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::tanh)
}

pub fn exp(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::exp)
}

/// The natural logarithm.
pub fn ln(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::ln)
}

/// The base-10 logarithm.
pub fn log(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::log10)
}

pub fn sqrt(_: &Env, args: Vec<Value>) -> Value {
    double(args, f64::sqrt)
}

pub fn power(_: &Env, args: Vec<Value>) -> Value {
    double2(args, f64::powf)
}

pub fn abs(_: &Env, args: Vec<Value>) -> Value {
    match one(args) {
        // Ints are within -INT_MAX..=INT_MAX, so the absolute value is too.
        Some(Num::Int(i)) => Value::Int(i.abs()),
        Some(Num::Dec(d)) => Value::Decimal(d.abs()),
        None => Value::Undefined,
    }
}

/// -1, 0 or 1, as an Int.
pub fn sign(_: &Env, args: Vec<Value>) -> Value {
    match one(args) {
        Some(Num::Int(i)) => Value::Int(i.signum()),
        Some(Num::Dec(d)) => Value::Int(match d.sign() {
            Sign::Minus => -1,
            Sign::NoSign => 0,
            Sign::Plus => 1,
        }),
        None => Value::Undefined,
    }
}

/// An Int rounded with `mode`; an Int when it fits, else a whole Decimal.
fn to_whole(args: Vec<Value>, mode: RoundingMode) -> Value {
    match one(args) {
        Some(Num::Int(i)) => Value::Int(i),
        Some(Num::Dec(d)) => {
            let whole = round_to_scale(&d, 0, mode);
            decimal_to_int(&whole).map_or(Value::Decimal(whole), Value::Int)
        }
        None => Value::Undefined,
    }
}

pub fn ceil(_: &Env, args: Vec<Value>) -> Value {
    to_whole(args, RoundingMode::Ceiling)
}

pub fn floor(_: &Env, args: Vec<Value>) -> Value {
    to_whole(args, RoundingMode::Floor)
}

/// To the nearest Int, halves away from zero (`round(-1.5)` = -2), as the reference's
/// description and examples say; its type table's "rounded down" is not followed.
pub fn round(_: &Env, args: Vec<Value>) -> Value {
    to_whole(args, RoundingMode::HalfUp)
}

/// `trunc(x, n)`: x truncated toward zero to n decimal places, trailing zeros of the
/// fraction stripped (`trunc(2.00, 5)` = 2). n is converted to Int (rounded down) and
/// clamped to 0..=34; an Int x is returned as it is.
pub fn trunc(_: &Env, args: Vec<Value>) -> Value {
    let Some([x, n]) = args_n(args) else {
        return Value::Undefined;
    };
    let (Conv::Ok(x), Conv::Ok(places)) = (x.to_num(), n.to_int_saturating()) else {
        return Value::Undefined;
    };
    match x {
        Num::Int(i) => Value::Int(i),
        Num::Dec(d) => {
            let places = places.clamp(0, TRUNC_MAX_PLACES);
            let cut = round_to_scale(&d, places, RoundingMode::Down);
            Value::Decimal(strip_fraction_zeros(cut))
        }
    }
}

/// `2.3100` → `2.31`, `2.00` → `2`; a whole number keeps its digits (`200` stays `200`,
/// not `2E+2`).
fn strip_fraction_zeros(d: BigDecimal) -> BigDecimal {
    if d.fractional_digit_count() <= 0 {
        return d;
    }
    let stripped = d.normalized();
    if stripped.fractional_digit_count() < 0 {
        stripped.with_scale(0)
    } else {
        stripped
    }
}

/// `mod(a, b)` and `remainder(a, b)`: Java's `%`, the result having the sign of a. Two Ints
/// give an Int, anything else a Decimal; b = 0 gives Undefined.
pub fn modulo(_: &Env, args: Vec<Value>) -> Value {
    let Some((x, y)) = two(args) else {
        return Value::Undefined;
    };
    if num_is_zero(&y) {
        return Value::Undefined;
    }
    if let (Num::Int(i), Num::Int(j)) = (&x, &y) {
        return Value::Int(i.checked_rem(*j).unwrap_or(0));
    }
    let (x, y) = (x.to_decimal(), y.to_decimal());
    let rescale = (x.fractional_digit_count() - y.fractional_digit_count()).abs();
    if rescale > MOD_MAX_RESCALE {
        // Only the easy case is answered: |x| < |y| leaves x whole.
        return if x.order_of_magnitude() < y.order_of_magnitude() {
            Value::Decimal(x)
        } else {
            Value::Undefined
        };
    }
    Value::Decimal(round_decimal(x % y))
}

fn bits(args: Vec<Value>, f: fn(i64, i64) -> i64) -> Value {
    let Some([x, y]) = args_n(args) else {
        return Value::Undefined;
    };
    match (x.to_i64(), y.to_i64()) {
        (Conv::Ok(a), Conv::Ok(b)) => Value::Int(f(a, b).into()),
        _ => Value::Undefined,
    }
}

/// Bitwise AND of the two arguments converted to Int (Decimals rounded down), on 64 bits
/// (an argument beyond 64 bits gives Undefined).
pub fn bitand(_: &Env, args: Vec<Value>) -> Value {
    bits(args, |a, b| a & b)
}

pub fn bitor(_: &Env, args: Vec<Value>) -> Value {
    bits(args, |a, b| a | b)
}

pub fn bitxor(_: &Env, args: Vec<Value>) -> Value {
    bits(args, |a, b| a ^ b)
}

/// The two's-complement NOT (`bitnot(13)` = -14, as Java's `~13`); the reference's example
/// `bitnot(13)` = 2 is a NOT over 4 bits only.
pub fn bitnot(_: &Env, args: Vec<Value>) -> Value {
    match args_n::<1>(args).map(|[x]| x.to_i64()) {
        Some(Conv::Ok(a)) => Value::Int((!a).into()),
        _ => Value::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check;

    #[test]
    fn exact_functions() {
        check(&[
            ("abs", &["-5"], "5"),
            ("abs", &["\"-2.5\""], "2.5"),
            ("abs", &["-9223372036854775808"], "9223372036854775808"),
            ("abs", &["true"], "undefined"),
            ("abs", &["null"], "undefined"),
            ("sign", &["-2.5"], "-1"),
            ("sign", &["0.0"], "0"),
            ("sign", &["\"3\""], "1"),
            ("ceil", &["1.2"], "2"),
            ("ceil", &["-1.2"], "-1"),
            ("ceil", &["1E-400"], "1"),
            ("ceil", &["1E+400"], &format!("1{}", "0".repeat(400))),
            ("floor", &["-1.2"], "-2"),
            ("floor", &["-1E-400"], "-1"),
            ("floor", &["\"1.9\""], "1"),
            ("round", &["1.5"], "2"),
            ("round", &["-1.5"], "-2"),
            ("round", &["-1.4"], "-1"),
            ("round", &["0.4999999999999999999999"], "0"),
            ("round", &["\"x\""], "undefined"),
            ("trunc", &["2.3123", "2"], "2.31"),
            ("trunc", &["-2.888", "2"], "-2.88"),
            ("trunc", &["2.00", "5"], "2"),
            ("trunc", &["200.0", "0"], "200"),
            ("trunc", &["2.5", "50"], "2.5"),
            ("trunc", &["2.888", "-1"], "2"),
            ("trunc", &["2.888", "1E+30"], "2.888"),
            ("trunc", &["1E-400", "3"], "0"),
            ("trunc", &["5", "2"], "5"),
            ("trunc", &["2.5", "true"], "undefined"),
            ("mod", &["8", "3"], "2"),
            ("mod", &["-8", "3"], "-2"),
            ("mod", &["-8.5", "3"], "-2.5"),
            ("mod", &["8", "0"], "undefined"),
            ("mod", &["8", "0.0"], "undefined"),
            ("mod", &["-9223372036854775808", "-1"], "0"),
            ("mod", &["12345678901234567891", "10"], "1"),
            (
                "abs",
                &["-9999999999999999999999999999999999"],
                "9999999999999999999999999999999999",
            ),
            ("floor", &["12345678901234567891.5"], "12345678901234567891"),
            (
                "round",
                &["-12345678901234567891.5"],
                "-12345678901234567892",
            ),
            ("bitand", &["18446744073709551616", "1"], "undefined"),
            ("bitnot", &["9223372036854775808"], "undefined"),
            (
                "bitor",
                &["9223372036854775807", "0"],
                "9223372036854775807",
            ),
            ("mod", &["\"8.5\"", "3"], "2.5"),
            ("mod", &["1E-999", "3"], "1E-999"),
            ("mod", &["1E+999", "0.3"], "0.1"),
            ("remainder", &["10", "4"], "2"),
            ("bitand", &["13.9", "12.2"], "12"),
            ("bitor", &["\"8.5\"", "5"], "13"),
            ("bitxor", &["13", "5"], "8"),
            ("bitnot", &["13"], "-14"),
            ("bitnot", &["-13.7"], "12"),
            ("bitand", &["1E+30", "1"], "undefined"),
            ("bitand", &["true", "1"], "undefined"),
        ]);
    }

    #[test]
    fn double_functions() {
        check(&[
            ("acos", &["0"], "1.5707963267948966"),
            ("acos", &["2"], "undefined"),
            ("asin", &["0"], "0"),
            ("atan2", &["1", "0"], "1.5707963267948966"),
            ("cos", &["0"], "1"),
            ("cosh", &["2.3"], "5.037220649268761"),
            ("sinh", &["2.3"], "4.936961805545957"),
            ("tan", &["3"], "-0.1425465430742778"),
            ("tanh", &["2.3"], "0.9800963962661914"),
            ("exp", &["0"], "1"),
            ("exp", &["1000"], "undefined"),
            ("ln", &["1"], "0"),
            ("ln", &["-1"], "undefined"),
            ("ln", &["0"], "undefined"),
            ("log", &["100"], "2"),
            ("sqrt", &["2.25"], "1.5"),
            ("sqrt", &["-1"], "undefined"),
            ("power", &["2", "5"], "32"),
            ("power", &["2", "-1"], "0.5"),
            ("power", &["\"2\"", "\"x\""], "undefined"),
            ("sin", &["1e400"], "undefined"),
        ]);
    }
}
