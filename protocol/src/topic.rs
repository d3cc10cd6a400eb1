//! Topic names, topic filters and shared subscriptions (MQTT 3.1.1 section 4.7,
//! MQTT 5.0 sections 4.7 and 4.8.2).
//!
//! Purpose: decide whether a string a client sent is a valid topic name (a
//! PUBLISH target) or topic filter (a SUBSCRIBE target), split the shared
//! subscription form `$share/{group}/{filter}`, and decide whether a filter
//! matches a name. The subscription trie ([`crate::trie`]) implements the same
//! matching rules over many filters at once.
//!
//! Must not depend on: anything but `std` and `thiserror`. mqttbytes' topic
//! helpers are deliberately not used: they accept `a/b+`, empty topics and
//! NUL, reject `$SYS/broker` against `$SYS/#`, and panic on some inputs.
//!
//! Invariants:
//! - no function here panics, whatever the input (valid or not);
//! - levels are what `str::split('/')` yields, so an empty level is a level:
//!   `a//b` has three levels and `/` has two empty ones (3.1.1 section 4.7.1.1);
//! - [`matches()`] never allocates.
//!
//! Citations: `[MQTT-4.7.*]` use the MQTT 3.1.1 numbering (5.0 renumbered
//! section 4.7.1: its 4.7.1-1 is the `#` rule and 4.7.1-2 the `+` rule);
//! `[MQTT-4.8.2-*]` (shared subscriptions) exist in 5.0 only.

/// Maximum length in bytes of a topic name or filter: it is sent as a UTF-8
/// string with a two-byte length prefix [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of a shared subscription filter [MQTT-4.8.2-1] (MQTT 5.0 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Zero-length topic name or filter [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes [MQTT-4.7.3-3].
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000 [MQTT-4.7.3-2].
    #[error("topic contains the NUL character")]
    ContainsNul,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2] [MQTT-4.7.1-1].
    #[error("topic name contains a wildcard character")]
    WildcardInName,
    /// `#` not alone in the last level, or `+` not alone in its level
    /// [MQTT-4.7.1-2] [MQTT-4.7.1-3].
    #[error("topic filter uses a wildcard character outside a whole level")]
    InvalidWildcard,
    /// A `$share/` filter with an empty share name, a share name containing
    /// `+` or `#`, or no `/` and topic filter after the share name
    /// [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    #[error("malformed shared subscription filter")]
    InvalidSharedGroup,
}

/// Checks a topic name (the topic of a PUBLISH, a will or a retained message).
///
/// A valid name is non-empty [MQTT-4.7.3-1], has no wildcard character
/// [MQTT-3.3.2-2] [MQTT-4.7.1-1], no NUL [MQTT-4.7.3-2] and is at most
/// [`MAX_TOPIC_LEN`] bytes [MQTT-4.7.3-3]. Names starting with `$` are valid here; whether a
/// client may publish to them is an authorization decision.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if has_wildcards(name) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (the target of a SUBSCRIBE or UNSUBSCRIBE).
///
/// A filter starting with `$share/` is a shared subscription and is checked as
/// such (see [`parse_shared`]). Otherwise it is valid when non-empty
/// [MQTT-4.7.3-1], at most [`MAX_TOPIC_LEN`] bytes [MQTT-4.7.3-3], free of NUL [MQTT-4.7.3-2],
/// and every wildcard is a whole level: `#` only as the last level
/// [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3].
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    match parse_shared(filter)? {
        Some(_) => Ok(()),
        None => check_wildcards(filter),
    }
}

