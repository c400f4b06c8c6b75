"""IAM roles against a moto server: a role is read with one GetRole (its tags come with it), and an
unchanged role is read once per ensure."""

from __future__ import annotations

import json
from typing import Any

import boto3

from spec import load_stack
from tasks import iam
from tasks.aws import CALLS, AwsContext
from tests.conftest import LIBRARY_STACK

ROLE = iam.RoleSpec(component="worker", service_principal="ecs-tasks.amazonaws.com",
                    inline_policies={"logs": {"Version": "2012-10-17", "Statement": [
                        {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}]}})


def test_a_role_is_found_with_its_tags_and_an_unchanged_one_is_read_once(aws: Any) -> None:
    ctx = AwsContext.for_stack(load_stack(LIBRARY_STACK))
    made = iam.ensure_role.fn(ctx, ROLE)
    # What a user sees, read by a client of the test's own: the role, its policy and our tags.
    role = boto3.client("iam", region_name="ap-northeast-1").get_role(RoleName=ROLE.name(ctx))["Role"]
    assert {t["Key"]: t["Value"] for t in role["Tags"]} == ctx.tag_dict("worker")
    assert made.tags == ctx.tag_dict("worker") and ctx.owns(made.tags)
    assert json.loads(json.dumps(made.attrs["inline_policies"])) == ROLE.inline_policies

    CALLS.reset()
    again = iam.ensure_role.fn(ctx, ROLE)
    assert again.tags == made.tags and again.attrs == made.attrs
    assert CALLS.mutating() == {}
    # GetRole carries the tags (no ListRoleTags), and nothing written means nothing read back.
    assert CALLS.calls["iam:GetRole"] == 1
    assert CALLS.calls["iam:ListRoleTags"] == 0
