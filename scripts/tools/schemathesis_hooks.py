"""schemathesis hooks for scripts/tools/api_conformance.py.

One, for the stateful and fuzzing phases: a payment's Idempotency-Key may be
reused only with the same payload (a retry); another payload under a used
key is refused with 422 idempotency-key-reused by design (docs/api.md, the
IETF Idempotency-Key draft). That refusal depends on what was sent before,
not on the request, so in schema-valid cases a key already used for
another payload of the same account is replaced by a fresh one. Retries
(same key, same payload) are left as generated and must replay; the parity
suite covers the refusal itself.
"""

import json
import uuid

import schemathesis

_used = {}


def _effective_key(value):
    # The header is read as a list; its last item, trimmed, is the key.
    return value.rsplit(",", 1)[-1].strip(" \t")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.label != "POST /transactions":
        return
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "idempotency-key"), None)
    if name is None or not isinstance(case.body, dict):
        return
    account = case.body.get("account_id")
    payload = json.dumps(case.body, sort_keys=True)
    slot = (account, _effective_key(str(headers[name])))
    if _used.setdefault(slot, payload) != payload:
        fresh = uuid.uuid4().hex
        headers[name] = fresh
        _used[(account, fresh)] = payload
