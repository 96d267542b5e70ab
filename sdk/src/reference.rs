//! Image references and platforms, normalised the way Docker and BuildKit do it.

use crate::llb::Platform;

/// A parsed image reference: `[domain/]path[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with port (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path (`library/alpine`).
    pub path: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// `sha256:…`, if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise: `alpine` → `docker.io/library/alpine`. Errors carry Docker's
    /// wording (`invalid reference format`, `repository name (...) must be lowercase`).
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() {
            return Err("invalid reference format".into());
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d.split_once(':').ok_or("invalid reference format")?;
                if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err("invalid reference format".into());
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                || t.starts_with(['.', '-']))
        {
            return Err("invalid reference format".into());
        }
        let (domain, path) = match name.split_once('/') {
            Some((d, p))
                if d.contains(['.', ':'])
                    || d == "localhost"
                    || d.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (d.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() {
            return Err("invalid reference format".into());
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "invalid reference format: repository name ({path}) must be lowercase"
            ));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        };
        if !path.split('/').all(component_ok) {
            return Err("invalid reference format".into());
        }
        Ok(ImageRef {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full normalised reference; `:latest` is added when there is neither tag nor digest
    /// (BuildKit's `TagNameOnly`).
    pub fn normalized(&self) -> String {
        let mut s = self.name();
        match (&self.tag, &self.digest) {
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            (None, None) => s.push_str(":latest"),
            _ => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Platform::parse("linux/amd64").expect("valid platform")
    }

    /// Parse `os/arch[/variant]`, normalising arch aliases (`x86_64` → `amd64`, `aarch64` →
    /// `arm64`; `arm64/v8` drops the default variant).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        let os = parts[0].to_ascii_lowercase();
        let (architecture, mut variant) = match parts[1].to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => ("amd64".to_string(), String::new()),
            "aarch64" => ("arm64".to_string(), String::new()),
            "i386" => ("386".to_string(), String::new()),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            a => (a.to_string(), String::new()),
        };
        if let Some(v) = parts.get(2) {
            variant = v.to_ascii_lowercase();
        }
        if architecture == "arm64" && variant == "v8" {
            variant.clear();
        }
        if architecture == "arm" && variant.is_empty() {
            variant = "v7".into();
        }
        Ok(Platform {
            architecture,
            os,
            variant,
            os_version: String::new(),
            os_features: Vec::new(),
        })
    }

    /// `os/arch[/variant]`.
    pub fn id(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        fn n(s: &str) -> String {
            ImageRef::parse(s).unwrap().normalized()
        }
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("library/alpine:3"), "docker.io/library/alpine:3");
        assert_eq!(n("docker/dockerfile:1"), "docker.io/docker/dockerfile:1");
        assert_eq!(
            n("127.0.0.1:5000/library/busybox"),
            "127.0.0.1:5000/library/busybox:latest"
        );
        assert_eq!(n("localhost/x:1"), "localhost/x:1");
        let d = "sha256:d53446ae75a74596551f620f394d5dd30aa9743f781130c60b699f932752a9b3";
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
        assert_eq!(
            ImageRef::parse("host:5000/x:1").unwrap().name(),
            "host:5000/x"
        );
    }

    #[test]
    fn rejects_bad_references() {
        assert!(
            ImageRef::parse("Alpine")
                .unwrap_err()
                .contains("must be lowercase")
        );
        assert!(ImageRef::parse("busybox:").is_err());
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a@sha256:xyz").is_err());
    }

    #[test]
    fn platforms() {
        assert_eq!(Platform::parse("linux/x86_64").unwrap().id(), "linux/amd64");
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().id(),
            "linux/arm64"
        );
        assert_eq!(Platform::parse("linux/arm").unwrap().id(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_err());
    }
}
