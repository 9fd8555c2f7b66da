//! The compile step: a parsed statement becomes a [`Query`] ready to evaluate.
//!
//! Function names and arities are resolved here, once, so that evaluation never looks a
//! name up. Every problem of the statement is collected and reported together: an unknown
//! function (with a "did you mean"), a function that needs an AWS service, a wrong number of
//! arguments, a feature of 2016-03-23 used under 2015-10-08, an unknown cast type.

use super::ast::{self, Expr, ExprKind, Span};
use super::functions::{self, Function};
use super::value::{parse_number, Value};
use super::{ErrorKind, SqlError, SqlErrors, SqlVersion};

/// A compiled statement.
#[derive(Clone, Debug)]
pub struct Query {
    pub version: SqlVersion,
    /// The SET variables, in order; `CExpr::Var(i)` reads slot `i`.
    pub set: Vec<(String, CExpr)>,
    pub select: CSelect,
    /// The FROM topic filter, if any.
    pub from: Option<String>,
    pub where_: Option<CExpr>,
    /// The functions the statement calls, each once (by name).
    pub calls: Vec<&'static str>,
}

/// A compiled SELECT list.
#[derive(Clone, Debug)]
pub struct CSelect {
    /// `SELECT VALUE`: the single item's value is the output.
    pub value: bool,
    pub items: Vec<CItem>,
}

#[derive(Clone, Debug)]
pub enum CItem {
    /// `*`: the members of the current row.
    Wildcard,
    /// `expr AS a.b`: the value goes under the key path.
    Expr { expr: CExpr, path: Vec<String> },
}

/// The target types of `cast`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastType {
    String,
    Int,
    Decimal,
    Double,
    Bool,
}

/// A compiled expression: names resolved, constants folded into values.
#[derive(Clone, Debug)]
pub enum CExpr {
    Const(Value),
    Star,
    Ident(String),
    Var(usize),
    Field(Box<CExpr>, String),
    Index(Box<CExpr>, Box<CExpr>),
    Call(&'static Function, Vec<CExpr>),
    Cast(Box<CExpr>, CastType),
    Not(Box<CExpr>),
    Neg(Box<CExpr>),
    Binary(ast::BinaryOp, Box<CExpr>, Box<CExpr>),
    /// AND or OR over three or more operands.
    Chain(ast::BinaryOp, Vec<CExpr>),
    In {
        expr: Box<CExpr>,
        list: Box<CInList>,
        negated: bool,
    },
    Case {
        operand: Box<CExpr>,
        whens: Vec<(CExpr, CExpr)>,
        else_: Option<Box<CExpr>>,
    },
    Object(Vec<(String, CExpr)>),
    Array(Vec<CExpr>),
    Subquery(Box<CSubquery>),
}

impl CExpr {
    /// Whether evaluating it may read the row (the payload, for a rule): false only when
    /// nothing in it names a field or `*`, so that a template such as `${topic(2)}` does not
    /// make the engine decode the payload. Conservative for IN, CASE and subqueries.
    pub fn reads_row(&self) -> bool {
        match self {
            CExpr::Const(_) | CExpr::Var(_) => false,
            CExpr::Star | CExpr::Ident(_) => true,
            CExpr::Field(e, _) | CExpr::Cast(e, _) | CExpr::Not(e) | CExpr::Neg(e) => e.reads_row(),
            CExpr::Index(a, b) | CExpr::Binary(_, a, b) => a.reads_row() || b.reads_row(),
            // A function reads only its arguments (and the message's topic, client id, time).
            CExpr::Call(_, items) | CExpr::Chain(_, items) | CExpr::Array(items) => {
                items.iter().any(CExpr::reads_row)
            }
            CExpr::Object(members) => members.iter().any(|(_, e)| e.reads_row()),
            CExpr::In { .. } | CExpr::Case { .. } | CExpr::Subquery(_) => true,
        }
    }
}

#[derive(Clone, Debug)]
pub enum CInList {
    Items(Vec<CExpr>),
    Expr(CExpr),
}

#[derive(Clone, Debug)]
pub struct CSubquery {
    pub select: CSelect,
    pub from: CExpr,
    pub where_: Option<CExpr>,
}

/// AWS's limits on SET: variables per statement, and the length of a name.
pub const MAX_VARIABLES: usize = 10;
pub const MAX_VARIABLE_NAME: usize = 64;

/// The prefix of Basic Ingest topics: `$aws/rules/<rule-name>/<rest>`.
pub const BASIC_INGEST_PREFIX: &str = "$aws/rules/";

impl Query {
    /// Whether a message on `topic` reaches the rule `rule_name`, and if so the topic as
    /// `topic()` sees it. A Basic Ingest topic reaches only the rule it names (whatever its
    /// FROM says), and `topic()` sees what follows the rule's name; any other topic must
    /// match the FROM filter.
    pub fn route<'t>(&self, topic: &'t str, rule_name: &str) -> Option<&'t str> {
        if topic.starts_with(BASIC_INGEST_PREFIX) {
            let (name, rest) = basic_ingest(topic)?;
            return (name == rule_name).then_some(rest);
        }
        let from = self.from.as_deref()?;
        crate::topic::matches(from, topic).then_some(topic)
    }
}

