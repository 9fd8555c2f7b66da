//! The syntax tree of an AWS IoT SQL statement, as written.
//!
//! Every node carries the byte span of its source text so that later passes can point at
//! it; spans take no part in `==`, so two statements that say the same thing are equal
//! wherever they were written. `Display` prints SQL that parses back to an equal tree.

use std::fmt;

/// A byte range in the statement's text.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span that holds both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

/// A whole statement: `SET @a = 1 SELECT ... FROM '...' WHERE ...`.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// `SET @v = expr, @w = expr`, evaluated in order before everything else.
    pub set: Vec<SetItem>,
    pub select: Select,
    /// `FROM 'topic/filter'`; optional for rules reached only through Basic Ingest.
    pub from: Option<TopicFilter>,
    /// `WHERE cond`; the rule fires only when it is `true`.
    pub where_: Option<Expr>,
}

/// `@name = expr` in a SET clause.
#[derive(Clone, Debug, PartialEq)]
pub struct SetItem {
    pub name: String,
    pub name_span: Span,
    pub expr: Expr,
}

/// The FROM topic filter, without its quotes.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicFilter {
    pub filter: String,
    /// The span of the text between the quotes.
    pub span: Span,
}

/// `SELECT [VALUE] items`.
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    /// `SELECT VALUE expr`: the output is the bare value, not an object.
    pub value: bool,
    pub items: Vec<SelectItem>,
}

/// One item of a SELECT list.
#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*`: every member of the payload (or the payload's bytes when it is binary).
    Wildcard(Span),
    /// `expr [AS alias]`; a dotted alias `a.b` builds nested objects.
    Expr { expr: Expr, alias: Option<Alias> },
}

/// `AS a.b.c`: the path of the output key.
#[derive(Clone, Debug, PartialEq)]
pub struct Alias {
    pub path: Vec<String>,
    pub span: Span,
}

/// A nested object query: `(SELECT [VALUE] items FROM expr [WHERE cond])`.
#[derive(Clone, Debug, PartialEq)]
pub struct Subquery {
    pub select: Select,
    pub from: Expr,
    pub where_: Option<Expr>,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// The kinds of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `42`, `-1.5E3`, `'text'`, `"text"`, `true`, `NULL`.
    Literal(Literal),
    /// `*`: the whole current row (the payload, or the element in a nested query).
    Star,
    /// `temperature`: a member of the current row.
    Ident(String),
    /// `@limit`: a SET variable.
    Variable(String),
    /// `state.reported`: a member of an object.
    Field { base: Box<Expr>, name: String },
    /// `readings[0]`: an element of an array.
    Index { base: Box<Expr>, index: Box<Expr> },
    /// `upper(name)`: a function call; the name is kept as written.
    Call {
        name: String,
        name_span: Span,
        args: Vec<Expr>,
    },
    /// `cast(value AS Int)`.
    Cast {
        expr: Box<Expr>,
        to: String,
        to_span: Span,
    },
    /// `NOT a`, `-a`.
    Unary { op: UnaryOp, expr: Box<Expr> },
    /// `a + b`, `a AND b`, `a <> b`, ...
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `a OR b OR c`, `a AND b AND c`: a chain of three or more operands of one logical
    /// operator, kept flat so that a long allowlist nests no deeper than its operands.
    Chain { op: BinaryOp, operands: Vec<Expr> },
    /// `a IN (1, 2)`, `a IN arr`, `a NOT IN [...]`.
    In {
        expr: Box<Expr>,
        list: InList,
        negated: bool,
    },
    /// `CASE v WHEN 1 THEN 'one' ELSE 'other' END`.
    Case {
        operand: Box<Expr>,
        whens: Vec<(Expr, Expr)>,
        else_: Option<Box<Expr>>,
    },
    /// `{'a': 1, "b": x}`.
    Object(Vec<(String, Expr)>),
    /// `[1, x, 'a']`.
    Array(Vec<Expr>),
    /// `(SELECT VALUE n FROM e WHERE n > 1)`.
    Subquery(Box<Subquery>),
}

