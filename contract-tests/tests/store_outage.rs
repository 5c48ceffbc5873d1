//! The AWS `api` process on DynamoDB while DynamoDB goes away and comes
//! back: `/health` says 503 (problem+json, `Retry-After`) while the store
//! is unreachable, commands fail whole with 503, and the same process
//! answers 200 again once the store is back. moto is a server of this
//! test's own, stopped and started for real.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use twincell_contract::case::{Answer, HttpRequest};
use twincell_contract::lambda_events::Shape;
use twincell_contract::target::{LambdaProcess, Session, Target};
use twincell_dynamodb::testing::{MotoServer, store_at};

fn request(method: &str, path: &str, body: &str) -> HttpRequest {
    HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.as_bytes().to_vec(),
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn assert_unavailable(answer: &Answer, what: &str) {
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 503, "{what}: {body}");
    assert_eq!(
        header(answer, "content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(header(answer, "retry-after"), Some("1"), "{what}");
    assert!(
        body.contains("urn:twincell:problem:service-unavailable"),
        "{what}: {body}"
    );
}

fn assert_ok(answer: &Answer, when: &str) {
    assert_eq!(
        answer.status,
        200,
        "{when}: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

async fn send(session: &mut Box<dyn Session>, req: HttpRequest) -> Answer {
    session.send(&req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_dynamodb_down_and_back_up_without_a_restart() {
    let mut moto = MotoServer::launch().unwrap();
    let endpoint = moto.endpoint();
    let table = "outage";
    let target =
        LambdaProcess::new(Shape::HttpV2, "aws", "azure").on_dynamodb_table(&endpoint, table);
    let mut api = target.session().await.unwrap();

    let serving = [
        request("GET", "/health", ""),
        request(
            "POST",
            "/inventory/sku-outage/receipts",
            r#"{"quantity":5}"#,
        ),
    ];
    for req in &serving {
        assert_ok(&send(&mut api, req.clone()).await, "before the outage");
    }

    moto.stop();
    assert_unavailable(
        &send(&mut api, request("GET", "/health", "")).await,
        "health with moto stopped",
    );
    assert_unavailable(
        &send(
            &mut api,
            request(
                "POST",
                "/inventory/sku-outage/reservations",
                r#"{"order_id":"o-1","quantity":2}"#,
            ),
        )
        .await,
        "a reservation with moto stopped",
    );

    // A restarted moto starts empty: the table is made again, as a restore
    // would bring it back.
    moto.start().unwrap();
    store_at(&endpoint, table).create_table().await.unwrap();
    for req in &serving {
        assert_ok(&send(&mut api, req.clone()).await, "after the outage");
    }
}
