"""The deploy's decisions on ECS-shaped answers moto never gives (a FAILED rollout, a service the
circuit breaker moved back), and its choice of image tag."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from spec import Stack
from tasks.deploy import DeployError, image_tag_of, resolve_tag, stability_problem
from tests.images.conftest import commit, stack_yaml, write_app

NEW = "arn:aws:ecs:ap-northeast-1:123456789012:task-definition/shop-dev-web:8"
OLD = "arn:aws:ecs:ap-northeast-1:123456789012:task-definition/shop-dev-web:7"


def service(*deployments: dict[str, object], task_definition: str = NEW, desired: int = 2) -> dict[str, object]:
    return {"taskDefinition": task_definition, "desiredCount": desired, "deployments": list(deployments)}


def primary(state: str, running: int = 2, td: str = NEW, **extra: object) -> dict[str, object]:
    return {"status": "PRIMARY", "taskDefinition": td, "rolloutState": state, "runningCount": running,
            "desiredCount": 2, **extra}


def test_stable_only_when_the_new_revision_runs_alone_with_every_task() -> None:
    assert stability_problem(service(primary("COMPLETED")), NEW) == (True, None)
    assert stability_problem(service(primary("IN_PROGRESS")), NEW) == (False, None)
    assert stability_problem(service(primary("COMPLETED", running=1)), NEW) == (False, None)
    draining = {"status": "ACTIVE", "taskDefinition": OLD, "rolloutState": "COMPLETED"}
    assert stability_problem(service(primary("COMPLETED"), draining), NEW) == (False, None)


def test_a_failed_rollout_or_a_service_moved_back_is_a_failure_at_once() -> None:
    stable, problem = stability_problem(service(primary("FAILED", rolloutStateReason="tasks failed to start")), NEW)
    assert not stable and problem == "ECS reports the rollout failed: tasks failed to start"
    moved = service(primary("COMPLETED", td=OLD), task_definition=OLD)
    stable, problem = stability_problem(moved, NEW)
    assert not stable and problem is not None and "now runs shop-dev-web:7" in problem


def test_image_tags_are_read_from_image_references() -> None:
    assert image_tag_of("123.dkr.ecr.ap-northeast-1.amazonaws.com/shop-dev-web:abc123") == "abc123"
    assert image_tag_of("127.0.0.1:5000/shop-dev-web:abc@sha256:00") == "abc"
    assert image_tag_of("127.0.0.1:5000/shop-dev-web") is None and image_tag_of(None) is None


def test_the_commit_must_be_what_the_build_context_holds(tmp_path: Path) -> None:
    app = write_app(tmp_path / "web")
    head = subprocess.run(["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    spec = Stack.model_validate(stack_yaml("shop", {"web": {"build": {"context": "web"}}}))
    assert resolve_tag(spec, "web", str(tmp_path), None) == head
    assert resolve_tag(spec, "web", str(tmp_path), head[:10]) == head, "a short SHA names the full commit"
    older = head
    commit(app, "next")
    with pytest.raises(DeployError) as refused:
        resolve_tag(spec, "web", str(tmp_path), older)
    assert f"checked out at {resolve_tag(spec, 'web', str(tmp_path), None)[:12]}, not at {older[:12]}" in \
        str(refused.value)
    with pytest.raises(DeployError, match="not a git commit SHA"):
        resolve_tag(spec, "web", str(tmp_path), "main")


@pytest.mark.parametrize(("deploy", "services", "message"), [
    ({"services": {"api": {}}}, {"web": {}}, "deploy.services names api, which is not in services (web)"),
    ({"services": {"web": {"strategy": "blue_green"}}}, {"web": {"load_balanced": False}},
     "services.web has load_balanced: false; use rolling"),
    ({"stability_timeout_seconds": 600, "services": {"web": {"strategy": "blue_green", "bake_time_minutes": 10}}},
     {"web": {}}, "bake_time_minutes (10) must end within deploy.stability_timeout_seconds (600)"),
    ({"overlap": "newest"}, {"web": {}}, "deploy.overlap"),
])
def test_the_deploy_section_names_the_field_at_fault(deploy: dict[str, object], services: dict[str, dict[str, object]],
                                                     message: str) -> None:
    from pydantic import ValidationError

    data = stack_yaml("shop", services, deploy=deploy)
    for svc in data["services"].values():
        if svc.get("load_balanced") is False:
            del svc["path_patterns"]  # a worker has none
    with pytest.raises(ValidationError) as bad:
        Stack.model_validate(data)
    assert message in str(bad.value)
