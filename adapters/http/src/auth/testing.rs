//! A test identity provider: keys made for tests (`auth/testdata`), tokens
//! minted with them, and their JWKS served on 127.0.0.1. With the
//! `test-util` feature only; nothing trusts these keys anywhere else.
//!
//! Tokens are signed here with *ring* directly rather than with a JOSE
//! library's encoder: most of the tokens the tests need (`alg: none`, HS256
//! keyed with the public key, a tampered payload, a header naming a URL)
//! are exactly what such an encoder refuses to produce.
#![allow(
    clippy::missing_panics_doc,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// The issuer of every token minted here (its keys are configured by URL,
/// so it need not be where they are served).
pub const ISSUER: &str = "https://login.example.test/twincell/v2.0";
/// The API's audience.
pub const AUDIENCE: &str = "api://twincell";
/// The audience of the tokens Event Grid sends on Entra delivery.
pub const REPLICATION_AUDIENCE: &str = "api://twincell-replication";
/// The app role Event Grid's service principal holds on it.
pub const REPLICATION_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";
/// Every scope a route asks for.
pub const ALL_SCOPES: [&str; 5] = [
    "transactions.read",
    "transactions.write",
    "inventory.read",
    "inventory.write",
    "inventory.admin",
];

/// A private key of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    /// RSA 2048, published as `rsa-1`.
    Rsa,
    /// RSA 2048, never published (an attacker's).
    RsaOther,
    /// P-256, published as `ec-1`.
    P256,
}

impl TestKey {
    /// The key as PKCS#8 DER.
    #[must_use]
    pub fn pkcs8(self) -> &'static [u8] {
        match self {
            Self::Rsa => include_bytes!("testdata/rsa2048.pk8"),
            Self::RsaOther => include_bytes!("testdata/rsa2048-other.pk8"),
            Self::P256 => include_bytes!("testdata/p256.pk8"),
        }
    }
}

/// A token signed by a real RSA 1024 key (RS256, `kid` `rsa-1024`, every
/// scope, valid until 2100), and that key's JWK: made once with openssl,
/// since *ring* does not sign with keys under 2048 bits.
#[must_use]
pub fn rsa_1024() -> (Value, String) {
    let fixture: Value = serde_json::from_str(include_str!("testdata/rsa1024-token.json"))
        .expect("the fixture is JSON");
    let token = fixture["token"].as_str().unwrap_or_default().to_owned();
    (fixture["jwk"].clone(), token)
}

/// Base64url without padding.
#[must_use]
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// The public JWK of an RSA key, with an `alg` when given.
#[must_use]
pub fn rsa_jwk(key: TestKey, kid: &str, alg: Option<&str>) -> Value {
    let pair = RsaKeyPair::from_pkcs8(key.pkcs8()).expect("an RSA test key");
    let public = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let mut jwk =
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&public.n), "e": b64(&public.e)});
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

/// The public JWK of the P-256 key.
#[must_use]
pub fn ec_jwk(kid: &str) -> Value {
    let pair = EcdsaKeyPair::from_pkcs8(
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        TestKey::P256.pkcs8(),
        &SystemRandom::new(),
    )
    .expect("the P-256 test key");
    let point = pair.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "kid": kid,
           "x": b64(point.get(1..33).unwrap_or_default()),
           "y": b64(point.get(33..).unwrap_or_default())})
}

/// What the provider publishes: `rsa-1`, `ec-1`, and the RSA 1024 key
/// (which a cell must leave out).
#[must_use]
pub fn published_jwks() -> Value {
    json!({"keys": [rsa_jwk(TestKey::Rsa, "rsa-1", None), ec_jwk("ec-1"), rsa_1024().0]})
}

/// Seconds since the epoch.
#[must_use]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Claims of a good Entra-style token granting `scp`, valid for two hours.
#[must_use]
pub fn claims(scp: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "oid": "oid-1", "tid": "tid-1",
           "exp": now() + 7200, "nbf": now() - 5, "iat": now() - 5, "scp": scp})
}