/// Splits a Basic Ingest topic `$aws/rules/<rule-name>/<rest>` into the rule's name and
/// the topic as `topic()` sees it; None for any other topic, or when `<rest>` is empty.
pub fn basic_ingest(topic: &str) -> Option<(&str, &str)> {
    let (name, rest) = topic.strip_prefix(BASIC_INGEST_PREFIX)?.split_once('/')?;
    (!rest.is_empty()).then_some((name, rest))
}

/// Parses and compiles a statement.
pub fn compile(sql: &str, version: SqlVersion) -> Result<Query, SqlErrors> {
    let statement = super::parse::parse_statement(sql).map_err(|e| SqlErrors(vec![e]))?;
    compile_statement(&statement, version)
}

/// Compiles a parsed statement, reporting every error it finds.
pub fn compile_statement(
    statement: &ast::Statement,
    version: SqlVersion,
) -> Result<Query, SqlErrors> {
    let mut c = Compiler {
        version,
        vars: Vec::new(),
        errors: Vec::new(),
        calls: Vec::new(),
    };
    let mut set = Vec::new();
    for item in &statement.set {
        let expr = c.expr(&item.expr);
        if item.name.len() > MAX_VARIABLE_NAME {
            c.error(SqlError::new(
                ErrorKind::Invalid,
                item.name_span,
                format!(
                    "variable name `@{}` is longer than {MAX_VARIABLE_NAME} characters",
                    item.name
                ),
            ));
        }
        if c.vars.len() == MAX_VARIABLES {
            c.error(SqlError::new(
                ErrorKind::Invalid,
                item.name_span,
                format!("too many SET variables: at most {MAX_VARIABLES} per statement"),
            ));
        }
        if c.vars.contains(&item.name) {
            c.error(
                SqlError::new(
                    ErrorKind::Duplicate,
                    item.name_span,
                    format!("variable `@{}` is already set", item.name),
                )
                .with_hint("SET variables are assigned once"),
            );
        }
        c.vars.push(item.name.clone());
        set.push((item.name.clone(), expr));
    }
    let select = c.select(&statement.select);
    let where_ = statement.where_.as_ref().map(|e| c.expr(e));
    if let Some(from) = &statement.from {
        if let Err(e) = crate::topic::validate_filter(&from.filter) {
            let at = from.span.start + e.at().unwrap_or(0);
            let end = if e.at().is_some() {
                at + 1
            } else {
                from.span.end
            };
            c.error(SqlError::new(
                ErrorKind::Invalid,
                Span::new(at, end.max(at)),
                format!("invalid topic filter: {e}"),
            ));
        }
    }
    if c.errors.is_empty() {
        let from = statement.from.as_ref().map(|f| f.filter.clone());
        Ok(Query {
            version,
            set,
            select,
            from,
            where_,
            calls: c.calls,
        })
    } else {
        c.errors.sort_by_key(|e| e.span.start);
        Err(SqlErrors(c.errors))
    }
}

/// Compiles one expression against known SET variables (the inside of a template).
pub fn compile_expression(
    expr: &Expr,
    version: SqlVersion,
    vars: &[String],
) -> Result<CExpr, SqlErrors> {
    let mut c = Compiler {
        version,
        vars: vars.to_vec(),
        errors: Vec::new(),
        calls: Vec::new(),
    };
    let compiled = c.expr(expr);
    if c.errors.is_empty() {
        Ok(compiled)
    } else {
        Err(SqlErrors(c.errors))
    }
}

struct Compiler {
    version: SqlVersion,
    vars: Vec<String>,
    errors: Vec<SqlError>,
    calls: Vec<&'static str>,
}

impl Compiler {
    fn error(&mut self, error: SqlError) {
        self.errors.push(error);
    }

