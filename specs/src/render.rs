//! Rendering diagnostics for people and machines: compiler-style text with a code frame, a
//! stable JSON array, and GitHub Actions workflow commands. Pure string building: the caller
//! prints.

use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, Severity};
use crate::load::Loaded;

/// Output formats of `mycopod validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Compiler-style text with code frames.
    Human,
    /// A JSON array of `{file, line, column, path, severity, code, message}`.
    Json,
    /// GitHub Actions workflow commands (`::error file=..::message`).
    Github,
}

/// Renders `diagnostics` in `format`; `loaded` supplies the source lines of code frames.
pub fn render(format: Format, diagnostics: &[Diagnostic], loaded: &Loaded) -> String {
    match format {
        Format::Human => render_human(diagnostics, loaded),
        Format::Json => render_json(diagnostics),
        Format::Github => render_github(diagnostics),
    }
}

/// Compiler-style text: a header with severity and code, the location, a code frame with a
/// caret under the field, the field path, and a summary line.
pub fn render_human(diagnostics: &[Diagnostic], loaded: &Loaded) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let _ = writeln!(out, "{}[{}]: {}", d.severity, d.code, d.message);
        let line_text = loaded.file(&d.file).and_then(|f| f.line(d.line));
        let gutter = d.line.to_string().len();
        let pad = " ".repeat(gutter);
        if d.line == 0 {
            let _ = writeln!(out, "{pad}--> {}", d.file);
        } else {
            let _ = writeln!(out, "{pad}--> {}:{}:{}", d.file, d.line, d.column);
        }
        if let Some(text) = line_text {
            let col = usize::try_from(d.column.max(1) - 1).unwrap_or(0);
            let prefix: String = text
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let width = token_width(text, col);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{} | {}", d.line, text);
            let _ = writeln!(out, "{pad} | {prefix}{}", "^".repeat(width));
        }
        if !d.path.is_empty() {
            let _ = writeln!(out, "{pad} = field: {}", d.path);
        }
        out.push('\n');
    }
    out.push_str(&summary(diagnostics));
    out.push('\n');
    out
}

/// `2 errors, 1 warning` or `no problems found`.
pub fn summary(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => "no problems found".to_owned(),
        _ => format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    }
}

/// Width of the token starting at character `col` of `line`: a quoted string, a flow
/// collection opener, or a plain scalar/key up to its `: `, `,`, `]`, `}` or ` #`.
fn token_width(line: &str, col: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(col).collect();
    let Some(&first) = rest.first() else { return 1 };
    if first == '"' || first == '\'' {
        let mut i = 1;
        while i < rest.len() {
            if rest[i] == '\\' && first == '"' {
                i += 2;
                continue;
            }
            if rest[i] == first {
                return i + 1;
            }
            i += 1;
        }
        return rest.len().max(1);
    }
    if matches!(first, '[' | '{' | '-' | '|' | '>') {
        return 1;
    }
    let mut end = 0;
    for (i, &c) in rest.iter().enumerate() {
        let next = rest.get(i + 1).copied();
        if matches!(c, ',' | ']' | '}')
            || (c == ':' && next.is_none_or(|n| n == ' '))
            || (c == '#' && i > 0 && rest[i - 1] == ' ')
        {
            break;
        }
        end = i + 1;
    }
    let token: String = rest[..end].iter().collect();
    token.trim_end().chars().count().max(1)
}

/// A pretty-printed JSON array of diagnostics, fields in the order
/// `file, line, column, path, severity, code, message`.
pub fn render_json(diagnostics: &[Diagnostic]) -> String {
    let mut s = serde_json::to_string_pretty(diagnostics).unwrap_or_else(|_| "[]".to_owned());
    s.push('\n');
    s
}

/// GitHub Actions workflow commands, one per line.
pub fn render_github(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let mut message = d.message.clone();
        if !d.path.is_empty() {
            let _ = write!(message, " (at {})", d.path);
        }
        let _ = write!(out, "::{} file={}", d.severity, escape_property(&d.file));
        if d.line > 0 {
            let _ = write!(out, ",line={},col={}", d.line, d.column);
        }
        let _ = writeln!(
            out,
            ",title={}::{}",
            escape_property(&format!("mycopod {}", d.code)),
            escape_data(&message)
        );
    }
    out
}

/// Escapes a workflow command message: `%`, `\r`, `\n`.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command property value: as data, plus `:` and `,`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_width_should_cover_keys_plain_and_quoted_scalars() {
        assert_eq!(token_width("  memroy: 2GiB", 2), 6);
        assert_eq!(token_width("  memroy: 2GiB", 10), 4);
        assert_eq!(token_width("  {name: a, address: 70000}", 21), 5);
        assert_eq!(token_width("  url: \"http://x:1\" # c", 7), 12);
        assert_eq!(token_width("  endpoint: https://pve.lan:8006", 12), 20);
        assert_eq!(token_width("", 5), 1);
    }

    #[test]
    fn github_escaping_should_follow_the_workflow_command_rules() {
        assert_eq!(escape_data("50% a\r\nb"), "50%25 a%0D%0Ab");
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
    }
}
