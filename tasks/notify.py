"""Tell people what a run did, through the stack's notifier block (see blocks/notifier.py).

    notify(spec, ctx, event, subject, body) -> bool     True when a message went out

The stack file names the block: `notifications: {block: team-slack}`; unset, notifications are
off and the task only logs that. A notification never decides a run: a missing block, a target
that refuses or times out is a warning in the run's log, and the run goes on (its own state is
what counts). Used by deploy_app and rollback, and by the backup and restore-test flows.
"""

from __future__ import annotations

import logging
from typing import cast

from prefect import task
from prefect.cache_policies import NO_CACHE

from spec import Stack
from tasks.aws import AwsContext


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger("ecsflow.notify")


def headline(spec: Stack, subject: str) -> str:
    return f"[{spec.name}-{spec.env}] {subject}"


@task(task_run_name="notify {event}", cache_policy=NO_CACHE, persist_result=False, retries=0)
def notify(spec: Stack, ctx: AwsContext | None, event: str, subject: str, body: str) -> bool:
    """Send `subject` / `body` through the stack's notifier block. `event` (e.g. "deploy.failed")
    names the notification in the run's log. Never raises."""
    log = _logger()
    name = spec.notifications.block
    if not name:
        log.info("notifications are off for %s-%s (no notifications.block in the stack file); not sending %s",
                 spec.name, spec.env, event)
        return False
    try:
        from blocks.notifier import EcsflowNotifier

        notifier = cast(EcsflowNotifier, EcsflowNotifier.load(name, _sync=True))  # type: ignore[call-arg]
    except Exception as exc:  # a missing block must not fail a deploy that worked
        log.warning("could not load the notifier block %r for %s (%s: %s); create it (see docs/deploy.md) or fix "
                    "notifications.block", name, event, type(exc).__name__, str(exc).splitlines()[0][:200])
        return False
    try:
        notifier.send(headline(spec, subject), body)
    except Exception as exc:
        log.warning("the %s notification through block %r was not delivered: %s", event, name,
                    str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
        return False
    log.info("sent the %s notification through block %r", event, name)
    return True