    fn needs_2016(&mut self, span: Span, what: &str) {
        if self.version < SqlVersion::V2016_03_23 {
            self.error(
                SqlError::new(
                    ErrorKind::Version,
                    span,
                    format!("{what} needs SQL version 2016-03-23"),
                )
                .with_hint("set the rule's sql_version to \"2016-03-23\""),
            );
        }
    }

    fn select(&mut self, select: &ast::Select) -> CSelect {
        if select.value && select.items.len() != 1 {
            let span = match &select.items[1] {
                ast::SelectItem::Wildcard(span) => *span,
                ast::SelectItem::Expr { expr, .. } => expr.span,
            };
            self.error(SqlError::new(
                ErrorKind::Invalid,
                span,
                "SELECT VALUE takes exactly one expression",
            ));
        }
        let mut items = Vec::with_capacity(select.items.len());
        for (position, item) in select.items.iter().enumerate() {
            items.push(match item {
                ast::SelectItem::Wildcard(_) if select.value => CItem::Expr {
                    expr: CExpr::Star,
                    path: Vec::new(),
                },
                ast::SelectItem::Wildcard(_) => CItem::Wildcard,
                ast::SelectItem::Expr { expr, alias } => {
                    let path = match alias {
                        Some(alias) => alias.path.clone(),
                        None => vec![default_name(expr, position)],
                    };
                    CItem::Expr {
                        expr: self.expr(expr),
                        path,
                    }
                }
            });
        }
        CSelect {
            value: select.value,
            items,
        }
    }

    fn expr(&mut self, expr: &Expr) -> CExpr {
        let boxed = |c: &mut Compiler, e: &Expr| Box::new(c.expr(e));
        match &expr.kind {
            ExprKind::Literal(lit) => CExpr::Const(literal(lit)),
            ExprKind::Star => CExpr::Star,
            ExprKind::Ident(name) => CExpr::Ident(name.clone()),
            ExprKind::Variable(name) => match self.vars.iter().rposition(|v| v == name) {
                Some(slot) => CExpr::Var(slot),
                None => {
                    self.error(
                        SqlError::new(
                            ErrorKind::Unknown,
                            expr.span,
                            format!("variable `@{name}` is not set"),
                        )
                        .with_hint("define it first with `SET @name = ...` before SELECT"),
                    );
                    CExpr::Const(Value::Undefined)
                }
            },
            ExprKind::Field { base, name } => CExpr::Field(boxed(self, base), name.clone()),
            ExprKind::Index { base, index } => CExpr::Index(boxed(self, base), boxed(self, index)),
            ExprKind::Call {
                name,
                name_span,
                args,
            } => self.call(name, *name_span, args),
            ExprKind::Cast {
                expr: inner,
                to,
                to_span,
            } => {
                let to = self.cast_type(to, *to_span);
                CExpr::Cast(boxed(self, inner), to)
            }
            ExprKind::Unary {
                op: ast::UnaryOp::Not,
                expr,
            } => CExpr::Not(boxed(self, expr)),
            ExprKind::Unary {
                op: ast::UnaryOp::Neg,
                expr,
            } => CExpr::Neg(boxed(self, expr)),
            ExprKind::Chain { op, operands } => {
                CExpr::Chain(*op, operands.iter().map(|e| self.expr(e)).collect())
            }
            ExprKind::Binary { op, left, right } => {
                CExpr::Binary(*op, boxed(self, left), boxed(self, right))
            }
            ExprKind::In {
                expr: inner,
                list,
                negated,
            } => {
                let list = match list {
                    ast::InList::Items(items) => {
                        CInList::Items(items.iter().map(|e| self.expr(e)).collect())
                    }
                    ast::InList::Expr(e) => CInList::Expr(self.expr(e)),
                };
                CExpr::In {
                    expr: boxed(self, inner),
                    list: Box::new(list),
                    negated: *negated,
                }
            }
            ExprKind::Case {
                operand,
                whens,
                else_,
            } => CExpr::Case {
                operand: boxed(self, operand),
                whens: whens
                    .iter()
                    .map(|(w, t)| (self.expr(w), self.expr(t)))
                    .collect(),
                else_: else_.as_ref().map(|e| boxed(self, e)),
            },
            ExprKind::Object(members) => {
                self.needs_2016(expr.span, "a JSON object literal");
                CExpr::Object(
                    members
                        .iter()
                        .map(|(k, v)| (k.clone(), self.expr(v)))
                        .collect(),
                )
            }
            ExprKind::Array(items) => {
                self.needs_2016(expr.span, "a JSON array literal");
                CExpr::Array(items.iter().map(|e| self.expr(e)).collect())
            }
            ExprKind::Subquery(query) => {
                self.needs_2016(expr.span, "a nested object query");
                CExpr::Subquery(Box::new(CSubquery {
                    select: self.select(&query.select),
                    from: self.expr(&query.from),
                    where_: query.where_.as_ref().map(|e| self.expr(e)),
                }))
            }
        }
    }

