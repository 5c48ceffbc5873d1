#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::RsaKeyPair;
use serde_json::{Value, json};

use super::testing::{
    AUDIENCE, ISSUER, TestKey, b64, claims as claims_granting, ec_jwk, now, rsa_jwk as jwk_of,
};

use super::*;

const RSA: TestKey = TestKey::Rsa;
const RSA_OTHER: TestKey = TestKey::RsaOther;
const P256: TestKey = TestKey::P256;

fn rsa_jwk(key: TestKey, kid: &str, alg: Option<&str>) -> Value {
    jwk_of(key, kid, alg)
}

fn keys(jwks: &[Value]) -> Keys {
    let (keys, _) = Keys::from_jwks(&serde_json::to_vec(&json!({"keys": jwks})).unwrap()).unwrap();
    keys
}

fn standard_keys() -> Keys {
    keys(&[rsa_jwk(RSA, "rsa-1", None), ec_jwk("ec-1")])
}

fn claims() -> Value {
    claims_granting("inventory.read transactions.read")
}

fn mint(header: &Value, claims: &Value, key: TestKey, hmac_secret: Option<&[u8]>) -> String {
    super::testing::mint(header, claims, key, hmac_secret)
}

fn verifier() -> Verifier {
    Verifier::new(vec![ISSUER.to_owned()], vec![AUDIENCE.to_owned()]).unwrap()
}

#[test]
fn good_tokens_of_each_algorithm_give_the_identity_and_its_scopes() {
    let keys = keys(&[
        rsa_jwk(RSA, "rsa-1", Some("RS256")),
        rsa_jwk(RSA_OTHER, "rsa-pss", Some("PS256")),
        ec_jwk("ec-1"),
    ]);
    for (alg, kid, pk8) in [
        ("RS256", "rsa-1", RSA),
        ("PS256", "rsa-pss", RSA_OTHER),
        ("ES256", "ec-1", P256),
    ] {
        let token = mint(
            &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            &claims(),
            pk8,
            None,
        );
        let identity = verifier()
            .verify(&token, &keys)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(identity.subject.as_deref(), Some("user-1"));
        assert_eq!(identity.object_id.as_deref(), Some("oid-1"));
        assert_eq!(identity.tenant_id.as_deref(), Some("tid-1"));
        assert!(identity.grants("inventory.read") && identity.grants("transactions.read"));
        assert!(!identity.grants("inventory.write"));
    }
}

#[test]
fn none_and_hmac_tokens_are_refused_even_with_the_public_key_as_secret() {
    let keys = standard_keys();
    let none = mint(
        &json!({"alg": "none", "kid": "rsa-1"}),
        &claims(),
        RSA,
        None,
    );
    assert!(matches!(
        verifier().verify(&none, &keys),
        Err(Refusal::Malformed | Refusal::Algorithm(_))
    ));
    // The classic confusion: HS256 keyed with what the attacker can read.
    let jwks = serde_json::to_vec(&rsa_jwk(RSA, "rsa-1", None)).unwrap();
    let public_der = RsaKeyPair::from_pkcs8(RSA.pkcs8())
        .unwrap()
        .public()
        .as_ref()
        .to_vec();
    for secret in [jwks.as_slice(), public_der.as_slice()] {
        let token = mint(
            &json!({"alg": "HS256", "kid": "rsa-1"}),
            &claims(),
            RSA,
            Some(secret),
        );
        assert_eq!(
            verifier().verify(&token, &keys),
            Err(Refusal::Algorithm("HS256".to_owned()))
        );
    }
}

#[test]
fn kid_is_required_and_must_name_a_configured_key() {
    let keys = standard_keys();
    let no_kid = mint(&json!({"alg": "RS256"}), &claims(), RSA, None);
    assert_eq!(verifier().verify(&no_kid, &keys), Err(Refusal::NoKid));
    let unknown = mint(
        &json!({"alg": "RS256", "kid": "rotated-away"}),
        &claims(),
        RSA,
        None,
    );
    assert_eq!(
        verifier().verify(&unknown, &keys),
        Err(Refusal::UnknownKid("rotated-away".to_owned()))
    );
}

#[test]
fn urls_and_keys_inside_a_token_are_never_used() {
    let keys = standard_keys();
    // Signed by a key of the attacker's, which it names and embeds.
    let attacker = rsa_jwk(RSA_OTHER, "rsa-1", None);
    let header = json!({"alg": "RS256", "kid": "rsa-1", "jku": "https://attacker.test/jwks",
                        "x5u": "https://attacker.test/cert", "jwk": attacker});
    let token = mint(&header, &claims(), RSA_OTHER, None);
    assert_eq!(verifier().verify(&token, &keys), Err(Refusal::Signature));
}

