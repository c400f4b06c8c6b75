"""The fault proxy, through real boto3 clients, in front of the real moto server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from botocore.parsers import create_parser

from tests.support.faultproxy import FaultProxy, classify, error_response

REGION = "ap-northeast-1"
# botocore's `max_attempts` counts retries after the first call (max_attempts=1 retries once);
# `total_max_attempts` counts every call.
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def client(proxy_or_url: FaultProxy | str, service: str, config: Config = NO_RETRY) -> Any:
    url = proxy_or_url.url if isinstance(proxy_or_url, FaultProxy) else proxy_or_url
    return boto3.client(service, region_name=REGION, endpoint_url=url, config=config)  # type: ignore[call-overload]


@pytest.fixture
def proxy(_fault_proxy_session: FaultProxy) -> Iterator[FaultProxy]:
    """The session's proxy with fresh rules and counts, without resetting moto (for read-only calls)."""
    _fault_proxy_session.reset()
    yield _fault_proxy_session
    _fault_proxy_session.reset()


# service, operation, one call; one per protocol botocore speaks to the services we use.
CALLS: list[tuple[str, str, str, Callable[[Any], Any]]] = [
    ("ec2", "ec2", "DescribeVpcs", lambda c: c.describe_vpcs()),
    ("query", "iam", "ListRoles", lambda c: c.list_roles()),
    ("query", "rds", "DescribeDBInstances", lambda c: c.describe_db_instances()),
    ("query", "sts", "GetCallerIdentity", lambda c: c.get_caller_identity()),
    ("query", "elbv2", "DescribeLoadBalancers", lambda c: c.describe_load_balancers()),
    ("json", "ecr", "DescribeRepositories", lambda c: c.describe_repositories()),
    ("json", "kms", "ListKeys", lambda c: c.list_keys()),
    ("json", "logs", "DescribeLogGroups", lambda c: c.describe_log_groups()),
    ("json", "ecs", "ListClusters", lambda c: c.list_clusters()),
    # botocore 1.44 lists smithy-rpc-v2-cbor first for these two but still speaks JSON to them.
    ("json", "cloudwatch", "DescribeAlarms", lambda c: c.describe_alarms()),
    ("json", "resourcegroupstaggingapi", "GetResources", lambda c: c.get_resources()),
    ("rest-xml", "s3", "s3 GET", lambda c: c.list_buckets()),
]

EXPECTED: dict[tuple[str, str], tuple[str, int]] = {
    ("ec2", "throttle"): ("RequestLimitExceeded", 400),
    ("ec2", "access_denied"): ("UnauthorizedOperation", 403),
    ("ec2", "server_error"): ("InternalError", 500),
    ("ec2", "unavailable"): ("Unavailable", 503),
    ("query", "throttle"): ("Throttling", 400),
    ("query", "access_denied"): ("AccessDenied", 403),
    ("query", "server_error"): ("InternalFailure", 500),
    ("query", "unavailable"): ("ServiceUnavailable", 503),
    ("json", "throttle"): ("ThrottlingException", 400),
    ("json", "access_denied"): ("AccessDeniedException", 403),
    ("json", "server_error"): ("InternalFailure", 500),
    ("json", "unavailable"): ("ServiceUnavailableException", 503),
    ("cbor", "throttle"): ("ThrottlingException", 400),
    ("cbor", "access_denied"): ("AccessDeniedException", 403),
    ("cbor", "server_error"): ("InternalFailure", 500),
    ("cbor", "unavailable"): ("ServiceUnavailableException", 503),
    ("rest-xml", "throttle"): ("SlowDown", 503),
    ("rest-xml", "access_denied"): ("AccessDenied", 403),
    ("rest-xml", "server_error"): ("InternalError", 500),
    ("rest-xml", "unavailable"): ("ServiceUnavailable", 503),
}


@pytest.mark.parametrize("kind", ["throttle", "access_denied", "server_error", "unavailable"])
@pytest.mark.parametrize(("protocol", "service", "operation", "call"), CALLS,
                         ids=[f"{c[1]}-{c[2]}" for c in CALLS])
def test_injected_errors_parse_as_aws_errors(proxy: FaultProxy, kind: str, protocol: str, service: str,
                                             operation: str, call: Callable[[Any], Any]) -> None:
    fault_proxy = proxy
    c = client(fault_proxy, service)
    call(c)  # passes through first: the operation name is read the way the rule will see it
    assert fault_proxy.calls[operation] == 1, dict(fault_proxy.calls)
    fault_proxy.fail(operation, times=1, kind=kind)

    with pytest.raises(ClientError) as info:
        call(c)
    code, status = EXPECTED[(protocol, kind)]
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if protocol != "rest-xml":  # S3 error messages are not parsed from <ErrorResponse>
        assert operation in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["RequestId"]

    call(c)  # the rule is used up
    assert fault_proxy.calls[operation] == 3
    assert fault_proxy.faults[operation] == 1
    assert [h.protocol for h in fault_proxy.history] == [protocol] * 3
    assert [h.fault for h in fault_proxy.history] == [None, kind, None]


