//! The regular-expression functions: `regexp_matches`, `regexp_replace`, `regexp_substr`.
//!
//! AWS runs Java's `java.util.regex`; topicrule runs the `regex` crate, which accepts the
//! same syntax for everything but backreferences, lookaround and possessive quantifiers:
//! patterns using those do not compile, and an invalid pattern gives Undefined, as the
//! reference says. Classes like `\d` and `\w` are Unicode-aware here (ASCII in Java).
//!
//! Compiled patterns are kept in a small per-thread cache, so a rule does not recompile its
//! pattern for every message.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::{Captures, Regex, RegexBuilder};

use super::super::eval::Env;
use super::super::value::Value;
use super::string::MAX_BUILT;
use super::{args_n, string, text};

/// How many patterns each thread keeps compiled; the cache is emptied when full.
const CACHE_ENTRIES: usize = 64;

/// The most memory one compiled pattern may take (the crate's default is 10 MiB), so that
/// a pattern like `a{1000}{1000}` is rejected quickly.
const COMPILED_SIZE_LIMIT: usize = 2 << 20;

thread_local! {
    static CACHE: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// The compiled pattern, from the cache when it is there; None when it is not valid.
fn compile(pattern: &str) -> Option<Regex> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(compiled) = cache.get(pattern) {
            return compiled.clone();
        }
        let compiled = RegexBuilder::new(pattern)
            .size_limit(COMPILED_SIZE_LIMIT)
            .build()
            .ok();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    })
}

/// The subject string and the compiled pattern of a call.
fn subject_and_pattern(env: &Env, s: &Value, pattern: &Value) -> Option<(String, Regex)> {
    let s = text(env, s)?;
    let pattern = compile(&text(env, pattern)?)?;
    Some((s, pattern))
}

/// Whether the pattern matches anywhere in the string.
pub fn regexp_matches(env: &Env, args: Vec<Value>) -> Value {
    let Some([s, pattern]) = args_n(args) else {
        return Value::Undefined;
    };
    subject_and_pattern(env, &s, &pattern)
        .map_or(Value::Undefined, |(s, re)| Value::Bool(re.is_match(&s)))
}

/// The first match of the pattern; Undefined when there is none (the reference does not
/// say what a failed search gives).
pub fn regexp_substr(env: &Env, args: Vec<Value>) -> Value {
    let Some([s, pattern]) = args_n(args) else {
        return Value::Undefined;
    };
    subject_and_pattern(env, &s, &pattern)
        .and_then(|(s, re)| re.find(&s).map(|m| string(m.as_str())))
        .unwrap_or_default()
}

/// Every match replaced by the replacement, which follows Java's syntax: `$1` (the longest
/// run of digits naming an existing group), `${name}`, and `\` to take the next character
/// literally. A reference to a group that does not exist, a `$` not followed by a group, or
/// a trailing `\` make the replacement invalid: Undefined, as the reference says.
pub fn regexp_replace(env: &Env, args: Vec<Value>) -> Value {
    let Some([s, pattern, replacement]) = args_n(args) else {
        return Value::Undefined;
    };
    let Some((s, re)) = subject_and_pattern(env, &s, &pattern) else {
        return Value::Undefined;
    };
    let Some(replacement) = text(env, &replacement) else {
        return Value::Undefined;
    };
    let Some(pieces) = parse_replacement(&replacement, &re) else {
        return Value::Undefined;
    };
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(&s) {
        let whole = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..whole.start()]);
        if !expand(&pieces, &caps, &mut out) {
            return Value::Undefined;
        }
        last = whole.end();
    }
    out.push_str(&s[last..]);
    string(out)
}

/// A part of a parsed replacement string.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

fn parse_replacement(replacement: &str, re: &Regex) -> Option<Vec<Piece>> {
    let groups = re.captures_len() - 1;
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => literal.push(chars.next()?),
            '$' => {
                let piece = match chars.next()? {
                    '{' => {
                        let mut name = String::new();
                        loop {
                            match chars.next()? {
                                '}' => break,
                                c if c.is_ascii_alphanumeric() => name.push(c),
                                _ => return None,
                            }
                        }
                        let starts_with_letter =
                            name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
                        if !starts_with_letter || !re.capture_names().flatten().any(|n| n == name) {
                            return None;
                        }
                        Piece::Named(name)
                    }
                    d @ '0'..='9' => {
                        let mut number = d as usize - '0' as usize;
                        if number > groups {
                            return None;
                        }
                        while let Some(next) = chars.peek().and_then(|c| c.to_digit(10)) {
                            let longer = number * 10 + next as usize;
                            if longer > groups {
                                break;
                            }
                            number = longer;
                            chars.next();
                        }
                        Piece::Group(number)
                    }
                    _ => return None,
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Some(pieces)
}

/// Appends one replacement; a group that did not take part in the match adds nothing.
/// False, with nothing more appended, when the result would grow beyond [`MAX_BUILT`].
fn expand(pieces: &[Piece], caps: &Captures, out: &mut String) -> bool {
    for piece in pieces {
        let text = match piece {
            Piece::Text(t) => Some(t.as_str()),
            Piece::Group(i) => caps.get(*i).map(|m| m.as_str()),
            Piece::Named(name) => caps.name(name).map(|m| m.as_str()),
        };
        let text = text.unwrap_or("");
        if out.len() + text.len() > MAX_BUILT {
            return false;
        }
        out.push_str(text);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check;
    use super::*;

    #[test]
    fn regex_functions() {
        check(&[
            ("regexp_matches", &["\"aaaa\"", "\"a{2,}\""], "true"),
            ("regexp_matches", &["\"aaaa\"", "\"b\""], "false"),
            ("regexp_matches", &["\"a\"", "\"(\""], "undefined"),
            ("regexp_matches", &["\"a\"", "\"(a)\\\\1\""], "undefined"),
            ("regexp_matches", &["null", "\"a\""], "undefined"),
            (
                "regexp_matches",
                &["\"a\"", "\"a{1000}{1000}\""],
                "undefined",
            ),
            ("regexp_substr", &["\"hihihello\"", "\"(hi)*\""], "\"hihi\""),
            ("regexp_substr", &["12345", "\"3.\""], "\"34\""),
            ("regexp_substr", &["\"abc\"", "\"x\""], "undefined"),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b(.*)d\"", "\"$1\""],
                "\"ac\"",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b(.*)d\"", "\"$1a\""],
                "\"aca\"",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b(.*)d\"", "\"$12\""],
                "\"ac2\"",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b(.*)d\"", "\"$2\""],
                "undefined",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b\"", "\"$\""],
                "undefined",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b\"", "\"\\\\$\""],
                "\"a$cd\"",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b\"", "\"x\\\\\""],
                "undefined",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"(?P<n>b)\"", "\"<${n}>\""],
                "\"a<b>cd\"",
            ),
            (
                "regexp_replace",
                &["\"abcd\"", "\"b\"", "\"${n}\""],
                "undefined",
            ),
            (
                "regexp_replace",
                &["\"abab\"", "\"b\"", "\"x\""],
                "\"axax\"",
            ),
            (
                "regexp_replace",
                &["\"abc\"", "\"x*\"", "\"-\""],
                "\"-a-b-c-\"",
            ),
            (
                "regexp_replace",
                &["\"ab\"", "\"(x)?b\"", "\"[$1]\""],
                "\"a[]\"",
            ),
        ]);
    }

    #[test]
    fn cache_is_bounded() {
        for i in 0..200 {
            assert!(compile(&format!("a{i}")).is_some());
        }
        CACHE.with(|c| assert!(c.borrow().len() <= CACHE_ENTRIES));
    }
}
