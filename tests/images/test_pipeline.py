"""The images phase for real: a Docker engine builds, a container is smoke-tested, a registry
with basic auth receives the push, moto holds the ECR repositories and the record.

Everything is checked from outside: the registry's manifest API, the engine's image
labels, the repository's tags in moto, the Prefect server's task runs and artifacts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

import spec
from flows.phase_images import ImagesRun, images_flow
from spec import Stack
from tasks import images, registry
from tasks.aws import CALLS, AwsContext
from tests.images.conftest import RegistryServer, commit, write_app

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"


def ecr() -> Any:
    return boto3.client("ecr", region_name=REGION)


def prepare(stack_file: Path) -> tuple[Stack, AwsContext]:
    """The stack's ECR repositories in moto, as the registry phase makes them."""
    stack = spec.load_stack(stack_file)
    ctx = AwsContext.for_stack(stack)
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    for service in stack.services:
        registry.ensure_repository.fn(stack, ctx, service, key)
    return stack, ctx


def run_images(stack_file: Path, **params: Any) -> tuple[Any, str]:
    """Run the images flow; return its final state and the flow run's id."""
    state = images_flow(ImagesRun(stack_file=str(stack_file), **params), return_state=True)
    return state, str(state.state_details.flow_run_id)


def task_runs(flow_run_id: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))
    return {run.name: run for run in runs}


def artifact_rows(key: str) -> list[dict[str, Any]]:
    import json

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    newest = max(found, key=lambda a: a.created)
    data = newest.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    return rows


def recorded(repository: str) -> str | None:
    repo = ecr().describe_repositories(repositoryNames=[repository])["repositories"][0]
    tags = {t["Key"]: t["Value"] for t in ecr().list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]}
    return tags.get(images.IMAGE_TAG_KEY)


def head(directory: Path) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def two_services(tmp_path: Path, write_stack: Callable[..., Path]) -> Path:
    write_app(tmp_path / "backend", version=f"backend {uuid.uuid4()}")
    write_app(tmp_path / "frontend", version=f"frontend {uuid.uuid4()}")
    return write_stack({"backend": {"build": {"context": "backend"}},
                        "frontend": {"build": {"context": "frontend"}}})


