//! Decoding JSON into a [`Value`] directly, without an intermediate `serde_json::Value`.
//! serde_json's `arbitrary_precision` hands numbers over as their text (as a one-entry
//! map under a private key), so large integers and long decimals keep every digit.

use super::{parse_number, Object, Value};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(super::from_f64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let first = match map.next_key_seed(KeyClassifier)? {
            None => return Ok(Value::Object(Object::default())),
            Some(Key::Number) => return map.next_value_seed(NumberText),
            Some(Key::Member(key)) => key,
        };
        let mut object = Object::with_capacity_and_hasher(
            map.size_hint().unwrap_or(0).min(64) + 1,
            Default::default(),
        );
        object.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A number's text, parsed where it lies.
struct NumberText;

impl<'de> de::DeserializeSeed<'de> for NumberText {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NumberText {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Value, E> {
        parse_number(text).ok_or_else(|| E::custom("invalid number"))
    }
}

/// The first key of a map: serde_json's private number token, or a member name. Telling
/// them apart without allocating saves an allocation for every number of a payload.
enum Key {
    Number,
    Member(String),
}

struct KeyClassifier;

impl<'de> de::DeserializeSeed<'de> for KeyClassifier {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyClassifier {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(if s == NUMBER_TOKEN {
            Key::Number
        } else {
            Key::Member(s.to_owned())
        })
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Key, E> {
        Ok(if s == NUMBER_TOKEN {
            Key::Number
        } else {
            Key::Member(s)
        })
    }
}
