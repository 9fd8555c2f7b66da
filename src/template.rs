//! Substitution templates: action parameters such as `${topic(2)}/alerts` or
//! `$$aws/things/${clientid()}/shadow/update`.
//!
//! `${expr}` is any SQL expression, evaluated against the *input* message (SELECT aliases
//! are not visible; SET variables are). `$$` is a literal `$`. A `$` followed by anything
//! else is an error at load time: `$aws/...` written with one `$` is the classic mistake,
//! and it would otherwise publish to the wrong topic in silence.
//!
//! An expression that is Undefined expands to the empty string (AWS serializes Undefined
//! as ""); a string expands to its text, without quotes; anything else to its JSON text.

use crate::sql::ast::Span;
use crate::sql::compile::{compile_expression, CExpr};
use crate::sql::eval::{eval, Env, Message};
use crate::sql::{parse, ErrorKind, SqlError, SqlVersion, Value};

/// A parsed and compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
    version: SqlVersion,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Expr(CExpr),
}

impl Template {
    /// Parses `text`. `vars` are the rule's SET variables, which `${@v}` may read. Every
    /// error is reported, with spans into `text`.
    pub fn parse(
        text: &str,
        version: SqlVersion,
        vars: &[String],
    ) -> Result<Template, Vec<SqlError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let at = text.len() - rest.len() + dollar;
            let after = &rest[dollar + 1..];
            if let Some(next) = after.strip_prefix('$') {
                literal.push('$');
                rest = next;
            } else if let Some(inner) = after.strip_prefix('{') {
                let Some(len) = expression_len(inner) else {
                    errors.push(
                        SqlError::new(
                            ErrorKind::Syntax,
                            Span::new(at, text.len()),
                            "unclosed `${` in template",
                        )
                        .with_hint("close the expression with `}`"),
                    );
                    return Err(errors);
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                let offset = at + 2;
                match compile_part(&inner[..len], offset, version, vars) {
                    Ok(expr) => parts.push(Part::Expr(expr)),
                    Err(mut errs) => errors.append(&mut errs),
                }
                rest = &inner[len + 1..];
            } else {
                let end = at + 1 + after.chars().next().map_or(0, char::len_utf8);
                errors.push(SqlError::new(
                    ErrorKind::Syntax,
                    Span::new(at, end),
                    "a lone `$` in a template",
                )
                    .with_hint("write `$$` for a literal `$` (as in `$$aws/things/...`), or `${expr}` for a substitution"));
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if errors.is_empty() {
            parts.shrink_to_fit();
            Ok(Template { parts, version })
        } else {
            Err(errors)
        }
    }

    /// The text when the template has no substitution.
    /// Whether two messages on one topic, from one client, in one millisecond can expand it
    /// differently: it reads the message (a field, `*`, a variable) or calls `newuuid()`,
    /// `traceid()` or `rand()`. Functions of the topic, the client or the time do not.
    pub fn can_differ_per_message(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Expr(e) if differs_per_message(e)))
    }

    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Expands the template for a message; `vars` are the rule's SET variable values.
    pub fn expand(&self, msg: &Message, vars: &[Value]) -> String {
        let env = Env {
            msg,
            version: self.version,
            vars,
        };
        // The payload is decoded only for a part that reads it.
        let payload = |expr: &CExpr| {
            if expr.reads_row() {
                msg.payload.value()
            } else {
                &Value::Undefined
            }
        };
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Expr(expr) => match eval(expr, &env, payload(expr)).as_ref() {
                    Value::Undefined => {}
                    Value::Null => out.push_str("null"),
                    value => {
                        if let Some(text) = value.to_text(self.version) {
                            out.push_str(&text);
                        }
                    }
                },
            }
        }
        out
    }
}

/// See `Template::can_differ_per_message`; unsure cases count as differing.
fn differs_per_message(e: &CExpr) -> bool {
    match e {
        CExpr::Const(_) => false,
        CExpr::Call(f, args) => {
            matches!(f.name, "newuuid" | "traceid" | "rand") || args.iter().any(differs_per_message)
        }
        CExpr::Field(e, _) | CExpr::Cast(e, _) | CExpr::Not(e) | CExpr::Neg(e) => {
            differs_per_message(e)
        }
        CExpr::Index(a, b) | CExpr::Binary(_, a, b) => {
            differs_per_message(a) || differs_per_message(b)
        }
        CExpr::Chain(_, items) | CExpr::Array(items) => items.iter().any(differs_per_message),
        _ => true,
    }
}

fn compile_part(
    inner: &str,
    offset: usize,
    version: SqlVersion,
    vars: &[String],
) -> Result<CExpr, Vec<SqlError>> {
    let shift = |mut e: SqlError| {
        e.span = Span::new(e.span.start + offset, e.span.end + offset);
        e
    };
    if inner.trim().is_empty() {
        return Err(vec![SqlError::new(
            ErrorKind::Syntax,
            Span::new(offset - 2, offset + inner.len() + 1),
            "empty `${}` in template",
        )]);
    }
    let expr = parse::parse_expression(inner).map_err(|e| vec![shift(e)])?;
    compile_expression(&expr, version, vars).map_err(|errs| errs.0.into_iter().map(shift).collect())
}

/// The length of the expression after `${`, up to its closing `}`, skipping braces inside
/// strings and object literals.
fn expression_len(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::value::Payload;

    fn expand(template: &str, payload: &str) -> String {
        let payload = Payload::new(bytes::Bytes::copy_from_slice(payload.as_bytes()));
        let msg = Message {
            topic: "my/things/RPI/update",
            payload: &payload,
            clientid: Some("rpi"),
            timestamp_ms: 1_481_825_251_155,
            properties: None,
            rule_name: "r",
            shadows: None,
        };
        Template::parse(template, SqlVersion::default(), &[])
            .unwrap()
            .expand(&msg, &[])
    }

    #[test]
    fn only_a_part_that_reads_the_payload_decodes_it() {
        let payload = Payload::new(bytes::Bytes::from_static(br#"{"temp":21.5}"#));
        let msg = Message {
            topic: "site/pi4/telemetry",
            payload: &payload,
            clientid: None,
            timestamp_ms: 0,
            properties: None,
            rule_name: "r",
            shadows: None,
        };
        let template = |text: &str| Template::parse(text, SqlVersion::default(), &[]).unwrap();
        let by_topic = template("out/${topic(2)}/${upper(clientid())}-${timestamp() + 1}");
        assert_eq!(by_topic.expand(&msg, &[]), "out/pi4/N/A-1");
        assert!(!payload.is_decoded());
        assert_eq!(
            template("out/${topic(2)}/${temp}").expand(&msg, &[]),
            "out/pi4/21.5"
        );
        assert!(payload.is_decoded());
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(
            expand("$$aws/things/RPI/shadow/update", "{}"),
            "$aws/things/RPI/shadow/update"
        );
    }

    #[test]
    fn substitutions_read_the_input_message() {
        assert_eq!(
            expand("${topic(3)}/${a.b}/${missing}x", r#"{"a":{"b":7}}"#),
            "RPI/7/x"
        );
        assert_eq!(expand("${ {'k': '}'}.k }", "{}"), "}");
    }

    #[test]
    fn a_lone_dollar_is_an_error_with_a_hint() {
        let errors = Template::parse("$aws/things/x", SqlVersion::default(), &[]).unwrap_err();
        assert_eq!(errors[0].kind, ErrorKind::Syntax);
        assert_eq!(errors[0].span, Span::new(0, 2));
        assert!(errors[0].hint.as_deref().unwrap().contains("$$"));
    }
}
