"""Every IAM policy ecsflow generates, run through parliament (PyPI) with no findings, plus the
properties least privilege rests on, checked on the policy documents themselves.

Policies: the services' execution and task roles (with an app secret, the DB master secret, an
SSM parameter and ECS Exec), the RDS monitoring role, the flow-log role, the DB initialisation's
execution role, the CI role of the pipeline, and the runner's policy (`ecsflow iam-policy`) with
every guardrail on. One documented ignore: parliament's ARN check wants a 12-digit account, but
AWS managed policies live under the pseudo-account `aws` (arn:aws:iam::aws:policy/...), which the
runner must read to audit the monitoring role's attached policy.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
import yaml

from spec import Stack
from spec.stack import Security
from tasks import database, dbinit, network, pipeline, services
from tasks.audit import STAR_RESOURCE_ACTIONS
from tasks.aws import AwsContext
from tasks.runner_policy import runner_policy
from tests.conftest import LIBRARY_STACK

pytestmark = pytest.mark.usefixtures("aws")
REGION = "ap-northeast-1"
ACCOUNT = "123456789012"  # moto's
MASTER = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-0123-AbCdEf"
PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/library/mail-password"
IGNORED = {("INVALID_ARN", "arn:aws:iam::aws:policy/*")}


def stack() -> Stack:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["app_secrets"] = {"app-key": {"generate": "laravel-app-key"}, "nuxt-session": {"generate": "hex"}}
    data["services"]["backend"]["secrets"].update(APP_KEY="app:app-key", MAIL_PASSWORD=PARAMETER)
    data["services"]["frontend"]["secrets"] = {"NUXT_SESSION_PASSWORD": "app:nuxt-session"}
    data["services"]["frontend"]["enable_exec"] = True
    data["pipeline"] = {"github_repository": "example/library"}
    data["security"] = {"security_hub": True, "config_recorder": True, "guardduty": True}
    # Every optional family on, so the runner policy carries all its statements.
    data["load_balancer"].update(dns={}, cdn={"enabled": True}, waf={"enabled": True})
    data["monitoring"] = {"monthly_budget_usd": 100}
    return Stack.model_validate(data)


def policies() -> dict[str, dict[str, Any]]:
    spec = stack()
    ctx = AwsContext.for_stack(spec)
    db = database.Observed(id="db", name="db", attrs={"master_secret_arn": MASTER})
    found: dict[str, dict[str, Any]] = {}
    for service in spec.services:
        repo = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/library-prod-{service}"
        roles = [services.execution_role(spec, ctx, service, repo, services.secret_arns(spec, service, db)),
                 services.task_role(spec, ctx, service)]
        for role in roles:
            found.update({f"{role.component} {name}": doc for name, doc in role.inline_policies.items()})
    found["flow-logs"] = network.flow_log_role(ctx).inline_policies["deliver-flow-logs"]
    dbinit_role = dbinit.execution_role(spec, ctx, MASTER, MASTER.replace("rds!db-0123", "library-prod-db-app"))
    found.update({f"dbinit {n}": d for n, d in dbinit_role.inline_policies.items()})
    found.update({f"ci {n}": d for n, d in pipeline.ci_role(spec, ctx).inline_policies.items()})
    found["runner"] = runner_policy(spec, REGION, ACCOUNT)
    return found


def findings(doc: dict[str, Any]) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string

        result = analyze_policy_string(json.dumps(doc))
    return [f"{f.issue} {f.detail}" for f in result.findings
            if (f.issue, (f.location or {}).get("string")) not in IGNORED]


def test_every_generated_policy_passes_parliament() -> None:
    docs = policies()
    assert {"backend-execution pull-logs-secrets", "frontend-execution pull-logs-secrets", "frontend-task ecs-exec",
            "flow-logs", "dbinit logs-secrets", f"ci {pipeline.ECR_POLICY}", "runner"} <= set(docs)
    report = {name: findings(doc) for name, doc in docs.items()}
    assert {name: problems for name, problems in report.items() if problems} == {}
    # The monitoring role carries only AWS's managed policy (no document of ours to check).
    assert database.monitoring_role(AwsContext.for_stack(stack())).inline_policies == {}


def test_no_wildcard_actions_and_star_resources_only_where_aws_allows_nothing_narrower() -> None:
    for name, doc in policies().items():
        for statement in doc["Statement"]:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            assert not [a for a in actions if a == "*" or a.endswith(":*")], (name, statement)
            if name != "runner" and statement.get("Resource") == "*":
                assert {a.lower() for a in actions} <= STAR_RESOURCE_ACTIONS, (name, statement)
            if name == "runner" and statement.get("Resource") == "*":
                # Each "*" statement says why in its Sid; creates are bounded by the request tag instead.
                assert re.search(r"NoResource|AccountWide|ReadOnly|HasNo", statement["Sid"]) or \
                    "aws:RequestTag/ecsflow:stack" in json.dumps(statement.get("Condition", {})), statement


def _matches(pattern: str, arn: str) -> bool:
    """IAM's ARN matching: `*` any run of characters, `?` exactly one."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), arn) is not None


def test_one_services_execution_role_cannot_read_another_services_secret() -> None:
    docs = policies()
    backend = docs["backend-execution pull-logs-secrets"]["Statement"]
    frontend = docs["frontend-execution pull-logs-secrets"]["Statement"]
    base = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:library-prod/"
    app_key, session = f"{base}app-key-AbCdEf", f"{base}nuxt-session-XyZ123"

    def readable(statements: list[dict[str, Any]], arn: str) -> bool:
        return any(s["Effect"] == "Allow" and "secretsmanager:GetSecretValue" in json.dumps(s["Action"])
                   and any(_matches(p, arn) for p in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                      else s["Resource"])) for s in statements)

    assert readable(backend, app_key) and readable(backend, MASTER)
    assert not readable(backend, session)
    assert readable(frontend, session)
    assert not readable(frontend, app_key) and not readable(frontend, MASTER)
    assert not readable(backend, f"{base}app-key-longer-AbCdEf")  # a secret whose name merely starts alike
    decrypt = next(s for s in frontend if s["Sid"] == "DecryptOwnAppSecrets")
    assert decrypt["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] == [f"{base}nuxt-session-??????"]


def test_trust_policies_name_the_source_account_and_the_runner_is_scoped_to_the_stack() -> None:
    spec = stack()
    ctx = AwsContext.for_stack(spec)
    role = services.task_role(spec, ctx, "backend")
    condition = role.trust_policy(ctx)["Statement"][0]["Condition"]
    assert condition == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    runner = json.dumps(runner_policy(spec, REGION, ACCOUNT))
    assert "library-prod-*" in runner and "role/ecsflow/library-prod/*" in runner
    off = runner_policy(spec.model_copy(update={"security": Security()}), REGION, ACCOUNT)
    assert "securityhub" not in json.dumps(off) and "guardduty" not in json.dumps(off)
