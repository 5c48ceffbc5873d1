//! The parts of `docs/openapi.json` that restate a table of the code are
//! produced from that table here, so the document cannot drift from what
//! the router checks: the currency enum and the amount pattern per number
//! of minor units (from the core's ISO 4217 table), the quantity range, the
//! violation codes, the CloudEvent types, and the problem `type`, `title`
//! and `status` of every documented error response.
//!
//! The test fails when the document differs. To rewrite those parts after
//! changing a table:
//!
//! ```sh
//! TWINCELL_UPDATE_OPENAPI=1 cargo test -p twincell-http --test openapi generated_parts
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use twincell_core::{Currency, DomainEvent, Quantity, ViolationCode};
use twincell_http::ProblemKind;

fn document_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
}

/// `^...$` for a positive amount with at most `scale` decimals: 1 to 12
/// integer digits without a leading zero, or `0.` and a fraction holding a
/// non-zero digit. Written without look-around so every JSON Schema regex
/// dialect (ECMA 262, Python, Rust) reads it the same way.
fn amount_pattern(scale: u32) -> String {
    let whole = "[1-9][0-9]{0,11}";
    if scale == 0 {
        return format!("^{whole}$");
    }
    let fraction = format!("(?:\\.[0-9]{{1,{scale}}})?");
    // The first non-zero digit of a 0.x amount is at position i.
    let below_one: Vec<String> = (0..scale)
        .map(|i| {
            let zeros = "0".repeat(usize::try_from(i).unwrap());
            let rest = scale - 1 - i;
            if rest == 0 {
                format!("{zeros}[1-9]")
            } else {
                format!("{zeros}[1-9][0-9]{{0,{rest}}}")
            }
        })
        .collect();
    format!("^(?:{whole}{fraction}|0\\.(?:{}))$", below_one.join("|"))
}

/// Inclusive ranges of the characters in `0..=last` for which `pick` holds.
fn ranges(last: u32, pick: impl Fn(char) -> bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for c in (0..=last).filter_map(char::from_u32).filter(|c| pick(*c)) {
        let c = u32::from(c);
        match out.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => out.push((c, c)),
        }
    }
    out
}

fn class_items(ranges: &[(u32, u32)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("\\u{a:04X}")
            } else {
                format!("\\u{a:04X}-\\u{b:04X}")
            }
        })
        .collect()
}

/// The write-off reason's pattern, from the core's rule: any number of
/// allowed characters around one that is not white space. Written for the
/// Basic Multilingual Plane only, as `\uXXXX` escapes, the one form every
/// JSON Schema regex dialect (ECMA 262 with or without the `u` flag,
/// Python, Rust) reads the same way. Surrogates are not named: a JSON
/// string cannot hold a lone one (the router refuses it as malformed), and
/// Rust-based validators refuse a pattern that names them.
fn reason_pattern() -> String {
    use twincell_core::write_off_reason::reason_allows;
    let refused = ranges(0xFFFF, |c| !reason_allows(c));
    let refused_or_blank = ranges(0xFFFF, |c| !reason_allows(c) || c.is_whitespace());
    let any = format!("[^{}]", class_items(&refused));
    let visible = format!("[^{}]", class_items(&refused_or_blank));
    format!("^{any}*{visible}{any}*$")
}

/// The reason's description, naming what the pattern cannot: the refused
/// characters beyond the Basic Multilingual Plane.
fn reason_description() -> String {
    use twincell_core::write_off_reason::reason_allows;
    let astral: Vec<String> = ranges(0x10_FFFF, |c| u32::from(c) > 0xFFFF && !reason_allows(c))
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("U+{a:04X}")
            } else {
                format!("U+{a:04X}–U+{b:04X}")
            }
        })
        .collect();
    format!(
        "why the stock is written off: 1 to 200 characters (Unicode scalar values), not only white \
         space, with no control characters, no format characters (bidi controls, zero-width \
         characters) and no line or paragraph separators. The pattern states this for the Basic \
         Multilingual Plane; beyond it the router also refuses the format characters {}, which no \
         pattern names the same way in every regex dialect.",
        astral.join(", ")
    )
}

/// Currencies grouped by their minor units.
fn currencies_by_scale() -> BTreeMap<u32, Vec<&'static str>> {
    let mut groups: BTreeMap<u32, Vec<&'static str>> = BTreeMap::new();
    for c in Currency::all() {
        groups.entry(c.minor_units()).or_default().push(c.code());
    }
    groups
}

