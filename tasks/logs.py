"""CloudWatch Logs log groups: finite retention, KMS-encrypted, named under /ecsflow/{stack}-{env}/."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.aws import AwsContext, call, call_or_none, tags_of
from tasks.contract import Change, Observed, aws_task, plan_from, require_ours

# CloudWatch Logs accepts only these retention values.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                  2922, 3288, 3653)


@dataclass(frozen=True)
class LogGroupSpec:
    component: str
    retention_days: int

    def name(self, ctx: AwsContext) -> str:
        return f"{log_prefix(ctx)}{self.component}"

    def wanted(self, kms_key: Observed | None) -> dict[str, object]:
        return {"retention_days": allowed_retention(self.retention_days),
                "kms_key_arn": kms_key.id if kms_key else None}


def log_prefix(ctx: AwsContext) -> str:
    return f"/ecsflow/{ctx.prefix}/"


def allowed_retention(days: int) -> int:
    """The nearest retention CloudWatch accepts that keeps logs at least `days`."""
    return next((d for d in RETENTION_DAYS if d >= days), RETENTION_DAYS[-1])


def read_tags(ctx: AwsContext, arn: str, name: str) -> dict[str, str]:
    """A log group's tags (`arn` without the `:*` DescribeLogGroups appends): from the flow run's tag
    index when it holds them, else ListTagsForResource."""
    def read() -> dict[str, str]:
        got = call(f"list tags of {name}", ctx.logs().list_tags_for_resource, resourceArn=arn)
        return dict(got.get("tags", {}))

    return tags_of(ctx, arn, read)


def _observe(ctx: AwsContext, data: dict[str, object]) -> Observed:
    arn = str(data["arn"]).removesuffix(":*")
    return Observed(id=arn, name=str(data["logGroupName"]), tags=read_tags(ctx, arn, str(data["logGroupName"])),
                    attrs={"retention_days": data.get("retentionInDays"), "kms_key_arn": data.get("kmsKeyId")})


def find_log_group(ctx: AwsContext, group: LogGroupSpec) -> Observed | None:
    name = group.name(ctx)
    found = call(f"look up log group {name}", ctx.logs().describe_log_groups, logGroupNamePrefix=name)
    for data in found["logGroups"]:
        if data["logGroupName"] == name:
            return _observe(ctx, dict(data))
    return None


def plan_log_group(ctx: AwsContext, group: LogGroupSpec, observed: Observed | None,
                   kms_key: Observed | None) -> Change:
    return plan_from("log group", group.name(ctx), observed, group.wanted(kms_key))


@aws_task(task_run_name="ensure log group {group.component}")
def ensure_log_group(ctx: AwsContext, group: LogGroupSpec, kms_key: Observed | None) -> Observed:
    logs = ctx.logs()
    name = group.name(ctx)
    observed = find_log_group(ctx, group)
    wanted = group.wanted(kms_key)
    if observed is None:
        kwargs = {"kmsKeyId": kms_key.id} if kms_key else {}
        call(f"create log group {name}", logs.create_log_group, logGroupName=name,
             tags=ctx.tag_dict(group.component), **kwargs)
        current: dict[str, object] = {}
    else:
        current = observed.attrs
    if current.get("retention_days") != wanted["retention_days"]:
        call(f"set retention of {name}", logs.put_retention_policy, logGroupName=name,
             retentionInDays=int(str(wanted["retention_days"])))
    if observed is not None and kms_key and current.get("kms_key_arn") != kms_key.id:
        call(f"encrypt {name}", logs.associate_kms_key, logGroupName=name, kmsKeyId=kms_key.id)
    if observed is not None and observed.attrs == {**observed.attrs, **wanted}:
        return observed  # nothing was written
    found = find_log_group(ctx, group)
    assert found is not None
    return found


def inventory_log_groups(ctx: AwsContext) -> list[Observed]:
    groups = []
    paginator = ctx.logs().get_paginator("describe_log_groups")
    for page in paginator.paginate(logGroupNamePrefix=log_prefix(ctx)):
        for data in page["logGroups"]:
            observed = _observe(ctx, dict(data))
            if ctx.owns(observed.tags):
                groups.append(observed)
    return groups


@aws_task(task_run_name="delete log group {observed.name}")
def delete_log_group(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"log group {observed.name}")
    call_or_none(f"delete log group {observed.name}", ctx.logs().delete_log_group, logGroupName=observed.name)
