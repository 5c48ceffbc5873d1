//! Parity cases as data: a case is a sequence of steps, each a request and
//! what must come back. Cases live in `contract-tests/cases/*.json`.
//!
//! Strings in requests and expectations may hold placeholders `{{name}}`.
//! In a request, a placeholder is replaced by its bound value; `{{run}}` is
//! bound before the first step to an id unique to this run and case, so
//! cases never collide, not even on a live deployment. In an expectation, a
//! placeholder matches whatever stands there and binds it on first sight; a
//! placeholder that recurs must match the same value everywhere.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// A named sequence of steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique, human-readable name.
    pub name: String,
    /// The steps, run in order on one target.
    pub steps: Vec<Step>,
}

/// One request and its expected answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What to send.
    pub request: RequestSpec,
    /// What must come back.
    pub expect: Expect,
}

/// A request as written in a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and optional query, as sent on the wire (percent-encoding kept).
    pub path: String,
    /// Headers in order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// A JSON body, serialized compactly.
    #[serde(default)]
    pub body_json: Option<Value>,
    /// A body given as text, sent byte for byte (UTF-8).
    #[serde(default)]
    pub body_text: Option<String>,
    /// A body given as base64 (any bytes).
    #[serde(default)]
    pub body_base64: Option<String>,
    /// A body of exactly `len` bytes: `prefix`, then `fill` repeated, then `suffix`.
    #[serde(default)]
    pub body_fill: Option<Fill>,
    /// Send no `authorization` header. Otherwise, on a target whose cell
    /// checks bearer tokens, a request to the API (not `/replication/*`,
    /// which has its own credentials) that sets none gets the target's
    /// default token, granting every scope.
    #[serde(default)]
    pub anonymous: bool,
}

/// A generated body of an exact size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// Leading text.
    pub prefix: String,
    /// One ASCII character repeated.
    pub fill: char,
    /// Trailing text.
    pub suffix: String,
    /// Total length in bytes.
    pub len: usize,
}

/// What must come back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status.
    pub status: u16,
    /// Headers that must have this value (placeholders allowed), or be absent
    /// (`null`).
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The body as JSON (placeholders allowed in strings); compared as JSON,
    /// and the bytes must be the compact serialization.
    #[serde(default)]
    pub body_json: Option<Value>,
    /// The body exactly, as text.
    #[serde(default)]
    pub body_text: Option<String>,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers in order (names as written).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An answer as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// What parity compares: status, the compared headers, the body bytes.
pub type ParityView<'a> = (u16, Vec<(&'static str, Option<String>)>, &'a [u8]);

/// The headers that must be byte-identical across targets.
pub const COMPARED_HEADERS: [&str; 8] = [
    "content-type",
    "location",
    "allow",
    "idempotent-replayed",
    "retry-after",
    "webhook-allowed-origin",
    "webhook-allowed-rate",
    "www-authenticate",
];

impl Answer {
    /// The value of header `name` (lower case), if any.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// What parity compares: status, body and the compared headers.
    #[must_use]
    pub fn parity_view(&self) -> ParityView<'_> {
        let headers = COMPARED_HEADERS
            .iter()
            .map(|h| (*h, self.header(h).map(str::to_owned)))
            .collect();
        (self.status, headers, &self.body)
    }
}

/// The prefix of the placeholders that name a minted token:
/// `{{token.expired}}`.
pub const TOKEN_PLACEHOLDER_PREFIX: &str = "token.";

impl Case {
    /// The tokens the case names (`{{token.<name>}}` in a path or header).
    #[must_use]
    pub fn tokens(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for step in &self.steps {
            let texts = std::iter::once(step.request.path.as_str())
                .chain(step.request.headers.iter().map(|(_, v)| v.as_str()));
            for text in texts {
                let mut rest = text;
                while let Some(start) = rest.find("{{") {
                    let Some(len) = rest[start + 2..].find("}}") else {
                        break;
                    };
                    if let Some(name) =
                        rest[start + 2..start + 2 + len].strip_prefix(TOKEN_PLACEHOLDER_PREFIX)
                    {
                        names.insert(name.to_owned());
                    }
                    rest = &rest[start + 4 + len..];
                }
            }
        }
        names
    }

