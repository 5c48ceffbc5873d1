//! `template.yaml` declares the table this store expects, with the stream,
//! recovery and billing the design asks for, and grants the function the
//! store's calls and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_yaml::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_table_is_keyed_streamed_recoverable_and_on_demand() {
    let t = template();
    let table = &t["Resources"]["EventsTable"];
    assert_eq!(table["Type"].as_str(), Some("AWS::DynamoDB::Table"));
    assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"));
    let p = &table["Properties"];
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    let keys: Vec<(&str, &str)> = p["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("pk", "HASH"), ("sk", "RANGE")]);
    let mut attributes: Vec<(&str, &str)> = p["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap(),
                a["AttributeType"].as_str().unwrap(),
            )
        })
        .collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        [
            ("origin_shard", "S"),
            ("pk", "S"),
            ("recorded_at", "N"),
            ("sk", "S")
        ]
    );
    let indexes = p["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(indexes.len(), 1);
    let index = &indexes[0];
    assert_eq!(
        index["IndexName"].as_str(),
        Some(twincell_dynamodb::ORIGIN_INDEX)
    );
    let index_keys: Vec<(&str, &str)> = index["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        index_keys,
        [("origin_shard", "HASH"), ("recorded_at", "RANGE")]
    );
    assert_eq!(
        index["Projection"]["ProjectionType"].as_str(),
        Some("INCLUDE")
    );
    assert_eq!(strings(&index["Projection"]["NonKeyAttributes"]), ["event"]);
    assert_eq!(
        p["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_IMAGE")
    );
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
}

#[test]
fn the_function_may_make_the_stores_calls_on_its_table_and_nothing_else() {
    let t = template();
    let function = &t["Resources"]["ApiFunction"]["Properties"];
    let table_env = &function["Environment"]["Variables"]["TWINCELL_DYNAMODB_TABLE"];
    assert!(
        format!("{table_env:?}").contains("EventsTable"),
        "{table_env:?}"
    );
    let policies = function["Policies"].as_sequence().unwrap();
    assert_eq!(policies.len(), 1, "one inline policy: {policies:?}");
    let statements = policies[0]["Statement"].as_sequence().unwrap();
    assert_eq!(
        statements.len(),
        2,
        "the store's calls and the replication keys"
    );
    // The second statement: reading the replication keys' secrets, nothing else.
    assert_eq!(
        statements[1]["Action"].as_str(),
        Some("secretsmanager:GetSecretValue")
    );
    let statement = &statements[0];
    assert_eq!(statement["Effect"].as_str(), Some("Allow"));
    let mut actions = strings(&statement["Action"]);
    actions.sort();
    assert_eq!(actions, twincell_dynamodb::IAM_ACTIONS);
    let resources = statement["Resource"].as_sequence().unwrap();
    assert_eq!(resources.len(), 2, "{resources:?}");
    let table = format!("{:?}", resources[0]);
    assert!(table.contains("EventsTable.Arn"), "{table}");
    let index = format!("{:?}", resources[1]);
    assert!(
        index.contains(&format!(
            "${{EventsTable.Arn}}/index/{}",
            twincell_dynamodb::ORIGIN_INDEX
        )),
        "{index}"
    );
    for r in resources {
        assert!(!format!("{r:?}").contains('*'), "{r:?}");
    }
}
