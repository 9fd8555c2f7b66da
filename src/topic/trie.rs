//! A trie of topic filters that finds every filter matching a topic.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::ptr;

use smallvec::SmallVec;

/// Index of the root node in [`FilterTrie::nodes`].
const ROOT: usize = 0;

/// One trie node, standing for the filter prefix spelled by its path.
///
/// Children are indices into the trie's node arena rather than boxes, so a
/// pathological 65535-level filter neither overflows the stack when the trie
/// is dropped nor makes traversal recursive.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Children reached by a literal level; None while there are none (the leaves, most
    /// nodes of a large rule set: a map would cost a leaf more than the rest of it).
    #[expect(
        clippy::box_collection,
        reason = "a pointer in every node, not a map's 48 bytes"
    )]
    literal: Option<Box<HashMap<Box<str>, usize>>>,
    /// Child reached by a `+` level.
    plus: Option<usize>,
    /// Values whose filter is exactly this node's prefix (most often one: kept inline).
    exact: SmallVec<[usize; 1]>,
    /// Values whose filter is this node's prefix followed by `/#` (or `#` at
    /// the root).
    hash: SmallVec<[usize; 1]>,
}

/// A set of topic filters, each with a value, answering which values have a
/// filter matching a given topic.
///
/// Matching visits only nodes whose prefix matches the topic so far, so its
/// cost grows with topic depth times the wildcard branching at each level
/// (at most two children per level: the literal one and `+`), plus the
/// number of values returned, and not with the number of filters stored.
///
/// Values are identified by equality: inserting an equal value under several
/// filters stores it once, and [`FilterTrie::matches`] reports it once even
/// when several of its filters match.
#[derive(Debug, Clone)]
pub struct FilterTrie<T> {
    nodes: Vec<Node>,
    values: Vec<T>,
    /// Value ids grouped by the hash of the value, to find equal values on
    /// insert without requiring `T: Clone` for a `HashMap<T, usize>`. Only inserts
    /// read it: [`FilterTrie::shrink_to_fit`] drops it, the next insert builds it again.
    ids_by_hash: HashMap<u64, Vec<usize>>,
    hasher: RandomState,
}

impl<T> Default for FilterTrie<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> FilterTrie<T> {
    /// Creates an empty trie, which matches nothing.
    pub fn new() -> Self {
        FilterTrie {
            nodes: vec![Node::default()],
            values: Vec::new(),
            ids_by_hash: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Returns the number of distinct values stored.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Returns true when no value is stored, so every topic matches nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Replaces the contents of `out` with every value that has a filter
    /// matching `topic`, each value once, in the order values were first
    /// inserted.
    ///
    /// This takes an output vector instead of returning an iterator because
    /// it is the faster shape on the per-message hot path: the caller reuses
    /// one allocation for every message, and a lazy iterator would have to
    /// own its traversal stack and a set of values already yielded, both
    /// allocated per call. The traversal stack here only allocates when a
    /// level has both a literal and a `+` child to explore.
    ///
    /// `topic` is assumed valid (see [`super::validate_topic`]). A topic
    /// starting with `$` is not matched by filters whose first level is a
    /// wildcard, as MQTT 3.1.1 section 4.7.2 requires.
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Vec<&'a T>) {
        out.clear();
        let mut pending = Vec::new();
        let mut next = Some((ROOT, Some(0)));
        while let Some((node, pos)) = next.take().or_else(|| pending.pop()) {
            next = self.visit(node, pos, topic, out, &mut pending);
        }
        // Values live in one vector, so address order is insertion order and
        // equal addresses are the same value. Zero-sized values all share an
        // address, but interning by equality already made them one value
        // unless their `Eq` says otherwise.
        out.sort_unstable_by_key(|value| ptr::from_ref::<T>(*value).addr());
        out.dedup_by(|a, b| ptr::eq(*a, *b));
    }

    /// Collects the values stored at `node` for a topic whose next level
    /// starts at byte `pos` (`None` once every level is consumed).
    ///
    /// Returns the child to visit next and pushes a second one, if any, onto
    /// `pending`; this keeps the walk iterative however deep the topic is.
    fn visit<'a>(
        &'a self,
        node: usize,
        pos: Option<usize>,
        topic: &str,
        out: &mut Vec<&'a T>,
        pending: &mut Vec<(usize, Option<usize>)>,
    ) -> Option<(usize, Option<usize>)> {
        let n = &self.nodes[node];
        let wildcards_allowed = node != ROOT || !topic.starts_with('$');
        if wildcards_allowed {
            out.extend(n.hash.iter().map(|&id| &self.values[id]));
        }
        let Some(start) = pos else {
            out.extend(n.exact.iter().map(|&id| &self.values[id]));
            return None;
        };
        let (level, rest) = match topic[start..].find('/') {
            Some(len) => (&topic[start..start + len], Some(start + len + 1)),
            None => (&topic[start..], None),
        };
        let literal = n
            .literal
            .as_ref()
            .and_then(|map| map.get(level))
            .map(|&child| (child, rest));
        let plus = n
            .plus
            .filter(|_| wildcards_allowed)
            .map(|child| (child, rest));
        match (literal, plus) {
            (Some(literal), Some(plus)) => {
                pending.push(plus);
                Some(literal)
            }
            (literal, plus) => literal.or(plus),
        }
    }
}

