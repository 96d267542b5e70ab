//! BuildKit's build checks: the rules (names, descriptions, URLs and messages as BuildKit
//! words them), the `# check=` options, and the linter that records what fired. The rules
//! themselves run inside the converter, at the points BuildKit runs them.

/// A build-check rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Rule name, such as `StageNameCasing`.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Documentation page (empty for rules BuildKit documents without one).
    pub url: &'static str,
    /// Runs only when enabled with `experimental=`.
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $desc:literal, $url:literal, $exp:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $id: Rule = Rule { name: $name, description: $desc, url: $url, experimental: $exp };
        )*
        /// Every rule, in BuildKit's order.
        pub const RULES: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "Stage names should be lowercase",
        "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/", false;
    FROM_AS_CASING = "FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword",
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/", false;
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "Empty continuation lines will become errors in a future release",
        "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/", false;
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/", false;
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "Stage names should be unique",
        "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/", false;
    RESERVED_STAGE_NAME = "ReservedStageName", "Reserved words should not be used as stage names",
        "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/", false;
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/", false;
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/", false;
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "FROM command must use declared ARGs",
        "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/", false;
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/", false;
    UNDEFINED_VAR = "UndefinedVar", "Variables should be defined before their use",
        "https://docs.docker.com/go/dockerfile/rule/undefined-var/", false;
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "Multiple instructions of the same type should not be used in the same stage",
        "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/", false;
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "Legacy key/value format with whitespace separator should not be used",
        "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/", false;
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform", "Base image platform does not match expected target platform",
        "", false;
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/", false;
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands",
        "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/", false;
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "Default value for global ARG results in an empty or invalid base image name",
        "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/", false;
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value",
        "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/", false;
    COPY_IGNORED_FILE = "CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore",
        "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/", false;
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription", "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/", true;
    EXPOSE_PROTO_CASING = "ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase",
        "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/", false;
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat", "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/", false;
}

/// Parsed `skip=…;error=…;experimental=…` options (BuildKit's `linter.ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// `skip=all`.
    pub skip_all: bool,
    /// Rule names to skip (exact names, as BuildKit compares them).
    pub skip: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// Experimental rules to enable.
    pub experimental: Vec<String>,
    /// Fail the build when a rule fires.
    pub error: bool,
}

impl CheckOptions {
    /// Parses an options string; the error is BuildKit's, without a prefix.
    pub fn parse(value: &str) -> Result<CheckOptions, String> {
        let mut out = CheckOptions::default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(out);
        }
        let list =
            |v: &str| -> Vec<String> { v.split(',').map(|s| s.trim().to_string()).collect() };
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "invalid check option {}",
                    crate::gostr::go_quote(part)
                ));
            };
            let v = v.trim();
            match k.trim() {
                "skip" if v == "all" => out.skip_all = true,
                "skip" => out.skip = list(v),
                "experimental" if v == "all" => out.experimental_all = true,
                "experimental" => out.experimental = list(v),
                "error" => {
                    out.error = crate::instructions::go_parse_bool(v).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::gostr::go_quote(part),
                            crate::gostr::go_quote(v)
                        )
                    })?;
                }
                k => {
                    return Err(format!(
                        "invalid check option {}",
                        crate::gostr::go_quote(k)
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether `rule` runs under these options.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.name))
        }
    }

    /// BuildKit's `WithMergedConfigFromComments`: the first `check=` comment directly
    /// above an instruction adds its skips and experimental rules (never `error`).
    pub fn merged_with_comments(&self, comments: &[String]) -> CheckOptions {
        for c in comments {
            let Some(value) = directive_value(c, "check") else {
                continue;
            };
            let value = value.split(' ').next().unwrap_or_default();
            let Ok(other) = CheckOptions::parse(value) else {
                return self.clone();
            };
            let mut out = self.clone();
            out.skip_all |= other.skip_all;
            out.skip.extend(other.skip);
            out.experimental_all |= other.experimental_all;
            out.experimental.extend(other.experimental);
            return out;
        }
        self.clone()
    }
}

/// The value of `key=value` in a comment (without `#`) when it is a parser directive for
/// `key`, per BuildKit's directive regexp.
fn directive_value<'a>(comment: &'a str, key: &str) -> Option<&'a str> {
    let line = comment.trim_start();
    let name_len = line
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(line.len(), |(i, _)| i);
    if name_len == 0 || !line[..name_len].eq_ignore_ascii_case(key) {
        return None;
    }
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let value = line[name_len..]
        .trim_start_matches(is_space)
        .strip_prefix('=')?
        .trim_matches(is_space);
    (!value.is_empty()).then_some(value)
}

/// One check that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// The rule.
    pub rule: &'static Rule,
    /// What is wrong here.
    pub message: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line.
    pub end_line: usize,
}

impl LintWarning {
    /// The short form BuildKit sends with a build warning (`linter.LintFormatShort`).
    pub fn short(&self) -> String {
        if self.start_line > 0 {
            format!(
                "{}: {} (line {})",
                self.rule.name, self.message, self.start_line
            )
        } else {
            format!("{}: {}", self.rule.name, self.message)
        }
    }
}

