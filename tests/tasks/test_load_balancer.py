"""The load balancer family's certificate and bucket policy against a real moto server
(the end-to-end run is tests/test_ecs_alb.py)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
import yaml

from spec import Stack
from tasks import load_balancer
from tasks.aws import CALLS, AwsContext, EcsflowError
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


def stack(env: str = "prod", **load_balancer_settings: Any) -> Stack:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["env"] = env
    data["load_balancer"] = load_balancer_settings
    return Stack.model_validate(data)


def tags_of(arn: str) -> dict[str, str]:
    acm = boto3.client("acm", region_name=REGION)
    return {t["Key"]: t["Value"] for t in acm.list_tags_for_certificate(CertificateArn=arn)["Tags"]}


def test_a_domain_gets_a_dns_validated_certificate_once(aws: MotoServer) -> None:
    spec = stack(domain="library.example.com")
    ctx = AwsContext.for_stack(spec)
    first = load_balancer.ensure_certificate.fn(spec, ctx)
    assert first.attrs["status"] == "ISSUED" and first.attrs["validation"] == "DNS"
    assert tags_of(first.id)["ecsflow:component"] == "certificate"
    CALLS.reset()
    assert load_balancer.ensure_certificate.fn(spec, ctx).id == first.id
    assert CALLS.mutating() == {}


def test_without_a_domain_a_dev_stack_imports_a_self_signed_certificate_once(aws: MotoServer) -> None:
    spec = stack(env="dev")
    assert spec.provision_problems() == []
    ctx = AwsContext.for_stack(spec)
    first = load_balancer.ensure_certificate.fn(spec, ctx)
    cert = boto3.client("acm", region_name=REGION).describe_certificate(CertificateArn=first.id)["Certificate"]
    assert cert["Type"] == "IMPORTED" and cert["DomainName"] == "library-dev.ecsflow.invalid"
    assert tags_of(first.id)["ecsflow:env"] == "dev"
    CALLS.reset()
    assert load_balancer.ensure_certificate.fn(spec, ctx).id == first.id
    assert CALLS.mutating() == {}


def test_prod_without_a_domain_or_an_issued_certificate_is_refused(aws: MotoServer) -> None:
    assert "production HTTPS needs a real certificate" in stack().provision_problems()[0]
    missing = stack(certificate_arn="arn:aws:acm:ap-northeast-1:123456789012:certificate/0000-1111")
    with pytest.raises(EcsflowError, match="needs an issued certificate"):
        load_balancer.ensure_certificate.fn(missing, AwsContext.for_stack(missing))


def test_log_delivery_principal_is_the_regions_elb_account_or_the_service(aws: MotoServer) -> None:
    ctx = AwsContext.for_stack(stack(domain="library.example.com"))
    old = load_balancer.bucket_policy(ctx, "b")["Statement"][0]
    assert old["Principal"] == {"AWS": "arn:aws:iam::582318560864:root"}
    newer = load_balancer.bucket_policy(AwsContext(stack="library", env="prod", region="ap-southeast-4"), "b")
    assert newer["Statement"][0]["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}


def test_access_log_bucket_repairs_only_what_drifted_and_a_second_run_changes_nothing(aws: MotoServer) -> None:
    spec = stack(domain="library.example.com")
    ctx = AwsContext.for_stack(spec)
    assert load_balancer.plan_log_bucket(spec, ctx, load_balancer.find_log_bucket(ctx)).action == "create"
    bucket = load_balancer.ensure_log_bucket.fn(spec, ctx)
    assert bucket is not None and bucket.name == "library-prod-alb-logs-123456789012-ap-northeast-1"
    s3 = boto3.client("s3", region_name=REGION)
    rule = s3.get_bucket_encryption(Bucket=bucket.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}  # ELB log delivery: no SSE-KMS

    CALLS.reset()
    load_balancer.ensure_log_bucket.fn(spec, ctx)
    assert CALLS.mutating() == {}

    s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Suspended"})
    change = load_balancer.plan_log_bucket(spec, ctx, load_balancer.find_log_bucket(ctx))
    assert (change.action, [str(d) for d in change.diffs]) == ("update", ["versioning: 'Suspended' -> 'Enabled'"])
    CALLS.reset()
    load_balancer.ensure_log_bucket.fn(spec, ctx)
    assert CALLS.mutating() == {"s3:PutBucketVersioning": 1}
    assert s3.get_bucket_versioning(Bucket=bucket.name)["Status"] == "Enabled"


def test_access_logs_off_means_no_bucket(aws: MotoServer) -> None:
    spec = stack(domain="library.example.com", access_logs=False)
    ctx = AwsContext.for_stack(spec)
    assert load_balancer.ensure_log_bucket.fn(spec, ctx) is None
    change = load_balancer.plan_log_bucket(spec, ctx, None)
    assert (change.action, change.note) == ("no-op", "access logs are off")
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
