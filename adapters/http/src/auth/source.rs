//! Where the signing keys come from, and how long they are trusted.
//!
//! - Each issuer's JWKS URL is configured (`TWINCELL_AUTH_JWKS_URL`) or
//!   found once in its OpenID Provider metadata
//!   (`{issuer}/.well-known/openid-configuration`, `jwks_uri`).
//! - Keys are fetched at start (best effort) and kept for [`KEYS_TTL`];
//!   after that the next request refreshes them. While refreshes fail, the
//!   keys last fetched stay in use for up to [`STALE_LIMIT`]; past that, or
//!   before any fetch worked, there is no key and protected routes answer
//!   503 (the caller did nothing wrong).
//! - A token whose `kid` no key has triggers a refresh (a key rotation),
//!   but at most one every [`REFRESH_INTERVAL`], counted from the attempt
//!   even when it fails, and shared by every request waiting on it: a flood
//!   of forged `kid`s cannot make the cell hammer the identity provider.
//! - Requests to the identity provider have timeouts, follow no redirect,
//!   and read at most [`MAX_DOCUMENT_BYTES`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::Keys;

/// How long fetched keys are used before a refresh.
pub const KEYS_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the last fetched keys stay in use while refreshes fail.
pub const STALE_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);
/// The least time between two refresh attempts.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The largest metadata or JWKS document read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one issuer's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// A JWKS URL, configured.
    Jwks(String),
    /// Found in the issuer's metadata on first use.
    Discover {
        /// The issuer URL.
        issuer: String,
    },
}

#[derive(Default)]
struct Cached {
    /// Shared with the requests using it: a request takes a reference, not
    /// a copy of every key.
    keys: Arc<Keys>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// The JWKS URLs found by discovery, kept once found.
    discovered: Vec<Option<String>>,
}

/// The keys of every configured issuer, cached and refreshed by the rules
/// of the module docs.
pub struct KeySource {
    locations: Vec<KeyLocation>,
    refresh_interval: Duration,
    client: reqwest::Client,
    cached: RwLock<Cached>,
    /// One refresh at a time; the others wait for its result.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("locations", &self.locations)
            .finish_non_exhaustive()
    }
}

/// The keys as a request sees them.
#[derive(Debug, Clone)]
pub enum Current {
    /// Keys to check tokens with.
    Keys(Arc<Keys>),
    /// None fetched yet, or the last ones are older than [`STALE_LIMIT`];
    /// the next fetch may be tried in this many seconds (at least 1).
    NoKeys {
        /// Seconds until a refresh may be tried again.
        retry_in_seconds: u64,
    },
}

impl KeySource {
    /// A source for `locations`, with its own HTTP client (rustls on ring).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(locations: Vec<KeyLocation>) -> Result<Self, String> {
        twincell_replication::publish::install_crypto();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the identity provider client: {e}"))?;
        let discovered = vec![None; locations.len()];
        Ok(Self {
            locations,
            refresh_interval: REFRESH_INTERVAL,
            client,
            cached: RwLock::new(Cached {
                discovered,
                ..Cached::default()
            }),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// Another least time between refresh attempts than
    /// [`REFRESH_INTERVAL`] (tests that rotate keys).
    #[must_use]
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The keys to use now, refreshing them first when they are older than
    /// [`KEYS_TTL`] (and no refresh was attempted in the last
    /// [`REFRESH_INTERVAL`]).
    pub async fn current(&self) -> Current {
        let due = {
            let cached = self.read();
            cached.fetched_at.is_none_or(|at| at.elapsed() >= KEYS_TTL)
        };
        if due {
            self.refresh().await;
        }
        self.usable()
    }

    /// After a token named a `kid` that no key has: refresh (rate limited)
    /// and give the keys then.
    pub async fn after_unknown_kid(&self) -> Current {
        self.refresh().await;
        self.usable()
    }

    fn usable(&self) -> Current {
        let cached = self.read();
        match cached.fetched_at {
            Some(at) if at.elapsed() < STALE_LIMIT && !cached.keys.is_empty() => {
                Current::Keys(Arc::clone(&cached.keys))
            }
            _ => {
                let wait = cached.last_attempt.map_or(Duration::ZERO, |at| {
                    self.refresh_interval.saturating_sub(at.elapsed())
                });
                Current::NoKeys {
                    retry_in_seconds: wait.as_secs().saturating_add(1),
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches every issuer's keys, unless an attempt was made in the last
    /// [`REFRESH_INTERVAL`]. Keys replace the cached ones only when every
    /// location answered with at least one usable key set.
    pub async fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let mut cached = self.write();
            if cached
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.refresh_interval)
            {
                return;
            }
            cached.last_attempt = Some(Instant::now());
        }
        let mut all = Keys::default();
        for (i, location) in self.locations.iter().enumerate() {
            match self.fetch(i, location).await {
                Ok(keys) => all = all.merged(keys),
                Err(e) => {
                    tracing::warn!(error = %e, ?location, "fetching signing keys failed");
                    return;
                }
            }
        }
        tracing::info!(keys = all.len(), "signing keys fetched");
        let mut cached = self.write();
        cached.keys = Arc::new(all);
        cached.fetched_at = Some(Instant::now());
    }

    async fn fetch(&self, index: usize, location: &KeyLocation) -> Result<Keys, String> {
        let url = match location {
            KeyLocation::Jwks(url) => url.clone(),
            KeyLocation::Discover { issuer } => {
                let known = self.read().discovered.get(index).cloned().flatten();
                match known {
                    Some(url) => url,
                    None => {
                        let url = self.discover(issuer).await?;
                        if let Some(slot) = self.write().discovered.get_mut(index) {
                            *slot = Some(url.clone());
                        }
                        url
                    }
                }
            }
        };
        let body = self.get(&url).await?;
        let (keys, skipped) = Keys::from_jwks(&body).map_err(|e| format!("{url}: {e}"))?;
        for reason in skipped {
            tracing::debug!(%url, reason, "a JWK left out");
        }
        if keys.is_empty() {
            return Err(format!("{url}: no usable signing key"));
        }
        Ok(keys)
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        // OpenID Connect Discovery §4.3: the metadata must name the issuer
        // it was fetched for.
        if metadata.issuer != issuer {
            return Err(format!(
                "{url} names the issuer {:?}, not {issuer:?}",
                metadata.issuer
            ));
        }
        super::config::check_url(&metadata.jwks_uri).map_err(|e| format!("{url}: jwks_uri {e}"))?;
        Ok(metadata.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
