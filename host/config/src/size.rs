//! Disk sizes and durations, written and parsed as BuildKit does.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes or a percentage of the disk (`512000000`, `"512MB"`, `"10%"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes (wins when non-zero).
    pub bytes: i64,
    /// Percent of the disk.
    pub percentage: i64,
}

impl DiskSpace {
    /// A percentage of the disk.
    pub fn percent(p: i64) -> Self {
        DiskSpace {
            bytes: 0,
            percentage: p,
        }
    }

    /// Parse BuildKit's text form: `N%` (integer) or go-units `RAMInBytes` (binary units:
    /// `k`, `m`, `g`, `t`, `p`, optionally followed by `b` or `ib`, any case; bare = bytes).
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim().trim_matches('"');
        if s.is_empty() {
            return Ok(DiskSpace::default());
        }
        let bad = || format!("invalid disk space {text}");
        if let Some(p) = s.strip_suffix('%') {
            let percentage = p.trim().parse::<i64>().map_err(|_| bad())?;
            return Ok(DiskSpace::percent(percentage));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit = unit.trim_start().to_ascii_lowercase();
        if unit.len() > 3 {
            return Err(bad());
        }
        let power = match unit.trim_end_matches("ib").trim_end_matches('b') {
            "" => 0,
            "k" => 1,
            "m" => 2,
            "g" => 3,
            "t" => 4,
            "p" => 5,
            _ => return Err(bad()),
        };
        if (unit == "b" || unit == "ib") || (power == 0 && !unit.is_empty()) {
            return Err(bad());
        }
        Ok(DiskSpace {
            bytes: (number * 1024f64.powi(power)) as i64,
            percentage: 0,
        })
    }

    /// Bytes on a disk of `total` bytes (BuildKit's `AsBytes`: a percentage is rounded up to
    /// whole GiB and expressed in decimal GB; an unknown disk size gives 2 GB).
    pub fn as_bytes(&self, total: i64) -> i64 {
        if self.bytes != 0 {
            return self.bytes;
        }
        if self.percentage == 0 {
            return 0;
        }
        if total == 0 {
            return 2_000_000_000;
        }
        (total * self.percentage / 100 / (1 << 30) + 1) * 1_000_000_000
    }
}

/// A duration: Go `time.ParseDuration` text (`"48h"`, `"1h30m"`) or integer seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parse Go duration syntax, then integer seconds.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim().trim_matches('"');
        if s.is_empty() {
            return Ok(Duration::default());
        }
        if let Some(d) = parse_go_duration(s) {
            return Ok(Duration(d));
        }
        match s.parse::<u64>() {
            Ok(secs) => Ok(Duration(std::time::Duration::from_secs(secs))),
            Err(_) => Err(format!("invalid duration {text}")),
        }
    }
}

/// Go's `time.ParseDuration` (non-negative): a sequence of decimal numbers with units.
fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut nanos: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if end == 0 {
            return None;
        }
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_nanos(nanos as u64))
}

/// Integers and strings both reach the text parser, as in BuildKit (TextUnmarshaler).
struct TextOrInt<T>(fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for TextOrInt<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for DiskSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(DiskSpace::parse))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(Duration::parse))
    }
}

impl Serialize for DiskSpace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.bytes == 0 && self.percentage != 0 {
            s.serialize_str(&format!("{}%", self.percentage))
        } else {
            s.serialize_i64(self.bytes)
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() == 0 && secs.is_multiple_of(3600) && secs > 0 {
            s.serialize_str(&format!("{}h", secs / 3600))
        } else if self.0.subsec_nanos() == 0 {
            s.serialize_str(&format!("{secs}s"))
        } else {
            s.serialize_str(&format!("{}ns", self.0.as_nanos()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_buildkit() {
        let b = |s| DiskSpace::parse(s).unwrap().bytes;
        assert_eq!(b("512MB"), 536_870_912);
        assert_eq!(b("40MB"), 41_943_040);
        assert_eq!(b("10GB"), 10 << 30);
        assert_eq!(b("1.5g"), 1_610_612_736);
        assert_eq!(b("20 GiB"), 20 << 30);
        assert_eq!(b("1024000000"), 1_024_000_000);
        assert_eq!(b("100k"), 102_400);
        assert_eq!(DiskSpace::parse("10%").unwrap(), DiskSpace::percent(10));
        assert!(DiskSpace::parse("10.5%").is_err());
        assert!(DiskSpace::parse("-1").is_err());
        assert!(DiskSpace::parse("12xb").is_err());
        assert!(DiskSpace::parse("1gibb").is_err());
        assert_eq!(DiskSpace::parse("x").unwrap_err(), "invalid disk space x");
    }

    #[test]
    fn percentages_become_bytes() {
        // 10% of 100 GiB: 10 GiB rounded up to 11 whole GiB, in decimal GB.
        assert_eq!(DiskSpace::percent(10).as_bytes(100 << 30), 11_000_000_000);
        assert_eq!(DiskSpace::percent(10).as_bytes(0), 2_000_000_000);
        assert_eq!(
            DiskSpace {
                bytes: 5,
                percentage: 10
            }
            .as_bytes(1 << 40),
            5
        );
    }

    #[test]
    fn durations_like_buildkit() {
        let d = |s| Duration::parse(s).unwrap().0.as_secs();
        assert_eq!(d("48h"), 172_800);
        assert_eq!(d("1h30m"), 5400);
        assert_eq!(d("3600"), 3600);
        assert_eq!(d("1.5h"), 5400);
        assert_eq!(Duration::parse("500ms").unwrap().0.as_millis(), 500);
        assert_eq!(Duration::parse("2d").unwrap_err(), "invalid duration 2d");
        assert!(Duration::parse("h").is_err());
    }
}