/// Signs `header.claims` as `header["alg"]` says: RS256 and PS256 with an
/// RSA key, ES256 with P-256, HS256 with `hmac_secret`, and `none` with
/// nothing.
#[must_use]
pub fn mint(header: &Value, claims: &Value, key: TestKey, hmac_secret: Option<&[u8]>) -> String {
    let message = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap_or_default()),
        b64(&serde_json::to_vec(claims).unwrap_or_default())
    );
    let rng = SystemRandom::new();
    let signature = match header["alg"].as_str().unwrap_or_default() {
        alg @ ("RS256" | "PS256") => {
            let pair = RsaKeyPair::from_pkcs8(key.pkcs8()).expect("an RSA test key");
            let mut out = vec![0; pair.public().modulus_len()];
            let padding: &dyn sig::RsaEncoding = if alg == "RS256" {
                &sig::RSA_PKCS1_SHA256
            } else {
                &sig::RSA_PSS_SHA256
            };
            pair.sign(padding, &rng, message.as_bytes(), &mut out)
                .expect("RSA signing");
            out
        }
        "ES256" => {
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, key.pkcs8(), &rng)
                .expect("the P-256 test key")
                .sign(&rng, message.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec()
        }
        "HS256" => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac_secret.unwrap_or(b""));
            ring::hmac::sign(&key, message.as_bytes()).as_ref().to_vec()
        }
        _ => Vec::new(),
    };
    format!("{message}.{}", b64(&signature))
}

fn es256(claims: &Value) -> String {
    mint(
        &json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}),
        claims,
        TestKey::P256,
        None,
    )
}

fn rs256(claims: &Value) -> String {
    mint(
        &json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
        claims,
        TestKey::Rsa,
        None,
    )
}

fn with(mut claims: Value, changes: &[(&str, Value)]) -> Value {
    for (name, value) in changes {
        if value.is_null() {
            if let Some(map) = claims.as_object_mut() {
                map.remove(*name);
            }
        } else {
            claims[*name] = value.clone();
        }
    }
    claims
}

