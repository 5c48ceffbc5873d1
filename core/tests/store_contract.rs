//! The store contract on the in-memory store, bare and inside
//! [`twincell_core::Metered`] (which the cells wrap their stores in). The
//! durable stores run the same checks.
#![allow(clippy::panic)]

twincell_core::store_contract_tests!(twincell_core::InMemoryEventStore::new());

mod metered {
    twincell_core::store_contract_tests!(twincell_core::Metered::new(
        twincell_core::InMemoryEventStore::new()
    ));
}
