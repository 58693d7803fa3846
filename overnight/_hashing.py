"""Canonical JSON, request fingerprints and idempotency keys: one home for each.

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    >>> derive_idempotency_key("airflow", "dag", "task", "run", -1)[:9]
    'airflow:5'

Integrations derive keys from their own identity so a retry re-attaches to the job it
already submitted: Airflow from dag/task/run/map index, Temporal from workflow id and
activity id, n8n from execution id and node name.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

__all__ = ["canonical_json", "derive_idempotency_key", "new_idempotency_key", "sha256_hex"]


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value`` (or of ``value`` itself when bytes/str)."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bytes):
        data = value
    else:
        data = canonical_json(value).encode()
    return hashlib.sha256(data).hexdigest()


def derive_idempotency_key(namespace: str, *parts: Any) -> str:
    """A stable key from an integration's identity, e.g. ``("temporal", wf_id, act_id)``."""
    digest = hashlib.sha256(canonical_json([str(p) for p in parts]).encode()).hexdigest()
    return f"{namespace}:{digest[:40]}"


def new_idempotency_key() -> str:
    """A fresh random key; the client makes one per call and reuses it on every retry."""
    return f"auto:{uuid.uuid4().hex}"
