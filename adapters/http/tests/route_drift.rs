//! The router, the Azure function folders and the SAM template declare the
//! same set of (method, route): a route added in one place and forgotten in
//! another fails here, not in a deployed cell.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::Path;

type Routes = BTreeSet<(String, String)>;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn router_routes() -> Routes {
    twincell_http::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

/// Catch-alls forward everything else to the router (its 404 / 405).
fn is_catch_all(path: &str) -> bool {
    path.contains("{*") || path.contains("+}")
}

fn azure_routes() -> Routes {
    let mut routes = Routes::new();
    let dir = root().join("functions-azure/functions");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path().join("function.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for binding in json["bindings"].as_array().unwrap() {
            if binding["type"] != "httpTrigger" {
                continue;
            }
            let route = format!("/{}", binding["route"].as_str().unwrap());
            if is_catch_all(&route) {
                continue;
            }
            for method in binding["methods"].as_array().unwrap() {
                routes.insert((method.as_str().unwrap().to_ascii_uppercase(), route.clone()));
            }
        }
    }
    routes
}

fn sam_routes() -> Routes {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut routes = Routes::new();
    for resource in template["Resources"].as_mapping().unwrap().values() {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in events.values() {
            if event["Type"] != "HttpApi" {
                continue;
            }
            let path = event["Properties"]["Path"].as_str().unwrap().to_owned();
            if is_catch_all(&path) {
                continue;
            }
            let method = event["Properties"]["Method"]
                .as_str()
                .unwrap()
                .to_ascii_uppercase();
            routes.insert((method, path));
        }
    }
    routes
}

#[test]
fn router_function_folders_and_sam_template_declare_the_same_routes() {
    let router = router_routes();
    assert_eq!(
        router.len(),
        twincell_http::ROUTES.len(),
        "ROUTES has a duplicate"
    );
    assert_eq!(
        azure_routes(),
        router,
        "functions-azure/functions/*/function.json"
    );
    assert_eq!(sam_routes(), router, "template.yaml");
}

#[test]
fn both_clouds_forward_unknown_routes_and_methods_to_the_router() {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    assert!(
        text.contains("Method: ANY, Path: \"/{proxy+}\""),
        "template.yaml needs the catch-all route"
    );
    let fallback =
        std::fs::read_to_string(root().join("functions-azure/functions/fallback/function.json"))
            .unwrap();
    let json: serde_json::Value = serde_json::from_str(&fallback).unwrap();
    assert_eq!(json["bindings"][0]["route"], "{*path}");
    assert_eq!(json["bindings"][0]["methods"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn every_declared_route_is_served_by_the_router() {
    use tower::ServiceExt;
    let service = std::sync::Arc::new(twincell_core::Service::new(
        twincell_core::Topology::new(twincell_core::CellId::new("aws").unwrap(), []),
        twincell_core::InMemoryEventStore::new(),
        twincell_core::SystemClock,
        twincell_core::RandomIds,
    ));
    for twincell_http::Route { method, path, .. } in twincell_http::ROUTES {
        let concrete = path
            .replace("{id}", "00000000-0000-7000-8000-000000000001")
            .replace("{sku}", "sku-1")
            .replace("{order_id}", "o-1");
        let request = http::Request::builder()
            .method(*method)
            .uri(&concrete)
            .body(axum::body::Body::empty())
            .unwrap();
        let replication = twincell_http::Replication {
            key: twincell_replication::Secret::new("route-drift-key-0123456789abcdef0").unwrap(),
            publisher: None,
            delivery_tokens: None,
            origin_keys: twincell_replication::signing::OriginKeys::default(),
        };
        let status = twincell_http::router_with_replication(service.clone(), Some(replication))
            .oneshot(request)
            .await
            .unwrap()
            .status();
        assert_ne!(
            status,
            http::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let problem_404 = status == http::StatusCode::NOT_FOUND;
        // A 404 here may only be "no such transaction / reservation" (or a
        // resync in a cell that publishes nothing), never "no route".
        assert!(
            !problem_404
                || path.contains("{id}")
                || path.contains("{order_id}")
                || *path == "/replication/resync",
            "{method} {path} -> {status}"
        );
    }
}

#[test]
fn openapi_document_matches_the_router_problem_types_and_codes() {
    let text = std::fs::read_to_string(root().join("docs/openapi.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Routes::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
            let responses = operation["responses"].as_object().unwrap();
            for status in ["404", "405", "500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} documents no {status}"
                );
            }
        }
    }
    assert_eq!(documented, router_routes(), "docs/openapi.json paths");

    let types: BTreeSet<String> =
        doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
    let expected: BTreeSet<String> = twincell_http::ProblemKind::ALL
        .iter()
        .map(|k| k.type_uri())
        .collect();
    assert_eq!(types, expected, "problem types in docs/openapi.json");

    let codes: BTreeSet<String> =
        doc["components"]["schemas"]["Violation"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
    let expected: BTreeSet<String> = twincell_core::ViolationCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(codes, expected, "violation codes in docs/openapi.json");
}

/// The only function that is not an HTTP route: the Cosmos DB trigger the
/// handler serves at `/replicate-outbound` (functions-azure tests invoke
/// it there). It must read the change feed from the beginning, keep a
/// lease, and retry a failed batch (without a retry policy the host drops
/// it) forever rather than skip it; non-HTTP triggers need the extension
/// bundle.
#[test]
fn the_change_feed_function_starts_from_the_beginning_and_never_drops_a_batch() {
    let dir = root().join("functions-azure/functions");
    let mut other_triggers = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let folder = entry.unwrap().path();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("function.json")).unwrap())
                .unwrap();
        let trigger = &json["bindings"][0];
        if trigger["type"] != "httpTrigger" {
            other_triggers.push((
                folder.file_name().unwrap().to_string_lossy().into_owned(),
                json.clone(),
            ));
        }
    }
    assert_eq!(other_triggers.len(), 1, "{other_triggers:?}");
    let (name, json) = &other_triggers[0];
    assert_eq!(name, "replicate-outbound");
    let trigger = &json["bindings"][0];
    assert_eq!(trigger["type"], "cosmosDBTrigger");
    assert_eq!(trigger["name"], "documents");
    assert_eq!(trigger["startFromBeginning"], true);
    assert_eq!(trigger["leaseContainerName"], "leases");
    assert_eq!(trigger["containerName"], "events");
    assert_eq!(json["retry"]["strategy"], "exponentialBackoff");
    assert_eq!(json["retry"]["maxRetryCount"], -1);
    let host: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("host.json")).unwrap()).unwrap();
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
}