def test_build_smoke_test_push_and_record_then_a_second_run_does_nothing(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str) -> None:
    stack_file = two_services(tmp_path, write_stack)
    stack, ctx = prepare(stack_file)

    planned = images.plan_images(stack, ctx, str(tmp_path))
    assert [(c.action, c.note) for c in planned] == [("create", "build, smoke test, push")] * 2

    state, run_id = run_images(stack_file)
    assert state.is_completed(), state.message
    outputs = state.result()
    assert [c.action for c in images.plan_images(stack, ctx, str(tmp_path))] == ["no-op", "no-op"]

    engine = docker.from_env()
    for service in ("backend", "frontend"):
        sha = head(tmp_path / service)
        repository = f"{stack_name}-dev-{service}"
        digest = local_registry.digest(repository, sha)
        assert digest, f"{repository}:{sha} is not in the registry"
        uri = f"{local_registry.host}/{repository}:{sha}"
        assert outputs[service] == f"{uri}@{digest}"
        assert recorded(repository) == f"{sha}@{digest}"
        labels = engine.images.get(uri).labels
        assert labels["org.opencontainers.image.revision"] == sha
        assert labels["org.opencontainers.image.version"] == sha
        assert labels["org.opencontainers.image.created"].startswith("20")
        assert labels["io.ecsflow.service"] == service
        found = images.find_image(stack, ctx, service)
        assert found is not None and found.id == digest and found.name == uri

    runs = task_runs(run_id)
    for step in ("check", "build", "smoke test", "push", "record"):
        for service in ("backend", "frontend"):
            assert runs[f"{step} image {service}"].state_type.value == "COMPLETED", f"{step} image {service}"
    assert "scan image backend" not in runs  # the override registry has no scanner
    a, b = runs["build image backend"], runs["build image frontend"]
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two builds must overlap"

    deadline = time.monotonic() + 15  # healthy smoke-test containers are removed beside the push
    while engine.containers.list(all=True, filters={"label": "io.ecsflow.smoke"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.containers.list(all=True, filters={"label": "io.ecsflow.smoke"}) == []

    rows = {row["service"]: row for row in artifact_rows(f"images-{stack_name}-dev")}
    assert rows["backend"]["status"] == "pushed"
    assert rows["backend"]["digest"] == local_registry.digest(f"{stack_name}-dev-backend", head(tmp_path / "backend"))
    assert rows["backend"]["image URI"].startswith(f"{local_registry.host}/{stack_name}-dev-backend:")
    assert rows["backend"]["size (compressed)"].endswith(" MB")
    assert rows["backend"]["build time"].endswith(" s")
    assert "no scanner" in rows["frontend"]["scan"]

    # Same commits again: nothing is built, pushed or changed in AWS.
    before = {s: local_registry.tags(f"{stack_name}-dev-{s}") for s in ("backend", "frontend")}
    CALLS.reset()
    state, run_id = run_images(stack_file)
    assert state.is_completed(), state.message
    assert state.result() == outputs
    assert CALLS.mutating() == {}
    runs = task_runs(run_id)
    assert not [name for name in runs if name.startswith(("build ", "smoke ", "push "))], sorted(runs)
    assert {s: local_registry.tags(f"{stack_name}-dev-{s}") for s in ("backend", "frontend")} == before
    assert {row["service"]: row["status"] for row in artifact_rows(f"images-{stack_name}-dev")} == {
        "backend": "present", "frontend": "present"}


def test_a_new_commit_is_a_new_tag_and_the_record_moves(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str) -> None:
    app = write_app(tmp_path / "backend", version=f"one {uuid.uuid4()}")
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    prepare(stack_file)
    first = run_images(stack_file)[0].result()["backend"]

    (app / "www" / "index.html").write_text("<h1>two</h1>\n")
    dirty = run_images(stack_file)[0].result()["backend"]
    sha = commit(app, "two")
    second = run_images(stack_file)[0].result()["backend"]

    repository = f"{stack_name}-dev-backend"
    assert f":{sha}@" in second and first != second
    assert "-dirty-" in dirty.split("@")[0], "an uncommitted change must not reuse the commit's tag"
    assert len(local_registry.tags(repository)) == 3
    assert recorded(repository) == f"{sha}@{local_registry.digest(repository, sha)}"


def test_an_image_that_never_gets_healthy_is_not_pushed_and_its_logs_are_shown(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str) -> None:
    write_app(tmp_path / "backend", healthy=False, version=str(uuid.uuid4()),
              prelude="echo \\\"boom: cannot reach the database\\\" >&2; ")
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}},
                             images={"smoke_test_timeout_seconds": 2})
    prepare(stack_file)

    state, run_id = run_images(stack_file)

    assert state.is_failed()
    with pytest.raises(images.SmokeTestFailed) as failure:
        state.result()
    message = str(failure.value)
    assert "service backend" in message and "failed its smoke test and was not pushed" in message
    assert "HTTP 404" in message
    assert "boom: cannot reach the database" in message  # the container's own log line
    assert "test app listening on" in message
    assert local_registry.tags(f"{stack_name}-dev-backend") == []
    assert recorded(f"{stack_name}-dev-backend") is None
    assert "push image backend" not in task_runs(run_id)
    leftovers = docker.from_env().containers.list(all=True, filters={"label": "io.ecsflow.smoke=backend"})
    assert leftovers == [], "smoke-test containers must be removed"


def test_a_container_that_exits_fails_at_once_with_its_exit_code(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path]) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()), prelude="echo \\\"config missing\\\"; exit 3; ")
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}},
                             images={"smoke_test_timeout_seconds": 60})
    prepare(stack_file)

    state, _ = run_images(stack_file)
    with pytest.raises(images.SmokeTestFailed, match=r"(?s)exited with code 3.*config missing"):
        state.result()


