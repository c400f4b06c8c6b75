"""The one-off task verdict, as the migration and the database initialisation word it (moto's tasks
always exit 0, so the failure path of the exit code is checked here; tests/test_ecs_alb.py and
tests/tasks/test_dbinit.py run the real tasks)."""

from __future__ import annotations

import pytest

from spec import load_stack
from tasks import dbinit, services
from tasks.aws import AwsContext
from tasks.one_off import OneOffTask, verdict
from tests.conftest import LIBRARY_STACK

CTX = AwsContext(stack="library", env="prod", region="ap-northeast-1")
REVISION = "arn:aws:ecs:ap-northeast-1:123456789012:task-definition/library-prod-backend:7"


@pytest.fixture(scope="module")
def migration() -> OneOffTask:
    return services.migration_task(load_stack(LIBRARY_STACK), CTX, "backend", REVISION)


def task(exit_code: int | None, container: str = "backend", **extra: str) -> dict[str, object]:
    found: dict[str, object] = {"name": container}
    if exit_code is not None:
        found["exitCode"] = exit_code
    return {"containers": [found], **extra}


def test_the_migration_is_the_services_command_on_its_own_log_stream(migration: OneOffTask) -> None:
    assert migration.command == ("php", "artisan", "migrate", "--force")
    assert (migration.container, migration.log_stream_prefix) == ("backend", "backend")
    assert migration.log_group == "/ecsflow/library-prod/ecs-backend"


def test_exit_0_lets_the_rollout_go_on(migration: OneOffTask) -> None:
    assert verdict(migration, task(0), ["Migrated"]) is None


def test_a_non_zero_exit_stops_the_rollout_with_the_code_and_the_log_tail(migration: OneOffTask) -> None:
    problem = verdict(migration, task(1, stoppedReason="Essential container in task exited"),
                      ["SQLSTATE[08006] could not connect", "migrate failed"])
    assert problem is not None
    assert "the migration of backend (`php artisan migrate --force`) exited 1" in problem
    assert "Essential container in task exited" in problem and "SQLSTATE[08006]" in problem
    assert "stays on its current revision" in problem


def test_a_task_that_never_started_has_no_exit_code(migration: OneOffTask) -> None:
    problem = verdict(migration, task(None, stopCode="TaskFailedToStart"), [])
    assert problem is not None and "without a code" in problem and "TaskFailedToStart" in problem
    assert "(no log lines)" in problem


def test_only_the_named_containers_exit_code_counts(migration: OneOffTask) -> None:
    sidecar_exited_0 = {"containers": [{"name": "log-router", "exitCode": 0}, {"name": "backend", "exitCode": 2}]}
    assert "exited 2" in (verdict(migration, sidecar_exited_0, []) or "")


def test_a_failed_database_initialisation_names_itself_and_holds_back_the_services() -> None:
    init = dbinit.init_task(load_stack(LIBRARY_STACK), CTX, REVISION)
    problem = verdict(init, task(3, container="dbinit", stoppedReason="Essential container exited"),
                      ["psql: error: connection to server failed"])
    assert problem is not None and problem.startswith("the database initialisation exited 3")
    assert "the services are not rolled out" in problem and "connection to server failed" in problem
    assert verdict(init, task(0, container="dbinit"), []) is None
