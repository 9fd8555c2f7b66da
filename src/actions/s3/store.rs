//! The S3 clients of the `s3` action, built once at start from the `[s3]` settings.
//!
//! One client per store the rules name (the settings, or an action's `endpoint`/`region`
//! overrides), all sharing one HTTP connection pool. They are set up for self-hosted
//! stores as much as for AWS: checksums only "when required" (the SDK's default streaming
//! checksums are refused or mis-stored by several S3-compatible stores), path-style
//! addressing with a custom endpoint, a timeout per attempt and per operation (a hung store
//! never hangs topicrule), and retries with exponential backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
// aws-config takes these (deprecated) aliases in its own API; their replacements live in
// aws-runtime, which topicrule does not depend on directly.
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;

use super::batch::Spool;
use super::{S3Put, StoreId};
use crate::actions::ActionSpec;
use crate::config::S3Settings;

/// The region signed for when neither the settings nor the AWS chain name one; MinIO and
/// most self-hosted stores accept it.
const FALLBACK_REGION: &str = "us-east-1";

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the S3 clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the s3 credentials file `{path}` cannot be read: {source}")]
    CredentialsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid s3 endpoint `{0}`: it starts with http:// or https://")]
    Endpoint(String),
    #[error("cannot open the s3 spool `{path}`: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a new rule set cannot run on the stores topicrule started with.
#[derive(Debug, thiserror::Error)]
pub enum Unserved {
    #[error("an `s3` action on bucket `{0}` names a store topicrule did not start with")]
    Store(String),
    #[error("the batch-mode `s3` action with spool `{0}` is new")]
    Spool(String),
}

/// The S3 clients, by store.
#[derive(Default)]
pub struct Stores {
    clients: HashMap<StoreId, Client>,
    spool: Spool,
}

impl Stores {
    /// The clients of every store `actions` write to, and the spools of this instance. No
    /// `s3` action: no client, and the AWS credential chain is never consulted.
    pub async fn for_actions<'a>(
        settings: &S3Settings,
        instance: &str,
        actions: impl IntoIterator<Item = &'a ActionSpec>,
    ) -> Result<Stores, StoreError> {
        let puts: Vec<&S3Put> = s3_puts(actions).collect();
        if puts.is_empty() {
            return Ok(Stores::default());
        }
        let base = shared_config(settings).await?;
        let mut clients = HashMap::new();
        for put in &puts {
            if !clients.contains_key(&put.store) {
                clients.insert(put.store.clone(), client(&base, settings, &put.store)?);
            }
        }
        let batched: Vec<(&S3Put, Client)> = puts
            .iter()
            .filter(|put| put.batch.is_some())
            .map(|put| (*put, clients[&put.store].clone()))
            .collect();
        let spool = Spool::start(&settings.spool_dir, instance, &batched).map_err(|source| {
            StoreError::Spool {
                path: settings.spool_dir.clone(),
                source,
            }
        })?;
        Ok(Stores { clients, spool })
    }

    /// Whether these stores and spools serve every `s3` action of `actions`; if not, why.
    /// A reload keeps the stores and spools topicrule started with.
    pub fn serves<'a>(
        &self,
        actions: impl IntoIterator<Item = &'a ActionSpec>,
    ) -> Result<(), Unserved> {
        for put in s3_puts(actions) {
            if !self.clients.contains_key(&put.store) {
                return Err(Unserved::Store(put.bucket.clone()));
            }
            if put.batch.is_some() && !self.spool.has(&put.spool) {
                return Err(Unserved::Spool(put.spool.clone()));
            }
        }
        Ok(())
    }

    /// The batches of the batch-mode actions.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The client of a store the rules name.
    pub fn client(&self, id: &StoreId) -> Option<&Client> {
        self.clients.get(id)
    }
}

/// The `s3` actions among `actions`.
fn s3_puts<'a>(
    actions: impl IntoIterator<Item = &'a ActionSpec>,
) -> impl Iterator<Item = &'a S3Put> {
    actions.into_iter().filter_map(|action| match action {
        ActionSpec::S3(put) => Some(&**put),
        _ => None,
    })
}

/// Credentials, region, retries and timeouts, shared by every client.
#[allow(deprecated)]
async fn shared_config(settings: &S3Settings) -> Result<SdkConfig, StoreError> {
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static(FALLBACK_REGION));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(settings.attempts.max(1))
                .with_max_backoff(MAX_BACKOFF),
        )
        .timeout_config(timeouts(settings));
    if let Some(path) = &settings.credentials_file {
        std::fs::metadata(path).map_err(|source| StoreError::CredentialsFile {
            path: path.clone(),
            source,
        })?;
        let files = ProfileFiles::builder()
            .with_file(ProfileFileKind::Credentials, path)
            .build();
        let mut provider = ProfileFileCredentialsProvider::builder().profile_files(files);
        if let Some(profile) = &settings.profile {
            provider = provider.profile_name(profile);
        }
        loader = loader.credentials_provider(provider.build());
    } else if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    Ok(loader.load().await)
}

fn timeouts(settings: &S3Settings) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(settings.attempt_timeout.clamp(1, 10)))
        .operation_attempt_timeout(Duration::from_secs(settings.attempt_timeout.max(1)))
        .operation_timeout(Duration::from_secs(settings.operation_timeout.max(1)))
        .build()
}

/// A client for one store: the shared configuration, its endpoint and region.
fn client(base: &SdkConfig, settings: &S3Settings, id: &StoreId) -> Result<Client, StoreError> {
    let mut config = aws_sdk_s3::config::Builder::from(base)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    let endpoint = id.endpoint.as_ref().or(settings.endpoint.as_ref());
    if let Some(url) = endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StoreError::Endpoint(url.clone()));
        }
        config = config.endpoint_url(url.trim_end_matches('/'));
    }
    // Self-hosted stores rarely have a DNS name per bucket: path style unless told.
    config = config.force_path_style(settings.force_path_style.unwrap_or(endpoint.is_some()));
    if let Some(region) = &id.region {
        config = config.region(Region::new(region.clone()));
    }
    Ok(Client::from_conf(config.build()))
}
