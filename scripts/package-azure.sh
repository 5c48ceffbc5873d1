#!/usr/bin/env bash
# Stages the Azure cell for `func azure functionapp publish`:
#   scripts/package-azure.sh [OUT]    (default target/azure-app)
# OUT then holds host.json, one folder per function with its function.json,
# the Linux x86_64 `handler` binary (glibc 2.28 or newer, built with
# cargo-zigbuild so it runs on every Functions Linux image) and a
# local.settings.json that tells Core Tools this is a custom handler.
# Publish with:  cd OUT && func azure functionapp publish <app-name>
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/azure-app}"

tools="$PWD/.tools/venv"
if ! "$tools/bin/cargo-zigbuild" --version >/dev/null 2>&1; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check cargo-zigbuild==0.24.0 ziglang==0.15.2
fi
export PATH="$tools/bin:$PATH"

# The `handler` profile: release, optimised for speed rather than size.
cargo zigbuild --profile handler -p twincell-azure --bin handler --target x86_64-unknown-linux-gnu.2.28

rm -rf "$out"
mkdir -p "$out"
cp host.json "$out/"
cp -r functions-azure/functions/. "$out/"
cp target/x86_64-unknown-linux-gnu/handler/handler "$out/handler"
cat > "$out/local.settings.json" <<'JSON'
{
  "IsEncrypted": false,
  "Values": {
    "FUNCTIONS_WORKER_RUNTIME": "custom"
  }
}
JSON
echo "staged $(find "$out" -name function.json | wc -l) functions and the handler in $out"
echo "publish: cd $out && func azure functionapp publish <app-name>"
