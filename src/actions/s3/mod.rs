//! The `s3` action, AWS-compatible: write the output message as one object, under a key
//! expanded from a template, to AWS S3 or any S3-compatible store (MinIO, Ceph, Garage).
//!
//! Invariant: a key that comes out empty, longer than S3 allows, or with an empty, `.` or
//! `..` segment fails the action in `prepare`: stores resolve such keys differently (some
//! as paths on a disk), so none is ever written. The object is stored (the store answered
//! 200) before the action reports success.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectCannedAcl;

use super::ActionError;
use crate::sql::{Message, Value};
use crate::template::Template;
use store::Stores;

pub mod batch;
pub mod store;

/// The `s3` action.
#[derive(Debug, Clone)]
pub struct S3Put {
    /// Not a template, as in AWS: the bucket is known when the rule loads.
    pub bucket: String,
    /// The object key; checked when expanded (no empty, `.` or `..` segment).
    pub key: Template,
    /// An S3 canned ACL (`private`, `bucket-owner-full-control`, ...), checked at load.
    pub canned_acl: Option<String>,
    /// The store, when it is not the one of the `[s3]` settings.
    pub store: StoreId,
    /// Batch mode (beyond AWS): many messages an object, NDJSON, spooled on disk.
    pub batch: Option<Batch>,
    /// The spool folder of this action's batches: `<rule>-<action index>`, or
    /// `<rule>-error` for an error action; stable across restarts.
    pub spool: String,
}

/// When a batch closes: whichever limit comes first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub max_records: u64,
    pub max_bytes: u64,
    pub max_age: std::time::Duration,
    pub compression: Compression,
}

/// How a batch object is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The suffix of the object key.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Which store an `s3` action writes to: the `[s3]` settings, with these overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StoreId {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// S3's limit on the length of a key, in bytes.
const MAX_KEY: usize = 1024;

/// An object to put.
#[derive(Debug, Clone, PartialEq)]
pub struct PutRequest {
    /// The store: the `[s3]` settings with the action's overrides.
    pub store: StoreId,
    pub bucket: String,
    /// Checked by [`check_key`].
    pub key: String,
    /// The output message.
    pub body: Vec<u8>,
    pub canned_acl: Option<String>,
    /// Batch mode: the action's spool, where the body goes as one line of a batch.
    pub spool: Option<String>,
}

impl PutRequest {
    pub fn describe(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "action": "s3",
            "bucket": self.bucket,
            "key": self.key,
            "body": String::from_utf8_lossy(&self.body),
        });
        if self.spool.is_some() {
            // The key of the batch this message would open; a batch adds its number.
            out["batch"] = true.into();
        }
        out
    }

    /// `s3://bucket/key`, for messages.
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Why a key is not one topicrule writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the s3 key is empty")]
    Empty,
    #[error("the s3 key is {0} bytes long; S3 allows {MAX_KEY}")]
    TooLong(usize),
    #[error("the s3 key `{}` holds a NUL character", .0.escape_debug())]
    Nul(String),
    #[error("the s3 key `{0}` has an empty, `.` or `..` segment")]
    Segment(String),
}

/// Whether `key` is one topicrule writes: not empty, at most 1024 bytes, and no segment
/// (between `/`) empty, `.` or `..`.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.contains('\0') {
        return Err(KeyError::Nul(key.to_owned()));
    }
    if key
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err(KeyError::Segment(key.to_owned()));
    }
    Ok(())
}

/// Expands the key; the body is the output message as it is.
pub fn prepare(
    action: &S3Put,
    msg: &Message,
    vars: &[Value],
    output: &[u8],
) -> Result<PutRequest, ActionError> {
    let key = action.key.expand(msg, vars);
    check_key(&key).map_err(|e| ActionError::new(&action.bucket, e.to_string()))?;
    Ok(PutRequest {
        store: action.store.clone(),
        bucket: action.bucket.clone(),
        key,
        body: output.to_vec(),
        canned_acl: action.canned_acl.clone(),
        spool: action.batch.is_some().then(|| action.spool.clone()),
    })
}

/// Puts the object. The client retries within its own limits (attempts, backoff, a
/// timeout per attempt and per operation), so this returns in bounded time.
pub async fn execute(stores: &Stores, request: &PutRequest) -> Result<(), ActionError> {
    let fail = |message: String| ActionError::new(&request.bucket, message);
    if let Some(spool) = &request.spool {
        let line = crate::actions::file::line_of(&request.body);
        return stores
            .spool()
            .append(spool, &request.key, line)
            .await
            .map_err(|e| fail(format!("cannot add to the batch in spool `{spool}`: {e}")));
    }
    let client = stores
        .client(&request.store)
        .ok_or_else(|| fail(format!("no s3 client for {:?}", request.store)))?;
    client
        .put_object()
        .bucket(&request.bucket)
        .key(&request.key)
        .body(ByteStream::from(request.body.clone()))
        .set_acl(request.canned_acl.as_deref().map(ObjectCannedAcl::from))
        .send()
        .await
        .map_err(|e| fail(format!("cannot put `{}`: {}", request.url(), explain(&e))))?;
    Ok(())
}

/// What went wrong, in one line: the store's status and error code when it answered, the
/// chain of causes (connection refused, timeout) when it did not.
pub(super) fn explain<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: &SdkError<E>,
) -> String {
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("no error code");
            match service.err().message() {
                Some(message) => format!("the store answered {status} {code}: {message}"),
                None => format!("the store answered {status} {code}"),
            }
        }
        SdkError::TimeoutError(_) => "the store did not answer in time".into(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "archive/dev1/1700000000000.json",
            "a.b/..c/d..",
            "x/.y",
        ] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "./a", "a/./b", "..", "a/../b", "a/..",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_key(&"k".repeat(1025)).is_err());
    }
}
