//! The built-in functions of AWS IoT SQL.
//!
//! Each function takes its evaluated arguments and returns a value; invalid arguments
//! (a wrong type, a value out of range) give Undefined, as the reference says, except
//! `decode`, which gives Null for undecodable input. No function panics, whatever it is
//! given. The table [`FUNCTIONS`] is the only registry: `compile` resolves names against it
//! once.
//!
//! - `math`: numbers (exact Decimal arithmetic, or doubles where the reference says so);
//! - `string`: strings, with `pattern` for the regular expressions;
//! - `encoding`: `encode`, `decode` and the hashes;
//! - `misc`: collections, null tests and what the message or the rule knows;
//! - `time`: `parse_time` and `time_to_epoch`, with `time_parse` for the latter and
//!   `zone` for the time zones of both.

mod encoding;
mod math;
mod misc;
mod pattern;
mod string;
mod time;
mod time_parse;
mod zone;

use super::eval::Env;
use super::value::Value;
use super::SqlVersion;

/// A built-in function.
pub struct Function {
    /// The name in lower case; calls are matched case-insensitively.
    pub name: &'static str,
    pub min_args: usize,
    /// `usize::MAX` for functions that take any number of arguments.
    pub max_args: usize,
    /// The first SQL version that has the function.
    pub since: SqlVersion,
    pub call: fn(&Env, Vec<Value>) -> Value,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}()", self.name)
    }
}

/// Functions that call another AWS service, with the service named in the error.
pub const AWS_SERVICE_FUNCTIONS: &[(&str, &str)] = &[
    ("aws_lambda", "AWS Lambda"),
    ("get_dynamodb", "Amazon DynamoDB"),
    ("get_secret", "AWS Secrets Manager"),
    ("get_registry_data", "the AWS IoT thing registry"),
    ("machinelearning_predict", "Amazon Machine Learning"),
];

const V15: SqlVersion = SqlVersion::V2015_10_08;
const V16: SqlVersion = SqlVersion::V2016_03_23;
const ANY: usize = usize::MAX;

const fn f(
    name: &'static str,
    min_args: usize,
    max_args: usize,
    since: SqlVersion,
    call: fn(&Env, Vec<Value>) -> Value,
) -> Function {
    Function {
        name,
        min_args,
        max_args,
        since,
        call,
    }
}

