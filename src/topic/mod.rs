//! MQTT topic names and filters: validation, matching, coverage and a
//! filter trie for dispatching messages to rules.
//!
//! The invariant the rest of topicrule relies on is that a message matches a
//! rule if and only if its topic matches the rule's FROM filter under MQTT
//! 3.1.1 section 4.7 (including the rule that filters starting with a
//! wildcard never match topics starting with `$`), and that
//! [`FilterTrie::matches`] returns each rule once however many of its filters
//! match. [`matches()`] is the single-filter reference for that semantics, the
//! trie answers the same question for many filters at once, and
//! [`covering_set`] uses [`covers`] to pick the fewest filters to subscribe
//! to so that no message any rule needs is lost.

mod filter;
mod trie;

pub use filter::{
    covering_set, covers, matches, validate_filter, validate_topic, TopicError, MAX_LEN,
};
pub use trie::FilterTrie;

/// Property tests that check the trie, [`covers`] and [`covering_set`]
/// against [`matches()`], the reference semantics, on random input.
#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A seeded generator, so that the property tests are reproducible.
    struct Random(StdRng);

    impl Random {
        fn below(&mut self, n: usize) -> usize {
            self.0.gen_range(0..n)
        }

        fn levels(&mut self, alphabet: &[&'static str]) -> Vec<&'static str> {
            (0..1 + self.below(4))
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }

        fn topic(&mut self) -> String {
            let mut levels = self.levels(&["a", "b", ""]);
            if self.below(4) == 0 {
                levels[0] = "$s";
            }
            join_non_empty(&levels)
        }

        fn filter(&mut self) -> String {
            let mut levels = self.levels(&["a", "b", "", "+", "+"]);
            if self.below(5) == 0 {
                levels[0] = "$s";
            }
            if self.below(3) == 0 {
                levels.push("#");
            }
            join_non_empty(&levels)
        }
    }

    /// Joins levels with `/`, turning a lone empty level into two, because
    /// MQTT forbids empty topics and filters.
    fn join_non_empty(levels: &[&str]) -> String {
        match levels {
            [""] => "/".to_owned(),
            _ => levels.join("/"),
        }
    }

    /// Returns 300 random valid filters and 300 random valid topics.
    fn random_cases() -> (Vec<String>, Vec<String>) {
        let mut rng = Random(StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15));
        let filters: Vec<String> = (0..300).map(|_| rng.filter()).collect();
        let topics: Vec<String> = (0..300).map(|_| rng.topic()).collect();
        for filter in &filters {
            crate::topic::validate_filter(filter).unwrap();
        }
        for topic in &topics {
            crate::topic::validate_topic(topic).unwrap();
        }
        (filters, topics)
    }

    #[test]
    fn trie_agrees_with_matches_on_random_input() {
        let (filters, topics) = random_cases();
        let mut trie = FilterTrie::new();
        for (i, filter) in filters.iter().enumerate() {
            trie.insert(filter, i);
        }
        let mut out = Vec::new();
        for topic in &topics {
            trie.matches(topic, &mut out);
            let got: Vec<usize> = out.iter().map(|&&i| i).collect();
            let want: Vec<usize> = (0..filters.len())
                .filter(|&i| matches(&filters[i], topic))
                .collect();
            assert_eq!(got, want, "{topic}");
        }
    }

    /// Topics that `specific` matches, built by replacing each `+` with a
    /// level no random filter uses and `#` with nothing or with that level.
    /// If `general` does not cover `specific`, one of them is a witness.
    fn witnesses(specific: &str) -> [String; 2] {
        let specific = if specific == "#" { "+/#" } else { specific };
        let fresh = specific.replace('+', "zz");
        let parent = fresh.strip_suffix("/#").unwrap_or(&fresh).to_owned();
        [parent, fresh.replace('#', "zz")]
    }

    #[test]
    fn covers_is_exact_on_random_input() {
        let (filters, topics) = random_cases();
        for general in &filters[..120] {
            for specific in &filters[..120] {
                let extra = witnesses(specific);
                let topics = topics.iter().chain(&extra);
                let mut matched = topics.filter(|t| matches(specific, t));
                let counterexample = matched.find(|t| !matches(general, t));
                let covered = covers(general, specific);
                assert_eq!(covered, counterexample.is_none(), "{general} ⊇ {specific}");
            }
        }
    }

    /// [`covering_set`] by its definition: the distinct filters, in order,
    /// less each one another covers (the first of two that cover each other
    /// stays).
    fn every_pair(filters: &[String]) -> Vec<String> {
        let mut distinct: Vec<&String> = Vec::new();
        for filter in filters {
            if !distinct.contains(&filter) {
                distinct.push(filter);
            }
        }
        let redundant = |i: usize, candidate: &str| {
            distinct.iter().enumerate().any(|(j, other)| {
                j != i && covers(other, candidate) && (j < i || !covers(candidate, other))
            })
        };
        let kept = distinct
            .iter()
            .enumerate()
            .filter(|&(i, c)| !redundant(i, c));
        kept.map(|(_, c)| c.to_string()).collect()
    }

    #[test]
    fn covering_set_is_minimal_and_covers_random_groups() {
        let (filters, _) = random_cases();
        // Small groups keep some filters uncovered; all 300 at once reduce to
        // `+/#` and `$s/#`, which would test little.
        for group in filters.chunks(6).chain([&filters[..]]) {
            let kept = covering_set(group.iter().map(String::as_str));
            assert_eq!(kept, every_pair(group), "{group:?}");
            for filter in group {
                assert!(kept.iter().any(|k| covers(k, filter)), "{filter} uncovered");
            }
            for (i, a) in kept.iter().enumerate() {
                assert!(group.contains(a), "{a} not from the input");
                for b in &kept[i + 1..] {
                    assert!(!covers(a, b) && !covers(b, a), "{a} and {b} both kept");
                }
            }
        }
    }
}
