//! String functions. Arguments that are not strings go through the To String conversion
//! (numbers as digits, Booleans as `true`/`false`, arrays and objects as JSON); Null,
//! Undefined and binary payloads give Undefined. Lengths and indexes count UTF-16 code
//! units, as Java's do: a character beyond the Basic Multilingual Plane (an emoji, say)
//! counts 2, so `length('😀')` is 2. Where an index splits such a character in two, Java
//! would give half of it (a lone surrogate), which a Rust string cannot hold: the half
//! becomes U+FFFD, the replacement character (`substring`, and `get` in misc.rs).

use super::super::eval::Env;
use super::super::value::{Conv, Value};
use super::{args_n, string, text};

/// The most spaces `lpad` and `rpad` add, as the reference says.
const MAX_PAD: i64 = 1000;

/// The longest string `replace` builds; a call that would build more is Undefined rather
/// than a memory hazard (AWS's own messages stop at 128 KiB).
pub(super) const MAX_BUILT: usize = 16 << 20;

fn one_text(env: &Env, args: Vec<Value>) -> Option<String> {
    let [x] = args_n(args)?;
    text(env, &x)
}

fn two_texts(env: &Env, args: Vec<Value>) -> Option<(String, String)> {
    let [x, y] = args_n(args)?;
    Some((text(env, &x)?, text(env, &y)?))
}

fn map_text(env: &Env, args: Vec<Value>, f: impl FnOnce(&str) -> String) -> Value {
    one_text(env, args).map_or(Value::Undefined, |s| string(f(&s)))
}

/// The ASCII character of an Int (Decimals rounded down); outside 0..=127, Undefined.
pub fn chr(_: &Env, args: Vec<Value>) -> Value {
    match args_n::<1>(args).map(|[x]| x.to_int()) {
        Some(Conv::Ok(code @ 0..=127)) => string(char::from(code as u8).to_string()),
        _ => Value::Undefined,
    }
}

/// `concat()` is Undefined and `concat(x)` is x unmodified, as the reference's table says
/// (its example `concat(1)` = "1" contradicts the table). With two or more arguments: if
/// any is an Array, one array of the elements of the arrays and the other arguments
/// themselves (Undefined arguments are left out); otherwise the concatenation of the
/// arguments converted to strings (Undefined if any cannot be, as Null cannot).
pub fn concat(env: &Env, args: Vec<Value>) -> Value {
    if args.len() <= 1 {
        return args.into_iter().next().unwrap_or_default();
    }
    if args.iter().any(|a| matches!(a, Value::Array(_))) {
        let mut out = Vec::new();
        for arg in args {
            match arg {
                Value::Array(items) => out.extend(items),
                Value::Undefined => {}
                other => out.push(other),
            }
        }
        return Value::Array(out);
    }
    let mut out = String::new();
    for arg in &args {
        match arg.to_text(env.version) {
            Some(s) => out.push_str(&s),
            None => return Value::Undefined,
        }
    }
    string(out)
}

/// Whether the first string ends with the second.
pub fn endswith(env: &Env, args: Vec<Value>) -> Value {
    two_texts(env, args).map_or(Value::Undefined, |(s, end)| Value::Bool(s.ends_with(&end)))
}

pub fn startswith(env: &Env, args: Vec<Value>) -> Value {
    two_texts(env, args).map_or(Value::Undefined, |(s, start)| {
        Value::Bool(s.starts_with(&start))
    })
}

/// The 0-based UTF-16 index of the first occurrence of the second string in the first;
/// -1 when there is none (as Java's `indexOf`; the reference does not say).
pub fn indexof(env: &Env, args: Vec<Value>) -> Value {
    let Some((s, needle)) = two_texts(env, args) else {
        return Value::Undefined;
    };
    Value::Int(s.find(&needle).map_or(-1, |at| utf16_len(&s[..at]) as i128))
}

/// The number of UTF-16 code units, as Java's `String.length`.
pub fn length(env: &Env, args: Vec<Value>) -> Value {
    one_text(env, args).map_or(Value::Undefined, |s| Value::Int(utf16_len(&s) as i128))
}