/// The token parity cases name `{{token.<name>}}`, minted now (so the
/// tokens that sit near a time limit are where they should be when sent),
/// for the keys of [`published_jwks`]. `attacker` is a URL a token's header
/// names (`jku`, `x5u`), which a cell must never fetch.
///
/// Accepted: `all` (ES256, every scope), `rs256` and `ps256` (every scope),
/// `scope.<s>` (Entra `scp` with one scope), `role.<s>` (Entra `roles`),
/// `cognito.<s>` (a Cognito access token: no `aud`, `client_id`,
/// `token_use: access`, scope `twincell/<s>`), `foreign.<s>` (the same,
/// with the scope under another resource server, `other-api/<s>`: good,
/// granting nothing of ours), `skew.expired-30s` and
/// `skew.nbf-30s` (within the 60 s of skew), `no-scope` (a good token
/// granting nothing of ours), `eventgrid` (Event Grid's Entra delivery token
/// for [`REPLICATION_AUDIENCE`] with [`REPLICATION_ROLE`]).
///
/// Refused: `expired`, `not-yet-valid`, `no-exp`, `wrong-issuer`,
/// `no-issuer`, `wrong-audience`, `cognito-id-token`,
/// `cognito-id-token-for-this-app` (an ID token whose `aud` is the app
/// client, as Cognito issues them), `unknown-kid`,
/// `no-kid`, `alg-none`, `hs256-public-key`, `alg-mismatch`,
/// `tampered-payload`, `tampered-signature`, `other-key`, `jku`,
/// `embedded-jwk`, `rsa-1024`, `oversized`, `eventgrid-no-role` (for the
/// replication audience, without the role).
#[must_use]
pub fn token(name: &str, attacker: &str) -> Option<String> {
    let good = || claims(&ALL_SCOPES.join(" "));
    let scoped = |prefix: &str| name.strip_prefix(prefix).filter(|s| ALL_SCOPES.contains(s));
    if let Some(scope) = scoped("scope.") {
        return Some(rs256(&claims(scope)));
    }
    if let Some(scope) = scoped("role.") {
        return Some(es256(&with(
            claims(""),
            &[("scp", Value::Null), ("roles", json!([scope]))],
        )));
    }
    let cognito = |scope: String| {
        rs256(&with(
            claims(""),
            &[
                ("aud", Value::Null),
                ("scp", Value::Null),
                ("oid", Value::Null),
                ("tid", Value::Null),
                ("client_id", json!(AUDIENCE)),
                ("token_use", json!("access")),
                ("scope", json!(scope)),
            ],
        ))
    };
    if let Some(scope) = scoped("cognito.") {
        return Some(cognito(format!("twincell/{scope}")));
    }
    if let Some(scope) = scoped("foreign.") {
        return Some(cognito(format!("other-api/{scope}")));
    }
    let token = match name {
        "all" => es256(&good()),
        "rs256" => rs256(&good()),
        "ps256" => mint(
            &json!({"alg": "PS256", "kid": "rsa-1"}),
            &good(),
            TestKey::Rsa,
            None,
        ),
        "no-scope" => es256(&claims("openid profile")),
        "skew.expired-30s" => es256(&with(good(), &[("exp", json!(now() - 30))])),
        "skew.nbf-30s" => es256(&with(good(), &[("nbf", json!(now() + 30))])),
        "eventgrid" => rs256(&with(
            claims(""),
            &[
                ("aud", json!(REPLICATION_AUDIENCE)),
                ("scp", Value::Null),
                ("sub", json!("eventgrid-sp")),
                ("roles", json!([REPLICATION_ROLE])),
                ("appid", json!("4962773b-9cdb-44cf-a8bf-237846a00ab7")),
            ],
        )),
        "eventgrid-no-role" => rs256(&with(
            claims(""),
            &[("aud", json!(REPLICATION_AUDIENCE)), ("scp", Value::Null)],
        )),
        "expired" => es256(&with(good(), &[("exp", json!(now() - 120))])),
        "not-yet-valid" => es256(&with(good(), &[("nbf", json!(now() + 120))])),
        "no-exp" => es256(&with(good(), &[("exp", Value::Null)])),
        "wrong-issuer" => es256(&with(
            good(),
            &[("iss", json!("https://login.example.test/other/v2.0"))],
        )),
        "no-issuer" => es256(&with(good(), &[("iss", Value::Null)])),
        "wrong-audience" => es256(&with(good(), &[("aud", json!("api://someone-else"))])),
        "cognito-id-token" => rs256(&with(
            good(),
            &[
                ("aud", Value::Null),
                ("client_id", json!(AUDIENCE)),
                ("token_use", json!("id")),
            ],
        )),
        "cognito-id-token-for-this-app" => rs256(&with(
            good(),
            &[
                ("aud", json!(AUDIENCE)),
                ("client_id", Value::Null),
                ("token_use", json!("id")),
            ],
        )),
        "unknown-kid" => mint(
            &json!({"alg": "RS256", "kid": "rotated-away"}),
            &good(),
            TestKey::Rsa,
            None,
        ),
        "no-kid" => mint(&json!({"alg": "RS256"}), &good(), TestKey::Rsa, None),
        "alg-none" => mint(
            &json!({"alg": "none", "kid": "rsa-1"}),
            &good(),
            TestKey::Rsa,
            None,
        ),
        // The classic confusion: HMAC keyed with what anyone can read.
        "hs256-public-key" => {
            let public_jwk =
                serde_json::to_vec(&rsa_jwk(TestKey::Rsa, "rsa-1", None)).unwrap_or_default();
            mint(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &good(),
                TestKey::Rsa,
                Some(&public_jwk),
            )
        }
        "alg-mismatch" => mint(
            &json!({"alg": "ES256", "kid": "rsa-1"}),
            &good(),
            TestKey::P256,
            None,
        ),
        "tampered-payload" => {
            let narrow = es256(&claims("inventory.read"));
            let mut parts: Vec<String> = narrow.split('.').map(str::to_owned).collect();
            if let Some(payload) = parts.get_mut(1) {
                *payload = b64(&serde_json::to_vec(&good()).unwrap_or_default());
            }
            parts.join(".")
        }
        "tampered-signature" => {
            let signed = es256(&good());
            let (message, signature) = signed.rsplit_once('.').unwrap_or_default();
            let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
            if let Some(last) = signature.last_mut() {
                *last ^= 1;
            }
            format!("{message}.{}", b64(&signature))
        }
        "other-key" => mint(
            &json!({"alg": "RS256", "kid": "rsa-1"}),
            &good(),
            TestKey::RsaOther,
            None,
        ),
        "jku" => mint(
            &json!({"alg": "RS256", "kid": "attacker-1", "jku": attacker, "x5u": attacker}),
            &good(),
            TestKey::RsaOther,
            None,
        ),
        "embedded-jwk" => mint(
            &json!({"alg": "RS256", "kid": "rsa-1",
                    "jwk": rsa_jwk(TestKey::RsaOther, "rsa-1", None)}),
            &good(),
            TestKey::RsaOther,
            None,
        ),
        "rsa-1024" => rsa_1024().1,
        "oversized" => es256(&with(good(), &[("padding", json!("p".repeat(8 * 1024)))])),
        _ => return None,
    };
    Some(token)
}

