"""prefect.yaml's backup, restore-test, export-data and load-test deployments, registered with
`prefect deploy` on the session's Prefect server: their schedules are what the UI shows."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EXPECTED = {  # deployment -> (flow name, cron, active)
    "backup": ("backup", "30 4 * * *", True),
    "restore-test": ("restore-test", "0 6 * * 0", True),
    "export-data": ("export-data", "0 5 * * *", True),
    "load-test": ("load-test", "0 2 * * 1", False),
}


@pytest.mark.prefect
def test_backup_deployments_register_with_their_schedules() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    pool = "ecsflow"  # prefect.yaml's pool (`prefect deploy` ignores --pool for several deployments)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    names = [arg for name in EXPECTED for arg in ("--name", name)]
    deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", *names],
                              cwd=ROOT, env=dict(os.environ, ECSFLOW_HOME=str(ROOT)), capture_output=True,
                              text=True, timeout=240)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        for name, (flow, cron, active) in EXPECTED.items():
            deployment = client.read_deployment_by_name(f"{flow}/{name}")
            assert deployment.work_pool_name == pool
            assert deployment.parameters == {"params": {"stack_file": "stacks/library.yaml"}}
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (  # type: ignore[union-attr]
                cron, "Asia/Tokyo", active)
            # the parameter form the UI renders comes from the flow's pydantic model
            assert "params" in deployment.parameter_openapi_schema["properties"]
