//! The S3 cache tier: finished files shared between machines through one bucket.
//!
//! Input: an [`S3Config`] (the prototype's `S3_BUCKET_NAME`, `S3_KEY_PREFIX`, `S3_ENDPOINT_URL`,
//! `S3_PROFILE`), from which [`aws_store`] builds the client, or any object store
//! ([`RemoteCache::over`]); identities and sizes. Output: files copied into the local cache,
//! and files uploaded.
//! Keys: `<prefix>/v<FORMAT_VERSION>/<identity>.nc`. Invariants: an object is used only if its
//! size equals the plan's (otherwise it is treated as absent, rebuilt and replaced); uploads are
//! conditional creates, so two machines building the same file never clobber each other (the
//! loser keeps its identical local copy); an object whose bytes do not match the CRC-32C
//! stored with it is treated like a wrong-sized one; an unreachable bucket never fails a read: it is
//! reported once, and uploads that failed are retried after the next successful one.
//! Credentials never appear in messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use zarrs_object_store::object_store::{
    self, aws::AmazonS3Builder, path::Path, Attribute, Attributes, BackoffConfig, ClientOptions,
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

/// User metadata holding an object's CRC-32C (8 hex digits), written with every upload and
/// checked on every copy into the local cache.
const CHECKSUM_META: &str = "crc32c";

use super::tier::{Key, Lookup, RemoteError, Tier, Uploaded};
use crate::cache::{CachedFile, LocalCache};

/// Default key prefix (the prototype's).
pub const DEFAULT_PREFIX: &str = "sodeda-era5";

/// Where the S3 tier lives and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// Custom endpoint (e.g. `http://127.0.0.1:9000`); plain http is allowed.
    pub endpoint: Option<String>,
    /// A profile of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
    /// `~/.aws/credentials`); without it the usual `AWS_*` variables are used.
    pub profile: Option<String>,
}

/// Access key, secret and optional token/region read from a credentials-file profile.
struct ProfileCredentials {
    key: String,
    secret: String,
    token: Option<String>,
    region: Option<String>,
}

fn credentials_file() -> PathBuf {
    if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".aws").join("credentials")
}

/// The credentials of `profile` in the shared credentials file at `path`.
fn read_profile(path: &std::path::Path, profile: &str) -> Result<ProfileCredentials, RemoteError> {
    let ini = ini::Ini::load_from_file(path).map_err(|e| {
        RemoteError::Config(format!(
            "profile {profile:?}: cannot read the credentials file {}: {e}",
            path.display()
        ))
    })?;
    let section = ini.section(Some(profile)).ok_or_else(|| {
        RemoteError::Config(format!(
            "profile {profile:?} is not in the credentials file {}",
            path.display()
        ))
    })?;
    let need = |k: &str| {
        section.get(k).map(str::to_string).ok_or_else(|| {
            RemoteError::Config(format!(
                "profile {profile:?} in {} has no {k}",
                path.display()
            ))
        })
    };
    Ok(ProfileCredentials {
        key: need("aws_access_key_id")?,
        secret: need("aws_secret_access_key")?,
        token: section.get("aws_session_token").map(str::to_string),
        region: section.get("region").map(str::to_string),
    })
}

/// A local failure while copying `identity` in or out.
fn local_error(identity: &str, e: impl std::error::Error + Send + Sync + 'static) -> RemoteError {
    RemoteError::Local {
        identity: identity.to_string(),
        error: Arc::new(e),
    }
}

/// The whole content of `file`, read with `pread` (its offset untouched).
fn read_whole(file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The S3 tier.
pub struct RemoteCache {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    target: String,
    credentials: String,
    down: AtomicBool,
    /// Uploads that failed, by identity, with the file's size: retried from the local
    /// cache's checked entry.
    pending: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCache")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The client of an S3 bucket (or an S3-compatible server at `endpoint`), with the retry and
/// timeout policy of a cache, and how it is named in messages: the target
/// (`s3://bucket/prefix at endpoint`) and the credentials it uses. No request is made.
pub fn aws_store(config: &S3Config) -> Result<(Arc<dyn ObjectStore>, String, String), RemoteError> {
    if config.bucket.is_empty() {
        return Err(RemoteError::Config("no bucket name".into()));
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
    let mut credentials = "the AWS_* environment".to_string();
    let mut region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok();
    if let Some(profile) = &config.profile {
        let c = read_profile(&credentials_file(), profile)?;
        builder = builder
            .with_access_key_id(c.key)
            .with_secret_access_key(c.secret);
        if let Some(t) = c.token {
            builder = builder.with_token(t);
        }
        region = region.or(c.region);
        credentials = format!("profile {profile:?}");
    }
    builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
    let mut target = format!("s3://{}/{}", config.bucket, config.prefix);
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(300));
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
        client = client.with_allow_http(endpoint.starts_with("http://"));
        target.push_str(&format!(" at {endpoint}"));
    }
    // A cache must not stall reads: few, quick retries, then fall back to the source.
    builder = builder
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        })
        .with_client_options(client);
    let store = builder
        .build()
        .map_err(|e| RemoteError::Config(e.to_string()))?;
    Ok((Arc::new(store), target, credentials))
}

