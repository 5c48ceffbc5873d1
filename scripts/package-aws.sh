#!/usr/bin/env bash
# Builds the AWS cell's Lambdas (`api`, `replicator`) for arm64
# (provided.al2023) with cargo-lambda and checks each zip stays under 4 MB.
#   scripts/package-aws.sh            -> target/lambda/{api,replicator}/bootstrap.zip
# Needs: cargo-lambda and ziglang (PyPI; installed into .tools/venv if
# missing) and the aarch64-unknown-linux-gnu Rust target.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/.tools/venv"
if ! "$tools/bin/cargo-lambda" --version >/dev/null 2>&1; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check cargo-lambda==1.9.2 ziglang==0.15.2
fi
export PATH="$tools/bin:$PATH"
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

limit=$((4 * 1024 * 1024))
for bin in api replicator; do
  cargo lambda build --release --arm64 -p twincell-aws --bin "$bin" --output-format zip
  zip="target/lambda/$bin/bootstrap.zip"
  size=$(stat -c %s "$zip")
  echo "$zip: $size bytes (limit $limit)"
  [ "$size" -lt "$limit" ] || { echo "$zip is over 4 MB" >&2; exit 1; }
done
