//! Go-compatible string quoting (`strconv.Quote` and `%q` of a `[]string`).

use crate::unicode_table::NON_PRINTABLE;

/// Reports whether Go's `unicode.IsPrint` accepts `c`.
pub fn is_go_print(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x80 {
        return (0x20..0x7f).contains(&cp);
    }
    NON_PRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

/// Quotes `s` like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_go_quoted(&mut out, s);
    out
}

/// Appends `s` quoted like Go's `strconv.Quote` to `out`.
pub fn push_go_quoted(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_print(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Formats a list like Go's `fmt.Sprintf("%q", []string{...})`.
pub fn go_quote_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        push_go_quoted(&mut out, item);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            go_quote("\t\n\r\x00\x07\x08\x0b\x0c\x7f"),
            r#""\t\n\r\x00\a\b\v\f\x7f""#
        );
        assert_eq!(go_quote("♥ ☃ é"), "\"♥ ☃ é\"");
        assert_eq!(
            go_quote("\u{a0}\u{200b}\u{feff}"),
            r#""\u00a0\u200b\ufeff""#
        );
        assert_eq!(go_quote("\u{e000}\u{10ffff}"), r#""\ue000\U0010ffff""#);
        assert_eq!(go_quote("\u{1f600}"), "\"\u{1f600}\"");
        assert_eq!(
            go_quote_list(&["--a=b".into(), "--c".into()]),
            r#"["--a=b" "--c"]"#
        );
    }
}
