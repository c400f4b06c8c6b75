"""rollback: put services back on an earlier task-definition revision, by hand.

    per service: choose the target (the named revision, else the newest earlier revision a
    deploy verified, skipping revisions a deploy rolled back) ─> update the service ─> wait
    until stable ─> verify health ─> notify; artifact with the revisions before/after.

The image recorded on the repository (what the next `ecsflow up` runs) follows the rollback,
so `up` does not roll the service forward again.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from tasks import deploy
from tasks.notify import notify


class RollbackRun(StackRun):
    services: list[str] | None = Field(None, description="Services to roll back. Default: all of the stack's.")
    to_revision: int | None = Field(None, ge=1, description="Roll back to this revision number of each service's "
                                                            "family. Default: the newest earlier revision a deploy "
                                                            "verified.")


class RollbackFailed(Exception):
    pass


@flow(name="rollback", description="Put services back on an earlier task-definition revision; verify; notify.")
def rollback_flow(params: RollbackRun = RollbackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    started = time.monotonic()
    log = get_run_logger()
    clock = deploy.StepClock()
    spec, ctx = open_stack(params)
    chosen = list(dict.fromkeys(params.services or spec.services))
    unknown = [s for s in chosen if s not in spec.services]
    if unknown:
        raise deploy.DeployError(f"services: {', '.join(unknown)} not in the stack file")
    where = f"{spec.name}-{spec.env}"
    targets = {s: deploy.rollback_target.submit(spec, ctx, s, params.to_revision) for s in chosen}
    settle(list(targets.values()))
    pairs = {s: f.result() for s, f in targets.items()}
    moving = [s for s in chosen if pairs[s][0] != pairs[s][1]]
    clock.lap("choose revisions")
    rows = [{"service": s, "revision before": pairs[s][0].rsplit("/", 1)[-1],
             "revision after": pairs[s][1].rsplit("/", 1)[-1]} for s in chosen]
    if not moving:
        log.info("every service already runs its target revision: nothing to do")
        return {"status": "nothing to do", "revisions": {r["service"]: r["revision after"] for r in rows}}
    timeout = float(spec.deploy.stability_timeout_seconds)
    health: dict[str, str] = {}
    try:
        settle([deploy.roll_back.submit(spec, ctx, s, pairs[s][1], pairs[s][1].rsplit("/", 1)[-1]) for s in moving])
        clock.lap("update services")
        settle([deploy.wait_stable.submit(spec, ctx, s, pairs[s][1], timeout) for s in moving])
        clock.lap("wait until stable")
        checks = {s: deploy.verify.submit(spec, ctx, s, float(spec.deploy.verify_timeout_seconds)) for s in moving}
        settle(list(checks.values()))
        health = {s: str(f.result().get("probe") or "healthy") for s, f in checks.items()}
        clock.lap("verify health")
        settle([deploy.record_running_image.submit(spec, ctx, s, pairs[s][1]) for s in moving]
               + [deploy.mark_revision.submit(ctx, s, pairs[s][0], "rolled-back") for s in moving])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _publish(spec, rows, health, clock, f"failed: {reason}")
        notify(spec, ctx, "rollback.failed", "rollback failed", f"Rollback of {', '.join(moving)} failed: {reason}")
        raise RollbackFailed(f"rollback of {where} failed: {reason}") from exc
    seconds = round(time.monotonic() - started, 1)
    summary = ", ".join(f"{r['service']} {r['revision before']} -> {r['revision after']}" for r in rows
                        if r["service"] in moving)
    _publish(spec, rows, health, clock, f"rolled back in {seconds} s")
    notify(spec, ctx, "rollback.succeeded", "rollback succeeded", f"{summary}; took {seconds} s.")
    return {"status": "rolled back", "seconds": seconds,
            "revisions": {r["service"]: {"before": r["revision before"], "after": r["revision after"]} for r in rows}}


def _publish(spec: Any, rows: list[dict[str, str]], health: dict[str, str], clock: deploy.StepClock,
             outcome: str) -> None:
    table = [{**r, "health": health.get(r["service"], "")} for r in rows]
    create_markdown_artifact(key=f"rollback-{spec.name}-{spec.env}",
                             markdown=deploy.markdown_report(f"Rollback of {spec.name}-{spec.env}", commit="-",
                                                             rows=table, clock=clock, outcome=outcome),
                             description=f"{spec.name}-{spec.env} rollback: {outcome}")
