//! Bearer tokens (OIDC access tokens from Microsoft Entra ID or Amazon
//! Cognito), checked the same way in both cells.
//!
//! This module holds the pieces that decide whether a token is good: the
//! signing keys of a JWKS document ([`Keys`]) and the check of one token
//! against them ([`Verifier::verify`]), which gives the caller's
//! [`Identity`] or the reason it is refused ([`Refusal`], for the log only).
//!
//! Why these choices:
//! - JOSE is not written here: `jsonwebtoken` 12 parses headers and claims,
//!   checks `exp`, `nbf` and `iss`, and dispatches the signature check to a
//!   pluggable provider. Its pitfalls are handled explicitly: one
//!   `Validation` holds the one algorithm of the key that signed (so an RSA
//!   key never meets an HMAC check), `nbf` is switched on, `exp` and `iss`
//!   are required claims, and the audience is checked here (a Cognito
//!   access token carries `client_id` instead of `aud`).
//! - The provider is *ring* (`auth/ring_provider.rs`), the library rustls already
//!   brings: no aws-lc, no OpenSSL, no `rsa` crate.
//! - Keys come from the configured JWKS only: a URL inside a token (`jku`,
//!   `x5u`) or a key inside a token (`jwk`, `x5c`) is never used.

pub mod config;
pub mod guard;
mod ring_provider;
pub mod source;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use config::Settings;
pub use guard::{Authenticator, Denial};
pub use source::{KeyLocation, KeySource};

use std::collections::{BTreeSet, HashMap};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The algorithms a token may be signed with.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// What kind of key a JWK holds, and so which algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
}

impl Family {
    fn allows(self, algorithm: Algorithm) -> bool {
        match self {
            Self::Rsa => matches!(algorithm, Algorithm::RS256 | Algorithm::PS256),
            Self::P256 => algorithm == Algorithm::ES256,
        }
    }
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    family: Family,
    /// The JWK's own `alg`, when it names one.
    algorithm: Option<Algorithm>,
}

/// The signing keys of one or more JWKS documents, by `kid`.
#[derive(Clone, Default)]
pub struct Keys {
    by_kid: HashMap<String, Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("Keys").field("kids", &kids).finish()
    }
}

/// Why a JWKS document gave no keys at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document (a JSON object with a \"keys\" array)")]
    NotAJwks,
}

impl Keys {
    /// The usable signing keys of a JWKS document, and for each JWK left
    /// out, why. Left out: keys without `kid`, keys not for signatures
    /// (`use` other than `sig`, `key_ops` without `verify`), symmetric and
    /// unknown key types, curves other than P-256, RSA moduli under
    /// [`MIN_RSA_BITS`], and keys whose `alg` is not one of [`ALGORITHMS`]
    /// or does not fit the key. A JWK that does not parse is left out
    /// without failing the others.
    ///
    /// # Errors
    /// [`JwksError::NotAJwks`] when the document is not a JWKS at all.
    pub fn from_jwks(document: &[u8]) -> Result<(Self, Vec<String>), JwksError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|_| JwksError::NotAJwks)?;
        let mut keys = Self::default();
        let mut skipped = Vec::new();
        for (i, value) in document.keys.into_iter().enumerate() {
            match serde_json::from_value::<Jwk>(value)
                .map_err(|e| format!("does not parse: {e}"))
                .and_then(|jwk| usable(&jwk).map(|key| (jwk, key)))
            {
                Ok((jwk, key)) => {
                    if let Some(kid) = jwk.common.key_id {
                        keys.by_kid.insert(kid, key);
                    }
                }
                Err(reason) => skipped.push(format!("key {i}: {reason}")),
            }
        }
        Ok((keys, skipped))
    }

    /// How many keys there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// Whether a key has this `kid`.
    #[must_use]
    pub fn contains(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Both sets; a `kid` in both keeps `other`'s key.
    #[must_use]
    pub fn merged(mut self, other: Self) -> Self {
        self.by_kid.extend(other.by_kid);
        self
    }
}

