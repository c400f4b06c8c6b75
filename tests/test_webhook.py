"""The GitHub webhook receiver against the session's real Prefect server.

Deliveries are built the way GitHub builds them: a JSON push payload, its HMAC-SHA256 over the
exact bytes sent in `X-Hub-Signature-256`, GitHub's headers. GitHub itself cannot be reached here;
nothing else is faked: the receiver reads its secret from a real Secret block and creates runs of
a real deployment (a test-only flow, so the deploy flow's own tests are not disturbed).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import select
import signal
import socket
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
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from deployments.webhook import ReceiverConfig, create_app, signature_of
from ecsflow import cli
from ecsflow.local import free_port, wait_http

pytestmark = pytest.mark.prefect

ROOT = Path(__file__).resolve().parent.parent
STACK = "stacks/library.yaml"
REPO = "acme/library"
SECRET = "whsec-" + secrets.token_hex(24)


# ------------------------------------------------------------------ GitHub's side


def push_payload(*, ref: str = "refs/heads/main", after: str | None = None, repo: str = REPO,
                 deleted: bool = False) -> dict[str, Any]:
    """A push event as GitHub sends it (trimmed to the fields a receiver may read, plus some noise)."""
    after = after if after is not None else secrets.token_hex(20)
    before = secrets.token_hex(20)
    owner, name = repo.split("/")
    commit = {"id": after, "tree_id": secrets.token_hex(20), "distinct": True, "message": "Fix the loans page",
              "timestamp": "2026-11-28T16:00:00Z", "url": f"https://github.com/{repo}/commit/{after}",
              "author": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
              "committer": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
              "added": [], "removed": [], "modified": ["backend/app/Http/LoanController.php"]}
    return {
        "ref": ref, "before": before, "after": after, "created": False, "deleted": deleted, "forced": False,
        "base_ref": None, "compare": f"https://github.com/{repo}/compare/{before[:12]}...{after[:12]}",
        "commits": [] if deleted else [commit], "head_commit": None if deleted else commit,
        "repository": {"id": 123456, "node_id": "R_kgDO", "name": name, "full_name": repo, "private": True,
                       "owner": {"login": owner, "id": 42, "type": "Organization"},
                       "default_branch": "main", "html_url": f"https://github.com/{repo}"},
        "pusher": {"name": "dev", "email": "dev@example.com"},
        "sender": {"login": "dev", "id": 7, "type": "User"},
    }


def delivery(payload: Any, *, event: str = "push", secret: str = SECRET, delivery_id: str | None = None,
             body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one delivery, signed the way GitHub signs it."""
    raw = body if body is not None else json.dumps(payload, indent=2).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/5f1a2b3",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "498765432",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-GitHub-Hook-Installation-Target-ID": "123456",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
    }
    return raw, headers


# ------------------------------------------------------------------ fixtures


class Target:
    """The Secret block and a test-only deployment the receiver starts; counts its runs."""

    def __init__(self, secret_block: str, deployment: str, deployment_id: UUID) -> None:
        self.secret_block = secret_block
        self.deployment = deployment
        self.deployment_id = deployment_id

    def runs(self) -> int:
        with get_client(sync_client=True) as client:
            return client.count_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id])))

    def config(self, state_file: Path, **overrides: Any) -> ReceiverConfig:
        options: dict[str, Any] = dict(stack_file=STACK, repository=REPO, branch="main",
                                       secret_block=self.secret_block, deployment=self.deployment,
                                       state_file=state_file)
        options.update(overrides)
        return ReceiverConfig(**options)


@pytest.fixture(scope="module")
def target(prefect_server: Any) -> Target:
    tag = uuid.uuid4().hex[:8]
    block = f"ecsflow-test-webhook-{tag}"
    Secret(value=SECRET).save(block)
    flow_name = f"ecsflow-test-webhook-deploy-{tag}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        deployment_id = client.create_deployment(flow_id, "deploy-app",
                                                 parameters={"params": {"stack_file": STACK}})
    return Target(block, f"{flow_name}/deploy-app", deployment_id)


@pytest.fixture
def client(target: Target, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(target.config(tmp_path / "deliveries.sqlite", max_body_bytes=64 * 1024))) as c:
        yield c


# ------------------------------------------------------------------ rejections


