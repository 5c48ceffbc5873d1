//! The shared store contract on SQLite, each rule on a fresh file.

twincell_core::store_contract_tests!(async twincell_sqlite::testing::fresh_store("contract"));
