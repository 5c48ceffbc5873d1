//! What the tests of the `twincell-local` binary share: starting a matrix,
//! its commands, the requests, and the processes it leaves.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_twincell-local");

pub(crate) fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "twincell-walkthrough-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running matrix: the process and its front door.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) out: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test leaves nothing: SIGKILL, the children follow.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(dir: &Path) -> Running {
    start_with(dir, &[])
}

/// A matrix on free ports, Event Grid retrying ten times sooner, with
/// `extra` flags.
pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Running {
    let out = dir.join("stdout.txt");
    let child = Command::new(BIN)
        .args(["--port", "0", "--retry-divisor", "10"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(url) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("front door"))
            .map(|u| u.trim().to_owned())
        {
            let port = url.rsplit(':').next().unwrap().parse().unwrap();
            return Running {
                child,
                url,
                port,
                out,
            };
        }
        let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the matrix printed no front door: {text}\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `twincell-local <args> --port <port>`: its JSON answer.
pub(crate) fn command(running: &Running, args: &[&str]) -> Value {
    let output = Command::new(BIN)
        .args(args)
        .args(["--port", &running.port.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "twincell-local {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, String, Value) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let cell = answer
        .headers()
        .get("x-twincell-cell")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cell, answer.json().await.unwrap())
}

pub(crate) async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let answer = client.get(url).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Every process whose parent is in `roots`, and theirs, from /proc.
pub(crate) fn descendants(roots: &[u32]) -> BTreeSet<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after ')'.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found: BTreeSet<u32> = roots.iter().copied().collect();
    loop {
        let before = found.len();
        for (pid, ppid) in &parents {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    for root in roots {
        found.remove(root);
    }
    found
}

/// Whether `pid` still runs (a zombie waiting for a reaper does not).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .next();
        !matches!(state, Some("Z" | "X"))
    })
}

pub(crate) fn until_gone(pids: &BTreeSet<u32>) {
    let started = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first JSON line of the log at `path` that `matches`, waiting up to
/// 30 s for it to be written.
pub(crate) async fn until_logged(path: &Path, matches: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| matches(l))
        {
            return line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no such line in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn until_both_agree(
    client: &reqwest::Client,
    status: &Value,
    path: &str,
) -> String {
    let started = Instant::now();
    loop {
        let aws = get(
            client,
            &format!("{}{path}", status["cells"]["aws"]["url"].as_str().unwrap()),
        )
        .await;
        let azure = get(
            client,
            &format!(
                "{}{path}",
                status["cells"]["azure"]["url"].as_str().unwrap()
            ),
        )
        .await;
        if aws.0 == 200 && aws == azure {
            return aws.1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the cells did not agree on {path}: {aws:?} {azure:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn control(
    client: &reqwest::Client,
    running: &Running,
    path: &str,
    body: &str,
) -> u16 {
    client
        .post(format!("{}/_matrix/{path}", running.url))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn until_state(running: &Running, cell: &str, state: &str) {
    let started = Instant::now();
    loop {
        let status = command(running, &["status"]);
        let endpoint = status["front_door"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["cell"] == cell)
            .cloned()
            .unwrap();
        if endpoint["status"] == state {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{cell} never {state}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
