//! Loading: TOML text + `ROOST_*` environment overrides -> [`Config`], reporting every
//! problem at once.
//!
//! serde stops at the first error, so the document is cut into *leaves* (`section.key`
//! and its value, or a top-level key that is not a table) and each leaf is checked alone
//! against the real `Config` type (a one-key document; every struct has `#[serde(default)]`
//! and `deny_unknown_fields`). A leaf that fails becomes a problem named by its path and is
//! left out; the good leaves are then assembled and deserialized for real, and
//! [`Config::validate`] runs on the result. The schema is thus only written once, in the
//! structs. Leaves stop at depth 2: a table-valued key is checked as a whole.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use super::{Config, ConfigErrors, ConfigProblem, Origin, ProblemKind, DEFAULT_CONFIG};

/// Environment variables with this prefix (case-insensitive) are config overrides:
/// `ROOST_<SECTION>__<KEY>=value`. Every one must name a known key.
pub const ENV_PREFIX: &str = "ROOST_";

/// `ROOST_*` variables that are not config overrides: `ROOST_TOKEN` is the
/// management token of `roost ctl`, often exported in the same shell.
pub const ENV_NOT_CONFIG: &[&str] = &["ROOST_TOKEN"];

/// One configured value and where it came from.
struct Leaf {
    path: Vec<String>,
    value: Value,
    origin: Origin,
    line: Option<usize>,
    /// Line of the leaf's section, for problems about the section itself.
    section_line: Option<usize>,
    /// The raw text of an environment override, kept to retry it as a string when its
    /// TOML reading (`123`, `true`) does not fit the key (a node named `123`).
    raw_env: Option<String>,
}

impl Leaf {
    fn dotted(&self) -> String {
        self.path.join(".")
    }

    fn origin_name(&self) -> String {
        match &self.origin {
            Origin::Env(var) => var.clone(),
            Origin::File(path) => path.display().to_string(),
            Origin::Text => "the config text".to_owned(),
        }
    }
}

/// Loads the file at `path` (or the embedded default config), applies the `ROOST_*`
/// overrides found in `env` (pass `std::env::vars().collect::<Vec<_>>()`) and validates.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let Some(path) = path else {
        return build(DEFAULT_CONFIG, Origin::Text, env);
    };
    let origin = Origin::File(path.to_path_buf());
    match std::fs::read_to_string(path) {
        Ok(text) => build(&text, origin, env),
        Err(e) => Err(ConfigErrors(vec![ConfigProblem::new(
            "",
            ProblemKind::Unreadable,
            format!("cannot read config file: {e}"),
        )
        .at(Some(origin), None)])),
    }
}

/// Parses and validates config text, without environment overrides.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    build(text, Origin::Text, &[])
}

fn build(text: &str, origin: Origin, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let mut leaves = file_leaves(text, &origin, &mut problems);
    env_leaves(env, &mut leaves, &mut problems);
    let mut table = Table::new();
    for leaf in &leaves {
        match check_leaf(leaf) {
            Ok(value) => insert_at(&mut table, &leaf.path, value),
            Err(problem) => push_unique(&mut problems, problem),
        }
    }
    match Config::deserialize(Value::Table(table)) {
        Ok(config) => {
            for problem in config.validate() {
                let (origin, line) = origin_of(&leaves, &problem.path);
                problems.push(problem.at(origin, line));
            }
            if problems.is_empty() {
                return Ok(config);
            }
        }
        // Unreachable when every leaf passed alone; reported rather than trusted.
        Err(e) => problems.push(ConfigProblem::new("", ProblemKind::Type, e.message())),
    }
    // File order first (by line), then overrides; stable, so ties keep discovery order.
    problems.sort_by_key(|p| {
        let rank = match p.origin {
            Some(Origin::File(_) | Origin::Text) => 0,
            Some(Origin::Env(_)) => 1,
            None => 2,
        };
        (rank, p.line.unwrap_or(usize::MAX))
    });
    Err(ConfigErrors(problems))
}

