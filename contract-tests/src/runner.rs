//! Runs cases on targets, checks every answer against its expectation and
//! the targets' answers against each other, and reports a cases × targets
//! table with a diff per failure.

use std::fmt::Write as _;

use crate::case::{Answer, Bindings, Case, HttpRequest, TOKEN_PLACEHOLDER_PREFIX, check};
use crate::target::{DEFAULT_TOKEN, Target};

/// One case on one target.
#[derive(Debug)]
pub struct TargetRun {
    /// The target's name.
    pub target: String,
    /// The answers, one per step run.
    pub answers: Vec<Answer>,
    /// The placeholders bound on this target.
    pub bindings: Bindings,
    /// The first failure, if any.
    pub error: Option<String>,
}

/// One case on every target.
#[derive(Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// Per target.
    pub runs: Vec<TargetRun>,
    /// `Err` when targets answered differently.
    pub parity: Result<(), String>,
}

impl CaseReport {
    /// Whether every target met the expectation and they all agree.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.parity.is_ok() && self.runs.iter().all(|r| r.error.is_none())
    }
}

/// Everything a run found.
#[derive(Debug)]
pub struct Report {
    /// Target names, in column order.
    pub targets: Vec<String>,
    /// Per case, in order.
    pub cases: Vec<CaseReport>,
}

/// `text` with every value bound on one target (`from`) replaced by the
/// value the same placeholder has on another target (`to`), longest values
/// first, through one pass of markers so a replacement is never replaced
/// again. Values shorter than 3 characters are left alone.
fn rename(text: &str, from: &Bindings, to: &Bindings) -> String {
    let mut by_length: Vec<_> = from
        .iter()
        .filter(|(name, v)| v.len() >= 3 && to.contains_key(*name))
        .collect();
    by_length.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for (i, (_, value)) in by_length.iter().enumerate() {
        out = out.replace(value.as_str(), &format!("\u{0}{i}\u{0}"));
    }
    for (i, (name, _)) in by_length.iter().enumerate() {
        let value = to.get(*name).map_or("", String::as_str);
        out = out.replace(&format!("\u{0}{i}\u{0}"), value);
    }
    out
}

/// What live targets are compared on: status, the compared headers and the
/// body (as JSON: cells list their ledgers in key order, and the names
/// differ).
type Renamed = (
    u16,
    Vec<(&'static str, Option<String>)>,
    Result<serde_json::Value, String>,
);

fn renamed(answer: &Answer, from: &Bindings, to: &Bindings) -> Renamed {
    let (status, headers, body) = answer.parity_view();
    let headers = headers
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| rename(&v, from, to))))
        .collect();
    let text = rename(&String::from_utf8_lossy(body), from, to);
    let body = serde_json::from_str(&text).map_err(|_| text);
    (status, headers, body)
}

/// Whether two live answers are the same up to each target's generated
/// values (ids, timestamps, its own cell name): one answer with its values
/// renamed to the other target's values equals the other. Tried both ways:
/// when two placeholders happen to share a value on one target (two
/// timestamps in one millisecond), only the rename from the other target
/// is unambiguous.
fn same_up_to_generated_values(a: &Answer, on_a: &Bindings, b: &Answer, on_b: &Bindings) -> bool {
    renamed(a, on_a, on_b) == renamed(b, on_b, on_b)
        || renamed(a, on_a, on_a) == renamed(b, on_b, on_a)
}

fn describe(answer: &Answer) -> String {
    let (status, headers, body) = answer.parity_view();
    let headers: Vec<String> = headers
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect();
    format!(
        "{status} [{}] {}",
        headers.join(", "),
        String::from_utf8_lossy(body)
    )
}

fn compare(runs: &[TargetRun], deterministic: bool) -> Result<(), String> {
    let Some(first) = runs.first() else {
        return Ok(());
    };
    for run in runs.iter().skip(1) {
        for (step, (a, b)) in first.answers.iter().zip(&run.answers).enumerate() {
            let same = if deterministic {
                a.parity_view() == b.parity_view()
            } else {
                same_up_to_generated_values(a, &first.bindings, b, &run.bindings)
            };
            if !same {
                return Err(format!(
                    "step {}: {} and {} differ\n    {}: {}\n    {}: {}",
                    step + 1,
                    first.target,
                    run.target,
                    first.target,
                    describe(a),
                    run.target,
                    describe(b)
                ));
            }
        }
    }
    Ok(())
}

/// The placeholder of the target's replication key.
pub const REPLICATION_KEY_PLACEHOLDER: &str = "replication_key";

/// Whether `case` sends the replication key (and so needs targets that
/// know it).
#[must_use]
pub fn needs_replication_key(case: &Case) -> bool {
    let placeholder = format!("{{{{{REPLICATION_KEY_PLACEHOLDER}}}}}");
    case.steps.iter().any(|s| {
        s.request
            .headers
            .iter()
            .any(|(_, v)| v.contains(&placeholder))
    })
}

