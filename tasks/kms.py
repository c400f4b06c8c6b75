"""Customer-managed KMS keys, one per purpose ("rds", "ecr", "logs", ...).

A key has no name of its own, so its identity is the unique alias
`alias/{stack}-{env}-{purpose}`; its tags (set in CreateKey itself) are the
ownership record. Every key is symmetric, has automatic rotation on, and a key
policy that lets the account root administer it (IAM policies then grant use).
The "logs" key also lets CloudWatch Logs use it, for our log groups only.

A key pending deletion counts as gone: `ensure_key` makes a new one and points
the alias at it. A crash between CreateKey and CreateAlias leaves a tagged key
without an alias; the next `ensure_key` adopts it (found through the tagging API)
instead of making another, and `inventory_keys` lists it, so teardown removes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import Task

from spec import Stack
from tasks.aws import (
    TAG_COMPONENT,
    TAG_ENV,
    TAG_STACK,
    AwsContext,
    NotOurs,
    call,
    call_or_none,
    tags_of,
    wait_until,
)
from tasks.contract import Change, Observed, aws_task, partition, plan_foreign, plan_from, refuse_replace, require_ours

if TYPE_CHECKING:
    from mypy_boto3_kms.type_defs import KeyMetadataTypeDef, TagTypeDef
    from mypy_boto3_resourcegroupstaggingapi import ResourceGroupsTaggingAPIClient

P = ParamSpec("P")
R = TypeVar("R")

RESOURCE = "kms-key"
PURPOSES = ("logs", "rds", "ecr")  # the keys `up` makes, in the order `plan` lists them
TAG_RETAINED_FOR = "ecsflow:retained-for"
TAG_RETAINED_BECAUSE = "ecsflow:retained-because"
PENDING_DELETION = "PendingDeletion"
DELETION_WINDOW_DAYS = 7  # the minimum AWS allows
KEY_SPEC = "SYMMETRIC_DEFAULT"
KEY_USAGE = "ENCRYPT_DECRYPT"
# How long to wait for a just-created key to be visible to the next call (KMS is
# eventually consistent for a few seconds after CreateKey).
FRESH_KEY_TIMEOUT = 60.0


def _aws_task(run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`aws_task` (transient-only retries, no cache) with a readable task run name."""

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        return aws_task(fn).with_options(task_run_name=run_name)

    return wrap


# ---------------------------------------------------------------- names and wanted state


def alias_name(ctx: AwsContext, purpose: str) -> str:
    return "alias/" + ctx.name(purpose, limit=250)  # alias names are at most 256 characters


def component(purpose: str) -> str:
    return f"kms-{purpose}"


def logs_arn_patterns(ctx: AwsContext, account: str, part: str | None = None) -> list[str]:
    """The log groups the "logs" key may encrypt: `{stack}-{env}-*` and `/ecsflow/{stack}-{env}/*`.

    Both patterns end the stack prefix with a separator, so stack "library" env "prod"
    does not also cover env "prod-eu"'s log groups."""
    base = f"arn:{part or partition(ctx.region)}:logs:{ctx.region}:{account}:log-group:"
    return [f"{base}{ctx.prefix}-*", f"{base}/ecsflow/{ctx.prefix}/*"]


