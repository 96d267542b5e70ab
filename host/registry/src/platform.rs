//! Platform normalisation and matching against image index entries (as containerd does).

use std::fmt;

/// A normalised `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, ...; empty when the architecture has none (or its default).
    pub variant: String,
}

impl Platform {
    /// Normalises aliases: `x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`,
    /// `arm` → `arm/v7`, `amd64/v1` → `amd64`.
    pub fn normalize(os: &str, architecture: &str, variant: &str) -> Self {
        let os = os.trim().to_ascii_lowercase();
        let os = if os == "macos" { "darwin".into() } else { os };
        let arch = architecture.trim().to_ascii_lowercase();
        let mut variant = variant.trim().to_ascii_lowercase();
        let arch = match arch.as_str() {
            "i386" | "i486" | "i586" | "i686" => "386".to_string(),
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "armhf" => {
                variant = "v7".into();
                "arm".to_string()
            }
            "armel" => {
                variant = "v6".into();
                "arm".to_string()
            }
            _ => arch,
        };
        match arch.as_str() {
            "arm64" if variant == "v8" || variant == "8" => variant.clear(),
            "amd64" if variant == "v1" => variant.clear(),
            "arm" if variant.is_empty() => variant = "v7".into(),
            "arm" if variant.len() == 1 => variant = format!("v{variant}"),
            _ => {}
        }
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }

    /// How well an index entry's platform fits this wanted platform, as containerd's
    /// `platforms.Only` orders them: `Some(0)` is exact, higher numbers are older
    /// compatible ones (`amd64/v3` takes v2, plain amd64, then 386; `arm64` takes arm/v8
    /// down to arm/v5; `arm/v7` takes v6 and v5), `None` does not run here.
    pub fn rank(&self, entry: &Platform) -> Option<u32> {
        if self.os != entry.os {
            return None;
        }
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        // An empty variant of amd64 is v1; of arm it was made v7 by `normalize`.
        let amd64 = |v: &str| if v.is_empty() { Some(1) } else { level(v) };
        match (self.architecture.as_str(), entry.architecture.as_str()) {
            (want, have) if want == have && self.variant == entry.variant => Some(0),
            ("amd64", "amd64") => match (amd64(&self.variant)?, amd64(&entry.variant)?) {
                (w, h) if h <= w => Some(w - h),
                _ => None,
            },
            ("amd64", "386") => Some(amd64(&self.variant)?),
            ("arm64", "arm") => match level(&entry.variant)? {
                h @ 5..=8 => Some(1 + 8 - h),
                _ => None,
            },
            ("arm", "arm") => match (level(&self.variant)?, level(&entry.variant)?) {
                (w, h) if (5..=w).contains(&h) => Some(w - h),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_aliases() {
        assert_eq!(
            Platform::normalize("linux", "x86_64", "").to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::normalize("linux", "aarch64", "v8").to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::normalize("linux", "arm", "").to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::normalize("linux", "armel", "").to_string(),
            "linux/arm/v6"
        );
    }

    #[test]
    fn matches_variants() {
        let arm64 = Platform::normalize("linux", "arm64", "");
        assert_eq!(
            arm64.rank(&Platform::normalize("linux", "arm64", "v8")),
            Some(0)
        );
        let armv7 = Platform::normalize("linux", "arm", "v7");
        assert_eq!(
            armv7.rank(&Platform::normalize("linux", "arm", "v6")),
            Some(1)
        );
        assert_eq!(armv7.rank(&Platform::normalize("linux", "arm", "v8")), None);
        let amd64 = Platform::normalize("linux", "amd64", "");
        assert_eq!(
            amd64.rank(&Platform::normalize("linux", "amd64", "v3")),
            None
        );
        assert_eq!(amd64.rank(&Platform::normalize("linux", "arm64", "")), None);
        let v3 = Platform::normalize("linux", "amd64", "v3");
        assert_eq!(v3.rank(&Platform::normalize("linux", "amd64", "")), Some(2));
        // As containerd orders them: 386 after every amd64, arm after arm64.
        let i386 = Platform::normalize("linux", "386", "");
        assert_eq!(amd64.rank(&i386), Some(1));
        assert_eq!(v3.rank(&i386), Some(3));
        assert_eq!(i386.rank(&amd64), None);
        assert_eq!(
            arm64.rank(&Platform::normalize("linux", "arm", "v7")),
            Some(2)
        );
        assert_eq!(
            arm64.rank(&Platform::normalize("linux", "arm", "v8")),
            Some(1)
        );
        assert_eq!(
            armv7.rank(&Platform::normalize("linux", "arm", "v5")),
            Some(2)
        );
        assert_eq!(armv7.rank(&Platform::normalize("linux", "arm", "v4")), None);
        let armv6 = Platform::normalize("linux", "arm", "v6");
        assert_eq!(armv6.rank(&armv7), None);
        assert_eq!(armv7.rank(&arm64), None);
        assert_eq!(
            amd64.rank(&Platform::normalize("windows", "amd64", "")),
            None
        );
    }
}