def test_the_smoke_test_runs_the_image_as_ecs_will(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path]) -> None:
    """Read-only root file system (writable paths as volumes) and the service's environment."""
    prelude = ("test \\\"$GREETING\\\" = hello || exit 5; echo ok > /tmp/scratch || exit 6; "
               "echo x > /data/started || exit 4; ")
    write_app(tmp_path / "backend", version=str(uuid.uuid4()), prelude=prelude)
    service = {"build": {"context": "backend"}, "environment": {"GREETING": "hello"}}
    stack_file = write_stack({"backend": service})
    prepare(stack_file)

    state, _ = run_images(stack_file)
    with pytest.raises(images.SmokeTestFailed, match=r"(?s)exited with code 4.*Read-only file system"):
        state.result()

    write_stack({"backend": {**service, "read_only_root_filesystem": False}})
    state, _ = run_images(stack_file)
    assert state.is_completed(), state.message


def test_a_build_error_names_the_service_and_the_other_service_still_ships(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()), dockerfile=(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", "
        "\"echo compiling assets; echo 'vite: missing entry' >&2; exit 7\"]\n"))
    write_app(tmp_path / "frontend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}},
                              "frontend": {"build": {"context": "frontend"}}})
    prepare(stack_file)

    state, _ = run_images(stack_file)

    with pytest.raises(images.BuildFailed) as failure:
        state.result()
    message = str(failure.value)
    assert message.startswith("the image of service backend failed to build")
    assert "returned a non-zero code: 7" in message
    assert "vite: missing entry" in message
    assert local_registry.tags(f"{stack_name}-dev-frontend") == [head(tmp_path / "frontend")]
    rows = {row["service"]: row for row in artifact_rows(f"images-{stack_name}-dev")}
    assert rows["frontend"]["status"] == "pushed"
    assert "FAILED" in rows["backend"]["note"]


def test_a_bad_dockerfile_instruction_is_a_build_error(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path]) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()),
              dockerfile="FROM scratch\nCOPY busybox /bin/busybox\nFROBNICATE the assets\n")
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    prepare(stack_file)

    state, _ = run_images(stack_file)
    with pytest.raises(images.BuildFailed, match=r"service backend failed to build.*(?i:unknown instruction)"):
        state.result()


def test_wrong_registry_credentials_fail_before_building(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    prepare(stack_file)
    monkeypatch.setenv("ECSFLOW_REGISTRY_PASSWORD", "wrong")

    state, run_id = run_images(stack_file)

    with pytest.raises(images.RegistryAuthFailed) as failure:
        state.result()
    message = str(failure.value)
    assert f"the registry {local_registry.host} refused user 'ecsflow' (HTTP 401)" in message
    assert "ECSFLOW_REGISTRY_PASSWORD" in message
    runs = task_runs(run_id)
    assert "build image backend" not in runs
    assert runs["check image backend"].run_count == 1, "a refused login must not be retried"


def test_a_push_with_wrong_credentials_fails_clearly(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch, stack_name: str) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    stack, ctx = prepare(stack_file)
    repo = registry.find_repository(stack, ctx, "backend")
    assert repo is not None
    plan = images.plan_image(stack, ctx, "backend", repo, str(tmp_path))
    built = images.build_image.fn(stack, "backend", plan, str(tmp_path))
    monkeypatch.setenv("ECSFLOW_REGISTRY_USERNAME", "intruder")

    with pytest.raises(images.RegistryAuthFailed) as failure:
        images.push_image.fn(stack, ctx, "backend", plan, built)
    message = str(failure.value)
    assert f"push of service backend's image to {plan.ref} refused for user 'intruder'" in message
    assert "unauthorized" in message
    assert local_registry.tags(f"{stack_name}-dev-backend") == []


def test_an_unreachable_registry_is_named(aws: Any, docker_engine: str, tmp_path: Path,
                                          write_stack: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.servers import free_port

    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    stack, ctx = prepare(stack_file)
    monkeypatch.setenv("ECSFLOW_REGISTRY", f"127.0.0.1:{free_port()}")
    repo = registry.find_repository(stack, ctx, "backend")
    assert repo is not None
    with pytest.raises(images.RegistryUnreachable, match=r"cannot reach the registry 127\.0\.0\.1:"):
        images.plan_image(stack, ctx, "backend", repo, str(tmp_path))


def test_registry_credentials_from_a_prefect_secret_block(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch, stack_name: str) -> None:
    from prefect.blocks.system import Secret

    block = f"registry-{stack_name}"
    Secret(value={"username": local_registry.username, "password": local_registry.password}).save(block)
    monkeypatch.delenv("ECSFLOW_REGISTRY_USERNAME")
    monkeypatch.delenv("ECSFLOW_REGISTRY_PASSWORD")
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}},
                             images={"registry_credentials_block": block})
    prepare(stack_file)

    state, _ = run_images(stack_file)
    assert state.is_completed(), state.message
    assert local_registry.tags(f"{stack_name}-dev-backend") == [head(tmp_path / "backend")]


