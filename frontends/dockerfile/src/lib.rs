//! Dockerfile parser, word expander and typed instruction model used by the
//! built-in Dockerfile frontend. Pure `std`, no I/O: it builds for
//! `wasm32-unknown-unknown`.
//!
//! * [`parser`]: directives, line continuations, heredocs, the AST and its
//!   BuildKit-compatible dump.
//! * [`shell`]: BuildKit's word lexer and variable expansion.
//! * [`instructions`]: typed instructions and build stages.

#![warn(missing_docs)]

pub mod gostr;
pub mod instructions;
pub mod json;
pub mod parser;
pub mod shell;
mod unicode_table;

pub mod convert;
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