impl<T: Eq + Hash> FilterTrie<T> {
    /// Adds `filter` with `value`, so topics matching `filter` report it.
    ///
    /// `filter` is assumed valid (see [`super::validate_filter`]); debug
    /// builds assert it. Inserting the same filter and value twice is a
    /// no-op, and a value equal to one already stored is merged with it.
    pub fn insert(&mut self, filter: &str, value: T) {
        debug_assert!(
            super::validate_filter(filter).is_ok(),
            "invalid filter {filter:?}"
        );
        let id = self.intern(value);
        let mut node = ROOT;
        for level in filter.split('/') {
            match level {
                "#" => {
                    push_unique(&mut self.nodes[node].hash, id);
                    return;
                }
                "+" => node = self.plus_child(node),
                literal => node = self.literal_child(node, literal),
            }
        }
        push_unique(&mut self.nodes[node].exact, id);
    }

    /// Gives back what the inserts reserved ahead (vectors and maps grow by doubling) and
    /// the index only inserts use, for a trie built once and then only matched: with many
    /// rules, it is a good part of the trie's memory.
    pub fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        for node in &mut self.nodes {
            if let Some(literal) = &mut node.literal {
                literal.shrink_to_fit();
            }
            node.exact.shrink_to_fit();
            node.hash.shrink_to_fit();
        }
        self.values.shrink_to_fit();
        self.ids_by_hash = HashMap::new();
    }

    /// Returns the id of the stored value equal to `value`, storing it first
    /// if there is none.
    fn intern(&mut self, value: T) -> usize {
        if self.ids_by_hash.is_empty() {
            // Dropped by `shrink_to_fit` (or none stored yet).
            for (id, stored) in self.values.iter().enumerate() {
                let hash = self.hasher.hash_one(stored);
                self.ids_by_hash.entry(hash).or_default().push(id);
            }
        }
        let hash = self.hasher.hash_one(&value);
        let bucket = self.ids_by_hash.entry(hash).or_default();
        if let Some(&id) = bucket.iter().find(|&&id| self.values[id] == value) {
            return id;
        }
        let id = self.values.len();
        self.values.push(value);
        bucket.push(id);
        id
    }

    /// Returns the `+` child of `node`, creating it if needed.
    fn plus_child(&mut self, node: usize) -> usize {
        if let Some(child) = self.nodes[node].plus {
            return child;
        }
        let child = self.new_node();
        self.nodes[node].plus = Some(child);
        child
    }

    /// Returns the child of `node` for the literal `level`, creating it if
    /// needed.
    fn literal_child(&mut self, node: usize, level: &str) -> usize {
        let literal = &self.nodes[node].literal;
        if let Some(&child) = literal.as_ref().and_then(|map| map.get(level)) {
            return child;
        }
        let child = self.new_node();
        let literal = self.nodes[node].literal.get_or_insert_default();
        literal.insert(level.into(), child);
        child
    }

    /// Appends an empty node to the arena and returns its index.
    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }
}

