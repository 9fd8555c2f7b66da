//! Evaluation: a compiled [`Query`] applied to one message.
//!
//! A pure function: no I/O, no async, nothing shared between calls. Undefined is a value of
//! its own that flows through operators and functions as the reference says, and is dropped
//! from objects at the end.

use std::borrow::Cow;

use super::ast::BinaryOp;
use super::compile::{CExpr, CInList, CItem, CSelect, CastType, Query};
use super::value::{self, from_f64, num_is_zero, Conv, Num, Object, Payload, Value};
use super::SqlVersion;

/// The MQTT 5 properties of an incoming PUBLISH, as `get_mqtt_property` and
/// `get_user_properties` read them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MqttProperties {
    pub content_type: Option<String>,
    pub payload_format_indicator: Option<u8>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub message_expiry_interval: Option<u32>,
    pub user_properties: Vec<(String, String)>,
}

/// One incoming message and what the context functions may know of it.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The topic as `topic()` sees it: for Basic Ingest, without `$aws/rules/<rule>/`.
    pub topic: &'a str,
    /// The payload, decoded (JSON, or Binary) when an expression first reads it.
    pub payload: &'a Payload,
    /// The publisher's client id, when the broker tells (`clientid()`).
    pub clientid: Option<&'a str>,
    /// When the engine received the message, in milliseconds since the epoch (`timestamp()`).
    pub timestamp_ms: i64,
    pub properties: Option<&'a MqttProperties>,
    /// The rule's name, for `traceid()`-like needs and error documents.
    pub rule_name: &'a str,
    /// The device shadows `get_thing_shadow()` reads; None when none are served.
    pub shadows: Option<&'a dyn ShadowReader>,
}

/// Where `get_thing_shadow()` reads a shadow: its document as `/get/accepted` gives it
/// (state with its delta, metadata, version, timestamp), or None when it does not exist.
pub trait ShadowReader: Sync {
    fn read(&self, thing: &str, shadow: Option<&str>) -> Option<Vec<u8>>;
}

impl std::fmt::Debug for dyn ShadowReader + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShadowReader")
    }
}

/// The result of a rule that fired: the output message (the payload itself for `SELECT *`
/// on a JSON object: nothing copied), and the SET variables that the action templates may
/// read.
#[derive(Clone, Debug)]
pub struct Evaluation<'p> {
    pub output: Cow<'p, Value>,
    pub vars: Vec<Value>,
}

/// What expressions are evaluated against.
pub struct Env<'a> {
    pub msg: &'a Message<'a>,
    pub version: SqlVersion,
    pub vars: &'a [Value],
}

impl Query {
    /// `SELECT *` alone, with no WHERE and no SET: the output is the payload itself when it
    /// is a JSON object (or bytes), whatever the message.
    pub fn is_select_star(&self) -> bool {
        !self.select.value
            && matches!(self.select.items.as_slice(), [CItem::Wildcard])
            && self.where_.is_none()
            && self.set.is_empty()
    }

    /// Runs the statement on a message whose topic already matched FROM. `None` when WHERE
    /// is not `true`.
    pub fn evaluate<'p>(&self, msg: &Message<'p>) -> Option<Evaluation<'p>> {
        let mut vars = Vec::with_capacity(self.set.len());
        for (_, expr) in &self.set {
            let value = {
                let env = Env {
                    msg,
                    version: self.version,
                    vars: &vars,
                };
                eval(expr, &env, msg.payload.value()).into_owned()
            };
            vars.push(value);
        }
        let env = Env {
            msg,
            version: self.version,
            vars: &vars,
        };
        if let Some(cond) = &self.where_ {
            if !is_true(&eval(cond, &env, msg.payload.value())) {
                return None;
            }
        }
        let output = select(&self.select, &env, msg.payload.value());
        Some(Evaluation { output, vars })
    }
}

/// Whether a WHERE condition holds: only Boolean `true` (or the string "true") does.
fn is_true(value: &Value) -> bool {
    value.to_bool() == Conv::Ok(true)
}

