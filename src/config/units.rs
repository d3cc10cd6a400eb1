//! Human-readable durations (`"500ms"`, `"2h30m"`) and byte sizes (`"1MB"`, `"64KiB"`).
//!
//! Both types parse from the config file and print back in a canonical form, so a
//! `Config` serialized with `toml::to_string` reads back to the same value.
//!
//! Sizes follow SI and IEC strictly: `KB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB`
//! powers of 1024. Accepting both spellings with one meaning would make one of them a lie.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Duration units, largest first, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Size units (lowercase; matched case-insensitively) with their length in bytes.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Canonical spelling of each size unit, largest first, for printing.
const SIZE_UNITS_CANONICAL: [(&str, u64); 8] = [
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("KB", 1_000),
];

/// A duration written as `<integer><unit>` parts: `"500ms"`, `"10s"`, `"5m"`, `"24h"`,
/// `"7d"`, `"2h30m"`. Millisecond precision; `"0s"` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub const ZERO: Self = Self(Duration::ZERO);

    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The value as a `std::time::Duration`, ready for `tokio::time`.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

/// Why a duration string was rejected. The `Display` names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration (expected e.g. \"10s\", \"500ms\", \"2h30m\")")]
    Empty,
    #[error(
        "invalid duration {input:?}: `{part}` has no unit (use ms, s, m, h or d, e.g. \"{part}s\")"
    )]
    MissingUnit { input: String, part: String },
    #[error("invalid duration {input:?}: unknown unit `{unit}` (use ms, s, m, h or d)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {input:?}: expected a number before `{unit}`")]
    MissingNumber { input: String, unit: String },
    #[error("invalid duration {input:?}: too large")]
    Overflow { input: String },
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut rest = s;
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let (ms, tail) = duration_part(input, rest)?;
            total_ms = total_ms
                .checked_add(ms)
                .ok_or_else(|| DurationError::Overflow {
                    input: input.to_owned(),
                })?;
            rest = tail;
        }
        Ok(Self::from_millis(total_ms))
    }
}

/// Parses one `<digits><unit>` part at the start of `rest`; returns milliseconds and the tail.
fn duration_part<'a>(input: &str, rest: &'a str) -> Result<(u64, &'a str), DurationError> {
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, tail) = rest.split_at(digits_end);
    let unit_end = tail
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(tail.len());
    let (unit, tail) = tail.split_at(unit_end);
    if digits.is_empty() {
        return Err(DurationError::MissingNumber {
            input: input.to_owned(),
            unit: unit.to_owned(),
        });
    }
    if unit.is_empty() {
        return Err(DurationError::MissingUnit {
            input: input.to_owned(),
            part: digits.to_owned(),
        });
    }
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };
    let factor = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor)
        .ok_or_else(|| DurationError::UnknownUnit {
            input: input.to_owned(),
            unit: unit.to_owned(),
        })?;
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    let ms = n.checked_mul(factor).ok_or_else(overflow)?;
    Ok((ms, tail))
}

impl fmt::Display for HumanDuration {
    /// Canonical form: the non-zero parts, largest unit first (`"2h30m"`, `"1s500ms"`, `"0s"`).
    /// Sub-millisecond precision (only reachable through `From<Duration>`) is truncated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in DURATION_UNITS {
            let n = ms / factor;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                ms %= factor;
            }
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\", \"500ms\" or \"2h30m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A number of bytes, written as an integer (`1048576`) or a string with a unit
/// (`"512B"`, `"64KB"`, `"1MB"`, `"1GiB"`; units are case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn bytes(n: u64) -> Self {
        Self(n)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size (expected e.g. 1048576, \"64KB\", \"1MiB\")")]
    Empty,
    #[error("invalid size {input:?}: expected an integer number of bytes followed by an optional unit (e.g. \"64KB\", \"1MiB\")")]
    MissingNumber { input: String },
    #[error("invalid size {input:?}: unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid size {input:?}: too large")]
    Overflow { input: String },
    #[error("invalid size {0}: must not be negative")]
    Negative(i64),
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(SizeError::Empty);
        }
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(digits_end);
        let unit = unit.trim_start();
        if digits.is_empty() {
            return Err(SizeError::MissingNumber {
                input: input.to_owned(),
            });
        }
        let factor = if unit.is_empty() {
            1
        } else {
            SIZE_UNITS
                .iter()
                .find(|(name, _)| unit.eq_ignore_ascii_case(name))
                .map(|(_, factor)| *factor)
                .ok_or_else(|| SizeError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                })?
        };
        let overflow = || SizeError::Overflow {
            input: input.to_owned(),
        };
        let n: u64 = digits.parse().map_err(|_| overflow())?;
        n.checked_mul(factor).map(Self).ok_or_else(overflow)
    }
}

