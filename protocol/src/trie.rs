//! The subscription trie: topic filter -> subscribers, matched against a topic
//! name on the publish path of every message.
//!
//! Purpose: answer "which subscriptions match this topic name?" by walking the
//! name's levels once instead of testing every filter. The matching rules are
//! those of [`crate::topic::matches`] (including the `$` rule [MQTT-4.7.2-1]).
//!
//! Must not depend on: any runtime or global; it is a plain data structure the
//! router owns (readers share it behind whatever lock or snapshot scheme the
//! router chooses).
//!
//! Layout: one node per filter prefix. A node's children are split into
//! literal levels (including the empty level), a `+` slot and a `#` slot, so a
//! match never compares a level with a wildcard. Literal children and the
//! subscribers of a filter live in a `SmallMap`: a vector scanned linearly
//! while small (faster than hashing for a few entries), a `HashMap` when large.
//! The full filter string is stored once, in the node where it ends, so a
//! match hands out `&str` without building it.
//!
//! Invariants:
//! - a node exists only while a subscription ends at it or below it: `remove`
//!   prunes empty nodes, so an emptied trie holds no node but the root;
//! - `len` counts (filter, key) pairs and `filter_count` the nodes holding at
//!   least one subscriber; both are maintained in O(1);
//! - no operation recurses in proportion to the filter depth (a filter may
//!   have 32,768 levels): insert, remove and drop walk iteratively, and
//!   matching recurses only at `+` nodes, spilling to a heap worklist beyond
//!   `MAX_RECURSION` (64) nested `+` branches;
//! - [`SubscriptionTrie::for_each_match`] does not allocate unless a matching
//!   path nests more than `MAX_RECURSION` (64) `+` levels.
//!
//! Filters are expected to be valid ([`crate::topic::validate_topic_filter`])
//! and not in the `$share/` form (store the inner filter). Any other string is
//! stored without panicking, but what it matches is unspecified.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::mem;
use std::str::Split;

/// A [`SmallMap`] stays a vector up to this many entries.
const SMALL: usize = 8;
/// A large [`SmallMap`] turns back into a vector at this size (the gap with
/// [`SMALL`] keeps a map that hovers around the threshold from flapping).
const SHRINK_AT: usize = SMALL / 2;
/// Nested `+` branches followed by recursion in a match before the remaining
/// branches go to a heap worklist. Bounds the stack a match uses.
const MAX_RECURSION: usize = 64;

/// A map that is a linearly scanned vector while small and a `HashMap` when
/// large. Iteration order is unspecified.
enum SmallMap<K, V> {
    Small(Vec<(K, V)>),
    Large(HashMap<K, V>),
}

impl<K, V> SmallMap<K, V> {
    fn new() -> Self {
        Self::Small(Vec::new())
    }

