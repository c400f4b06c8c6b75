"""A worker (load_balanced: false, no port, no health path) goes through the images phase like
any service: its smoke test runs the image with the service's command and waits for its
container health check command to exit 0 inside the container, as ECS runs it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks import images
from tests.images.conftest import RegistryServer, stack_yaml, write_app
from tests.images.test_pipeline import prepare, recorded, run_images

pytestmark = pytest.mark.prefect

WORKER_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "ln", "-s", "/bin/busybox", "/bin/sh"]
COPY rootfs/ /
COPY www /www
USER 65534:65534
ENTRYPOINT ["/bin/busybox"]
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def worker_stack(tmp_path: Path, stack_name: str, **worker: Any) -> Path:
    data = stack_yaml(stack_name, {"worker": {}}, images={"smoke_test_timeout_seconds": 4})
    settings = data["services"]["worker"]
    for key in ("port", "health_check_path", "path_patterns"):
        settings.pop(key)
    settings.update({"load_balanced": False, "build": {"context": "worker"},
                     "command": "sh -c 'echo worker up; touch /tmp/ready; exec sleep 600'",
                     "container_health_check": "test -f /tmp/ready", **worker})
    if settings["command"] is None:
        del settings["command"]
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_worker_is_smoke_tested_by_its_command_and_health_check(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, stack_name: str) -> None:
    write_app(tmp_path / "worker", version=str(uuid.uuid4()), dockerfile=WORKER_DOCKERFILE)
    stack_file = worker_stack(tmp_path, stack_name)
    prepare(stack_file)
    state, _ = run_images(stack_file)
    assert state.is_completed(), state.message
    assert recorded(f"{stack_name}-dev-worker")

    # The image's own command (a web server) never creates /tmp/ready: the health check fails.
    write_app(tmp_path / "worker", version=str(uuid.uuid4()), dockerfile=WORKER_DOCKERFILE)
    stack_file = worker_stack(tmp_path, stack_name, command=None)
    state, _ = run_images(stack_file)
    with pytest.raises(images.SmokeTestFailed, match=r"its health check `test -f /tmp/ready` did not exit 0"):
        state.result()


