from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import MotoServer

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_STACK = ROOT / "stacks" / "library.yaml"

# Fake credentials: no test may ever reach a real AWS account.
for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "ap-northeast-1",
                   "AWS_DEFAULT_REGION": "ap-northeast-1", "ECSFLOW_POLL_SECONDS": "0.05",
                   "ECSFLOW_RETRY_BASE_SECONDS": "0.05"}.items():
    os.environ[key] = value
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    os.environ["AWS_ENDPOINT_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> MotoServer:
    """A clean emulated AWS account for one test."""
    moto_server.reset()
    return moto_server
