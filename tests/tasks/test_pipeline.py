"""GitHub's OIDC provider and the CI role against a real moto server: what AWS holds is read
back with boto3 and checked (who may assume the role, what it may do), and parliament reviews
the role's policies."""

from __future__ import annotations

import json
import warnings
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

import spec
from spec import Stack
from tasks import iam, pipeline
from tasks.aws import CALLS, AwsContext, EcsflowError, NotOurs
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"
PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"


@pytest.fixture
def iam_client(aws: MotoServer) -> Any:
    return boto3.client("iam", region_name=REGION)


def with_pipeline(stack: Stack, **changes: Any) -> Stack:
    assert stack.pipeline is not None
    return stack.model_copy(update={"pipeline": stack.pipeline.model_copy(update=changes)})


def ensure_all(stack: Stack, ctx: AwsContext) -> tuple[Any, Any]:
    provider = pipeline.ensure_oidc_provider.fn(stack, ctx)
    role = iam.ensure_role.fn(ctx, pipeline.ci_role(stack, ctx))
    return provider, role


def parliament_findings(policy: dict[str, Any]) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources, deprecated
        from parliament import analyze_policy_string

        return [f"{f.issue}: {f.detail}" for f in analyze_policy_string(json.dumps(policy)).findings]


def test_only_the_named_repository_branch_may_assume_the_ci_role(stack: Stack, ctx: AwsContext,
                                                                   iam_client: Any) -> None:
    assert pipeline.plan_pipeline(stack, ctx)[0].action == "create"
    provider, role = ensure_all(stack, ctx)

    got = iam_client.get_open_id_connect_provider(OpenIDConnectProviderArn=PROVIDER_ARN)
    assert provider.id == PROVIDER_ARN
    assert got["Url"] == "token.actions.githubusercontent.com"
    assert got["ClientIDList"] == ["sts.amazonaws.com"]
    assert got["ThumbprintList"]  # AWS ignores them for GitHub, but the API takes a list
    tags = {t["Key"]: t["Value"] for t in got["Tags"]}
    assert tags["ecsflow:stack"] == "library" and tags["ecsflow:env"] == "prod"

    data = iam_client.get_role(RoleName="library-prod-ci")["Role"]
    assert data["Path"] == "/ecsflow/library-prod/"
    assert role.id == data["Arn"]
    trust = data["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [{
        "Sid": "GitHubActionsOfOneBranch",
        "Effect": "Allow",
        "Principal": {"Federated": PROVIDER_ARN},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": "repo:example-org/library-app:ref:refs/heads/main",
        }},
    }]
    assert "*" not in json.dumps(trust), "no wildcard may widen who assumes the role"


def test_the_ci_role_may_push_to_the_stacks_repositories_and_nothing_else(stack: Stack, ctx: AwsContext,
                                                                          iam_client: Any) -> None:
    ensure_all(stack, ctx)
    assert iam_client.list_attached_role_policies(RoleName="library-prod-ci")["AttachedPolicies"] == []
    assert iam_client.list_role_policies(RoleName="library-prod-ci")["PolicyNames"] == ["ecr-push"]
    policy = iam_client.get_role_policy(RoleName="library-prod-ci", PolicyName="ecr-push")["PolicyDocument"]
    scoped, login = policy["Statement"]
    assert sorted(scoped["Resource"]) == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/library-prod-backend",
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/library-prod-frontend",
    ]
    assert all(a.startswith("ecr:") and "*" not in a for a in scoped["Action"])
    assert not {"ecr:DeleteRepository", "ecr:SetRepositoryPolicy", "ecr:BatchDeleteImage"} & set(scoped["Action"])
    assert login == {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken",
                     "Resource": "*"}
    assert parliament_findings(policy) == []
    # The trust policy, with two documented ignores: parliament audits identity policies, so a trust
    # policy's missing Resource is MALFORMED to it, and its list of federation sources (Cognito, Google,
    # ...) predates IAM OIDC providers such as GitHub's. Anything else it finds fails the test.
    trust = iam_client.get_role(RoleName="library-prod-ci")["Role"]["AssumeRolePolicyDocument"]
    issues = {finding.split(":")[0] for finding in parliament_findings(trust)}
    assert issues <= {"MALFORMED", "UNKNOWN_FEDERATION_SOURCE"}, parliament_findings(trust)


def test_second_run_makes_no_mutating_call(stack: Stack, ctx: AwsContext) -> None:
    ensure_all(stack, ctx)
    CALLS.reset()
    ensure_all(stack, ctx)
    assert [c.action for c in pipeline.plan_pipeline(stack, ctx)] == ["no-op", "no-op"]
    assert CALLS.mutating() == {}


def test_a_new_branch_rewrites_the_trust_policy(stack: Stack, ctx: AwsContext, iam_client: Any) -> None:
    ensure_all(stack, ctx)
    release = with_pipeline(stack, branch="release/v2")
    change = pipeline.plan_pipeline(release, ctx)[1]
    assert change.action == "update" and change.changed_fields == ["trust_policy"]
    CALLS.reset()
    ensure_all(release, ctx)
    assert CALLS.mutating() == {"iam:UpdateAssumeRolePolicy": 1}
    trust = iam_client.get_role(RoleName="library-prod-ci")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == \
        "repo:example-org/library-app:ref:refs/heads/release/v2"


