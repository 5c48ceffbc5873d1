//! The shared store contract on DynamoDB, served by a real moto server
//! (started by scripts/test.sh; every test fails if it is not there).

twincell_core::store_contract_tests!(async twincell_dynamodb::testing::fresh_store("contract"));
