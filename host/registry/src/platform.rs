//! Platform normalisation and matching against image index entries (as containerd does).

use std::fmt;

/// A normalised `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Platform {
    pub os: String,
    pub architecture: String,
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

    /// How well an index entry's platform fits this wanted platform: `Some(0)` is exact,
    /// higher numbers are older compatible variants (arm/v6 for arm/v7, amd64/v2 for amd64/v3),
    /// `None` does not run here.
    pub fn rank(&self, entry: &Platform) -> Option<u32> {
        if self.os != entry.os || self.architecture != entry.architecture {
            return None;
        }
        if self.variant == entry.variant {
            return Some(0);
        }
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        match self.architecture.as_str() {
            "arm" | "amd64" => {
                let want = if self.variant.is_empty() {
                    Some(1)
                } else {
                    level(&self.variant)
                };
                let have = if entry.variant.is_empty() {
                    Some(1)
                } else {
                    level(&entry.variant)
                };
                match (want, have) {
                    (Some(w), Some(h)) if h <= w => Some(w - h),
                    _ => None,
                }
            }
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
        assert_eq!(
            amd64.rank(&Platform::normalize("windows", "amd64", "")),
            None
        );
    }
}
