//! Validation and matching of single MQTT topic names and topic filters.
//!
//! The rules follow MQTT 3.1.1 section 4.7 (also unchanged in MQTT 5):
//! levels are separated by `/`, `+` matches exactly one level (which may be
//! empty) and `#` matches the parent level and every level below it.

use std::collections::HashMap;

use thiserror::Error;

/// The longest topic or filter MQTT can carry, in bytes.
///
/// MQTT encodes strings with a two-byte length prefix, so anything longer
/// could never reach a broker and is rejected up front.
pub const MAX_LEN: usize = 65_535;

/// Why a topic name or topic filter was rejected.
///
/// Variants that point at one character carry its byte offset in `at`, so a
/// caller can print the input with a caret under the offending character.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The input was empty, which MQTT forbids for both topics and filters.
    #[error("topic or filter is empty")]
    Empty,
    /// The input does not fit in an MQTT string.
    #[error("topic or filter is {len} bytes long, more than the limit of 65535")]
    TooLong {
        /// The length of the input in bytes.
        len: usize,
    },
    /// The input contains U+0000, which MQTT forbids in every string.
    #[error("null character is not allowed")]
    Nul {
        /// Byte offset of the null character.
        at: usize,
    },
    /// A topic name used for publishing contains a wildcard.
    #[error("wildcard `{ch}` is not allowed in a topic name")]
    WildcardInTopic {
        /// Byte offset of the wildcard.
        at: usize,
        /// The wildcard found, `+` or `#`.
        ch: char,
    },
    /// A `#` occupies a whole level but more levels follow it.
    #[error("`#` must be the last level of a filter")]
    HashNotLast {
        /// Byte offset of the `#`.
        at: usize,
    },
    /// A `#` shares its level with other characters, as in `a/b#`.
    #[error("`#` must occupy a whole level")]
    HashNotWholeLevel {
        /// Byte offset of the `#`.
        at: usize,
    },
    /// A `+` shares its level with other characters, as in `a/b+/c`.
    #[error("`+` must occupy a whole level")]
    PlusNotWholeLevel {
        /// Byte offset of the `+`.
        at: usize,
    },
}

impl TopicError {
    /// Returns the byte offset of the offending character, if there is one.
    ///
    /// This exists so that diagnostics can place a caret without matching on
    /// every variant.
    pub fn at(&self) -> Option<usize> {
        match *self {
            TopicError::Empty | TopicError::TooLong { .. } => None,
            TopicError::Nul { at }
            | TopicError::WildcardInTopic { at, .. }
            | TopicError::HashNotLast { at }
            | TopicError::HashNotWholeLevel { at }
            | TopicError::PlusNotWholeLevel { at } => Some(at),
        }
    }
}

/// Checks the length rules shared by topic names and filters.
fn check_len(s: &str) -> Result<(), TopicError> {
    match s.len() {
        0 => Err(TopicError::Empty),
        len if len > MAX_LEN => Err(TopicError::TooLong { len }),
        _ => Ok(()),
    }
}

/// Checks that `topic` is a name a client may publish to.
///
/// A topic name is non-empty, at most [`MAX_LEN`] bytes and contains neither
/// wildcard nor the null character, because a broker would otherwise reject
/// the publish or misroute it.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_len(topic)?;
    // Scanning bytes is sound because UTF-8 continuation bytes never equal
    // an ASCII character.
    for (at, byte) in topic.bytes().enumerate() {
        match byte {
            b'\0' => return Err(TopicError::Nul { at }),
            b'+' | b'#' => {
                let ch = char::from(byte);
                return Err(TopicError::WildcardInTopic { at, ch });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `filter` is a filter a client may subscribe with.
///
/// On failure the error reports the first offending character, so fixing
/// errors in the order reported converges on a valid filter.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_len(filter)?;
    let bytes = filter.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        let starts_level = at == 0 || bytes[at - 1] == b'/';
        let next = bytes.get(at + 1).copied();
        let ends_level = matches!(next, None | Some(b'/'));
        match byte {
            b'\0' => return Err(TopicError::Nul { at }),
            b'+' if !(starts_level && ends_level) => {
                return Err(TopicError::PlusNotWholeLevel { at });
            }
            b'#' if !(starts_level && ends_level) => {
                return Err(TopicError::HashNotWholeLevel { at });
            }
            b'#' if next.is_some() => return Err(TopicError::HashNotLast { at }),
            _ => {}
        }
    }
    Ok(())
}

/// Returns true when the first level of `filter` is a wildcard.
///
/// Such filters never match topics starting with `$` (MQTT 3.1.1 section
/// 4.7.2), which keeps broker-internal topics such as `$SYS/...` and
/// `$aws/...` out of catch-all subscriptions.
fn starts_with_wildcard(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("+" | "#"))
}

