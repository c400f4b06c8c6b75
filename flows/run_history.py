"""A short history of measured runs (restore test RTO/RPO, load test latencies), kept in a Prefect
variable per stack so the next run can compare and the UI shows the trend.

Prefect variables hold at most 5000 characters of JSON: the oldest entries go first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prefect.variables import Variable

MAX_CHARS = 4500
MAX_ENTRIES = 30


def variable_name(kind: str, prefix: str) -> str:
    """Variable names allow letters, digits, dashes and underscores."""
    return re.sub(r"[^a-z0-9_]", "_", f"ecsflow_{kind}_{prefix}".lower())[:255]


def read(kind: str, prefix: str) -> list[dict[str, Any]]:
    value = Variable.get(variable_name(kind, prefix), default=None)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def append(kind: str, prefix: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add `entry` (small, JSON, no secrets) and return the history, oldest first."""
    history = [*read(kind, prefix), entry][-MAX_ENTRIES:]
    while len(history) > 1 and len(json.dumps(history)) > MAX_CHARS:
        history.pop(0)
    Variable.set(variable_name(kind, prefix), history, overwrite=True)
    return history


def notify(spec: Any, ctx: Any, event: str, subject: str, body: str) -> None:
    """Through tasks.notify (the stack's notifier block); a run never fails because of it."""
    try:
        from tasks.notify import notify as send
    except ImportError:  # the notifier is another family; without it the artifact is the record
        return
    send(spec, ctx, event, subject, body)
