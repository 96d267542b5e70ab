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
    let r = buildwit_registry::parse_reference(name).map_err(|e| {
        let message = e.to_string();
        let prefix = format!("invalid image reference {name:?}: ");
        ExportError::InvalidName {
            name: name.to_string(),
            reason: message
                .strip_prefix(&prefix)
                .unwrap_or(&message)
                .to_string(),
        }
    })?;
    let (domain, repo) = (r.registry(), r.repository());
    let (tag, digest) = (r.tag(), r.digest());
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
        format!("{}{object}", short.unwrap_or(repo))
    } else {
        full.clone()
    };
    Ok(ImageName {
        full,
        ref_name,
        familiar,
    })
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