    fn call(&mut self, name: &str, span: Span, args: &[Expr]) -> CExpr {
        let compiled: Vec<CExpr> = args.iter().map(|e| self.expr(e)).collect();
        let Some(function) = functions::lookup(name) else {
            self.error(unknown_function(name, span));
            return CExpr::Const(Value::Undefined);
        };
        if function.since > self.version {
            self.needs_2016(span, &format!("function `{}`", function.name));
        }
        if !self.calls.contains(&function.name) {
            self.calls.push(function.name);
        }
        if args.len() < function.min_args || args.len() > function.max_args {
            self.error(SqlError::new(
                ErrorKind::Arity,
                span,
                format!(
                    "function `{}` takes {}, but {} given",
                    function.name,
                    arity_text(function),
                    args.len()
                ),
            ));
        }
        CExpr::Call(function, compiled)
    }

    fn cast_type(&mut self, name: &str, span: Span) -> CastType {
        let lower = name.to_ascii_lowercase();
        let (to, since) = match lower.as_str() {
            "string" | "nvarchar" | "text" | "ntext" | "varchar" => {
                (CastType::String, SqlVersion::V2015_10_08)
            }
            "int" | "integer" => (CastType::Int, SqlVersion::V2015_10_08),
            "double" => (CastType::Double, SqlVersion::V2015_10_08),
            "decimal" => (CastType::Decimal, SqlVersion::V2016_03_23),
            "bool" | "boolean" => (CastType::Bool, SqlVersion::V2016_03_23),
            _ => {
                self.error(
                    SqlError::new(
                        ErrorKind::Unknown,
                        span,
                        format!("unknown cast type `{name}`"),
                    )
                    .with_hint("cast to String, Int, Decimal, Double or Boolean"),
                );
                return CastType::String;
            }
        };
        if since > self.version {
            self.needs_2016(span, &format!("cast to `{name}`"));
        }
        to
    }
}

/// The output key of an item without `AS`: the last name of a field path
/// (`a.b.c` → `c`), the function's name for a call, `_N` (1-based) otherwise.
fn default_name(expr: &Expr, position: usize) -> String {
    match &expr.kind {
        ExprKind::Ident(name) | ExprKind::Field { name, .. } => name.clone(),
        ExprKind::Index { base, .. } => default_name(base, position),
        ExprKind::Call { name, .. } => name.clone(),
        ExprKind::Variable(name) => name.clone(),
        _ => format!("_{}", position + 1),
    }
}

fn literal(lit: &ast::Literal) -> Value {
    match lit {
        ast::Literal::Number(text) => parse_number(text).unwrap_or_default(),
        ast::Literal::String(s) => Value::String(s.clone()),
        ast::Literal::Bool(b) => Value::Bool(*b),
        ast::Literal::Null => Value::Null,
    }
}

fn arity_text(f: &Function) -> String {
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    match (f.min_args, f.max_args) {
        (a, b) if a == b => format!("{a} {}", plural(a)),
        (a, usize::MAX) => format!("at least {a} {}", plural(a)),
        (a, b) => format!("{a} to {b} arguments"),
    }
}

fn unknown_function(name: &str, span: Span) -> SqlError {
    let lower = name.to_ascii_lowercase();
    if let Some(service) = functions::AWS_SERVICE_FUNCTIONS
        .iter()
        .find(|(n, _)| *n == lower)
    {
        return SqlError::new(
            ErrorKind::Unsupported,
            span,
            format!(
                "function `{name}` needs {}, which topicrule cannot call",
                service.1
            ),
        )
        .with_hint("compute the value before publishing, or drop the call");
    }
    let error = SqlError::new(
        ErrorKind::Unknown,
        span,
        format!("unknown function `{name}`"),
    );
    match functions::closest(&lower) {
        Some(suggestion) => error.with_hint(format!("did you mean `{suggestion}`?")),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_the_functions_it_calls_once_each() {
        let sql = "SELECT upper(get_thing_shadow(topic(2), 'r').s) AS a, upper(b) AS c, \
                   'get_thing_shadow' AS d FROM 'x/+' WHERE topic(2) = 'y'";
        let mut calls = compile(sql, SqlVersion::V2016_03_23).unwrap().calls;
        calls.sort_unstable();
        assert_eq!(calls, ["get_thing_shadow", "topic", "upper"]);
    }
}