/// Builds the output of a SELECT list for one row; `SELECT *` alone on an object or on
/// bytes is the row itself.
pub fn select<'v>(select: &CSelect, env: &Env, row: &'v Value) -> Cow<'v, Value> {
    if select.value {
        return Cow::Owned(match select.items.first() {
            Some(CItem::Expr { expr, .. }) => eval(expr, env, row).into_owned(),
            _ => Value::Undefined,
        });
    }
    if let ([CItem::Wildcard], Value::Binary(_) | Value::Object(_)) = (select.items.as_slice(), row)
    {
        return Cow::Borrowed(row);
    }
    let mut out = Object::default();
    for item in &select.items {
        match item {
            CItem::Wildcard => {
                if let Value::Object(members) = row {
                    out.extend(members.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            CItem::Expr { expr, path } => {
                let value = eval(expr, env, row).into_owned();
                insert_path(&mut out, path, value);
            }
        }
    }
    Cow::Owned(Value::Object(out))
}

/// Puts `value` under `a.b.c`, creating or merging the objects on the way.
fn insert_path(out: &mut Object, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut target = out;
    for key in parents {
        let slot = target
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Object::default()));
        if !matches!(slot, Value::Object(_)) {
            *slot = Value::Object(Object::default());
        }
        let Value::Object(next) = slot else {
            unreachable!()
        };
        target = next;
    }
    target.insert(last.clone(), value);
}

/// Evaluates an expression; `row` is what names and `*` refer to (the payload, or the
/// element of a nested query).
pub fn eval<'v>(expr: &'v CExpr, env: &'v Env, row: &'v Value) -> Cow<'v, Value> {
    match expr {
        CExpr::Const(v) => Cow::Borrowed(v),
        CExpr::Star => Cow::Borrowed(row),
        CExpr::Ident(name) => row
            .field(name)
            .map_or(Cow::Owned(Value::Undefined), Cow::Borrowed),
        CExpr::Var(slot) => env
            .vars
            .get(*slot)
            .map_or(Cow::Owned(Value::Undefined), Cow::Borrowed),
        CExpr::Field(base, name) => match eval(base, env, row) {
            Cow::Borrowed(v) => v
                .field(name)
                .map_or(Cow::Owned(Value::Undefined), Cow::Borrowed),
            Cow::Owned(Value::Object(mut map)) => {
                Cow::Owned(map.swap_remove(name.as_str()).unwrap_or_default())
            }
            Cow::Owned(_) => Cow::Owned(Value::Undefined),
        },
        CExpr::Index(base, index) => {
            let index = eval(index, env, row).to_int().ok();
            let base = eval(base, env, row);
            let at = |items: &Vec<Value>| {
                index
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < items.len())
            };
            match base {
                Cow::Borrowed(Value::Array(items)) => {
                    at(items).map_or(Cow::Owned(Value::Undefined), |i| Cow::Borrowed(&items[i]))
                }
                Cow::Owned(Value::Array(mut items)) => {
                    Cow::Owned(at(&items).map_or(Value::Undefined, |i| items.swap_remove(i)))
                }
                _ => Cow::Owned(Value::Undefined),
            }
        }
        CExpr::Call(function, args) => {
            let args: Vec<Value> = args
                .iter()
                .map(|a| eval(a, env, row).into_owned())
                .collect();
            Cow::Owned((function.call)(env, args))
        }
        CExpr::Cast(inner, to) => Cow::Owned(cast(&eval(inner, env, row), *to, env.version)),
        CExpr::Not(inner) => Cow::Owned(match eval(inner, env, row).to_bool() {
            Conv::Ok(b) => Value::Bool(!b),
            _ => Value::Undefined,
        }),
        CExpr::Neg(inner) => Cow::Owned(negate(&eval(inner, env, row))),
        CExpr::Binary(op, left, right) => Cow::Owned(binary(*op, left, right, env, row)),
        CExpr::Chain(op, operands) => Cow::Owned(chain(*op, operands, env, row)),
        CExpr::In {
            expr,
            list,
            negated,
        } => Cow::Owned(in_list(expr, list, *negated, env, row)),
        CExpr::Case {
            operand,
            whens,
            else_,
        } => {
            let operand = eval(operand, env, row);
            if operand.is_undefined() {
                return Cow::Owned(Value::Undefined);
            }
            for (when, then) in whens {
                if operand.sql_eq(&eval(when, env, row)) == Some(true) {
                    return eval(then, env, row);
                }
            }
            match else_ {
                Some(e) => eval(e, env, row),
                None => Cow::Owned(Value::Undefined),
            }
        }
        CExpr::Object(members) => Cow::Owned(Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), eval(v, env, row).into_owned()))
                .collect(),
        )),
        CExpr::Array(items) => Cow::Owned(Value::Array(
            items
                .iter()
                .map(|v| eval(v, env, row).into_owned())
                .collect(),
        )),
        CExpr::Subquery(query) => {
            let from = eval(&query.from, env, row);
            let rows: &[Value] = match from.as_ref() {
                // `FROM *` iterates one element, the current row, whatever it holds: AWS
                // gives an array of one result (observed, aws-iot-builder-tools/
                // validation-tool-for-aws-iot-rules, include-topic-and-transform.json).
                _ if matches!(query.from, CExpr::Star) => std::slice::from_ref(row),
                Value::Array(items) => items,
                Value::Undefined => return Cow::Owned(Value::Undefined),
                // Over one object the query yields one result, not an array (AWS's
                // `transform` example 3).
                single => {
                    let passes = query
                        .where_
                        .as_ref()
                        .is_none_or(|c| is_true(&eval(c, env, single)));
                    let out = if passes {
                        self::select(&query.select, env, single).into_owned()
                    } else {
                        Value::Undefined
                    };
                    return Cow::Owned(out);
                }
            };
            let mut out = Vec::new();
            for element in rows {
                if let Some(cond) = &query.where_ {
                    if !is_true(&eval(cond, env, element)) {
                        continue;
                    }
                }
                out.push(self::select(&query.select, env, element).into_owned());
            }
            Cow::Owned(Value::Array(out))
        }
    }
}