/// The length of a string in UTF-16 code units.
pub(super) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The UTF-16 code units `from..to` of a string (`from <= to`, both within its length),
/// as Java's `String.substring`; a character of two units of which only one is in the
/// range becomes U+FFFD.
pub(super) fn utf16_slice(s: &str, from: usize, to: usize) -> String {
    let mut out = String::new();
    let mut at = 0;
    for c in s.chars() {
        let end = at + c.len_utf16();
        if end > from && at < to {
            if at >= from && end <= to {
                out.push(c);
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
        if end >= to {
            break;
        }
        at = end;
    }
    out
}

/// The number of bytes of the UTF-8 encoding.
pub fn numbytes(env: &Env, args: Vec<Value>) -> Value {
    one_text(env, args).map_or(Value::Undefined, |s| Value::Int(s.len() as i128))
}

pub fn lower(env: &Env, args: Vec<Value>) -> Value {
    map_text(env, args, str::to_lowercase)
}

pub fn upper(env: &Env, args: Vec<Value>) -> Value {
    map_text(env, args, str::to_uppercase)
}

/// The white space that `ltrim`, `rtrim` and `trim` remove: spaces and tabs, as the
/// reference says (not newlines, which Java's `String.trim` would also remove).
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

pub fn ltrim(env: &Env, args: Vec<Value>) -> Value {
    map_text(env, args, |s| s.trim_start_matches(is_blank).to_owned())
}

pub fn rtrim(env: &Env, args: Vec<Value>) -> Value {
    map_text(env, args, |s| s.trim_end_matches(is_blank).to_owned())
}

pub fn trim(env: &Env, args: Vec<Value>) -> Value {
    map_text(env, args, |s| s.trim_matches(is_blank).to_owned())
}

/// The string and the pad count (converted to Int, rounded down, clamped to 0..=1000).
fn pad_args(env: &Env, args: Vec<Value>) -> Option<(String, usize)> {
    let [s, n] = args_n(args)?;
    let Conv::Ok(n) = n.to_int_saturating() else {
        return None;
    };
    Some((text(env, &s)?, n.clamp(0, MAX_PAD) as usize))
}

/// The string with n spaces on its left.
pub fn lpad(env: &Env, args: Vec<Value>) -> Value {
    pad_args(env, args).map_or(Value::Undefined, |(s, n)| {
        string(format!("{}{s}", " ".repeat(n)))
    })
}

/// The string with n spaces on its right.
pub fn rpad(env: &Env, args: Vec<Value>) -> Value {
    pad_args(env, args).map_or(Value::Undefined, |(s, n)| {
        string(format!("{s}{}", " ".repeat(n)))
    })
}

/// Every occurrence of the second string replaced by the third, literally. An empty second
/// string matches between every two characters, as in Java, but between whole characters:
/// Java also matches between the two UTF-16 units of an emoji, which would leave lone
/// surrogates.
pub fn replace(env: &Env, args: Vec<Value>) -> Value {
    let Some([s, from, to]) = args_n(args) else {
        return Value::Undefined;
    };
    let (Some(s), Some(from), Some(to)) = (text(env, &s), text(env, &from), text(env, &to)) else {
        return Value::Undefined;
    };
    let count = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from.as_str()).count()
    };
    let size = s.len().saturating_add(count.saturating_mul(to.len()));
    if size > MAX_BUILT {
        return Value::Undefined;
    }
    string(s.replace(from.as_str(), &to))
}

