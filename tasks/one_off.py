"""One-off ECS tasks: run a task definition's container once with a command, wait until it stops,
read its exit code and the tail of its log. The database initialisation and each service's
migration run this way; a non-zero exit stops the run with a message that names the task, its
exit code (or why it never got one) and its last log lines.

The task runs on Fargate on-demand capacity (a Spot interruption must not cut a migration in half)
in the private subnets without a public IP, and its RunTask request carries a client token derived
from the stack, the revision and whatever else makes the run unique: a retried request after a
crash does not start a second task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tasks.aws import AwsContext, EcsflowError, call, call_or_none, wait_until

LOG_TAIL_LINES = 20


class OneOffTaskFailed(EcsflowError):
    """A one-off task did not start, or did not exit 0."""


@dataclass(frozen=True)
class OneOffTask:
    what: str  # names the task in every message, e.g. "the migration of backend (`php artisan migrate`)"
    on_failure: str  # what a failure means for the run, e.g. "the service stays on its current revision"
    container: str  # the container whose exit code counts, and whose command is overridden
    command: tuple[str, ...]
    log_group: str
    log_stream_prefix: str  # the container's awslogs-stream-prefix
    started_by: str
    timeout: float
    token_parts: tuple[str, ...]  # what makes this run unique (the revision, a script digest...)
    tags: list[dict[str, str]]


def run_request(ctx: AwsContext, job: OneOffTask, *, cluster_arn: str, task_definition_arn: str,
                subnet_ids: list[str], security_group_id: str) -> dict[str, Any]:
    """The RunTask request: the command as an override (names of variables only, never values)."""
    return {"cluster": cluster_arn, "taskDefinition": task_definition_arn, "launchType": "FARGATE",
            "platformVersion": "LATEST", "count": 1,
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": sorted(subnet_ids), "securityGroups": [security_group_id], "assignPublicIp": "DISABLED"}},
            "overrides": {"containerOverrides": [{"name": job.container, "command": list(job.command)}]},
            "startedBy": job.started_by,
            # ECS takes at most 36 characters.
            "clientToken": hashlib.sha256(ctx.token(*job.token_parts).encode()).hexdigest()[:32],
            "tags": job.tags, "enableExecuteCommand": False}


def verdict(job: OneOffTask, task: dict[str, Any], log_tail: list[str]) -> str | None:
    """None when the container exited 0; otherwise what to tell the user."""
    container: dict[str, Any] = next((c for c in task.get("containers", []) if c.get("name") == job.container), {})
    code = container.get("exitCode")
    if code == 0:
        return None
    reason = container.get("reason") or task.get("stoppedReason") or task.get("stopCode") or "no reason given"
    tail = "\n".join(log_tail) or "(no log lines)"
    return (f"{job.what} exited {code if code is not None else 'without a code'} ({reason}); "
            f"{job.on_failure}. Last log lines:\n{tail}")


def log_tail(ctx: AwsContext, job: OneOffTask, task_arn: str) -> list[str]:
    stream = f"{job.log_stream_prefix}/{job.container}/{task_arn.rsplit('/', 1)[-1]}"  # awslogs' stream name
    got = call_or_none(f"read the log of {task_arn}", ctx.logs().get_log_events, logGroupName=job.log_group,
                       logStreamName=stream, limit=LOG_TAIL_LINES, startFromHead=False)
    return [str(e.get("message", "")).rstrip() for e in (got["events"] if got else [])]


def run_one_off_task(ctx: AwsContext, job: OneOffTask, *, cluster_arn: str, task_definition_arn: str,
                     subnet_ids: list[str], security_group_id: str,
                     failure: type[OneOffTaskFailed] = OneOffTaskFailed) -> tuple[str, list[str]]:
    """Run the task, wait until it stops, and return its ARN and log tail; raise `failure` unless it
    exited 0."""
    ecs = ctx.ecs()
    request = run_request(ctx, job, cluster_arn=cluster_arn, task_definition_arn=task_definition_arn,
                          subnet_ids=subnet_ids, security_group_id=security_group_id)
    got = call(f"run {job.what}", ecs.run_task, **request)
    if got.get("failures") or not got.get("tasks"):
        raise failure(f"{job.what} could not start: {got.get('failures')}")
    task_arn = got["tasks"][0]["taskArn"]

    def stopped() -> dict[str, Any] | None:
        tasks = call(f"read task {task_arn} ({job.what})", ecs.describe_tasks, cluster=cluster_arn,
                     tasks=[task_arn])["tasks"]
        return tasks[0] if tasks and tasks[0].get("lastStatus") == "STOPPED" else None

    task = wait_until(f"{job.what} to finish", stopped, timeout=job.timeout, poll=ctx.poll_seconds)
    tail = log_tail(ctx, job, task_arn)
    problem = verdict(job, task, tail)
    if problem:
        raise failure(problem)
    return task_arn, tail
