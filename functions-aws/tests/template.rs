//! `template.yaml` deploys the replicator as the replication design needs:
//! on the events table's stream from its start, one reader per shard,
//! partial batch failures honoured, a poison record set aside after
//! bounded retries, the target's key from Secrets Manager, and no more
//! permissions than reading that stream, that secret and writing that
//! queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_yaml::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(v: &Value) -> String {
    format!("{v:?}")
}

#[test]
fn the_replicator_reads_the_stream_in_order_and_never_skips_a_record() {
    let t = template();
    let f = &t["Resources"]["ReplicatorFunction"];
    assert_eq!(
        f["Metadata"]["BuildProperties"]["Binary"].as_str(),
        Some("replicator")
    );
    let events = f["Properties"]["Events"].as_mapping().unwrap();
    assert_eq!(events.len(), 1);
    let stream = events.values().next().unwrap();
    assert_eq!(stream["Type"].as_str(), Some("DynamoDB"));
    let p = &stream["Properties"];
    assert!(text(&p["Stream"]).contains("EventsTable.StreamArn"));
    assert_eq!(p["StartingPosition"].as_str(), Some("TRIM_HORIZON"));
    assert_eq!(p["ParallelizationFactor"].as_u64(), Some(1));
    assert_eq!(
        p["FunctionResponseTypes"].as_sequence().unwrap()[0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert_eq!(p["BisectBatchOnFunctionError"].as_bool(), Some(true));
    let retries = p["MaximumRetryAttempts"].as_i64().unwrap();
    assert!(
        (0..=10_000).contains(&retries),
        "bounded, not -1: {retries}"
    );
    assert!(
        text(&p["DestinationConfig"]["OnFailure"]["Destination"]).contains("ReplicationFailures")
    );
}

#[test]
fn the_replicator_gets_its_key_from_secrets_manager_and_little_else() {
    let t = template();
    let props = &t["Resources"]["ReplicatorFunction"]["Properties"];
    let env = &props["Environment"]["Variables"];
    assert!(
        env["TWINCELL_REPLICATION_TARGET_KEY"].is_null(),
        "never a plain key"
    );
    assert!(
        text(&env["TWINCELL_REPLICATION_TARGET_KEY_SECRET_ID"])
            .contains("ReplicationTargetKeySecretName")
    );
    let param = &t["Parameters"]["ReplicationTargetKeySecretName"];
    assert!(
        param["NoEcho"].is_null()
            && param["Description"]
                .as_str()
                .unwrap()
                .contains("Never the key itself")
    );
    let statements = props["Policies"][0]["Statement"].as_sequence().unwrap();
    let mut actions: Vec<String> = Vec::new();
    for s in statements {
        assert_eq!(s["Effect"].as_str(), Some("Allow"));
        assert!(!text(&s["Resource"]).contains("\"*\""), "{s:?}");
        match &s["Action"] {
            Value::String(a) => actions.push(a.clone()),
            Value::Sequence(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()))
            }
            other => panic!("{other:?}"),
        }
    }
    actions.sort();
    assert_eq!(
        actions,
        [
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
            "secretsmanager:GetSecretValue",
            "sqs:SendMessage"
        ]
    );
}

#[test]
fn the_inbound_key_is_generated_without_commas_and_read_by_the_api() {
    let t = template();
    let secret = &t["Resources"]["ReplicationKeySecret"];
    assert_eq!(secret["Type"].as_str(), Some("AWS::SecretsManager::Secret"));
    let generate = &secret["Properties"]["GenerateSecretString"];
    assert_eq!(generate["ExcludePunctuation"].as_bool(), Some(true));
    assert!(generate["PasswordLength"].as_u64().unwrap() >= 32);
    let env = &t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"];
    assert!(text(&env["TWINCELL_REPLICATION_KEY_SECRET_ID"]).contains("ReplicationKeySecret"));
    assert!(env["TWINCELL_REPLICATION_KEY"].is_null());
}

#[test]
fn the_deployed_api_is_told_to_run_on_its_table() {
    let t = template();
    let env = &t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["TWINCELL_STORE"].as_str(), Some("dynamodb"));
    assert!(text(&env["TWINCELL_DYNAMODB_TABLE"]).contains("EventsTable"));
}

#[test]
fn both_functions_write_metrics_unless_the_stack_says_off() {
    let t = template();
    let param = &t["Parameters"]["Metrics"];
    assert_eq!(param["Default"].as_str(), Some("emf"));
    let allowed: Vec<&str> = param["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        allowed,
        ["emf", "off"],
        "\"off\" quoted: YAML reads a bare off as false"
    );
    for function in ["ApiFunction", "ReplicatorFunction"] {
        let env = &t["Resources"][function]["Properties"]["Environment"]["Variables"];
        assert!(
            text(&env["TWINCELL_METRICS"]).contains("Metrics"),
            "{function}: {env:?}"
        );
    }
}

#[test]
fn events_are_signed_with_a_key_from_secrets_manager_and_checked_against_the_peers_keys() {
    let t = template();
    let replicator = &t["Resources"]["ReplicatorFunction"]["Properties"];
    let api = &t["Resources"]["ApiFunction"]["Properties"];
    for props in [replicator, api] {
        let env = &props["Environment"]["Variables"];
        assert!(env["TWINCELL_SIGNING_KEY"].is_null(), "never a plain key");
        assert!(text(&env["TWINCELL_SIGNING_KEY_SECRET_ID"]).contains("SigningKeySecretName"));
        assert!(
            text(&props["Policies"]).contains("SigningKeySecretName"),
            "the function may read the signing key's secret"
        );
    }
    let param = &t["Parameters"]["SigningKeySecretName"];
    assert!(
        param["Description"]
            .as_str()
            .unwrap()
            .contains("Never the key itself")
    );
    // The api checks every replicated event against the peers' public
    // keys: a parameter with no default, so a deployment names them.
    let origin = &t["Parameters"]["OriginKeys"];
    assert!(origin["Default"].is_null());
    assert!(text(&api["Environment"]["Variables"]["TWINCELL_ORIGIN_KEYS"]).contains("OriginKeys"));
}
