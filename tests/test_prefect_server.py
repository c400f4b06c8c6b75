"""The session's Prefect server: in-process flows and subprocesses both reach it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest
from prefect import flow, get_client, task
from prefect.settings import get_current_settings

from tests.support.servers import PrefectServer

pytestmark = pytest.mark.prefect


@task
def double(x: int) -> int:
    return 2 * x


@flow(name="ecsflow-test-harness-check")
def doubled(values: list[int]) -> list[int]:
    return [f.result() for f in double.map(values)]


def test_in_process_flows_run_against_the_session_server(prefect_server: PrefectServer) -> None:
    assert os.environ["PREFECT_API_URL"] == prefect_server.api_url
    assert get_current_settings().api.url == prefect_server.api_url

    state = doubled([1, 2, 3], return_state=True)
    assert state.is_completed() and state.result() == [2, 4, 6]

    with get_client(sync_client=True) as client:
        assert state.state_details.flow_run_id is not None
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None and run.state.is_completed()
        assert client.read_flow(run.flow_id).name == "ecsflow-test-harness-check"


def test_subprocesses_inherit_the_api_url(prefect_server: PrefectServer) -> None:
    code = "from prefect.settings import get_current_settings; print(get_current_settings().api.url)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == prefect_server.api_url


def test_server_is_private_and_healthy(prefect_server: PrefectServer) -> None:
    assert prefect_server.api_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{prefect_server.api_url}/health", timeout=10) as resp:
        assert resp.status == 200
    assert prefect_server.startup_seconds is not None
    assert str(prefect_server.db_path).endswith("prefect.db") and prefect_server.db_path.exists()