/// Every function, sorted by name (a test checks the order).
pub static FUNCTIONS: &[Function] = &[
    f("abs", 1, 1, V15, math::abs),
    f("accountid", 0, 0, V15, misc::accountid),
    f("acos", 1, 1, V15, math::acos),
    f("asin", 1, 1, V15, math::asin),
    f("atan", 1, 1, V15, math::atan),
    f("atan2", 2, 2, V15, math::atan2),
    f("bitand", 2, 2, V15, math::bitand),
    f("bitnot", 1, 1, V15, math::bitnot),
    f("bitor", 2, 2, V15, math::bitor),
    f("bitxor", 2, 2, V15, math::bitxor),
    f("ceil", 1, 1, V15, math::ceil),
    f("chr", 1, 1, V15, string::chr),
    f("clientid", 0, 0, V15, misc::clientid),
    f("concat", 0, ANY, V15, string::concat),
    f("cos", 1, 1, V15, math::cos),
    f("cosh", 1, 1, V15, math::cosh),
    f("crc32", 1, 1, V15, encoding::crc32),
    f("decode", 2, 2, V16, encoding::decode),
    f("encode", 2, 2, V16, encoding::encode),
    f("endswith", 2, 2, V15, string::endswith),
    f("exp", 1, 1, V15, math::exp),
    f("floor", 1, 1, V15, math::floor),
    f("get", 2, 2, V15, misc::get),
    f("get_mqtt_property", 1, 1, V16, misc::get_mqtt_property),
    f("get_or_default", 1, 2, V16, misc::get_or_default),
    f("get_thing_shadow", 2, 3, V15, misc::get_thing_shadow),
    f("get_user_properties", 0, 1, V16, misc::get_user_properties),
    f("indexof", 2, 2, V16, string::indexof),
    f("isnull", 1, 1, V15, misc::is_null),
    f("isundefined", 1, 1, V16, misc::is_undefined),
    f("length", 1, 1, V16, string::length),
    f("ln", 1, 1, V15, math::ln),
    f("log", 1, 1, V15, math::log),
    f("lower", 1, 1, V15, string::lower),
    f("lpad", 2, 2, V15, string::lpad),
    f("ltrim", 1, 1, V15, string::ltrim),
    f("md2", 1, 1, V15, encoding::md2),
    f("md5", 1, 1, V15, encoding::md5),
    f("mod", 2, 2, V15, math::modulo),
    f("nanvl", 2, 2, V15, misc::nanvl),
    f("newuuid", 0, 0, V15, misc::newuuid),
    f("numbytes", 1, 1, V16, string::numbytes),
    f("parse_time", 2, 3, V16, time::parse_time),
    f("power", 2, 2, V15, math::power),
    f("principal", 0, 0, V15, misc::principal),
    f("rand", 0, 0, V15, misc::rand),
    f("regexp_matches", 2, 2, V15, pattern::regexp_matches),
    f("regexp_replace", 3, 3, V15, pattern::regexp_replace),
    f("regexp_substr", 2, 2, V15, pattern::regexp_substr),
    f("remainder", 2, 2, V15, math::modulo),
    f("replace", 3, 3, V15, string::replace),
    f("round", 1, 1, V15, math::round),
    f("rpad", 2, 2, V15, string::rpad),
    f("rtrim", 1, 1, V15, string::rtrim),
    f("sha1", 1, 1, V15, encoding::sha1),
    f("sha224", 1, 1, V15, encoding::sha224),
    f("sha256", 1, 1, V15, encoding::sha256),
    f("sha384", 1, 1, V15, encoding::sha384),
    f("sha512", 1, 1, V15, encoding::sha512),
    f("sign", 1, 1, V15, math::sign),
    f("sin", 1, 1, V15, math::sin),
    f("sinh", 1, 1, V15, math::sinh),
    f("sourceip", 0, 0, V16, misc::sourceip),
    f("sql_version", 0, 0, V15, misc::sql_version),
    f("sqrt", 1, 1, V15, math::sqrt),
    f("startswith", 2, 2, V15, string::startswith),
    f("substring", 2, 3, V15, string::substring),
    f("tan", 1, 1, V15, math::tan),
    f("tanh", 1, 1, V15, math::tanh),
    f("time_to_epoch", 2, 2, V16, time::time_to_epoch),
    f("timestamp", 0, 0, V15, misc::timestamp),
    f("topic", 0, 1, V15, misc::topic),
    f("traceid", 0, 0, V15, misc::traceid),
    f("transform", 3, 3, V16, misc::transform),
    f("trim", 1, 1, V15, string::trim),
    f("trunc", 2, 2, V15, math::trunc),
    f("upper", 1, 1, V15, string::upper),
];

/// Finds a function by name, in any case.
pub fn lookup(name: &str) -> Option<&'static Function> {
    let lower = name.to_ascii_lowercase();
    FUNCTIONS
        .binary_search_by(|f| f.name.cmp(lower.as_str()))
        .ok()
        .map(|i| &FUNCTIONS[i])
}

/// The known function closest to a misspelt name, if one is close enough to suggest.
pub fn closest(name: &str) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .map(|f| (strsim::levenshtein(name, f.name), f.name))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// The arguments as a fixed-size array; the compiler has checked the count, so a mismatch
/// (a direct call in a test) gives None rather than a panic.
fn args_n<const N: usize>(args: Vec<Value>) -> Option<[Value; N]> {
    args.try_into().ok()
}

