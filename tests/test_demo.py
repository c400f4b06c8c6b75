"""`ecsflow demo`, the embedded default, from a clean environment, as a user runs it: one demo in
wait mode (a subprocess with its own moto, Prefect, registry, ECS stand-in, deployments and webhook
receiver) is shared by the module's tests, in file order: what it printed and recorded, a signed
push pasted from its output, then Ctrl+C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecsflow.local import free_port
from tests.conftest import ROOT
from tests.images import conftest as images_fixtures

docker_engine = images_fixtures.docker_engine
# The shared demo boots inside the first test's timeout: about 100 s on an idle 2-core machine.
pytestmark = pytest.mark.timeout(600)
READY = "Press Ctrl+C to stop the servers."


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    prefect_port: int
    since: datetime  # the demo's Prefect database outlives a run: only this run's flow runs count
    lines: list[str] = field(default_factory=list)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def url_after(self, label: str) -> str:
        found = re.search(rf"{re.escape(label)}\s+(http://127\.0\.0\.1:\d+)", self.out)
        assert found, f"no {label!r} URL in the demo's output"
        return found.group(1)

    def runs(self) -> dict[str, list[dict[str, Any]]]:
        """Flow name -> the flow runs this demo ran itself (not through a deployment), from its Prefect server.

        The served deployments' schedules (backup, restore test, ...) add SCHEDULED runs of the same
        flows as soon as the demo serves them: those are the schedules working, not the demo's runs."""
        flows = {f["id"]: f["name"] for f in httpx.post(f"{self.api}/flows/filter", json={}, timeout=30).json()}
        found: dict[str, list[dict[str, Any]]] = {}
        since = {"flow_runs": {"start_time": {"after_": self.since.isoformat()},
                               "deployment_id": {"is_null_": True}}}
        for run in httpx.post(f"{self.api}/flow_runs/filter", json=since, timeout=30).json():
            found.setdefault(flows[run["flow_id"]], []).append(run)
        return found


