//! Collections (`get`, `transform`), null tests (`isNull`, `isUndefined`, `nanvl`,
//! `get_or_default`), what the message and the rule know (`topic`, `clientid`, `timestamp`,
//! the MQTT 5 properties, ...) and the random functions.
//!
//! A local engine cannot know some of what AWS knows about a message (the account, the
//! principal's certificate, the source IP, the trace id); each such function says what it
//! returns instead.

use base64::Engine as _;

use super::super::eval::Env;
use super::super::value::{from_f64, Conv, Object, Value};
use super::string::{utf16_len, utf16_slice};
use super::{args_n, string};

/// The largest array `transform` returns, as its JSON text (the reference: 128 KiB).
const TRANSFORM_MAX_BYTES: usize = 128 * 1024;

/// `topic()`: the whole topic; `topic(n)`: its n-th level, 1-based.
pub fn topic(env: &Env, args: Vec<Value>) -> Value {
    let topic = env.msg.topic;
    match args.first() {
        None => Value::String(topic.to_owned()),
        Some(n) => match n.to_int().ok().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 => topic
                .split('/')
                .nth(n - 1)
                .map_or(Value::Undefined, |level| Value::String(level.to_owned())),
            _ => Value::Undefined,
        },
    }
}

/// The publisher's client id, or "n/a" when the broker did not tell (AWS: "n/a" when the
/// message did not come over MQTT).
pub fn clientid(env: &Env, _: Vec<Value>) -> Value {
    string(env.msg.clientid.unwrap_or("n/a"))
}

/// `get_thing_shadow(thingName, roleArn)` or `(thingName, shadowName, roleArn)`: the
/// thing's classic or named shadow from topicrule's own shadow service (`[shadow]`), as
/// AWS's GetThingShadow gives it; the role is accepted and not used. Undefined when the
/// shadow does not exist, a name is not a String, or no shadow service runs.
pub fn get_thing_shadow(env: &Env, args: Vec<Value>) -> Value {
    let (Some(reader), Some(Value::String(thing))) = (env.msg.shadows, args.first()) else {
        return Value::Undefined;
    };
    let shadow = match (args.len(), args.get(1)) {
        (3, Some(Value::String(name))) => Some(name.as_str()),
        (3, _) => return Value::Undefined,
        _ => None,
    };
    reader
        .read(thing, shadow)
        .map_or(Value::Undefined, |doc| Value::from_payload(&doc))
}

/// The epoch milliseconds at which the engine received the message.
pub fn timestamp(env: &Env, _: Vec<Value>) -> Value {
    Value::Int(env.msg.timestamp_ms.into())
}

/// The SQL version of the rule.
pub fn sql_version(env: &Env, _: Vec<Value>) -> Value {
    string(env.version.as_str())
}

/// Always "000000000000": there is no AWS account behind a local broker, and rules that
/// put `accountid()` into a topic or key still get the 12-digit String they expect.
pub fn accountid(_: &Env, _: Vec<Value>) -> Value {
    string("000000000000")
}

/// The client id when the broker tells it, else Undefined. AWS returns the certificate
/// thumbprint or the IAM identity; a broker knows neither, and the client id is what
/// identifies the publisher there.
pub fn principal(env: &Env, _: Vec<Value>) -> Value {
    env.msg.clientid.map_or(Value::Undefined, string)
}

/// Always Undefined: the engine does not see the publisher's connection.
pub fn sourceip(_: &Env, _: Vec<Value>) -> Value {
    Value::Undefined
}

/// Always Undefined, as AWS's `traceid()` is for a message that did not come over MQTT:
/// there is no AWS trace for a message of a local broker.
pub fn traceid(_: &Env, _: Vec<Value>) -> Value {
    Value::Undefined
}

/// A random version-4 UUID, lowercase: `0f8fad5b-d9cb-469f-a165-70867728950e`.
pub fn newuuid(_: &Env, _: Vec<Value>) -> Value {
    string(uuid::Uuid::new_v4().to_string())
}

/// A random double in [0, 1).
pub fn rand(_: &Env, _: Vec<Value>) -> Value {
    from_f64(rand::random::<f64>())
}

/// True only for Null.
pub fn is_null(_: &Env, args: Vec<Value>) -> Value {
    Value::Bool(matches!(args.first(), Some(Value::Null)))
}

/// True only for Undefined.
pub fn is_undefined(_: &Env, args: Vec<Value>) -> Value {
    Value::Bool(matches!(args.first(), Some(Value::Undefined) | None))
}

/// `nanvl(a, b)`: b when a is Undefined or Null (or NaN, which no value of topicrule is),
/// else a.
pub fn nanvl(_: &Env, args: Vec<Value>) -> Value {
    let Some([a, b]) = args_n(args) else {
        return Value::Undefined;
    };
    match a {
        Value::Undefined | Value::Null => b,
        a => a,
    }
}