/// `substring(s, from[, to])`: UTF-16 units from `from` (0-based, inclusive) to `to`
/// (exclusive; the end by default). Indexes are converted to Int (rounded down; numbers
/// beyond 64 bits saturate) and clamped to 0..=length; `from >= to` gives "".
pub fn substring(env: &Env, args: Vec<Value>) -> Value {
    let mut args = args.into_iter();
    let (Some(s), Some(from)) = (args.next(), args.next()) else {
        return Value::Undefined;
    };
    let Some(s) = text(env, &s) else {
        return Value::Undefined;
    };
    let len = utf16_len(&s) as i64;
    let index = |v: &Value| match v.to_int_saturating() {
        Conv::Ok(i) => Some(i.clamp(0, len) as usize),
        _ => None,
    };
    let Some(from) = index(&from) else {
        return Value::Undefined;
    };
    let to = match args.next() {
        Some(to) => match index(&to) {
            Some(to) => to,
            None => return Value::Undefined,
        },
        None => len as usize,
    };
    if from >= to {
        return string("");
    }
    string(utf16_slice(&s, from, to))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check;

    #[test]
    fn conversions_and_edges() {
        check(&[
            ("chr", &["65"], "\"A\""),
            ("chr", &["\"49.9\""], "\"1\""),
            ("chr", &["128"], "undefined"),
            ("chr", &["-1"], "undefined"),
            ("concat", &[], "undefined"),
            ("concat", &["[1,2]"], "[1,2]"),
            ("concat", &["1"], "1"),
            (
                "concat",
                &["[1,2,3]", "\"hello\"", "[4,5,6]"],
                "[1,2,3,\"hello\",4,5,6]",
            ),
            ("concat", &["1", "\"hello\""], "\"1hello\""),
            ("concat", &["1", "2"], "\"12\""),
            ("concat", &["\"a\"", "null"], "undefined"),
            ("concat", &["[1]", "undefined", "null"], "[1,null]"),
            ("concat", &["{\"a\":1}", "\"x\""], "\"{\\\"a\\\":1}x\""),
            ("endswith", &["123", "23"], "true"),
            ("endswith", &["\"a\"", "null"], "undefined"),
            ("startswith", &["false", "\"fa\""], "true"),
            ("indexof", &["\"abcd\"", "\"bc\""], "1"),
            ("indexof", &["\"€€x\"", "\"x\""], "2"),
            ("indexof", &["\"abcd\"", "\"z\""], "-1"),
            ("length", &["false"], "5"),
            ("length", &["\"€\""], "1"),
            ("length", &["\"😀\""], "2"),
            ("length", &["\"a😀b\""], "4"),
            ("indexof", &["\"😀x\"", "\"x\""], "2"),
            ("numbytes", &["\"€\""], "3"),
            ("lower", &["[\"HELLO\"]"], "\"[\\\"hello\\\"]\""),
            ("upper", &["false"], "\"FALSE\""),
            ("upper", &["null"], "undefined"),
            ("lpad", &["\"hello\"", "2"], "\"  hello\""),
            ("lpad", &["1", "\"2.9\""], "\"  1\""),
            ("lpad", &["\"a\"", "-5"], "\"a\""),
            ("lpad", &["\"a\"", "true"], "undefined"),
            ("lpad", &["null", "1"], "undefined"),
            ("rpad", &["2.5", "1"], "\"2.5 \""),
            ("ltrim", &["\"\\t h i \""], "\"h i \""),
            ("rtrim", &["\" h i \\t\""], "\" h i\""),
            ("trim", &["\"\\n x \\n\""], "\"\\n x \\n\""),
            ("trim", &["\" \\t x\\t \""], "\"x\""),
            ("replace", &["12321", "2", "9"], "\"19391\""),
            ("replace", &["\"abc\"", "\"\"", "\"-\""], "\"-a-b-c-\""),
            ("replace", &["\"abc\"", "null", "\"-\""], "undefined"),
            ("substring", &["\"012345\"", "2.745"], "\"2345\""),
            ("substring", &["false", "-2.411E247"], "\"false\""),
            ("substring", &["\"012345\"", "-50", "50"], "\"012345\""),
            ("substring", &["\"012345\"", "3", "1"], "\"\""),
            ("substring", &["\"012345\"", "1", "3"], "\"12\""),
            ("substring", &["\"é€x\"", "1"], "\"€x\""),
            ("substring", &["\"a😀b\"", "1", "3"], "\"😀\""),
            ("substring", &["\"a😀b\"", "3"], "\"b\""),
            ("substring", &["\"a😀b\"", "2"], "\"\u{FFFD}b\""),
            ("substring", &["\"a😀b\"", "0", "2"], "\"a\u{FFFD}\""),
            ("substring", &["\"😀\"", "1", "1"], "\"\""),
            ("substring", &["\"a😀b\"", "0", "9"], "\"a😀b\""),
            ("substring", &["\"012345\"", "\"x\""], "undefined"),
            ("substring", &["\"012345\"", "1", "null"], "undefined"),
        ]);
    }
}
