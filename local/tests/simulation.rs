//! The whole system on virtual time, seed by seed (see
//! `twincell_local::simulation`): every seed's four counts at zero, the
//! same seed the same run, and a planted bug caught.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Instant;

use twincell_local::simulation::{self, Bug, Config};

/// Seeds this test runs (a debug build; `TWINCELL_SIM_SEEDS` overrides).
/// The test command also runs 10 000 on the release binary
/// (`twincell-local simulate`).
const SEEDS: u64 = 300;

fn seeds() -> u64 {
    std::env::var("TWINCELL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS)
}

#[test]
fn every_seed_loses_doubles_oversells_and_leaves_unanswered_nothing() {
    twincell_local::install_crypto();
    let started = Instant::now();
    let totals = simulation::many(1, seeds(), 2, Config::new).unwrap();
    let ms = started.elapsed().as_millis().max(1);
    let first: Vec<String> = totals
        .not_clean
        .iter()
        .take(5)
        .map(|r| format!("seed {}: {:?}", r.seed, r))
        .collect();
    println!(
        "simulation: {} seeds in {ms} ms ({} seeds/s); lost {}, doubled {}, oversold {}, unanswered {}; {} not clean",
        totals.seeds,
        u128::from(totals.seeds) * 1_000 / ms,
        totals.lost,
        totals.doubled,
        totals.oversold,
        totals.unanswered,
        totals.not_clean.len()
    );
    assert_eq!(totals.seeds, seeds());
    assert!(totals.operations > totals.seeds * 40, "{totals:?}");
    assert!(totals.not_clean.is_empty(), "{}", first.join("\n"));
}

#[test]
fn the_same_seed_runs_the_same() {
    for seed in [7, 8, 9] {
        let a = simulation::run(&Config::new(seed)).unwrap();
        let b = simulation::run(&Config::new(seed)).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
}

#[test]
fn a_dropped_delivery_is_caught() {
    let caught = (1..=200).find(|seed| {
        let mut config = Config::new(*seed);
        config.bug = Some(Bug::DropDeliveries);
        !simulation::run(&config).unwrap().clean()
    });
    println!("dropped deliveries caught at seed {caught:?}");
    assert!(caught.is_some());
}
