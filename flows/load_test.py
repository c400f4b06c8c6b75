"""`ecsflow load-test`: drive the stack's own public URL for a bounded time and request count and
publish latency percentiles, throughput and error rate, compared with the previous run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows import run_history
from flows.common import StackRun, open_stack
from tasks import loadgen

HISTORY = "load_test"
COMPARED = ("p50_ms", "p95_ms", "p99_ms", "throughput_rps", "error_rate")


class LoadTestRun(StackRun):
    url: str | None = Field(None, description="A URL under the stack's load_balancer.public_url (default: its "
                            "backup.load_test.path). Any other URL is refused.")
    duration_seconds: int | None = Field(None, ge=1, le=3600, description="Default: backup.load_test.")
    requests: int | None = Field(None, ge=1, le=1_000_000, description="Default: backup.load_test.")
    concurrency: int | None = Field(None, ge=1, le=500, description="Default: backup.load_test.")


@flow(name="load-test", description="Bounded load against the stack's own public URL: p50/p95/p99, throughput and "
      "error rate, compared with the previous run.")
def load_test_flow(params: LoadTestRun = LoadTestRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    settings = spec.backup.load_test
    url = loadgen.resolve_target(spec.public_url, settings.path, params.url)
    result = loadgen.run_load(url, params.duration_seconds or settings.duration_seconds,
                              params.requests or settings.requests, params.concurrency or settings.concurrency,
                              settings.timeout_seconds)
    result["at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    earlier = run_history.read(HISTORY, ctx.prefix)
    previous = earlier[-1] if earlier else None
    run_history.append(HISTORY, ctx.prefix, {k: result[k] for k in ("at", "requests", *COMPARED)})
    create_markdown_artifact(key=f"load-test-{ctx.prefix}", markdown=load_markdown(ctx.prefix, result, previous),
                             description=f"Load test of {ctx.prefix}")
    get_run_logger().info("load test of %s: %d requests, p95 %s ms, %.1f req/s, error rate %.2f %%", url,
                          result["requests"], result["p95_ms"], result["throughput_rps"], 100 * result["error_rate"])
    return {**result, "previous": previous}


def _change(now: Any, before: Any) -> str:
    if not isinstance(now, (int, float)) or not isinstance(before, (int, float)):
        return "-"
    if before == 0:
        return "=" if now == 0 else "new"
    return f"{100 * (now - before) / before:+.1f} %"


def load_markdown(prefix: str, result: dict[str, Any], previous: dict[str, Any] | None) -> str:
    lines = [f"# Load test of {prefix}", "", f"`GET {result['url']}`: {result['requests']} requests, "
             f"concurrency {result['concurrency']}, {result['duration_seconds']} s", "",
             "| measure | this run | previous run | change |", "|---|---|---|---|"]
    for key in COMPARED:
        before = previous.get(key) if previous else None
        shown = before if before is not None else "-"
        lines.append(f"| {key} | {result[key]} | {shown} | {_change(result[key], before)} |")
    lines += ["", f"Statuses: {', '.join(f'{k}: {v}' for k, v in result['statuses'].items()) or 'none'}"]
    if previous:
        lines.append(f"Previous run: {previous.get('at')}")
    return "\n".join(lines) + "\n"