/// Which problems each reusable error response carries. Every kind of one
/// response shares its status (checked below).
const RESPONSES: &[(&str, &[ProblemKind])] = &[
    (
        "BadRequest",
        &[ProblemKind::MalformedBody, ProblemKind::InvalidHeader],
    ),
    ("InvalidHeader", &[ProblemKind::InvalidHeader]),
    ("MalformedBody", &[ProblemKind::MalformedBody]),
    ("PayloadTooLarge", &[ProblemKind::PayloadTooLarge]),
    ("UnsupportedMediaType", &[ProblemKind::UnsupportedMediaType]),
    ("ValidationFailed", &[ProblemKind::ValidationFailed]),
    (
        "ValidationFailedOrKeyReused",
        &[
            ProblemKind::ValidationFailed,
            ProblemKind::IdempotencyKeyReused,
        ],
    ),
    ("NotFound", &[ProblemKind::NotFound]),
    ("MethodNotAllowed", &[ProblemKind::MethodNotAllowed]),
    (
        "Conflict",
        &[
            ProblemKind::InsufficientStock,
            ProblemKind::ReservationMismatch,
            ProblemKind::ReservationClosed,
            ProblemKind::StockLimitExceeded,
        ],
    ),
    ("InternalError", &[ProblemKind::InternalError]),
    ("RequestTimeout", &[ProblemKind::RequestTimeout]),
    ("ServiceUnavailable", &[ProblemKind::ServiceUnavailable]),
    ("Unauthorized", &[ProblemKind::Unauthorized]),
    ("BearerUnauthorized", &[ProblemKind::Unauthorized]),
    ("InsufficientScope", &[ProblemKind::InsufficientScope]),
    ("DeliveryUnauthorized", &[ProblemKind::Unauthorized]),
    (
        "DeliveryForbidden",
        &[ProblemKind::InsufficientScope, ProblemKind::UntrustedEvent],
    ),
    ("ReplicationConflict", &[ProblemKind::ReplicationConflict]),
    ("UnsupportedEventType", &[ProblemKind::UnsupportedEventType]),
    (
        "ReplicationTargetFailed",
        &[ProblemKind::ReplicationTargetFailed],
    ),
];

fn problem_schema(kinds: &[ProblemKind]) -> Value {
    let status = kinds[0].status().as_u16();
    assert!(
        kinds.iter().all(|k| k.status().as_u16() == status),
        "{kinds:?} mix statuses"
    );
    json!({
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {
                "properties": {
                    "type": {"enum": kinds.iter().map(|k| k.type_uri()).collect::<Vec<_>>()},
                    "title": {"enum": kinds.iter().map(|k| k.title()).collect::<Vec<_>>()},
                    "status": {"const": status},
                }
            }
        ]
    })
}

