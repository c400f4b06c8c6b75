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


# ---------------------------------------------------------------- the flow run's tag index


def _tagged_log_group(ctx: AwsContext, component: str, tags: dict[str, str] | None = None) -> str:
    """A log group made behind ecsflow's back (a test's own client), tagged as ecsflow tags it."""
    from tasks.logs import LogGroupSpec

    name = LogGroupSpec(component, 30).name(ctx)
    boto3.client("logs", region_name="ap-northeast-1").create_log_group(
        logGroupName=name, tags=tags if tags is not None else ctx.tag_dict(component))
    return name


def _library_ctx() -> AwsContext:
    return AwsContext.for_stack(load_stack(LIBRARY_STACK))


def test_tag_index_answers_for_the_stack_with_one_pass_per_flow_run(aws: Any, prefect_server: Any) -> None:
    from prefect import flow

    from tasks import logs
    from tasks.aws import CALLS

    ctx = _library_ctx()
    for component in ("app", "worker", "cron"):
        _tagged_log_group(ctx, component)

    @flow(name="tag-index-hit")
    def find_all() -> list[dict[str, str]]:
        found = [logs.find_log_group(ctx, logs.LogGroupSpec(c, 30)) for c in ("app", "worker", "cron")]
        return [o.tags for o in found if o is not None]

    CALLS.reset()
    tags = find_all()
    assert [t["ecsflow:component"] for t in tags] == ["app", "worker", "cron"]
    assert all(ctx.owns(t) for t in tags)
    # One GetResources pass for the whole run instead of a ListTagsForResource per group.
    assert CALLS.calls["resourcegroupstaggingapi:GetResources"] == 1
    assert CALLS.calls["logs:ListTagsForResource"] == 0
    CALLS.reset()
    find_all()  # another flow run: an index of its own, filled again
    assert CALLS.calls["resourcegroupstaggingapi:GetResources"] == 1


def test_what_the_index_lacks_is_read_from_the_resource(aws: Any, prefect_server: Any) -> None:
    """A resource made after the pass, one of another stack (the index holds only ours) and one the
    run re-tags all come from their own read, so find-by-tag stays right."""
    from prefect import flow

    from tasks import logs
    from tasks.aws import CALLS, TAG_COMPONENT

    ctx = _library_ctx()
    _tagged_log_group(ctx, "app")
    foreign = {**ctx.tag_dict("other"), "ecsflow:stack": "someone-else"}
    _tagged_log_group(ctx, "other", foreign)

    @flow(name="tag-index-miss")
    def run() -> dict[str, Any]:
        first = logs.find_log_group(ctx, logs.LogGroupSpec("app", 30))
        _tagged_log_group(ctx, "late")  # after the index was filled
        late = logs.find_log_group(ctx, logs.LogGroupSpec("late", 30))
        other = logs.find_log_group(ctx, logs.LogGroupSpec("other", 30))
        # The run itself changes a tag (through ecsflow's client): its next read must see the change.
        assert first is not None
        call("re-tag", ctx.logs().tag_resource, resourceArn=first.id, tags={TAG_COMPONENT: "renamed"})
        again = logs.find_log_group(ctx, logs.LogGroupSpec("app", 30))
        assert late is not None and other is not None and again is not None
        return {"late": late.tags, "other": other.tags, "again": again.tags}

    CALLS.reset()
    got = run()
    assert got["late"] == ctx.tag_dict("late")
    assert got["other"] == foreign and not ctx.owns(got["other"])
    assert got["again"][TAG_COMPONENT] == "renamed"
    assert CALLS.calls["resourcegroupstaggingapi:GetResources"] == 1
    assert CALLS.calls["logs:ListTagsForResource"] == 3  # late, other, and app after its re-tag


def test_no_tag_index_outside_a_flow_run(aws: Any) -> None:
    from tasks import logs
    from tasks.aws import CALLS, tag_index

    ctx = _library_ctx()
    _tagged_log_group(ctx, "app")
    CALLS.reset()
    found = logs.find_log_group(ctx, logs.LogGroupSpec("app", 30))
    assert found is not None and found.tags == ctx.tag_dict("app")
    assert tag_index(ctx) is None
    assert CALLS.calls["resourcegroupstaggingapi:GetResources"] == 0
    assert CALLS.calls["logs:ListTagsForResource"] == 1


def test_tag_index_reads_every_page(aws: Any, prefect_server: Any) -> None:
    """More resources than a page holds (100 on AWS; moto also cuts a page at 100 tags): the last
    page's resources come from the index too."""
    from prefect import flow

    from tasks import logs
    from tasks.aws import CALLS, tag_index

    ctx = _library_ctx()
    components = [f"svc-{i:03d}" for i in range(110)]
    for component in components:
        _tagged_log_group(ctx, component)

    @flow(name="tag-index-pages")
    def run() -> tuple[int, dict[str, str]]:
        index = tag_index(ctx)
        assert index is not None
        last = logs.find_log_group(ctx, logs.LogGroupSpec(components[-1], 30))
        assert last is not None
        return len(index), last.tags

    CALLS.reset()
    size, tags = run()
    assert size == 110 and tags == ctx.tag_dict(components[-1])
    assert CALLS.calls["resourcegroupstaggingapi:GetResources"] >= 2
    assert CALLS.calls["logs:ListTagsForResource"] == 0