def _rejections() -> list[Any]:
    good = push_payload()
    raw, h = delivery(good)
    without = lambda key: {k: v for k, v in h.items() if k != key}  # noqa: E731
    tampered = raw.replace(b'"acme/library"', b'"evil/library"')
    big = json.dumps({**good, "padding": "x" * (70 * 1024)}).encode()
    not_json, h_not_json = delivery(None, body=b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D")
    array, h_array = delivery([good])
    return [
        pytest.param(raw, without("X-Hub-Signature-256"), 401, id="unsigned (only the sha1 header)"),
        pytest.param(raw, {**h, "X-Hub-Signature-256": signature_of("another-secret-of-32-characters!", raw)},
                     401, id="signed with another secret"),
        pytest.param(tampered, h, 401, id="body changed after signing"),
        pytest.param(raw, {**h, "X-Hub-Signature-256": h["X-Hub-Signature-256"].upper()}, 401, id="mangled"),
        pytest.param(raw, {**h, "X-Hub-Signature-256": h["X-Hub-Signature"]}, 401, id="sha1 in the 256 header"),
        pytest.param(big, delivery(None, body=big)[1], 413, id="oversized, validly signed"),
        pytest.param(not_json, h_not_json, 400, id="not JSON"),
        pytest.param(array, h_array, 400, id="JSON but not an object"),
        pytest.param(raw, {**h, "Content-Type": "application/x-www-form-urlencoded"}, 415, id="form content type"),
        pytest.param(raw, without("X-GitHub-Event"), 400, id="no event header"),
        pytest.param(raw, without("X-GitHub-Delivery"), 400, id="no delivery header"),
        pytest.param(raw, {**h, "X-GitHub-Delivery": "../../etc/passwd"}, 400, id="malformed delivery header"),
    ]


@pytest.mark.parametrize(("body", "headers", "status"), _rejections())
def test_bad_deliveries_are_rejected_and_start_nothing(client: TestClient, target: Target, body: bytes,
                                                       headers: dict[str, str], status: int) -> None:
    before = target.runs()
    response = client.post("/github", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert "error" in response.json() and "flow_run_id" not in response.json()
    assert target.runs() == before


def test_an_oversized_chunked_body_is_cut_off_early(target: Target, tmp_path: Path) -> None:
    """No Content-Length (chunked transfer) on a real uvicorn: the receiver answers 413 once the
    limit is passed, long before the sender is through (TestClient would buffer the whole body)."""
    config = target.config(tmp_path / "deliveries.sqlite", max_body_bytes=64 * 1024)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    before = target.runs()
    offered, sent = 256 * 1024 * 1024, 0
    try:
        wait_http(f"http://127.0.0.1:{server.config.port}/healthz", timeout=30)
        _, headers = delivery(push_payload())
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with socket.create_connection(("127.0.0.1", server.config.port), timeout=30) as sock:
            sock.sendall(f"POST /github HTTP/1.1\r\nHost: receiver\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
                         .encode())
            chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
            answer = b""
            while sent < offered:
                if select.select([sock], [], [], 0)[0]:
                    answer = sock.recv(4096)
                    break
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    with contextlib.suppress(OSError):
                        answer = sock.recv(4096)
                    break
                sent += 65536
    finally:
        server.should_exit = True
        thread.join(10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 16 * 1024 * 1024  # the receiver stopped reading; the sender never got far
    assert target.runs() == before


# ------------------------------------------------------------------ ignored with 2xx


@pytest.mark.parametrize(("event", "payload", "reason"), [
    ("push", push_payload(ref="refs/heads/feature/loans"), "refs/heads/feature/loans"),
    ("push", push_payload(ref="refs/tags/v1.2.0"), "tag pushes"),
    ("push", push_payload(after="0" * 40, deleted=True), "deleted"),
    ("push", push_payload(repo="someone/fork"), "someone/fork"),
    ("issues", {"action": "opened", "repository": {"full_name": REPO}}, "issues events"),
    ("pull_request", {"action": "opened", "number": 5}, "pull_request events"),
], ids=["other branch", "tag push", "branch deleted", "other repository", "issues", "pull_request"])
def test_other_events_and_refs_are_ignored(client: TestClient, target: Target, event: str,
                                           payload: dict[str, Any], reason: str) -> None:
    before = target.runs()
    raw, headers = delivery(payload, event=event)
    response = client.post("/github", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored" and reason in response.json()["reason"]
    assert target.runs() == before


def test_ping_answers_200(client: TestClient, target: Target) -> None:
    before = target.runs()
    raw, headers = delivery({"zen": "Keep it logically awesome.", "hook_id": 498765432,
                             "repository": {"full_name": REPO}}, event="ping")
    response = client.post("/github", content=raw, headers=headers)
    assert response.status_code == 200 and response.json() == {"status": "pong"}
    assert target.runs() == before


def test_healthz(client: TestClient, target: Target) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "repository": REPO, "branch": "main",
                               "deployment": target.deployment}


# ------------------------------------------------------------------ accepted


def test_a_push_to_main_starts_one_run_and_redeliveries_start_nothing(target: Target, tmp_path: Path) -> None:
    state = tmp_path / "deliveries.sqlite"
    payload = push_payload()
    raw, headers = delivery(payload)
    before = target.runs()
    with TestClient(create_app(target.config(state))) as client:
        response = client.post("/github", content=raw, headers=headers)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["status"] == "started" and answer["commit"] == payload["after"]
        run_id = answer["flow_run_id"]

        again = client.post("/github", content=raw, headers=headers)
        assert again.status_code == 200 and again.json() == {"status": "duplicate", "flow_run_id": run_id}

    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(UUID(run_id))
    assert run.deployment_id == target.deployment_id
    assert run.parameters == {"params": {"stack_file": STACK, "commit": payload["after"], "ref": "refs/heads/main"}}
    assert run.name == f"main-{payload['after'][:7]}"
    assert {"ecsflow", "webhook"} <= set(run.tags)
    assert run.idempotency_key == f"github-delivery:{headers['X-GitHub-Delivery']}"

    # A restarted receiver (same state file) still knows the delivery.
    with TestClient(create_app(target.config(state))) as client:
        third = client.post("/github", content=raw, headers=headers)
        assert third.status_code == 200 and third.json()["flow_run_id"] == run_id
    assert target.runs() == before + 1


def test_a_lost_state_file_still_starts_no_second_run(target: Target, tmp_path: Path) -> None:
    """The delivery id is also the run's idempotency key: the server returns the first run."""
    raw, headers = delivery(push_payload())
    before = target.runs()
    ids = []
    for attempt in range(2):
        with TestClient(create_app(target.config(tmp_path / f"state-{attempt}.sqlite"))) as client:
            response = client.post("/github", content=raw, headers=headers)
            assert response.status_code == 202
            ids.append(response.json()["flow_run_id"])
    assert ids[0] == ids[1]
    assert target.runs() == before + 1


def test_a_missing_deployment_answers_503_and_a_later_redelivery_can_start_it(target: Target,
                                                                               tmp_path: Path) -> None:
    state = tmp_path / "deliveries.sqlite"
    raw, headers = delivery(push_payload())
    before = target.runs()
    with TestClient(create_app(target.config(state, deployment="deploy_app/not-deployed-here"))) as client:
        response = client.post("/github", content=raw, headers=headers)
    assert response.status_code == 503
    assert "deploy_app/not-deployed-here" in response.json()["error"]
    with TestClient(create_app(target.config(state))) as client:  # deployed now; GitHub redelivers
        assert client.post("/github", content=raw, headers=headers).status_code == 202
    assert target.runs() == before + 1


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("tag", ["hypothesis"])
def test_no_body_without_the_right_signature_starts_a_run(target: Target, tmp_path: Path, tag: str) -> None:
    before = target.runs()
    statuses: set[int] = set()
    signatures = st.one_of(
        st.none(),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
        st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex()),
    )

    pushes = [json.dumps(push_payload(ref=ref)).encode() for ref in ("refs/heads/main", "refs/tags/v1")]
    with TestClient(create_app(target.config(tmp_path / "deliveries.sqlite"))) as client:
        @settings(max_examples=60, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(body=st.one_of(st.binary(max_size=512), st.sampled_from(pushes)),
               signature=signatures,
               resign_with=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
               event=st.sampled_from(["push", "ping", "issues", ""]))
        def check(body: bytes, signature: str | None, resign_with: str | None, event: str) -> None:
            headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
                       "X-GitHub-Delivery": str(uuid.uuid4())}
            if resign_with is not None and resign_with != SECRET:
                signature = signature_of(resign_with, body)  # right shape, wrong key
            if signature is not None:
                if signature == signature_of(SECRET, body):
                    return
                headers["X-Hub-Signature-256"] = signature.encode("latin-1")  # type: ignore[assignment]
            response = client.post("/github", content=body, headers=headers)
            statuses.add(response.status_code)
            assert response.status_code == 401, response.text

        check()
    assert statuses == {401}
    assert target.runs() == before


# ------------------------------------------------------------------ logs, CLI, a real server


def test_the_secret_and_the_payload_never_reach_a_log(target: Target, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    payload = push_payload()
    payload["head_commit"]["message"] = "deploy password=hunter2-in-a-commit-message"
    with TestClient(create_app(target.config(tmp_path / "deliveries.sqlite"))) as client:
        for body, headers in (delivery(payload), delivery(payload, secret="wrong-secret-wrong-secret"),
                              delivery(push_payload(ref="refs/tags/v1")), delivery({"zen": "z"}, event="ping")):
            assert client.post("/github", content=body, headers=headers).status_code in (200, 202, 401)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "started flow run" in caplog.text and payload["after"][:12] in caplog.text  # it does log
    assert SECRET not in logged
    assert "hunter2" not in logged and "dev@example.com" not in logged


def test_cli_refuses_a_missing_secret_block_or_repository(target: Target, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["webhook", "serve", "--stack", STACK, "--repository", REPO,
                     "--secret-block", "no-such-block-here", "--state", str(tmp_path / "s.sqlite")])
    assert code == 2
    assert "no Prefect Secret block named 'no-such-block-here'" in capsys.readouterr().err

    bare = yaml.safe_load((ROOT / STACK).read_text())
    bare.pop("pipeline", None)
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "bare.yaml").write_text(yaml.safe_dump(bare))
    assert cli.main(["webhook", "serve", "--stack", str(tmp_path / "stacks" / "bare.yaml"),
                     "--secret-block", target.secret_block]) == 2
    assert "pipeline.github_repository" in capsys.readouterr().err

    assert cli.main(["webhook", "serve", "--stack", STACK, "--repository", "not a repo"]) == 2
    assert "expected owner/name" in capsys.readouterr().err


def test_webhook_serve_end_to_end_on_a_real_uvicorn(target: Target, tmp_path: Path) -> None:
    """`ecsflow webhook serve` as a user runs it: a real HTTP server in its own process."""
    port = free_port()
    log_path = tmp_path / "receiver.log"
    argv = [sys.executable, "-m", "ecsflow.cli", "webhook", "serve", "--stack", STACK, "--repository", REPO,
            "--secret-block", target.secret_block, "--deployment", target.deployment, "--port", str(port),
            "--state", str(tmp_path / "deliveries.sqlite")]
    before = target.runs()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        payload = push_payload()
        raw, headers = delivery(payload)
        url = f"http://127.0.0.1:{port}/github"
        first = httpx.post(url, content=raw, headers=headers, timeout=30)
        assert first.status_code == 202, first.text
        second = httpx.post(url, content=raw, headers=headers, timeout=30)
        assert second.status_code == 200 and second.json()["status"] == "duplicate"
        bad = httpx.post(url, content=raw, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64},
                         timeout=30)
        assert bad.status_code == 401
        with get_client(sync_client=True) as prefect:
            run = prefect.read_flow_run(UUID(first.json()["flow_run_id"]))
        assert run.parameters["params"]["commit"] == payload["after"]
        assert target.runs() == before + 1
    finally:
        proc.terminate()
        proc.wait(15)
    output = log_path.read_text()
    assert f"started flow run {first.json()['flow_run_id']}" in output
    assert "rejected, bad signature" in output
    assert SECRET not in output


def test_ecsflow_serve_serves_the_deployments_and_the_receiver(target: Target, tmp_path: Path) -> None:
    """`ecsflow serve` with PREFECT_API_URL set: the deployments are served from a child process,
    the receiver answers, and Ctrl+C (SIGINT) takes both down."""
    port = free_port()
    argv = [sys.executable, "-m", "ecsflow.cli", "serve", "--stack", STACK, "--port", str(port),
            "--secret-block", target.secret_block, "--state", str(tmp_path / "deliveries.sqlite")]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=proc)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["deployment"] == "deploy_app/deploy-app"
        assert health["repository"] == "example-org/library-app"  # the stack file's pipeline section
        deadline = time.monotonic() + 90
        names: set[str] = set()
        while time.monotonic() < deadline and not {"deploy_app/deploy-app", "rollback/rollback"} <= names:
            time.sleep(1)
            with get_client(sync_client=True) as prefect:
                names = {f"{prefect.read_flow(d.flow_id).name}/{d.name}" for d in prefect.read_deployments()}
        assert {"deploy_app/deploy-app", "rollback/rollback", "provision/provision"} <= names
        with get_client(sync_client=True) as prefect:
            served = prefect.read_deployment_by_name("deploy_app/deploy-app")
        assert served.global_concurrency_limit is not None and served.global_concurrency_limit.limit == 1
        children = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "deployments.serve"], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 1, "one child process serves the deployments"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert not Path(f"/proc/{children[0]}").exists(), "the served deployments stopped with it"
    assert SECRET not in log_path.read_text()


def test_webhook_secret_stores_a_generated_secret_and_refuses_a_short_one(
        prefect_server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    block = f"ecsflow-test-generated-{uuid.uuid4().hex[:8]}"
    assert cli.main(["webhook", "secret", "--secret-block", block, "--generate"]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed) >= 32 and Secret.load(block).get() == printed  # type: ignore[union-attr]

    monkeypatch.setattr(sys, "stdin", io.StringIO("too-short\n"))
    assert cli.main(["webhook", "secret", "--secret-block", block]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    assert Secret.load(block).get() == printed  # type: ignore[union-attr]
