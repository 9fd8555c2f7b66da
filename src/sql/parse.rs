//! The parser: statement text to [`ast::Statement`], following `grammar/iot-sql.ebnf`
//! production by production (each `parse_<production>` method is one production).
//!
//! It is built from nom's lexing combinators under a recursive-descent skeleton. It does no
//! semantic checks (functions are resolved by `compile`). Errors carry the byte span of the
//! offending token and what the grammar expected there; nesting deeper than
//! [`MAX_DEPTH`] is an error, never a stack overflow.

use std::cell::Cell;

use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit1, multispace0};
use nom::combinator::{opt, recognize};
use nom::{IResult, Parser as _};

use super::ast::{self, Expr, ExprKind, Span};
use super::error::{ErrorKind, SqlError};

/// How deeply expressions may nest: `((((...))))`, `NOT NOT ...`, nested queries.
pub const MAX_DEPTH: usize = 100;

/// How many operands one AND or OR chain may have (`a = 1 OR a = 2 OR ...`).
pub const MAX_CHAIN: usize = 10_000;

/// Words that cannot be used as bare field names.
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "AS", "CASE", "WHEN", "THEN", "ELSE",
    "END", "SET", "TRUE", "FALSE", "NULL",
];

/// A failed parse: where, and what the grammar expected there.
#[derive(Debug, Clone)]
struct Fail {
    at: usize,
    expected: String,
}

type PResult<'a, T> = Result<(&'a str, T), Fail>;

/// Parses a whole statement.
pub fn parse_statement(src: &str) -> Result<ast::Statement, SqlError> {
    let parser = Parser {
        src,
        depth: Cell::new(0),
    };
    parser.run()
}

/// Parses a lone expression (the inside of a substitution template `${...}`).
pub fn parse_expression(src: &str) -> Result<Expr, SqlError> {
    let parser = Parser {
        src,
        depth: Cell::new(0),
    };
    let result = parser.parse_expr(src).and_then(|(rest, expr)| {
        let rest = parser.ws(rest);
        if rest.is_empty() {
            Ok(expr)
        } else {
            Err(parser.fail(rest, "an operator or the end of the expression"))
        }
    });
    result.map_err(|fail| parser.to_error(fail))
}

struct Parser<'a> {
    src: &'a str,
    depth: Cell<usize>,
}

/// Keeps track of nesting; the depth goes back down when the guard is dropped.
struct DepthGuard<'p>(&'p Cell<usize>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex_word(i: &str) -> IResult<&str, &str> {
    recognize((take_while1(ident_start), take_while(ident_char))).parse(i)
}

fn lex_number(i: &str) -> IResult<&str, &str> {
    recognize((
        digit1,
        opt((char('.'), digit1)),
        opt((
            nom::character::complete::one_of("eE"),
            opt(nom::character::complete::one_of("+-")),
            digit1,
        )),
    ))
    .parse(i)
}

impl<'a> Parser<'a> {
    fn run(&self) -> Result<ast::Statement, SqlError> {
        self.parse_statement(self.src)
            .and_then(|(rest, stmt)| {
                let rest = self.ws(rest);
                if rest.is_empty() {
                    Ok(stmt)
                } else {
                    Err(self.fail(rest, "WHERE, an operator or the end of the statement"))
                }
            })
            .map_err(|fail| self.to_error(fail))
    }

    fn offset(&self, i: &str) -> usize {
        self.src.len() - i.len()
    }

    fn span(&self, from: &str, to: &str) -> Span {
        Span::new(self.offset(from), self.offset(to))
    }

    fn fail(&self, i: &str, expected: &str) -> Fail {
        Fail {
            at: self.offset(i),
            expected: expected.to_owned(),
        }
    }

    fn to_error(&self, fail: Fail) -> SqlError {
        let rest = &self.src[fail.at..];
        let token = next_token(rest);
        let span = Span::new(fail.at, fail.at + token.len());
        let found = if token.is_empty() {
            "the end of the statement".to_owned()
        } else {
            format!("`{token}`")
        };
        SqlError::new(
            ErrorKind::Syntax,
            span,
            format!("expected {}, found {found}", fail.expected),
        )
    }