/// `get_or_default(expr[, default])`: the default (Undefined when not given) when expr is
/// Undefined or Null, else expr. The reference page for this live-only function was not
/// available; AWS describes it as returning the default when the expression "returns null,
/// undefined, or fails", which is what this does (a failing expression is Undefined here).
pub fn get_or_default(_: &Env, args: Vec<Value>) -> Value {
    let mut args = args.into_iter();
    match args.next() {
        Some(Value::Undefined | Value::Null) | None => args.next().unwrap_or_default(),
        Some(v) => v,
    }
}

/// `get(collection, key)`: the element of an Array at a 0-based index (converted to Int),
/// the UTF-16 unit of a String at a 0-based index (as Java's `charAt`; half of a character
/// beyond the Basic Multilingual Plane is U+FFFD, see string.rs), or the member of an Object under a String
/// key (not converted). Out of bounds, or anything else: Undefined.
pub fn get(_: &Env, args: Vec<Value>) -> Value {
    let Some([collection, key]) = args_n(args) else {
        return Value::Undefined;
    };
    let index = || match key.to_int() {
        Conv::Ok(i) => usize::try_from(i).ok(),
        _ => None,
    };
    match collection {
        Value::Array(mut items) => match index() {
            Some(i) if i < items.len() => items.swap_remove(i),
            _ => Value::Undefined,
        },
        Value::String(s) => match index() {
            Some(i) if i < utf16_len(&s) => string(utf16_slice(&s, i, i + 1)),
            _ => Value::Undefined,
        },
        Value::Object(mut members) => match &key {
            Value::String(k) => members.swap_remove(k.as_str()).unwrap_or_default(),
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

/// `transform('enrichArray', object, array)`: each Object element of the array with the
/// object's members added after its own (the object's value wins when both have a key).
/// Elements that are not Objects are left out; any other mode, a non-Object second or a
/// non-Array third argument give Undefined, and so does a result whose JSON is over
/// 128 KiB (the reference's limit).
pub fn transform(env: &Env, args: Vec<Value>) -> Value {
    let Some([mode, object, array]) = args_n(args) else {
        return Value::Undefined;
    };
    let (Value::String(mode), Value::Object(extra), Value::Array(items)) = (mode, object, array)
    else {
        return Value::Undefined;
    };
    if mode != "enrichArray" {
        return Value::Undefined;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Value::Object(mut members) = item {
            members.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            out.push(Value::Object(members));
        }
    }
    let out = Value::Array(out);
    if out.to_json(env.version).len() > TRANSFORM_MAX_BYTES {
        return Value::Undefined;
    }
    out
}

/// `get_mqtt_property(name)`: an MQTT 5 property of the PUBLISH, Undefined when the message
/// does not have it (or came over MQTT 3). The names are those of AWS's rules:
/// `'content_type'` and `'response_topic'` (Strings), `'format_indicator'`
/// (`"UNSPECIFIED_BYTES"` or `"UTF8_DATA"`), `'correlation_data'` (its bytes in base64)
/// and, as a topicrule extension, `'message_expiry_interval'` (an Int of seconds). Names
/// match in any case.
pub fn get_mqtt_property(env: &Env, args: Vec<Value>) -> Value {
    let (Some(props), Some(Value::String(name))) = (env.msg.properties, args.first()) else {
        return Value::Undefined;
    };
    let value = match name.to_ascii_lowercase().as_str() {
        "content_type" => props.content_type.clone().map(Value::String),
        "response_topic" => props.response_topic.clone().map(Value::String),
        "format_indicator" => props.payload_format_indicator.map(|f| {
            string(if f == 1 {
                "UTF8_DATA"
            } else {
                "UNSPECIFIED_BYTES"
            })
        }),
        "correlation_data" => props
            .correlation_data
            .as_ref()
            .map(|d| string(base64::engine::general_purpose::STANDARD.encode(d))),
        "message_expiry_interval" => props.message_expiry_interval.map(|s| Value::Int(s.into())),
        _ => None,
    };
    value.unwrap_or_default()
}

/// `get_user_properties()`: all MQTT 5 user properties, in order, as an Array of
/// one-member Objects (`[{"k1":"v1"},{"k1":"v2"}]`: a key may repeat);
/// `get_user_properties(key)`: an Array of the values of that key, in order. Undefined when
/// there is no such property (or the message has no properties at all). The reference page
/// of this live-only function was not available; this is the reading of its examples.
pub fn get_user_properties(env: &Env, args: Vec<Value>) -> Value {
    let Some(props) = env.msg.properties else {
        return Value::Undefined;
    };
    let found: Vec<Value> = match args.first() {
        None => props
            .user_properties
            .iter()
            .map(|(k, v)| Value::Object(Object::from_iter([(k.clone(), string(v.as_str()))])))
            .collect(),
        Some(Value::String(key)) => props
            .user_properties
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| string(v.as_str()))
            .collect(),
        Some(_) => return Value::Undefined,
    };
    if found.is_empty() {
        Value::Undefined
    } else {
        Value::Array(found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::eval::MqttProperties;
    use super::super::test_support::{call, check, show, val, Ctx};

    #[test]
    fn pure_functions() {
        check(&[
            ("get", &["[\"a\",\"b\",\"c\"]", "1.2"], "\"b\""),
            ("get", &["[\"a\",\"b\",\"c\"]", "\"2\""], "\"c\""),
            ("get", &["[\"a\",\"b\",\"c\"]", "3"], "undefined"),
            ("get", &["[\"a\",\"b\",\"c\"]", "-1"], "undefined"),
            ("get", &["\"abc\"", "1"], "\"b\""),
            ("get", &["\"😀b\"", "2"], "\"b\""),
            ("get", &["\"😀b\"", "0"], "\"\u{FFFD}\""),
            ("get", &["\"😀b\"", "3"], "undefined"),
            ("get", &["\"abc\"", "1E+30"], "undefined"),
            ("get", &["{\"a\":\"b\"}", "\"a\""], "\"b\""),
            ("get", &["{\"1\":\"b\"}", "1"], "undefined"),
            ("get", &["5", "0"], "undefined"),
            ("isnull", &["null"], "true"),
            ("isnull", &["undefined"], "false"),
            ("isundefined", &["undefined"], "true"),
            ("isundefined", &["null"], "false"),
            ("nanvl", &["null", "3"], "3"),
            ("nanvl", &["false", "3"], "false"),
            ("get_or_default", &["undefined", "3"], "3"),
            ("get_or_default", &["null", "3"], "3"),
            ("get_or_default", &["null"], "undefined"),
            ("get_or_default", &["0", "3"], "0"),
            (
                "transform",
                &[
                    "\"enrichArray\"",
                    "{\"k\":1}",
                    "[{\"a\":3},5,{\"k\":0,\"b\":4}]",
                ],
                "[{\"a\":3,\"k\":1},{\"k\":1,\"b\":4}]",
            ),
            (
                "transform",
                &["\"other\"", "{\"k\":1}", "[{\"a\":3}]"],
                "undefined",
            ),
            (
                "transform",
                &["\"enrichArray\"", "[{\"k\":1}]", "[{\"a\":3}]"],
                "undefined",
            ),
        ]);
    }

    #[test]
    fn transform_is_limited_to_128_kib() {
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(1000));
        let items = format!("[{}]", vec!["{}"; 200].join(","));
        let r = call(
            "transform",
            vec![val("\"enrichArray\""), val(&big), val(&items)],
        );
        assert_eq!(show(&r), "undefined");
    }

    #[test]
    fn context_functions() {
        check(&[
            ("topic", &[], "\"a/b/c\""),
            ("topic", &["2"], "\"b\""),
            ("topic", &["4"], "undefined"),
            ("clientid", &[], "\"dev-1\""),
            ("principal", &[], "\"dev-1\""),
            ("timestamp", &[], "1481825251155"),
            ("sql_version", &[], "\"2016-03-23\""),
            ("accountid", &[], "\"000000000000\""),
            ("sourceip", &[], "undefined"),
            ("traceid", &[], "undefined"),
        ]);
        let anonymous = Ctx {
            clientid: None,
            ..Ctx::default()
        };
        assert_eq!(show(&anonymous.call("clientid", vec![])), "\"n/a\"");
        assert_eq!(show(&anonymous.call("principal", vec![])), "undefined");
        let uuid = show(&call("newuuid", vec![]));
        assert_eq!(uuid.len(), 38, "{uuid}");
        let r = show(&call("rand", vec![]));
        assert!(r.starts_with("0.") || r.contains("E-"), "{r}");
    }

    #[test]
    fn mqtt5_properties() {
        let ctx = Ctx {
            properties: Some(MqttProperties {
                content_type: Some("application/json".into()),
                payload_format_indicator: Some(1),
                response_topic: None,
                correlation_data: Some(vec![0, 1, 2]),
                message_expiry_interval: Some(60),
                user_properties: vec![
                    ("k".into(), "v1".into()),
                    ("j".into(), "w".into()),
                    ("k".into(), "v2".into()),
                ],
            }),
            ..Ctx::default()
        };
        let prop = |name: &str| show(&ctx.call("get_mqtt_property", vec![val(name)]));
        assert_eq!(prop("\"content_type\""), "\"application/json\"");
        assert_eq!(prop("\"format_indicator\""), "\"UTF8_DATA\"");
        assert_eq!(prop("\"response_topic\""), "undefined");
        assert_eq!(prop("\"correlation_data\""), "\"AAEC\"");
        assert_eq!(prop("\"message_expiry_interval\""), "60");
        assert_eq!(prop("\"nope\""), "undefined");
        let user = |args: Vec<&str>| {
            show(&ctx.call("get_user_properties", args.into_iter().map(val).collect()))
        };
        assert_eq!(
            user(vec![]),
            "[{\"k\":\"v1\"},{\"j\":\"w\"},{\"k\":\"v2\"}]"
        );
        assert_eq!(user(vec!["\"k\""]), "[\"v1\",\"v2\"]");
        assert_eq!(user(vec!["\"x\""]), "undefined");
        assert_eq!(
            show(&call("get_mqtt_property", vec![val("\"content_type\"")])),
            "undefined"
        );
        assert_eq!(show(&call("get_user_properties", vec![])), "undefined");
    }
}
