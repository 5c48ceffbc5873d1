//! The store contract on the in-memory store. The durable stores run the
//! same checks.
#![allow(clippy::panic)]

twincell_core::store_contract_tests!(twincell_core::InMemoryEventStore::new());