/// Splits a shared subscription filter `$share/{group}/{filter}` into
/// `(group, filter)`.
///
/// Returns `Ok(None)` when `filter` does not start with `$share/` (a filter
/// such as `$share` or `$shared/a` is an ordinary filter). Returns an error when
/// it does but the share name is empty or contains `+` or `#` [MQTT-4.8.2-1],
/// there is no `/` and non-empty filter after it [MQTT-4.8.2-2], or the inner
/// filter is itself invalid.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidSharedGroup); // [MQTT-4.8.2-2]
    };
    if group.is_empty() || has_wildcards(group) || inner.is_empty() {
        return Err(TopicError::InvalidSharedGroup); // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
    }
    if group.contains('\0') {
        return Err(TopicError::ContainsNul);
    }
    check_common(inner)?;
    check_wildcards(inner)?;
    Ok(Some((group, inner)))
}

/// Does the topic filter `filter` match the topic name `name`?
///
/// `filter` is expected to be valid and not a `$share/` form (pass the inner
/// filter of [`parse_shared`]); for any other input the result is unspecified
/// but the function still returns without panicking. Rules:
/// - a name starting with `$` is not matched by a filter whose first level is
///   `#` or `+` [MQTT-4.7.2-1], so `$SYS/#` matches `$SYS/broker` but `#` and
///   `+/broker` do not;
/// - `+` matches exactly one level, which may be empty [MQTT-4.7.1-3]: `+/+`
///   and `/+` match `/finance`, `+` does not;
/// - `#` matches its parent level and any number of child levels
///   [MQTT-4.7.1-2]: `sport/tennis/#` matches `sport/tennis`.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false; // [MQTT-4.7.2-1]
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            (Some("#"), _) => return true,     // [MQTT-4.7.1-2]
            (Some("+"), Some(_)) => {}         // [MQTT-4.7.1-3]
            (Some(f), Some(n)) if f == n => {} // [MQTT-4.7.3-4]
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `filter` contain a wildcard character (`+` or `#`)?
pub fn has_wildcards(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// The checks shared by names and filters: non-empty, length, NUL.
fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty); // [MQTT-4.7.3-1]
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong); // [MQTT-4.7.3-3]
    }
    if topic.contains('\0') {
        return Err(TopicError::ContainsNul); // [MQTT-4.7.3-2]
    }
    Ok(())
}

