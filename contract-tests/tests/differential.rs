//! Differential test: 10 000 generated requests — valid, near-valid and
//! garbage bodies, random headers, methods and paths — sent in lockstep to
//! the router and to the Lambda handler behind each AWS event shape. Every
//! answer must be byte-identical across targets (status, body and the
//! compared headers), with a documented status, every failure problem+json.
//! The targets keep their state across requests; as they
//! all see the same sequence with a frozen clock, their states stay equal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::cell::RefCell;

use common::{InProcessLambda, InProcessRouter};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use twincell_contract::case::HttpRequest;
use twincell_contract::lambda_events::Shape;
use twincell_contract::target::{Session, Target};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("sku-1".to_owned()),
        2 => Just("o-1".to_owned()),
        2 => Just("00000000-0000-7000-8000-000000000001".to_owned()),
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just("%2e%2E".to_owned()),
        1 => Just("sku%2D1".to_owned()),
        1 => Just("a%2Fb".to_owned()),
        1 => Just("%FF".to_owned()),
        1 => Just("bad%20sku".to_owned()),
        1 => Just(String::new()),
        2 => "[A-Za-z0-9._~-]{1,12}",
        1 => "[A-Za-z0-9]{60,70}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let template = prop_oneof![
        Just("/health"),
        Just("/transactions"),
        Just("/transactions/{a}"),
        Just("/inventory/{a}"),
        Just("/inventory/{a}/receipts"),
        Just("/inventory/{a}/write-offs"),
        Just("/inventory/{a}/reservations"),
        Just("/inventory/{a}/reservations/{b}"),
        Just("/inventory/{a}/reservations/{b}/fulfilment"),
        Just("/inventory/{a}/transfers"),
        Just("/{a}"),
        Just("/{a}/{b}"),
        Just("/"),
    ];
    let query = prop_oneof![
        4 => Just(String::new()),
        1 => Just("?a=1&a=2".to_owned()),
        1 => "\\?[a-z]{1,3}=[a-z0-9%]{0,4}(&[a-z]{1,3}=[a-z0-9]{0,3}){0,2}",
    ];
    (template, segment(), segment(), any::<bool>(), query).prop_map(|(t, a, b, slash, q)| {
        let mut p = t.replace("{a}", &a).replace("{b}", &b);
        if slash && p.len() > 1 {
            p.push('/');
        }
        p + &q
    })
}

