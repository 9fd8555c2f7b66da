//! Rendering errors for people: `file:line:col`, the source line and a caret.
//!
//! Positions travel as byte spans and become lines and columns only here, when printed.

use std::fmt::Write as _;

use crate::sql::ast::Span;

/// One error to show: a message about a span of a source text.
#[derive(Clone, Debug)]
pub struct Diagnostic<'a> {
    /// The file name (or `<sql>` for text from the command line).
    pub origin: &'a str,
    /// The whole text the span points into.
    pub source: &'a str,
    pub span: Span,
    pub message: &'a str,
    pub hint: Option<&'a str>,
    /// A warning (the rule loads and runs) rather than an error.
    pub warning: bool,
}

/// The 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, source[line_start..offset].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Diagnostic<'_> {
    /// Renders the diagnostic in the style of rustc:
    ///
    /// ```text
    /// error: unknown function `uper`
    ///  --> rules/overheat.toml:4:15
    ///   |
    /// 4 | sql = "SELECT uper(c) FROM 'dev/+/telemetry'"
    ///   |               ^^^^ did you mean `upper`?
    /// ```
    pub fn render(&self) -> String {
        let (line, col) = line_col(self.source, self.span.start);
        let line_start = self.source
            [..floor_char_boundary(self.source, self.span.start.min(self.source.len()))]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_text = self.source[line_start..].lines().next().unwrap_or("");
        let end_in_line =
            (self.span.end.max(self.span.start + 1) - line_start).min(line_text.len().max(col));
        let start_char = col - 1;
        let end_char = line_text
            .get(..floor_char_boundary(line_text, end_in_line.min(line_text.len())))
            .map_or(start_char + 1, |s| s.chars().count())
            .max(start_char + 1);
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        let mut out = String::new();
        let level = if self.warning { "warning" } else { "error" };
        let _ = writeln!(out, "{level}: {}", self.message);
        let _ = writeln!(out, "{pad}--> {}:{line}:{col}", self.origin);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line} | {}", line_text.replace('\t', " "));
        let carets = "^".repeat(end_char - start_char);
        let hint = self.hint.map(|h| format!(" {h}")).unwrap_or_default();
        let _ = writeln!(out, "{pad} | {}{carets}{hint}", " ".repeat(start_char));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_span() {
        let source = "a = 1\nsql = \"SELECT uper(c) FROM 'x'\"\n";
        let start = source.find("uper").unwrap();
        let d = Diagnostic {
            origin: "r.toml",
            source,
            span: Span::new(start, start + 4),
            message: "unknown function `uper`",
            hint: Some("did you mean `upper`?"),
            warning: false,
        };
        assert_eq!(
            d.render(),
            "error: unknown function `uper`\n --> r.toml:2:15\n  |\n2 | sql = \"SELECT uper(c) FROM 'x'\"\n  |               ^^^^ did you mean `upper`?\n"
        );
    }
}
