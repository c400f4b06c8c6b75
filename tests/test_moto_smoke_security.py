"""What moto 5.2.5 emulates of the security calls ecsflow makes, and what it does not.

Emulated (and used by the guardrail and app-secret tests): Security Hub's EnableSecurityHub and
DescribeHub, GuardDuty detectors, AWS Config recorders and delivery channels, Secrets Manager's
GetRandomPassword / CreateSecret with a KMS key / rotation schedules.
Not emulated: Security Hub standards (BatchEnableStandards, GetEnabledStandards answer 404), so
`ensure_security_hub` stops there in moto; ecsflow keeps the real calls for AWS. When moto learns
them, the gap tests below fail: drop them and let the guardrail test subscribe FSBP for real.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from spec import Stack
from tasks import app_secrets, guardrails, kms
from tasks.aws import CALLS, AwsContext, EcsflowError
from tests.conftest import LIBRARY_STACK

pytestmark = pytest.mark.usefixtures("aws")
REGION = "ap-northeast-1"
FSBP = f"arn:aws:securityhub:{REGION}::standards/aws-foundational-security-best-practices/v/1.0.0"


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def ctx() -> AwsContext:
    from spec import load_stack

    return AwsContext.for_stack(load_stack(LIBRARY_STACK))


def test_security_hub_enables_but_its_standards_are_not_emulated() -> None:
    hub = client("securityhub")
    hub.enable_security_hub(EnableDefaultStandards=False)
    assert hub.describe_hub()["HubArn"].startswith("arn:aws:securityhub:")
    for call in (lambda: hub.batch_enable_standards(StandardsSubscriptionRequests=[{"StandardsArn": FSBP}]),
                 hub.get_enabled_standards):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404  # moto's gap, not AWS's answer


def test_ensure_security_hub_makes_the_real_calls_and_stops_at_the_standards_in_moto() -> None:
    with pytest.raises(EcsflowError, match="list the enabled Security Hub standards"):
        guardrails.ensure_security_hub.fn(ctx())
    assert guardrails.find_security_hub(ctx()) is not None  # the hub itself was enabled


def test_guardduty_and_config_guardrails_converge_and_a_second_run_changes_nothing() -> None:
    from spec import load_stack

    spec = load_stack(LIBRARY_STACK)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={"guardduty": True,
                                                                               "config_recorder": True})})
    c = ctx()
    assert {ch.action for ch in guardrails.plan_guardrails(spec, c)} == {"create"}
    detector = guardrails.ensure_guardduty.fn(c)
    assert client("guardduty").get_detector(DetectorId=detector.id)["Status"] == "ENABLED"
    key = kms.ensure_key.fn(c, guardrails.CONFIG_KMS_PURPOSE)
    assert key.attrs["policy"]["Statement"][-1]["Principal"] == {"Service": "config.amazonaws.com"}
    bucket = guardrails.ensure_config_bucket.fn(c, key)
    recorder = guardrails.ensure_config_recorder.fn(c, bucket)
    s3 = client("s3")
    enc = s3.get_bucket_encryption(Bucket=bucket.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key.id}
    assert s3.get_public_access_block(Bucket=bucket.name)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]
    assert '"aws:SecureTransport": "false"' in s3.get_bucket_policy(Bucket=bucket.name)["Policy"]
    cfg = client("config")
    assert cfg.describe_delivery_channels()["DeliveryChannels"][0]["s3BucketName"] == bucket.name
    assert cfg.describe_configuration_recorder_status()["ConfigurationRecordersStatus"][0]["recording"]
    assert recorder.name == guardrails.CONFIG_RECORDER

    CALLS.reset()
    guardrails.ensure_guardduty.fn(c)
    guardrails.ensure_config_recorder.fn(c, guardrails.ensure_config_bucket.fn(c, kms.ensure_key.fn(c, "s3")))
    assert CALLS.mutating() == {}
    assert [(ch.resource, ch.action) for ch in guardrails.plan_guardrails(spec, c)] == [
        ("guardduty detector", "no-op"), ("kms-key", "no-op"), ("s3 bucket", "no-op"), ("config recorder", "no-op")]


def rotation_lambda() -> str:
    """A stand-in rotation function (moto checks it exists; without Docker it never runs)."""
    import io
    import json
    import os
    import urllib.request
    import zipfile

    urllib.request.urlopen(urllib.request.Request(
        f"{os.environ['AWS_ENDPOINT_URL']}/moto-api/config", method="POST",
        data=json.dumps({"lambda": {"use_docker": False}}).encode(), headers={"Content-Type": "application/json"},
    )).read()
    role = client("iam").create_role(RoleName="rotation", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return None\n")
    return str(client("lambda").create_function(FunctionName="rotate-app-key", Runtime="python3.12", Role=role,
                                                Handler="index.handler", Code={"ZipFile": code.getvalue()})[
        "FunctionArn"])


def test_app_secret_is_generated_encrypted_rotated_only_with_a_lambda_and_deleted_per_env() -> None:
    from spec import load_stack

    spec = load_stack(LIBRARY_STACK)
    lam = rotation_lambda()
    spec = Stack.model_validate({**spec.model_dump(), "app_secrets": {
        "app-key": {"generate": "laravel-app-key"},
        "mail": {"generate": "password", "length": 24, "rotation_days": 30, "rotation_lambda_arn": lam}}})
    c = AwsContext.for_stack(spec)
    key = kms.ensure_key.fn(c, app_secrets.KMS_PURPOSE)
    made = {name: app_secrets.ensure_app_secret.fn(spec, c, name, key) for name in spec.app_secrets}
    sm = client("secretsmanager")
    value = sm.get_secret_value(SecretId=made["app-key"].id)["SecretString"]
    assert value.startswith("base64:") and value not in repr(made)  # the task returns the ARN, not the value
    assert len(sm.get_secret_value(SecretId=made["mail"].id)["SecretString"]) == 24
    described = {n: sm.describe_secret(SecretId=o.id) for n, o in made.items()}
    assert described["app-key"]["KmsKeyId"] in (key.id, key.attrs["key_id"])
    assert not described["app-key"].get("RotationEnabled")
    assert described["mail"]["RotationEnabled"] and described["mail"]["RotationLambdaARN"] == lam
    assert described["mail"]["RotationRules"]["AutomaticallyAfterDays"] == 30

    CALLS.reset()
    for name in spec.app_secrets:
        app_secrets.ensure_app_secret.fn(spec, c, name, key)
    assert CALLS.mutating() == {}
    assert sm.get_secret_value(SecretId=made["app-key"].id)["SecretString"] == value  # never regenerated

    app_secrets.delete_app_secret.fn(made["app-key"], c, prod=True)  # a recovery window: restorable
    assert "DeletedDate" in sm.describe_secret(SecretId=made["app-key"].id)
    assert app_secrets.inventory_app_secrets(c) == [app_secrets.find_app_secret(c, "mail")]
    restored = app_secrets.ensure_app_secret.fn(spec, c, "app-key", key)  # `up` again restores it, same value
    assert sm.get_secret_value(SecretId=restored.id)["SecretString"] == value
    app_secrets.delete_app_secret.fn(made["mail"], c, prod=False)  # elsewhere: gone at once
    with pytest.raises(ClientError):
        sm.describe_secret(SecretId=made["mail"].id)