/// The cases every target can run, and a note for each group left out:
/// cases delivering replicated events need every target's replication key;
/// cases about bearer tokens need every target to check them, with every
/// token they name (minted ones only where the run mints them).
#[must_use]
pub fn runnable(cases: Vec<Case>, targets: &[Box<dyn Target>]) -> (Vec<Case>, Vec<String>) {
    let (mut no_key, mut no_auth, mut no_token) = (0, 0, 0);
    let mut kept = Vec::with_capacity(cases.len());
    for case in cases {
        if needs_replication_key(&case) && targets.iter().any(|t| t.replication_key().is_none()) {
            no_key += 1;
        } else if case.is_about_tokens() && targets.iter().any(|t| t.auth().is_none()) {
            no_auth += 1;
        } else if case.tokens().iter().any(|name| {
            targets
                .iter()
                .any(|t| t.auth().is_none_or(|auth| (auth.mint)(name).is_none()))
        }) {
            no_token += 1;
        } else {
            kept.push(case);
        }
    }
    let mut notes = Vec::new();
    if no_key > 0 {
        notes.push(format!(
            "{no_key} cases deliver replicated events and need every target's replication key; \
             they were not run"
        ));
    }
    if no_auth > 0 {
        notes.push(format!(
            "{no_auth} cases are about bearer tokens and need every target to check them; \
             they were not run"
        ));
    }
    if no_token > 0 {
        notes.push(format!(
            "{no_token} cases name tokens only a test identity provider mints \
             (expired, forged, ...); they were not run"
        ));
    }
    (kept, notes)
}

/// `request` as `target` gets it: with the target's default token when its
/// cell checks tokens and the request is to the API, sets no
/// `authorization` and is not `anonymous`.
fn with_default_token(
    mut request: HttpRequest,
    anonymous: bool,
    target: &dyn Target,
) -> HttpRequest {
    let Some(auth) = target.auth() else {
        return request;
    };
    let sets_its_own = request
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
    if anonymous || sets_its_own || request.path.starts_with("/replication/") {
        return request;
    }
    if let Some(token) = (auth.mint)(DEFAULT_TOKEN) {
        request
            .headers
            .push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    request
}

/// `request` with every well-formed event it delivers to
/// `/replication/events` signed by `signer` (the target's peer), as the
/// peer signs what it publishes; events that carry a signature already or
/// do not decode (the cases about malformed deliveries) are left as the
/// case wrote them, and a body with nothing to sign is not touched.
fn signed_by_peer(
    mut request: HttpRequest,
    signer: Option<&twincell_replication::signing::Signer>,
) -> HttpRequest {
    use twincell_replication::signing::{KEY_ID_ATTRIBUTE, SIGNATURE_ATTRIBUTE};
    let Some(signer) = signer else {
        return request;
    };
    let path = request.path.split('?').next().unwrap_or_default();
    if request.method != "POST" || path.trim_end_matches('/') != "/replication/events" {
        return request;
    }
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
        return request;
    };
    let mut changed = false;
    let events: Vec<&mut serde_json::Value> = match &mut body {
        serde_json::Value::Array(items) => items.iter_mut().collect(),
        object @ serde_json::Value::Object(_) => vec![object],
        _ => Vec::new(),
    };
    for event in events {
        if event.get(SIGNATURE_ATTRIBUTE).is_some() {
            continue;
        }
        let decoded = twincell_replication::wire::decode_body(event.clone())
            .ok()
            .and_then(|mut items| items.pop())
            .and_then(|item| item.event.ok());
        let (Some(recorded), Some(fields)) = (decoded, event.as_object_mut()) else {
            continue;
        };
        if let Ok(signature) = signer.sign(&recorded) {
            fields.insert(KEY_ID_ATTRIBUTE.to_owned(), signer.key_id().into());
            fields.insert(SIGNATURE_ATTRIBUTE.to_owned(), signature.into());
            changed = true;
        }
    }
    if changed && let Ok(bytes) = serde_json::to_vec(&body) {
        request.body = bytes;
    }
    request
}