    fn ws(&self, i: &'a str) -> &'a str {
        multispace0::<&str, ()>(i)
            .map(|(rest, _)| rest)
            .unwrap_or(i)
    }

    /// Matches a keyword (any case) that is not the start of a longer word.
    fn keyword(&self, i: &'a str, kw: &str) -> Option<&'a str> {
        let i = self.ws(i);
        let (rest, word) = lex_word(i).ok()?;
        word.eq_ignore_ascii_case(kw).then_some(rest)
    }

    fn expect_keyword(&self, i: &'a str, kw: &str) -> PResult<'a, ()> {
        match self.keyword(i, kw) {
            Some(rest) => Ok((rest, ())),
            None => Err(self.fail(self.ws(i), &format!("`{kw}`"))),
        }
    }

    fn symbol(&self, i: &'a str, sym: &str) -> Option<&'a str> {
        let i = self.ws(i);
        tag::<&str, &str, ()>(sym)
            .parse(i)
            .ok()
            .map(|(rest, _)| rest)
    }

    fn expect_symbol(&self, i: &'a str, sym: &str) -> PResult<'a, ()> {
        match self.symbol(i, sym) {
            Some(rest) => Ok((rest, ())),
            None => Err(self.fail(self.ws(i), &format!("`{sym}`"))),
        }
    }

    fn enter(&self, i: &'a str) -> Result<DepthGuard<'_>, Fail> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(Fail {
                expected: format!("an expression nested at most {MAX_DEPTH} deep"),
                ..self.fail(i, "")
            });
        }
        self.depth.set(depth);
        Ok(DepthGuard(&self.depth))
    }

    /// statement = [ set_clause ] select_clause [ from_clause ] [ where_clause ]
    fn parse_statement(&self, i: &'a str) -> PResult<'a, ast::Statement> {
        let (i, set) = match self.keyword(i, "SET") {
            Some(rest) => self.parse_set_clause(rest)?,
            None => (i, Vec::new()),
        };
        let Some(i) = self.keyword(i, "SELECT") else {
            let what = if set.is_empty() {
                "SELECT or SET"
            } else {
                "`,` or SELECT"
            };
            return Err(self.fail(self.ws(i), what));
        };
        let (i, select) = self.parse_select_clause(i)?;
        let (i, from) = match self.keyword(i, "FROM") {
            Some(rest) => {
                let (rest, filter) = self.parse_from_clause(rest)?;
                (rest, Some(filter))
            }
            None => (i, None),
        };
        let (i, where_) = match self.keyword(i, "WHERE") {
            Some(rest) => {
                let (rest, cond) = self.parse_expr(rest)?;
                (rest, Some(cond))
            }
            None => (i, None),
        };
        Ok((
            i,
            ast::Statement {
                set,
                select,
                from,
                where_,
            },
        ))
    }

    /// set_clause = "SET" set_item { "," set_item } ; set_item = variable "=" expr
    fn parse_set_clause(&self, mut i: &'a str) -> PResult<'a, Vec<ast::SetItem>> {
        let mut items = Vec::new();
        loop {
            let start = self.ws(i);
            let Some((rest, name)) = self.lex_variable(start) else {
                return Err(self.fail(start, "a variable such as `@name`"));
            };
            let name_span = self.span(start, rest);
            let (rest, ()) = self.expect_symbol(rest, "=")?;
            let (rest, expr) = self.parse_expr(rest)?;
            items.push(ast::SetItem {
                name,
                name_span,
                expr,
            });
            match self.symbol(rest, ",") {
                Some(next) => i = next,
                None => return Ok((rest, items)),
            }
        }
    }

    fn lex_variable(&self, i: &'a str) -> Option<(&'a str, String)> {
        let rest = i.strip_prefix('@')?;
        let (rest, word) = take_while1::<_, &str, ()>(ident_char).parse(rest).ok()?;
        Some((rest, word.to_owned()))
    }

    /// select_clause = "SELECT" [ "VALUE" ] select_item { "," select_item }
    fn parse_select_clause(&self, i: &'a str) -> PResult<'a, ast::Select> {
        let (i, value) = match self.keyword(i, "VALUE") {
            // `SELECT value FROM ...` selects a field named `value`.
            Some(rest) if !self.starts_item_end(rest) => (rest, true),
            _ => (i, false),
        };
        let mut items = Vec::new();
        let mut i = i;
        loop {
            let (rest, item) = self.parse_select_item(i)?;
            items.push(item);
            match self.symbol(rest, ",") {
                Some(next) => i = next,
                None => return Ok((rest, ast::Select { value, items })),
            }
        }
    }

    /// Whether `VALUE` just read is a field name rather than the keyword: it is when what
    /// follows ends an item or continues an expression (`SELECT value + 1 AS v`). `*`, `-`
    /// and `[` start an expression, so `SELECT VALUE *`, `SELECT VALUE -1` and
    /// `SELECT VALUE [1, 2]` take the keyword.
    fn starts_item_end(&self, i: &'a str) -> bool {
        let i = self.ws(i);
        i.is_empty()
            || i.starts_with([',', ')', '.', '+', '/', '%', '=', '<', '>', '!'])
            || ["FROM", "AS", "WHERE", "IN", "AND", "OR", "NOT"]
                .iter()
                .any(|kw| self.keyword(i, kw).is_some())
    }

    /// select_item = "*" | expr [ "AS" alias ]
    fn parse_select_item(&self, i: &'a str) -> PResult<'a, ast::SelectItem> {
        let start = self.ws(i);
        if let Some(rest) = self.symbol(start, "*") {
            let after = self.ws(rest);
            let ends_item = after.is_empty() || after.starts_with([',', ')']);
            if ends_item
                || self.keyword(after, "FROM").is_some()
                || self.keyword(after, "WHERE").is_some()
            {
                return Ok((rest, ast::SelectItem::Wildcard(self.span(start, rest))));
            }
        }
        let (i, expr) = self.parse_expr(start)?;
        let Some(rest) = self.keyword(i, "AS") else {
            return Ok((i, ast::SelectItem::Expr { expr, alias: None }));
        };
        let (rest, alias) = self.parse_alias(rest)?;
        Ok((
            rest,
            ast::SelectItem::Expr {
                expr,
                alias: Some(alias),
            },
        ))
    }

    /// alias = name { "." name }
    fn parse_alias(&self, i: &'a str) -> PResult<'a, ast::Alias> {
        let start = self.ws(i);
        let mut path = Vec::new();
        let mut i = start;
        loop {
            let Ok((rest, word)) = lex_word(i) else {
                return Err(self.fail(i, "a name for the output key"));
            };
            path.push(word.to_owned());
            match rest.strip_prefix('.') {
                Some(next) => i = next,
                None => {
                    return Ok((
                        rest,
                        ast::Alias {
                            path,
                            span: self.span(start, rest),
                        },
                    ))
                }
            }
        }
    }

    /// from_clause = "FROM" ( string | bare_topic )
    fn parse_from_clause(&self, i: &'a str) -> PResult<'a, ast::TopicFilter> {
        let i = self.ws(i);
        if i.starts_with(['\'', '"']) {
            let (rest, filter) = self.lex_string(i)?;
            let span = Span::new(self.offset(i) + 1, self.offset(rest) - 1);
            return Ok((rest, ast::TopicFilter { filter, span }));
        }
        // Some AWS examples leave the filter unquoted; take it up to the next blank.
        let (rest, filter) = take_while::<_, &str, ()>(|c: char| !c.is_whitespace())
            .parse(i)
            .unwrap_or((i, ""));
        if filter.is_empty() || filter.eq_ignore_ascii_case("WHERE") {
            return Err(self.fail(i, "a topic filter in quotes, such as 'sensors/+/data'"));
        }
        Ok((
            rest,
            ast::TopicFilter {
                filter: filter.to_owned(),
                span: self.span(i, rest),
            },
        ))
    }

    /// expr = or_expr ; or_expr = and_expr { "OR" and_expr }
    fn parse_expr(&self, i: &'a str) -> PResult<'a, Expr> {
        let _guard = self.enter(self.ws(i))?;
        let (mut i, first) = self.parse_and(i)?;
        let mut operands = vec![first];
        while let Some(rest) = self.keyword(i, "OR") {
            let (rest, next) = self.parse_and(rest)?;
            operands.push(next);
            i = rest;
        }
        self.chain(i, ast::BinaryOp::Or, operands)
    }

    /// Builds the node of an AND or OR chain: the operand alone, a binary node for two, a
    /// flat chain for more (at most [`MAX_CHAIN`] operands).
    fn chain(&self, i: &'a str, op: ast::BinaryOp, mut operands: Vec<Expr>) -> PResult<'a, Expr> {
        if operands.len() > MAX_CHAIN {
            let at = &self.src[operands[MAX_CHAIN].span.start..];
            return Err(Fail {
                expected: format!("at most {MAX_CHAIN} operands of {}", op.as_str()),
                ..self.fail(at, "")
            });
        }
        let expr = match operands.len() {
            1 => operands.pop().expect("one operand"),
            2 => {
                let right = operands.pop().expect("two operands");
                binary(op, operands.pop().expect("two operands"), right)
            }
            _ => {
                let span = operands[0].span.to(operands[operands.len() - 1].span);
                Expr::new(ExprKind::Chain { op, operands }, span)
            }
        };
        Ok((i, expr))
    }

    /// and_expr = not_expr { "AND" not_expr }
    fn parse_and(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, first) = self.parse_not(i)?;
        let mut operands = vec![first];
        while let Some(rest) = self.keyword(i, "AND") {
            let (rest, next) = self.parse_not(rest)?;
            operands.push(next);
            i = rest;
        }
        self.chain(i, ast::BinaryOp::And, operands)
    }

    /// not_expr = "NOT" not_expr | comparison
    fn parse_not(&self, i: &'a str) -> PResult<'a, Expr> {
        let start = self.ws(i);
        if let Some(rest) = self.keyword(start, "NOT") {
            let _guard = self.enter(start)?;
            let (rest, expr) = self.parse_not(rest)?;
            let span = Span::new(self.offset(start), expr.span.end);
            let kind = ExprKind::Unary {
                op: ast::UnaryOp::Not,
                expr: Box::new(expr),
            };
            return Ok((rest, Expr::new(kind, span)));
        }
        self.parse_comparison(start)
    }

    /// comparison = additive { comp_op additive | [ "NOT" ] "IN" in_list }
    fn parse_comparison(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, mut left) = self.parse_additive(i)?;
        let mut chain = Vec::new();
        loop {
            chain.push(self.enter(i)?);
            if let Some((rest, negated)) = self.in_keyword(i) {
                let (rest, list) = self.parse_in_list(rest)?;
                let span = left.span.to(Span::new(0, self.offset(rest)));
                let kind = ExprKind::In {
                    expr: Box::new(left),
                    list,
                    negated,
                };
                left = Expr::new(kind, span);
                i = rest;
                continue;
            }
            let Some((rest, op)) = self.comparison_op(i) else {
                return Ok((i, left));
            };
            let (rest, right) = self.parse_additive(rest)?;
            left = binary(op, left, right);
            i = rest;
        }
    }

    fn in_keyword(&self, i: &'a str) -> Option<(&'a str, bool)> {
        if let Some(rest) = self.keyword(i, "IN") {
            return Some((rest, false));
        }
        let rest = self.keyword(i, "NOT")?;
        Some((self.keyword(rest, "IN")?, true))
    }

    fn comparison_op(&self, i: &'a str) -> Option<(&'a str, ast::BinaryOp)> {
        use ast::BinaryOp::*;
        // Longest first, so that `<=` is not read as `<`.
        let ops = [
            ("<>", NotEq),
            ("!=", NotEq),
            ("<=", LtEq),
            (">=", GtEq),
            ("=", Eq),
            ("<", Lt),
            (">", Gt),
        ];
        ops.iter()
            .find_map(|(sym, op)| Some((self.symbol(i, sym)?, *op)))
    }

    /// in_list = "(" expr { "," expr } ")" | postfix
    fn parse_in_list(&self, i: &'a str) -> PResult<'a, ast::InList> {
        let start = self.ws(i);
        if start.starts_with('(') && !self.is_subquery(&start[1..]) {
            let (rest, items) = self.parse_expr_list(&start[1..], ")")?;
            return Ok((rest, ast::InList::Items(items)));
        }
        let (rest, expr) = self.parse_postfix(start)?;
        Ok((rest, ast::InList::Expr(Box::new(expr))))
    }

    /// Expressions separated by commas, up to the closing symbol.
    fn parse_expr_list(&self, i: &'a str, close: &str) -> PResult<'a, Vec<Expr>> {
        if let Some(rest) = self.symbol(i, close) {
            return Ok((rest, Vec::new()));
        }
        let mut items = Vec::new();
        let mut i = i;
        loop {
            let (rest, item) = self.parse_argument(i)?;
            items.push(item);
            if let Some(next) = self.symbol(rest, ",") {
                i = next;
                continue;
            }
            let (rest, ()) = self.expect_symbol(rest, close).map_err(|f| Fail {
                expected: format!("`,` or `{close}`"),
                ..f
            })?;
            return Ok((rest, items));
        }
    }

    /// additive = multiplicative { ( "+" | "-" ) multiplicative }
    fn parse_additive(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, mut left) = self.parse_multiplicative(i)?;
        let mut chain = Vec::new();
        loop {
            chain.push(self.enter(i)?);
            let (rest, op) = if let Some(rest) = self.symbol(i, "+") {
                (rest, ast::BinaryOp::Add)
            } else if let Some(rest) = self.symbol(i, "-") {
                (rest, ast::BinaryOp::Sub)
            } else {
                return Ok((i, left));
            };
            let (rest, right) = self.parse_multiplicative(rest)?;
            left = binary(op, left, right);
            i = rest;
        }
    }

    /// multiplicative = unary { ( "*" | "/" | "%" ) unary }
    fn parse_multiplicative(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, mut left) = self.parse_unary(i)?;
        let mut chain = Vec::new();
        loop {
            chain.push(self.enter(i)?);
            let ops = [
                ("*", ast::BinaryOp::Mul),
                ("/", ast::BinaryOp::Div),
                ("%", ast::BinaryOp::Mod),
            ];
            let Some((rest, op)) = ops
                .iter()
                .find_map(|(s, op)| Some((self.symbol(i, s)?, *op)))
            else {
                return Ok((i, left));
            };
            let (rest, right) = self.parse_unary(rest)?;
            left = binary(op, left, right);
            i = rest;
        }
    }

    /// unary = "-" unary | postfix ; a minus before a number is part of the number.
    fn parse_unary(&self, i: &'a str) -> PResult<'a, Expr> {
        let start = self.ws(i);
        let Some(rest) = start.strip_prefix('-') else {
            return self.parse_postfix(start);
        };
        if let Ok((after, number)) = lex_number(rest) {
            let postfix_follows = after.starts_with(['.', '[']);
            if !postfix_follows {
                let text = format!("-{number}");
                let kind = ExprKind::Literal(ast::Literal::Number(text));
                return Ok((after, Expr::new(kind, self.span(start, after))));
            }
        }
        let _guard = self.enter(start)?;
        let (rest, expr) = self.parse_unary(rest)?;
        let span = Span::new(self.offset(start), expr.span.end);
        Ok((
            rest,
            Expr::new(
                ExprKind::Unary {
                    op: ast::UnaryOp::Neg,
                    expr: Box::new(expr),
                },
                span,
            ),
        ))
    }

    /// postfix = primary { "." name | "[" expr "]" }
    fn parse_postfix(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, mut expr) = self.parse_primary(i)?;
        let mut chain = Vec::new();
        loop {
            chain.push(self.enter(i)?);
            if let Some(rest) = i.strip_prefix('.') {
                let Ok((rest, name)) = lex_word(rest) else {
                    return Err(self.fail(rest, "a field name after `.`"));
                };
                let span = expr.span.to(Span::new(0, self.offset(rest)));
                expr = Expr::new(
                    ExprKind::Field {
                        base: Box::new(expr),
                        name: name.to_owned(),
                    },
                    span,
                );
                i = rest;
            } else if let Some(rest) = self.symbol(i, "[") {
                let (rest, index) = self.parse_expr(rest)?;
                let (rest, ()) = self.expect_symbol(rest, "]")?;
                let span = expr.span.to(Span::new(0, self.offset(rest)));
                expr = Expr::new(
                    ExprKind::Index {
                        base: Box::new(expr),
                        index: Box::new(index),
                    },
                    span,
                );
                i = rest;
            } else {
                return Ok((i, expr));
            }
        }
    }

    /// primary = literal | "*" | variable | case | cast | call | name | object | array
    ///         | "(" subquery ")" | "(" expr ")"
    fn parse_primary(&self, i: &'a str) -> PResult<'a, Expr> {
        let start = self.ws(i);
        let at = |rest: &'a str, kind| Ok((rest, Expr::new(kind, self.span(start, rest))));
        let first = start.chars().next();
        match first {
            Some('\'' | '"') => {
                let (rest, text) = self.lex_string(start)?;
                at(rest, ExprKind::Literal(ast::Literal::String(text)))
            }
            Some(c) if c.is_ascii_digit() => {
                let (rest, number) = lex_number(start).map_err(|_| self.fail(start, "a number"))?;
                at(
                    rest,
                    ExprKind::Literal(ast::Literal::Number(number.to_owned())),
                )
            }
            Some('*') => at(&start[1..], ExprKind::Star),
            Some('@') => match self.lex_variable(start) {
                Some((rest, name)) => at(rest, ExprKind::Variable(name)),
                None => Err(self.fail(start, "a variable name after `@`")),
            },
            Some('{') => self.parse_object(start),
            Some('[') => {
                let _guard = self.enter(start)?;
                let (rest, items) = self.parse_expr_list(&start[1..], "]")?;
                at(rest, ExprKind::Array(items))
            }
            Some('(') => self.parse_parenthesized(start),
            Some(c) if ident_start(c) => self.parse_word(start),
            _ => Err(self.fail(start, "an expression")),
        }
    }

    /// "(" subquery ")" | "(" expr ")"
    fn parse_parenthesized(&self, start: &'a str) -> PResult<'a, Expr> {
        let _guard = self.enter(start)?;
        let inner = &start[1..];
        if self.is_subquery(inner) {
            let (rest, query) = self.parse_subquery(inner)?;
            let (rest, ()) = self.expect_symbol(rest, ")")?;
            return Ok((
                rest,
                Expr::new(ExprKind::Subquery(Box::new(query)), self.span(start, rest)),
            ));
        }
        let (rest, mut expr) = self.parse_expr(inner)?;
        let (rest, ()) = self.expect_symbol(rest, ")")?;
        expr.span = self.span(start, rest);
        Ok((rest, expr))
    }

    fn is_subquery(&self, i: &'a str) -> bool {
        self.keyword(i, "SELECT").is_some()
    }

    /// A function argument: an expression, or a nested query without parentheses.
    fn parse_argument(&self, i: &'a str) -> PResult<'a, Expr> {
        if !self.is_subquery(i) {
            return self.parse_expr(i);
        }
        let start = self.ws(i);
        let (rest, query) = self.parse_subquery(start)?;
        Ok((
            rest,
            Expr::new(ExprKind::Subquery(Box::new(query)), self.span(start, rest)),
        ))
    }

    /// subquery = "SELECT" [ "VALUE" ] select_item { "," select_item } "FROM" expr [ "WHERE" expr ]
    fn parse_subquery(&self, i: &'a str) -> PResult<'a, ast::Subquery> {
        let (i, ()) = self.expect_keyword(i, "SELECT")?;
        let (i, select) = self.parse_select_clause(i)?;
        let (i, ()) = self.expect_keyword(i, "FROM")?;
        let (i, from) = self.parse_expr(i)?;
        let (i, where_) = match self.keyword(i, "WHERE") {
            Some(rest) => {
                let (rest, cond) = self.parse_expr(rest)?;
                (rest, Some(cond))
            }
            None => (i, None),
        };
        Ok((
            i,
            ast::Subquery {
                select,
                from,
                where_,
            },
        ))
    }

    /// object = "{" [ string ":" expr { "," string ":" expr } ] "}"
    fn parse_object(&self, start: &'a str) -> PResult<'a, Expr> {
        let _guard = self.enter(start)?;
        let mut members = Vec::new();
        let mut i = &start[1..];
        if let Some(rest) = self.symbol(i, "}") {
            return Ok((
                rest,
                Expr::new(ExprKind::Object(members), self.span(start, rest)),
            ));
        }
        loop {
            let key_at = self.ws(i);
            let (rest, key) = if key_at.starts_with(['\'', '"']) {
                self.lex_string(key_at)?
            } else {
                match lex_word(key_at) {
                    Ok((rest, word)) => (rest, word.to_owned()),
                    Err(_) => return Err(self.fail(key_at, "a quoted key")),
                }
            };
            let (rest, ()) = self.expect_symbol(rest, ":")?;
            let (rest, value) = self.parse_expr(rest)?;
            members.push((key, value));
            if let Some(next) = self.symbol(rest, ",") {
                i = next;
                continue;
            }
            let (rest, ()) = self.expect_symbol(rest, "}").map_err(|f| Fail {
                expected: "`,` or `}`".into(),
                ..f
            })?;
            return Ok((
                rest,
                Expr::new(ExprKind::Object(members), self.span(start, rest)),
            ));
        }
    }

    /// A word: a keyword literal, CASE, cast, a function call or a field name.
    fn parse_word(&self, start: &'a str) -> PResult<'a, Expr> {
        let (rest, word) = lex_word(start).map_err(|_| self.fail(start, "an expression"))?;
        let at = |rest: &'a str, kind| Ok((rest, Expr::new(kind, self.span(start, rest))));
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "TRUE" => return at(rest, ExprKind::Literal(ast::Literal::Bool(true))),
            "FALSE" => return at(rest, ExprKind::Literal(ast::Literal::Bool(false))),
            "NULL" => return at(rest, ExprKind::Literal(ast::Literal::Null)),
            "CASE" => return self.parse_case(start, rest),
            _ => {}
        }
        let after = self.ws(rest);
        if let Some(inside) = after.strip_prefix('(') {
            if upper == "CAST" {
                return self.parse_cast(start, inside);
            }
            let _guard = self.enter(start)?;
            let (rest, args) = self.parse_expr_list(inside, ")")?;
            let name_span = self.span(start, &start[word.len()..]);
            return at(
                rest,
                ExprKind::Call {
                    name: word.to_owned(),
                    name_span,
                    args,
                },
            );
        }
        if RESERVED.contains(&upper.as_str()) {
            return Err(self.fail(start, "an expression"));
        }
        at(rest, ExprKind::Ident(word.to_owned()))
    }

    /// case = "CASE" expr ( "WHEN" expr "THEN" expr )+ [ "ELSE" expr ] "END"
    fn parse_case(&self, start: &'a str, i: &'a str) -> PResult<'a, Expr> {
        let _guard = self.enter(start)?;
        if self.keyword(i, "WHEN").is_some() {
            return Err(Fail {
                expected: "the value to compare after CASE (AWS IoT SQL has only the simple form `CASE v WHEN constant THEN ...`)".into(),
                ..self.fail(self.ws(i), "")
            });
        }
        let (mut i, operand) = self.parse_expr(i)?;
        let mut whens = Vec::new();
        while let Some(rest) = self.keyword(i, "WHEN") {
            let (rest, when) = self.parse_expr(rest)?;
            let (rest, ()) = self.expect_keyword(rest, "THEN")?;
            let (rest, then) = self.parse_expr(rest)?;
            whens.push((when, then));
            i = rest;
        }
        if whens.is_empty() {
            return Err(self.fail(self.ws(i), "WHEN"));
        }
        let (i, else_) = match self.keyword(i, "ELSE") {
            Some(rest) => {
                let (rest, e) = self.parse_expr(rest)?;
                (rest, Some(Box::new(e)))
            }
            None => (i, None),
        };
        let (i, ()) = self.expect_keyword(i, "END").map_err(|f| Fail {
            expected: "WHEN, ELSE or END".into(),
            ..f
        })?;
        let kind = ExprKind::Case {
            operand: Box::new(operand),
            whens,
            else_,
        };
        Ok((i, Expr::new(kind, self.span(start, i))))
    }

    /// cast = "cast" "(" expr "AS" name ")"
    fn parse_cast(&self, start: &'a str, i: &'a str) -> PResult<'a, Expr> {
        let _guard = self.enter(start)?;
        let (i, expr) = self.parse_expr(i)?;
        let (i, ()) = self.expect_keyword(i, "AS")?;
        let type_at = self.ws(i);
        let Ok((i, to)) = lex_word(type_at) else {
            return Err(self.fail(
                type_at,
                "a type name such as Int, Decimal, String or Boolean",
            ));
        };
        let to_span = self.span(type_at, i);
        let (i, ()) = self.expect_symbol(i, ")")?;
        let kind = ExprKind::Cast {
            expr: Box::new(expr),
            to: to.to_owned(),
            to_span,
        };
        Ok((i, Expr::new(kind, self.span(start, i))))
    }

    /// string = "'" { char } "'" | '"' { char } '"' ; a backslash escapes the next character.
    fn lex_string(&self, i: &'a str) -> PResult<'a, String> {
        let quote = i.chars().next().unwrap_or('\'');
        let mut out = String::new();
        let mut chars = i.char_indices().skip(1).peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                c if c == quote => return Ok((&i[pos + 1..], out)),
                '\\' => match chars.next() {
                    Some((_, e)) => unescape(e, &mut out, &mut chars),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(Fail {
            expected: format!("a closing {quote} for this string"),
            ..self.fail(i, "")
        })
    }
}

/// Reads one escape sequence. Unknown escapes keep their backslash, so that regular
/// expressions such as `'\d+'` mean what they say.
fn unescape(
    e: char,
    out: &mut String,
    chars: &mut std::iter::Peekable<impl Iterator<Item = (usize, char)>>,
) {
    match e {
        'n' => out.push('\n'),
        't' => out.push('\t'),
        'r' => out.push('\r'),
        '\\' | '\'' | '"' | '/' => out.push(e),
        'u' => {
            let mut hex = String::new();
            while hex.len() < 4 && chars.peek().is_some_and(|(_, c)| c.is_ascii_hexdigit()) {
                hex.extend(chars.next().map(|(_, c)| c));
            }
            match u32::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == 4)
                .and_then(char::from_u32)
            {
                Some(c) => out.push(c),
                None => {
                    out.push_str("\\u");
                    out.push_str(&hex);
                }
            }
        }
        other => {
            out.push('\\');
            out.push(other);
        }
    }
}

fn binary(op: ast::BinaryOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.to(right.span);
    Expr::new(
        ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        span,
    )
}

/// The token at the start of `rest`, for "found `...`" in messages.
fn next_token(rest: &str) -> &str {
    if let Ok((_, word)) = lex_word(rest) {
        return word;
    }
    if let Ok((_, number)) = lex_number(rest) {
        return number;
    }
    for op in ["<>", "<=", ">=", "!="] {
        if rest.starts_with(op) {
            return op;
        }
    }
    rest.chars().next().map_or("", |c| &rest[..c.len_utf8()])
}