    /// Whether the case is about bearer tokens: it sends its own
    /// `authorization` header, or a request without any. It runs only on
    /// targets that check them.
    #[must_use]
    pub fn is_about_tokens(&self) -> bool {
        self.steps.iter().any(|s| {
            s.request.anonymous
                || s.request
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        }) || !self.tokens().is_empty()
    }
}

/// Placeholder values bound so far in one case on one target.
pub type Bindings = BTreeMap<String, String>;

/// Replaces every `{{name}}` in `text` by its binding (unbound stay as is).
#[must_use]
pub fn substitute(text: &str, bindings: &Bindings) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match bindings.get(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    out
}

fn substitute_json(value: &Value, bindings: &Bindings) -> Value {
    match value {
        Value::String(s) => Value::String(substitute(s, bindings)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute_json(v, bindings)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (substitute(k, bindings), substitute_json(v, bindings)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl RequestSpec {
    /// The request with placeholders replaced.
    ///
    /// # Errors
    /// When the case gives more than one body, or bad base64.
    pub fn build(&self, bindings: &Bindings) -> Result<HttpRequest, String> {
        let bodies = [
            self.body_json.is_some(),
            self.body_text.is_some(),
            self.body_base64.is_some(),
            self.body_fill.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err("a request has at most one body".to_owned());
        }
        let body = if let Some(json) = &self.body_json {
            serde_json::to_vec(&substitute_json(json, bindings)).map_err(|e| e.to_string())?
        } else if let Some(text) = &self.body_text {
            substitute(text, bindings).into_bytes()
        } else if let Some(b64) = &self.body_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("body_base64: {e}"))?
        } else if let Some(fill) = &self.body_fill {
            let prefix = substitute(&fill.prefix, bindings);
            let middle = fill
                .len
                .checked_sub(prefix.len() + fill.suffix.len())
                .ok_or("body_fill: len is shorter than prefix + suffix")?;
            let mut body = prefix.into_bytes();
            body.extend(std::iter::repeat_n(
                u8::try_from(fill.fill).map_err(|_| "fill must be ASCII")?,
                middle,
            ));
            body.extend_from_slice(fill.suffix.as_bytes());
            body
        } else {
            Vec::new()
        };
        Ok(HttpRequest {
            method: self.method.clone(),
            path: substitute(&self.path, bindings),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, bindings)))
                .collect(),
            body,
        })
    }
}

/// Matches `actual` against a template with placeholders, binding them.
/// A placeholder takes the shortest text up to the next literal part (the
/// rest of the string when it is last).
pub fn match_template(template: &str, actual: &str, bindings: &mut Bindings) -> bool {
    let Some(start) = template.find("{{") else {
        return template == actual;
    };
    let Some(len) = template[start + 2..].find("}}") else {
        return template == actual;
    };
    let (literal, name) = (&template[..start], &template[start + 2..start + 2 + len]);
    let rest_template = &template[start + 4 + len..];
    let Some(actual_rest) = actual.strip_prefix(literal) else {
        return false;
    };
    let next_literal_end = rest_template.find("{{").unwrap_or(rest_template.len());
    let next_literal = &rest_template[..next_literal_end];
    let candidates: Vec<usize> = if next_literal.is_empty() {
        if rest_template.is_empty() {
            vec![actual_rest.len()]
        } else {
            (1..=actual_rest.len()).collect()
        }
    } else {
        actual_rest
            .match_indices(next_literal)
            .map(|(i, _)| i)
            .collect()
    };
    for end in candidates {
        let value = &actual_rest[..end];
        if value.is_empty() {
            continue;
        }
        let mut trial = bindings.clone();
        match trial.get(name) {
            Some(bound) if bound != value => continue,
            Some(_) => {}
            None => {
                trial.insert(name.to_owned(), value.to_owned());
            }
        }
        if match_template(rest_template, &actual_rest[end..], &mut trial) {
            *bindings = trial;
            return true;
        }
    }
    false
}

/// Matches a JSON value against an expected one with placeholders.
pub fn match_json(expected: &Value, actual: &Value, bindings: &mut Bindings) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => match_template(e, a, bindings),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| match_json(e, a, bindings))
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, ev)| a.get(k).is_some_and(|av| match_json(ev, av, bindings)))
        }
        (e, a) => e == a,
    }
}

