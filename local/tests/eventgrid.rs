//! The Event Grid stand-in behaves as Event Grid documents: the publish
//! API's answers, the webhook handshake before any delivery, retries on
//! the (scaled) schedule, final statuses dead-lettered at once, batches
//! within their size, and the control API's cut, heal and expiry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use twincell_local::eventgrid::{Config, SubscriptionConfig, TopicConfig};

const KEY: &str = "topic-key";

#[derive(Default)]
struct Subscriber {
    /// Answer the handshake?
    validates: bool,
    /// Statuses for the next deliveries (200 when empty).
    script: Vec<u16>,
    deliveries: Vec<(HeaderMap, Value)>,
}

async fn options(
    State(s): State<Arc<Mutex<Subscriber>>>,
    headers: HeaderMap,
) -> (StatusCode, HeaderMap) {
    let mut out = HeaderMap::new();
    if s.lock().unwrap().validates {
        out.insert(
            "webhook-allowed-origin",
            headers["webhook-request-origin"].clone(),
        );
        (StatusCode::OK, out)
    } else {
        (StatusCode::NOT_FOUND, out)
    }
}

async fn deliver(
    State(s): State<Arc<Mutex<Subscriber>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = s.lock().unwrap();
    let status = if s.script.is_empty() {
        200
    } else {
        s.script.remove(0)
    };
    if status == 200 {
        s.deliveries
            .push((headers, serde_json::from_slice(&body).unwrap()));
    }
    StatusCode::from_u16(status).unwrap()
}

async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn setup(
    validates: bool,
    script: Vec<u16>,
    batch: usize,
) -> (String, Arc<Mutex<Subscriber>>, reqwest::Client) {
    setup_with(validates, script, batch, None).await
}

async fn setup_with(
    validates: bool,
    script: Vec<u16>,
    batch: usize,
    spool_dir: Option<std::path::PathBuf>,
) -> (String, Arc<Mutex<Subscriber>>, reqwest::Client) {
    twincell_local::install_crypto();
    let subscriber = Arc::new(Mutex::new(Subscriber {
        validates,
        script,
        deliveries: Vec::new(),
    }));
    let sub_url = listen(
        axum::Router::new()
            .route("/events", axum::routing::post(deliver).options(options))
            .with_state(Arc::clone(&subscriber)),
    )
    .await;
    let config = Config {
        topics: vec![TopicConfig {
            name: "t".into(),
            key: KEY.into(),
        }],
        subscriptions: vec![SubscriptionConfig {
            name: "s".into(),
            topic: "t".into(),
            endpoint: format!("{sub_url}/events"),
            delivery_header: Some(("x-twincell-replication-key".into(), "secret".into())),
            max_events_per_batch: batch,
        }],
        time_divisor: 100,
        spool_dir,
        ..Config::default()
    };
    let url = listen(twincell_local::eventgrid::start(config).unwrap()).await;
    (url, subscriber, reqwest::Client::new())
}

fn event(id: u32) -> Value {
    json!({"specversion": "1.0", "id": format!("e{id}"), "source": "urn:test", "type": "t.v1", "data": {}})
}