#[test]
fn a_tampered_payload_or_signature_is_refused() {
    let keys = standard_keys();
    let token = mint(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims(),
        RSA,
        None,
    );
    let parts: Vec<&str> = token.split('.').collect();
    let mut more = claims();
    more["scp"] = json!("inventory.admin");
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&more).unwrap()),
        parts[2]
    );
    assert_eq!(
        verifier().verify(&tampered_payload, &keys),
        Err(Refusal::Signature)
    );
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let tampered_signature = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert_eq!(
        verifier().verify(&tampered_signature, &keys),
        Err(Refusal::Signature)
    );
    assert_eq!(
        verifier().verify("not.a.token", &keys),
        Err(Refusal::Malformed)
    );
    assert_eq!(verifier().verify("", &keys), Err(Refusal::Malformed));
}

#[test]
fn the_algorithm_must_fit_the_key() {
    let keys = keys(&[rsa_jwk(RSA, "rsa-1", Some("PS256")), ec_jwk("ec-1")]);
    // RS256 on a key published for PS256.
    let token = mint(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims(),
        RSA,
        None,
    );
    assert_eq!(
        verifier().verify(&token, &keys),
        Err(Refusal::AlgorithmMismatch("RS256".to_owned()))
    );
    // ES256 naming an RSA key, RS256 naming an EC key.
    let token = mint(
        &json!({"alg": "ES256", "kid": "rsa-1"}),
        &claims(),
        P256,
        None,
    );
    assert_eq!(
        verifier().verify(&token, &keys),
        Err(Refusal::AlgorithmMismatch("ES256".to_owned()))
    );
    let token = mint(
        &json!({"alg": "RS256", "kid": "ec-1"}),
        &claims(),
        RSA,
        None,
    );
    assert_eq!(
        verifier().verify(&token, &keys),
        Err(Refusal::AlgorithmMismatch("RS256".to_owned()))
    );
}