/// Wildcards must be whole levels, and `#` must be the last one.
fn check_wildcards(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "+" => {}            // [MQTT-4.7.1-3]
            "#" if is_last => {} // [MQTT-4.7.1-2]
            _ if has_wildcards(level) => return Err(TopicError::InvalidWildcard),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_name_and_filter_are_invalid() {
        // [MQTT-4.7.3-1]
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn nul_is_invalid_in_names_and_filters() {
        // [MQTT-4.7.3-2]
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::ContainsNul));
        assert_eq!(validate_topic_filter("a/\0"), Err(TopicError::ContainsNul));
        assert_eq!(validate_topic_filter("\0"), Err(TopicError::ContainsNul));
    }

    #[test]
    fn length_limit_is_65535_bytes() {
        // [MQTT-4.7.3-3]
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&over), Err(TopicError::TooLong));
        assert_eq!(validate_topic_filter(&over), Err(TopicError::TooLong));
        // Bytes, not characters: 'é' is two bytes.
        let wide = "é".repeat(MAX_TOPIC_LEN / 2 + 1);
        assert_eq!(validate_topic_name(&wide), Err(TopicError::TooLong));
    }

    #[test]
    fn names_reject_wildcards() {
        // [MQTT-3.3.2-2] [MQTT-4.7.1-1]
        for name in ["#", "+", "a/+", "a/#", "a/b+", "a#", "+/a"] {
            assert_eq!(
                validate_topic_name(name),
                Err(TopicError::WildcardInName),
                "{name}"
            );
        }
    }

    #[test]
    fn names_accept_empty_levels_dollar_and_unicode() {
        // Empty levels are levels (3.1.1 4.7.1.1); '$' topics are ordinary names.
        for name in ["a", "/", "//", "a//b", "/a", "a/", "$SYS/broker", "é", " "] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn filters_accept_whole_level_wildcards() {
        // [MQTT-4.7.1-2] [MQTT-4.7.1-3]
        for filter in [
            "#", "+", "a/#", "a/+", "+/+", "/+", "+/#", "a/+/b", "/", "a//b", "$SYS/#", "+/a/#",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn filters_reject_partial_level_wildcards() {
        // [MQTT-4.7.1-2] '#' alone and last; [MQTT-4.7.1-3] '+' alone in its level.
        for filter in [
            "a/b+", "a/+b/c", "a/#/b", "#/a", "a#", "a/b#", "++", "##", "+#", "a/#/", "#/",
        ] {
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidWildcard),
                "{filter}"
            );
        }
    }

    #[test]
    fn shared_filters_parse() {
        // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
        assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse_shared("$share/g/#"), Ok(Some(("g", "#"))));
        assert_eq!(parse_shared("$share/g//"), Ok(Some(("g", "/"))));
        assert_eq!(parse_shared("$share/g/$SYS/#"), Ok(Some(("g", "$SYS/#"))));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(parse_shared("$shared/g/a"), Ok(None));
        assert_eq!(validate_topic_filter("$share/g/+/x"), Ok(()));
    }

    #[test]
    fn malformed_shared_filters_are_rejected() {
        // [MQTT-4.8.2-1] share name non-empty, no '+' or '#'.
        // [MQTT-4.8.2-2] '/' and a topic filter follow the share name.
        for filter in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
            "$share/+/a",
            "$share/a#b/c",
        ] {
            assert_eq!(
                parse_shared(filter),
                Err(TopicError::InvalidSharedGroup),
                "{filter}"
            );
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidSharedGroup),
                "{filter}"
            );
        }
        assert_eq!(
            parse_shared("$share/g/a/b+"),
            Err(TopicError::InvalidWildcard)
        );
        assert_eq!(parse_shared("$share/g\0/a"), Err(TopicError::ContainsNul));
        assert_eq!(parse_shared("$share/g/a\0"), Err(TopicError::ContainsNul));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(matches("$SYS/+", "$SYS/broker"));
        assert!(matches("$SYS/broker", "$SYS/broker"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(!matches("+", "$x"));
        assert!(!matches("+/#", "$SYS"));
        // Only the first level counts.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x/y"));
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        // [MQTT-4.7.1-2]
        assert!(matches("sport/tennis/#", "sport/tennis"));
        assert!(matches("sport/tennis/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/#", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/tennis/#", "sport/tennisplayer1"));
        assert!(!matches("sport/tennis/#", "sport"));
        assert!(matches("#", "sport"));
        assert!(matches("#", "/"));
        assert!(matches("a/#", "a/"));
    }

    #[test]
    fn single_level_wildcard_matches_one_possibly_empty_level() {
        // [MQTT-4.7.1-3]
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", ""));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
        assert!(matches("a/+/b", "a//b"));
    }

    #[test]
    fn literal_levels_match_exactly() {
        // [MQTT-4.7.3-4] no normalization, case-sensitive.
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "A/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b/", "a/b"));
        assert!(!matches("a//b", "a/b"));
        assert!(matches("/", "/"));
        assert!(matches("é/ü", "é/ü"));
    }

    #[test]
    fn matching_never_panics_on_odd_input() {
        // mqttbytes panics on topic "é" against filter "".
        for (filter, name) in [
            ("", "é"),
            ("é", ""),
            ("", ""),
            ("#", ""),
            ("+", "é"),
            ("a/b+", "a/bé"),
            ("é/#", "é"),
            ("$share/g/#", "$share/g/x"),
        ] {
            let _ = matches(filter, name);
        }
        assert!(!matches("", "é"));
    }

    #[test]
    fn has_wildcards_detects_plus_and_hash() {
        assert!(has_wildcards("a/+"));
        assert!(has_wildcards("#"));
        assert!(!has_wildcards("a/b"));
        assert!(!has_wildcards(""));
    }
}