fn usable(jwk: &Jwk) -> Result<Key, String> {
    if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
        return Err("no kid".to_owned());
    }
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signing key (use)".to_owned()),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return Err("not a verification key (key_ops)".to_owned());
    }
    let algorithm = match &jwk.common.key_algorithm {
        None => None,
        Some(named) => {
            let algorithm: Option<Algorithm> = serde_json::to_value(named)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .filter(|a| ALGORITHMS.contains(a));
            Some(algorithm.ok_or_else(|| format!("alg {named:?} is not accepted"))?)
        }
    };
    let (decoding, family) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let decoding = DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                .map_err(|e| format!("RSA components: {e}"))?;
            let bits = match decoding.kind() {
                jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, .. } => {
                    let n = n.iter().skip_while(|b| **b == 0).count();
                    n.saturating_mul(8)
                }
                jsonwebtoken::DecodingKeyKind::SecretOrDer(_) => 0,
            };
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA modulus of {bits} bits, under {MIN_RSA_BITS}"));
            }
            (decoding, Family::Rsa)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 {
                return Err(format!("curve {:?} is not accepted", ec.curve));
            }
            let decoding = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|e| format!("EC components: {e}"))?;
            match decoding.kind() {
                jsonwebtoken::DecodingKeyKind::SecretOrDer(point) if point.len() == 65 => {}
                _ => return Err("EC point is not 2 × 32 bytes".to_owned()),
            }
            (decoding, Family::P256)
        }
        _ => return Err("not an RSA or EC public key".to_owned()),
    };
    if let Some(algorithm) = algorithm
        && !family.allows(algorithm)
    {
        return Err(format!("alg {algorithm:?} does not fit the key"));
    }
    Ok(Key {
        decoding,
        family,
        algorithm,
    })
}

/// Why a token is refused. For the log only: every refusal answers the
/// caller the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not three base64url parts with a JSON header.
    #[error("malformed token")]
    Malformed,
    /// `none`, HMAC or another algorithm not in [`ALGORITHMS`].
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    /// No `kid` in the header.
    #[error("no kid in the header")]
    NoKid,
    /// No key has the token's `kid` (kept for the key refresh it asks
    /// for; never shown: no part of a token reaches a log).
    #[error("no key has the token's kid")]
    UnknownKid(String),
    /// The header's `alg` does not fit the key with that `kid`.
    #[error("algorithm {0} does not fit the key")]
    AlgorithmMismatch(String),
    /// The signature does not verify (a tampered header, payload or
    /// signature, or another key).
    #[error("bad signature")]
    Signature,
    /// `exp` is past (beyond the skew), or missing.
    #[error("expired or no exp")]
    Expired,
    /// `nbf` is ahead (beyond the skew).
    #[error("not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is not one of the configured issuers, or missing.
    #[error("issuer not accepted")]
    Issuer,
    /// Neither `aud` nor (for a Cognito access token) `client_id` names a
    /// configured audience.
    #[error("audience not accepted")]
    Audience,
    /// The claims are not what a token carries (a wrong type).
    #[error("claims do not parse: {0}")]
    Claims(String),
    /// A token that says it is not an access token (`token_use`: a
    /// Cognito ID token carries `id`).
    #[error("token_use is not access (an ID token?)")]
    TokenUse,
}

/// Who a good token speaks for, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub subject: Option<String>,
    /// Entra's object id (`oid`).
    pub object_id: Option<String>,
    /// Entra's tenant id (`tid`).
    pub tenant_id: Option<String>,
    /// Cognito's `client_id`.
    pub client_id: Option<String>,
    /// Every scope and role granted: `scp` and `scope` (space-separated)
    /// and `roles` (an array), by their bare names: a scope under a
    /// configured resource-server prefix (`twincell/inventory.write`) is
    /// kept without it, one under any other prefix is not kept.
    pub scopes: BTreeSet<String>,
}

impl Identity {
    /// Whether `required` is granted.
    #[must_use]
    pub fn grants(&self, required: &str) -> bool {
        self.scopes.contains(required)
    }
}

/// The resource-server prefix of Cognito's custom scopes
/// (`<prefix>/<scope>`) unless `TWINCELL_AUTH_SCOPE_PREFIX` names others:
/// the resource server the docs have one create.
pub const DEFAULT_SCOPE_PREFIX: &str = "twincell";