def _read(proc: subprocess.Popen[str], lines: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == READY:
            ready.set()
    ready.set()  # the demo ended: stop waiting


@pytest.fixture(scope="module")
def demo(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_API", "ECSFLOW_REGISTRY"))}
    env["DOCKER_HOST"] = docker_engine
    port = free_port()
    since = datetime.now(UTC)
    stderr = open(tmp_path_factory.mktemp("demo") / "stderr.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "ecsflow.cli", "demo", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    demo = Demo(proc, port, since)
    ready = threading.Event()
    reader = threading.Thread(target=_read, args=(proc, demo.lines, ready), daemon=True)
    reader.start()
    try:
        ready.wait(420)
        stderr.seek(0)
        assert proc.poll() is None and READY in demo.out, demo.out[-4000:] + stderr.read()[-4000:]
        yield demo
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        reader.join(10)
        stderr.close()
        print(demo.out[-8000:])  # shown when a test of the module failed


def test_the_demo_provisions_deploys_backs_up_restores_and_audits(demo: Demo) -> None:
    out = demo.out
    assert "Stack outputs:" in out and "vpc_id: vpc-" in out
    assert "db_endpoint: library-prod-db." in out
    assert "library-prod-backend" in out and "library-prod-frontend" in out
    app = demo.url_after("open")
    assert re.search(r"Sample app: +deployed [0-9a-f]{12} \(backend 1 -> 2, frontend 1 -> 2\); health verified", out)
    assert f"{app}/api/health -> HTTP 200" in out and f"{app}/health -> HTTP 200" in out
    assert "STAND-IN app" in out and "real Laravel/Nuxt app" in out
    assert "Backup:           snapshot library-prod-" in out and "copied to ap-northeast-3" in out
    assert re.search(r"Restore test: +passed: library-prod-\S+ restored to library-prod-restore-test-\S+ \(deleted\); "
                     r"RTO [\d.]+ s, RPO [\d.]+ s", out)
    assert "books 120 rows, members 45 rows, loans 300 rows" in out
    assert "checks, all passed" in out  # the fresh stack passes every security rule
    assert f"Prefect UI:       http://127.0.0.1:{demo.prefect_port}" in out

    # The app answers through the local load balancer, by the ALB's path rules.
    assert httpx.get(f"{app}/api/books", timeout=10).json()[0]["title"] == "I Am a Cat"
    assert "Library management system" in httpx.get(f"{app}/", timeout=10).text

    runs = demo.runs()
    for name in ("provision", "deploy_app", "backup", "restore-test", "audit"):
        assert [r["state_type"] for r in runs.get(name, [])] == ["COMPLETED"], name

    secret = (ROOT / ".ecsflow" / "demo" / "webhook-secret").read_text()
    assert len(secret) >= 32 and secret not in out
    assert "password" not in out.lower()


def _push_command(out: str) -> str:
    """The lines the demo prints to paste: from `body=` to the curl line's end."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("body='"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\") and lines[i].lstrip()
               .startswith("-H \"X-Hub-Signature-256"))
    return "\n".join(lines[start:end + 1])


def test_the_printed_signed_push_starts_a_deploy_run(demo: Demo) -> None:
    command = _push_command(demo.out)
    assert "X-GitHub-Event: push" in command and "X-GitHub-Delivery" in command
    sent = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    body, status = sent.stdout.strip().rsplit("\n", 1)
    assert status == "HTTP 202", sent.stdout
    answer = json.loads(body)
    assert answer["status"] == "started" and answer["deployment"] == "deploy_app/deploy-app"

    deadline = time.monotonic() + 120
    while True:
        run = httpx.get(f"{demo.api}/flow_runs/{answer['flow_run_id']}", timeout=30).json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["params"]["commit"] == answer["commit"]
    assert run["deployment_id"] is not None and "webhook" in run["tags"]


def _answers(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_ctrl_c_stops_every_server(demo: Demo) -> None:
    import docker

    urls = [demo.url_after(label) for label in ("Prefect UI:", "AWS emulator:", "Webhook receiver:", "open")]
    assert all(_answers(url) for url in urls)
    # This demo's containers only: a deploy test on the other worker may have its own stand-in running.
    standin = re.search(r"through the ECS stand-in: (http://127\.0\.0\.1:\d+)", demo.out)
    assert standin, "the demo names its ECS stand-in"
    mine = {"label": f"io.ecsflow.standin.at={standin.group(1)}"}
    client = docker.from_env()
    try:
        assert client.containers.list(filters=mine), "the sample app's containers run before Ctrl+C"
    finally:
        client.close()
    os.kill(demo.proc.pid, signal.SIGINT)
    assert demo.proc.wait(90) == 0
    time.sleep(0.5)
    assert "ecsflow demo: stopped the servers." in demo.out
    assert [url for url in urls if _answers(url)] == []
    stack = str(ROOT / ".ecsflow" / "demo" / "library.yaml")
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).count(stack)]
    assert left == [], "the served deployments and the receiver went away"
    client = docker.from_env()
    try:
        assert client.containers.list(all=True, filters=mine) == []
    finally:
        client.close()


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_without_docker_the_demo_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from ecsflow import demo as demo_module
    from spec import load_stack

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker-registry nor htpasswd
    site = demo_module._app_site(load_stack(ROOT / "stacks" / "library.yaml"), "http://127.0.0.1:9", [])
    out = capsys.readouterr().out
    assert site is None
    assert "build and deploy of the sample app skipped" in out
    assert f"a Docker engine answering at unix://{tmp_path}/no-docker.sock" in out
    assert "docker-registry (Debian's docker-registry)" in out and "htpasswd (Debian's apache2-utils)" in out
    assert "apt-get install -y docker.io docker-registry busybox-static apache2-utils" in out
    assert "dockerd --iptables=false" in out and "The rest of the demo runs." in out