/// Checks `answer` against `expect`, binding placeholders; the error says
/// what differs.
///
/// # Errors
/// A description of the first difference.
pub fn check(expect: &Expect, answer: &Answer, bindings: &mut Bindings) -> Result<(), String> {
    if answer.status != expect.status {
        return Err(format!(
            "status {} instead of {}; body: {}",
            answer.status,
            expect.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    for (name, value) in &expect.headers {
        let got = answer.header(&name.to_ascii_lowercase());
        match (value, got) {
            (None, None) => {}
            (None, Some(g)) => return Err(format!("header {name} should be absent, is {g:?}")),
            (Some(v), None) => return Err(format!("header {name} missing (expected {v:?})")),
            (Some(v), Some(g)) => {
                if !match_template(v, g, bindings) {
                    return Err(format!("header {name} is {g:?}, expected {v:?}"));
                }
            }
        }
    }
    if let Some(text) = &expect.body_text
        && answer.body != substitute(text, bindings).as_bytes()
    {
        return Err(format!(
            "body {:?}, expected {text:?}",
            String::from_utf8_lossy(&answer.body)
        ));
    }
    if let Some(json) = &expect.body_json {
        let actual: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer.body)
            )
        })?;
        // Bound placeholders (`{{cell}}` in object keys too) become literals.
        let json = substitute_json(json, bindings);
        if !match_json(&json, &actual, bindings) {
            return Err(format!("body {actual}\n   expected {json}"));
        }
    }
    Ok(())
}

/// Loads every case file of a directory (sorted by file name); case names
/// must be unique.
///
/// # Errors
/// Unreadable files, bad JSON, duplicate names.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Case>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        cases.extend(parse_cases(&text).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        if !names.insert(c.name.as_str()) {
            return Err(format!("duplicate case name {:?}", c.name));
        }
    }
    Ok(cases)
}

/// Parses one case file: a JSON array of cases.
///
/// # Errors
/// Bad JSON or an unknown field.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_binds_and_requires_the_same_value_on_recurrence() {
        let mut b = Bindings::new();
        assert!(match_template(
            "/transactions/{{tx}}",
            "/transactions/abc",
            &mut b
        ));
        assert_eq!(b["tx"], "abc");
        assert!(match_template("{{tx}}", "abc", &mut b));
        assert!(!match_template("{{tx}}", "abd", &mut b));
        assert!(match_template(
            "/inventory/{{sku}}/reservations/{{order}}",
            "/inventory/s-1/reservations/o-1",
            &mut b
        ));
        assert_eq!((b["sku"].as_str(), b["order"].as_str()), ("s-1", "o-1"));
        assert!(!match_template("/a/{{x}}", "/b/c", &mut b));
        assert!(
            !match_template("/a/{{y}}", "/a/", &mut b),
            "a placeholder matches at least one character"
        );
    }

    #[test]
    fn json_matching_is_structural_with_placeholders_in_strings() {
        let mut b = Bindings::new();
        let expected = serde_json::json!({"id": "{{id}}", "n": 1, "list": ["{{id}}"]});
        assert!(match_json(
            &expected,
            &serde_json::json!({"id": "x", "n": 1, "list": ["x"]}),
            &mut b
        ));
        let mut b = Bindings::new();
        assert!(!match_json(
            &expected,
            &serde_json::json!({"id": "x", "n": 1, "list": ["y"]}),
            &mut b
        ));
        let mut b = Bindings::new();
        assert!(!match_json(
            &expected,
            &serde_json::json!({"id": "x", "n": 1, "list": ["x"], "extra": 1}),
            &mut b
        ));
    }

    #[test]
    fn substitution_fills_bound_placeholders_only() {
        let b = Bindings::from([("run".to_owned(), "r1".to_owned())]);
        assert_eq!(substitute("sku-{{run}}-{{other}}", &b), "sku-r1-{{other}}");
    }

    #[test]
    fn fill_builds_a_body_of_the_exact_length() {
        let spec = RequestSpec {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![],
            body_json: None,
            body_text: None,
            body_base64: None,
            body_fill: Some(Fill {
                prefix: "{\"a\":\"".into(),
                fill: 'x',
                suffix: "\"}".into(),
                len: 65_537,
            }),
            anonymous: false,
        };
        assert_eq!(spec.build(&Bindings::new()).unwrap().body.len(), 65_537);
    }
}
