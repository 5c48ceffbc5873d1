//! Every case on every local target — the router in-process, the Lambda
//! handler in-process for each AWS event shape, the Azure `handler` binary
//! as a process on a socket, the Lambda `api` binary as a process under the
//! Runtime API emulator, in memory, on SQLite and on DynamoDB (moto), and
//! the `handler` again on SQLite and on Cosmos DB (the SDK's emulator) —
//! each matching its expectation, all byte-identical.
//!
//! The process targets need the binaries built with the `contract-mode`
//! feature (scripts/test.sh builds them) and moto (`TWINCELL_MOTO_SERVER`,
//! which scripts/test.sh installs; the suite starts its own server);
//! without them this test fails and says why.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use common::{CELL, InProcessLambda, InProcessRouter, PEER, identity_provider};
use twincell_contract::lambda_events::Shape;
use twincell_contract::runner::run_all;
use twincell_contract::target::{AzureProcess, LambdaProcess, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_passes_on_every_target_with_identical_answers() {
    let cases = twincell_contract::case::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cases"
    )))
    .unwrap();
    assert!(
        cases.len() >= 120,
        "the suite holds {} cases; at least 120 are required",
        cases.len()
    );
    // Every target checks bearer tokens of a provider served here, as a
    // deployed cell does: requests carry a token granting every scope
    // unless the case is about tokens.
    let (idp, auth) = identity_provider().await;
    let mut targets: Vec<Box<dyn Target>> = vec![Box::new(InProcessRouter(Some(auth.clone())))];
    for shape in Shape::ALL {
        targets.push(Box::new(InProcessLambda(shape, Some(auth.clone()))));
    }
    targets.push(Box::new(
        AzureProcess::new(CELL, PEER).with_auth(auth.clone()),
    ));
    targets.push(Box::new(
        AzureProcess::new(CELL, PEER)
            .on_cosmos_emulator()
            .with_auth(auth.clone()),
    ));
    targets.push(Box::new(
        AzureProcess::new(CELL, PEER)
            .on_sqlite()
            .with_auth(auth.clone()),
    ));
    targets.push(Box::new(
        LambdaProcess::new(Shape::HttpV2, CELL, PEER).with_auth(auth.clone()),
    ));
    targets.push(Box::new(
        LambdaProcess::new(Shape::HttpV2, CELL, PEER)
            .on_sqlite()
            .with_auth(auth.clone()),
    ));
    // A moto server of the suite's own: the shared one serves the other
    // DynamoDB tests, and one busy Python process (a megabyte-sized table
    // copied per write) would stall this suite's requests behind them.
    let moto = twincell_dynamodb::testing::MotoServer::launch().unwrap();
    targets.push(Box::new(
        LambdaProcess::new(Shape::HttpV2, CELL, PEER)
            .on_dynamodb(&moto.endpoint())
            .with_auth(auth),
    ));
    let total = cases.len();
    let (cases, notes) = twincell_contract::runner::runnable(cases, &targets);
    assert_eq!(cases.len(), total, "every case runs here: {notes:?}");
    let report = run_all(&cases, "r", &targets).await;
    println!("{}", report.render());
    assert_eq!(report.failures(), 0, "{}", report.render());
    assert_eq!(
        idp.attacker_hits(),
        0,
        "a cell fetched a URL named inside a token"
    );
}

#[test]
fn embedded_cases_are_the_case_files() {
    let embedded = twincell_contract::embedded_cases().unwrap();
    let on_disk = twincell_contract::case::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cases"
    )))
    .unwrap();
    assert_eq!(embedded.len(), on_disk.len());
}
