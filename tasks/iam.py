"""IAM roles ecsflow makes for AWS services (flow logs, RDS monitoring, ECS...).

A role is found by its unique name under the stack's own path
(`/ecsflow/{stack}-{env}/`), so an inventory by path finds every role we made;
the tags confirm ownership before anything is deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tasks.aws import AwsContext, call, call_or_none, tag_map
from tasks.contract import Change, Observed, aws_task, diff_fields, require_ours


@dataclass(frozen=True)
class RoleSpec:
    """A role as we want it: who may assume it and what it may do."""

    component: str
    service_principal: str
    inline_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed_policy_arns: tuple[str, ...] = ()
    description: str = ""

    def name(self, ctx: AwsContext) -> str:
        return ctx.name(self.component, limit=64)

    def trust_policy(self, ctx: AwsContext) -> dict[str, Any]:
        # aws:SourceAccount stops another account's resources from using our role (confused deputy).
        return {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": self.service_principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ctx.account_id()}},
            }],
        }


def role_path(ctx: AwsContext) -> str:
    return f"/ecsflow/{ctx.prefix}/"


def _doc(value: Any) -> Any:
    return json.loads(unquote(value)) if isinstance(value, str) else value


def find_role(ctx: AwsContext, role: RoleSpec) -> Observed | None:
    iam = ctx.iam()
    name = role.name(ctx)
    found = call_or_none(f"look up IAM role {name}", iam.get_role, RoleName=name)
    if found is None:
        return None
    data = found["Role"]
    inline = {}
    for policy_name in call(f"list policies of {name}", iam.list_role_policies, RoleName=name)["PolicyNames"]:
        got = call(f"read policy {policy_name}", iam.get_role_policy, RoleName=name, PolicyName=policy_name)
        inline[policy_name] = _doc(got["PolicyDocument"])
    attached = call(f"list attached policies of {name}", iam.list_attached_role_policies, RoleName=name)
    # GetRole answers with the role's tags (all of them: a role has at most 50), so no ListRoleTags.
    tags = tag_map(data.get("Tags"))
    return Observed(
        id=data["Arn"], name=name, tags=tags,
        attrs={"trust_policy": _doc(data["AssumeRolePolicyDocument"]),
               "inline_policies": inline,
               "managed_policy_arns": sorted(p["PolicyArn"] for p in attached["AttachedPolicies"])},
    )


def _wanted(ctx: AwsContext, role: RoleSpec) -> dict[str, Any]:
    return {"trust_policy": role.trust_policy(ctx), "inline_policies": role.inline_policies,
            "managed_policy_arns": sorted(role.managed_policy_arns)}


def plan_role(ctx: AwsContext, role: RoleSpec, observed: Observed | None) -> Change:
    if observed is None:
        return Change("iam role", role.name(ctx), "create")
    diffs = diff_fields(observed.attrs, _wanted(ctx, role))
    return Change("iam role", role.name(ctx), "update" if diffs else "no-op", diffs)


@aws_task(task_run_name="ensure iam role {role.component}")
def ensure_role(ctx: AwsContext, role: RoleSpec) -> Observed:
    iam = ctx.iam()
    name = role.name(ctx)
    observed = find_role(ctx, role)
    wanted = _wanted(ctx, role)
    if observed is None:
        call(f"create IAM role {name}", iam.create_role, RoleName=name, Path=role_path(ctx),
             AssumeRolePolicyDocument=json.dumps(wanted["trust_policy"]),
             Description=role.description or f"ecsflow {ctx.prefix} {role.component}",
             Tags=ctx.tags(role.component))
        current: dict[str, Any] = {"inline_policies": {}, "managed_policy_arns": []}
    else:
        current = observed.attrs
        if diff_fields(current, {"trust_policy": wanted["trust_policy"]}):
            call(f"update trust policy of {name}", iam.update_assume_role_policy, RoleName=name,
                 PolicyDocument=json.dumps(wanted["trust_policy"]))
    for policy_name, doc in role.inline_policies.items():
        if diff_fields(current["inline_policies"], {policy_name: doc}):
            call(f"put policy {policy_name} on {name}", iam.put_role_policy, RoleName=name,
                 PolicyName=policy_name, PolicyDocument=json.dumps(doc))
    for policy_name in set(current["inline_policies"]) - set(role.inline_policies):
        call(f"delete policy {policy_name} from {name}", iam.delete_role_policy, RoleName=name,
             PolicyName=policy_name)
    for arn in set(role.managed_policy_arns) - set(current["managed_policy_arns"]):
        call(f"attach {arn} to {name}", iam.attach_role_policy, RoleName=name, PolicyArn=arn)
    for arn in set(current["managed_policy_arns"]) - set(role.managed_policy_arns):
        call(f"detach {arn} from {name}", iam.detach_role_policy, RoleName=name, PolicyArn=arn)
    if observed is not None and not diff_fields(observed.attrs, wanted):
        return observed  # nothing was written: what was just read is what AWS holds
    found = find_role(ctx, role)
    assert found is not None
    return found


def inventory_roles(ctx: AwsContext) -> list[Observed]:
    iam = ctx.iam()
    roles: list[Observed] = []
    paginator = iam.get_paginator("list_roles")
    for page in paginator.paginate(PathPrefix=role_path(ctx)):
        for data in page["Roles"]:
            name = data["RoleName"]
            tags = tag_map(call(f"list tags of {name}", iam.list_role_tags, RoleName=name)["Tags"])
            if ctx.owns(tags):
                roles.append(Observed(id=data["Arn"], name=name, tags=tags))
    return roles


@aws_task(task_run_name="delete iam role {observed.name}")
def delete_role(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"IAM role {observed.name}")
    iam = ctx.iam()
    name = observed.name
    attached = call_or_none(f"list attached policies of {name}", iam.list_attached_role_policies, RoleName=name)
    if attached is None:
        return
    for policy in attached["AttachedPolicies"]:
        call_or_none(f"detach {policy['PolicyArn']}", iam.detach_role_policy, RoleName=name,
                     PolicyArn=policy["PolicyArn"])
    for policy_name in call(f"list policies of {name}", iam.list_role_policies, RoleName=name)["PolicyNames"]:
        call_or_none(f"delete policy {policy_name}", iam.delete_role_policy, RoleName=name, PolicyName=policy_name)
    call_or_none(f"delete IAM role {name}", iam.delete_role, RoleName=name)
