//! `TOPICRULE_<SECTION>_<KEY>` variables laid over the settings file, for every setting:
//! `TOPICRULE_BROKER_CLIENT_ID` is `[broker] client_id`, `TOPICRULE_BROKER_EMBEDDED_LISTEN`
//! is `[broker.embedded] listen`, `TOPICRULE_ROUTER_MAX_IN_FLIGHT` is `[router]
//! max_in_flight`.
//!
//! Invariant: a variable's text is read as the type its setting asks for (a password of
//! digits stays text; `true` is a Boolean only where a Boolean is asked), so that no setting
//! needs code of its own; an empty text unsets an optional setting; a list is `:`-separated
//! (`TOPICRULE_RULES_PATHS=rules:more`). A variable of a known section that names no setting
//! is an error; other `TOPICRULE_*` variables (`TOPICRULE_CONFIG`, `TOPICRULE_LOG_LEVEL`)
//! are not settings and are left alone.

use std::collections::BTreeMap;

use serde::de::value::{Error, SeqDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, Visitor};

const PREFIX: &str = "TOPICRULE_";

/// The settings' sections as variable names spell them, a section before the sections it
/// holds (`broker_embedded` before `broker`).
const SECTIONS: &[&str] = &[
    "broker_embedded",
    "broker",
    "rules",
    "file",
    "router",
    "s3",
    "metrics",
    "shadow",
];

/// The settings file's values with the environment's over them.
pub(super) enum Layer {
    Table(BTreeMap<String, Layer>),
    /// A value of the file.
    Toml(toml::Value),
    /// A variable's text, read as the type its setting asks for.
    Env {
        name: String,
        text: String,
    },
}

/// `file` with the `TOPICRULE_*` variables of `vars` that name a section laid over it.
pub(super) fn overlay(
    file: toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Layer {
    let mut root = table(file);
    'vars: for (name, text) in vars {
        let Some(rest) = name.strip_prefix(PREFIX).map(str::to_ascii_lowercase) else {
            continue;
        };
        let Some((section, key)) = SECTIONS.iter().find_map(|section| {
            let key = rest.strip_prefix(section)?.strip_prefix('_')?;
            Some((section, key.to_owned()))
        }) else {
            continue;
        };
        let mut place = &mut root;
        for part in section.split('_') {
            let layer = place
                .entry(part.to_owned())
                .or_insert_with(|| Layer::Table(BTreeMap::new()));
            // A section the file gives as a value: its error is the file's, reported as such.
            let Layer::Table(inner) = layer else {
                continue 'vars;
            };
            place = inner;
        }
        place.insert(key, Layer::Env { name, text });
    }
    Layer::Table(root)
}

fn table(file: toml::Table) -> BTreeMap<String, Layer> {
    file.into_iter()
        .map(|(key, value)| {
            let layer = match value {
                toml::Value::Table(inner) => Layer::Table(table(inner)),
                other => Layer::Toml(other),
            };
            (key, layer)
        })
        .collect()
}

impl Layer {
    /// The variable's text parsed as `what`, given to `visit`.
    fn parse<'de, T: std::str::FromStr, V: Visitor<'de>>(
        self,
        visitor: V,
        what: &str,
        visit: impl FnOnce(V, T) -> Result<V::Value, Error>,
    ) -> Result<V::Value, Error> {
        match self {
            Layer::Env { text, .. } => match text.trim().parse() {
                Ok(value) => visit(visitor, value),
                Err(_) => Err(Error::custom(format!("`{text}` is not {what}"))),
            },
            other => de::Deserializer::deserialize_any(other, visitor),
        }
    }
}

/// The type-directed readers of a variable's text; a file's value or a table is read as it is.
macro_rules! parsed {
    ($($method:ident $t:ty => $visit:ident, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.parse(visitor, $what, |v, x: $t| v.$visit(x))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Layer {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Layer::Table(entries) => visitor.visit_map(Entries {
                entries: entries.into_iter(),
                value: None,
            }),
            Layer::Toml(value) => value.deserialize_any(visitor).map_err(Error::custom),
            Layer::Env { text, .. } => visitor.visit_string(text),
        }
    }

    parsed! {
        deserialize_bool bool => visit_bool, "true or false";
        deserialize_u8 u8 => visit_u8, "a number";
        deserialize_u16 u16 => visit_u16, "a number";
        deserialize_u32 u32 => visit_u32, "a number";
        deserialize_u64 u64 => visit_u64, "a number";
        deserialize_i8 i8 => visit_i8, "a number";
        deserialize_i16 i16 => visit_i16, "a number";
        deserialize_i32 i32 => visit_i32, "a number";
        deserialize_i64 i64 => visit_i64, "a number";
        deserialize_f32 f32 => visit_f32, "a number";
        deserialize_f64 f64 => visit_f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Layer::Env { text, .. } if text.is_empty() => visitor.visit_none(),
            Layer::Toml(value) => value.deserialize_option(visitor).map_err(Error::custom),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Layer::Env { name, text } => {
                let items: Vec<Layer> = std::env::split_paths(&text)
                    .map(|item| Layer::Env {
                        name: name.clone(),
                        text: item.to_string_lossy().into_owned(),
                    })
                    .collect();
                visitor.visit_seq(SeqDeserializer::new(items.into_iter()))
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Layer::Env { text, .. } => {
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(text))
            }
            Layer::Toml(value) => value
                .deserialize_enum(name, variants, visitor)
                .map_err(Error::custom),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

impl IntoDeserializer<'_, Error> for Layer {
    type Deserializer = Layer;

    fn into_deserializer(self) -> Layer {
        self
    }
}

/// A table's entries; an error about a variable's key or value names the variable.
struct Entries {
    entries: std::collections::btree_map::IntoIter<String, Layer>,
    value: Option<Layer>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let variable = variable(&value);
        let key = seed.deserialize(StringDeserializer::<Error>::new(key));
        self.value = Some(value);
        match (key, variable) {
            (Err(e), Some(name)) => Err(Error::custom(format!("`{name}` is not a setting: {e}"))),
            (key, _) => key.map(Some),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let value = self.value.take().expect("a key was read first");
        let variable = variable(&value);
        seed.deserialize(value).map_err(|e| match variable {
            Some(name) => Error::custom(format!("invalid value of `{name}`: {e}")),
            None => e,
        })
    }
}

fn variable(layer: &Layer) -> Option<String> {
    match layer {
        Layer::Env { name, .. } => Some(name.clone()),
        _ => None,
    }
}
