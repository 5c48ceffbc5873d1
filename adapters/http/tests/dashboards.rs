//! The dashboards in `dashboards/` query what the cells write: every
//! metric a CloudWatch widget searches for is one the cells emit, searched
//! by exactly the dimensions its documents carry ([`emf::DOCUMENTS`]), in a
//! layout CloudWatch accepts; every metric and dimension the Azure
//! workbook's queries read is one of those too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use serde_json::Value;
use twincell_http::emf;

fn read(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboards/").to_owned() + name;
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn declared(metric: &str) -> Option<BTreeSet<String>> {
    emf::DOCUMENTS
        .iter()
        .find(|(name, _)| *name == metric)
        .map(|(_, extra)| {
            ["service", "cell"]
                .into_iter()
                .chain(extra.iter().copied())
                .map(str::to_owned)
                .collect()
        })
}

/// `SEARCH('{twincell,dim,…} MetricName="name" …', …)`: the namespace,
/// the dimension schema and the metric name.
fn search(expression: &str) -> (String, BTreeSet<String>, String) {
    let schema = expression
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(schema, _)| schema)
        .unwrap_or_else(|| panic!("no schema in {expression}"));
    let mut parts = schema.split(',').map(str::to_owned);
    let namespace = parts.next().unwrap();
    let dimensions = parts.collect();
    let metric = expression
        .split_once("MetricName=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("no MetricName in {expression}"));
    (namespace, dimensions, metric)
}

#[test]
fn the_cloudwatch_dashboard_searches_what_the_cells_write() {
    let body = read("cloudwatch.json");
    let widgets = body["widgets"].as_array().unwrap();
    assert!(!widgets.is_empty());
    let mut searched = BTreeSet::new();
    for widget in widgets {
        let kind = widget["type"].as_str().unwrap();
        assert!(["metric", "log", "text"].contains(&kind), "{widget}");
        let (x, width) = (
            widget["x"].as_u64().unwrap(),
            widget["width"].as_u64().unwrap(),
        );
        assert!((1..=24).contains(&width) && x + width <= 24, "{widget}");
        assert!((1..=1000).contains(&widget["height"].as_u64().unwrap()));
        assert!(widget["y"].as_u64().is_some());
        let properties = &widget["properties"];
        match kind {
            "metric" => {
                for metric in properties["metrics"].as_array().unwrap() {
                    if let Some(expression) = metric[0]["expression"].as_str() {
                        let (namespace, dimensions, name) = search(expression);
                        assert_eq!(namespace, emf::NAMESPACE, "{expression}");
                        let declared =
                            declared(&name).unwrap_or_else(|| panic!("the cells write no {name}"));
                        assert_eq!(dimensions, declared, "{expression}");
                        searched.insert(name);
                    } else {
                        // A platform metric: only Lambda's iterator age.
                        assert_eq!(metric[0], "AWS/Lambda", "{metric}");
                        assert_eq!(metric[1], "IteratorAge", "{metric}");
                    }
                }
            }
            "log" => {
                let query = properties["query"].as_str().unwrap();
                assert!(query.contains("filter trace_id ="), "{query}");
            }
            _ => {}
        }
    }
    // Every metric a cell writes in both clouds has a widget.
    for (name, _) in emf::DOCUMENTS {
        if name != emf::PUBLISHER_BACKLOG {
            assert!(searched.contains(name), "no widget shows {name}");
        }
    }
}

#[test]
fn the_azure_workbook_reads_what_the_cells_write() {
    let workbook = read("azure-workbook.json");
    assert_eq!(workbook["version"], "Notebook/1.0");
    let known: BTreeSet<&str> = emf::DOCUMENTS
        .iter()
        .flat_map(|(name, extra)| std::iter::once(*name).chain(extra.iter().copied()))
        .chain(["service", "cell"])
        .collect();
    let mut read_metrics = BTreeSet::new();
    for item in workbook["items"].as_array().unwrap() {
        match item["type"].as_u64().unwrap() {
            1 => assert!(item["content"]["json"].is_string()),
            3 => {
                let content = &item["content"];
                assert_eq!(content["version"], "KqlItem/1.0");
                let query = content["query"].as_str().unwrap();
                // Every `m.<field>` of an EMF document is a metric or a
                // dimension the cells write.
                for (i, _) in query.match_indices("m.") {
                    let field: String = query[i + 2..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if i > 0 && query[..i].ends_with(|c: char| c.is_ascii_alphanumeric()) {
                        continue;
                    }
                    assert!(known.contains(field.as_str()), "{field} in {query}");
                    // A member of a field is one of a histogram's
                    // (`emf::HISTOGRAMS`, written in EMF's aggregated form).
                    let rest = &query[i + 2 + field.len()..];
                    if let Some(member) = rest.strip_prefix('.') {
                        let member: String = member
                            .chars()
                            .take_while(char::is_ascii_alphanumeric)
                            .collect();
                        assert!(
                            emf::HISTOGRAMS.contains(&field.as_str())
                                && ["Values", "Counts", "Count", "Sum", "Min", "Max"]
                                    .contains(&member.as_str()),
                            "{field}.{member} in {query}"
                        );
                    }
                    read_metrics.insert(field);
                }
            }
            other => panic!("item type {other}"),
        }
    }
    for name in [
        "requests",
        "latency",
        "replicated_events",
        "replication_lag",
        "store_calls",
        "published_events",
        "publish_lag",
    ] {
        assert!(read_metrics.contains(name), "no query reads {name}");
    }
}
