//! Configuration problems: every one found is collected and reported at once.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file given by the operator.
    File(PathBuf),
    /// Text handed to [`crate::config::parse`], e.g. the embedded default config.
    Text,
    /// A `ROOST_*` environment variable (its name).
    Env(String),
}

/// What kind of problem a [`ConfigProblem`] is; the message carries the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The config file could not be read.
    Unreadable,
    /// The file is not valid TOML.
    Syntax,
    /// A key (or section) that Roost does not know.
    UnknownKey,
    /// A value of the wrong type or format (`"ten"` for an integer, `"10x"` for a duration).
    Type,
    /// A well-formed value that is out of range or inconsistent with another one.
    Invalid,
    /// A `ROOST_*` environment variable whose name does not map to a key.
    MalformedOverride,
}

/// One problem in the configuration, with the dotted key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`mqtt.max_inflight`); empty when the problem concerns the whole input.
    pub path: String,
    pub kind: ProblemKind,
    pub message: String,
    /// Where the offending value came from, when known.
    pub origin: Option<Origin>,
    /// 1-based line in the config file, when known.
    pub line: Option<usize>,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind,
            message: message.into(),
            origin: None,
            line: None,
        }
    }

    /// A semantic validation problem (`ProblemKind::Invalid`).
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, ProblemKind::Invalid, message)
    }

    pub(crate) fn at(mut self, origin: Option<Origin>, line: Option<usize>) -> Self {
        self.origin = origin;
        self.line = line;
        self
    }

    fn location(&self) -> Option<String> {
        let origin = self.origin.as_ref()?;
        Some(match (origin, self.line) {
            (Origin::File(path), Some(line)) => format!("{}:{line}", path.display()),
            (Origin::File(path), None) => path.display().to_string(),
            (Origin::Text, Some(line)) => format!("line {line}"),
            (Origin::Text, None) => return None,
            (Origin::Env(var), _) => var.clone(),
        })
    }
}

impl fmt::Display for ConfigProblem {
    /// `roost.toml:12: mqtt.max_inflght: unknown key (did you mean `max_inflight`?)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = self.location() {
            write!(f, "{location}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problem concerning `path`, if any (handy in tests and for callers that react
    /// to one key).
    pub fn find(&self, path: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
