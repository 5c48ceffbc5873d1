//! A case's request as the Lambda event each AWS front door would send, and
//! the function's JSON answer as the answer that front door would give.
//!
//! Shapes, as documented by AWS and handled by `lambda_http`:
//! - REST API (v1) on stage `prod`: `path` percent-decoded, stage in the
//!   request context; headers and query both single- and multi-valued;
//!   bodies that are not UTF-8 arrive base64-encoded (binary media types).
//! - HTTP API (v2) on stage `prod`: `rawPath` with the stage, as sent;
//!   repeated headers joined with commas, cookies apart; bodies base64-
//!   encoded unless the content type is textual.
//! - ALB: path as sent, last value of repeated headers and query keys;
//!   bodies base64-encoded unless textual.
//! - Lambda function URL: the v2 shape on the `$default` stage.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::case::{Answer, HttpRequest};

/// The AWS front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// API Gateway REST API (payload v1), stage `prod`.
    RestV1,
    /// API Gateway HTTP API (payload v2), stage `prod`.
    HttpV2,
    /// Application Load Balancer.
    Alb,
    /// Lambda function URL.
    FunctionUrl,
}

impl Shape {
    /// All four.
    pub const ALL: [Shape; 4] = [Shape::RestV1, Shape::HttpV2, Shape::Alb, Shape::FunctionUrl];

    /// A short name for tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Shape::RestV1 => "lambda-rest-v1",
            Shape::HttpV2 => "lambda-http-v2",
            Shape::Alb => "lambda-alb",
            Shape::FunctionUrl => "lambda-url",
        }
    }
}

const STAGE: &str = "prod";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes.get(i),
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (Some(b'%'), Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (Some(b), _, _) => {
                out.push(*b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_textual(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("text/")
            || ct.contains("json")
            || ct.contains("xml")
            || ct.contains("javascript")
    })
}

struct Parts<'a> {
    path: &'a str,
    query: Option<&'a str>,
    pairs: Vec<(String, String)>,
}

fn split(request: &HttpRequest) -> Parts<'_> {
    let (path, query) = match request.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request.path.as_str(), None),
    };
    let pairs = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Parts { path, query, pairs }
}

fn single_and_multi(
    pairs: &[(String, String)],
    lower: bool,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (k, v) in pairs {
        let k = if lower {
            k.to_ascii_lowercase()
        } else {
            k.clone()
        };
        single.insert(k.clone(), Value::from(v.clone()));
        match multi.get_mut(&k) {
            Some(Value::Array(list)) => list.push(Value::from(v.clone())),
            _ => {
                multi.insert(k, json!([v]));
            }
        }
    }
    (single, multi)
}

fn content_type(request: &HttpRequest) -> Option<&str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
}

/// The body field and its base64 flag for a front door that encodes
/// non-textual (or non-UTF-8) bodies.
fn body_field(request: &HttpRequest, always_text_if_utf8: bool) -> (Value, bool) {
    if request.body.is_empty() {
        return (Value::Null, false);
    }
    match std::str::from_utf8(&request.body) {
        Ok(text) if always_text_if_utf8 || is_textual(content_type(request)) => {
            (Value::from(text), false)
        }
        _ => (Value::from(b64(&request.body)), true),
    }
}

