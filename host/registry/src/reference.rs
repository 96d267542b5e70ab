//! Image references parsed as Docker parses them, without oci-spec's regular expression:
//! compiling that expression costs about 30 ms in every process, more than a whole cached
//! build through a `# syntax=` frontend.

use oci_client::Reference;

use crate::{RegistryError, RegistryErrorKind};

const DOCKER_HUB: &str = "docker.io";
/// The longest repository name (with its registry) distribution accepts.
const NAME_MAX: usize = 255;

/// Parse `reference` (`alpine`, `host:5000/a/b:tag`, `a@sha256:…`) into its registry,
/// repository, tag and digest, normalised like Docker: `alpine` is
/// `docker.io/library/alpine:latest`.
pub fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    let invalid = |why: &str| {
        RegistryError::new(
            RegistryErrorKind::Invalid,
            reference,
            "",
            format!("invalid image reference {reference:?}: {why}"),
        )
    };
    let s = reference.trim();
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) if valid_digest(digest) => (rest, Some(digest)),
        Some(_) => return Err(invalid("the digest must be ALGORITHM:HEX (sha256:…)")),
        None => (s, None),
    };
    // A tag follows the last ':' with no '/' after it; a ':' before a '/' is a port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(invalid(
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (first, path.to_string())
        }
        _ => (DOCKER_HUB, name.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    if !valid_host(registry) {
        return Err(invalid(
            "the registry is not a host name with an optional port",
        ));
    }
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("repository names must be lowercase"));
    }
    if !repository.split('/').all(valid_component) {
        return Err(invalid(
            "a repository is '/'-separated components of lowercase letters and digits, joined by '.', '_', '__' or '-'",
        ));
    }
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if registry.len() + 1 + repository.len() > NAME_MAX {
        return Err(invalid("the name is longer than 255 characters"));
    }
    let (registry, tag) = (registry.to_string(), tag.map(str::to_string));
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag, digest.to_string())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_string()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest".into())),
    })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}` (ASCII word characters).
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// Labels of letters, digits and inner '-', joined by '.', and an optional `:port`.
fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
}

/// `ALGORITHM:HEX` with at least 32 hex digits, as distribution accepts.
fn valid_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|p| {
        p.bytes().next().is_some_and(|x| x.is_ascii_alphabetic())
            && p.bytes().all(|x| x.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers as oci-spec's regex parser, which stays the reference here.
    #[test]
    fn parses_like_oci_spec() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let good = [
            "alpine".to_string(),
            "alpine:3.20".into(),
            "library/alpine".into(),
            "docker.io/alpine".into(),
            "index.docker.io/library/alpine:1".into(),
            "user/app:v1.2-rc_3".into(),
            "127.0.0.1:5000/a/b/c:tag".into(),
            "localhost/app".into(),
            "localhost:5000/app".into(),
            "ghcr.io/org/repo.name_x__y---z:latest".into(),
            format!("alpine@{digest}"),
            format!("host:5000/a:tag@{digest}"),
            "docker/dockerfile:1-labs".into(),
        ];
        for r in &good {
            let ours = parse_reference(r).unwrap_or_else(|e| panic!("{r}: {e}"));
            let theirs: Reference = r.parse().unwrap();
            assert_eq!(ours, theirs, "{r}");
            assert_eq!(ours.whole(), theirs.whole(), "{r}");
        }
        let bad = [
            "",
            "Alpine",
            "user/App",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a:",
            "a:-tag",
            "a@sha256:abc",
            "a@sha256",
            "host:port/a",
            "a..b",
            "a:b:c",
        ];
        for r in bad {
            assert!(parse_reference(r).is_err(), "{r} should not parse");
            assert!(r.parse::<Reference>().is_err(), "oci-spec parses {r}");
        }
    }
}
