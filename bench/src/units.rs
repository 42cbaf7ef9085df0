//! Human units on the command line: byte sizes (`4KiB`, `64MiB`, `1GiB`) and durations
//! (`500ms`, `10s`, `2m`). They exist as their own module so that clap can parse them
//! with typed errors and so that reports print sizes the way they were asked for.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a size or duration on the command line could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{0:?} is not a number followed by an optional unit")]
    Malformed(String),
    #[error("unknown unit {unit:?} in {input:?} (use B, KiB, MiB, GiB, KB, MB, GB, or ms, s, m, h)")]
    UnknownUnit { input: String, unit: String },
    #[error("{0:?} overflows")]
    Overflow(String),
}

/// A byte count, parsed from `4096`, `4KiB`, `4K` (binary) or `4KB` (decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

impl ByteSize {
    pub fn get(self) -> u64 {
        self.0
    }
}

fn split_number(s: &str) -> Result<(f64, &str), UnitError> {
    let t = s.trim();
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let n: f64 = num.parse().map_err(|_| UnitError::Malformed(s.to_string()))?;
    Ok((n, unit.trim()))
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (n, unit) = split_number(s)?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "ki" | "kib" => KIB,
            "m" | "mi" | "mib" => MIB,
            "g" | "gi" | "gib" => GIB,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: s.to_string(),
                    unit: unit.to_string(),
                })
            }
        };
        let v = n * mult as f64;
        if !v.is_finite() || v > u64::MAX as f64 {
            return Err(UnitError::Overflow(s.to_string()));
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, m) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if v >= m && (v / m) * m == v {
                return write!(f, "{}{}", v / m, unit);
            }
        }
        for (unit, m) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if v >= m {
                return write!(f, "{:.1}{}", v as f64 / m as f64, unit);
            }
        }
        write!(f, "{v}B")
    }
}

/// A duration, parsed from `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (n, unit) = split_number(s)?;
        let secs = match unit.to_ascii_lowercase().as_str() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: s.to_string(),
                    unit: unit.to_string(),
                })
            }
        };
        Duration::try_from_secs_f64(secs)
            .map(HumanDuration)
            .map_err(|_| UnitError::Overflow(s.to_string()))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("4KiB".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("1GiB".parse::<ByteSize>(), Ok(ByteSize(GIB)));
        assert_eq!("64M".parse::<ByteSize>(), Ok(ByteSize(64 * MIB)));
        assert_eq!("1MB".parse::<ByteSize>(), Ok(ByteSize(1_000_000)));
        assert_eq!("123".parse::<ByteSize>(), Ok(ByteSize(123)));
        assert!("4XB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(GIB).to_string(), "1GiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5KiB");
    }

    #[test]
    fn durations() {
        assert_eq!(
            "500ms".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_millis(500)))
        );
        assert_eq!(
            "2m".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_secs(120)))
        );
        assert_eq!("3".parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_secs(3))));
        assert!("3d".parse::<HumanDuration>().is_err());
    }
}