    fn len(&self) -> usize {
        match self {
            Self::Small(entries) => entries.len(),
            Self::Large(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (small, large) = match self {
            Self::Small(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            Self::Large(map) => (None, Some(map.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }

    /// Like `iter`, without the iterator adapters: this is the hot loop of a match.
    fn for_each<'a>(&'a self, mut f: impl FnMut(&'a K, &'a V)) {
        match self {
            Self::Small(entries) => entries.iter().for_each(|(k, v)| f(k, v)),
            Self::Large(map) => map.iter().for_each(|(k, v)| f(k, v)),
        }
    }

    fn into_values(self) -> impl Iterator<Item = V> {
        let (small, large) = match self {
            Self::Small(entries) => (Some(entries.into_iter().map(|(_, v)| v)), None),
            Self::Large(map) => (None, Some(map.into_values())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    fn get<Q: ?Sized + Eq + Hash>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Small(entries) => entries
                .iter()
                .find(|(k, _)| Borrow::<Q>::borrow(k) == key)
                .map(|(_, v)| v),
            Self::Large(map) => map.get(key),
        }
    }

    fn get_mut<Q: ?Sized + Eq + Hash>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Small(entries) => entries
                .iter_mut()
                .find(|(k, _)| Borrow::<Q>::borrow(k) == key)
                .map(|(_, v)| v),
            Self::Large(map) => map.get_mut(key),
        }
    }

    /// Inserts or replaces; returns the previous value.
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&key) {
            return Some(mem::replace(slot, value));
        }
        self.grow_if_full();
        match self {
            Self::Small(entries) => entries.push((key, value)),
            Self::Large(map) => {
                map.insert(key, value);
            }
        }
        None
    }

    /// The value for `key`, inserting `(make_key(), make_value())` if absent.
    fn get_or_insert_with<Q: ?Sized + Eq + Hash>(
        &mut self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        make_value: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
    {
        if self.get(key).is_none() {
            self.grow_if_full();
        }
        match self {
            Self::Small(entries) => {
                let found = entries
                    .iter()
                    .position(|(k, _)| Borrow::<Q>::borrow(k) == key);
                let index = found.unwrap_or_else(|| {
                    entries.push((make_key(), make_value()));
                    entries.len() - 1
                });
                &mut entries[index].1
            }
            Self::Large(map) => map.entry(make_key()).or_insert_with(make_value),
        }
    }

    fn remove<Q: ?Sized + Eq + Hash>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let removed = match self {
            Self::Small(entries) => {
                let index = entries
                    .iter()
                    .position(|(k, _)| Borrow::<Q>::borrow(k) == key)?;
                Some(entries.swap_remove(index).1)
            }
            Self::Large(map) => map.remove(key),
        };
        if let Self::Large(map) = self {
            if map.len() <= SHRINK_AT {
                *self = Self::Small(map.drain().collect());
            }
        }
        removed
    }

    /// Turns a full vector into a map, before an insertion.
    fn grow_if_full(&mut self) {
        if let Self::Small(entries) = self {
            if entries.len() >= SMALL {
                *self = Self::Large(entries.drain(..).collect());
            }
        }
    }
}

/// The subscribers of one filter.
struct Subscribers<K, V> {
    /// The full filter, handed to the match visitor.
    filter: Box<str>,
    entries: SmallMap<K, V>,
}

/// One filter prefix. The root stands for the empty prefix (zero levels).
struct Node<K, V> {
    /// Subscriptions whose filter ends here; `None` when there are none.
    subs: Option<Subscribers<K, V>>,
    /// Children by literal level, including the empty level.
    children: SmallMap<Box<str>, Node<K, V>>,
    /// The `+` child.
    plus: Option<Box<Node<K, V>>>,
    /// The `#` child (always a leaf for valid filters).
    hash: Option<Box<Node<K, V>>>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Self {
            subs: None,
            children: SmallMap::new(),
            plus: None,
            hash: None,
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    fn is_empty(&self) -> bool {
        self.subs.is_none() && self.child_count() == 0
    }

    fn children(&self) -> impl Iterator<Item = &Self> {
        let literal = self.children.iter().map(|(_, node)| node);
        literal
            .chain(self.plus.as_deref())
            .chain(self.hash.as_deref())
    }

    /// Calls `visit` for every subscriber of this node.
    fn emit<'a>(&'a self, visit: &mut impl FnMut(&'a str, &'a K, &'a V)) {
        if let Some(subs) = &self.subs {
            subs.entries
                .for_each(|key, value| visit(&subs.filter, key, value));
        }
    }

    /// Moves the children that have children of their own to `out`; leaves
    /// are dropped here (a shallow drop).
    fn drain_children_into(&mut self, out: &mut Vec<Self>) {
        let literal = mem::replace(&mut self.children, SmallMap::new()).into_values();
        let plus = self.plus.take().map(|node| *node);
        let hash = self.hash.take().map(|node| *node);
        out.extend(
            literal
                .chain(plus)
                .chain(hash)
                .filter(|node| node.child_count() > 0),
        );
    }
}

impl<K: Eq + Hash, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            "+" => self.plus.get_or_insert_with(|| Box::new(Node::new())),
            "#" => self.hash.get_or_insert_with(|| Box::new(Node::new())),
            _ => self
                .children
                .get_or_insert_with(level, || level.into(), Node::new),
        }
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        match level {
            "+" => self.plus.take().map(|node| *node),
            "#" => self.hash.take().map(|node| *node),
            _ => self.children.remove(level),
        }
    }
}

/// Drops a subtree without recursing in proportion to its depth.
fn dismantle<K, V>(node: Node<K, V>) {
    let mut pending = vec![node];
    while let Some(mut node) = pending.pop() {
        node.drain_children_into(&mut pending);
    }
}

/// The state of one [`SubscriptionTrie::for_each_match`] call.
struct Matcher<'a, 'n, K, V, F> {
    visit: F,
    /// `+` branches nested deeper than `MAX_RECURSION` (64), walked after the
    /// recursion unwinds. Empty (not allocated) in all but pathological cases.
    spilled: Vec<(&'a Node<K, V>, Split<'n, char>)>,
}

