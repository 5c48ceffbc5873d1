//! The `handler` binary checking bearer tokens of a provider served on
//! 127.0.0.1, as a process: it fetches the keys itself, lets a good token
//! through, puts the caller on the request's log lines, and never writes a
//! token into a log line or an answer. (Every refused token, on this binary
//! and the others, is a parity case: contract-tests/cases/80-auth.json.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use twincell_http::auth::testing::IdentityProvider;

struct Handler {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(idp: &IdentityProvider) -> Handler {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        .env("RUST_LOG", "debug,hyper=info,reqwest=info,rustls=info")
        .env_remove("TWINCELL_AUTH")
        .env(
            "TWINCELL_REPLICATION_KEY",
            "auth-process-replication-key-0123456789",
        )
        // Tokens are the subject here, not signatures.
        .env("TWINCELL_ORIGIN_KEYS", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in idp.env() {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let log = Arc::new(Mutex::new(String::new()));
    let readers: [Box<dyn BufRead + Send>; 2] = [
        Box::new(stdout),
        Box::new(BufReader::new(child.stderr.take().unwrap())),
    ];
    for reader in readers {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    Handler { child, url, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_checks_tokens_logs_the_caller_and_never_a_token() {
    let idp = IdentityProvider::start().await.unwrap();
    let handler = start(&idp);
    twincell_replication::publish::install_crypto();
    let client = reqwest::Client::new();
    let get = |token: Option<String>| {
        let mut request = client.get(format!("{}/inventory/sku-auth", handler.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let mut sent = Vec::new();

    let none = get(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");

    let mut answers = Vec::new();
    for name in [
        "expired",
        "unknown-kid",
        "tampered-signature",
        "wrong-audience",
    ] {
        let token = idp.token(name).unwrap();
        let answer = get(Some(token.clone())).await.unwrap();
        assert_eq!(answer.status(), 401, "{name}");
        assert_eq!(
            answer.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        let body = answer.text().await.unwrap();
        assert!(!body.contains(&token));
        answers.push(body);
        sent.push(token);
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "one answer whatever the reason");

    let narrow = idp.token("scope.transactions.read").unwrap();
    let answer = get(Some(narrow.clone())).await.unwrap();
    assert_eq!(answer.status(), 403);
    sent.push(narrow);

    let good = idp.token("all").unwrap();
    let answer = get(Some(good.clone())).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    sent.push(good);

    // A header that is nothing but a token, with no scheme.
    let bare = idp.token("expired").unwrap();
    let answer = client
        .get(format!("{}/inventory/sku-auth", handler.url))
        .header("authorization", bare.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    sent.push(bare);

    assert!(idp.jwks_hits() >= 1, "the handler fetched the keys itself");
    // Log lines are written as they happen; give the reader a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = handler.log.lock().unwrap().clone();
        if log.contains("\"caller.client_id\"") || log.matches("caller.sub").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("\"caller.sub\":\"user-1\"")
            && log.contains("\"caller.oid\":\"oid-1\"")
            && log.contains("\"caller.tid\":\"tid-1\""),
        "the caller is on the request's log lines:\n{log}"
    );
    assert!(
        log.contains("refused: the bearer token is not valid"),
        "refusals are logged with their reason:\n{log}"
    );
    for token in &sent {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !log.contains(token.as_str()) && !log.contains(signature),
            "a token reached the log:\n{log}"
        );
    }
}