/// The right side of IN.
#[derive(Clone, Debug, PartialEq)]
pub enum InList {
    /// `(1, 2, 3)`.
    Items(Vec<Expr>),
    /// `arr` or `[1, 2]`: any expression that evaluates to an array.
    Expr(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// The number as written; kept as text so that no digit is lost.
    Number(String),
    String(String),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }
}

fn quote(f: &mut fmt::Formatter, text: &str) -> fmt::Result {
    write!(f, "'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn comma_list<T: fmt::Display>(f: &mut fmt::Formatter, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if !self.set.is_empty() {
            f.write_str("SET ")?;
            comma_list(f, &self.set)?;
            f.write_str(" ")?;
        }
        write!(f, "{}", self.select)?;
        if let Some(from) = &self.from {
            f.write_str(" FROM ")?;
            quote(f, &from.filter)?;
        }
        if let Some(cond) = &self.where_ {
            write!(f, " WHERE {cond}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SetItem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "@{} = {}", self.name, self.expr)
    }
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.value {
            "SELECT VALUE "
        } else {
            "SELECT "
        })?;
        comma_list(f, &self.items)
    }
}

impl fmt::Display for SelectItem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SelectItem::Wildcard(_) => f.write_str("*"),
            SelectItem::Expr { expr, alias: None } => write!(f, "{expr}"),
            SelectItem::Expr {
                expr,
                alias: Some(alias),
            } => {
                write!(f, "{expr} AS {}", alias.path.join("."))
            }
        }
    }
}

impl fmt::Display for Expr {
    /// Prints fully parenthesised operations, so precedence never changes on a round trip.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(Literal::Number(n)) => f.write_str(n),
            ExprKind::Literal(Literal::String(s)) => quote(f, s),
            ExprKind::Literal(Literal::Bool(b)) => write!(f, "{b}"),
            ExprKind::Literal(Literal::Null) => f.write_str("NULL"),
            ExprKind::Star => f.write_str("*"),
            ExprKind::Ident(name) => f.write_str(name),
            ExprKind::Variable(name) => write!(f, "@{name}"),
            ExprKind::Field { base, name } => write!(f, "{base}.{name}"),
            ExprKind::Index { base, index } => write!(f, "{base}[{index}]"),
            ExprKind::Call { name, args, .. } => {
                write!(f, "{name}(")?;
                comma_list(f, args)?;
                f.write_str(")")
            }
            ExprKind::Cast { expr, to, .. } => write!(f, "cast({expr} AS {to})"),
            ExprKind::Unary {
                op: UnaryOp::Not,
                expr,
            } => write!(f, "(NOT {expr})"),
            ExprKind::Unary {
                op: UnaryOp::Neg,
                expr,
            } => write!(f, "(- {expr})"),
            ExprKind::Chain { op, operands } => {
                f.write_str("(")?;
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        write!(f, " {} ", op.as_str())?;
                    }
                    write!(f, "{operand}")?;
                }
                f.write_str(")")
            }
            ExprKind::Binary { op, left, right } => {
                write!(f, "({left} {} {right})", op.as_str())
            }
            ExprKind::In {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {}IN ", if *negated { "NOT " } else { "" })?;
                match list {
                    InList::Items(items) => {
                        f.write_str("(")?;
                        comma_list(f, items)?;
                        f.write_str("))")
                    }
                    InList::Expr(e) => write!(f, "{e})"),
                }
            }
            ExprKind::Case {
                operand,
                whens,
                else_,
            } => {
                write!(f, "CASE {operand}")?;
                for (when, then) in whens {
                    write!(f, " WHEN {when} THEN {then}")?;
                }
                if let Some(e) = else_ {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            ExprKind::Object(members) => {
                f.write_str("{")?;
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    quote(f, key)?;
                    write!(f, ": {value}")?;
                }
                f.write_str("}")
            }
            ExprKind::Array(items) => {
                f.write_str("[")?;
                comma_list(f, items)?;
                f.write_str("]")
            }
            ExprKind::Subquery(q) => {
                write!(f, "({} FROM {}", q.select, q.from)?;
                if let Some(cond) = &q.where_ {
                    write!(f, " WHERE {cond}")?;
                }
                f.write_str(")")
            }
        }
    }
}
