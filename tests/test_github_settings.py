"""The pipeline flow writing the app repository's Actions settings, on the session's Prefect server
and moto, against a FAKE of GitHub's REST API (a small local HTTP server in this file: GitHub itself
cannot be reached from tests). The fake holds a libsodium key pair like a repository does and
proves it can open the sealed secret with its private key; it refuses any other token."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from nacl.public import PrivateKey, SealedBox
from prefect.blocks.system import Secret

from flows.common import StackRun
from flows.phase_pipeline import pipeline_flow
from spec import load_stack
from tasks import registry
from tasks.aws import CALLS, AwsContext
from tests.conftest import LIBRARY_STACK, library_stack_data, write_stack_file
from tests.support.servers import MotoServer

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"
REPO = "example-org/library-app"


class FakeGitHub:
    """Just the Actions secrets/variables endpoints of one repository, as GitHub's REST API answers them."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.private_key = PrivateKey.generate()
        self.key_id = "568250167242549743"
        self.secrets: dict[str, dict[str, str]] = {}
        self.variables: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._answer(401, {"message": "Bad credentials"})
                base = f"/repos/{REPO}/actions"
                if not self.path.startswith(base):
                    return self._answer(404, {"message": "Not Found"})
                path = self.path.removeprefix(base)
                if self.command == "GET" and path == "/secrets/public-key":
                    return self._answer(200, {"key_id": fake.key_id, "key": base64.b64encode(
                        bytes(fake.private_key.public_key)).decode()})
                if self.command == "PUT" and path.startswith("/secrets/"):
                    fake.secrets[path.removeprefix("/secrets/")] = body
                    return self._answer(201, {})
                if path.startswith("/variables/"):
                    name = path.removeprefix("/variables/")
                    if self.command == "GET":
                        if name not in fake.variables:
                            return self._answer(404, {"message": "Not Found"})
                        return self._answer(200, {"name": name, "value": fake.variables[name]})
                    if self.command == "PATCH" and name in fake.variables:
                        fake.variables[name] = body["value"]
                        return self._answer(204)
                if self.command == "POST" and path == "/variables":
                    fake.variables[body["name"]] = body["value"]
                    return self._answer(201, {})
                return self._answer(404, {"message": "Not Found"})

            do_GET = do_PUT = do_POST = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def opened(self, name: str) -> str:
        sealed = base64.b64decode(self.secrets[name]["encrypted_value"])
        return SealedBox(self.private_key).decrypt(sealed).decode()

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if m != "GET"]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(token=f"github_pat_{secrets.token_hex(12)}")
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def stack_file(tmp_path: Path, github: FakeGitHub, token_block: str, secret_block: str) -> Path:
    data = library_stack_data()
    data["pipeline"].update(write_github_settings=True, github_token_block=token_block,
                            webhook_secret_block=secret_block, github_api_url=github.url,
                            webhook_url="https://deploy.library.example.com/github")
    return write_stack_file(tmp_path, data)


def make_repositories(path: Path) -> None:
    """What the registry phase makes: the stack's ECR repositories."""
    stack = load_stack(path)
    ctx = AwsContext.for_stack(stack)
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    for service in stack.services:
        registry.ensure_repository.fn(stack, ctx, service, key)


def test_pipeline_flow_writes_sealed_secret_and_variables(aws: MotoServer, github: FakeGitHub,
                                                          tmp_path: Path) -> None:
    token_block, secret_block = f"gh-token-{secrets.token_hex(4)}", f"hook-{secrets.token_hex(4)}"
    webhook_secret = secrets.token_urlsafe(32)
    Secret(value=github.token).save(token_block, _sync=True)  # type: ignore[call-arg]
    Secret(value=webhook_secret).save(secret_block, _sync=True)  # type: ignore[call-arg]
    path = stack_file(tmp_path, github, token_block, secret_block)
    make_repositories(path)

    outputs = pipeline_flow(StackRun(stack_file=str(path)))

    role_arn = boto3.client("iam", region_name=REGION).get_role(RoleName="library-prod-ci")["Role"]["Arn"]
    assert outputs["ci_role_arn"] == role_arn
    assert github.opened("ECSFLOW_WEBHOOK_SECRET") == webhook_secret
    assert github.secrets["ECSFLOW_WEBHOOK_SECRET"]["key_id"] == github.key_id
    variables = dict(github.variables)
    checks, images = json.loads(variables.pop("ECSFLOW_CHECKS")), json.loads(variables.pop("ECSFLOW_IMAGES"))
    assert variables == {
        "AWS_REGION": REGION,
        "ECSFLOW_CI_ROLE_ARN": role_arn,
        "ECSFLOW_ECR_REGISTRY": f"123456789012.dkr.ecr.{REGION}.amazonaws.com",
        "ECSFLOW_REPOSITORY_PREFIX": "library-prod-",
        "ECSFLOW_WEBHOOK_URL": "https://deploy.library.example.com/github",
    }
    # test.yml's jobs and the image matrix: the stack file's pipeline.checks, and one image per service.
    assert [(c["name"], c["directory"]) for c in checks] == [("backend", "backend"), ("frontend", "frontend")]
    assert "vendor/bin/phpunit" in checks[0]["run"] and checks[0]["php_version"] == "8.3"
    assert images == [{"service": "backend", "context": "backend"}, {"service": "frontend", "context": "frontend"}]
    assert webhook_secret not in json.dumps(outputs) and github.token not in json.dumps(outputs)

    # Again: AWS untouched, variables only read; the secret (GitHub never shows it back) is sealed anew.
    github.requests.clear()
    CALLS.reset()
    again = pipeline_flow(StackRun(stack_file=str(path)))
    assert CALLS.mutating() == {}
    assert github.writes() == [("PUT", f"/repos/{REPO}/actions/secrets/ECSFLOW_WEBHOOK_SECRET")]
    assert again["github_settings"]["written"] == ["ECSFLOW_WEBHOOK_SECRET"]
    assert sorted(again["github_settings"]["unchanged"]) == sorted(github.variables)
    assert github.opened("ECSFLOW_WEBHOOK_SECRET") == webhook_secret


def test_a_token_github_refuses_fails_the_run_with_what_to_do(aws: MotoServer, github: FakeGitHub,
                                                              tmp_path: Path) -> None:
    token_block = f"gh-token-{secrets.token_hex(4)}"
    wrong = f"github_pat_{secrets.token_hex(12)}"
    Secret(value=wrong).save(token_block, _sync=True)  # type: ignore[call-arg]
    path = stack_file(tmp_path, github, token_block, "unused-block")
    make_repositories(path)

    state = pipeline_flow(StackRun(stack_file=str(path)), return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match=r"HTTP 401.*github_token_block") as failure:
        state.result()
    assert wrong not in str(failure.value)
    assert github.writes() == [] and github.variables == {}


def test_down_removes_the_ci_role_and_the_provider_it_made(aws: MotoServer) -> None:
    from flows.teardown import TeardownRun, teardown_flow

    outputs = pipeline_flow(StackRun(stack_file=str(LIBRARY_STACK)))
    iam = boto3.client("iam", region_name=REGION)
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == [
        {"Arn": outputs["github_oidc_provider"]}]

    result = teardown_flow(TeardownRun(stack_file=str(LIBRARY_STACK), confirm=True))

    assert result["kept"] == [] and result["deleted"] == 2  # the CI role and the provider
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    assert iam.list_roles(PathPrefix="/ecsflow/library-prod/")["Roles"] == []
