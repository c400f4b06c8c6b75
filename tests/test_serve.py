"""`python -m deployments.serve` serves exactly what prefect.yaml declares (no server needed)."""

from __future__ import annotations

from deployments.serve import declared_deployments, to_deployment


def test_serve_builds_every_declared_deployment_with_its_schedules_and_limits() -> None:
    declared = declared_deployments()
    built = {d["name"]: to_deployment(d, "stacks/other.yaml") for d in declared}
    assert set(built) >= {"provision", "plan", "teardown", "deploy-app", "rollback", "backup", "restore-test",
                          "export-data", "audit"}
    for d in declared:
        deployment = built[d["name"]]
        assert deployment.parameters["params"]["stack_file"] == "stacks/other.yaml"
        crons = [s.schedule.cron for s in deployment.schedules or []]
        assert crons == [s["cron"] for s in d.get("schedules") or []], d["name"]
        assert (deployment.concurrency_limit is not None) == ("concurrency_limit" in d), d["name"]
    assert built["teardown"].parameters["params"]["confirm"] is False
