//! Topic matching and the subscription trie against a naive oracle.
//!
//! Names and filters are drawn from a small alphabet of levels (the empty
//! level, `a`, `b`, `$SYS`, `$x`) so that collisions, empty levels and the `$`
//! rule [MQTT-4.7.2-1] come up often; filters add `+` at any level and `#` as
//! the last one.

use proptest::prelude::*;
use roost_protocol::topic::{self, matches};
use roost_protocol::trie::SubscriptionTrie;

const LEVELS: [&str; 5] = ["", "a", "b", "$SYS", "$x"];

/// The oracle: the spec's rules written over level vectors, one case each.
fn oracle(filter: &[&str], name: &[&str]) -> bool {
    let name_is_dollar = name.first().is_some_and(|level| level.starts_with('$'));
    let filter_is_wild = matches!(filter.first(), Some(&"+") | Some(&"#"));
    if name_is_dollar && filter_is_wild {
        return false; // [MQTT-4.7.2-1]
    }
    levels_match(filter, name)
}

fn levels_match(filter: &[&str], name: &[&str]) -> bool {
    match (filter, name) {
        ([], []) => true,
        // [MQTT-4.7.1-2] '#' (always last) matches zero or more levels.
        (["#"], _) => true,
        // [MQTT-4.7.1-3] '+' matches exactly one level, whatever it holds.
        (["+", filter_rest @ ..], [_, name_rest @ ..]) => levels_match(filter_rest, name_rest),
        ([f, filter_rest @ ..], [n, name_rest @ ..]) => {
            f == n && levels_match(filter_rest, name_rest)
        }
        _ => false,
    }
}

fn level() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&LEVELS[..])
}

fn name() -> impl Strategy<Value = Vec<&'static str>> {
    // A single empty level would be the empty (invalid) topic [MQTT-4.7.3-1].
    proptest::collection::vec(level(), 1..=5).prop_filter("empty topic", |levels| levels != &[""])
}

fn filter() -> impl Strategy<Value = Vec<&'static str>> {
    let level_or_plus = prop_oneof![3 => level(), 1 => Just("+")];
    (
        proptest::collection::vec(level_or_plus, 0..=4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels
        })
        .prop_filter("empty topic", |levels| levels != &[""])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn topic_matches_agrees_with_the_oracle(filter in filter(), name in name()) {
        let (filter_str, name_str) = (filter.join("/"), name.join("/"));
        prop_assert_eq!(topic::validate_topic_filter(&filter_str), Ok(()));
        prop_assert_eq!(topic::validate_topic_name(&name_str), Ok(()));
        prop_assert_eq!(matches(&filter_str, &name_str), oracle(&filter, &name));
    }

    #[test]
    fn trie_matches_agree_with_the_oracle(
        filters in proptest::collection::vec(filter(), 0..24),
        names in proptest::collection::vec(name(), 1..8),
    ) {
        let mut trie = SubscriptionTrie::new();
        for (key, filter) in filters.iter().enumerate() {
            trie.insert(&filter.join("/"), key, key);
        }
        for name in &names {
            let mut found = Vec::new();
            trie.for_each_match(&name.join("/"), |filter, key, value| {
                found.push((filter.to_owned(), *key, *value));
            });
            found.sort();
            let mut expected: Vec<_> = filters
                .iter()
                .enumerate()
                .filter(|(_, filter)| oracle(filter, name))
                .map(|(key, filter)| (filter.join("/"), key, key))
                .collect();
            expected.sort();
            prop_assert_eq!(found, expected, "name {:?}", name.join("/"));
        }
    }
}

/// The (filter, key) pairs of `trie` matching `name`, sorted.
fn trie_matching(trie: &SubscriptionTrie<u32, ()>, name: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    trie.for_each_match(name, |filter, key, _| out.push((filter.to_owned(), *key)));
    out.sort();
    out
}

#[test]
fn topic_oracle_agrees_with_the_spec_examples() {
    let split = |s: &'static str| s.split('/').collect::<Vec<_>>();
    assert!(oracle(&split("sport/tennis/#"), &split("sport/tennis")));
    assert!(oracle(&split("+/+"), &split("/finance")));
    assert!(oracle(&split("/+"), &split("/finance")));
    assert!(!oracle(&split("+"), &split("/finance")));
    assert!(oracle(&split("$SYS/#"), &split("$SYS/broker")));
    assert!(!oracle(&split("#"), &split("$SYS/broker")));
    assert!(!oracle(&split("+/broker"), &split("$SYS/broker")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Paths nesting more '+' levels than the trie's recursion limit (64) go
    /// through its spilled worklist and still match like `topic::matches`.
    #[test]
    fn trie_deep_plus_paths_match_like_topic_matches(
        (filters, name) in (80..100usize).prop_flat_map(|depth| {
            let plus_or_a = prop_oneof![4 => Just("+"), 1 => Just("a")];
            let a_or_b = prop_oneof![9 => Just("a"), 1 => Just("b")];
            (
                proptest::collection::vec(proptest::collection::vec(plus_or_a, depth), 1..8),
                proptest::collection::vec(a_or_b, depth),
            )
        }),
    ) {
        let filters: Vec<String> = filters.iter().map(|f| f.join("/")).collect();
        let name = name.join("/");
        let mut trie = SubscriptionTrie::new();
        for (key, filter) in filters.iter().enumerate() {
            trie.insert(filter, key as u32, ());
        }
        let mut expected: Vec<_> = filters
            .iter()
            .enumerate()
            .filter(|(_, filter)| matches(filter, &name))
            .map(|(key, filter)| (filter.clone(), key as u32))
            .collect();
        expected.sort();
        prop_assert_eq!(trie_matching(&trie, &name), expected);
    }
}