fn in_list(expr: &CExpr, list: &CInList, negated: bool, env: &Env, row: &Value) -> Value {
    let needle = eval(expr, env, row);
    if needle.is_undefined() {
        return Value::Undefined;
    }
    let found = match list {
        CInList::Items(items) => items
            .iter()
            .any(|e| needle.sql_eq(&eval(e, env, row)) == Some(true)),
        CInList::Expr(e) => match eval(e, env, row).as_ref() {
            Value::Array(items) => items.iter().any(|v| needle.sql_eq(v) == Some(true)),
            _ => return Value::Undefined,
        },
    };
    Value::Bool(found != negated)
}

fn binary(op: BinaryOp, left: &CExpr, right: &CExpr, env: &Env, row: &Value) -> Value {
    match op {
        BinaryOp::And | BinaryOp::Or => return logical(op, left, right, env, row),
        _ => {}
    }
    let a = eval(left, env, row);
    let b = eval(right, env, row);
    match op {
        BinaryOp::Eq => a.sql_eq(&b).map_or(Value::Undefined, Value::Bool),
        BinaryOp::NotEq => a.sql_eq(&b).map_or(Value::Undefined, |eq| Value::Bool(!eq)),
        BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => compare(op, &a, &b),
        BinaryOp::Add => add(&a, &b, env.version),
        _ => arithmetic(op, &a, &b),
    }
}

/// AND and OR on Booleans (or "true"/"false" strings). Anything else is Undefined, except
/// where the other side decides alone: `false AND x` is false, `true OR x` is true.
fn logical(op: BinaryOp, left: &CExpr, right: &CExpr, env: &Env, row: &Value) -> Value {
    let decisive = op == BinaryOp::Or;
    let a = eval(left, env, row).to_bool().ok();
    if a == Some(decisive) {
        return Value::Bool(decisive);
    }
    let b = eval(right, env, row).to_bool().ok();
    match (a, b) {
        (_, Some(v)) if v == decisive => Value::Bool(decisive),
        (Some(_), Some(_)) => Value::Bool(!decisive),
        _ => Value::Undefined,
    }
}

/// AND or OR over many operands, with the same logic as the binary form folded left to
/// right: the deciding value (false for AND, true for OR) wins; else Undefined if any
/// operand is not a Boolean; else the other value.
fn chain(op: BinaryOp, operands: &[CExpr], env: &Env, row: &Value) -> Value {
    let decisive = op == BinaryOp::Or;
    let mut undefined = false;
    for operand in operands {
        match eval(operand, env, row).to_bool().ok() {
            Some(b) if b == decisive => return Value::Bool(decisive),
            Some(_) => {}
            None => undefined = true,
        }
    }
    if undefined {
        Value::Undefined
    } else {
        Value::Bool(!decisive)
    }
}