impl<'a, 'n, K: Eq + Hash, V, F: FnMut(&'a str, &'a K, &'a V)> Matcher<'a, 'n, K, V, F> {
    /// Emits the subscriptions at or below `node` that match the remaining
    /// name `levels`. Descends literal children in a loop and recurses only
    /// into `+` children.
    fn walk(&mut self, mut node: &'a Node<K, V>, mut levels: Split<'n, char>, depth: usize) {
        loop {
            if let Some(hash) = &node.hash {
                hash.emit(&mut self.visit); // [MQTT-4.7.1-2] '#' includes the parent level
            }
            let Some(level) = levels.next() else {
                node.emit(&mut self.visit);
                return;
            };
            if let Some(plus) = node.plus.as_deref() {
                // [MQTT-4.7.1-3] '+' matches any one level, the empty one included.
                if depth < MAX_RECURSION {
                    self.walk(plus, levels.clone(), depth + 1);
                } else {
                    self.spilled.push((plus, levels.clone()));
                }
            }
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
        }
    }
}

/// Subscription trie: topic filter -> set of (key -> value) subscriptions.
/// `K` identifies a subscriber (e.g. a client id), `V` is its per-subscription
/// data (options). See the module documentation for the layout and costs.
pub struct SubscriptionTrie<K, V> {
    /// Never holds subscribers itself: every filter has at least one level.
    root: Node<K, V>,
    /// Number of (filter, key) subscriptions.
    len: usize,
    /// Number of nodes holding at least one subscriber.
    filters: usize,
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self {
            root: Node::new(),
            len: 0,
            filters: 0,
        }
    }
}

impl<K, V> Drop for SubscriptionTrie<K, V> {
    fn drop(&mut self) {
        dismantle(mem::replace(&mut self.root, Node::new()));
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filter_count", &self.filters)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `key` to `filter` with `value`; returns the previous value
    /// for (filter, key), which is replaced.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let subs = node.subs.get_or_insert_with(|| {
            self.filters += 1;
            Subscribers {
                filter: filter.into(),
                entries: SmallMap::new(),
            }
        });
        let previous = subs.entries.insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Unsubscribes `key` from `filter`; returns its value if it was
    /// subscribed. Nodes left without subscribers and children are removed.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let node = self.find_mut(filter)?;
        let subs = node.subs.as_mut()?;
        let value = subs.entries.remove(key)?;
        let filter_emptied = subs.entries.is_empty();
        if filter_emptied {
            node.subs = None;
        }
        let prune = node.is_empty();
        self.len -= 1;
        if filter_emptied {
            self.filters -= 1;
        }
        if prune {
            self.prune(filter);
        }
        Some(value)
    }

    /// The value of `key`'s subscription to `filter`.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        self.find(filter)?.subs.as_ref()?.entries.get(key)
    }

    /// The value of `key`'s subscription to `filter`, mutably.
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        self.find_mut(filter)?.subs.as_mut()?.entries.get_mut(key)
    }

    /// Calls `f(filter_of_the_subscription, key, value)` once per subscription
    /// whose filter matches the topic name `name`, with the rules of
    /// [`crate::topic::matches`]: a name starting with `$` is not matched by a
    /// filter starting with `+` or `#` [MQTT-4.7.2-1]. The order is
    /// unspecified. Allocates nothing unless a matching path nests more than
    /// 64 `+` levels.
    pub fn for_each_match<'a>(&'a self, name: &str, f: impl FnMut(&'a str, &'a K, &'a V)) {
        let mut matcher = Matcher {
            visit: f,
            spilled: Vec::new(),
        };
        let mut levels = name.split('/');
        if name.starts_with('$') {
            // [MQTT-4.7.2-1] skip the root's '+' and '#' children.
            let first = levels.next().unwrap_or_default();
            if let Some(child) = self.root.children.get(first) {
                matcher.walk(child, levels, 0);
            }
        } else {
            matcher.walk(&self.root, levels, 0);
        }
        while let Some((node, levels)) = matcher.spilled.pop() {
            matcher.walk(node, levels, 0);
        }
    }

    /// Number of (filter, key) subscriptions. O(1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct filters with at least one subscriber. O(1).
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Every (filter, key, value), in unspecified order, for listing.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &K, &V)> {
        self.nodes()
            .filter_map(|node| node.subs.as_ref())
            .flat_map(|subs| subs.entries.iter().map(|(k, v)| (&*subs.filter, k, v)))
    }

    /// Every node but the root, depth first.
    fn nodes(&self) -> Nodes<'_, K, V> {
        Nodes {
            pending: self.root.children().collect(),
        }
    }

    /// Number of nodes but the root; 0 for an emptied trie.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes().count()
    }

    fn find(&self, filter: &str) -> Option<&Node<K, V>> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        Some(node)
    }

    fn find_mut(&mut self, filter: &str) -> Option<&mut Node<K, V>> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    /// Removes the chain of nodes ending at `filter`'s node, now empty, up to
    /// (not including) the nearest ancestor that is still needed.
    fn prune(&mut self, filter: &str) {
        let Some(cut) = self.prune_depth(filter) else {
            return;
        };
        let mut levels = filter.split('/');
        let mut parent = &mut self.root;
        for level in levels.by_ref().take(cut) {
            match parent.child_mut(level) {
                Some(child) => parent = child,
                None => return,
            }
        }
        if let Some(removed) = levels.next().and_then(|level| parent.take_child(level)) {
            dismantle(removed);
        }
    }

    /// The depth (0 = first level) of the shallowest node of the removable
    /// chain ending at `filter`'s node: nodes without subscribers whose only
    /// child is the next node of the chain. `None` if that node is not empty.
    fn prune_depth(&self, filter: &str) -> Option<usize> {
        let mut node = &self.root;
        let mut cut = None;
        for (depth, level) in filter.split('/').enumerate() {
            node = node.child(level)?;
            if node.subs.is_none() && node.child_count() <= 1 {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
        }
        cut.filter(|_| node.is_empty())
    }
}

