"""ECR repositories and the registry scanning rule against a real moto server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

import spec
from spec import Stack
from tasks import kms, registry
from tasks.aws import CALLS, AwsContext, NotOurs
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


@pytest.fixture
def ecr(aws: MotoServer) -> Any:
    return boto3.client("ecr", region_name=REGION)


@pytest.fixture
def key_arn(aws: MotoServer) -> str:
    # The "ecr" key's ARN is an input here; tasks.kms makes the real one.
    arn: str = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    return arn


def describe(ecr: Any, name: str) -> dict[str, Any]:
    repo: dict[str, Any] = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    return repo


def with_registry(stack: Stack, **changes: Any) -> Stack:
    return stack.model_copy(update={"registry": stack.registry.model_copy(update=changes)})


def test_ensure_creates_each_service_repository(stack: Stack, ctx: AwsContext, ecr: Any, key_arn: str) -> None:
    assert registry.find_repository(stack, ctx, "backend") is None
    assert registry.plan_repository(stack, ctx, "backend", None, key_arn).action == "create"

    made = {s: registry.ensure_repository.fn(stack, ctx, s, key_arn) for s in stack.services}

    for service, observed in made.items():
        name = f"library-prod-{service}"
        repo = describe(ecr, name)
        assert observed.name == name and observed.id == repo["repositoryArn"]
        assert observed.attrs["uri"] == repo["repositoryUri"]
        assert repo["imageTagMutability"] == "IMMUTABLE"
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key_arn}
        tags = {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]}
        assert tags == {"ecsflow:stack": "library", "ecsflow:env": "prod", "ecsflow:component": f"ecr-{service}",
                        "project": "library-management", "owner": "platform-team"}
        policy = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
        untagged, tagged = sorted(policy["rules"], key=lambda r: r["rulePriority"])
        assert untagged["selection"] == {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                         "countUnit": "days", "countNumber": 1}
        assert tagged["selection"] == {"tagStatus": "tagged", "tagPatternList": ["*"],
                                       "countType": "imageCountMoreThan", "countNumber": 20}
        assert untagged["action"] == tagged["action"] == {"type": "expire"}

    found = registry.find_repository(stack, ctx, "backend")
    assert found is not None
    assert registry.plan_repository(stack, ctx, "backend", found, key_arn).action == "no-op"
    assert [o.name for o in registry.inventory_repositories(ctx)] == ["library-prod-backend",
                                                                      "library-prod-frontend"]


def test_second_ensure_makes_no_mutating_call(stack: Stack, ctx: AwsContext, key_arn: str) -> None:
    for service in stack.services:
        registry.ensure_repository.fn(stack, ctx, service, key_arn)
    CALLS.reset()
    for service in stack.services:
        registry.ensure_repository.fn(stack, ctx, service, key_arn)
    assert CALLS.mutating() == {}


def test_changed_keep_releases_is_one_lifecycle_update(stack: Stack, ctx: AwsContext, ecr: Any,
                                                       key_arn: str) -> None:
    registry.ensure_repository.fn(stack, ctx, "backend", key_arn)
    changed = with_registry(stack, keep_releases=5)

    change = registry.plan_repository(changed, ctx, "backend", registry.find_repository(changed, ctx, "backend"),
                                      key_arn)
    assert change.action == "update"
    assert change.changed_fields == ["lifecycle_policy"]
    assert change.diffs[0].wanted["rules"][1]["selection"]["countNumber"] == 5

    CALLS.reset()
    registry.ensure_repository.fn(changed, ctx, "backend", key_arn)
    assert CALLS.mutating() == {"ecr:PutLifecyclePolicy": 1}
    policy = json.loads(ecr.get_lifecycle_policy(repositoryName="library-prod-backend")["lifecyclePolicyText"])
    assert policy["rules"][1]["selection"]["countNumber"] == 5


def test_changed_stack_file_is_seen_through_the_loader(tmp_path: Path, ctx: AwsContext, key_arn: str) -> None:
    text = LIBRARY_STACK.read_text().replace("scan_on_push: true", "scan_on_push: false")
    (tmp_path / "library.yaml").write_text(text)
    changed = spec.load_stack(tmp_path / "library.yaml")
    registry.ensure_repository.fn(spec.load_stack(LIBRARY_STACK), ctx, "frontend", key_arn)

    CALLS.reset()
    observed = registry.ensure_repository.fn(changed, ctx, "frontend", key_arn)
    assert CALLS.mutating() == {"ecr:PutImageScanningConfiguration": 1}
    assert observed.attrs["scan_on_push"] is False


def test_ensure_repairs_drift_field_by_field(stack: Stack, ctx: AwsContext, ecr: Any, key_arn: str) -> None:
    registry.ensure_repository.fn(stack, ctx, "backend", key_arn)
    ecr.put_image_tag_mutability(repositoryName="library-prod-backend", imageTagMutability="MUTABLE")
    ecr.delete_lifecycle_policy(repositoryName="library-prod-backend")

    CALLS.reset()
    registry.ensure_repository.fn(stack, ctx, "backend", key_arn)
    assert CALLS.mutating() == {"ecr:PutImageTagMutability": 1, "ecr:PutLifecyclePolicy": 1}
    assert describe(ecr, "library-prod-backend")["imageTagMutability"] == "IMMUTABLE"


def test_other_encryption_key_needs_replacement(stack: Stack, ctx: AwsContext, key_arn: str) -> None:
    registry.ensure_repository.fn(stack, ctx, "backend", key_arn)
    other = key_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"

    change = registry.plan_repository(stack, ctx, "backend", registry.find_repository(stack, ctx, "backend"), other)
    assert change.action == "replace"
    assert change.changed_fields == ["encryption"]


def test_delete_refuses_an_untagged_repository_and_leaves_it(stack: Stack, ctx: AwsContext, ecr: Any,
                                                             key_arn: str) -> None:
    ecr.create_repository(repositoryName="library-prod-backend")
    found = registry.find_repository(stack, ctx, "backend")
    assert found is not None and found.tags == {}

    with pytest.raises(NotOurs):
        registry.delete_repository.fn(found, ctx)
    with pytest.raises(NotOurs):
        registry.ensure_repository.fn(stack, ctx, "backend", key_arn)
    assert describe(ecr, "library-prod-backend")["imageTagMutability"] == "MUTABLE"
    assert registry.inventory_repositories(ctx) == []


def test_delete_removes_repository_and_missing_is_success(stack: Stack, ctx: AwsContext, ecr: Any,
                                                          key_arn: str) -> None:
    observed = registry.ensure_repository.fn(stack, ctx, "backend", key_arn)

    registry.delete_repository.fn(observed, ctx)
    assert registry.find_repository(stack, ctx, "backend") is None
    assert ecr.describe_repositories()["repositories"] == []
    registry.delete_repository.fn(observed, ctx)  # already gone: success


def test_registry_scanning_adds_only_our_filter(stack: Stack, ctx: AwsContext, ecr: Any) -> None:
    theirs = {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "billing-*",
                                                                      "filterType": "WILDCARD"}]}
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[theirs])
    assert registry.plan_registry_scanning(stack, ctx, registry.find_registry_scanning(ctx)).action == "update"

    registry.ensure_registry_scanning.fn(stack, ctx)

    conf = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert conf["scanType"] == "BASIC"
    assert conf["rules"] == [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [
        {"filter": "billing-*", "filterType": "WILDCARD"}, {"filter": "library-prod-*", "filterType": "WILDCARD"}]}]
    assert registry.plan_registry_scanning(stack, ctx, registry.find_registry_scanning(ctx)).action == "no-op"
    CALLS.reset()
    registry.ensure_registry_scanning.fn(stack, ctx)
    assert CALLS.mutating() == {}

    registry.delete_registry_scanning.fn(ctx)
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"]["rules"] == [theirs]


def test_registry_scanning_on_an_empty_registry(stack: Stack, ctx: AwsContext, ecr: Any) -> None:
    registry.ensure_registry_scanning.fn(stack, ctx)
    conf = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert conf["rules"] == [{"scanFrequency": "SCAN_ON_PUSH",
                              "repositoryFilters": [{"filter": "library-prod-*", "filterType": "WILDCARD"}]}]
    registry.delete_registry_scanning.fn(ctx)
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"]["rules"] == []


def test_registry_scanning_keeps_a_broader_rule(stack: Stack, ctx: AwsContext, ecr: Any) -> None:
    everything = {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[everything])
    CALLS.reset()
    registry.ensure_registry_scanning.fn(stack, ctx)
    assert CALLS.mutating() == {}
    registry.delete_registry_scanning.fn(ctx)
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"]["rules"] == [everything]


def test_ensure_takes_the_observed_key(stack: Stack, ctx: AwsContext, ecr: Any) -> None:
    key = kms.ensure_key.fn(ctx, "ecr")  # what the flows pass along
    registry.ensure_repository.fn(stack, ctx, "backend", key)
    assert describe(ecr, "library-prod-backend")["encryptionConfiguration"]["kmsKey"] == key.id


def test_plan_registry_covers_repositories_and_scanning(stack: Stack, ctx: AwsContext) -> None:
    assert [(c.resource, c.name, c.action) for c in registry.plan_registry(stack, ctx)] == [
        ("ecr-repository", "library-prod-backend", "create"),
        ("ecr-repository", "library-prod-frontend", "create"),
        ("ecr-registry-scanning", "library-prod-*", "update")]
    key = kms.ensure_key.fn(ctx, "ecr")
    for service in stack.services:
        registry.ensure_repository.fn(stack, ctx, service, key)
    registry.ensure_registry_scanning.fn(stack, ctx)
    assert {c.action for c in registry.plan_registry(stack, ctx)} == {"no-op"}