/// Records the rules that fire, filtered by the check options.
#[derive(Debug, Clone, Default)]
pub struct Linter {
    /// Options from the `check` directive or `BUILDKIT_DOCKERFILE_CHECK`.
    pub options: CheckOptions,
    /// False when nobody listens (BuildKit's nil warn callback): nothing is recorded and
    /// `error=true` cannot fail.
    pub enabled: bool,
    /// Suppresses recording while a conversion pass repeats an earlier one.
    pub muted: bool,
    /// What fired, in order.
    pub warnings: Vec<LintWarning>,
}

impl Linter {
    /// A linter with these options.
    pub fn new(options: CheckOptions, enabled: bool) -> Self {
        Linter {
            options,
            enabled,
            muted: false,
            warnings: Vec::new(),
        }
    }

    /// Records `rule` at `lines` unless it is disabled for the instruction whose comments
    /// are `comments`.
    pub fn run(
        &mut self,
        comments: &[String],
        rule: &'static Rule,
        lines: (usize, usize),
        message: String,
    ) {
        if !self.enabled || self.muted {
            return;
        }
        if !self.options.merged_with_comments(comments).enabled(rule) {
            return;
        }
        self.warnings.push(LintWarning {
            rule,
            message,
            start_line: lines.0,
            end_line: lines.1,
        });
    }

    /// BuildKit's `Linter.Error`: with `error=true`, any warning fails the build.
    pub fn error(&self) -> Option<String> {
        if !self.options.error || self.warnings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for w in &self.warnings {
            if !rules.contains(&w.rule.name) {
                rules.push(w.rule.name);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }
}

/// Whether an ARG or ENV key looks like it holds a secret (BuildKit's token lists).
pub fn is_secret_key(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    // The regexps match a whole token between `_` separators or the ends of the key.
    let tokens: Vec<String> = key.split('_').map(str::to_lowercase).collect();
    let has = |list: &[&str]| tokens.iter().any(|t| list.contains(&t.as_str()));
    has(DENY) && !has(ALLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_options() {
        let o =
            CheckOptions::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert!(o.error && !o.enabled(&JSON_ARGS_RECOMMENDED) && !o.enabled(&STAGE_NAME_CASING));
        // Names compare exactly, as in BuildKit.
        assert!(
            CheckOptions::parse("skip=jsonargsrecommended")
                .unwrap()
                .enabled(&JSON_ARGS_RECOMMENDED)
        );
        assert!(
            !CheckOptions::parse("skip=all")
                .unwrap()
                .enabled(&FROM_AS_CASING)
        );
        assert!(!CheckOptions::default().enabled(&INVALID_DEFINITION_DESCRIPTION));
        assert!(
            CheckOptions::parse("experimental=all")
                .unwrap()
                .enabled(&INVALID_DEFINITION_DESCRIPTION)
        );
        assert_eq!(
            CheckOptions::parse("bogus").unwrap_err(),
            "invalid check option \"bogus\""
        );
        assert_eq!(
            CheckOptions::parse("foo=1").unwrap_err(),
            "invalid check option \"foo\""
        );
        assert_eq!(
            CheckOptions::parse("error=maybe").unwrap_err(),
            "failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
    }

    #[test]
    fn comments_merge_skips() {
        let base = CheckOptions::parse("error=true").unwrap();
        let merged =
            base.merged_with_comments(&["a comment".into(), "check=skip=UndefinedVar".into()]);
        assert!(
            merged.error
                && !merged.enabled(&UNDEFINED_VAR)
                && merged.enabled(&UNDEFINED_ARG_IN_FROM)
        );
        // An invalid `check` comment leaves the options alone.
        assert_eq!(base.merged_with_comments(&["check=bogus".into()]), base);
        let mut l = Linter::new(CheckOptions::default(), true);
        l.run(
            &["check=skip=all".into()],
            &UNDEFINED_VAR,
            (1, 1),
            "x".into(),
        );
        l.run(
            &[],
            &UNDEFINED_VAR,
            (2, 2),
            "Usage of undefined variable '$A'".into(),
        );
        assert_eq!(l.warnings.len(), 1);
        assert_eq!(
            l.warnings[0].short(),
            "UndefinedVar: Usage of undefined variable '$A' (line 2)"
        );
        assert_eq!(l.error(), None);
        l.options.error = true;
        assert_eq!(
            l.error().unwrap(),
            "lint violation found for rules: UndefinedVar"
        );
        let mut off = Linter::new(CheckOptions::parse("error=true").unwrap(), false);
        off.run(&[], &UNDEFINED_VAR, (1, 1), "x".into());
        assert!(off.warnings.is_empty() && off.error().is_none());
    }

    #[test]
    fn secret_keys() {
        for k in [
            "api_key",
            "DATABASE_PASSWORD",
            "GITHUB_TOKEN",
            "secret_MESSAGE",
            "AUTH",
            "aws_secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "PUBLIC_KEY",
            "keyboard",
            "TOKEN_FILE",
            "NODE_VERSION",
            "tokens",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn rules_match_buildkit_names_and_urls() {
        assert_eq!(RULES.len(), 22);
        for r in RULES {
            if r.name != "InvalidBaseImagePlatform" {
                assert!(
                    r.url
                        .starts_with("https://docs.docker.com/go/dockerfile/rule/"),
                    "{}",
                    r.name
                );
            }
        }
    }
}
