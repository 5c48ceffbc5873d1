//! The `api` Lambda in-process: real event shapes through `lambda_http`'s
//! own adapter (the code `lambda_http::run` drives), out as the JSON the
//! function returns to the Lambda service.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service as _, ServiceExt as _};
use lambda_http::{Adapter, Context, LambdaEvent};
use serde_json::Value;
use twincell_core::testing::{ManualClock, SequentialIds};
use twincell_core::{CellId, InMemoryEventStore, Service, Timestamp, Topology};

fn service() -> Arc<Service<InMemoryEventStore, ManualClock, SequentialIds>> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Arc::new(Service::new(
        topology,
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::from_unix_millis(1_795_320_745_000).unwrap(), 0),
        SequentialIds::default(),
    ))
}

/// Invokes the handler with one event; returns the function's JSON answer.
async fn invoke(event: &str) -> Value {
    invoke_app(event, twincell_aws::app(service(), None)).await
}

async fn invoke_app(event: &str, app: twincell_aws::App) -> Value {
    let payload: LambdaRequest = serde_json::from_str(event).unwrap();
    let mut adapter = Adapter::from(app);
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap();
    serde_json::to_value(response).unwrap()
}

/// The body the client gets, after API Gateway decodes base64.
fn body(answer: &Value) -> Vec<u8> {
    use base64::Engine as _;
    let text = answer["body"].as_str().unwrap_or_default();
    if answer["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        text.as_bytes().to_vec()
    }
}

fn header<'a>(answer: &'a Value, name: &str) -> Option<&'a str> {
    answer["headers"][name]
        .as_str()
        .or_else(|| answer["multiValueHeaders"][name][0].as_str())
}

#[tokio::test]
async fn rest_api_with_a_stage_routes_as_if_there_were_none() {
    let answer = invoke(include_str!("events/rest_v1_prod_post_transactions.json")).await;
    assert_eq!(answer["statusCode"], 201, "{answer}");
    let json: Value = serde_json::from_slice(&body(&answer)).unwrap();
    assert_eq!(json["amount"], "19.90");
    assert!(
        header(&answer, "location")
            .unwrap()
            .starts_with("/transactions/")
    );
    assert_eq!(header(&answer, "x-twincell-cell"), Some("aws"));
}

#[tokio::test]
async fn http_api_with_a_named_stage_and_a_base64_body_routes_and_decodes() {
    let answer = invoke(include_str!(
        "events/http_v2_prod_post_transactions_base64.json"
    ))
    .await;
    assert_eq!(answer["statusCode"], 201, "{answer}");
    let json: Value = serde_json::from_slice(&body(&answer)).unwrap();
    assert_eq!(
        (json["account_id"].as_str(), json["amount"].as_str()),
        (Some("acct-1"), Some("19.90"))
    );
}

#[tokio::test]
async fn rest_and_http_api_give_the_same_body_for_the_same_request() {
    let rest = invoke(include_str!("events/rest_v1_prod_post_transactions.json")).await;
    let http = invoke(include_str!(
        "events/http_v2_prod_post_transactions_base64.json"
    ))
    .await;
    // Different idempotency keys give different ids; all else is the same.
    let strip = |a: &Value| {
        let mut v: Value = serde_json::from_slice(&body(a)).unwrap();
        v["transaction_id"] = Value::Null;
        v
    };
    assert_eq!(strip(&rest), strip(&http));
    assert_eq!(header(&rest, "content-type"), header(&http, "content-type"));
}

#[tokio::test]
async fn alb_health_check_is_answered_with_the_callers_request_id() {
    let answer = invoke(include_str!("events/alb_get_health.json")).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(body(&answer), br#"{"status":"ok"}"#);
    assert_eq!(header(&answer, "x-request-id"), Some("alb-req-1"));
}

#[tokio::test]
async fn function_url_unknown_route_is_the_routers_problem_json_404() {
    let answer = invoke(include_str!("events/function_url_get_unknown.json")).await;
    assert_eq!(answer["statusCode"], 404, "{answer}");
    assert_eq!(
        header(&answer, "content-type"),
        Some("application/problem+json")
    );
    let json: Value = serde_json::from_slice(&body(&answer)).unwrap();
    assert_eq!(json["type"], "urn:twincell:problem:not-found");
}

/// An authorizer in front of the function (a JWT or Lambda authorizer of
/// API Gateway, claims and all) proves nothing to it: only the token in
/// the request is checked, by the shared router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_gateway_authorizer_context_is_never_trusted() {
    let idp = twincell_http::auth::testing::IdentityProvider::start()
        .await
        .unwrap();
    let env = idp.env();
    let auth = twincell_http::auth::from_env(|name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let claims = serde_json::json!({"sub": "admin", "scope": "inventory.admin inventory.read",
                                     "scp": "inventory.admin", "roles": "inventory.admin"});
    let mut http: Value = serde_json::from_str(include_str!(
        "events/http_v2_prod_post_transactions_base64.json"
    ))
    .unwrap();
    http["rawPath"] = "/prod/inventory/sku-1".into();
    http["requestContext"]["http"]["method"] = "GET".into();
    http["requestContext"]["http"]["path"] = "/prod/inventory/sku-1".into();
    http["requestContext"]["authorizer"] = serde_json::json!({
        "jwt": {"claims": claims.clone(), "scopes": ["inventory.read"]},
        "lambda": {"principalId": "admin", "scope": "inventory.read"}
    });
    http["body"] = Value::Null;
    http["isBase64Encoded"] = false.into();
    let mut rest: Value =
        serde_json::from_str(include_str!("events/rest_v1_prod_post_transactions.json")).unwrap();
    rest["httpMethod"] = "GET".into();
    rest["path"] = "/inventory/sku-1".into();
    rest["requestContext"]["httpMethod"] = "GET".into();
    rest["requestContext"]["authorizer"] =
        serde_json::json!({"claims": claims, "principalId": "admin"});
    rest["body"] = Value::Null;
    for event in [http, rest] {
        let app = twincell_aws::app_with(service(), None, auth.clone());
        let answer = invoke_app(&event.to_string(), app).await;
        assert_eq!(answer["statusCode"], 401, "{answer}");
        assert_eq!(header(&answer, "www-authenticate"), Some("Bearer"));
        // With a token of its own, the same request goes through.
        let mut with_token = event.clone();
        let token = format!("Bearer {}", idp.token("all").unwrap());
        with_token["headers"]["authorization"] = token.clone().into();
        if with_token.get("multiValueHeaders").is_some() {
            with_token["multiValueHeaders"]["authorization"] = serde_json::json!([token]);
        }
        let app = twincell_aws::app_with(service(), None, auth.clone());
        let answer = invoke_app(&with_token.to_string(), app).await;
        assert_eq!(answer["statusCode"], 200, "{answer}");
    }
}