/// Returns true when `topic` matches `filter` under MQTT rules.
///
/// Both inputs are assumed valid; call [`validate_topic`] and
/// [`validate_filter`] first, because invalid input gives an unspecified
/// (but memory-safe) answer.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some(f), Some(t)) if f == "+" || f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Returns true when every topic matched by `specific` is matched by
/// `general`, so subscribing to `general` alone loses no message.
///
/// The comparison walks both filters level by level. One case needs care:
/// `#` alone cannot match its "parent" because topics are never empty, so it
/// matches exactly what `+/#` matches and is compared in that form. Hence
/// `#` and `+/#` cover each other although they differ; every other pair of
/// valid filters that cover each other is equal.
pub fn covers(general: &str, specific: &str) -> bool {
    let specific = if specific == "#" { "+/#" } else { specific };
    if specific.starts_with('$') && starts_with_wildcard(general) {
        return false;
    }
    let mut general_levels = general.split('/');
    let mut specific_levels = specific.split('/');
    loop {
        match (general_levels.next(), specific_levels.next()) {
            (Some("#"), _) => return true,
            (_, Some("#")) => return false,
            (Some(g), Some(s)) if g == "+" || g == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Returns the smallest subset of `filters` that covers all of them.
///
/// Duplicates and every filter covered by another one are dropped; among
/// filters that cover each other (only `#` and `+/#`) the first one seen is
/// kept. Survivors keep their input order so the result is deterministic,
/// which matters because it becomes the broker subscription list.
///
/// The distinct filters go into a trie of their levels; each one then walks
/// the trie for the filters that cover it, which visits only the branches its
/// own levels (or a `+`, or a `#`) lead to. A set of rules on distinct device
/// topics costs about its size in steps, where comparing every pair cost 7 s
/// for 10,000 rules.
pub fn covering_set<'a>(filters: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut trie = Levels::default();
    let mut distinct: Vec<&str> = Vec::new();
    for filter in filters {
        let node = filter
            .split('/')
            .fold(Levels::ROOT, |node, level| trie.child_or_new(node, level));
        if trie.filter[node].is_none() {
            trie.filter[node] = Some(distinct.len());
            distinct.push(filter);
        }
    }
    let redundant = |i: usize| {
        let candidate = distinct[i];
        // `#` covers what `+/#` covers: walk it as `+/#` (see `covers`).
        let levels: Vec<&str> = if candidate == "#" {
            vec!["+", "#"]
        } else {
            candidate.split('/').collect()
        };
        let found = |j: usize| j != i && (j < i || !covers(candidate, distinct[j]));
        trie.any_cover(&levels, candidate.starts_with('$'), found)
    };
    (0..distinct.len())
        .filter(|&i| !redundant(i))
        .map(|i| distinct[i].to_owned())
        .collect()
}

/// The trie [`covering_set`] builds: node 0 is the root, `child` leads from a
/// node by a level to the next, `filter` is the index of the filter that ends
/// at a node. Flat, so that neither building nor dropping it recurses: a
/// filter may have 65,535 levels.
struct Levels<'a> {
    child: HashMap<(usize, &'a str), usize>,
    filter: Vec<Option<usize>>,
}

impl Default for Levels<'_> {
    fn default() -> Self {
        Levels {
            child: HashMap::new(),
            filter: vec![None],
        }
    }
}

impl<'a> Levels<'a> {
    const ROOT: usize = 0;

    fn child_or_new(&mut self, node: usize, level: &'a str) -> usize {
        let filter = &mut self.filter;
        *self.child.entry((node, level)).or_insert_with(|| {
            filter.push(None);
            filter.len() - 1
        })
    }

    /// The filter that ends below `node` by `level`, if any.
    fn filter_at(&self, node: usize, level: &str) -> Option<usize> {
        self.child
            .get(&(node, level))
            .and_then(|&child| self.filter[child])
    }

    /// Whether `found` holds for a filter in the trie that covers `levels`, a
    /// filter split at its `/`, under the rules of [`covers`]. `dollar`: the
    /// covered filter starts with `$`, so no wildcard covers its first level.
    fn any_cover(
        &self,
        levels: &[&str],
        dollar: bool,
        mut found: impl FnMut(usize) -> bool,
    ) -> bool {
        let mut stack = vec![(Self::ROOT, 0)];
        while let Some((node, depth)) = stack.pop() {
            let wildcards = !(dollar && depth == 0);
            // A `#` covers every rest, the empty one too (`a/#` covers `a`);
            // a `#` in the covered filter is covered by nothing else.
            if wildcards && self.filter_at(node, "#").is_some_and(&mut found) {
                return true;
            }
            match levels.get(depth) {
                None if self.filter[node].is_some_and(&mut found) => return true,
                None | Some(&"#") => {}
                Some(&level) => {
                    let next = |level| self.child.get(&(node, level)).map(|&c| (c, depth + 1));
                    stack.extend(next(level));
                    if wildcards && level != "+" {
                        stack.extend(next("+"));
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topics_pass() {
        for topic in ["a", "/", "a/b", "$SYS/x", "sport/tennis/player1", "é/ü"] {
            assert_eq!(validate_topic(topic), Ok(()), "{topic}");
        }
        assert_eq!(validate_topic(&"a".repeat(MAX_LEN)), Ok(()));
    }

    #[test]
    fn invalid_topics_fail_at_the_right_byte() {
        let cases = [
            ("", TopicError::Empty),
            ("a/+", TopicError::WildcardInTopic { at: 2, ch: '+' }),
            ("é/#", TopicError::WildcardInTopic { at: 3, ch: '#' }),
            ("a\0b", TopicError::Nul { at: 1 }),
        ];
        for (topic, want) in cases {
            assert_eq!(validate_topic(topic), Err(want.clone()), "{topic:?}");
            assert_eq!(validate_topic(topic).unwrap_err().at(), want.at());
        }
        let long = "a".repeat(MAX_LEN + 1);
        let want = TopicError::TooLong { len: MAX_LEN + 1 };
        assert_eq!(validate_topic(&long), Err(want));
    }

    #[test]
    fn valid_filters_pass() {
        let filters = [
            "#",
            "+",
            "/",
            "a/#",
            "+/+",
            "/+",
            "+/#",
            "a/+/c",
            "$aws/things/+/shadow/#",
            "sport/tennis/player1/#",
            "a//b",
            "a/+/",
        ];
        for filter in filters {
            assert_eq!(validate_filter(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn invalid_filters_fail_at_the_right_byte() {
        let cases = [
            ("", TopicError::Empty),
            ("a/#/b", TopicError::HashNotLast { at: 2 }),
            ("#/", TopicError::HashNotLast { at: 0 }),
            ("sport/tennis#", TopicError::HashNotWholeLevel { at: 12 }),
            ("a/#b", TopicError::HashNotWholeLevel { at: 2 }),
            ("sport+", TopicError::PlusNotWholeLevel { at: 5 }),
            ("a/+b/c", TopicError::PlusNotWholeLevel { at: 2 }),
            ("a/b/++", TopicError::PlusNotWholeLevel { at: 4 }),
            ("a/\0/#", TopicError::Nul { at: 2 }),
        ];
        for (filter, want) in cases {
            assert_eq!(validate_filter(filter), Err(want), "{filter:?}");
        }
        let msg = validate_filter("a/#/b").unwrap_err().to_string();
        assert_eq!(msg, "`#` must be the last level of a filter");
        let msg = validate_filter("a+").unwrap_err().to_string();
        assert_eq!(msg, "`+` must occupy a whole level");
    }

    /// Examples from MQTT 3.1.1 section 4.7 plus the `$` rule of 4.7.2.
    const MATCH_TABLE: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/tennis/player1/#", "sport/tennis/player2", false),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport/tennis/player1", false),
        ("sport/+", "sport/", true),
        ("sport/+", "sport", false),
        ("+/tennis/#", "sport/tennis", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
        ("#", "$SYS/x", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$aws/#", "$aws/things/x", true),
        ("a/$x", "a/$x", true),
        ("+/$x", "a/$x", true),
    ];

    #[test]
    fn matches_follows_the_spec_table() {
        for &(filter, topic, want) in MATCH_TABLE {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    const COVERS_TABLE: &[(&str, &str, bool)] = &[
        ("a/#", "a/b", true),
        ("a/#", "a/+/c", true),
        ("a/#", "a/#", true),
        ("a/#", "a", true),
        ("+/b", "x/b", true),
        ("+/b", "+/b", true),
        ("x/b", "+/b", false),
        ("#", "$aws/x", false),
        ("+/x", "$aws/x", false),
        ("$aws/#", "$aws/x", true),
        ("a/+", "a/#", false),
        ("a/+/#", "a/#", false),
        ("a", "a/#", false),
        ("#", "+/#", true),
        ("+/#", "#", true),
        ("+", "#", false),
        ("#", "+", true),
        ("a/b", "a", false),
        ("a", "a/b", false),
        ("a/+", "a/b/c", false),
    ];

    #[test]
    fn covers_follows_the_table() {
        for &(general, specific, want) in COVERS_TABLE {
            assert_eq!(covers(general, specific), want, "{general} ⊇ {specific}");
        }
    }

    #[test]
    fn covering_set_keeps_only_maximal_filters_in_order() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["a/b", "a/b", "c"], &["a/b", "c"]),
            (&["a/b", "a/#", "a/+/c", "a"], &["a/#"]),
            (&["x/b", "+/b", "y/b", "z"], &["+/b", "z"]),
            (&["$aws/x", "#", "a/b"], &["$aws/x", "#"]),
            (&["+/#", "a", "#"], &["+/#"]),
            (&["#", "+/#"], &["#"]),
            (&["a/+", "a/#", "b/+/c", "b/x/c"], &["a/#", "b/+/c"]),
        ];
        for &(input, want) in cases {
            assert_eq!(covering_set(input.iter().copied()), want, "{input:?}");
        }
    }

    #[test]
    fn covering_set_takes_filters_of_every_depth() {
        // 65536 empty levels: a recursive walk or a nested trie's drop would
        // need tens of megabytes of stack here.
        let deep = "/".repeat(MAX_LEN);
        assert_eq!(covering_set([deep.as_str()]), [deep.as_str()]);
        assert_eq!(covering_set([deep.as_str(), "+/#"]), ["+/#"]);
        assert_eq!(covering_set([deep.as_str(), &deep[1..]]).len(), 2);
    }
}