#[test]
fn issuer_audience_and_times_are_checked_with_sixty_seconds_of_skew() {
    let keys = standard_keys();
    let header = json!({"alg": "ES256", "kid": "ec-1"});
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        verifier().verify(&mint(&header, &c, P256, None), &keys)
    };
    assert_eq!(
        check(&|c| c["iss"] = json!("https://evil.test/")),
        Err(Refusal::Issuer)
    );
    assert_eq!(
        check(&|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        Err(Refusal::Issuer)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("api://other")),
        Err(Refusal::Audience)
    );
    assert!(check(&|c| c["aud"] = json!(["api://other", AUDIENCE])).is_ok());
    assert_eq!(
        check(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        Err(Refusal::Audience)
    );
    assert_eq!(
        check(&|c| c["exp"] = json!(now() - 120)),
        Err(Refusal::Expired)
    );
    assert!(
        check(&|c| c["exp"] = json!(now() - 30)).is_ok(),
        "within the skew"
    );
    assert_eq!(
        check(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        Err(Refusal::Expired)
    );
    assert_eq!(
        check(&|c| c["nbf"] = json!(now() + 120)),
        Err(Refusal::NotYetValid)
    );
    assert!(
        check(&|c| c["nbf"] = json!(now() + 30)).is_ok(),
        "within the skew"
    );
}

#[test]
fn a_cognito_access_token_names_its_client_instead_of_an_audience() {
    let keys = standard_keys();
    let header = json!({"alg": "RS256", "kid": "rsa-1"});
    let cognito = |token_use: &str, client: &str| {
        json!({"iss": ISSUER, "client_id": client, "token_use": token_use, "sub": "svc",
               "exp": now() + 600, "scope": "twincell/inventory.write twincell/transactions.read"})
    };
    let identity = verifier()
        .verify(
            &mint(&header, &cognito("access", AUDIENCE), RSA, None),
            &keys,
        )
        .unwrap();
    assert_eq!(identity.client_id.as_deref(), Some(AUDIENCE));
    assert!(identity.grants("inventory.write") && identity.grants("transactions.read"));
    assert!(!identity.grants("inventory.admin") && !identity.grants("write"));
    assert_eq!(
        verifier().verify(&mint(&header, &cognito("id", AUDIENCE), RSA, None), &keys),
        Err(Refusal::TokenUse)
    );
    assert_eq!(
        verifier().verify(
            &mint(&header, &cognito("access", "someone-else"), RSA, None),
            &keys
        ),
        Err(Refusal::Audience)
    );
}

#[test]
fn entra_roles_count_as_granted_scopes() {
    let keys = standard_keys();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scp");
    c["roles"] = json!(["inventory.admin"]);
    let identity = verifier()
        .verify(
            &mint(&json!({"alg": "ES256", "kid": "ec-1"}), &c, P256, None),
            &keys,
        )
        .unwrap();
    assert!(identity.grants("inventory.admin"));
    assert!(!identity.grants("inventory.read"));
}

#[test]
fn a_scope_counts_only_bare_or_under_the_configured_resource_server() {
    let keys = standard_keys();
    let header = json!({"alg": "RS256", "kid": "rsa-1"});
    let mut c = claims();
    c["scp"] = json!(
        "inventory.read twincell/transactions.write other-api/inventory.admin \
         api://x/transactions.read xinventory.write twincell/"
    );
    let identity = verifier()
        .verify(&mint(&header, &c, RSA, None), &keys)
        .unwrap();
    assert!(identity.grants("inventory.read"), "a bare name");
    assert!(identity.grants("transactions.write"), "under twincell/");
    assert!(
        !identity.grants("inventory.admin"),
        "a foreign resource server's scope grants nothing here"
    );
    assert!(
        !identity.grants("transactions.read"),
        "nor an api:// prefix"
    );
    assert!(
        !identity.grants("inventory.write"),
        "xinventory.write is not inventory.write"
    );
    // Another configured resource server is the only one taken.
    let other = verifier().with_scope_prefixes(vec!["other-api".to_owned()]);
    let identity = other.verify(&mint(&header, &c, RSA, None), &keys).unwrap();
    assert!(identity.grants("inventory.admin"));
    assert!(!identity.grants("transactions.write"));
}

#[test]
fn a_token_that_is_not_an_access_token_is_refused_whatever_its_audience() {
    let keys = standard_keys();
    let header = json!({"alg": "RS256", "kid": "rsa-1"});
    // A Cognito ID token: `aud` is the app client, which is the audience.
    let id_token = json!({"iss": ISSUER, "aud": AUDIENCE, "token_use": "id", "sub": "user-1",
        "exp": now() + 600, "scope": "twincell/inventory.admin"});
    assert_eq!(
        verifier().verify(&mint(&header, &id_token, RSA, None), &keys),
        Err(Refusal::TokenUse)
    );
    let mut access = id_token.clone();
    access["token_use"] = json!("access");
    assert!(
        verifier()
            .verify(&mint(&header, &access, RSA, None), &keys)
            .is_ok()
    );
}

#[test]
fn only_signing_keys_of_accepted_kinds_and_sizes_are_kept() {
    let small_n = {
        let mut n = vec![0xC1_u8; 128];
        n[127] |= 1;
        b64(&n)
    };
    let mut enc = rsa_jwk(RSA, "enc", None);
    enc["use"] = json!("enc");
    let mut ops = rsa_jwk(RSA, "wrap", None);
    ops["key_ops"] = json!(["wrapKey"]);
    let mut no_kid = rsa_jwk(RSA, "x", None);
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut rs512 = rsa_jwk(RSA, "rs512", None);
    rs512["alg"] = json!("RS512");
    let mut es256_on_rsa = rsa_jwk(RSA, "mixed", None);
    es256_on_rsa["alg"] = json!("ES256");
    let document = json!({"keys": [
        rsa_jwk(RSA, "good-rsa", None),
        ec_jwk("good-ec"),
        enc, ops, no_kid, rs512, es256_on_rsa,
        {"kty": "RSA", "kid": "small", "n": small_n, "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&[3; 32])},
        "not a key",
    ]});
    let (keys, skipped) = Keys::from_jwks(&serde_json::to_vec(&document).unwrap()).unwrap();
    assert_eq!(keys.len(), 2, "{keys:?} {skipped:?}");
    assert!(keys.contains("good-rsa") && keys.contains("good-ec"));
    assert_eq!(skipped.len(), 10, "{skipped:?}");
    assert!(
        skipped.iter().any(|s| s.contains("1024 bits")),
        "{skipped:?}"
    );
    assert_eq!(Keys::from_jwks(b"[]").unwrap_err(), JwksError::NotAJwks);
}

/// The router with bearer tokens on, against a JWKS served on 127.0.0.1.
mod router {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use twincell_core::{CellId, InMemoryEventStore, RandomIds, Service, SystemClock, Topology};

    use super::*;
    use crate::auth::testing::IdentityProvider;
    use crate::auth::{Authenticator, KeyLocation, KeySource};

    async fn app(idp: &IdentityProvider, refresh: Duration) -> axum::Router {
        let keys = KeySource::new(vec![KeyLocation::Jwks(idp.jwks_url())])
            .unwrap()
            .with_refresh_interval(refresh);
        let auth = Arc::new(Authenticator::new(verifier(), keys));
        auth.warm_up().await;
        let service = Arc::new(Service::new(
            Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]),
            InMemoryEventStore::new(),
            SystemClock,
            RandomIds,
        ));
        crate::router_with(service, None, Some(auth))
    }

    fn token(scope: &str) -> String {
        let mut c = claims();
        c["scp"] = json!(scope);
        mint(&json!({"alg": "ES256", "kid": "ec-1"}), &c, P256, None)
    }

    struct Answer {
        status: StatusCode,
        challenge: Option<String>,
        retry_after: Option<String>,
        body: Value,
    }

    async fn send(app: &axum::Router, method: &str, path: &str, auth: &[&str]) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for value in auth {
            request = request.header("authorization", *value);
        }
        let body = if method == "POST" {
            r#"{"quantity":1,"reason":"x","order_id":"o-1","to_cell":"azure","account_id":"a","amount":"1","currency":"USD"}"#
        } else {
            ""
        };
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            challenge,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    fn concrete(path: &str) -> String {
        path.replace("{id}", "00000000-0000-7000-8000-000000000001")
            .replace("{sku}", "sku-1")
            .replace("{order_id}", "o-1")
    }

    #[tokio::test]
    async fn every_protected_route_answers_401_403_or_lets_through_by_its_scope() {
        let idp = IdentityProvider::start().await.unwrap();
        idp.set_jwks(json!({"keys": [ec_jwk("ec-1")]}));
        let app = app(&idp, Duration::from_secs(30)).await;
        for (method, path, scope) in crate::scopes() {
            let path = concrete(path);
            let none = send(&app, method, &path, &[]).await;
            assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(none.challenge.as_deref(), Some("Bearer"));
            assert_eq!(none.body["type"], "urn:twincell:problem:unauthorized");
            assert_eq!(
                none.body["detail"],
                crate::auth::guard::MISSING_TOKEN_DETAIL
            );

            let bad = send(&app, method, &path, &["Bearer not.a.token"]).await;
            assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                bad.challenge.as_deref(),
                Some(r#"Bearer error="invalid_token""#)
            );
            assert_eq!(bad.body["detail"], crate::auth::guard::INVALID_TOKEN_DETAIL);

            let other = send(
                &app,
                method,
                &path,
                &[&format!("Bearer {}", token("something.else"))],
            )
            .await;
            assert_eq!(other.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(
                other.challenge,
                Some(format!(
                    r#"Bearer error="insufficient_scope", scope="{scope}""#
                ))
            );
            assert_eq!(
                other.body["type"],
                "urn:twincell:problem:insufficient-scope"
            );

            let good = send(&app, method, &path, &[&format!("bearer {}", token(scope))]).await;
            assert!(
                good.status != StatusCode::UNAUTHORIZED && good.status != StatusCode::FORBIDDEN,
                "{method} {path}: {} {}",
                good.status,
                good.body
            );
        }
        assert_eq!(
            send(&app, "GET", "/health", &[]).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn tokens_in_the_query_twice_or_oversized_are_invalid_and_every_reason_reads_alike() {
        let idp = IdentityProvider::start().await.unwrap();
        idp.set_jwks(json!({"keys": [ec_jwk("ec-1")]}));
        let app = app(&idp, Duration::from_secs(30)).await;
        let good = format!("Bearer {}", token("inventory.read"));
        let mut expired_claims = claims();
        expired_claims["exp"] = json!(now() - 3600);
        let expired = format!(
            "Bearer {}",
            mint(
                &json!({"alg": "ES256", "kid": "ec-1"}),
                &expired_claims,
                P256,
                None
            )
        );
        let huge = format!("Bearer {}", "a".repeat(9 * 1024));
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                format!("/inventory/sku-1?access_token={}", token("inventory.read")),
                vec![],
            ),
            (
                "/inventory/sku-1?access_token=x".to_owned(),
                vec![good.as_str()],
            ),
            (
                "/inventory/sku-1".to_owned(),
                vec![good.as_str(), "Bearer not.a.token"],
            ),
            ("/inventory/sku-1".to_owned(), vec![huge.as_str()]),
            ("/inventory/sku-1".to_owned(), vec![expired.as_str()]),
            ("/inventory/sku-1".to_owned(), vec!["Basic dXNlcjpwYXNz"]),
            ("/inventory/sku-1".to_owned(), vec!["Bearer"]),
        ];
        let mut bodies = std::collections::BTreeSet::new();
        for (path, headers) in &cases {
            let a = send(&app, "GET", path, headers).await;
            if a.status == StatusCode::UNAUTHORIZED && a.challenge.as_deref() == Some("Bearer") {
                // The token in the query alone: no header, so "no token".
                assert!(
                    path.contains("access_token") && headers.is_empty(),
                    "{path}"
                );
                continue;
            }
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
            assert_eq!(
                a.challenge.as_deref(),
                Some(r#"Bearer error="invalid_token""#),
                "{path}"
            );
            bodies.insert(a.body.to_string());
        }
        assert_eq!(bodies.len(), 1, "one body whatever the reason: {bodies:?}");
        // Of two headers the last counts, as behind every AWS front door.
        assert_eq!(
            send(
                &app,
                "GET",
                "/inventory/sku-1",
                &["Bearer not.a.token", good.as_str()]
            )
            .await
            .status,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/inventory/sku-1", &[good.as_str()])
                .await
                .status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn forged_kids_cost_at_most_one_refresh_and_a_rotated_key_is_picked_up() {
        let idp = IdentityProvider::start().await.unwrap();
        idp.set_jwks(json!({"keys": [ec_jwk("ec-1")]}));
        let app = app(&idp, Duration::from_millis(300)).await;
        assert_eq!(idp.jwks_hits(), 1, "fetched at start");
        for i in 0..50 {
            let forged = mint(
                &json!({"alg": "ES256", "kid": format!("forged-{i}")}),
                &claims(),
                P256,
                None,
            );
            let a = send(
                &app,
                "GET",
                "/inventory/sku-1",
                &[&format!("Bearer {forged}")],
            )
            .await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        }
        assert!(idp.jwks_hits() <= 2, "{} fetches", idp.jwks_hits());
        // The provider rotates in an RSA key; a token signed with it gets
        // through once a refresh is allowed again.
        idp.set_jwks(json!({"keys": [ec_jwk("ec-1"), rsa_jwk(RSA, "rsa-new", None)]}));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut c = claims();
        c["scp"] = json!("inventory.read");
        let rotated = mint(&json!({"alg": "RS256", "kid": "rsa-new"}), &c, RSA, None);
        let a = send(
            &app,
            "GET",
            "/inventory/sku-1",
            &[&format!("Bearer {rotated}")],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }

    #[tokio::test]
    async fn without_any_key_protected_routes_answer_503_and_health_stays_up() {
        let idp = IdentityProvider::start().await.unwrap();
        idp.set_down(true);
        let app = app(&idp, Duration::from_secs(30)).await;
        let a = send(
            &app,
            "GET",
            "/inventory/sku-1",
            &[&format!("Bearer {}", token("inventory.read"))],
        )
        .await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.body["type"], "urn:twincell:problem:service-unavailable");
        // Retry-After says when the keys may next be fetched: the start
        // just tried, and no new try comes for 30 s.
        let seconds: u64 = a.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((20..=31).contains(&seconds), "Retry-After: {seconds}");
        assert_eq!(
            send(&app, "GET", "/health", &[]).await.status,
            StatusCode::OK
        );
    }
}

#[test]
fn what_a_refusal_says_for_the_log_holds_no_part_of_the_token() {
    let keys = standard_keys();
    let unknown = mint(
        &json!({"alg": "RS256", "kid": "kid-that-names-a-secret"}),
        &claims(),
        RSA,
        None,
    );
    let refusal = verifier().verify(&unknown, &keys).unwrap_err();
    assert!(matches!(refusal, Refusal::UnknownKid(_)));
    assert!(!refusal.to_string().contains("kid-that-names"), "{refusal}");
    // A claim of the wrong type: serde would quote its value.
    let mut c = claims();
    c["sub"] = json!(["claim-value-7f3a"]);
    let refusal = verifier()
        .verify(
            &mint(&json!({"alg": "RS256", "kid": "rsa-1"}), &c, RSA, None),
            &keys,
        )
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Claims(_)), "{refusal:?}");
    assert!(!refusal.to_string().contains("claim-value"), "{refusal}");
}
