//! Disk sizes and durations, written and parsed as BuildKit does (`gcpolicy.go`, §8.3).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes or a percentage of the disk (`512000000`, `"512MB"`, `"10%"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiskSpace {
    /// Bytes (wins over `percentage` when non-zero).
    pub bytes: i64,
    /// Percent of the disk holding the state directory.
    pub percentage: i64,
}

/// BuildKit's `stripQuotes`: one pair of surrounding `"` is removed.
fn strip_quotes(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

impl DiskSpace {
    /// A size in bytes.
    pub const fn bytes(bytes: i64) -> Self {
        DiskSpace {
            bytes,
            percentage: 0,
        }
    }

    /// A percentage of the disk.
    pub const fn percent(percentage: i64) -> Self {
        DiskSpace {
            bytes: 0,
            percentage,
        }
    }

    /// Whether both parts are zero (BuildKit's "unset").
    pub fn is_zero(&self) -> bool {
        self.bytes == 0 && self.percentage == 0
    }

    /// Parse BuildKit's text form: `N%` (integer percentage) or go-units `RAMInBytes`
    /// (binary multiples `k`, `m`, `g`, `t`, `p`, optionally followed by `b` or `ib`, any
    /// case, optional space before the unit, float numbers; a bare number is bytes). The empty
    /// string is zero. Errors read `invalid disk space <text>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = strip_quotes(text);
        if s.is_empty() {
            return Ok(DiskSpace::default());
        }
        let bad = || format!("invalid disk space {s}");
        if let Some(p) = s.strip_suffix('%') {
            // strconv.ParseInt: optional sign, decimal digits only.
            let percentage = p.parse::<i64>().map_err(|_| bad())?;
            if percentage < 0 {
                return Err(bad());
            }
            return Ok(DiskSpace::percent(percentage));
        }
        ram_in_bytes(s).map(DiskSpace::bytes).ok_or_else(bad)
    }

    /// Bytes on a disk of `total` bytes (BuildKit's `AsBytes`): `bytes` if non-zero; a zero
    /// percentage is 0; an unknown disk size (0) gives 2e9; otherwise the percentage is
    /// rounded up to whole GiB and expressed in decimal GB.
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
        let gib = (i128::from(total) * i128::from(self.percentage) / 100) >> 30;
        i64::try_from((gib + 1) * 1_000_000_000).unwrap_or(i64::MAX)
    }
}

/// go-units `RAMInBytes`; `None` where it returns an error.
fn ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (number, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    let mut size: f64 = number.parse().ok()?;
    if size < 0.0 || size.is_nan() {
        return None;
    }
    if !suffix.is_empty() {
        if suffix.len() > 3 {
            return None;
        }
        let suffix = suffix.to_ascii_lowercase();
        let bytes = suffix.as_bytes();
        if bytes[0] == b'b' {
            if bytes.len() > 1 {
                return None;
            }
        } else {
            let power = match bytes[0] {
                b'k' => 1,
                b'm' => 2,
                b'g' => 3,
                b't' => 4,
                b'p' => 5,
                _ => return None,
            };
            size *= 1024f64.powi(power);
            match bytes.len() {
                2 if bytes[1] != b'b' => return None,
                3 if &suffix[1..] != "ib" => return None,
                _ => {}
            }
        }
    }
    if size >= i64::MAX as f64 {
        return None;
    }
    Some(size as i64)
}

/// A duration: Go `time.ParseDuration` text (`"48h"`, `"1h30m"`, `"1.5s"`) or integer
/// seconds (`3600`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// Parse Go duration syntax, then integer seconds; the empty string is zero. Errors read
    /// `invalid duration <text>`. Negative durations are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = strip_quotes(text);
        if s.is_empty() {
            return Ok(Duration::default());
        }
        let nanos = parse_go_duration(s).or_else(|| {
            s.parse::<i64>()
                .ok()
                .and_then(|secs| i128::from(secs).checked_mul(1_000_000_000))
                .filter(|n| *n <= i128::from(i64::MAX))
        });
        match nanos {
            Some(n) if n >= 0 => Ok(Duration(std::time::Duration::from_nanos(n as u64))),
            _ => Err(format!("invalid duration {s}")),
        }
    }

    /// The standard-library duration.
    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Go's `time.ParseDuration`, in signed nanoseconds; `None` where Go returns an error.
fn parse_go_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let b = rest.as_bytes()[0];
        if !(b == b'.' || b.is_ascii_digit()) {
            return None;
        }
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: u128 = if int_len > 0 {
            rest[..int_len].parse::<u64>().ok()?.into()
        } else {
            0
        };
        rest = &rest[int_len..];
        // Fraction.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(after) = rest.strip_prefix('.') {
            rest = after;
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for d in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(d - b'0')))
                {
                    Some(f) if f <= 1 << 63 => {
                        fraction = f;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            rest = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return None;
        }
        // Unit.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        value = value.checked_mul(unit)?;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u128;
        }
        total = total.checked_add(value)?;
        if total > 1 << 63 {
            return None;
        }
    }
    if !negative && total > (1 << 63) - 1 {
        return None;
    }
    let total = total as i128;
    Some(if negative { -total } else { total })
}

/// Integers and strings both reach the text parser, as in BuildKit (`TextUnmarshaler`).
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

