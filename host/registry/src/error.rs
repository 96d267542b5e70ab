//! `RegistryError`: what went wrong, for which reference, on which registry, and what to do.

use std::fmt;

/// What kind of failure a [`RegistryError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistryErrorKind {
    /// The repository, tag, digest or blob does not exist on the registry.
    NotFound,
    /// The registry could not be reached (connection refused, DNS, TLS, timeout, 5xx).
    Unreachable,
    /// The registry refused our credentials, or wants some.
    Unauthorized,
    /// The registry answered with something we cannot use (bad digest, not an image, bad JSON).
    Invalid,
    /// The image exists but has no manifest for the requested platform.
    NoPlatform,
    /// The `[registry."host"]` settings are unusable (unreadable CA file, bad mirror).
    Config,
}

impl fmt::Display for RegistryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryErrorKind::NotFound => "not found",
            RegistryErrorKind::Unreachable => "unreachable",
            RegistryErrorKind::Unauthorized => "unauthorized",
            RegistryErrorKind::Invalid => "invalid",
            RegistryErrorKind::NoPlatform => "no platform",
            RegistryErrorKind::Config => "config",
        })
    }
}

/// A registry failure; its message names the reference and the registry host and says what to do.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    kind: RegistryErrorKind,
    reference: String,
    host: String,
    message: String,
}

impl RegistryError {
    /// Builds an error from its parts; `message` is the whole user-facing text.
    pub(crate) fn new(
        kind: RegistryErrorKind,
        reference: impl Into<String>,
        host: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        RegistryError {
            kind,
            reference: reference.into(),
            host: host.into(),
            message: message.into(),
        }
    }

    /// A configuration error about `[registry."host"]`.
    pub(crate) fn config(host: &str, message: impl Into<String>) -> Self {
        RegistryError::new(RegistryErrorKind::Config, "", host, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> RegistryErrorKind {
        self.kind
    }

    /// The normalised image reference being resolved (empty for configuration errors).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The registry host (`host[:port]`) that failed.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether trying the next endpoint (mirror → origin) makes sense after this error.
    pub(crate) fn falls_back(&self) -> bool {
        matches!(
            self.kind,
            RegistryErrorKind::NotFound
                | RegistryErrorKind::Unreachable
                | RegistryErrorKind::Unauthorized
        )
    }

    /// Appends a note to the message.
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        self.message.push_str(note);
        self
    }
}
