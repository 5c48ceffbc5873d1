//! # twincell-local
//!
//! Both cells, replication and its faults, on one machine, from the
//! registries only. Each piece is a stand-in written from the behaviour its
//! cloud service documents, including how it fails, because none of them
//! has an emulator a package registry offers:
//!
//! - [`eventgrid`]: an Event Grid custom topic (CloudEvents schema): the
//!   publish API with its key, webhook subscriptions validated with the
//!   CloudEvents handshake, at-least-once delivery with Event Grid's retry
//!   schedule and dead-lettering, and — switched on for tests — duplicates,
//!   reordering, delays, deliveries whose answer is lost, cuts and
//!   retention running out. A control API lets another process drive it.
//! - [`gateway`]: API Gateway HTTP API in front of the `api` Lambda: every
//!   request becomes a payload-v2 event for the real binary under a Lambda
//!   Runtime API emulator.
//! - [`stream_mapping`]: Lambda's event source mapping on the events
//!   table's DynamoDB stream: reads the stream with the real Streams API
//!   (moto locally) and invokes the real `replicator` binary with real
//!   stream event shapes, honouring `ReportBatchItemFailures`.
//!
//! `twincell-local`, the package's main binary, is the matrix as one
//! program ([`supervisor`]): both cells on SQLite, replicating through the
//! Event Grid stand-in, behind the [`frontdoor`], with commands that break
//! them while they run.
//!
//! The other binaries: `twincell-eventgrid` (the topic stand-in) and
//! `twincell-aws-local` (the AWS cell: the gateway with `api`, the mapping
//! with `replicator`). The Azure cell is the `handler` binary itself, with
//! its host's Cosmos DB trigger stood in by the handler in contract mode.
//! [`matrix`] starts all of them wired together on the clouds' stores (for
//! tests); `twincell-resync` is the
//! operator's resync tool. [`traffic_manager`] is Azure Traffic Manager's
//! monitoring and routing as a state machine, and [`frontdoor`] the HTTP
//! front door that follows it and retries what is safe to retry.

pub mod eventgrid;
pub mod frontdoor;
pub mod gateway;
pub mod matrix;
pub mod rng;
pub mod simulation;
mod spool;
pub mod stream_mapping;
pub mod supervisor;
pub mod traffic_manager;

/// A `--listen` address of a local tool: a loopback one only (their
/// control APIs take no key).
///
/// # Errors
/// What is wrong with it, for the argument parser to show.
pub fn loopback(value: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = value.parse().map_err(|e| format!("{e}"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err("must be a loopback address".to_owned())
    }
}

/// Installs *ring* as the process's TLS provider (reqwest is built
/// without one).
pub fn install_crypto() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