/// The provider's state, shared with its server.
#[derive(Debug, Default)]
struct State {
    jwks: Mutex<Value>,
    jwks_hits: AtomicUsize,
    attacker_hits: AtomicUsize,
    down: AtomicBool,
}

/// A JWKS served on 127.0.0.1 (`/jwks`), a URL that counts who fetches it
/// (`/attacker`: tokens name it, cells must never fetch it), and OpenID
/// discovery for an issuer that is the server itself
/// (`/.well-known/openid-configuration`).
#[derive(Debug)]
pub struct IdentityProvider {
    base: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdentityProvider {
    /// Serves [`published_jwks`] on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(State {
            jwks: Mutex::new(published_jwks()),
            ..State::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (jwks_state, attacker_state) = (Arc::clone(&state), Arc::clone(&state));
        let issuer = base.clone();
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let state = Arc::clone(&jwks_state);
                    async move {
                        state.jwks_hits.fetch_add(1, Ordering::SeqCst);
                        if state.down.load(Ordering::SeqCst) {
                            return (http::StatusCode::INTERNAL_SERVER_ERROR, String::new());
                        }
                        let body = state
                            .jwks
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .to_string();
                        (http::StatusCode::OK, body)
                    }
                }),
            )
            .route(
                "/attacker",
                axum::routing::get(move || {
                    attacker_state.attacker_hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        json!({"keys": [rsa_jwk(TestKey::RsaOther, "attacker-1", None)]})
                            .to_string()
                    }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let issuer = issuer.clone();
                    async move {
                        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string()
                    }
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, state, task })
    }

    /// The JWKS URL.
    #[must_use]
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// The URL tokens name in `jku` and `x5u`.
    #[must_use]
    pub fn attacker_url(&self) -> String {
        format!("{}/attacker", self.base)
    }

    /// The server's own base URL, an issuer whose discovery document it
    /// serves.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// How many times the JWKS was fetched.
    #[must_use]
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// How many times the attacker's URL was fetched.
    #[must_use]
    pub fn attacker_hits(&self) -> usize {
        self.state.attacker_hits.load(Ordering::SeqCst)
    }

    /// Whether the JWKS answers 500.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Publishes another key set.
    pub fn set_jwks(&self, jwks: Value) {
        *self
            .state
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = jwks;
    }

    /// [`token`] `name`, naming this provider's attacker URL.
    #[must_use]
    pub fn token(&self, name: &str) -> Option<String> {
        token(name, &self.attacker_url())
    }

    /// The environment a cell needs to check tokens of this provider
    /// (issuer [`ISSUER`], audience [`AUDIENCE`], keys from
    /// [`jwks_url`](Self::jwks_url)), and Event Grid's Entra tokens on
    /// `/replication/events` ([`REPLICATION_AUDIENCE`], the default role).
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TWINCELL_AUTH_ISSUER", ISSUER.to_owned()),
            ("TWINCELL_AUTH_AUDIENCE", AUDIENCE.to_owned()),
            ("TWINCELL_AUTH_JWKS_URL", self.jwks_url()),
            (
                "TWINCELL_REPLICATION_AUTH_AUDIENCE",
                REPLICATION_AUDIENCE.to_owned(),
            ),
        ]
    }
}
