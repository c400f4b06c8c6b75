"""`ecsflow demo`, the embedded default, from a clean environment: it starts its own moto
server and Prefect server, provisions the library stack, backs it up, audits it and says where to look."""

from __future__ import annotations

import os
import subprocess
import sys

from ecsflow.local import free_port
from tests.conftest import ROOT


def test_demo_provisions_the_library_stack_on_its_own_servers() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_API"))}
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "ecsflow.cli", "demo", "--no-wait", "--port", str(port)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Stack outputs:" in out
    assert "vpc_id: vpc-" in out
    assert "db_endpoint: library-prod-db." in out
    assert "library-prod-backend" in out and "library-prod-frontend" in out
    assert f"Prefect UI:       http://127.0.0.1:{port}" in out
    assert "Backup:           snapshot library-prod-" in out and "copied to ap-northeast-3" in out
    assert "checks, all passed" in out  # the fresh stack passes every security rule
    assert "ecsflow serve --stack" in out
    assert "password" not in out.lower()
    assert "Error logging to API" not in done.stderr
