"""End to end: a signed push reaches the webhook receiver (real uvicorn), which starts the
`deploy_app/deploy-app` deployment registered from prefect.yaml (`prefect deploy`); a real process
worker runs it: the sample app is built by the real Docker engine, pushed to the local registry,
rolled out in moto and probed over HTTP. A second delivery of the same payload starts nothing.

The stack, registry, Docker engine, ECS stand-in and notification receiver are the deploy tests'
fixtures (tests/test_deploy_app.py), built once for this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from deployments.webhook import ReceiverConfig, create_app
from ecsflow.local import free_port, wait_http
from tests.test_deploy_app import Deployable, docker_engine, registry_server, site  # noqa: F401 - fixtures
from tests.test_webhook import SECRET, delivery, push_payload

pytestmark = pytest.mark.prefect

ROOT = Path(__file__).resolve().parent.parent
REPO = "example-org/library-app"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """A Prefect worker wants a second signal; SIGKILL if it still hangs on."""
    for sig, wait in ((signal.SIGINT, 2.0), (signal.SIGINT, 2.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


@pytest.fixture(scope="module")
def worker(site: Deployable, docker_engine: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
           ) -> Iterator[tuple[str, UUID]]:
    """prefect.yaml's deploy-app deployment on a fresh process pool, and a worker polling it."""
    pool = f"ecsflow-test-{uuid.uuid4().hex[:8]}"
    logs = tmp_path_factory.mktemp("worker")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = dict(os.environ, ECSFLOW_HOME=str(ROOT), DOCKER_HOST=docker_engine, PREFECT_WORKER_QUERY_SECONDS="1")
    deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "deploy-app",
                               "--pool", pool], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("deploy_app/deploy-app")
    assert deployment.work_pool_name == pool
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"

    with open(logs / "worker.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                 "--type", "process"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield pool, deployment.id
    finally:
        _stop(proc)
        print((logs / "worker.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def receiver(site: Deployable, worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    block = f"ecsflow-test-e2e-{uuid.uuid4().hex[:8]}"
    Secret(value=SECRET).save(block)
    config = ReceiverConfig(stack_file=str(site.stack_file), repository=REPO, branch="main", secret_block=block,
                            state_file=tmp_path_factory.mktemp("receiver") / "deliveries.sqlite")
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_http(f"{url}/healthz", timeout=30)
        yield f"{url}/github"
    finally:
        server.should_exit = True
        thread.join(10)


def _wait_final(run_id: UUID, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"flow run {run_id} still {run.state and run.state.name}"
            time.sleep(1)


def test_a_signed_push_deploys_through_the_worker_and_a_redelivery_starts_nothing(
        site: Deployable, worker: tuple[str, UUID], receiver: str) -> None:  # noqa: F811
    _, deployment_id = worker
    sha = subprocess.run(["git", "-C", str(site.app), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    before = site.revision()
    body, headers = delivery(push_payload(repo=REPO, after=sha))

    answer = httpx.post(receiver, content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    run_id = UUID(answer.json()["flow_run_id"])

    run = _wait_final(run_id)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    assert run.parameters["params"] == {"stack_file": str(site.stack_file), "commit": sha, "ref": "refs/heads/main"}
    after = site.revision()
    assert int(after) == int(before) + 1
    assert site.image_of(after).endswith(f"/{site.prefix}-web:{sha}")
    assert site.registry.digest(f"{site.prefix}-web", sha)
    assert any(sha in text and "succeeded" in text for text in site.messages(2))

    again = httpx.post(receiver, content=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "flow_run_id": str(run_id)}
    time.sleep(2)  # a stray run would be visible by now (the worker polls every second)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert [r.id for r in runs] == [run_id]
    assert site.revision() == after
    assert json.loads(body)["after"] == sha
