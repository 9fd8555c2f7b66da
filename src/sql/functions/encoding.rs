//! `encode`, `decode` and the hash functions.
//!
//! Their input is the bytes of the value: a binary payload (`*` when the message is not
//! JSON) as it is, anything else as the UTF-8 of its To String conversion (`*` of a JSON
//! message is its compact JSON text). Null and Undefined give Undefined.

use std::borrow::Cow;

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::Digest;

use super::super::eval::Env;
use super::super::value::Value;
use super::{args_n, string};

/// Base64 as Java's `Base64.getEncoder()` writes it: standard alphabet, with padding.
const ENCODER: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Base64 as Java's `Base64.getDecoder()` reads it: standard alphabet, padding optional,
/// no white space.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn bytes<'v>(env: &Env, v: &'v Value) -> Option<Cow<'v, [u8]>> {
    match v {
        Value::Binary(b) => Some(Cow::Borrowed(b.as_slice())),
        _ => Some(match v.to_text(env.version)? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }),
    }
}

/// Whether the scheme argument is `'base64'` (in any case), the only scheme there is.
fn is_base64(scheme: &Value) -> bool {
    matches!(scheme, Value::String(s) if s.eq_ignore_ascii_case("base64"))
}

/// `encode(value, 'base64')`: the base64 text of the value's bytes.
pub fn encode(env: &Env, args: Vec<Value>) -> Value {
    let Some([v, scheme]) = args_n(args) else {
        return Value::Undefined;
    };
    if !is_base64(&scheme) {
        return Value::Undefined;
    }
    bytes(env, &v).map_or(Value::Undefined, |b| string(ENCODER.encode(b)))
}

/// `decode(value, 'base64')`: the decoded bytes as a JSON value when they are a JSON
/// document (any JSON value, `{...}` or `5` alike), else as a String (invalid UTF-8
/// replaced by U+FFFD). Input that is not base64 gives Null, as the reference says; a
/// Null or Undefined input, or another scheme, gives Undefined. A binary payload is decoded
/// too (a device publishing bare base64 text sends a message that is not JSON).
pub fn decode(env: &Env, args: Vec<Value>) -> Value {
    let Some([v, scheme]) = args_n(args) else {
        return Value::Undefined;
    };
    if !is_base64(&scheme) {
        return Value::Undefined;
    }
    let Some(input) = bytes(env, &v) else {
        return Value::Undefined;
    };
    let Ok(decoded) = DECODER.decode(&input) else {
        return Value::Null;
    };
    serde_json::from_slice(&decoded).unwrap_or_else(|_| string(String::from_utf8_lossy(&decoded)))
}

fn hash<D: Digest>(env: &Env, args: Vec<Value>) -> Value {
    let Some([v]) = args_n(args) else {
        return Value::Undefined;
    };
    bytes(env, &v).map_or(Value::Undefined, |b| string(hex::encode(D::digest(&b))))
}

pub fn md2(env: &Env, args: Vec<Value>) -> Value {
    hash::<md2::Md2>(env, args)
}

pub fn md5(env: &Env, args: Vec<Value>) -> Value {
    hash::<md5::Md5>(env, args)
}

pub fn sha1(env: &Env, args: Vec<Value>) -> Value {
    hash::<sha1::Sha1>(env, args)
}

pub fn sha224(env: &Env, args: Vec<Value>) -> Value {
    hash::<sha2::Sha224>(env, args)
}

pub fn sha256(env: &Env, args: Vec<Value>) -> Value {
    hash::<sha2::Sha256>(env, args)
}

pub fn sha384(env: &Env, args: Vec<Value>) -> Value {
    hash::<sha2::Sha384>(env, args)
}

pub fn sha512(env: &Env, args: Vec<Value>) -> Value {
    hash::<sha2::Sha512>(env, args)
}

/// The CRC-32 (IEEE, as `java.util.zip.CRC32`) of the value's bytes, as 8 lowercase hex
/// digits like the other hashes. Not in the AWS reference: a topicrule extension.
pub fn crc32(env: &Env, args: Vec<Value>) -> Value {
    let Some([v]) = args_n(args) else {
        return Value::Undefined;
    };
    bytes(env, &v).map_or(Value::Undefined, |b| {
        string(format!("{:08x}", crc32fast::hash(&b)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{call, check, show};
    use super::*;

    #[test]
    fn base64_and_hashes() {
        check(&[
            ("encode", &["\"hello\"", "\"base64\""], "\"aGVsbG8=\""),
            ("encode", &["5", "\"base64\""], "\"NQ==\""),
            ("encode", &["{\"a\":1}", "\"base64\""], "\"eyJhIjoxfQ==\""),
            ("encode", &["\"hello\"", "\"hex\""], "undefined"),
            ("encode", &["null", "\"base64\""], "undefined"),
            ("decode", &["\"aGVsbG8=\"", "\"base64\""], "\"hello\""),
            ("decode", &["\"aGVsbG8\"", "\"BASE64\""], "\"hello\""),
            (
                "decode",
                &["\"eyAidGVtcGVyYXR1cmUiOiAzMyB9Cg==\"", "\"base64\""],
                "{\"temperature\":33}",
            ),
            ("decode", &["\"NQ==\"", "\"base64\""], "5"),
            ("decode", &["\"a\"", "\"base64\""], "null"),
            ("decode", &["\"a b\"", "\"base64\""], "null"),
            ("decode", &["\"/w==\"", "\"base64\""], "\"\u{fffd}\""),
            ("decode", &["undefined", "\"base64\""], "undefined"),
            (
                "md2",
                &["\"hello\""],
                "\"a9046c73e00331af68917d3804f70655\"",
            ),
            (
                "md5",
                &["\"hello\""],
                "\"5d41402abc4b2a76b9719d911017c592\"",
            ),
            ("md5", &["true"], "\"b326b5062b2f0e69046810717534cb09\""),
            (
                "sha1",
                &["123"],
                "\"40bd001563085fc35165329ea1ff5c5ecbdbbeef\"",
            ),
            (
                "sha224",
                &["\"hello\""],
                "\"ea09ae9cc6768c50fcee903ed054556e5bfc8347907f12598aa24193\"",
            ),
            ("crc32", &["\"hello\""], "\"3610a686\""),
            ("sha256", &["null"], "undefined"),
        ]);
    }

    #[test]
    fn binary_values_are_bytes() {
        let bin = Value::Binary(vec![0, 1, 2, 0xff]);
        let scheme = Value::String("base64".into());
        assert_eq!(
            show(&call("encode", vec![bin.clone(), scheme.clone()])),
            "\"AAEC/w==\""
        );
        assert_eq!(
            show(&call(
                "decode",
                vec![Value::Binary(b"aGVsbG8=".to_vec()), scheme]
            )),
            "\"hello\""
        );
        assert_eq!(
            show(&call("md5", vec![bin])),
            format!("\"{:x}\"", md5::Md5::digest([0u8, 1, 2, 0xff]))
        );
    }
}