/// Cuts the document into leaves, in file order. A syntax error is one problem and no leaves.
fn file_leaves(text: &str, origin: &Origin, problems: &mut Vec<ConfigProblem>) -> Vec<Leaf> {
    let table: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            problems.push(syntax_problem(text, &e).at(Some(origin.clone()), None));
            return Vec::new();
        }
    };
    let lines = key_lines(text);
    let leaf = |path: Vec<String>, value: Value| {
        let section_line = path.first().and_then(|s| lines.get(s)).copied();
        let line = lines.get(&path.join(".")).copied().or(section_line);
        Leaf {
            path,
            value,
            origin: origin.clone(),
            line,
            section_line,
            raw_env: None,
        }
    };
    let mut leaves = Vec::new();
    for (section, value) in table {
        match value {
            Value::Table(keys) if !keys.is_empty() => {
                for (key, value) in keys {
                    leaves.push(leaf(vec![section.clone(), key], value));
                }
            }
            other => leaves.push(leaf(vec![section], other)),
        }
    }
    leaves.sort_by_key(|l| l.line.unwrap_or(usize::MAX));
    leaves
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> ConfigProblem {
    let at = e.span().map(|span| {
        let (line, column) = line_col(text, span.start);
        format!(" at line {line}, column {column}")
    });
    let message = format!("invalid TOML{}: {}", at.unwrap_or_default(), e.message());
    ConfigProblem::new("", ProblemKind::Syntax, message.trim_end())
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Line of every `section` and `section.key` in the document, for problem locations.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return lines;
    };
    for (section, value) in doc.get_ref().iter() {
        let section_name = section.get_ref().to_string();
        lines.insert(section_name.clone(), line_col(text, section.span().start).0);
        if let toml::de::DeValue::Table(keys) = value.get_ref() {
            for (key, _) in keys.iter() {
                let line = line_col(text, key.span().start).0;
                lines.insert(format!("{section_name}.{}", key.get_ref()), line);
            }
        }
    }
    lines
}