def key_policy(ctx: AwsContext, purpose: str, account: str, part: str | None = None) -> dict[str, Any]:
    """The key policy we want, as data (compared as data, sent as JSON)."""
    part = part or partition(ctx.region)
    statements: list[dict[str, Any]] = [{
        "Sid": "AccountAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:{part}:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }]
    if purpose == "logs":
        statements.append({
            "Sid": "CloudWatchLogsUse",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{ctx.region}.amazonaws.com"},
            "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                       "kms:Describe*"],
            "Resource": "*",
            "Condition": {"ArnLike": {
                "kms:EncryptionContext:aws:logs:arn": logs_arn_patterns(ctx, account, part),
            }},
        })
    statements += _service_statements(ctx, purpose, account)
    return {"Version": "2012-10-17", "Id": f"ecsflow-{ctx.prefix}-{purpose}", "Statement": statements}


# Services that encrypt with a key themselves (not on behalf of an IAM caller) need the key policy to
# name them; the aws:SourceAccount condition keeps another account's resources of that service out.
# "secrets" needs no such statement: Secrets Manager uses the key as the calling principal, whose IAM
# policy grants kms:Decrypt / GenerateDataKey (with kms:ViaService), which the root statement enables.
SERVICE_USERS: dict[str, tuple[str | list[str], list[str]]] = {
    "s3": ("config.amazonaws.com", ["kms:Decrypt", "kms:GenerateDataKey"]),  # AWS Config's delivery channel
    # CloudWatch alarms and Budgets notifications publishing to the encrypted alarm topic.
    "sns": (["budgets.amazonaws.com", "cloudwatch.amazonaws.com"], ["kms:Decrypt", "kms:GenerateDataKey*"]),
}
OPTIONAL_PURPOSES = ("secrets", "s3", "sns")  # made only when the stack uses them (app_secrets, Config...)


def _service_statements(ctx: AwsContext, purpose: str, account: str) -> list[dict[str, Any]]:
    if purpose not in SERVICE_USERS:
        return []
    principal, actions = SERVICE_USERS[purpose]
    return [{"Sid": "ServiceUse", "Effect": "Allow", "Principal": {"Service": principal}, "Action": actions,
             "Resource": "*", "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]


def _kms_tags(ctx: AwsContext, purpose: str) -> list[TagTypeDef]:
    return [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in ctx.tags(component(purpose))]


def _tag_dict(tags: list[TagTypeDef]) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in tags}


def _arn_parts(arn: str) -> tuple[str, str]:
    """(partition, account) of an ARN such as arn:aws:kms:ap-northeast-1:123456789012:key/..."""
    parts = arn.split(":")
    return parts[1], parts[4]


# ---------------------------------------------------------------- reading


def _describe(ctx: AwsContext, key: str) -> KeyMetadataTypeDef | None:
    resp = call_or_none(f"look up KMS key {key}", ctx.kms().describe_key, KeyId=key)
    return resp["KeyMetadata"] if resp else None


def _read_tags(ctx: AwsContext, key_id: str) -> dict[str, str]:
    tags: list[TagTypeDef] = []
    pages = ctx.kms().get_paginator("list_resource_tags").paginate(KeyId=key_id)
    for page in call(f"read the tags of KMS key {key_id}", lambda: list(pages)):
        tags.extend(page.get("Tags", []))
    return _tag_dict(tags)


def _observe(ctx: AwsContext, meta: KeyMetadataTypeDef, alias: str, purpose: str,
             tags: dict[str, str] | None = None) -> Observed:
    kms = ctx.kms()
    key_id = meta["KeyId"]
    doing = f"read KMS key {alias}"
    if tags is None:
        tags = tags_of(ctx, meta.get("Arn", ""), lambda: _read_tags(ctx, key_id))
    rotation = call(doing, kms.get_key_rotation_status, KeyId=key_id)["KeyRotationEnabled"]
    policy_text = call(doing, kms.get_key_policy, KeyId=key_id, PolicyName="default").get("Policy", "{}")
    return Observed(
        id=meta.get("Arn", key_id),
        name=alias,
        tags=tags,
        attrs={
            "key_id": key_id,
            "purpose": purpose,
            "state": meta.get("KeyState"),
            "enabled": meta.get("Enabled"),
            "key_spec": meta.get("KeySpec"),
            "key_usage": meta.get("KeyUsage"),
            "rotation": rotation,
            "policy": json.loads(policy_text),
        },
    )


def find_key(ctx: AwsContext, purpose: str) -> Observed | None:
    """The key behind our alias, or None (no alias, or the key is pending deletion)."""
    alias = alias_name(ctx, purpose)
    meta = _describe(ctx, alias)
    if meta is None or meta.get("KeyState") == PENDING_DELETION:
        return None
    return _observe(ctx, meta, alias, purpose)


def _tagged_keys(ctx: AwsContext, purpose: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """(ARN, tags) of every KMS key carrying our stack/env tags (and the purpose's component),
    through the tagging API: this also finds keys whose alias was never made."""
    tagging: ResourceGroupsTaggingAPIClient = ctx.client("resourcegroupstaggingapi")
    filters: list[Any] = [{"Key": TAG_STACK, "Values": [ctx.stack]}, {"Key": TAG_ENV, "Values": [ctx.env]}]
    if purpose is not None:
        filters.append({"Key": TAG_COMPONENT, "Values": [component(purpose)]})
    pages = tagging.get_paginator("get_resources").paginate(ResourceTypeFilters=["kms:key"],
                                                             TagFilters=filters)
    found = []
    for page in call(f"list the KMS keys of {ctx.prefix}", lambda: list(pages)):
        for item in page.get("ResourceTagMappingList", []):
            found.append((item["ResourceARN"], {t["Key"]: t["Value"] for t in item.get("Tags", [])}))
    return found


def _orphan(ctx: AwsContext, purpose: str) -> KeyMetadataTypeDef | None:
    """A key of ours for this purpose that lost (or never got) its alias and is not pending deletion."""
    for arn, tags in _tagged_keys(ctx, purpose):
        if not ctx.owns(tags):
            continue
        meta = _describe(ctx, arn)
        if meta and meta.get("KeyState") != PENDING_DELETION and meta.get("KeyManager") == "CUSTOMER":
            return meta
    return None


# ---------------------------------------------------------------- plan


def plan_key(ctx: AwsContext, purpose: str, observed: Observed | None) -> Change:
    """Read-only: what `ensure_key` would do. Rotation on, enabled, our policy and tags."""
    alias = alias_name(ctx, purpose)
    if observed is None:
        return Change(RESOURCE, alias, "create")
    if not ctx.owns(observed.tags):
        return plan_foreign(ctx, RESOURCE, alias, f"{alias} points at a key", "Delete the alias or rename the stack.")
    part, account = _arn_parts(observed.id)
    tags = ctx.tag_dict(component(purpose))
    wanted: dict[str, Any] = {
        "enabled": True,
        "rotation": True,
        "key_spec": KEY_SPEC,
        "key_usage": KEY_USAGE,
        "policy": key_policy(ctx, purpose, account, part),
        "tags": tags,
    }
    current = {key: observed.attrs.get(key) for key in wanted}
    current["tags"] = {key: observed.tags.get(key) for key in tags}
    return plan_from(RESOURCE, alias, observed, wanted, current=current, immutable=("key_spec", "key_usage"))


def plan_keys(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Plan every key `up` makes (one per purpose in PURPOSES)."""
    return [plan_key(ctx, purpose, find_key(ctx, purpose)) for purpose in PURPOSES]


# ---------------------------------------------------------------- ensure / delete


def _create(ctx: AwsContext, purpose: str) -> KeyMetadataTypeDef:
    alias = alias_name(ctx, purpose)
    resp = call(f"create KMS key {alias}", ctx.kms().create_key,
                Description=f"ecsflow {ctx.prefix} {purpose}",
                KeyUsage=KEY_USAGE, KeySpec=KEY_SPEC,
                Policy=json.dumps(key_policy(ctx, purpose, ctx.account_id())),
                Tags=_kms_tags(ctx, purpose))
    return resp["KeyMetadata"]


def _retry_fresh(what: str, fn: Callable[[], Any], ctx: AwsContext) -> None:
    """Run fn until AWS stops answering NotFound (a just-created key becomes visible)."""
    wait_until(what, fn, timeout=FRESH_KEY_TIMEOUT, poll=min(ctx.poll_seconds, 2.0))


@_aws_task("ensure kms key {purpose}")
def ensure_key(ctx: AwsContext, purpose: str) -> Observed:
    """Find or create the key for `purpose`, point the alias at it, reconcile drift.
    Observed.id is the key ARN."""
    kms = ctx.kms()
    alias = alias_name(ctx, purpose)
    meta = _describe(ctx, alias)
    observed: Observed | None = None
    if meta is None or meta.get("KeyState") == PENDING_DELETION:
        alias_exists = meta is not None
        meta = _orphan(ctx, purpose)
        if meta is None:
            meta = _create(ctx, purpose)
            # What we just sent, rather than reads a just-created key may not answer yet.
            observed = Observed(
                id=meta.get("Arn", meta["KeyId"]), name=alias, tags=ctx.tag_dict(component(purpose)),
                attrs={"key_id": meta["KeyId"], "purpose": purpose, "state": meta.get("KeyState"),
                       "enabled": meta.get("Enabled"), "key_spec": meta.get("KeySpec"),
                       "key_usage": meta.get("KeyUsage"), "rotation": False,
                       "policy": key_policy(ctx, purpose, ctx.account_id())})
        key_id = meta["KeyId"]
        doing = f"point {alias} at KMS key {key_id}"
        if alias_exists:
            _retry_fresh(doing, lambda: call_or_none(doing, kms.update_alias, AliasName=alias,
                                                     TargetKeyId=key_id), ctx)
        else:
            _retry_fresh(doing, lambda: call_or_none(doing, kms.create_alias, AliasName=alias,
                                                     TargetKeyId=key_id), ctx)
    key_id = meta["KeyId"]
    if observed is None:
        observed = _observe(ctx, meta, alias, purpose)
    change = plan_key(ctx, purpose, observed)
    if change.action == "replace" and not ctx.owns(observed.tags):
        raise NotOurs(change.note)
    refuse_replace(change)
    wanted = {d.field: d.wanted for d in change.diffs}
    doing = f"reconcile KMS key {alias}"
    if "enabled" in wanted:
        call(doing, kms.enable_key, KeyId=key_id)
        observed.attrs.update(enabled=True, state="Enabled")
    if "policy" in wanted:
        call(doing, kms.put_key_policy, KeyId=key_id, PolicyName="default",
             Policy=json.dumps(wanted["policy"]))
        observed.attrs["policy"] = wanted["policy"]
    if "rotation" in wanted:
        _retry_fresh(doing, lambda: call_or_none(doing, kms.enable_key_rotation, KeyId=key_id), ctx)
        observed.attrs["rotation"] = True
    if "tags" in wanted:
        call(doing, kms.tag_resource, KeyId=key_id, Tags=_kms_tags(ctx, purpose))
        observed.tags.update(wanted["tags"])
    return observed


@_aws_task("delete kms key {observed.name}")
def delete_key(observed: Observed, ctx: AwsContext) -> None:
    """Remove the alias and schedule the key's deletion (7 days, the minimum).
    Refuses a key without our tags; a missing or already pending key is success."""
    require_ours(ctx, observed.tags, f"KMS key {observed.name} ({observed.id})")
    kms = ctx.kms()
    doing = f"delete KMS key {observed.name}"
    target = _describe(ctx, observed.name)
    if target is not None and observed.id in (target.get("Arn"), target["KeyId"]):
        call_or_none(doing, kms.delete_alias, AliasName=observed.name)
    meta = _describe(ctx, observed.id)
    if meta is None or meta.get("KeyState") == PENDING_DELETION:
        return
    # The bare key id: AWS takes the ARN too, but moto 5.2.5 answers HTTP 500 to an ARN here.
    call_or_none(doing, kms.schedule_key_deletion, KeyId=meta["KeyId"],
                 PendingWindowInDays=DELETION_WINDOW_DAYS)


@_aws_task("retain kms key {observed.name}")
def retain_key(observed: Observed, ctx: AwsContext, reason: str) -> None:
    """Keep a key that something outside the stack still needs (a final DB snapshot), and hand
    it over: it loses its alias and our ecsflow tags (so no later `down` deletes it and the
    next `up` makes a fresh key) and gains tags saying whose it was and why it stayed."""
    kms = ctx.kms()
    doing = f"retain KMS key {observed.name}"
    current = _read_tags(ctx, observed.id)
    if current.get(TAG_RETAINED_FOR) == ctx.prefix and not ctx.owns(current):
        return  # already handed over (a retried run)
    require_ours(ctx, current, f"KMS key {observed.name} ({observed.id})")
    call(doing, kms.tag_resource, KeyId=observed.id, Tags=[
        {"TagKey": TAG_RETAINED_FOR, "TagValue": ctx.prefix},
        {"TagKey": TAG_RETAINED_BECAUSE, "TagValue": reason[:256]},
    ])
    target = _describe(ctx, observed.name)
    if target is not None and observed.id in (target.get("Arn"), target["KeyId"]):
        call_or_none(doing, kms.delete_alias, AliasName=observed.name)
    call(doing, kms.untag_resource, KeyId=observed.id, TagKeys=[TAG_STACK, TAG_ENV, TAG_COMPONENT])


# ---------------------------------------------------------------- inventory


def inventory_keys(ctx: AwsContext) -> list[Observed]:
    """Every key of this stack/env that is not pending deletion: those behind an alias
    with our prefix, plus tagged keys whose alias is missing (a crashed create)."""
    kms = ctx.kms()
    prefix = f"alias/{ctx.prefix}-"
    pages = kms.get_paginator("list_aliases").paginate()
    found: dict[str, Observed] = {}
    for page in call(f"list the KMS aliases of {ctx.prefix}", lambda: list(pages)):
        for entry in page.get("Aliases", []):
            alias, target = entry.get("AliasName", ""), entry.get("TargetKeyId")
            if not alias.startswith(prefix) or not target:
                continue
            meta = _describe(ctx, target)
            if meta is None or meta.get("KeyState") == PENDING_DELETION or meta.get("Arn") in found:
                continue
            tags = _read_tags(ctx, target)
            if not ctx.owns(tags):
                continue
            purpose = tags.get(TAG_COMPONENT, "").removeprefix("kms-") or alias.removeprefix(prefix)
            found[meta.get("Arn", target)] = _observe(ctx, meta, alias, purpose, tags)
    for arn, tags in _tagged_keys(ctx):
        if arn in found or not ctx.owns(tags):
            continue
        meta = _describe(ctx, arn)
        if meta is None or meta.get("KeyState") == PENDING_DELETION:
            continue
        purpose = tags.get(TAG_COMPONENT, "").removeprefix("kms-") or meta["KeyId"]
        found[arn] = _observe(ctx, meta, alias_name(ctx, purpose), purpose, tags)
    return sorted(found.values(), key=lambda o: (o.name, o.id))
