//! The regular-expression functions: `regexp_matches`, `regexp_replace`, `regexp_substr`.
//!
//! AWS runs Java's `java.util.regex`; topicrule runs the `fancy-regex` crate, which takes
//! Java's syntax including back-references (`(ab)\1`, `\k<name>`), look-around (`(?=x)`,
//! `(?<!y)`), atomic groups (`(?>x)`) and possessive quantifiers (`a*+`). A pattern without
//! those is handed whole to the `regex` crate, which matches in linear time. A pattern with
//! them runs on a backtracking engine bounded by [`BACKTRACK_LIMIT`]: a match that reaches
//! the bound gives Undefined, as does an invalid pattern (the reference says so of those).
//!
//! Before compiling, a pattern is rewritten where Java and the crate read it differently:
//! `\d`, `\w`, `\s` and their negations are ASCII, as in Java by default (`[0-9]`,
//! `[a-zA-Z0-9_]`, `[ \t\n\x0B\f\r]`); `\h` and `\v` are Java's horizontal and vertical
//! white space (the crate reads `\h` as a hex digit); `\Q...\E` quotes; `\<` and `\>`
//! are the characters (the crate reads them as word boundaries). Still Unicode here where
//! Java is ASCII by default: `\b` (as in Java before 19), case-insensitive matching. `.`
//! excludes only `\n` (Java also excludes `\r`, U+0085, U+2028 and U+2029).
//!
//! Compiled patterns are kept in a small per-thread cache, so a rule does not recompile its
//! pattern for every message.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use fancy_regex::{Captures, Regex, RegexBuilder};

use super::super::eval::Env;
use super::super::value::Value;
use super::string::MAX_BUILT;
use super::{args_n, string, text};

/// How many patterns each thread keeps compiled; the cache is emptied when full.
const CACHE_ENTRIES: usize = 64;

/// The most memory one compiled `regex` part may take (that crate's default is 10 MiB), so
/// that a pattern like `(a{1000}){1000}` is rejected quickly.
const COMPILED_SIZE_LIMIT: usize = 2 << 20;

/// The most instructions of the backtracking engine's program.
const PROGRAM_SIZE_LIMIT: usize = 100_000;

/// How many times the backtracking engine may go back in one search before giving up (a
/// pattern like `^(a|a)*\1b` on a run of `a` would otherwise take exponential time). A
/// million takes tens of milliseconds.
const BACKTRACK_LIMIT: usize = 1_000_000;

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
        let compiled = RegexBuilder::new(&from_java(pattern))
            .delegate_size_limit(COMPILED_SIZE_LIMIT)
            .max_prog_size(PROGRAM_SIZE_LIMIT)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .ok();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    })
}

/// Java's white space for `\s`: space, tab, newline, vertical tab, form feed, return. The
/// space is written `\x20`, which `(?x)` does not ignore.
const JAVA_SPACE: &str = r"[\x20\t\n\x0B\f\r]";
/// Java's `\h`.
const JAVA_HORIZONTAL: &str =
    r"[\x20\t\xA0\x{1680}\x{180E}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]";
/// Java's `\v`.
const JAVA_VERTICAL: &str = r"[\n\x0B\f\r\x{85}\x{2028}\x{2029}]";

/// The pattern with Java's readings of the escapes listed in the header made explicit. The
/// replacements are bracketed classes, which mean the same inside a class (`[\d.]` becomes
/// `[[0-9].]`, a union), so the rewrite need not know where classes are.
fn from_java(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            // A trailing backslash: left for the crate to reject.
            out.push(c);
            break;
        };
        match e {
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            'w' => out.push_str("[a-zA-Z0-9_]"),
            'W' => out.push_str("[^a-zA-Z0-9_]"),
            's' => out.push_str(JAVA_SPACE),
            'S' => out.push_str(&JAVA_SPACE.replacen('[', "[^", 1)),
            'h' => out.push_str(JAVA_HORIZONTAL),
            'H' => out.push_str(&JAVA_HORIZONTAL.replacen('[', "[^", 1)),
            'v' => out.push_str(JAVA_VERTICAL),
            'V' => out.push_str(&JAVA_VERTICAL.replacen('[', "[^", 1)),
            '<' | '>' => out.push(e),
            'Q' => {
                // Everything up to `\E` (or the end) is literal.
                let rest = chars.as_str();
                let (quoted, after) = rest.split_once(r"\E").unwrap_or((rest, ""));
                for q in quoted.chars() {
                    let _ = write!(out, "\\x{{{:X}}}", u32::from(q));
                }
                chars = after.chars();
            }
            _ => {
                out.push(c);
                out.push(e);
            }
        }
    }
    out
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
        .and_then(|(s, re)| re.is_match(s.as_str()).ok())
        .map_or(Value::Undefined, Value::Bool)
}