/// A granted scope by its bare name: itself when it has no prefix, the
/// name after a configured prefix, and nothing under another prefix (a
/// scope of another API grants nothing here).
fn bare_scope<'a>(granted: &'a str, prefixes: &[String]) -> Option<&'a str> {
    match granted.rsplit_once('/') {
        None => Some(granted),
        Some((prefix, name)) => prefixes
            .iter()
            .any(|p| p == prefix)
            .then_some(name)
            .filter(|n| !n.is_empty()),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// Checks tokens against configured issuers and audiences.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<String>,
    audiences: Vec<String>,
    scope_prefixes: Vec<String>,
}

impl Verifier {
    /// A verifier for tokens of one of `issuers` meant for one of
    /// `audiences`. Installs the *ring* provider for `jsonwebtoken` in this
    /// process.
    ///
    /// # Errors
    /// When another `jsonwebtoken` provider was installed first (tokens
    /// would be checked by a provider this crate did not choose).
    pub fn new(issuers: Vec<String>, audiences: Vec<String>) -> Result<Self, String> {
        if !ring_provider::install() {
            return Err(
                "another jsonwebtoken CryptoProvider is installed in this process".to_owned(),
            );
        }
        Ok(Self {
            issuers,
            audiences,
            scope_prefixes: vec![DEFAULT_SCOPE_PREFIX.to_owned()],
        })
    }

    /// The same, taking custom scopes under `prefixes` instead of
    /// [`DEFAULT_SCOPE_PREFIX`].
    #[must_use]
    pub fn with_scope_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.scope_prefixes = prefixes;
        self
    }

    /// The same issuers, for tokens meant for `audiences`.
    #[must_use]
    pub fn with_audiences(&self, audiences: Vec<String>) -> Self {
        Self {
            issuers: self.issuers.clone(),
            audiences,
            scope_prefixes: self.scope_prefixes.clone(),
        }
    }

    /// Checks `token` with `keys`.
    ///
    /// # Errors
    /// The [`Refusal`] (for the log; the caller gets one answer for all).
    /// [`Refusal::UnknownKid`] tells the caller a key refresh may help.
    pub fn verify(&self, token: &str, keys: &Keys) -> Result<Identity, Refusal> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_deref().ok_or(Refusal::NoKid)?;
        let key = keys
            .by_kid
            .get(kid)
            .ok_or_else(|| Refusal::UnknownKid(kid.chars().take(64).collect()))?;
        if !key.family.allows(header.alg) || key.algorithm.is_some_and(|a| a != header.alg) {
            return Err(Refusal::AlgorithmMismatch(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&self.issuers);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => Refusal::Signature,
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                ErrorKind::InvalidIssuer => Refusal::Issuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => Refusal::Expired,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Refusal::Issuer,
                ErrorKind::InvalidAlgorithm => {
                    Refusal::AlgorithmMismatch(format!("{:?}", header.alg))
                }
                // serde's message would quote the claim's value: only
                // what kind of error, and where.
                ErrorKind::Json(e) => Refusal::Claims(format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    Refusal::Malformed
                }
                other => Refusal::Claims(format!("{other:?}")),
            },
        )?;
        let claims = data.claims;
        if claims.token_use.as_deref().is_some_and(|u| u != "access") {
            return Err(Refusal::TokenUse);
        }
        let audience_ok = match &claims.aud {
            Some(OneOrMany::One(aud)) => self.audiences.contains(aud),
            Some(OneOrMany::Many(auds)) => auds.iter().any(|a| self.audiences.contains(a)),
            None => {
                claims.token_use.as_deref() == Some("access")
                    && claims
                        .client_id
                        .as_ref()
                        .is_some_and(|c| self.audiences.contains(c))
            }
        };
        if !audience_ok {
            return Err(Refusal::Audience);
        }
        let mut scopes = BTreeSet::new();
        let granted = [&claims.scp, &claims.scope]
            .into_iter()
            .flatten()
            .flat_map(|list| list.split(' '))
            .filter(|s| !s.is_empty())
            .chain(claims.roles.iter().flatten().map(String::as_str));
        for scope in granted {
            if let Some(bare) = bare_scope(scope, &self.scope_prefixes) {
                scopes.insert(bare.to_owned());
            }
        }
        Ok(Identity {
            subject: claims.sub,
            object_id: claims.oid,
            tenant_id: claims.tid,
            client_id: claims.client_id,
            scopes,
        })
    }
}