def test_forwards_requests_and_responses_unchanged(fault_proxy: FaultProxy) -> None:
    ec2 = client(fault_proxy, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "ecsflow:stack", "Value": "proxy"}]}])["Vpc"]
    direct = client(fault_proxy.target_url, "ec2")
    seen = direct.describe_vpcs(Filters=[{"Name": "tag:ecsflow:stack", "Values": ["proxy"]}])["Vpcs"]
    assert [v["VpcId"] for v in seen] == [vpc["VpcId"]]
    assert fault_proxy.service_calls == {"ec2:CreateVpc": 1}

    # JSON protocol bodies, and S3 (REST) bodies, HEAD and DELETE.
    kms = client(fault_proxy, "kms")
    key = kms.create_key(Description="through the proxy")["KeyMetadata"]
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Description"] == "through the proxy"
    s3 = client(fault_proxy, "s3")
    s3.create_bucket(Bucket="proxied", CreateBucketConfiguration={"LocationConstraint": REGION})
    payload = bytes(range(256)) * 1000
    s3.put_object(Bucket="proxied", Key="a/b.bin", Body=payload)
    assert s3.head_object(Bucket="proxied", Key="a/b.bin")["ContentLength"] == len(payload)
    assert s3.get_object(Bucket="proxied", Key="a/b.bin")["Body"].read() == payload
    s3.delete_object(Bucket="proxied", Key="a/b.bin")
    assert s3.list_objects_v2(Bucket="proxied")["KeyCount"] == 0
    assert fault_proxy.calls["s3 PUT"] == 2 and fault_proxy.calls["s3 HEAD"] == 1


def test_fixture_points_aws_endpoint_url_at_the_proxy(fault_proxy: FaultProxy) -> None:
    boto3.client("sts", region_name=REGION).get_caller_identity()
    assert fault_proxy.calls["GetCallerIdentity"] == 1


def test_standard_retries_absorb_a_few_throttles(fault_proxy: FaultProxy) -> None:
    fault_proxy.fail("CreateVpc", times=2, kind="throttle")
    ec2 = client(fault_proxy, "ec2", Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    ec2.create_vpc(CidrBlock="10.0.0.0/16")
    assert fault_proxy.calls["CreateVpc"] == 3
    assert fault_proxy.faults["CreateVpc"] == 2
    assert fault_proxy.pending_faults() == 0
    assert len(client(fault_proxy.target_url, "ec2").describe_vpcs()["Vpcs"]) == 2  # default VPC + ours


def test_adaptive_retries_absorb_throttles_on_json_services(fault_proxy: FaultProxy) -> None:
    fault_proxy.fail("CreateRepository", times=1, kind="throttle")
    ecr = client(fault_proxy, "ecr", Config(retries={"total_max_attempts": 5, "mode": "adaptive"}))
    ecr.create_repository(repositoryName="app")
    assert fault_proxy.faults["CreateRepository"] == 1 and fault_proxy.calls["CreateRepository"] == 2


def test_rules_run_in_order_and_until_reset(fault_proxy: FaultProxy) -> None:
    iam = client(fault_proxy, "iam")
    fault_proxy.fail("ListRoles", times=1, kind="throttle")
    fault_proxy.fail("ListRoles", times=None, kind="access_denied")
    codes = []
    for _ in range(4):
        with pytest.raises(ClientError) as info:
            iam.list_roles()
        codes.append(info.value.response["Error"]["Code"])
    assert codes == ["Throttling", "AccessDenied", "AccessDenied", "AccessDenied"]
    fault_proxy.reset_rules()
    iam.list_roles()
    assert fault_proxy.faults["ListRoles"] == 4 and fault_proxy.calls["ListRoles"] == 5


def test_service_qualified_rules_and_wildcard(fault_proxy: FaultProxy) -> None:
    ecr, rds = client(fault_proxy, "ecr"), client(fault_proxy, "rds")
    repo_arn = ecr.create_repository(repositoryName="tagged")["repository"]["repositoryArn"]
    fault_proxy.fail("ecr:ListTagsForResource", times=None, kind="throttle")
    with pytest.raises(ClientError) as info:
        ecr.list_tags_for_resource(resourceArn=repo_arn)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    # Same operation name, other service: not faulted (moto answers for itself).
    try:
        rds.list_tags_for_resource(ResourceName=f"arn:aws:rds:{REGION}:123456789012:db:none")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] != "Throttling"
    assert fault_proxy.service_calls["rds:ListTagsForResource"] == 1
    assert fault_proxy.faults["ListTagsForResource"] == 1

    fault_proxy.reset_rules()
    fault_proxy.fail("*", times=2, kind="server_error")
    for call in (lambda: ecr.describe_repositories(), lambda: rds.describe_db_instances()):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    ecr.describe_repositories()