def test_existing_mode_never_creates_and_uses_a_foreign_provider_as_it_is(stack: Stack, ctx: AwsContext,
                                                                          iam_client: Any) -> None:
    existing = with_pipeline(stack, oidc_provider="existing")
    with pytest.raises(EcsflowError, match="oidc_provider is `existing`"):
        pipeline.ensure_oidc_provider.fn(existing, ctx)
    assert iam_client.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []

    iam_client.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com",
                                               ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40])
    for mode in (existing, stack):  # `create` also takes an existing provider as it is
        CALLS.reset()
        found = pipeline.ensure_oidc_provider.fn(mode, ctx)
        assert found.id == PROVIDER_ARN and CALLS.mutating() == {}
        assert "outside ecsflow" in pipeline.plan_pipeline(mode, ctx)[0].note
    assert iam_client.get_open_id_connect_provider(OpenIDConnectProviderArn=PROVIDER_ARN)["Tags"] == []
    assert pipeline.inventory_pipeline(ctx) == [], "a provider without our tags is not the stack's to delete"


def test_a_foreign_provider_without_the_sts_audience_is_refused(stack: Stack, ctx: AwsContext,
                                                                 iam_client: Any) -> None:
    iam_client.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com",
                                               ClientIDList=["some-other-audience"], ThumbprintList=["0" * 40])
    with pytest.raises(EcsflowError, match="add-client-id-to-open-id-connect-provider"):
        pipeline.ensure_oidc_provider.fn(stack, ctx)
    got = iam_client.get_open_id_connect_provider(OpenIDConnectProviderArn=PROVIDER_ARN)
    assert got["ClientIDList"] == ["some-other-audience"] and got["Tags"] == []


def test_teardown_deletes_role_then_provider(stack: Stack, ctx: AwsContext, iam_client: Any) -> None:
    ensure_all(stack, ctx)
    providers = pipeline.inventory_pipeline(ctx)
    roles = [r for r in iam.inventory_roles(ctx) if r.name == "library-prod-ci"]
    assert [p.id for p in providers] == [PROVIDER_ARN] and len(roles) == 1

    for role in roles:
        iam.delete_role.fn(role, ctx)
    assert pipeline.delete_oidc_provider.fn(providers[0], ctx) is None
    assert iam_client.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    with pytest.raises(ClientError):
        iam_client.get_role(RoleName="library-prod-ci")
    assert pipeline.delete_oidc_provider.fn(providers[0], ctx) is None, "gone already is success"


def test_provider_stays_while_another_stacks_role_trusts_it(stack: Stack, ctx: AwsContext, iam_client: Any) -> None:
    provider, _ = ensure_all(stack, ctx)
    other = stack.model_copy(update={"name": "shop"})
    other_ctx = AwsContext.for_stack(other)
    iam.ensure_role.fn(other_ctx, pipeline.ci_role(other, other_ctx))

    reason = pipeline.delete_oidc_provider.fn(provider, ctx)
    assert reason is not None and "shop-prod-ci" in reason
    assert iam_client.get_open_id_connect_provider(OpenIDConnectProviderArn=PROVIDER_ARN)["Url"]


def test_delete_refuses_what_lacks_our_tags(stack: Stack, ctx: AwsContext, iam_client: Any) -> None:
    iam_client.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com",
                                               ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40])
    foreign = pipeline.find_oidc_provider(ctx)
    assert foreign is not None
    with pytest.raises(NotOurs):
        pipeline.delete_oidc_provider.fn(foreign, ctx)
    iam_client.create_role(RoleName="library-prod-ci", Path="/ecsflow/library-prod/",
                           AssumeRolePolicyDocument=json.dumps(pipeline.ci_role(stack, ctx).trust_policy(ctx)))
    role = iam.find_role(ctx, pipeline.ci_role(stack, ctx))
    assert role is not None
    with pytest.raises(NotOurs):
        iam.delete_role.fn(role, ctx)
    assert iam_client.get_role(RoleName="library-prod-ci")["Role"]
    assert iam_client.list_open_id_connect_providers()["OpenIDConnectProviderList"]


def test_moto_lacks_add_client_id_to_open_id_connect_provider(aws: MotoServer, iam_client: Any) -> None:
    """ensure keeps the real call (it adds the sts audience to our own provider when someone removed it);
    moto 5.2.5 does not implement it. When this test fails, moto caught up: test that path for real."""
    arn = iam_client.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com",
                                                     ClientIDList=["x"], ThumbprintList=["0" * 40])
    once = boto3.client("iam", region_name=REGION, config=Config(retries={"max_attempts": 1}))
    with pytest.raises((ClientError, ResponseParserError)):  # moto answers an HTML page with HTTP 500
        once.add_client_id_to_open_id_connect_provider(
            OpenIDConnectProviderArn=arn["OpenIDConnectProviderArn"], ClientID="sts.amazonaws.com")


@pytest.mark.parametrize(("pipeline_section", "message"), [
    ({"github_repository": "example-org/library-app/extra"}, "pipeline.github_repository: .* must be owner/name"),
    ({"github_repository": "-org/app"}, "pipeline.github_repository"),
    ({"github_repository": "example-org/library-app", "branch": "feature/*"}, "pipeline.branch: .*no wildcards"),
    ({"github_repository": "example-org/library-app", "branch": "refs/heads/main"}, "pipeline.branch"),
    ({"github_repository": "example-org/library-app", "write_github_settings": True},
     "pipeline: write_github_settings needs github_token_block"),
    ({"github_repository": "example-org/library-app", "oidc_provider": "maybe"}, "pipeline.oidc_provider"),
])
def test_a_bad_pipeline_section_is_refused_with_the_field_and_exit_2(
        tmp_path: Any, capsys: pytest.CaptureFixture[str], pipeline_section: dict[str, Any], message: str) -> None:
    import yaml

    from ecsflow.cli import main

    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["pipeline"] = pipeline_section
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(spec.StackFileError, match=message):
        spec.load_stack(path)
    assert main(["plan", "--stack", str(path)]) == 2
    assert "pipeline" in capsys.readouterr().err