/// `<`, `<=`, `>`, `>=`: both sides as numbers (numeric strings count), else Undefined.
fn compare(op: BinaryOp, a: &Value, b: &Value) -> Value {
    let (Conv::Ok(x), Conv::Ok(y)) = (a.to_num(), b.to_num()) else {
        return Value::Undefined;
    };
    let ord = x.compare(&y);
    Value::Bool(match op {
        BinaryOp::Lt => ord.is_lt(),
        BinaryOp::LtEq => ord.is_le(),
        BinaryOp::Gt => ord.is_gt(),
        _ => ord.is_ge(),
    })
}

/// `+`: concatenation when either side is a String, addition of numbers otherwise.
fn add(a: &Value, b: &Value, version: SqlVersion) -> Value {
    if matches!(a, Value::String(_)) || matches!(b, Value::String(_)) {
        return match (a.to_text(version), b.to_text(version)) {
            (Some(x), Some(y)) => Value::String(format!("{x}{y}")),
            _ => Value::Undefined,
        };
    }
    arithmetic(BinaryOp::Add, a, b)
}

/// The numeric operand of `-`, `*`, `/`, `%`: Int stays Int; Decimals and numeric strings
/// are Decimals; anything else makes the result Undefined.
fn operand(v: &Value) -> Option<Num> {
    match v {
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Decimal(_) | Value::String(_) => v.to_num().ok(),
        _ => None,
    }
}

fn arithmetic(op: BinaryOp, a: &Value, b: &Value) -> Value {
    let (Some(x), Some(y)) = (operand(a), operand(b)) else {
        return Value::Undefined;
    };
    if matches!(op, BinaryOp::Div | BinaryOp::Mod) && num_is_zero(&y) {
        return Value::Undefined;
    }
    if let (Num::Int(i), Num::Int(j)) = (&x, &y) {
        let exact = match op {
            BinaryOp::Add => i.checked_add(*j),
            BinaryOp::Sub => i.checked_sub(*j),
            BinaryOp::Mul => i.checked_mul(*j),
            BinaryOp::Div => i.checked_div(*j),
            _ => i.checked_rem(*j),
        };
        // Ints have at most 34 digits, so only a product can overflow 128 bits; a result
        // beyond 34 digits is a Decimal.
        if let Some(result) = exact {
            return value::int_value(result);
        }
    }
    let (x, y) = (x.to_decimal(), y.to_decimal());
    let result = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        _ => x % y,
    };
    value::decimal_value(result)
}

fn negate(v: &Value) -> Value {
    match operand(v) {
        // Ints are within -INT_MAX..=INT_MAX, so the negation is too.
        Some(Num::Int(i)) => Value::Int(-i),
        Some(Num::Dec(d)) => Value::Decimal(-d),
        None => Value::Undefined,
    }
}

/// `cast(v AS type)`. Unlike implicit conversion it turns numbers into Booleans (0 is
/// false) and Booleans into numbers (1 and 0); Null becomes Undefined.
pub fn cast(v: &Value, to: CastType, version: SqlVersion) -> Value {
    if matches!(v, Value::Null | Value::Undefined) {
        return Value::Undefined;
    }
    match to {
        CastType::String => v
            .to_text(version)
            .map_or(Value::Undefined, |s| Value::String(s.into_owned())),
        CastType::Int => match v {
            Value::Bool(b) => Value::Int(i128::from(*b)),
            _ => match v.to_num() {
                Conv::Ok(Num::Int(i)) => Value::Int(i),
                Conv::Ok(Num::Dec(d)) => value::decimal_to_int(&d).map_or_else(
                    || Value::Decimal(d.with_scale_round(0, bigdecimal::RoundingMode::Down)),
                    Value::Int,
                ),
                _ => Value::Undefined,
            },
        },
        CastType::Decimal => match v {
            Value::Bool(b) => Value::Int(i128::from(*b)),
            _ => v.to_num().ok().map_or(Value::Undefined, |n| match n {
                Num::Int(i) => Value::Int(i),
                Num::Dec(d) => Value::Decimal(d),
            }),
        },
        CastType::Double => match v {
            Value::Bool(b) => from_f64(if *b { 1.0 } else { 0.0 }),
            _ => v
                .to_num()
                .ok()
                .map_or(Value::Undefined, |n| from_f64(n.to_f64())),
        },
        CastType::Bool => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(_) | Value::Decimal(_) => v
                .to_num()
                .ok()
                .map_or(Value::Undefined, |n| Value::Bool(!num_is_zero(&n))),
            _ => v.to_bool().ok().map_or(Value::Undefined, Value::Bool),
        },
    }
}
