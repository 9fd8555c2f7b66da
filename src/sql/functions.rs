//! The built-in functions of AWS IoT SQL.
//!
//! Each function takes its evaluated arguments and returns a value; invalid arguments
//! (a wrong type, a value out of range) give Undefined, as the reference says, except
//! `decode`, which gives Null for undecodable input. The table [`FUNCTIONS`] is the only
//! registry: `compile` resolves names against it once.

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
    ("get_thing_shadow", "the AWS IoT Device Shadow service"),
    ("get_registry_data", "the AWS IoT thing registry"),
    ("machinelearning_predict", "Amazon Machine Learning"),
];

const V15: SqlVersion = SqlVersion::V2015_10_08;

/// Every function, sorted by name.
pub static FUNCTIONS: &[Function] = &[Function {
    name: "topic",
    min_args: 0,
    max_args: 1,
    since: V15,
    call: topic,
}];

/// Finds a function by name, in any case.
pub fn lookup(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The known function closest to a misspelt name, if one is close enough to suggest.
pub fn closest(name: &str) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .map(|f| (edit_distance(name, f.name), f.name))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `topic()`: the whole topic; `topic(n)`: its n-th level, 1-based.
fn topic(env: &Env, args: Vec<Value>) -> Value {
    let topic = env.msg.topic;
    match args.first() {
        None => Value::String(topic.to_owned()),
        Some(n) => match n.to_int().ok() {
            Some(n) if n >= 1 => topic
                .split('/')
                .nth(n as usize - 1)
                .map_or(Value::Undefined, |level| Value::String(level.to_owned())),
            _ => Value::Undefined,
        },
    }
}
