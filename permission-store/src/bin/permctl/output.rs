//! Everything permctl prints goes through here. Human output shows ids,
//! apps and permissions as they are unless a terminal would act on them:
//! anyone who can call the store's `SetPermission` chooses those strings, so a
//! newline must not forge a table row and an escape sequence must not reach
//! the terminal. Such a string is printed quoted, with escapes, so it can't be
//! mistaken for one that really holds a backslash. JSON output stays exact.

use std::fmt::Write;

/// Prints one line of the command's result on stdout.
pub fn line(text: &str) {
    println!("{text}");
}

/// Prints text that already ends in a newline (a rendered table, JSON).
pub fn block(text: &str) {
    print!("{text}");
}

/// A remark that is not the result (an empty store, say), on stderr.
pub fn note(text: &str) {
    eprintln!("permctl: {text}");
}

/// Something the user may not have meant, done anyway, on stderr.
pub fn warn(text: &str) {
    eprintln!("permctl: warning: {text}");
}

/// A failure, on stderr; the caller exits with its code.
pub fn error(text: &str) {
    eprintln!("permctl: {}", escape_controls(text));
}

/// One value as a table cell or inside a message. A string that needs no
/// escaping is shown as it is (`org.example.App`, and `a\nb` typed with a
/// backslash); any other is quoted with Rust-style escapes, backslashes and
/// quotes included: `""` for the empty string (the host apps' id), `"a\nb"`
/// for one holding a newline, `"\"x\""` for one that begins with a quote. So
/// two different strings never look the same.
pub fn shown(s: &str) -> String {
    let quote = s.is_empty() || s.starts_with('"') || s.chars().any(needs_escape);
    if !quote {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// Replaces control characters (C0, DEL, C1) and the invisible characters
/// that reorder or hide text (bidi overrides and isolates, zero-width
/// characters, BOM) with Rust-style escapes: `\n`, `\t`, `\x1b`, `\u{202e}`.
/// For whole messages, whose values [`shown`] (or `{:?}`) already quoted:
/// this is the last guard that keeps an error one line with no escape
/// sequence in it.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) && (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// An app id as messages show it: `"" (host apps)` for the empty one.
pub fn app(app: &str) -> String {
    if app.is_empty() {
        "\"\" (host apps)".into()
    } else {
        shown(app)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width space/joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape_controls("\u{1b}[31mred"), "\\x1b[31mred");
        assert_eq!(escape_controls("x\u{7f}\u{85}"), "x\\x7f\\u{85}");
        assert_eq!(escape_controls("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape_controls("caf\u{e9} \\n"), "caf\u{e9} \\n");
    }

    #[test]
    fn plain_strings_are_shown_as_they_are() {
        assert_eq!(shown("org.example.App"), "org.example.App");
        assert_eq!(shown("caf\u{e9} x"), "caf\u{e9} x");
        // A backslash alone needs no escaping: shown as typed.
        assert_eq!(shown("a\\nb"), "a\\nb");
        assert_eq!(shown("say \"hi\""), "say \"hi\"");
    }

    #[test]
    fn strings_that_need_escaping_are_quoted() {
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("\u{1b}[2J"), "\"\\x1b[2J\"");
        assert_eq!(shown("a\\b\n\"c"), "\"a\\\\b\\n\\\"c\"");
        assert_eq!(shown("abc\u{202e}"), "\"abc\\u{202e}\"");
        // Beginning with a quote: bare, it would read as a quoted value.
        assert_eq!(shown("\"a\\nb\""), "\"\\\"a\\\\nb\\\"\"");
    }

    #[test]
    fn no_two_strings_look_the_same() {
        let strings = [
            "a\nb",
            "a\\nb",
            "\"a\\nb\"",
            "\"a\nb\"",
            "",
            "\"\"",
            "x\u{1b}",
            "x\\x1b",
            "\"x\\x1b\"",
        ];
        let mut seen: Vec<String> = strings.iter().map(|s| shown(s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), strings.len(), "{seen:?}");
    }
}