/// The standard To String conversion of an argument (Null, Undefined and Binary give None).
fn text(env: &Env, v: &Value) -> Option<String> {
    v.to_text(env.version).map(|s| s.into_owned())
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

#[cfg(test)]
mod test_support {
    use super::super::eval::{Env, Message, MqttProperties};
    use super::super::value::{Payload, Value};
    use super::super::SqlVersion;

    /// The message the unit tests run against.
    pub struct Ctx {
        pub payload: Payload,
        pub clientid: Option<&'static str>,
        pub properties: Option<MqttProperties>,
        pub version: SqlVersion,
    }

    impl Default for Ctx {
        fn default() -> Ctx {
            Ctx {
                payload: Payload::new(bytes::Bytes::from_static(b"{}")),
                clientid: Some("dev-1"),
                properties: None,
                version: SqlVersion::V2016_03_23,
            }
        }
    }

    impl Ctx {
        pub fn call(&self, name: &str, args: Vec<Value>) -> Value {
            let msg = Message {
                topic: "a/b/c",
                payload: &self.payload,
                clientid: self.clientid,
                timestamp_ms: 1481825251155,
                properties: self.properties.as_ref(),
                rule_name: "r",
                shadows: None,
            };
            let env = Env {
                msg: &msg,
                version: self.version,
                vars: &[],
            };
            let function = super::lookup(name).expect(name);
            (function.call)(&env, args)
        }
    }

    /// Calls `name` with the default message.
    pub fn call(name: &str, args: Vec<Value>) -> Value {
        Ctx::default().call(name, args)
    }

    /// The JSON text of a value (2016-03-23), `undefined` for Undefined.
    pub fn show(v: &Value) -> String {
        match v {
            Value::Undefined => "undefined".into(),
            _ => String::from_utf8(v.to_json(SqlVersion::V2016_03_23)).unwrap(),
        }
    }

    /// A value from JSON text, `undefined` for Undefined.
    pub fn val(text: &str) -> Value {
        match text {
            "undefined" => Value::Undefined,
            _ => serde_json::from_str(text).expect(text),
        }
    }

    /// Runs `(function, [args as JSON], expected JSON)` rows.
    pub fn check(rows: &[(&str, &[&str], &str)]) {
        for (name, args, expected) in rows {
            let args: Vec<Value> = args.iter().map(|a| val(a)).collect();
            let got = show(&call(name, args.clone()));
            assert_eq!(&got, expected, "{name}({args:?})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn table_is_sorted_lowercase_and_unique() {
        for pair in FUNCTIONS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{:?}", pair[1]);
        }
        for f in FUNCTIONS {
            assert_eq!(f.name, f.name.to_ascii_lowercase());
            assert!(lookup(f.name).is_some());
        }
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup("isNull").unwrap().name, "isnull");
        assert_eq!(lookup("Round").unwrap().name, "round");
        assert!(lookup("nope").is_none());
        assert_eq!(closest("lenght"), Some("length"));
    }

    /// Every function, with every kind of argument, at every arity it accepts: no panic.
    #[test]
    fn no_function_panics() {
        let samples = [
            "undefined",
            "null",
            "true",
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "9999999999999999999999999999999999",
            "-9999999999999999999999999999999999",
            "18446744073709551616",
            "1e400",
            "-2.411E247",
            "1E-400",
            "1E+400",
            "0.5",
            "\"\"",
            "\"x\"",
            "\"(\"",
            "\"$\"",
            "\"\\\\\"",
            "\"2\"",
            "\"base64\"",
            "\"enrichArray\"",
            "\"yyyy'\"",
            "[]",
            "[1,\"a\"]",
            "{}",
            "{\"a\":1}",
        ];
        let mut values: Vec<Value> = samples.iter().map(|s| val(s)).collect();
        values.push(Value::Binary(vec![0xff, 0]));
        for f in FUNCTIONS {
            let max = f.max_args.min(3);
            for n in f.min_args..=max {
                let mut index = vec![0usize; n];
                loop {
                    let args: Vec<Value> = index.iter().map(|&i| values[i].clone()).collect();
                    let _ = call(f.name, args);
                    // Next combination; with 3 arguments only vary the first two fully.
                    let mut k = 0;
                    loop {
                        if k == n {
                            break;
                        }
                        let limit = if k == 2 { 6 } else { values.len() };
                        index[k] += 1;
                        if index[k] < limit {
                            break;
                        }
                        index[k] = 0;
                        k += 1;
                    }
                    if k == n {
                        break;
                    }
                }
            }
        }
    }
}
