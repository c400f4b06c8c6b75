"""The AWS layer: where clients come from, what errors become, what is retried."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prefect.states import Completed, Failed

from spec import load_stack
from tasks.aws import (
    AwsContext,
    AwsRequestError,
    PermissionDenied,
    TransientAwsError,
    call,
    fit_name,
    retry_transient,
    translate,
)
from tests.conftest import LIBRARY_STACK


def client_error(code: str, status: int = 400, op: str = "CreateVpc") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "msg"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


@pytest.mark.parametrize(("code", "status", "kind"), [
    ("Throttling", 400, TransientAwsError), ("RequestLimitExceeded", 503, TransientAwsError),
    ("InternalError", 500, TransientAwsError), ("DependencyViolation", 400, TransientAwsError),
    ("AccessDenied", 403, PermissionDenied), ("UnauthorizedOperation", 403, PermissionDenied),
    ("InvalidParameterValue", 400, AwsRequestError), ("VpcLimitExceeded", 400, AwsRequestError),
])
def test_client_errors_become_our_errors(code: str, status: int, kind: type) -> None:
    error = translate(client_error(code, status), "create the VPC")
    assert isinstance(error, kind)
    assert str(error).startswith("create the VPC: ")
    assert code in str(error)


def test_retry_condition_retries_only_transient_errors() -> None:
    def state_of(exc: Exception) -> Any:
        return Failed(data=exc)

    assert retry_transient(None, None, state_of(TransientAwsError("slow down"))) is True
    assert retry_transient(None, None, state_of(PermissionDenied("no"))) is False
    assert retry_transient(None, None, state_of(AwsRequestError("bad"))) is False
    assert retry_transient(None, None, Completed()) is False
    # Raw boto errors that escaped a helper are judged the same way: a 5xx with an HTML body that
    # botocore cannot parse is retried, a validation error is not.
    from botocore.parsers import ResponseParserError

    assert retry_transient(None, None, state_of(ResponseParserError("invalid XML received"))) is True
    invalid = ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "no"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "CreateVpc")
    assert retry_transient(None, None, state_of(invalid)) is False


def test_names_are_cut_to_the_limit_deterministically() -> None:
    long = "a-very-long-stack-name-prod-component-with-a-long-name"
    cut = fit_name(long, 32)
    assert len(cut) == 32 and cut == fit_name(long, 32)
    assert fit_name(long + "x", 32) != cut
    assert fit_name("library-prod-db", 63) == "library-prod-db"


def test_calls_go_to_aws_endpoint_url(aws: Any) -> None:
    ctx = AwsContext.for_stack(load_stack(LIBRARY_STACK))
    vpc = call("make a VPC", ctx.ec2().create_vpc, CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    # The emulator, read by a client of the test's own, holds it: the call went to AWS_ENDPOINT_URL.
    assert boto3.client("ec2", region_name="ap-northeast-1").describe_vpcs(VpcIds=[vpc])["Vpcs"]


def test_a_credentials_block_named_in_the_stack_is_used(aws: Any, prefect_server: Any) -> None:
    from prefect_aws import AwsCredentials

    iam = boto3.client("iam", region_name="ap-northeast-1")
    iam.create_user(UserName="ecsflow-runner")
    key = iam.create_access_key(UserName="ecsflow-runner")["AccessKey"]
    AwsCredentials(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                   region_name="ap-northeast-1").save("library-runner", overwrite=True)
    stack = load_stack(LIBRARY_STACK).model_copy(
        update={"aws": load_stack(LIBRARY_STACK).aws.model_copy(update={"credentials_block": "library-runner"})})
    ctx = AwsContext.for_stack(stack)
    identity = ctx.sts().get_caller_identity()
    assert identity["Arn"].endswith(":user/ecsflow-runner")