/// Adds a leaf per `ROOST_*` variable, replacing file leaves of the same key (or of a
/// section it replaces, or that it sits in).
fn env_leaves(env: &[(String, String)], leaves: &mut Vec<Leaf>, problems: &mut Vec<ConfigProblem>) {
    for (name, raw) in env {
        let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_CONFIG.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let origin = Origin::Env(name.clone());
        if path.iter().any(String::is_empty) {
            let message = "malformed override name: expected ROOST_<SECTION>__<KEY> (double underscore between parts), e.g. ROOST_MQTT__LISTEN";
            problems.push(
                ConfigProblem::new("", ProblemKind::MalformedOverride, message)
                    .at(Some(origin), None),
            );
            continue;
        }
        if let Some(earlier) = leaves
            .iter()
            .find(|l| l.raw_env.is_some() && l.path == path)
        {
            let message = format!(
                "{} is also set by {}",
                path.join("."),
                earlier.origin_name()
            );
            problems.push(
                ConfigProblem::new("", ProblemKind::MalformedOverride, message)
                    .at(Some(origin), None),
            );
            continue;
        }
        // An override replaces the file's value at its path (and a section it replaces).
        leaves.retain(|l| {
            l.raw_env.is_some() || !(l.path.starts_with(&path) || path.starts_with(&l.path))
        });
        leaves.push(Leaf {
            path,
            value: env_value(raw),
            origin,
            line: None,
            section_line: None,
            raw_env: Some(raw.clone()),
        });
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// An override value is a TOML integer, float or boolean when it reads as one, else a string.
fn env_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        Ok(v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

/// Checks one leaf alone against `Config`; returns the value to keep or the problem.
fn check_leaf(leaf: &Leaf) -> Result<Value, ConfigProblem> {
    let err = match try_leaf(&leaf.path, leaf.value.clone()) {
        Ok(()) => return Ok(leaf.value.clone()),
        Err(e) => e,
    };
    if let (Some(raw), false) = (&leaf.raw_env, leaf.value.is_str()) {
        let as_string = Value::String(raw.clone());
        if try_leaf(&leaf.path, as_string.clone()).is_ok() {
            return Ok(as_string);
        }
    }
    let problem = problem_from_de_error(leaf, err.message());
    let line = if problem.path == leaf.dotted() {
        leaf.line
    } else {
        leaf.section_line
    };
    Err(problem.at(Some(leaf.origin.clone()), line))
}

fn try_leaf(path: &[String], value: Value) -> Result<(), toml::de::Error> {
    let mut doc = Table::new();
    insert_at(&mut doc, path, value);
    Config::deserialize(Value::Table(doc)).map(drop)
}

/// Inserts `value` at `path`, creating (or replacing non-table values with) tables on the way.
fn insert_at(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for key in parents {
        let slot = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !slot.is_table() {
            *slot = Value::Table(Table::new());
        }
        let Value::Table(next) = slot else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// Turns a serde message into a problem: `unknown field` becomes an unknown key named by
/// its full path, with a suggestion; anything else is a type problem.
fn problem_from_de_error(leaf: &Leaf, message: &str) -> ConfigProblem {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let Some(name) = unknown else {
        return ConfigProblem::new(leaf.dotted(), ProblemKind::Type, friendlier(message));
    };
    if leaf.value.is_array() && !leaf.path.iter().any(|k| k == name) {
        // A key inside an array of tables (`[[bridges]]`): serde does not say which one.
        let text = format!("unknown key `{name}` in a [[{}]] table", leaf.dotted());
        return ConfigProblem::new(leaf.dotted(), ProblemKind::UnknownKey, text);
    }
    let depth = leaf
        .path
        .iter()
        .position(|k| k == name)
        .map_or(leaf.path.len(), |i| i + 1);
    let path = &leaf.path[..depth];
    let what = if depth == 1 && leaf.path.len() > 1 {
        "unknown section"
    } else {
        "unknown key"
    };
    let mut text = String::from(what);
    if let Some(suggestion) = suggest(&path[..depth - 1], name) {
        text.push_str(&format!(" (did you mean `{suggestion}`?)"));
    }
    ConfigProblem::new(path.join("."), ProblemKind::UnknownKey, text)
}

/// serde names integer types (`expected u16`); operators want the range.
fn friendlier(message: &str) -> String {
    const RANGES: [(&str, &str); 5] = [
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
    ];
    if let Some((head, _)) = message.split_once(", expected struct ") {
        return format!("{head}, expected a table");
    }
    RANGES
        .iter()
        .find_map(|(ty, range)| {
            message
                .strip_suffix(ty)
                .map(|head| format!("{head}{range}"))
        })
        .unwrap_or_else(|| message.to_owned())
}

/// A likely intended key for an unknown `name` under `parent`: a sibling one or two typos
/// away (`max_inflight`), else the same key in another section (`mqtt.max_qos`, for a key
/// written after the wrong `[section]` header).
fn suggest(parent: &[String], name: &str) -> Option<String> {
    let defaults = Value::try_from(Config::default()).ok()?;
    let mut node = &defaults;
    for key in parent {
        node = node.as_table()?.get(key)?;
    }
    let sibling = node
        .as_table()?
        .keys()
        .map(|k| (edit_distance(k, name), k))
        .filter(|(d, _)| *d <= (name.chars().count() / 3).max(1))
        .min()
        .map(|(_, k)| k.clone());
    let elsewhere = || {
        let sections = defaults.as_table()?;
        sections
            .iter()
            .find(|(_, keys)| keys.as_table().is_some_and(|t| t.contains_key(name)))
            .map(|(section, _)| format!("{section}.{name}"))
    };
    sibling.or_else(elsewhere)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Where the value at `path` came from: the leaf at that path or one that contains it.
fn origin_of(leaves: &[Leaf], path: &str) -> (Option<Origin>, Option<usize>) {
    leaves
        .iter()
        .find(|l| l.dotted() == path)
        .or_else(|| {
            leaves.iter().find(|l| {
                let d = l.dotted();
                path.starts_with(&format!("{d}.")) || path.starts_with(&format!("{d}["))
            })
        })
        .map_or((None, None), |l| (Some(l.origin.clone()), l.line))
}

fn push_unique(problems: &mut Vec<ConfigProblem>, problem: ConfigProblem) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("max_inflight", "max_inflght"), 1);
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn env_values_read_as_toml_scalars_else_strings() {
        assert_eq!(env_value("42"), Value::Integer(42));
        assert_eq!(env_value("1.5"), Value::Float(1.5));
        assert_eq!(env_value("false"), Value::Boolean(false));
        assert_eq!(
            env_value("127.0.0.1:1884"),
            Value::String("127.0.0.1:1884".into())
        );
        assert_eq!(env_value("1MB"), Value::String("1MB".into()));
        assert_eq!(env_value("[1, 2]"), Value::String("[1, 2]".into()));
    }

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        assert_eq!(line_col("a\nbé=c", 0), (1, 1));
        assert_eq!(line_col("a\nbé=c", 2), (2, 1));
        assert_eq!(line_col("a\nbé=c", 5), (2, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
