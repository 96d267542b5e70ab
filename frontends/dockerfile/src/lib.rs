//! Dockerfile parser, word expander and typed instruction model used by the
//! built-in Dockerfile frontend. Pure `std`, no I/O: it builds for
//! `wasm32-unknown-unknown`.
//!
//! * [`parser`]: directives, line continuations, heredocs, the AST and its
//!   BuildKit-compatible dump.
//! * [`shell`]: BuildKit's word lexer and variable expansion.
//! * [`instructions`]: typed instructions, `--mount` parsing and build stages (the
//!   one instruction model; the converter dispatches it).
//! * [`lint`]: the `# check=` directive and BuildKit's build checks.
//! * [`convert`]: Dockerfile → LLB and image config (`dockerfile2llb`).
//! * [`frontend`]: the gateway frontend around the converter: multi-platform builds and
//!   the [`subrequests`] (`outline`, `targets`, `lint`, `describe`).

#![warn(missing_docs)]

pub mod gostr;
pub mod instructions;
pub mod json;
pub mod lint;
pub mod parser;
pub mod shell;
pub mod subrequests;
pub mod tabwriter;
mod unicode_table;

pub mod convert;
pub mod dockerignore;
pub mod frontend;
pub mod image;

buildwit_sdk::export_frontend!(frontend::Dockerfile);

use std::fmt;

/// An error with its source position; `Display` gives BuildKit's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based line where the error starts (0 when unknown).
    pub line: usize,
    /// 1-based last line of the offending instruction (equals `line` for one-line errors).
    pub end_line: usize,
    /// 1-based column (0 when not meaningful).
    pub column: usize,
    /// The complete message, exactly as BuildKit prints it.
    pub message: String,
}

impl Error {
    /// Creates an error spanning `line..=end_line`.
    pub fn new(line: usize, end_line: usize, message: impl Into<String>) -> Self {
        Error {
            line,
            end_line,
            column: 0,
            message: message.into(),
        }
    }

    /// Creates an error without a position.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::new(0, 0, message)
    }

    /// Points the error at `line..=end_line` unless it already has a position.
    pub fn at(mut self, line: usize, end_line: usize) -> Self {
        if self.line == 0 && line > 0 {
            self.line = line;
            self.end_line = end_line;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