/// Pushes `id` unless present, so re-inserting a filter does not duplicate
/// its value within a node.
fn push_unique(ids: &mut SmallVec<[usize; 1]>, id: usize) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a trie mapping each filter to its index and returns the indices
    /// matched by `topic`.
    fn matched(filters: &[&str], topic: &str) -> Vec<usize> {
        let mut trie = FilterTrie::new();
        for (i, filter) in filters.iter().enumerate() {
            trie.insert(filter, i);
        }
        let mut out = Vec::new();
        trie.matches(topic, &mut out);
        out.into_iter().copied().collect()
    }

    #[test]
    fn a_value_inserted_again_after_shrinking_is_still_one_value() {
        let mut trie = FilterTrie::new();
        trie.insert("a/b", 1);
        trie.insert("c", 2);
        trie.shrink_to_fit();
        trie.insert("a/+", 1);
        trie.insert("d/#", 3);
        assert_eq!(trie.len(), 3);
        let mut out = Vec::new();
        trie.matches("a/b", &mut out);
        assert_eq!(out, [&1]);
        trie.matches("d/e", &mut out);
        assert_eq!(out, [&3]);
        trie.matches("c", &mut out);
        assert_eq!(out, [&2]);
    }

    #[test]
    fn empty_trie_matches_nothing() {
        let trie: FilterTrie<u8> = FilterTrie::default();
        let mut out = vec![];
        trie.matches("a/b", &mut out);
        assert!(out.is_empty() && trie.is_empty());
        assert_eq!(trie.len(), 0);
    }

    #[test]
    fn spec_examples_through_the_trie() {
        let filters = [
            "sport/tennis/player1/#",
            "sport/+",
            "+/+",
            "/+",
            "+",
            "#",
            "sport/#",
            "$SYS/#",
            "+/monitor/Clients",
            "$aws/things/+",
        ];
        let cases: &[(&str, &[usize])] = &[
            ("sport/tennis/player1", &[0, 5, 6]),
            ("sport/tennis/player1/ranking", &[0, 5, 6]),
            ("sport/tennis/player1/score/wimbledon", &[0, 5, 6]),
            ("sport/", &[1, 2, 5, 6]),
            ("sport", &[4, 5, 6]),
            ("/finance", &[2, 3, 5]),
            ("a/monitor/Clients", &[5, 8]),
            ("$SYS/monitor/Clients", &[7]),
            ("$aws/things/x", &[9]),
            ("$aws", &[]),
        ];
        for &(topic, want) in cases {
            assert_eq!(matched(&filters, topic), want, "{topic}");
        }
    }

    #[test]
    fn each_value_is_reported_once_in_insertion_order() {
        let mut trie = FilterTrie::new();
        trie.insert("a/#", "late");
        trie.insert("a/+", "rule");
        trie.insert("a/b", "rule");
        trie.insert("#", "rule");
        trie.insert("a/b", "rule");
        trie.insert("a/b", "other");
        assert_eq!(trie.len(), 3);
        let mut out = vec![&"stale"];
        trie.matches("a/b", &mut out);
        assert_eq!(out, [&"late", &"rule", &"other"]);
        trie.matches("a/b/c", &mut out);
        assert_eq!(out, [&"late", &"rule"]);
        trie.matches("$a/b", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        // 65536 empty levels: a recursive walk or a boxed trie's drop would
        // need tens of megabytes of stack here.
        let deep = "/".repeat(crate::topic::MAX_LEN);
        assert_eq!(matched(&[&deep, "+/#"], &deep), [0, 1]);
        assert_eq!(matched(&[&deep], &deep[1..]), Vec::<usize>::new());
    }
}