#[cfg(test)]
mod tests;

/// The authenticator the environment asks for ([`Settings`]): `None` with
/// `TWINCELL_AUTH=disabled`, one for `TWINCELL_AUTH_ISSUER` and
/// `TWINCELL_AUTH_AUDIENCE` otherwise. It has no keys yet: call
/// [`Authenticator::warm_up`] once the process may log.
///
/// # Errors
/// A bad setting, or none at all: a cell never serves its API
/// unauthenticated unless told so explicitly.
pub fn from_env(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<std::sync::Arc<Authenticator>>, String> {
    match Settings::from_env(env)? {
        Settings::Unset => Err(
            "no authentication is configured: set TWINCELL_AUTH_ISSUER and \
             TWINCELL_AUTH_AUDIENCE, or TWINCELL_AUTH=disabled to serve every route without a \
             token (local runs and tests only)"
                .to_owned(),
        ),
        Settings::Disabled => Ok(None),
        Settings::Bearer {
            issuers,
            audiences,
            locations,
            scope_prefixes,
        } => Ok(Some(std::sync::Arc::new(Authenticator::new(
            Verifier::new(issuers, audiences)?.with_scope_prefixes(scope_prefixes),
            KeySource::new(locations)?,
        )))),
    }
}

/// The app role Event Grid's service principal holds on the webhook's
/// Entra application, unless `TWINCELL_REPLICATION_AUTH_ROLE` names
/// another.
pub const EVENT_GRID_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";

/// Event Grid's Entra delivery to `/replication/events`: tokens of the
/// cell's issuers for the webhook's own application, holding a role.
#[derive(Debug, Clone)]
pub struct DeliveryTokens {
    /// Checks tokens for the webhook application's audience.
    pub auth: std::sync::Arc<Authenticator>,
    /// The app role a token must hold (in `roles`).
    pub role: String,
}

/// Whether `/replication/events` also accepts Event Grid's Entra tokens:
/// with `TWINCELL_REPLICATION_AUTH_AUDIENCE` (the webhook application's ID
/// URI or client id, as the subscription's
/// `azureActiveDirectoryApplicationIdOrUri` names it), tokens of the API's
/// issuers and keys for that audience holding the role
/// `TWINCELL_REPLICATION_AUTH_ROLE` (default [`EVENT_GRID_ROLE`]).
///
/// # Errors
/// The audience without bearer authentication configured for the API (the
/// issuers and keys come from there), or a blank role.
pub fn delivery_tokens_from_env(
    env: impl Fn(&str) -> Option<String>,
    api: Option<&std::sync::Arc<Authenticator>>,
) -> Result<Option<DeliveryTokens>, String> {
    let audiences: Vec<String> = env("TWINCELL_REPLICATION_AUTH_AUDIENCE")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let role = env("TWINCELL_REPLICATION_AUTH_ROLE").map(|r| r.trim().to_owned());
    if audiences.is_empty() {
        return match role {
            Some(_) => Err(
                "TWINCELL_REPLICATION_AUTH_ROLE needs TWINCELL_REPLICATION_AUTH_AUDIENCE"
                    .to_owned(),
            ),
            None => Ok(None),
        };
    }
    let Some(api) = api else {
        return Err(
            "TWINCELL_REPLICATION_AUTH_AUDIENCE needs TWINCELL_AUTH_ISSUER (Event Grid's tokens \
             come from the same tenant as the API's)"
                .to_owned(),
        );
    };
    let role = role.unwrap_or_else(|| EVENT_GRID_ROLE.to_owned());
    if role.is_empty() || role.contains(['"', '\\', ' ']) {
        return Err(format!(
            "TWINCELL_REPLICATION_AUTH_ROLE={role:?} is not an app role value"
        ));
    }
    Ok(Some(DeliveryTokens {
        auth: std::sync::Arc::new(api.for_audiences(audiences)),
        role,
    }))
}

/// Logs what `auth` means for the cell, and fetches its keys (best
/// effort): what a binary does once it may log.
pub async fn start(auth: Option<&Authenticator>) {
    match auth {
        Some(auth) => auth.warm_up().await,
        None => tracing::warn!(
            "TWINCELL_AUTH=disabled: every route is served without a token (local runs and tests only)"
        ),
    }
}