def test_unbuildable_services_are_skipped_with_a_reason_and_strict_fails(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path]) -> None:
    write_app(tmp_path / "no-source", git=False, dockerfile=(
        "FROM scratch\nCOPY composer.json composer.lock ./\nCOPY busybox /bin/busybox\n"))
    write_app(tmp_path / "no-base", git=False, dockerfile=(
        "ARG PHP_VERSION=8.3\nFROM php:${PHP_VERSION}-fpm-alpine AS runtime\nCOPY www /www\n"))
    stack_file = write_stack({
        "backend": {"build": {"context": "no-source"}},
        "frontend": {"build": {"context": "no-base"}},
        "worker": {"build": {"context": "missing"}},
        "admin": {"build": {"context": "no-source", "dockerfile": "Dockerfile.prod"}},
    })
    prepare(stack_file)

    state, run_id = run_images(stack_file)

    assert state.is_completed(), state.message
    out = state.result()
    assert out["backend"].startswith("not built: its Dockerfile copies composer.json, composer.lock from ")
    assert "php:8.3-fpm-alpine is not in the Docker engine and cannot be pulled" in out["frontend"]
    assert "does not exist" in out["worker"] and "missing" in out["worker"]
    assert "Dockerfile.prod does not exist" in out["admin"]
    assert not [name for name in task_runs(run_id) if name.startswith("build ")]

    state, _ = run_images(stack_file, strict=True)
    with pytest.raises(images.NotBuildable, match="cannot build the image of service"):
        state.result()


def test_no_docker_engine_skips_every_service_with_a_warning(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    prepare(stack_file)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")

    state, _ = run_images(stack_file)

    assert state.is_completed(), state.message
    assert state.result()["backend"].startswith(
        f"not built: no Docker engine is reachable at unix://{tmp_path}/no-such-docker.sock")


def test_an_explicit_tag_is_used_and_must_be_valid(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})
    prepare(stack_file)

    state, _ = run_images(stack_file, tag="release-1.0.0")
    assert state.is_completed(), state.message
    assert local_registry.tags(f"{stack_name}-dev-backend") == ["release-1.0.0"]

    state, _ = run_images(stack_file, tag="no spaces allowed")
    with pytest.raises(images.ImageError, match="not a valid image tag"):
        state.result()


def test_the_images_phase_alone_needs_the_repositories(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path]) -> None:
    write_app(tmp_path / "backend", version=str(uuid.uuid4()))
    stack_file = write_stack({"backend": {"build": {"context": "backend"}}})

    state, _ = run_images(stack_file)
    with pytest.raises(images.ImageError, match="does not exist; run `ecsflow up` first"):
        state.result()