/// Depth-first iterator over nodes, with an explicit stack.
struct Nodes<'a, K, V> {
    pending: Vec<&'a Node<K, V>>,
}

impl<'a, K, V> Iterator for Nodes<'a, K, V> {
    type Item = &'a Node<K, V>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.pending.pop()?;
        self.pending.extend(node.children());
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    /// The (filter, key) pairs matching `name`, sorted.
    fn matching<V>(trie: &SubscriptionTrie<u32, V>, name: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        trie.for_each_match(name, |filter, key, _| out.push((filter.to_owned(), *key)));
        out.sort();
        out
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        let mut out: Vec<_> = list.iter().map(|(f, k)| ((*f).to_owned(), *k)).collect();
        out.sort();
        out
    }

    #[test]
    fn insert_replaces_and_counts() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.insert("a/b", 1, 10), None);
        assert_eq!(trie.insert("a/b", 1, 11), Some(10));
        assert_eq!(trie.insert("a/b", 2, 20), None);
        assert_eq!(trie.insert("a/+", 1, 30), None);
        assert_eq!((trie.len(), trie.filter_count()), (3, 2));
        assert_eq!(trie.get("a/b", &1), Some(&11));
        assert_eq!(trie.get("a/+", &2), None);
        assert_eq!(trie.get("a", &1), None);
        if let Some(value) = trie.get_mut("a/+", &1) {
            *value = 31;
        }
        assert_eq!(trie.get("a/+", &1), Some(&31));
    }

    #[test]
    fn remove_prunes_only_unused_nodes() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c", 1, ());
        trie.insert("a", 1, ());
        trie.insert("a/b/d/#", 2, ());
        assert_eq!(trie.node_count(), 5); // a, b, c, d, #
        assert_eq!(trie.remove("a/b/c", &2), None);
        assert_eq!(trie.remove("a/x", &1), None);
        assert_eq!(trie.remove("a/b/c", &1), Some(()));
        assert_eq!(trie.node_count(), 4);
        assert_eq!(trie.remove("a/b/d/#", &2), Some(()));
        assert_eq!(trie.node_count(), 1); // "a" still has a subscriber
        assert_eq!(trie.remove("a", &1), Some(()));
        assert_eq!(
            (trie.len(), trie.filter_count(), trie.node_count()),
            (0, 0, 0)
        );
        assert!(trie.is_empty());
    }

    #[test]
    fn trie_matching_follows_the_topic_rules() {
        let mut trie = SubscriptionTrie::new();
        for (key, filter) in [
            "#",
            "+",
            "+/+",
            "/+",
            "$SYS/#",
            "+/broker",
            "sport/tennis/#",
            "a/+/b",
            "a/#",
            "a",
        ]
        .into_iter()
        .enumerate()
        {
            trie.insert(filter, key as u32, 0);
        }
        // [MQTT-4.7.2-1]
        assert_eq!(matching(&trie, "$SYS/broker"), pairs(&[("$SYS/#", 4)]));
        // [MQTT-4.7.1-2] '#' matches the parent level.
        assert_eq!(
            matching(&trie, "sport/tennis"),
            pairs(&[("#", 0), ("+/+", 2), ("sport/tennis/#", 6)])
        );
        // [MQTT-4.7.1-3] '+' matches an empty level; "/" is two empty levels.
        assert_eq!(
            matching(&trie, "/finance"),
            pairs(&[("#", 0), ("+/+", 2), ("/+", 3)])
        );
        assert_eq!(
            matching(&trie, "a//b"),
            pairs(&[("#", 0), ("a/+/b", 7), ("a/#", 8)])
        );
        assert_eq!(
            matching(&trie, "a"),
            pairs(&[("#", 0), ("+", 1), ("a/#", 8), ("a", 9)])
        );
        assert_eq!(
            matching(&trie, "x/broker"),
            pairs(&[("#", 0), ("+/+", 2), ("+/broker", 5)])
        );
    }

    #[test]
    fn small_maps_grow_and_shrink_across_the_threshold() {
        let mut trie = SubscriptionTrie::new();
        for i in 0..40u32 {
            trie.insert(&format!("t/{i}"), i, i);
            trie.insert("t/+", i, i);
        }
        assert_eq!((trie.len(), trie.filter_count()), (80, 41));
        let mut expected: Vec<_> = (0..40).map(|i| ("t/+".to_owned(), i)).collect();
        expected.push(("t/7".to_owned(), 7));
        expected.sort();
        assert_eq!(matching(&trie, "t/7"), expected);
        for i in 0..40u32 {
            assert_eq!(trie.get(&format!("t/{i}"), &i), Some(&i));
            assert_eq!(trie.remove(&format!("t/{i}"), &i), Some(i));
            assert_eq!(trie.remove("t/+", &i), Some(i));
        }
        assert_eq!((trie.len(), trie.node_count()), (0, 0));
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // 32,767 '+' levels (65,533 bytes) and a name of as many empty levels.
        let plus = vec!["+"; 32_767].join("/");
        let literal = "a/".repeat(32_767);
        let name = "/".repeat(32_766);
        let mut trie = SubscriptionTrie::new();
        trie.insert(&plus, 1, ());
        trie.insert(&format!("{plus}/#"), 2, ());
        trie.insert(&format!("{literal}#"), 3, ());
        assert_eq!(
            matching(&trie, &name),
            pairs(&[(&plus, 1), (&format!("{plus}/#"), 2)])
        );
        assert_eq!(trie.iter().count(), 3);
        assert_eq!(trie.remove(&plus, &1), Some(()));
        assert_eq!(matching(&trie, &name).len(), 1);
        assert_eq!(trie.remove(&format!("{plus}/#"), &2), Some(()));
        // Dropping a deep trie does not recurse either.
        drop(trie);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u8, u32),
        Remove(usize, u8),
    }

    const POOL: [&str; 12] = [
        "a", "a/b", "a/+", "a/#", "#", "+", "+/b", "", "/", "a//b", "$SYS/#", "a/b/c/d",
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..POOL.len(), 0..3u8, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
            (0..POOL.len(), 0..3u8).prop_map(|(f, k)| Op::Remove(f, k)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Insert/remove sequences agree with a HashMap model, and removing
        /// everything leaves no node behind.
        #[test]
        fn trie_insert_remove_agrees_with_a_map_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut trie = SubscriptionTrie::new();
            let mut model: HashMap<(&str, u8), u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(f, k, v) => {
                        prop_assert_eq!(trie.insert(POOL[f], k, v), model.insert((POOL[f], k), v));
                    }
                    Op::Remove(f, k) => {
                        prop_assert_eq!(trie.remove(POOL[f], &k), model.remove(&(POOL[f], k)));
                    }
                }
                let filters: BTreeSet<&str> = model.keys().map(|(f, _)| *f).collect();
                prop_assert_eq!(trie.len(), model.len());
                prop_assert_eq!(trie.filter_count(), filters.len());
            }
            let listed: HashMap<(&str, u8), u32> = trie.iter().map(|(f, k, v)| ((f, *k), *v)).collect();
            let expected: HashMap<(&str, u8), u32> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(listed, expected);
            for ((filter, key), value) in &model {
                prop_assert_eq!(trie.get(filter, key), Some(value));
            }
            for (filter, key) in model.keys() {
                prop_assert!(trie.remove(filter, key).is_some());
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.filter_count(), 0);
            prop_assert_eq!(trie.node_count(), 0);
        }
    }
}
