//! The shared store contract on Cosmos DB, through the whole SDK pipeline
//! against its in-process emulator (a fresh account per test).

twincell_core::store_contract_tests!(async async {
    twincell_cosmos::emulator::fresh_store()
        .await
        .unwrap_or_else(|e| panic!("the Cosmos emulator did not start: {e}"))
});
