"""schemathesis hooks for scripts/tools/api_conformance.py.

Two rules the document states in words because JSON Schema cannot, taught to
the generator so that it does not call their refusals failures.

First, the write-off reason's characters beyond the Basic Multilingual
Plane: the router refuses the format characters there, which the pattern
cannot name in every regex dialect. The document's description lists them
(generated from the core's rule); schema-valid cases holding one are not
sent.

Second, for the stateful and fuzzing phases: an Idempotency-Key (a
payment's, by account; a receipt's, write-off's or transfer's, by SKU) may
be reused only with the same request (a retry); another request under a
used key is refused with 422 idempotency-key-reused by design (docs/api.md,
the IETF Idempotency-Key draft). That refusal depends on what was sent
before, not on the request, so in schema-valid cases a key already used
for another request in its scope is replaced by a fresh one. Retries (same
key, same request) are left as generated and must replay; the parity suite
covers the refusal itself.
"""

import json
import re
import uuid
from pathlib import Path

import schemathesis

_used = {}

_DOC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
_REASON = _DOC["components"]["schemas"]["WriteOffStock"]["properties"]["reason"]["description"]
_ASTRAL_REFUSED = [
    (int(a, 16), int(b or a, 16))
    for a, b in re.findall(r"U\+([0-9A-F]{5,6})(?:–U\+([0-9A-F]{5,6}))?", _REASON)
]
if not _ASTRAL_REFUSED:
    raise SystemExit("the reason's description names no refused characters beyond the BMP")


def _astral_refused(text):
    return any(a <= ord(c) <= b for c in text if ord(c) > 0xFFFF for a, b in _ASTRAL_REFUSED)


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return True
    if case.operation.label != "POST /inventory/{sku}/write-offs" or not isinstance(case.body, dict):
        return True
    reason = case.body.get("reason")
    return not (isinstance(reason, str) and _astral_refused(reason))


def _effective_key(value):
    # The header is read as a list; its last item, trimmed, is the key.
    return value.rsplit(",", 1)[-1].strip(" \t")


# The keyed stock writes: one key names one write of the SKU, whichever
# of the three routes.
_STOCK_WRITES = {
    "POST /inventory/{sku}/receipts",
    "POST /inventory/{sku}/write-offs",
    "POST /inventory/{sku}/transfers",
}


def _scope(case):
    label = case.operation.label
    if label == "POST /transactions":
        return ("account", case.body.get("account_id"))
    if label in _STOCK_WRITES:
        return ("sku", (case.path_parameters or {}).get("sku"))
    return None


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "idempotency-key"), None)
    if name is None or not isinstance(case.body, dict):
        return
    scope = _scope(case)
    if scope is None:
        return
    payload = case.operation.label + json.dumps(case.body, sort_keys=True)
    slot = (scope, _effective_key(str(headers[name])))
    if _used.setdefault(slot, payload) != payload:
        fresh = uuid.uuid4().hex
        headers[name] = fresh
        _used[(scope, fresh)] = payload
