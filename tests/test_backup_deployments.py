"""prefect.yaml's backup, restore-test, export-data and load-test deployments, registered on the
session's Prefect server the way `python -m deployments.serve` registers them (from prefect.yaml):
their schedules are what the UI shows."""

from __future__ import annotations

import pytest

EXPECTED = {  # deployment -> (flow name, cron, active)
    "backup": ("backup", "30 4 * * *", True),
    "restore-test": ("restore-test", "0 6 * * 0", True),
    "export-data": ("export-data", "0 5 * * *", True),
    "load-test": ("load-test", "0 2 * * 1", False),
}


@pytest.mark.prefect
def test_backup_deployments_register_with_their_schedules() -> None:
    from prefect.client.orchestration import get_client

    from deployments.serve import declared_deployments, to_deployment

    declared = {d["name"]: d for d in declared_deployments() if d["name"] in EXPECTED}
    assert set(declared) == set(EXPECTED)
    for d in declared.values():
        to_deployment(d, "stacks/library.yaml").apply()
    with get_client(sync_client=True) as client:
        for name, (flow, cron, active) in EXPECTED.items():
            deployment = client.read_deployment_by_name(f"{flow}/{name}")
            assert deployment.parameters == {"params": {"stack_file": "stacks/library.yaml"}}
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (  # type: ignore[union-attr]
                cron, "Asia/Tokyo", active)
            # the run form the UI renders comes from the flow's pydantic parameter model
            assert "params" in deployment.parameter_openapi_schema["properties"]
            assert declared[name]["work_pool"]["name"] == "ecsflow"  # a worker on that pool runs it