/// Every generated part: a JSON pointer into the document and its value.
fn generated() -> Vec<(String, Value)> {
    let scales = currencies_by_scale();
    let max_scale = *scales.keys().max().unwrap();
    let per_scale: Vec<Value> = scales
        .iter()
        .map(|(scale, codes)| {
            json!({
                "if": {
                    "properties": {"currency": {"enum": codes}},
                    "required": ["currency"],
                },
                "then": {
                    "properties": {"amount": {"pattern": amount_pattern(*scale)}}
                }
            })
        })
        .collect();
    let mut parts = vec![
        (
            "/components/schemas/Currency/enum".to_owned(),
            json!(Currency::all().map(|c| c.code()).collect::<Vec<_>>()),
        ),
        (
            "/components/schemas/Amount/pattern".to_owned(),
            json!(amount_pattern(max_scale)),
        ),
        (
            "/components/schemas/CreateTransaction/allOf".to_owned(),
            json!(per_scale),
        ),
        (
            "/components/schemas/Quantity/minimum".to_owned(),
            json!(Quantity::MIN),
        ),
        (
            "/components/schemas/Quantity/maximum".to_owned(),
            json!(Quantity::MAX),
        ),
        (
            "/components/schemas/Violation/properties/code/enum".to_owned(),
            json!(
                ViolationCode::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "/components/schemas/Problem/properties/type/enum".to_owned(),
            json!(
                ProblemKind::ALL
                    .iter()
                    .map(|k| k.type_uri())
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "/components/schemas/WriteOffStock/properties/reason/pattern".to_owned(),
            json!(reason_pattern()),
        ),
        (
            "/components/schemas/WriteOffStock/properties/reason/description".to_owned(),
            json!(reason_description()),
        ),
        (
            "/components/schemas/CloudEvent/properties/type/enum".to_owned(),
            json!(DomainEvent::TYPE_NAMES),
        ),
    ];
    for (name, kinds) in RESPONSES {
        parts.push((
            format!("/components/responses/{name}/content/application~1problem+json/schema"),
            problem_schema(kinds),
        ));
    }
    parts
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    let slot = doc
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("docs/openapi.json has no object at {parent}"));
    slot.insert(key, value);
}

#[test]
fn generated_parts_of_the_openapi_document_match_the_code() {
    let path = document_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let parts = generated();
    if std::env::var_os("TWINCELL_UPDATE_OPENAPI").is_some() {
        for (pointer, value) in parts {
            set(&mut doc, &pointer, value);
        }
        let mut out = serde_json::to_string_pretty(&doc).unwrap();
        out.push('\n');
        std::fs::write(&path, out).unwrap();
        return;
    }
    let mut stale = Vec::new();
    for (pointer, value) in &parts {
        if doc.pointer(pointer) != Some(value) {
            stale.push(pointer.as_str());
        }
    }
    assert!(
        stale.is_empty(),
        "docs/openapi.json differs from the code at {stale:?}; rewrite it with \
         TWINCELL_UPDATE_OPENAPI=1 cargo test -p twincell-http --test openapi generated_parts"
    );
    // The file is exactly what the rewrite produces, so a rewrite after a
    // table change shows only that change.
    let mut canonical = serde_json::to_string_pretty(&doc).unwrap();
    canonical.push('\n');
    assert!(
        canonical == text,
        "docs/openapi.json is not in canonical form (sorted keys, two-space indent)"
    );
}

/// A reusable error response is only used under its own status.
#[test]
fn every_error_response_is_used_under_its_status() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(document_path()).unwrap()).unwrap();
    let statuses: BTreeMap<&str, u16> = RESPONSES
        .iter()
        .map(|(name, kinds)| (*name, kinds[0].status().as_u16()))
        .collect();
    let documented = doc["components"]["responses"].as_object().unwrap();
    for name in documented.keys() {
        assert!(
            statuses.contains_key(name.as_str()),
            "components/responses/{name} is not in RESPONSES"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(reference) = response["$ref"].as_str() else {
                    continue;
                };
                let name = reference.trim_start_matches("#/components/responses/");
                assert_eq!(
                    statuses.get(name).map(u16::to_string).as_deref(),
                    Some(status.as_str()),
                    "{method} {path} uses {name} under {status}"
                );
            }
        }
    }
}

/// Every operation says whether it is safe to retry (`x-twincell-retry`),
/// and says `with-idempotency-key` exactly where the router reads the
/// header: the writes a front door or a client may resend with their key.
#[test]
fn every_operation_says_whether_it_may_be_retried() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(document_path()).unwrap()).unwrap();
    // The router reads the key on these (the parity cases prove each).
    let keyed: Vec<(String, String)> = [
        "/transactions",
        "/inventory/{sku}/receipts",
        "/inventory/{sku}/write-offs",
        "/inventory/{sku}/transfers",
    ]
    .iter()
    .map(|path| ("post".to_owned(), (*path).to_owned()))
    .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let retry = operation["x-twincell-retry"].as_str();
            let takes_key = operation["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "Idempotency-Key"));
            let expected = if takes_key {
                "with-idempotency-key"
            } else {
                retry.unwrap_or("(missing)")
            };
            assert!(
                matches!(retry, Some("always" | "with-idempotency-key" | "never")),
                "{method} {path}: x-twincell-retry {retry:?}"
            );
            assert_eq!(retry, Some(expected), "{method} {path}");
            assert_eq!(
                takes_key,
                keyed.contains(&(method.clone(), path.clone())),
                "{method} {path} and the Idempotency-Key"
            );
        }
    }
}