/// Runs case number `index` on every target. `run_id` makes `{{run}}`
/// unique per run; the case index is appended.
pub async fn run_case(
    case: &Case,
    index: usize,
    run_id: &str,
    targets: &[Box<dyn Target>],
) -> CaseReport {
    let mut runs = Vec::new();
    for target in targets {
        let mut bindings = Bindings::from([
            ("run".to_owned(), format!("{run_id}{index}")),
            ("cell".to_owned(), target.cell().to_owned()),
            ("peer".to_owned(), target.peer().to_owned()),
        ]);
        if let Some(key) = target.replication_key() {
            bindings.insert(REPLICATION_KEY_PLACEHOLDER.to_owned(), key.to_owned());
        }
        let mut answers = Vec::new();
        let mut error = None;
        if let Some(auth) = target.auth() {
            for name in case.tokens() {
                match (auth.mint)(&name) {
                    Some(token) => {
                        bindings.insert(format!("{TOKEN_PLACEHOLDER_PREFIX}{name}"), token);
                    }
                    None => error = Some(format!("no token named {name:?} on this target")),
                }
            }
        }
        match target.session().await {
            Err(e) => error = Some(format!("could not start: {e}")),
            Ok(_) if error.is_some() => {}
            Ok(mut session) => {
                for (i, step) in case.steps.iter().enumerate() {
                    let request = match step.request.build(&bindings) {
                        Ok(r) => with_default_token(
                            signed_by_peer(r, target.peer_signer()),
                            step.request.anonymous,
                            target.as_ref(),
                        ),
                        Err(e) => {
                            error = Some(format!("step {}: bad case: {e}", i + 1));
                            break;
                        }
                    };
                    let answer = match session.send(&request).await {
                        Ok(a) => a,
                        Err(e) => {
                            error = Some(format!(
                                "step {}: {} {}: {e}",
                                i + 1,
                                request.method,
                                request.path
                            ));
                            break;
                        }
                    };
                    let verdict = check(&step.expect, &answer, &mut bindings);
                    answers.push(answer);
                    if let Err(e) = verdict {
                        error = Some(format!(
                            "step {}: {} {}: {e}",
                            i + 1,
                            request.method,
                            request.path
                        ));
                        break;
                    }
                }
            }
        }
        runs.push(TargetRun {
            target: target.name().to_owned(),
            answers,
            bindings,
            error,
        });
    }
    let deterministic = targets.iter().all(|t| t.deterministic());
    let parity = compare(&runs, deterministic);
    CaseReport {
        name: case.name.clone(),
        runs,
        parity,
    }
}

/// Runs every case on every target.
pub async fn run_all(cases: &[Case], run_id: &str, targets: &[Box<dyn Target>]) -> Report {
    let mut reports = Vec::with_capacity(cases.len());
    for (index, case) in cases.iter().enumerate() {
        reports.push(run_case(case, index, run_id, targets).await);
    }
    Report {
        targets: targets.iter().map(|t| t.name().to_owned()).collect(),
        cases: reports,
    }
}

impl Report {
    /// Cases that failed anywhere.
    #[must_use]
    pub fn failures(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count()
    }

    /// The table and the diffs, as text.
    #[must_use]
    pub fn render(&self) -> String {
        let width = self
            .cases
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = String::new();
        let _ = write!(out, "{:width$}", "case");
        for t in &self.targets {
            let _ = write!(out, "  {t}");
        }
        out.push_str("  parity\n");
        for case in &self.cases {
            let _ = write!(out, "{:width$}", case.name);
            for (t, run) in self.targets.iter().zip(&case.runs) {
                let mark = if run.error.is_none() { "ok" } else { "FAIL" };
                let _ = write!(out, "  {mark:<w$}", w = t.len());
            }
            out.push_str(if case.parity.is_ok() {
                "  ok\n"
            } else {
                "  DIFF\n"
            });
        }
        for case in self.cases.iter().filter(|c| !c.passed()) {
            let _ = writeln!(out, "\n--- {}", case.name);
            for run in &case.runs {
                if let Some(e) = &run.error {
                    let _ = writeln!(out, "  {}: {e}", run.target);
                }
            }
            if let Err(e) = &case.parity {
                let _ = writeln!(out, "  parity: {e}");
            }
        }
        let total = self.cases.len();
        let failed = self.failures();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed ({} cases x {} targets)",
            total - failed,
            failed,
            total,
            self.targets.len()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(created_at: &str, id: &str) -> Answer {
        Answer {
            status: 201,
            headers: vec![("location".to_owned(), format!("/transactions/{id}"))],
            body: format!(r#"{{"id":"{id}","created_at":"{created_at}"}}"#).into_bytes(),
        }
    }

    fn bindings(pairs: &[(&str, &str)]) -> Bindings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn answers_are_compared_up_to_generated_values_even_when_two_share_one() {
        // Target a made both timestamps in one millisecond; b did not.
        let on_a = bindings(&[("created", "T642"), ("created2", "T642"), ("tx", "id-a")]);
        let on_b = bindings(&[("created", "T643"), ("created2", "T644"), ("tx", "id-b")]);
        let a = answer("T642", "id-a");
        let b = answer("T644", "id-b");
        assert!(same_up_to_generated_values(&a, &on_a, &b, &on_b));
        assert!(same_up_to_generated_values(&b, &on_b, &a, &on_a));
        // A real difference still shows: b answers with its first timestamp
        // where a's second one is expected... and a different id.
        let wrong = answer("T644", "id-x");
        assert!(!same_up_to_generated_values(&a, &on_a, &wrong, &on_b));
        let other_status = Answer {
            status: 200,
            ..answer("T644", "id-b")
        };
        assert!(!same_up_to_generated_values(
            &a,
            &on_a,
            &other_status,
            &on_b
        ));
    }
}
