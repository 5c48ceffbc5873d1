#!/usr/bin/env python3
"""docs/openapi.json against both cells, checked by an independent tester.

Starts the Azure `handler` and the AWS `api` (under the local API Gateway and
Lambda Runtime API emulator, `twincell-aws-local`) as processes on 127.0.0.1,
each on its in-memory store with a replication key, and runs schemathesis
(every check on, bounded in examples and time) against each, in parallel.
Exits non-zero when schemathesis reports any failure or error, or when a cell
does not start.

    api_conformance.py --bin-dir target/contract-bin [--examples 40]
        [--max-time 90] [--seed N] [--only azure|aws] [--report-dir DIR]

Both cells check bearer tokens, as deployed cells do: this script serves a
JWKS on 127.0.0.1 (a P-256 key made for the run) and hands schemathesis a
token granting every scope, so its authentication checks (a request without
the declared credentials must be refused) run too.

The document under test is docs/openapi.json with one deployment detail
filled in, as a team generating a validator for its deployment would: the
transfer target `to_cell` narrowed to the serving cell's peers (JSON Schema
cannot name a deployment's cells; the document says so).
"""

import argparse
import base64
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "scripts" / "tools" / "schemathesis.toml"
HOOKS = ROOT / "scripts" / "tools" / "schemathesis_hooks.py"
START_TIMEOUT_S = 60


