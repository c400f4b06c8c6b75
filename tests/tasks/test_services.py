"""The services family's pure parts: the migration verdict (moto's tasks always exit 0, so the
failure path of the exit code is checked here; tests/test_ecs_alb.py runs the real task)."""

from __future__ import annotations

from tasks.services import migration_verdict


def task(exit_code: int | None, **extra: str) -> dict[str, object]:
    container: dict[str, object] = {"name": "backend"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {"containers": [container], **extra}


def test_exit_0_lets_the_rollout_go_on() -> None:
    assert migration_verdict("backend", "php artisan migrate --force", task(0), ["Migrated"]) is None


def test_a_non_zero_exit_stops_the_rollout_with_the_code_and_the_log_tail() -> None:
    problem = migration_verdict("backend", "php artisan migrate --force", task(1, stoppedReason="Essential container "
                                "in task exited"), ["SQLSTATE[08006] could not connect", "migrate failed"])
    assert problem is not None
    assert "`php artisan migrate --force`" in problem and "exited 1" in problem
    assert "Essential container in task exited" in problem and "SQLSTATE[08006]" in problem
    assert "stays on its current revision" in problem


def test_a_task_that_never_started_has_no_exit_code() -> None:
    problem = migration_verdict("backend", "migrate", task(None, stopCode="TaskFailedToStart"), [])
    assert problem is not None and "without a code" in problem and "TaskFailedToStart" in problem
