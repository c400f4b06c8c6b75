"""deploy_app: roll a commit out to the stack's services, verify it, roll back on failure.

    wait for the stack's deploy slot (deploys of one stack never overlap)
    read what runs  ──  the commit is live everywhere: nothing to do, say so
    notify "started"
    image {service} (side by side): check, build, smoke test, push, scan
    register task definitions ─> migration tasks ─> update services
    wait until stable ─> verify health (rollout, tasks, targets, HTTP probe, 3 times in a row)
      any failure after an update: every updated service back to its previous revision,
      wait, verify again; the run ends Failed with the reason
    record the images ─> notify "succeeded" (URL, commit, duration) / "failed" (reason)
    artifact: commit, images + digests, revisions before/after, seconds per step, health

Started by `ecsflow deploy`, by the webhook receiver (parameters
{"params": {"stack_file": ..., "commit": sha, "ref": "refs/heads/main"}}) or from the UI.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from flows.phase_images import stack_dir
from spec import Stack
from tasks import cluster, console, deploy, services
from tasks.aws import AwsContext
from tasks.notify import notify

SLOT_LEASE_SECONDS = 60  # a killed run's slot frees itself after this (the lease is renewed while it runs)


class DeployRun(StackRun):
    commit: str | None = Field(None, description="Git commit SHA to deploy. Default: the build context's HEAD (a "
                                                 "content digest outside git).")
    ref: str | None = Field(None, description="The git ref that was pushed, e.g. refs/heads/main (for the record).")
    services: list[str] | None = Field(None, description="Services to deploy. Default: every service whose build "
                                                         "context is on this machine.")
    run_migrations: bool = Field(True, description="Run each service's migration command as a one-off task of the "
                                                   "new revision before the rollout.")


class DeployFailed(Exception):
    """The deploy did not go through; the message says why and what was rolled back."""


def slot_name(spec: Stack) -> str:
    return f"ecsflow-deploy-{spec.name}-{spec.env}"


def stack_tag(spec: Stack) -> str:
    return f"ecsflow-stack:{spec.name}-{spec.env}"


def _this_run_id() -> Any:
    with contextlib.suppress(Exception):
        return get_run_context().flow_run.id  # type: ignore[union-attr]
    return None


def _cancel_older(spec: Stack) -> list[str]:
    """overlap: cancel_older. Running deploys of this stack are asked to cancel; the newer deploy
    takes the slot once they let go of it (it rolls out everything they were rolling out)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    me = _this_run_id()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["deploy_app"])),
                                     flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[stack_tag(spec)]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
            id=FlowRunFilterId(not_any_=[me]) if me else None))
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(message="a newer deploy of the same stack started "
                                                                 "(deploy.overlap: cancel_older)"), force=True)
    return [run.name for run in runs]


@contextlib.contextmanager
def deploy_slot(spec: Stack) -> Iterator[None]:
    """One deploy per stack at a time: a Prefect global concurrency limit of 1 named after the
    stack, created on first use; this run is tagged with the stack so a newer one can find it."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    log = get_run_logger()
    me = _this_run_id()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(slot_name(spec), limit=1)
        if me is not None:
            run = client.read_flow_run(me)
            client.update_flow_run(me, tags=sorted({*run.tags, stack_tag(spec)}))
    if spec.deploy.overlap == "cancel_older":
        cancelled = _cancel_older(spec)
        if cancelled:
            log.warning("cancelled the older deploy run(s) %s of %s-%s (deploy.overlap: cancel_older)",
                        ", ".join(cancelled), spec.name, spec.env)
    log.info("waiting for the deploy slot %s (one deploy of a stack at a time)", slot_name(spec))
    with concurrency(slot_name(spec), occupy=1, strict=True, lease_duration=SLOT_LEASE_SECONDS):
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:600]


def _rows(services: list[str], live: dict[str, deploy.Live], images: dict[str, Any], after: dict[str, str],
          health: dict[str, str]) -> list[dict[str, str]]:
    return [{"service": s,
             "image": images[s].uri if s in images else (live[s].image or "" if s in live else ""),
             "digest": images[s].digest if s in images else "",
             "revision before": live[s].revision if s in live else "",
             "revision after": after.get(s, live[s].revision if s in live else ""),
             "health": health.get(s, "")} for s in services]


def _health_text(facts: dict[str, Any]) -> str:
    parts = []
    if "running" in facts:
        parts.append(f"{facts.get('running')}/{facts.get('desired')} tasks")
    if "healthy_targets" in facts:
        parts.append(f"{facts['healthy_targets']} healthy target(s)")
    if facts.get("probe"):
        parts.append(str(facts["probe"]))
    return "; ".join(parts) or "ok"


def _publish(spec: Stack, title: str, commit: str, rows: list[dict[str, str]], clock: deploy.StepClock,
             outcome: str) -> None:
    report = deploy.markdown_report(title, commit=commit, rows=rows, clock=clock, outcome=outcome)
    create_markdown_artifact(key=f"deploy-{spec.name}-{spec.env}",
                             markdown=report + service_links(AwsContext.for_stack(spec), [r["service"] for r in rows]),
                             description=f"{spec.name}-{spec.env} deploy of {commit[:12]}: {outcome}")


def service_links(ctx: AwsContext, names: list[str]) -> str:
    """Each deployed service's page in the AWS console (events, tasks, deployments), from its name alone."""
    if not names:
        return ""
    lines = ["", "", "| service | AWS console |", "|---|---|"]
    for name in names:
        url = console.console_url(f"{cluster.cluster_name(ctx)}/{services.service_name(ctx, name)}", ctx.region,
                                  "ecs service")
        lines.append(f"| {name} | [{services.service_name(ctx, name)}]({url}) |")
    return "\n".join(lines) + "\n"