ISSUER = "https://login.example.test/twincell-conformance/v2.0"
AUDIENCE = "api://twincell"
SCOPES = "transactions.read transactions.write inventory.read inventory.write inventory.admin"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """A P-256 key made for this run, its JWKS served on 127.0.0.1, and an
    ES256 token signed with it. Hand-written rather than a JWT library: it
    is the one token the run needs, and `cryptography` (which moto brings)
    signs it."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        jwks = json.dumps(
            {
                "keys": [
                    {
                        "kty": "EC",
                        "crv": "P-256",
                        "kid": "conformance-1",
                        "use": "sig",
                        "x": b64url(numbers.x.to_bytes(32, "big")),
                        "y": b64url(numbers.y.to_bytes(32, "big")),
                    }
                ]
            }
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 5
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def token(self, lifetime_s=3600):
        now = int(time.time())
        header = {"alg": "ES256", "kid": "conformance-1", "typ": "JWT"}
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "schemathesis", "iat": now,
                  "nbf": now, "exp": now + lifetime_s, "scp": SCOPES}
        message = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        r, s = decode_dss_signature(self.key.sign(message.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{message}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def env(self):
        return {
            "TWINCELL_AUTH_ISSUER": ISSUER,
            "TWINCELL_AUTH_AUDIENCE": AUDIENCE,
            "TWINCELL_AUTH_JWKS_URL": self.jwks_url,
        }

    def stop(self):
        self.server.shutdown()


def deployment_document(peers, out):
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    to_cell = doc["components"]["schemas"]["TransferStock"]["properties"]["to_cell"]
    to_cell["enum"] = peers
    out.write_text(json.dumps(doc, indent=2))


def start(name, argv, env, log_path):
    """Starts a cell; returns (process, base URL) once it printed its URL."""
    log = open(log_path, "w")
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    url = []

    def read_first_line():
        line = proc.stdout.readline()
        url.append(line.strip())
        # Keep draining stdout (JSON log lines) so the cell never blocks.
        for rest in proc.stdout:
            log.write(rest)

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not url or "http://127.0.0.1:" not in url[0]:
        proc.kill()
        sys.exit(f"{name} did not start (first line {url!r}); see {log_path}")
    return proc, url[0][url[0].index("http://") :]


def run_schemathesis(name, tools_bin, doc, url, key, token, args, out_dir, results):
    cmd = [
        str(tools_bin / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "run",
        str(doc),
        "--url",
        url,
        "--checks",
        "all",
        "--max-examples",
        str(args.examples),
        "--max-time",
        str(args.max_time),
        "--seed",
        str(args.seed),
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(out_dir / name),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        # Read by schemathesis.toml's [auth.openapi.*] sections.
        "TWINCELL_CONFORMANCE_REPLICATION_KEY": key,
        "TWINCELL_CONFORMANCE_TOKEN": token,
    }
    with open(out_dir / f"{name}-schemathesis.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out_dir, env=env)
    results[name] = code


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, type=Path)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--max-time", type=int, default=90)
    parser.add_argument("--seed", type=int, default=secrets.randbelow(2**31))
    parser.add_argument("--only", choices=["azure", "aws"])
    parser.add_argument("--report-dir", type=Path)
    args = parser.parse_args()

    tools_bin = Path(sys.executable).parent
    if not (tools_bin / "schemathesis").exists():
        sys.exit(f"schemathesis is not installed next to {sys.executable}")
    out_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="twincell-conformance-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(24)
    idp = IdentityProvider()
    # Outlives the run (bounded by --max-time), with room to start.
    token = idp.token(lifetime_s=args.max_time + 600)

    base = {k: v for k, v in os.environ.items() if not k.startswith("TWINCELL_")}
    base.update({"RUST_LOG": "warn", "TWINCELL_STORE": "memory", "TWINCELL_REPLICATION_KEY": key, **idp.env()})
    # The peer's signing key as each cell lists it: 32 zero bytes, which no
    # private key has; nothing the generator sends is signed, so an event it
    # gets right is refused as untrusted (403), as the document says.
    no_one = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    cells = {
        "azure": (
            [str(args.bin_dir / "handler")],
            {
                "TWINCELL_CELL": "azure",
                "TWINCELL_PEERS": "aws",
                "FUNCTIONS_CUSTOMHANDLER_PORT": "0",
                "TWINCELL_ORIGIN_KEYS": f"aws/conformance={no_one}",
            },
            ["aws"],
        ),
        "aws": (
            [
                str(args.bin_dir / "twincell-aws-local"),
                "--api",
                str(args.bin_dir / "api"),
                "--listen",
                "127.0.0.1:0",
            ],
            {"TWINCELL_CELL": "aws", "TWINCELL_PEERS": "azure", "TWINCELL_ORIGIN_KEYS": f"azure/conformance={no_one}"},
            ["azure"],
        ),
    }
    names = [args.only] if args.only else list(cells)
    processes, threads, results = [], [], {}
    print(f"schemathesis seed {args.seed}; reports in {out_dir}", flush=True)
    try:
        for name in names:
            argv, env, peers = cells[name]
            if not Path(argv[0]).exists():
                sys.exit(f"{argv[0]} is missing: build the contract binaries first")
            proc, url = start(name, argv, {**base, **env}, out_dir / f"{name}-cell.log")
            processes.append(proc)
            doc = out_dir / f"openapi-{name}.json"
            deployment_document(peers, doc)
            print(f"{name}: {url}", flush=True)
            t = threading.Thread(
                target=run_schemathesis,
                args=(name, tools_bin, doc, url, key, token, args, out_dir, results),
            )
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        for proc, name in zip(processes, names):
            if proc.poll() is not None:
                results[name] = results.get(name) or 1
                print(f"{name}: the cell exited during the run (code {proc.returncode})")
    finally:
        for proc in processes:
            proc.kill()
            proc.wait()
        idp.stop()
    failed = False
    operations = sum(
        1
        for item in json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"].values()
        for method in item
        if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    )
    for name in names:
        log = (out_dir / f"{name}-schemathesis.log").read_text()
        summary = log[log.rfind("SUMMARY") :] if "SUMMARY" in log else log[-4000:]
        print(f"\n--- {name} ---\n{summary.strip()}")
        # A run that tested fewer operations than the document has is no pass.
        if f"Tested: {operations}\n" not in log:
            print(f"\n{name}: schemathesis did not test all {operations} operations")
            results[name] = results.get(name) or 1
        # Nor is one where it dropped a pattern it could not use: it would
        # have tested less than the document says.
        if "Unsupported regex patterns" in log:
            print(f"\n{name}: schemathesis could not use a pattern of the document")
            results[name] = results.get(name) or 1
        if results.get(name) != 0:
            failed = True
            print(f"\n{name}: schemathesis FAILED; the full log is {out_dir / (name + '-schemathesis.log')}")
            print(log[-20000:])
    if not args.report_dir and not failed:
        shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