def test_overrides_for_code_status_and_message(fault_proxy: FaultProxy) -> None:
    fault_proxy.fail("DescribeSubnets", kind="throttle", code="EC2ThrottledException", status=503,
                     message="slow down please")
    with pytest.raises(ClientError) as info:
        client(fault_proxy, "ec2").describe_subnets()
    err = info.value.response
    assert (err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]) == (
        "EC2ThrottledException", "slow down please", 503)


def test_disconnect_drops_the_connection(fault_proxy: FaultProxy) -> None:
    fault_proxy.fail("DescribeVpcs", times=1, kind="disconnect")
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client(fault_proxy, "ec2").describe_vpcs()
    fault_proxy.fail("DescribeVpcs", times=1, kind="disconnect")
    client(fault_proxy, "ec2", Config(retries={"total_max_attempts": 3, "mode": "standard"})).describe_vpcs()
    assert fault_proxy.faults["DescribeVpcs"] == 2 and fault_proxy.calls["DescribeVpcs"] == 3


def test_delay_per_operation_and_global_latency(fault_proxy: FaultProxy) -> None:
    ec2 = client(fault_proxy, "ec2")
    ec2.describe_vpcs()  # warm the connection
    fault_proxy.delay("DescribeVpcs", 0.3)
    started = time.monotonic()
    ec2.describe_vpcs()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    ec2.describe_subnets()
    assert time.monotonic() - started < 0.3

    fault_proxy.delay("DescribeVpcs", 0)
    fault_proxy.latency = 0.1
    started = time.monotonic()
    for _ in range(3):
        ec2.describe_subnets()
    assert time.monotonic() - started >= 0.3
    assert all(h.seconds >= 0.1 for h in fault_proxy.history[-3:])
    fault_proxy.reset_rules()
    assert fault_proxy.latency == 0


def test_reset_releases_held_calls_and_drops_those_whose_caller_left(fault_proxy: FaultProxy) -> None:
    fault_proxy.delay("CreateVpc", 60)
    impatient = client(fault_proxy, "ec2", Config(read_timeout=1, retries={"total_max_attempts": 1}))
    with pytest.raises(ReadTimeoutError):
        impatient.create_vpc(CidrBlock="10.1.0.0/16")  # the caller gives up and hangs up

    patient = client(fault_proxy, "ec2")
    done: list[Any] = []
    waiter = threading.Thread(target=lambda: done.append(patient.create_vpc(CidrBlock="10.2.0.0/16")))
    waiter.start()
    time.sleep(0.5)
    assert not done
    started = time.monotonic()
    fault_proxy.reset_rules()
    waiter.join(10)
    assert done and time.monotonic() - started < 5

    deadline = time.monotonic() + 5
    while len(fault_proxy.history) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(h.status for h in fault_proxy.history) == [200, 499]
    cidrs = {v["CidrBlock"] for v in client(fault_proxy.target_url, "ec2").describe_vpcs()["Vpcs"]}
    assert "10.2.0.0/16" in cidrs and "10.1.0.0/16" not in cidrs


def test_rejects_unknown_kinds(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_proxy.fail("CreateVpc", kind="explode")
    with pytest.raises(ValueError, match="at least 1"):
        fault_proxy.fail("CreateVpc", times=0)


def test_standalone_use_as_a_context_manager(moto_server: Any) -> None:
    with FaultProxy(moto_server.url) as proxy:
        proxy.fail("GetCallerIdentity", kind="access_denied")
        with pytest.raises(ClientError, match="AccessDenied"):
            client(proxy, "sts").get_caller_identity()
    with pytest.raises(EndpointConnectionError):
        client(proxy, "sts").get_caller_identity()


@pytest.mark.parametrize("kind", ["throttle", "access_denied", "server_error"])
def test_cbor_errors_parse_with_botocore(kind: str) -> None:
    """Should botocore switch CloudWatch or the tagging API to RPC v2 CBOR, the errors still parse."""
    req = classify("POST", "/service/GraniteServiceVersion20100801/operation/DescribeAlarms",
                   {"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20250101/ap-northeast-1/monitoring/"
                                     "aws4_request, SignedHeaders=host, Signature=x",
                    "smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}, b"\xa0")
    assert (req.service, req.operation, req.protocol) == ("monitoring", "DescribeAlarms", "cbor")
    status, headers, body = error_response(kind, req)
    parser: Any = create_parser("smithy-rpc-v2-cbor")
    parsed = parser.parse(
        {"status_code": status, "headers": {k.lower(): v for k, v in headers.items()}, "body": body}, None)
    assert parsed["Error"]["Code"] == EXPECTED[("cbor", kind)][0]
    assert "DescribeAlarms" in parsed["Error"]["Message"]


def test_classify_reads_query_strings_and_presigned_urls() -> None:
    req = classify("GET", "/?Action=DescribeVpcs&Version=2016-11-15&X-Amz-Credential="
                   "AKID%2F20250101%2Fap-northeast-1%2Fec2%2Faws4_request", {}, b"")
    assert (req.service, req.operation, req.protocol) == ("ec2", "DescribeVpcs", "ec2")