/// The amount patterns accept exactly what the core accepts, on a spread of
/// inputs around every boundary.
#[test]
fn amount_patterns_agree_with_the_core() {
    let samples = [
        "0",
        "0.0",
        "0.00",
        "0.000",
        "0.0000",
        "0.00000",
        "0.1",
        "0.01",
        "0.001",
        "0.0001",
        "0.00001",
        "0.10",
        "0.100",
        "0.1000",
        "1",
        "1.",
        ".1",
        "01",
        "1.5",
        "1.50",
        "1.505",
        "1.5055",
        "1.50555",
        "999999999999",
        "999999999999.99",
        "1000000000000",
        "-1",
        "1e2",
        " 1",
        "1 ",
        "+1",
        "10",
        "100.0",
        "0.9999",
    ];
    for (scale, codes) in currencies_by_scale() {
        let pattern = regex_lite::Regex::new(&amount_pattern(scale)).unwrap();
        let currency = Currency::from_code(codes[0]).unwrap();
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                twincell_core::Money::parse(sample, currency).is_ok(),
                "{sample} in {} (scale {scale})",
                currency.code()
            );
        }
    }
}

fn pattern_at(doc: &Value, pointer: &str) -> regex_lite::Regex {
    let pattern = doc
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no pattern at {pointer}"));
    regex_lite::Regex::new(pattern).unwrap()
}

/// The hand-written identifier and write-off reason patterns accept exactly
/// what the core accepts.
#[test]
fn identifier_and_reason_patterns_agree_with_the_core() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(document_path()).unwrap()).unwrap();
    let id = pattern_at(&doc, "/components/schemas/Identifier/pattern");
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    for sample in [
        "a", ".", "..", "...", ".a", "a.", "..a", "a..", "_", "-", "a/b", "a b", "é", "", &long,
        &too_long, "A-Z_0.9",
    ] {
        assert_eq!(
            id.is_match(sample),
            twincell_core::Sku::new(sample).is_ok(),
            "identifier {sample:?}"
        );
    }
    let reason = pattern_at(
        &doc,
        "/components/schemas/WriteOffStock/properties/reason/pattern",
    );
    for sample in [
        "damaged",
        "tab\there",
        "nl\n",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "\u{a0}",
        "ünïcødé",
        "\u{202e}",
        " ",
        "  x  ",
        "\u{3000}",
        "a\u{2028}b",
        "a\u{200b}",
        "\u{feff}",
        "📦",
        "x\u{a0}y",
        "\u{ad}",
    ] {
        assert_eq!(
            reason.is_match(sample),
            twincell_core::write_off_reason::WriteOffReason::new(sample).is_ok(),
            "reason {sample:?}"
        );
    }
}

/// Every character of the Basic Multilingual Plane, alone and beside a
/// letter: the reason pattern and the core agree on each.
#[test]
fn the_reason_pattern_agrees_with_the_core_on_every_bmp_character() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(document_path()).unwrap()).unwrap();
    let reason = pattern_at(
        &doc,
        "/components/schemas/WriteOffStock/properties/reason/pattern",
    );
    let mut differ = Vec::new();
    for c in (0..=0xFFFF_u32).filter_map(char::from_u32) {
        for sample in [c.to_string(), format!("x{c}")] {
            let core =
                twincell_core::write_off_reason::WriteOffReason::new(sample.as_str()).is_ok();
            if reason.is_match(&sample) != core {
                differ.push(sample);
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
}

/// The scope each operation documents is the one the router asks for, and
/// exactly the protected operations document 401 and 403 for bearer tokens.
#[test]
fn documented_scopes_and_bearer_answers_match_the_router() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(document_path()).unwrap()).unwrap();
    let mut documented = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let bearer_401 = operation["responses"]["401"]["$ref"]
                == "#/components/responses/BearerUnauthorized";
            let bearer_403 =
                operation["responses"]["403"]["$ref"] == "#/components/responses/InsufficientScope";
            match operation["x-twincell-scope"].as_str() {
                Some(scope) => {
                    assert!(bearer_401 && bearer_403, "{method} {path}");
                    assert_eq!(
                        operation["security"],
                        json!([{ "BearerAuth": [scope] }]),
                        "{method} {path}: the security requirement names the scope"
                    );
                    documented.insert(
                        (method.to_ascii_uppercase(), path.clone()),
                        scope.to_owned(),
                    );
                }
                None => {
                    assert!(!bearer_401 && !bearer_403, "{method} {path}");
                    assert!(
                        !operation["security"].to_string().contains("BearerAuth"),
                        "{method} {path}"
                    );
                }
            }
        }
    }
    let router: BTreeMap<(String, String), String> = twincell_http::scopes()
        .map(|(m, p, s)| ((m.to_owned(), p.to_owned()), s.to_owned()))
        .collect();
    assert_eq!(documented, router);
}
