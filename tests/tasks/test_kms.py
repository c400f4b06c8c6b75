"""KMS keys against a real moto server: create, idempotency, policy, delete, inventory."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

import spec
from tasks import kms
from tasks.aws import CALLS, AwsContext, NotOurs
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


@pytest.fixture
def client(aws: MotoServer) -> Any:
    return boto3.client("kms", region_name=REGION)


def tags_of(client: Any, key_id: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in client.list_resource_tags(KeyId=key_id)["Tags"]}


def test_ensure_creates_rotating_tagged_key_behind_alias(ctx: AwsContext, client: Any) -> None:
    assert kms.find_key(ctx, "rds") is None
    assert kms.plan_key(ctx, "rds", None).action == "create"

    key = kms.ensure_key.fn(ctx, "rds")

    meta = client.describe_key(KeyId="alias/library-prod-rds")["KeyMetadata"]
    assert meta["Arn"] == key.id
    assert meta["KeyState"] == "Enabled"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert client.get_key_rotation_status(KeyId=key.id)["KeyRotationEnabled"] is True
    assert tags_of(client, key.id) == {
        "ecsflow:stack": "library", "ecsflow:env": "prod", "ecsflow:component": "kms-rds",
        "project": "library-management", "owner": "platform-team",
    }
    policy = json.loads(client.get_key_policy(KeyId=key.id, PolicyName="default")["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["AccountAdministers"]
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}

    found = kms.find_key(ctx, "rds")
    assert found is not None and found.id == key.id
    assert kms.plan_key(ctx, "rds", found).action == "no-op"


def test_logs_key_lets_cloudwatch_logs_use_it_for_our_log_groups(ctx: AwsContext, client: Any) -> None:
    key = kms.ensure_key.fn(ctx, "logs")

    policy = json.loads(client.get_key_policy(KeyId=key.id, PolicyName="default")["Policy"])
    logs = next(s for s in policy["Statement"] if s["Sid"] == "CloudWatchLogsUse")
    assert logs["Principal"] == {"Service": f"logs.{REGION}.amazonaws.com"}
    assert "kms:GenerateDataKey*" in logs["Action"]
    patterns = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert f"arn:aws:logs:{REGION}:123456789012:log-group:/ecsflow/library-prod/*" in patterns
    assert f"arn:aws:logs:{REGION}:123456789012:log-group:library-prod-*" in patterns


def test_second_ensure_makes_no_mutating_call(ctx: AwsContext) -> None:
    first = kms.ensure_key.fn(ctx, "ecr")
    CALLS.reset()
    second = kms.ensure_key.fn(ctx, "ecr")
    assert CALLS.mutating() == {}
    assert second.id == first.id


def test_ensure_repairs_rotation_and_policy_drift(ctx: AwsContext, client: Any) -> None:
    key = kms.ensure_key.fn(ctx, "logs")
    client.disable_key_rotation(KeyId=key.id)
    client.put_key_policy(KeyId=key.id, PolicyName="default", Policy=json.dumps(
        kms.key_policy(ctx, "rds", "123456789012")))  # drops the logs statement

    change = kms.plan_key(ctx, "logs", kms.find_key(ctx, "logs"))
    assert change.action == "update"
    assert change.changed_fields == ["policy", "rotation"]

    CALLS.reset()
    kms.ensure_key.fn(ctx, "logs")
    assert CALLS.mutating() == {"kms:PutKeyPolicy": 1, "kms:EnableKeyRotation": 1}
    assert client.get_key_rotation_status(KeyId=key.id)["KeyRotationEnabled"] is True
    assert kms.plan_key(ctx, "logs", kms.find_key(ctx, "logs")).action == "no-op"


def test_delete_removes_alias_and_schedules_deletion(ctx: AwsContext, client: Any) -> None:
    key = kms.ensure_key.fn(ctx, "rds")

    kms.delete_key.fn(key, ctx)

    assert client.describe_key(KeyId=key.id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    aliases = [a["AliasName"] for a in client.list_aliases()["Aliases"]]
    assert "alias/library-prod-rds" not in aliases
    assert kms.find_key(ctx, "rds") is None
    assert kms.inventory_keys(ctx) == []
    kms.delete_key.fn(key, ctx)  # again: already pending is success


def test_pending_deletion_key_counts_as_missing(ctx: AwsContext, client: Any) -> None:
    old = kms.ensure_key.fn(ctx, "rds")
    client.schedule_key_deletion(KeyId=old.attrs["key_id"], PendingWindowInDays=7)  # alias still points at it

    assert kms.find_key(ctx, "rds") is None
    new = kms.ensure_key.fn(ctx, "rds")

    assert new.id != old.id
    assert client.describe_key(KeyId="alias/library-prod-rds")["KeyMetadata"]["Arn"] == new.id


def test_ensure_adopts_a_key_whose_alias_was_never_made(ctx: AwsContext, client: Any) -> None:
    key = kms.ensure_key.fn(ctx, "ecr")
    client.delete_alias(AliasName="alias/library-prod-ecr")  # as if the run crashed after CreateKey

    assert [k.id for k in kms.inventory_keys(ctx)] == [key.id]
    again = kms.ensure_key.fn(ctx, "ecr")

    assert again.id == key.id
    assert client.describe_key(KeyId="alias/library-prod-ecr")["KeyMetadata"]["Arn"] == key.id


def test_delete_refuses_a_key_that_is_not_ours(ctx: AwsContext, client: Any) -> None:
    arn = client.create_key(Description="someone else's")["KeyMetadata"]["Arn"]
    client.create_alias(AliasName="alias/library-prod-rds", TargetKeyId=arn)

    found = kms.find_key(ctx, "rds")
    assert found is not None and found.tags == {}
    assert kms.plan_key(ctx, "rds", found).action == "replace"
    with pytest.raises(NotOurs):
        kms.delete_key.fn(found, ctx)
    with pytest.raises(NotOurs):
        kms.ensure_key.fn(ctx, "rds")
    assert client.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Enabled"


def test_inventory_lists_only_our_live_keys(ctx: AwsContext, client: Any) -> None:
    rds = kms.ensure_key.fn(ctx, "rds")
    logs = kms.ensure_key.fn(ctx, "logs")
    other = AwsContext(stack="library", env="staging", region=REGION)
    kms.ensure_key.fn(other, "rds")
    client.create_alias(AliasName="alias/library-prod-foreign",
                        TargetKeyId=client.create_key()["KeyMetadata"]["KeyId"])

    inventory = kms.inventory_keys(ctx)

    assert [(k.name, k.id) for k in inventory] == [("alias/library-prod-logs", logs.id),
                                                   ("alias/library-prod-rds", rds.id)]
    assert {k.attrs["purpose"] for k in inventory} == {"logs", "rds"}


def test_plan_keys_covers_every_purpose(ctx: AwsContext) -> None:
    stack = spec.load_stack(LIBRARY_STACK)
    assert [(c.name, c.action) for c in kms.plan_keys(stack, ctx)] == [
        ("alias/library-prod-logs", "create"), ("alias/library-prod-rds", "create"),
        ("alias/library-prod-ecr", "create")]
    for purpose in kms.PURPOSES:
        kms.ensure_key.fn(ctx, purpose)
    assert {c.action for c in kms.plan_keys(stack, ctx)} == {"no-op"}


def test_retain_key_hands_it_over(ctx: AwsContext, client: Any) -> None:
    key = kms.ensure_key.fn(ctx, "rds")

    kms.retain_key.fn(key, ctx, reason="final snapshot library-prod-final")
    kms.retain_key.fn(key, ctx, reason="final snapshot library-prod-final")  # a retry: nothing left to do

    assert client.describe_key(KeyId=key.id)["KeyMetadata"]["KeyState"] == "Enabled"
    tags = tags_of(client, key.id)
    assert tags["ecsflow:retained-for"] == "library-prod"
    assert "ecsflow:stack" not in tags and "ecsflow:env" not in tags
    assert kms.find_key(ctx, "rds") is None
    assert kms.inventory_keys(ctx) == []
    assert kms.ensure_key.fn(ctx, "rds").id != key.id  # the next `up` makes a fresh key