impl fmt::Display for DiskSpace {
    /// `N%` for a percentage, the byte count otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bytes == 0 && self.percentage != 0 {
            write!(f, "{}%", self.percentage)
        } else {
            write!(f, "{}", self.bytes)
        }
    }
}

impl Serialize for DiskSpace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.bytes == 0 && self.percentage != 0 {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_i64(self.bytes)
        }
    }
}

impl fmt::Display for Duration {
    /// Compact Go syntax that parses back: `48h`, `1h30m`, `1.5s`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if secs == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if nanos > 0 {
            let frac = format!("{nanos:09}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))?;
        } else if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> i64 {
        let d = DiskSpace::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(d.percentage, 0, "{s}");
        d.bytes
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(b("512MB"), 536_870_912);
        assert_eq!(b("40MB"), 41_943_040);
        assert_eq!(b("10GB"), 10 << 30);
        assert_eq!(b("20GB"), 20 << 30);
        assert_eq!(b("1GB"), 1 << 30);
        assert_eq!(b("1.5g"), 1_610_612_736);
        assert_eq!(b("20 GiB"), 20 << 30);
        assert_eq!(b("100k"), 102_400);
        assert_eq!(b("100KiB"), 102_400);
        assert_eq!(b("2t"), 2 << 40);
        assert_eq!(b("1P"), 1 << 50);
        assert_eq!(b("100b"), 100);
        assert_eq!(b("100 B"), 100);
        assert_eq!(b("1024000000"), 1_024_000_000);
        assert_eq!(b("\"64m\""), 64 << 20);
        assert_eq!(b("1.9"), 1);
        assert_eq!(b(""), 0);
    }

    #[test]
    fn percentages_are_integers() {
        assert_eq!(DiskSpace::parse("10%").unwrap(), DiskSpace::percent(10));
        assert_eq!(DiskSpace::parse("0%").unwrap(), DiskSpace::percent(0));
        assert_eq!(
            DiskSpace::parse("10.5%").unwrap_err(),
            "invalid disk space 10.5%"
        );
        assert!(DiskSpace::parse("-5%").is_err());
        assert!(DiskSpace::parse("%").is_err());
        assert!(DiskSpace::parse("10 %").is_err());
    }

    #[test]
    fn bad_sizes() {
        for s in [
            "-1", "x", "12xb", "1gibb", "1kb b", "1bb", "1gb2", "1kbi", "mb", "1 2", "1  mb", "1e",
            "1.2.3",
        ] {
            assert_eq!(
                DiskSpace::parse(s).unwrap_err(),
                format!("invalid disk space {s}"),
                "{s}"
            );
        }
    }

    #[test]
    fn percentages_become_bytes() {
        // 10% of 100 GiB: 10 GiB rounded up to 11 whole GiB, in decimal GB.
        assert_eq!(DiskSpace::percent(10).as_bytes(100 << 30), 11_000_000_000);
        assert_eq!(DiskSpace::percent(10).as_bytes(0), 2_000_000_000);
        assert_eq!(DiskSpace::percent(0).as_bytes(100 << 30), 0);
        assert_eq!(DiskSpace::percent(1).as_bytes(1 << 20), 1_000_000_000);
        let both = DiskSpace {
            bytes: 5,
            percentage: 10,
        };
        assert_eq!(both.as_bytes(1 << 40), 5);
    }

    fn d(s: &str) -> std::time::Duration {
        Duration::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).0
    }

    #[test]
    fn durations_are_go_syntax_then_seconds() {
        assert_eq!(d("48h").as_secs(), 172_800);
        assert_eq!(d("1h30m").as_secs(), 5400);
        assert_eq!(d("1.5h").as_secs(), 5400);
        assert_eq!(d("3600").as_secs(), 3600);
        assert_eq!(d("+10").as_secs(), 10);
        assert_eq!(d("0").as_secs(), 0);
        assert_eq!(d("").as_secs(), 0);
        assert_eq!(d("500ms").as_millis(), 500);
        assert_eq!(d(".5s").as_millis(), 500);
        assert_eq!(d("5.s").as_secs(), 5);
        assert_eq!(d("1h2m3s4ms5us6ns").as_nanos(), 3_723_004_005_006);
        assert_eq!(d("1µs").as_nanos(), 1000);
        assert_eq!(d("1μs").as_nanos(), 1000);
        assert_eq!(d("1.000000001s").as_nanos(), 1_000_000_001);
        assert_eq!(d("\"2m\"").as_secs(), 120);
        assert_eq!(d("-0").as_secs(), 0);
    }

    #[test]
    fn bad_durations() {
        for s in [
            "2d", "h", "1x", ".s", "1h 30m", "-1h", "-5", "1.5", "3000000h", "1e3s",
        ] {
            assert_eq!(
                Duration::parse(s).unwrap_err(),
                format!("invalid duration {s}"),
                "{s}"
            );
        }
    }

    #[test]
    fn durations_print_back() {
        for s in ["48h", "1h30m", "1.5s", "0s", "2m", "1h0m1s", "1440h"] {
            let printed = Duration::parse(s).unwrap().to_string();
            assert_eq!(
                Duration::parse(&printed).unwrap(),
                Duration::parse(s).unwrap()
            );
        }
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_secs(3601).to_string(), "1h1s");
    }
}