@flow(name="deploy_app", description="Build, push and roll out a commit to the stack's services; verify health; "
      "roll back on failure; notify.")
def deploy_app_flow(params: DeployRun = DeployRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    started = time.monotonic()
    log = get_run_logger()
    clock = deploy.StepClock()
    spec, ctx = open_stack(params)
    directory = stack_dir(params)
    chosen = deploy.deployable(spec, directory, params.services)
    tags = {s: deploy.resolve_tag(spec, s, directory, params.commit) for s in chosen}
    commit = params.commit or ", ".join(sorted(set(tags.values())))
    with deploy_slot(spec):
        clock.lap("wait for the deploy slot")
        reads = {s: deploy.read_live.submit(spec, ctx, s) for s in chosen}
        settle(list(reads.values()))
        live = {s: f.result() for s, f in reads.items()}
        clock.lap("read live state")
        if all(live[s].tag == tags[s] for s in chosen):
            message = (f"commit {commit[:12]} is already live on {', '.join(chosen)} "
                       f"({', '.join(live[s].revision for s in chosen)}): nothing to do")
            log.info(message)
            _publish(spec, f"Deploy of {spec.name}-{spec.env}", commit,
                     _rows(chosen, live, {}, {}, {}), clock, "already live, nothing done")
            return {"status": "already live", "commit": commit, "message": message,
                    "revisions": {s: live[s].revision for s in chosen}}
        return _roll_out(params, spec, ctx, directory, chosen, tags, commit, live, clock, started)


def _roll_out(params: DeployRun, spec: Stack, ctx: AwsContext, directory: str, chosen: list[str],
              tags: dict[str, str], commit: str, live: dict[str, deploy.Live], clock: deploy.StepClock,
              started: float) -> dict[str, Any]:
    log = get_run_logger()
    where = f"{spec.name}-{spec.env}"
    ref = f" ({params.ref})" if params.ref else ""
    notify(spec, ctx, "deploy.started", f"deploy of {commit[:12]} started",
           f"Deploying {commit}{ref} to {', '.join(chosen)}.")
    images: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    registered: dict[str, Any] = {}
    after: dict[str, str] = {}
    health: dict[str, str] = {}
    updated: list[str] = []
    timeout = float(spec.deploy.stability_timeout_seconds)
    verify_timeout = float(spec.deploy.verify_timeout_seconds)
    step = "build images"
    try:
        repos = {s: deploy.require_repository.submit(spec, ctx, s) for s in chosen}
        builds = {s: deploy.build_and_push.submit(spec, ctx, s, repos[s], directory, tags[s]) for s in chosen}
        settle([*repos.values(), *builds.values()])
        images = {s: f.result() for s, f in builds.items()}
        clock.lap("build, smoke test, push, scan")

        step = "register task definitions"
        pinned = deploy.with_image_tags(spec, tags)
        registered.update({s: deploy.register_revision.submit(pinned, ctx, s, repos[s]) for s in chosen})
        settle(list(registered.values()))
        definitions = {s: f.result() for s, f in registered.items()}
        after = {s: d.id.rsplit("/", 1)[-1] for s, d in definitions.items()}
        clock.lap("register task definitions")

        step = "run migrations"
        if params.run_migrations:
            migrations = [deploy.migrate.submit(pinned, ctx, s, definitions[s]) for s in chosen
                          if spec.services[s].migration_command]
            settle(migrations)
            if migrations:
                clock.lap("migrations")
        else:
            log.info("migrations skipped (run_migrations is off)")

        step = "update services"
        moving = [s for s in chosen if definitions[s].id != live[s].task_definition]
        updated = list(moving)
        settle([deploy.update_service.submit(spec, ctx, s, definitions[s].id, desired_now=live[s].desired_count)
                for s in moving])
        clock.lap("update services")

        step = "wait until stable"
        settle([deploy.wait_stable.submit(spec, ctx, s, definitions[s].id, timeout) for s in moving])
        clock.lap("wait until stable")

        step = "verify health"
        checks = {s: deploy.verify.submit(spec, ctx, s, verify_timeout) for s in chosen}
        settle(list(checks.values()))
        health = {s: _health_text(f.result()) for s, f in checks.items()}
        clock.lap("verify health")
    except Exception as exc:
        clock.lap(f"{step} (failed)")
        reason = f"{step}: {_first_line(exc)}"
        outcome = f"failed at {reason}"
        if updated:
            rolled = _roll_back(spec, ctx, updated, live, timeout, verify_timeout, health)
            clock.lap("roll back")
            outcome += f"; {rolled}"
        else:
            outcome += "; no service was changed"
        made = definitions or {s: f.result() for s, f in registered.items() if f.state.is_completed()}
        failed = {s: d.id for s, d in made.items() if d.id != live[s].task_definition}
        _settle_quietly([deploy.retire_revision.submit(ctx, s, arn, arn.rsplit("/", 1)[-1])
                         for s, arn in failed.items()])
        after.update({s: f"{live[s].revision} ({arn.rsplit('/', 1)[-1]} retired)" for s, arn in failed.items()})
        _publish(spec, f"Deploy of {where}", commit, _rows(chosen, live, images, after, health), clock, outcome)
        notify(spec, ctx, "deploy.failed", f"deploy of {commit[:12]} failed",
               f"Deploy of {commit}{ref} to {', '.join(chosen)} failed: {outcome}.")
        raise DeployFailed(f"deploy of {commit[:12]} to {where} {outcome}") from exc

    settle([deploy.record_deployed_image.submit(spec, ctx, s, tags[s], images[s].digest) for s in chosen]
           + [deploy.mark_revision.submit(ctx, s, definitions[s].id, "ok") for s in chosen])
    clock.lap("record images")
    seconds = round(time.monotonic() - started, 1)
    url = spec.public_url or "(no load_balancer.public_url in the stack file)"
    _publish(spec, f"Deploy of {where}", commit, _rows(chosen, live, images, after, health), clock,
             f"succeeded in {seconds} s")
    notify(spec, ctx, "deploy.succeeded", f"deploy of {commit[:12]} succeeded",
           f"{url} runs {commit}{ref} ({', '.join(f'{s} {after[s]}' for s in chosen)}); took {seconds} s.")
    log.info("deploy of %s to %s succeeded in %.1f s", commit[:12], where, seconds)
    return {"status": "deployed", "commit": commit, "url": spec.public_url, "seconds": seconds,
            "revisions": {s: {"before": live[s].revision, "after": after[s]} for s in chosen},
            "images": {s: images[s].pinned for s in chosen}}


def _settle_quietly(futures: list[Any]) -> None:
    """Clean-up after a failure: wait for it, log what did not work, never mask the failure."""
    try:
        settle(futures)
    except Exception as exc:
        get_run_logger().warning("clean-up after the failed deploy: %s", _first_line(exc))


def _roll_back(spec: Stack, ctx: AwsContext, updated: list[str], live: dict[str, deploy.Live], timeout: float,
               verify_timeout: float, health: dict[str, str]) -> str:
    """Every updated service back to the revision it ran before; wait; verify again."""
    log = get_run_logger()
    back = {s: deploy.roll_back.submit(spec, ctx, s, live[s].task_definition, live[s].revision) for s in updated}
    try:
        settle(list(back.values()))
        settle([deploy.wait_stable.submit(spec, ctx, s, live[s].task_definition, timeout) for s in updated])
        checks = {s: deploy.verify.submit(spec, ctx, s, verify_timeout) for s in updated}
        settle(list(checks.values()))
        health.update({s: f"after rollback: {_health_text(f.result())}" for s, f in checks.items()})
    except Exception as exc:
        log.error("the rollback did not verify: %s", _first_line(exc))
        return (f"rolled back {', '.join(f'{s} to {live[s].revision}' for s in updated)}, but the rollback did not "
                f"verify: {_first_line(exc)}")
    return f"rolled back {', '.join(f'{s} to {live[s].revision}' for s in updated)} (healthy again)"
