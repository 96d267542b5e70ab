//! Image names as Docker normalises them: `alpine` is `docker.io/library/alpine:latest`,
//! familiar form `alpine:latest`.

use crate::ExportError;

const DOCKER_HUB: &str = "docker.io";

/// One name of an exported image, in the forms the layout files need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    /// Fully qualified, with a tag (`:latest` when none was given) or a digest:
    /// `docker.io/library/alpine:latest`. The `io.containerd.image.name` annotation.
    pub full: String,
    /// The OCI reference name: the tag (and digest) without the repository, or the whole
    /// name for a digest-only reference. The `org.opencontainers.image.ref.name` annotation.
    pub ref_name: String,
    /// Short form for `manifest.json`'s RepoTags: `alpine:latest`, `user/app:1`.
    pub familiar: String,
}

/// Normalise an image name; errors say what is wrong with it.
pub fn normalize_name(name: &str) -> Result<ImageName, ExportError> {
    let bad = |reason: &str| ExportError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => {
            let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !valid {
                return Err(bad(
                    "the digest must be sha256: and 64 lowercase hex digits",
                ));
            }
            (rest, Some(digest))
        }
        None => (name, None),
    };
    // A tag follows the last ':' that has no '/' after it (a ':' before one is a port).
    let (path, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let (domain, repo) = match path.split_once('/') {
        Some((first, repo))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, repo.to_string())
        }
        _ => (DOCKER_HUB, path.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DOCKER_HUB
    } else {
        domain
    };
    let repo = if domain == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    if repo.is_empty() || !repo.split('/').all(valid_path_component) {
        return Err(bad(
            "the repository must be lowercase letters, digits and separators (. _ -) between '/'",
        ));
    }
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(bad(
            "the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    };
    let mut object = String::new();
    if let Some(tag) = tag {
        object.push(':');
        object.push_str(tag);
    }
    if let Some(digest) = digest {
        object.push('@');
        object.push_str(digest);
    }
    let full = format!("{domain}/{repo}{object}");
    let ref_name = match tag {
        Some(_) => object[1..].to_string(),
        None => full.clone(),
    };
    let familiar = if domain == DOCKER_HUB {
        let short = repo.strip_prefix("library/").filter(|r| !r.contains('/'));
        format!("{}{object}", short.unwrap_or(&repo))
    } else {
        full.clone()
    };
    Ok(ImageName {
        full,
        ref_name,
        familiar,
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut sep = String::new();
    for &x in b {
        if alnum(x) {
            if !(sep.is_empty()
                || sep == "."
                || sep == "_"
                || sep == "__"
                || sep.bytes().all(|s| s == b'-'))
            {
                return false;
            }
            sep.clear();
        } else if matches!(x, b'.' | b'_' | b'-') {
            sep.push(x as char);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> (String, String, String) {
        let n = normalize_name(s).unwrap();
        (n.full, n.ref_name, n.familiar)
    }

    #[test]
    fn names_normalise_like_docker() {
        assert_eq!(
            n("alpine"),
            (
                "docker.io/library/alpine:latest".into(),
                "latest".into(),
                "alpine:latest".into()
            )
        );
        assert_eq!(
            n("user/app:1.0"),
            (
                "docker.io/user/app:1.0".into(),
                "1.0".into(),
                "user/app:1.0".into()
            )
        );
        assert_eq!(
            n("localhost:5000/a/b"),
            (
                "localhost:5000/a/b:latest".into(),
                "latest".into(),
                "localhost:5000/a/b:latest".into()
            )
        );
        assert_eq!(n("index.docker.io/library/busybox:1").2, "busybox:1");
        let digest = format!("sha256:{}", "a".repeat(64));
        let by_digest = n(&format!("reg.example/x@{digest}"));
        assert_eq!(by_digest.0, format!("reg.example/x@{digest}"));
        assert_eq!(by_digest.1, by_digest.0);
        assert_eq!(n(&format!("x:t@{digest}")).1, format!("t@{digest}"));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "Alpine",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a@sha256:12",
            "a b",
        ] {
            let err = normalize_name(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
