"""The security verbs' bad input (exit 2, naming the field, nothing touched) and their output shapes,
without AWS or Prefect: `audit` and `iam-policy`, `app_secrets:` / `security:` in the stack file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecsflow.cli import main
from tasks.audit import RULES, Finding, report_markdown
from tests.conftest import LIBRARY_STACK


def stack_file(tmp_path: Path, edit: Any) -> str:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    edit(data)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda d: d["services"]["backend"]["secrets"].update(APP_KEY="app:app-key"),
     "services.backend.secrets.APP_KEY: app:app-key names no entry of app_secrets"),
    (lambda d: d.update(app_secrets={"app-key": {"rotation_days": 30}}), "rotation_days needs rotation_lambda_arn"),
    (lambda d: d.update(app_secrets={"App_Key": {}}), "app_secrets: name 'App_Key'"),
    (lambda d: d.update(security={"guard_duty": True}), "guard_duty"),
])
def test_bad_security_settings_exit_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      edit: Any, says: str) -> None:
    path = stack_file(tmp_path, edit)
    for verb in (["audit", "--stack", path], ["iam-policy", "--stack", path, "--account", "123456789012"]):
        assert main(verb) == 2
        assert says in capsys.readouterr().err


def test_audit_refuses_an_unknown_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--stack", str(LIBRARY_STACK), "--rule", "NO-SUCH"]) == 2
    assert "--rule NO-SUCH: no such rule; known: ENC-RDS" in capsys.readouterr().err


def test_iam_policy_prints_a_policy_document_scoped_to_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam-policy", "--stack", str(LIBRARY_STACK), "--account", "123456789012"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["Version"] == "2012-10-17"
    sids = {s["Sid"]: s for s in doc["Statement"]}
    assert sids["IamOwnRolesUnderTheStackPath"]["Resource"] == "arn:aws:iam::123456789012:role/ecsflow/library-prod/*"
    assert sids["Ec2ChangeOnlyOurs"]["Condition"] == {"StringEquals": {"aws:ResourceTag/ecsflow:stack": "library"}}
    assert "SecurityHubIsAccountWide" not in sids  # the library stack asks for no guardrails
    assert main(["iam-policy", "--stack", str(LIBRARY_STACK), "--account", "12"]) == 2
    assert main(["iam-policy", "--stack", str(LIBRARY_STACK), "--account", "123456789012", "--split"]) == 0
    parts = json.loads(capsys.readouterr().out)
    assert len(parts) > 1 and [s for p in parts for s in p["Statement"]] == doc["Statement"]
    assert all(len(json.dumps(p, separators=(",", ":"))) <= 6144 for p in parts)


def test_report_lists_failures_first_with_what_to_fix() -> None:
    findings = [Finding("ENC-RDS", "RDS storage encrypted with KMS", "high", "db", True, "ok"),
                Finding("SG-WORLD", "Only the ALB's 80/443 open", "critical", "sg-ecs (sg-1)", False,
                        "open to the internet on port(s) 22: revoke the rule")]
    text = report_markdown("library-prod", findings)
    assert "**FAIL**: 1 failed of 2 checks" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]  # after the header
    assert lines[0].startswith("| **FAIL** | SG-WORLD") and "port(s) 22" in lines[0]
    assert lines[1].startswith("| pass | ENC-RDS")
    assert f"({len(RULES) - 2} rules" not in text and "Nothing to check for: ENC-ECR" in text