fn header_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,20}[!-~])?"
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let content_type = prop_oneof![
        5 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => Just(Some("APPLICATION/JSON; charset=UTF-8".to_owned())),
        1 => Just(Some("text/plain".to_owned())),
        1 => Just(Some("application/json; charset=latin1".to_owned())),
        1 => Just(Some("text/plain, application/json".to_owned())),
    ];
    let key = prop_oneof![
        4 => Just(None),
        2 => Just(Some("key-1".to_owned())),
        1 => Just(Some("key-2".to_owned())),
        1 => Just(Some("a b".to_owned())),
        1 => Just(Some("key-1, key-2".to_owned())),
        1 => Just(Some("k,".to_owned())),
        1 => header_value().prop_map(Some),
    ];
    let extra = proptest::collection::vec(("x-[a-z]{1,8}", header_value()), 0..3);
    let request_id = prop_oneof![3 => Just(None), 1 => header_value().prop_map(Some)];
    (content_type, key, extra, request_id).prop_map(|(ct, key, extra, rid)| {
        let mut h = Vec::new();
        if let Some(ct) = ct {
            h.push(("content-type".to_owned(), ct));
        }
        if let Some(k) = key {
            h.push(("idempotency-key".to_owned(), k));
        }
        if let Some(r) = rid {
            h.push(("x-request-id".to_owned(), r));
        }
        h.extend(extra);
        h
    })
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let amount = prop_oneof![
        Just(serde_json::json!("19.99")),
        Just(serde_json::json!("19.999")),
        Just(serde_json::json!("0")),
        Just(serde_json::json!(19.99)),
        Just(serde_json::json!("1e3")),
        "[0-9]{1,14}(\\.[0-9]{1,5})?".prop_map(serde_json::Value::from),
    ];
    let currency = prop_oneof![
        Just("USD"),
        Just("JPY"),
        Just("BHD"),
        Just("usd"),
        Just("XAU"),
        Just("ABC")
    ];
    let quantity = prop_oneof![
        Just(serde_json::json!(1)),
        Just(serde_json::json!(5)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("3")),
        Just(serde_json::json!(1_000_001)),
        (1u64..20).prop_map(serde_json::Value::from),
    ];
    let order = prop_oneof![Just("o-1"), Just("o-2"), Just("a b"), Just("")];
    let cell = prop_oneof![Just("aws"), Just("azure"), Just("gcp"), Just("AWS")];
    (amount, currency, quantity, order, cell, any::<u8>(), any::<bool>()).prop_map(
        |(amount, currency, quantity, order, cell, pick, extra)| {
            let mut v = match pick % 6 {
                0 => serde_json::json!({"account_id": "acct-1", "amount": amount, "currency": currency}),
                1 => serde_json::json!({"quantity": quantity}),
                2 => serde_json::json!({"quantity": quantity, "reason": "damaged"}),
                3 => serde_json::json!({"order_id": order, "quantity": quantity}),
                4 => serde_json::json!({"to_cell": cell, "quantity": quantity}),
                _ => serde_json::json!({}),
            };
            if extra {
                v["unexpected"] = serde_json::Value::Bool(true);
            }
            serde_json::to_vec(&v).unwrap()
        },
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json_body(),
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 1..200),
        1 => Just(b"{\"quantity\":1,\"quantity\":2}".to_vec()),
        1 => Just(b"\xEF\xBB\xBF{\"quantity\":3}".to_vec()),
        1 => Just(b"null".to_vec()),
        1 => (0usize..3).prop_map(|i| [b"[".repeat(130), b"]".repeat(130)].concat().split_off(i)),
    ]
}

fn request() -> impl Strategy<Value = HttpRequest> {
    let method = prop_oneof![
        4 => Just("POST"),
        3 => Just("GET"),
        1 => Just("DELETE"),
        1 => Just("PUT"),
        1 => Just("PATCH"),
        1 => Just("HEAD"),
        1 => Just("OPTIONS"),
    ];
    (method, path(), headers(), body()).prop_map(|(method, path, headers, body)| HttpRequest {
        method: method.to_owned(),
        path,
        headers,
        body,
    })
}

#[test]
fn ten_thousand_generated_requests_get_identical_answers_on_every_in_process_target() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut targets: Vec<Box<dyn Target>> = vec![Box::new(InProcessRouter(None))];
    for shape in Shape::ALL {
        targets.push(Box::new(InProcessLambda(shape, None)));
    }
    let sessions: Vec<Box<dyn Session>> = runtime.block_on(async {
        let mut s = Vec::new();
        for t in &targets {
            s.push(t.session().await.unwrap());
        }
        s
    });
    let sessions = RefCell::new(sessions);
    let mut runner = TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&request(), |req| {
        let answers = runtime.block_on(async {
            let mut taken = sessions.take();
            let mut answers = Vec::new();
            for session in &mut taken {
                answers.push(session.send(&req).await);
            }
            sessions.replace(taken);
            answers
        });
        let first = answers[0]
            .as_ref()
            .map_err(|e| TestCaseError::fail(format!("router: {e}")))?;
        // Only documented statuses, and every failure is problem+json.
        prop_assert!(
            [200, 201, 202, 400, 404, 405, 409, 413, 415, 422].contains(&first.status),
            "undocumented status {} for {req:?}: {}",
            first.status,
            String::from_utf8_lossy(&first.body)
        );
        if first.status >= 400 {
            prop_assert_eq!(
                first.header("content-type"),
                Some("application/problem+json")
            );
        }
        for (target, answer) in targets.iter().zip(&answers).skip(1) {
            let answer = answer
                .as_ref()
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", target.name())))?;
            prop_assert_eq!(
                first.parity_view(),
                answer.parity_view(),
                "{} differs from the router for {:?}",
                target.name(),
                req
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
