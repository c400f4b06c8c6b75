"""A bounded HTTP load generator (asyncio + httpx): `concurrency` workers send GET requests to one
URL until `requests` have been sent or `duration_seconds` have passed, whichever comes first (a
request in flight at the deadline may finish within its timeout, so a run ends by
duration + timeout at the latest).

Latency is measured per request from send to the full response body; a status of 400 or above,
a timeout or a connection error counts as an error. It never follows redirects to another host.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.aws import EcsflowError


class ForeignTarget(EcsflowError):
    """The load test was pointed at something other than the stack's own URL."""


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    default = {"http": 80, "https": 443}
    return (a.scheme, (a.hostname or "").lower(), a.port or default.get(a.scheme)) == \
        (b.scheme, (b.hostname or "").lower(), b.port or default.get(b.scheme)) and not a.username


def resolve_target(public_url: str | None, path: str, url: str | None = None) -> str:
    """The URL to drive: `path` under the stack's public URL, or `url` if it lies under that URL.
    Anything else is refused: the load test never drives someone else's site."""
    if not public_url:
        raise ForeignTarget("the stack has no load_balancer.public_url (or domain): the load test drives only "
                            "the stack's own URL; set load_balancer.public_url")
    base = public_url.rstrip("/")
    target = url or f"{base}{path}"
    base_path = urlsplit(base).path.rstrip("/")
    if not same_origin(target, base) or not urlsplit(target).path.startswith(base_path):
        raise ForeignTarget(f"refusing to load-test {target}: it is not under the stack's public URL {base}")
    return target


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def _drive(url: str, duration: float, total: int, concurrency: int, timeout: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    sent = 0
    started = time.monotonic()
    deadline = started + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total and time.monotonic() < deadline:
            sent += 1
            begin = time.monotonic()
            try:
                # no request starts after the deadline; one in flight may finish within its timeout
                response = await client.get(url, timeout=timeout)
                statuses[str(response.status_code)] += 1
                if response.status_code < 400:
                    latencies.append(time.monotonic() - begin)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

    # trust_env=False: a proxy from the environment must not change where the load goes
    async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False,
                                 headers={"User-Agent": "ecsflow-load-test"}) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()
    errors = sum(n for status, n in statuses.items() if not (status.isdigit() and int(status) < 400))

    def ms(value: float | None) -> float | None:
        return round(value * 1000, 2) if value is not None else None

    return {"url": url, "requests": sent, "errors": errors, "error_rate": round(errors / sent, 4) if sent else 0.0,
            "duration_seconds": round(elapsed, 3), "throughput_rps": round(sent / elapsed, 2) if elapsed else 0.0,
            "p50_ms": ms(percentile(latencies, 50)), "p95_ms": ms(percentile(latencies, 95)),
            "p99_ms": ms(percentile(latencies, 99)), "max_ms": ms(latencies[-1] if latencies else None),
            "statuses": dict(sorted(statuses.items())), "concurrency": concurrency}


@task(task_run_name="load test {url}", cache_policy=NO_CACHE, persist_result=False, retries=0)
def run_load(url: str, duration_seconds: float, requests: int, concurrency: int,
             timeout_seconds: float) -> dict[str, Any]:
    return asyncio.run(_drive(url, duration_seconds, requests, concurrency, timeout_seconds))