/// The event `shape` delivers for `request`.
#[must_use]
pub fn event(shape: Shape, request: &HttpRequest) -> Value {
    let parts = split(request);
    let mut headers: Vec<(String, String)> = request.headers.clone();
    let host = match shape {
        Shape::RestV1 | Shape::HttpV2 => "abc123.execute-api.eu-west-1.amazonaws.com",
        Shape::Alb => "twincell-alb-123.eu-west-1.elb.amazonaws.com",
        Shape::FunctionUrl => "abcdefghijklmnop.lambda-url.eu-west-1.on.aws",
    };
    // The front door knows its own host; a client's Host never reaches the
    // function differently.
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
    headers.insert(0, ("host".to_owned(), host.to_owned()));
    match shape {
        Shape::RestV1 => {
            let (single_h, multi_h) = single_and_multi(&headers, false);
            let (single_q, multi_q) = single_and_multi(&parts.pairs, false);
            let (body, encoded) = body_field(request, true);
            json!({
                "resource": "/{proxy+}",
                "path": percent_decode(parts.path),
                "httpMethod": request.method,
                "headers": single_h,
                "multiValueHeaders": multi_h,
                "queryStringParameters": if single_q.is_empty() { Value::Null } else { Value::Object(single_q) },
                "multiValueQueryStringParameters": if multi_q.is_empty() { Value::Null } else { Value::Object(multi_q) },
                "pathParameters": {"proxy": percent_decode(parts.path.trim_start_matches('/'))},
                "stageVariables": null,
                "requestContext": {
                    "accountId": "123456789012",
                    "resourceId": "abc",
                    "stage": STAGE,
                    "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                    "identity": {"sourceIp": "203.0.113.7"},
                    "resourcePath": "/{proxy+}",
                    "httpMethod": request.method,
                    "apiId": "abc123",
                    "path": format!("/{STAGE}{}", percent_decode(parts.path)),
                    "protocol": "HTTP/1.1",
                    "domainName": host
                },
                "body": body,
                "isBase64Encoded": encoded
            })
        }
        Shape::HttpV2 | Shape::FunctionUrl => {
            let (stage, raw_path) = match shape {
                Shape::HttpV2 => (STAGE, format!("/{STAGE}{}", parts.path)),
                _ => ("$default", parts.path.to_owned()),
            };
            let mut joined: Map<String, Value> = Map::new();
            let mut cookies = Vec::new();
            for (k, v) in &headers {
                let k = k.to_ascii_lowercase();
                if k == "cookie" {
                    cookies.extend(v.split(';').map(|c| Value::from(c.trim())));
                    continue;
                }
                let value = match joined.get(&k).and_then(Value::as_str) {
                    Some(prev) => format!("{prev},{v}"),
                    None => v.clone(),
                };
                joined.insert(k, Value::from(value));
            }
            let mut query: Map<String, Value> = Map::new();
            for (k, v) in &parts.pairs {
                let value = match query.get(k).and_then(Value::as_str) {
                    Some(prev) => format!("{prev},{v}"),
                    None => v.clone(),
                };
                query.insert(k.clone(), Value::from(value));
            }
            let (body, encoded) = body_field(request, false);
            let mut event = json!({
                "version": "2.0",
                "routeKey": if shape == Shape::HttpV2 { "ANY /{proxy+}" } else { "$default" },
                "rawPath": raw_path,
                "rawQueryString": parts.query.unwrap_or_default(),
                "headers": joined,
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "abc123",
                    "domainName": host,
                    "domainPrefix": "abc123",
                    "http": {"method": request.method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "twincell-contract"},
                    "requestId": "JKJaXmPLvHcESHA=",
                    "routeKey": if shape == Shape::HttpV2 { "ANY /{proxy+}" } else { "$default" },
                    "stage": stage,
                    "time": "22/Nov/2026:04:12:25 +0000",
                    "timeEpoch": 1_795_320_745_007_i64
                },
                "isBase64Encoded": encoded
            });
            if let Some(fields) = event.as_object_mut() {
                if !cookies.is_empty() {
                    fields.insert("cookies".to_owned(), Value::Array(cookies));
                }
                if !query.is_empty() {
                    fields.insert("queryStringParameters".to_owned(), Value::Object(query));
                }
                if !body.is_null() {
                    fields.insert("body".to_owned(), body);
                }
            }
            event
        }
        Shape::Alb => {
            let lower: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            let (single_h, _) = single_and_multi(&lower, true);
            let raw_pairs: Vec<(String, String)> = parts
                .query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            let (single_q, _) = single_and_multi(&raw_pairs, false);
            let (body, encoded) = body_field(request, false);
            json!({
                "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/twincell/0123456789abcdef"}},
                "httpMethod": request.method,
                "path": parts.path,
                "queryStringParameters": single_q,
                "headers": single_h,
                "body": if body.is_null() { Value::from("") } else { body },
                "isBase64Encoded": encoded
            })
        }
    }
}

/// The answer a front door gives for the function's JSON response.
///
/// # Errors
/// When the response is not a well-formed Lambda HTTP response.
pub fn answer(response: &Value) -> Result<Answer, String> {
    let status = response["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("no statusCode in {response}"))?;
    let mut headers = Vec::new();
    if let Some(map) = response["multiValueHeaders"].as_object() {
        for (k, values) in map {
            for v in values.as_array().into_iter().flatten() {
                headers.push((
                    k.to_ascii_lowercase(),
                    v.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    if let Some(map) = response["headers"].as_object() {
        for (k, v) in map {
            let k = k.to_ascii_lowercase();
            if !headers.iter().any(|(h, _)| *h == k) {
                headers.push((k, v.as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    let text = response["body"].as_str().unwrap_or_default();
    let body = if response["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("bad base64 body: {e}"))?
    } else {
        text.as_bytes().to_vec()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}