/// The first match of the pattern; Undefined when there is none (the reference does not
/// say what a failed search gives) or the search reaches the backtrack limit.
pub fn regexp_substr(env: &Env, args: Vec<Value>) -> Value {
    let Some([s, pattern]) = args_n(args) else {
        return Value::Undefined;
    };
    subject_and_pattern(env, &s, &pattern)
        .and_then(|(s, re)| {
            re.find(s.as_str())
                .ok()
                .flatten()
                .map(|m| string(m.as_str()))
        })
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
    for caps in re.captures_iter(s.as_str()) {
        // An error is the backtrack limit reached.
        let Ok(caps) = caps else {
            return Value::Undefined;
        };
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
fn expand(pieces: &[Piece], caps: &Captures<'_, str>, out: &mut String) -> bool {
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
            ("regexp_matches", &["\"a\"", "\"(a)\\\\1\""], "false"),
            ("regexp_matches", &["\"aa\"", "\"(a)\\\\1\""], "true"),
            ("regexp_matches", &["null", "\"a\""], "undefined"),
            // Valid in Java too; answered without building a million states.
            ("regexp_matches", &["\"a\"", "\"a{1000}{1000}\""], "false"),
            (
                "regexp_matches",
                &["\"a\"", "\"(a{1000}){1000}\""],
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
    fn java_escapes_are_rewritten() {
        assert_eq!(from_java(r"\d+\W"), "[0-9]+[^a-zA-Z0-9_]");
        assert_eq!(from_java(r"[\d.]"), "[[0-9].]");
        assert_eq!(from_java(r"\\d"), r"\\d");
        assert_eq!(from_java(r"\Qa.b\E."), r"\x{61}\x{2E}\x{62}.");
        assert_eq!(from_java(r"\Q("), r"\x{28}");
        assert_eq!(from_java(r"\<a\>"), "<a>");
        assert_eq!(from_java(r"(a)\1\k<n>\p{L}\b"), r"(a)\1\k<n>\p{L}\b");
        assert_eq!(from_java(r"x\"), r"x\");
    }

    #[test]
    fn java_semantics() {
        let matches = |s: &str, p: &str| compile(p).and_then(|re| re.is_match(s).ok());
        // ASCII classes, as Java's defaults.
        assert_eq!(matches("\u{661}", r"\d"), Some(false));
        assert_eq!(matches("é", r"^\w$"), Some(false));
        assert_eq!(matches("é", r"^\W$"), Some(true));
        assert_eq!(matches("\u{2003}", r"\s"), Some(false));
        assert_eq!(matches("\u{2003}", r"\h"), Some(true));
        assert_eq!(matches("x-1", r"^[\w-]+$"), Some(true));
        assert_eq!(matches("a b", r"(?x) a \s b"), Some(true));
        assert_eq!(matches("a b", r"^\S+$"), Some(false));
        // Look-around, atomic groups and possessive quantifiers.
        assert_eq!(matches("ab", "a(?=b)"), Some(true));
        assert_eq!(matches("ab", "(?<!a)b"), Some(false));
        assert_eq!(matches("aaa", "(?>a*)a"), Some(false));
        assert_eq!(matches("aaa", "a*+a"), Some(false));
        assert_eq!(matches("aaa", "a*a"), Some(true));
        // A search that reaches the backtrack limit gives no answer, and quickly.
        let started = std::time::Instant::now();
        assert_eq!(matches(&"a".repeat(40), r"^(a|a)*\1b"), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn cache_is_bounded() {
        for i in 0..200 {
            assert!(compile(&format!("a{i}")).is_some());
        }
        CACHE.with(|c| assert!(c.borrow().len() <= CACHE_ENTRIES));
    }
}