impl RemoteCache {
    /// The S3 tier of `config`'s bucket (see [`aws_store`]; no request yet).
    pub fn new(config: &S3Config) -> Result<Self, RemoteError> {
        let (store, target, credentials) = aws_store(config)?;
        Ok(Self::over(store, &config.prefix, target, credentials))
    }

    /// The tier over any object store (tests use object_store's in-memory one): objects under
    /// `prefix`, `target` and `credentials` as messages name them.
    pub fn over(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        target: String,
        credentials: String,
    ) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            target,
            credentials,
            down: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// `s3://bucket/prefix` and the endpoint, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The object key of an identity.
    pub fn key(&self, identity: &str) -> Path {
        Path::from(format!(
            "{}/v{}/{identity}.nc",
            self.prefix,
            Key::FORMAT_VERSION
        ))
    }

    fn classify(&self, e: object_store::Error) -> RemoteError {
        let cause = e.to_string();
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            // Words of S3 denials; not a bare "403", which also matches port numbers.
            "403 Forbidden",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "Forbidden",
        ]
        .iter()
        .any(|s| cause.contains(s));
        let error = Arc::new(e);
        if denied {
            RemoteError::Denied {
                target: self.target.clone(),
                credentials: self.credentials.clone(),
                error,
            }
        } else {
            RemoteError::Unavailable {
                target: self.target.clone(),
                error,
            }
        }
    }

    /// Checks that the bucket answers and accepts the credentials (one HEAD of a key that
    /// need not exist).
    pub async fn probe(&self) -> Result<(), RemoteError> {
        let key = Path::from(format!("{}/v{}/.probe", self.prefix, Key::FORMAT_VERSION));
        match self.store.head(&key).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                self.mark_up();
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!("S3 cache {} is reachable again", self.target);
        }
    }

    /// Puts the bytes of `file` as the object of `identity`: a conditional create, or an
    /// overwrite when `replace`; the CRC-32C goes with them.
    async fn put_object(
        &self,
        identity: &str,
        file: Arc<std::fs::File>,
        replace: bool,
    ) -> Result<Uploaded, RemoteError> {
        let bytes = tokio::task::spawn_blocking(move || read_whole(&file))
            .await
            .map_err(|e| local_error(identity, e))?
            .map_err(|e| local_error(identity, e))?;
        let mode = if replace {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(CHECKSUM_META.into()),
            format!("{:08x}", crc32c::crc32c(&bytes)).into(),
        );
        let opts = PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.key(identity), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {
                self.mark_up();
                Ok(if replace {
                    Uploaded::Replaced
                } else {
                    Uploaded::Created
                })
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.mark_up();
                Ok(Uploaded::AlreadyThere)
            }
            Err(e) => Err(self.classify(e)),
        }
    }
}