impl fmt::Display for ByteSize {
    /// Canonical form: the largest unit that divides the value exactly (`"1MB"`, `"1MiB"`,
    /// `"1500B"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = SIZE_UNITS_CANONICAL
            .iter()
            .find(|(_, factor)| self.0 != 0 && self.0 % factor == 0);
        match unit {
            Some((name, factor)) => write!(f, "{}{name}", self.0 / factor),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string such as \"64KB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(SizeError::Negative(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, DurationError> {
        s.parse::<HumanDuration>().map(HumanDuration::as_duration)
    }

    #[test]
    fn duration_parses_every_unit() {
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(dur("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(dur("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(dur("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_parses_compound_forms_and_trims() {
        assert_eq!(dur("2h30m"), Ok(Duration::from_secs(9_000)));
        assert_eq!(dur("1s500ms"), Ok(Duration::from_millis(1_500)));
        assert_eq!(dur("1d2h3m4s5ms"), Ok(Duration::from_millis(93_784_005)));
        assert_eq!(dur("  10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn duration_errors_name_the_problem() {
        assert_eq!(dur(""), Err(DurationError::Empty));
        assert!(matches!(dur("10"), Err(DurationError::MissingUnit { part, .. }) if part == "10"));
        assert!(matches!(dur("10x"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "x"));
        assert!(
            matches!(dur("10 s"), Err(DurationError::UnknownUnit { unit, .. }) if unit == " s")
        );
        assert!(matches!(dur("s"), Err(DurationError::MissingNumber { .. })));
        assert!(matches!(
            dur("-1s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(dur("1.5s"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "."));
        assert!(matches!(
            dur("99999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            dur("999999999999999d"),
            Err(DurationError::Overflow { .. })
        ));
        let msg = dur("10x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("\"10x\"") && msg.contains("unknown unit `x`"),
            "{msg}"
        );
    }

    #[test]
    fn duration_displays_canonically_and_roundtrips() {
        for (input, canonical) in [
            ("0s", "0s"),
            ("0ms", "0s"),
            ("90m", "1h30m"),
            ("2h30m", "2h30m"),
            ("1500ms", "1s500ms"),
            ("48h", "2d"),
        ] {
            let d: HumanDuration = input.parse().expect("valid test input");
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<HumanDuration>(), Ok(d));
        }
    }

    fn size(s: &str) -> Result<u64, SizeError> {
        s.parse::<ByteSize>().map(ByteSize::as_u64)
    }

    #[test]
    fn size_parses_decimal_and_binary_units() {
        assert_eq!(size("1048576"), Ok(1_048_576));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("64KB"), Ok(64_000));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("2GB"), Ok(2_000_000_000));
        assert_eq!(size("64KiB"), Ok(65_536));
        assert_eq!(size("1MiB"), Ok(1_048_576));
        assert_eq!(size("1GiB"), Ok(1_073_741_824));
        assert_eq!(size("1gib"), Ok(1_073_741_824));
        assert_eq!(size("8 mb"), Ok(8_000_000));
    }

    #[test]
    fn size_errors_name_the_problem() {
        assert_eq!(size(" "), Err(SizeError::Empty));
        assert!(matches!(size("MB"), Err(SizeError::MissingNumber { .. })));
        assert!(matches!(size("-1MB"), Err(SizeError::MissingNumber { .. })));
        assert!(matches!(size("1M"), Err(SizeError::UnknownUnit { unit, .. }) if unit == "M"));
        assert!(matches!(size("1.5MB"), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!(
            size("99999999TiB"),
            Err(SizeError::Overflow { .. })
        ));
        let msg = size("1M").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("\"1M\"") && msg.contains("KiB"), "{msg}");
    }

    #[test]
    fn size_displays_canonically_and_roundtrips() {
        for (n, canonical) in [
            (0, "0B"),
            (1_500, "1500B"),
            (64_000, "64KB"),
            (1_000_000, "1MB"),
            (1_048_576, "1MiB"),
            (8_000_000, "8MB"),
            (1_024_000, "1000KiB"),
        ] {
            assert_eq!(ByteSize::bytes(n).to_string(), canonical);
            assert_eq!(size(canonical), Ok(n));
        }
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        size: ByteSize,
        timeout: HumanDuration,
    }

    #[test]
    fn units_deserialize_from_toml_integers_and_strings() {
        let h: Holder = toml::from_str("size = 1024\ntimeout = \"5m\"").expect("valid TOML");
        assert_eq!(h.size, ByteSize::bytes(1024));
        assert_eq!(h.timeout.as_duration(), Duration::from_secs(300));
        let h2: Holder = toml::from_str(&toml::to_string(&h).expect("serializes")).expect("reads");
        assert_eq!(h, h2);
        let neg = toml::from_str::<Holder>("size = -1\ntimeout = \"5m\"");
        assert!(neg.is_err_and(|e| e.message().contains("must not be negative")));
        let int_dur = toml::from_str::<Holder>("size = 1\ntimeout = 5");
        assert!(int_dur.is_err_and(|e| e.message().contains("a duration string")));
    }
}