async fn publish(client: &reqwest::Client, url: &str, key: &str, media: &str, body: String) -> u16 {
    client
        .post(format!("{url}/topics/t/api/events?api-version=2018-01-01"))
        .header("aeg-sas-key", key)
        .header("content-type", media)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";

async fn stats(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(format!("{url}/control/stats"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["subscriptions"]["s"]
        .clone()
}

async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ready().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_publish_api_answers_as_event_grid_does() {
    let (url, _, client) = setup(true, vec![], 1).await;
    let one = Value::Array(vec![event(1)]).to_string();
    assert_eq!(publish(&client, &url, KEY, BATCH, one.clone()).await, 200);
    assert_eq!(
        publish(&client, &url, "wrong", BATCH, one.clone()).await,
        401
    );
    assert_eq!(
        publish(&client, &url, KEY, "application/json", one.clone()).await,
        400
    );
    assert_eq!(
        publish(
            &client,
            &url,
            KEY,
            "application/cloudevents+json",
            event(2).to_string()
        )
        .await,
        200
    );
    let no_id = json!([{"specversion": "1.0", "source": "s", "type": "t"}]).to_string();
    assert_eq!(publish(&client, &url, KEY, BATCH, no_id).await, 400);
    let old = json!([{"specversion": "0.3", "id": "x", "source": "s", "type": "t"}]).to_string();
    assert_eq!(publish(&client, &url, KEY, BATCH, old).await, 400);
    let many = Value::Array((0..5_001).map(event).collect()).to_string();
    assert_eq!(publish(&client, &url, KEY, BATCH, many).await, 413);
    let r = client
        .post(format!("{url}/topics/t/api/events"))
        .header("aeg-sas-key", KEY)
        .header("content-type", BATCH)
        .body(one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "no api-version");
}

#[tokio::test]
async fn nothing_is_delivered_before_the_handshake_and_all_is_after() {
    let (url, subscriber, client) = setup(false, vec![], 3).await;
    let events = Value::Array((0..7).map(event).collect()).to_string();
    assert_eq!(publish(&client, &url, KEY, BATCH, events).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(subscriber.lock().unwrap().deliveries.is_empty());
    assert_eq!(stats(&client, &url).await["validated"], false);
    subscriber.lock().unwrap().validates = true;
    until("all 7 delivered", async || {
        stats(&client, &url).await["delivered"] == 7
    })
    .await;
    let s = subscriber.lock().unwrap();
    assert!(
        s.deliveries
            .iter()
            .all(|(h, b)| h["x-twincell-replication-key"] == "secret"
                && h["content-type"] == BATCH
                && b.as_array().unwrap().len() <= 3)
    );
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_and_final_ones_dead_lettered() {
    // 500 then 503: retried after 10 s and 30 s (divided by 100).
    let (url, subscriber, client) = setup(true, vec![500, 503], 1).await;
    let start = Instant::now();
    assert_eq!(
        publish(
            &client,
            &url,
            KEY,
            BATCH,
            Value::Array(vec![event(1)]).to_string()
        )
        .await,
        200
    );
    until("delivered after two retries", async || {
        stats(&client, &url).await["delivered"] == 1
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(stats(&client, &url).await["failed_attempts"], 2);

    // 400 is final: dead-lettered at once, never retried.
    subscriber.lock().unwrap().script = vec![400];
    assert_eq!(
        publish(
            &client,
            &url,
            KEY,
            BATCH,
            Value::Array(vec![event(2)]).to_string()
        )
        .await,
        200
    );
    until("dead-lettered", async || {
        stats(&client, &url).await["dead_lettered"] == 1
    })
    .await;
    let dead: Value = client
        .get(format!("{url}/control/dead-letters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["s"][0]["id"], "e2");
    assert_eq!(subscriber.lock().unwrap().deliveries.len(), 1);
}

#[tokio::test]
async fn a_cut_link_is_retried_until_healed_or_expired() {
    let (url, subscriber, client) = setup(true, vec![], 10).await;
    until("validated", async || {
        stats(&client, &url).await["validated"] == true
    })
    .await;
    client
        .post(format!("{url}/control/cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        publish(
            &client,
            &url,
            KEY,
            BATCH,
            Value::Array((0..3).map(event).collect()).to_string()
        )
        .await,
        200
    );
    until("a failed attempt", async || {
        stats(&client, &url).await["failed_attempts"]
            .as_u64()
            .unwrap()
            > 0
    })
    .await;
    assert!(subscriber.lock().unwrap().deliveries.is_empty());
    client
        .post(format!("{url}/control/heal"))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{url}/control/flush"))
        .send()
        .await
        .unwrap();
    until("delivered after healing", async || {
        stats(&client, &url).await["delivered"] == 3
    })
    .await;

    client
        .post(format!("{url}/control/cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        publish(
            &client,
            &url,
            KEY,
            BATCH,
            Value::Array((3..5).map(event).collect()).to_string()
        )
        .await,
        200
    );
    let expired: Value = client
        .post(format!("{url}/control/expire"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 2);
    client
        .post(format!("{url}/control/heal"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = stats(&client, &url).await;
    assert_eq!(
        (
            s["delivered"].as_u64(),
            s["dead_lettered"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some(3), Some(2), Some(0))
    );
}

#[tokio::test]
async fn a_stand_in_started_again_on_its_spool_delivers_what_it_had_accepted() {
    let dir = std::env::temp_dir().join(format!(
        "twincell-eventgrid-spool-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The first stand-in's subscriber never passes the handshake: nothing
    // it accepted is delivered before it "stops".
    let (first, never, client) = setup_with(false, vec![], 10, Some(dir.clone())).await;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let events: Vec<Value> = (0..5)
        .map(|i| {
            let mut e = event(i);
            e["time"] = json!(now);
            e
        })
        .collect();
    let body = Value::Array(events).to_string();
    assert_eq!(publish(&client, &first, KEY, BATCH, body).await, 200);
    assert_eq!(stats(&client, &first).await["pending"], 5);

    // Started again on the same spool, with a subscriber that answers.
    let (second, subscriber, _) = setup_with(true, vec![], 10, Some(dir.clone())).await;
    until("the kept events delivered", async || {
        subscriber.lock().unwrap().deliveries.len() == 1
    })
    .await;
    let delivered: Vec<String> = subscriber.lock().unwrap().deliveries[0]
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, ["e0", "e1", "e2", "e3", "e4"]);
    until("the delivery recorded", async || {
        stats(&client, &second).await["lag_ms"]["samples"] == 5
    })
    .await;
    assert!(never.lock().unwrap().deliveries.is_empty());

    // What was delivered is not kept: a third start has nothing to send.
    let (third, _, _) = setup_with(false, vec![], 10, Some(dir.clone())).await;
    assert_eq!(stats(&client, &third).await["pending"], 0);
}