#[async_trait::async_trait]
impl Tier for RemoteCache {
    /// The size of the object of `identity`, if it exists.
    async fn size_of(&self, identity: &str) -> Result<Option<u64>, RemoteError> {
        match self.store.head(&self.key(identity)).await {
            Ok(meta) => {
                self.mark_up();
                Ok(Some(meta.size))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.mark_up();
                Ok(None)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Copies the object of `identity` into the local cache if it exists with `size` bytes
    /// and its checksum.
    async fn get(&self, key: Key<'_>, local: &LocalCache) -> Result<Lookup, RemoteError> {
        let (identity, size) = (key.identity, key.size);
        let key = self.key(identity);
        let result = match self.store.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                self.mark_up();
                return Ok(Lookup::Absent);
            }
            Err(e) => return Err(self.classify(e)),
        };
        self.mark_up();
        if result.meta.size != size {
            tracing::warn!(
                "S3 object {key} has {} bytes, the plan says {size}; rebuilding it",
                result.meta.size,
            );
            return Ok(Lookup::WrongSize);
        }
        let expected = result
            .attributes
            .get(&Attribute::Metadata(CHECKSUM_META.into()))
            .and_then(|v| u32::from_str_radix(v.as_ref(), 16).ok());
        let tmp = local.temp_file().map_err(|e| local_error(identity, e))?;
        let mut file =
            tokio::fs::File::from_std(tmp.reopen().map_err(|e| local_error(identity, e))?);
        let mut stream = result.into_stream();
        let (mut written, mut crc) = (0u64, 0u32);
        while let Some(part) = stream.next().await {
            let part = part.map_err(|e| self.classify(e))?;
            written += part.len() as u64;
            crc = crc32c::crc32c_append(crc, &part);
            file.write_all(&part)
                .await
                .map_err(|e| local_error(identity, e))?;
        }
        if expected.is_some_and(|e| e != crc) && written == size {
            tracing::warn!(
                "S3 object {key} is corrupt (crc32c {crc:08x}, stored {:08x}); rebuilding it",
                expected.unwrap_or_default()
            );
            return Ok(Lookup::WrongSize);
        }
        file.flush().await.map_err(|e| local_error(identity, e))?;
        drop(file);
        if written != size {
            return Err(RemoteError::Truncated {
                target: self.target.clone(),
                key: key.to_string(),
                written,
                size,
            });
        }
        let cached = local
            .persist(tmp, identity)
            .map_err(|e| local_error(identity, e))?;
        Ok(Lookup::Copied(cached))
    }

    /// Uploads a finished file as a conditional create; `replace` overwrites an object known
    /// to be wrong. The bytes are read from the entry's descriptor (as checked or written by
    /// the local cache), never from its path. On failure the upload is remembered and retried
    /// after the next success, from `local`'s entry of that identity as it is then.
    async fn put(
        &self,
        key: Key<'_>,
        local: &LocalCache,
        entry: &CachedFile,
        replace: bool,
    ) -> Result<Uploaded, RemoteError> {
        let identity = key.identity;
        let result = self.put_object(identity, entry.file.clone(), replace).await;
        match &result {
            Ok(_) => {
                self.pending.lock().expect("poisoned").remove(identity);
                self.retry_pending(local).await;
            }
            Err(e) => {
                self.mark_down(e);
                let size = entry.file.metadata().map(|m| m.len()).unwrap_or(0);
                self.pending
                    .lock()
                    .expect("poisoned")
                    .insert(identity.to_string(), size);
            }
        }
        result
    }

    /// Retries uploads that failed while the bucket was unreachable, each from `local`'s
    /// checked entry (an entry gone or no longer trusted is dropped from the list).
    async fn retry_pending(&self, local: &LocalCache) {
        let pending: Vec<(String, u64)> = self
            .pending
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (identity, size) in pending {
            let Some(entry) = local.get(&identity, size) else {
                self.pending.lock().expect("poisoned").remove(&identity);
                continue;
            };
            match self.put_object(&identity, entry.file, false).await {
                Ok(_) => {
                    self.pending.lock().expect("poisoned").remove(&identity);
                }
                Err(e) => {
                    self.mark_down(&e);
                    return;
                }
            }
        }
    }

    /// Uploads still waiting for the bucket.
    fn pending(&self) -> usize {
        self.pending.lock().expect("poisoned").len()
    }

    /// Records a failure; the first one after a success is logged as a warning.
    fn mark_down(&self, e: &RemoteError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "{e}; continuing with the local cache and the source (uploads will be retried)"
            );
        } else {
            tracing::debug!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_unavailable_not_denied_whatever_the_port() {
        let r = RemoteCache::new(&S3Config {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: Some("http://127.0.0.1:54033".into()),
            profile: None,
        })
        .unwrap();
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        };
        let e = r.classify(generic(
            "HEAD http://127.0.0.1:54033/b/p: error sending request",
        ));
        assert!(matches!(e, RemoteError::Unavailable { .. }), "{e}");
        let e = r.classify(generic(
            "Client error with status 403 Forbidden: AccessDenied",
        ));
        assert!(matches!(e, RemoteError::Denied { .. }), "{e}");
    }

    #[test]
    fn profiles_are_read_from_the_credentials_file_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[good]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\nregion = eu-west-1\n\
             [half]\naws_access_key_id = AKID2\n",
        )
        .unwrap();
        let good = read_profile(&path, "good").unwrap();
        assert_eq!(
            (good.key.as_str(), good.secret.as_str()),
            ("AKID", "s3cr3t")
        );
        assert_eq!(good.region.as_deref(), Some("eu-west-1"));
        assert!(good.token.is_none());
        let config_error = |profile: &str, path: &std::path::Path| match read_profile(path, profile)
            .err()
            .expect("an error")
        {
            RemoteError::Config(text) => text,
            other => panic!("{other}"),
        };
        let text = config_error("nope", &path);
        assert!(
            text.contains("profile \"nope\" is not in the credentials file"),
            "{text}"
        );
        let text = config_error("half", &path);
        assert!(text.contains("has no aws_secret_access_key"), "{text}");
        assert!(!text.contains("AKID2"), "no key in messages: {text}");
        let text = config_error("good", &dir.path().join("missing"));
        assert!(text.contains("cannot read the credentials file"), "{text}");
    }
}
