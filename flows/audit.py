"""`ecsflow audit`: check the live stack against the security rules (tasks/audit.py), publish a
markdown report (pass / fail per rule and resource) and fail the run when any check fails."""

from __future__ import annotations

import re
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.common import StackRun, open_stack
from spec import Stack
from tasks import audit, console
from tasks.aws import AwsContext, EcsflowError
from tasks.contract import aws_task


class AuditRun(StackRun):
    rules: list[str] = Field(default_factory=list, description="Check only these rule ids (empty: every rule).")


class AuditFailed(EcsflowError):
    """At least one check failed; `findings` holds every check (as rows)."""

    def __init__(self, message: str, findings: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.findings = findings


@aws_task(task_run_name="audit {ctx.prefix}")
def run_audit(spec: Stack, ctx: AwsContext, rules: list[str]) -> list[dict[str, Any]]:
    return [f.as_row() for f in audit.audit(spec, ctx, rules or None)]


# What a rule's findings name, where the name alone makes a console link (the rest name an id or ARN,
# or need more than the name: an ECS service its cluster, an SNS topic or ALB its ARN).
RULE_KINDS = {"ENC-RDS": "db instance", "PUB-RDS": "db instance", "DEL-RDS": "db instance",
              "ENC-LOGS": "log group", "LOG-RETENTION": "log group", "ENC-S3": "s3 bucket", "PUB-S3": "s3 bucket",
              "S3-TLS": "s3 bucket", "RDS-FORCE-SSL": "db parameter group", "IAM-ACTIONS": "iam role",
              "IAM-RESOURCES": "iam role"}


def console_link(finding: audit.Finding, region: str) -> str | None:
    resource = finding.resource
    group = re.search(r"\((sg-[0-9a-f]+)\)$", resource)  # "sg-ecs (sg-0abc)"
    return console.console_url(group.group(1) if group else resource, region, RULE_KINDS.get(finding.rule))


def console_links(findings: list[audit.Finding], region: str) -> str:
    """Each checked resource the console has a page for, linked; failed ones first."""
    failed = {f.resource for f in findings if not f.passed}
    links: dict[str, str | None] = {}
    for finding in findings:
        links[finding.resource] = links.get(finding.resource) or console_link(finding, region)
    ordered = sorted((r for r, url in links.items() if url), key=lambda r: (r not in failed, r))
    if not ordered:
        return ""
    lines = ["", "## In the AWS console", "", "| result | resource | page |", "|---|---|---|"]
    lines += [f"| {'**FAIL**' if r in failed else 'pass'} | `{r}` | [open]({links[r]}) |" for r in ordered]
    return "\n".join(lines) + "\n"


@flow(name="audit", description="Check the live stack against ecsflow's security rules; fails on any failed check.")
def audit_flow(params: AuditRun = AuditRun()) -> list[dict[str, Any]]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    unknown = sorted(set(params.rules) - set(audit.RULE_IDS))
    if unknown:
        raise EcsflowError(f"unknown audit rule(s) {', '.join(unknown)}; known: {', '.join(audit.RULE_IDS)}")
    rows = run_audit(spec, ctx, params.rules)
    findings = [audit.Finding(**row) for row in rows]
    create_markdown_artifact(key=f"audit-{ctx.prefix}",
                             markdown=audit.report_markdown(ctx.prefix, findings) + console_links(findings, ctx.region),
                             description=f"Security audit of {ctx.prefix}")
    failed = [f for f in findings if not f.passed]
    if failed:
        shown = "; ".join(f"{f.rule} {f.resource}" for f in failed[:10])
        raise AuditFailed(f"{len(failed)} of {len(findings)} checks failed: {shown}"
                          f"{' ...' if len(failed) > 10 else ''}", rows)
    return rows
