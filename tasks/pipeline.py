"""The AWS side of GitHub Actions: the account's OIDC provider for GitHub and the stack's CI role.

The deploy path (docs/github.md): a pull request runs the app's tests; a push to the stack's
branch runs them again, then one Actions job assumes the CI role through GitHub's OIDC token,
builds, scans, signs and pushes each service's image to the stack's ECR repositories (tag = the
commit SHA), and a last job posts a signed push event to the webhook receiver, which starts
`deploy_app` for that SHA (the image is already in ECR, so the flow rolls it out without
building). So the CI role may push to the stack's repositories, and nothing else: no ECS, no
IAM, no secrets. It trusts exactly one repository's one branch (StringEquals on `sub`).

The OIDC provider is one per account for token.actions.githubusercontent.com, shared by every
stack (and anything else) in the account, so:
- with `oidc_provider: create`, ensure makes it when missing, tagged as this stack's; when it
  exists already (another stack's, or made by hand) it is used as it is, never changed, and
  must accept the `sts.amazonaws.com` audience;
- with `oidc_provider: existing`, ecsflow never creates, changes or deletes it;
- delete removes it only when it carries this stack's tags *and* no other role in the account
  trusts it; otherwise it stays (the result says why) and the last stack using it removes it.

The CI role is an ordinary role of the stack (tasks/iam.py: under `/ecsflow/{stack}-{env}/`,
tagged, component `ci`), so the IAM family's inventory lists it and teardown deletes it with
the stack's other roles, before the provider.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from spec import Stack
from tasks import registry
from tasks.aws import TAG_ENV, TAG_STACK, AwsContext, EcsflowError, call, call_or_none, progress, tag_map
from tasks.contract import Change, FieldDiff, Observed, aws_task, require_ours
from tasks.iam import RoleSpec, find_role, plan_role
from tasks.kms import partition

OIDC_HOST = "token.actions.githubusercontent.com"
OIDC_URL = f"https://{OIDC_HOST}"
AUDIENCE = "sts.amazonaws.com"
# AWS no longer checks these for GitHub (it trusts GitHub's IdP through its own CA library), but
# CreateOpenIDConnectProvider still takes a list: GitHub's two published intermediate thumbprints.
THUMBPRINTS = ("6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd")
PROVIDER_RESOURCE = "iam oidc provider"
PROVIDER_COMPONENT = "github-oidc"
CI_COMPONENT = "ci"
ECR_POLICY = "ecr-push"

# What `docker push` (and cosign, which also reads the manifest back and pushes its signature and
# attestation beside the image) needs on a repository, plus DescribeImages/DescribeImageScanFindings
# to skip a tag that is already there and to read the scan-on-push result.
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImageScanFindings",
    "ecr:DescribeImages",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)


# ---------------------------------------------------------------- the CI role


@dataclass(frozen=True)
class CiRoleSpec(RoleSpec):
    """A role assumed with GitHub's OIDC token (AssumeRoleWithWebIdentity), not by an AWS service."""

    repository: str = ""
    branch: str = "main"

    def subject(self) -> str:
        return f"repo:{self.repository}:ref:refs/heads/{self.branch}"

    def trust_policy(self, ctx: AwsContext) -> dict[str, Any]:
        # StringEquals on both claims: one repository's one branch, no wildcards. A job with an
        # `environment:` gets another `sub` (repo:...:environment:NAME) and is refused too.
        return {
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "GitHubActionsOfOneBranch",
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn(ctx)},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    f"{OIDC_HOST}:aud": AUDIENCE,
                    f"{OIDC_HOST}:sub": self.subject(),
                }},
            }],
        }


def provider_arn(ctx: AwsContext) -> str:
    return f"arn:{partition(ctx.region)}:iam::{ctx.account_id()}:oidc-provider/{OIDC_HOST}"


def repository_arns(spec: Stack, ctx: AwsContext) -> list[str]:
    base = f"arn:{partition(ctx.region)}:ecr:{ctx.region}:{ctx.account_id()}:repository/"
    return [base + registry.repository_name(ctx, service) for service in sorted(spec.services)]


def ecr_push_policy(spec: Stack, ctx: AwsContext) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PushToTheStacksRepositories",
                "Effect": "Allow",
                "Action": list(ECR_PUSH_ACTIONS),
                "Resource": repository_arns(spec, ctx),
            },
            {
                # The one ECR action without a resource: the registry login token. AWS accepts only "*".
                "Sid": "RegistryLogin",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
        ],
    }


def ci_role(spec: Stack, ctx: AwsContext) -> CiRoleSpec:
    pipeline = _pipeline(spec)
    return CiRoleSpec(
        component=CI_COMPONENT,
        service_principal="",
        inline_policies={ECR_POLICY: ecr_push_policy(spec, ctx)},
        description=f"GitHub Actions of {pipeline.github_repository}@{pipeline.branch}: push images of "
                    f"{ctx.prefix}",
        repository=pipeline.github_repository,
        branch=pipeline.branch,
    )


def _pipeline(spec: Stack) -> Any:
    if spec.pipeline is None:
        raise EcsflowError(f"{spec.name}-{spec.env} has no `pipeline:` section in its stack file; add one with "
                           f"github_repository: owner/name to set up GitHub Actions")
    return spec.pipeline


def find_ci_role(spec: Stack, ctx: AwsContext) -> Observed | None:
    return find_role(ctx, ci_role(spec, ctx))


# ---------------------------------------------------------------- the OIDC provider


def find_oidc_provider(ctx: AwsContext) -> Observed | None:
    """The account's provider for token.actions.githubusercontent.com (whoever made it), or None."""
    iam = ctx.iam()
    listed = call("list the IAM OIDC providers", iam.list_open_id_connect_providers)
    arn = next((p["Arn"] for p in listed.get("OpenIDConnectProviderList", [])
                if p.get("Arn", "").endswith(f":oidc-provider/{OIDC_HOST}")), None)
    if arn is None:
        return None
    got = call_or_none(f"read the OIDC provider {OIDC_HOST}", iam.get_open_id_connect_provider,
                       OpenIDConnectProviderArn=arn)
    if got is None:
        return None
    return Observed(id=arn, name=OIDC_HOST, tags=tag_map(got.get("Tags")),
                    attrs={"url": got.get("Url"), "client_ids": sorted(got.get("ClientIDList", [])),
                           "thumbprints": sorted(got.get("ThumbprintList", []))})


def plan_oidc_provider(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    mode = _pipeline(spec).oidc_provider
    if observed is None:
        if mode == "existing":
            return Change(PROVIDER_RESOURCE, OIDC_HOST, "create",
                          note="missing, and pipeline.oidc_provider is `existing`: `up` will stop here; create "
                               "it, or set oidc_provider: create")
        return Change(PROVIDER_RESOURCE, OIDC_HOST, "create")
    if AUDIENCE not in observed.attrs.get("client_ids", []):
        if mode == "create" and ctx.owns(observed.tags):
            return Change(PROVIDER_RESOURCE, OIDC_HOST, "update",
                          (FieldDiff("client_ids", observed.attrs.get("client_ids"),
                                     sorted({*observed.attrs.get("client_ids", []), AUDIENCE})),))
        return Change(PROVIDER_RESOURCE, OIDC_HOST, "update",
                      note=f"the provider does not accept the audience {AUDIENCE} and is not this stack's: "
                           f"`up` will stop here; add the audience to it (aws iam "
                           f"add-client-id-to-open-id-connect-provider)")
    if mode == "create" and ctx.owns(observed.tags):
        missing = {k: v for k, v in ctx.tag_dict(PROVIDER_COMPONENT).items() if observed.tags.get(k) != v}
        if missing:
            return Change(PROVIDER_RESOURCE, OIDC_HOST, "update",
                          (FieldDiff("tags", {k: observed.tags.get(k) for k in missing}, missing),))
        return Change(PROVIDER_RESOURCE, OIDC_HOST, "no-op")
    owner = observed.tags.get(TAG_STACK)
    who = f"by stack {owner}-{observed.tags.get(TAG_ENV)}" if owner else "outside ecsflow"
    return Change(PROVIDER_RESOURCE, OIDC_HOST, "no-op", note=f"shared, made {who}: used as it is")


def _provider_tags(ctx: AwsContext) -> list[Any]:
    return ctx.tags(PROVIDER_COMPONENT)


@aws_task(task_run_name="ensure oidc provider github")
def ensure_oidc_provider(spec: Stack, ctx: AwsContext) -> Observed:
    """Find the account's GitHub OIDC provider, or make it (`oidc_provider: create`)."""
    iam = ctx.iam()
    observed = find_oidc_provider(ctx)
    change = plan_oidc_provider(spec, ctx, observed)
    if observed is None:
        if _pipeline(spec).oidc_provider == "existing":
            raise EcsflowError(f"pipeline.oidc_provider is `existing` but the account has no OIDC provider for "
                               f"{OIDC_URL}: create it (IAM > Identity providers, audience {AUDIENCE}) or set "
                               f"pipeline.oidc_provider: create")
        made = call(f"create the OIDC provider {OIDC_HOST}", iam.create_open_id_connect_provider,
                    Url=OIDC_URL, ClientIDList=[AUDIENCE], ThumbprintList=list(THUMBPRINTS),
                    Tags=_provider_tags(ctx))
        return Observed(id=made["OpenIDConnectProviderArn"], name=OIDC_HOST, tags=ctx.tag_dict(PROVIDER_COMPONENT),
                        attrs={"url": OIDC_HOST, "client_ids": [AUDIENCE], "thumbprints": sorted(THUMBPRINTS)})
    if change.action == "no-op":
        if change.note:
            progress(f"OIDC provider {OIDC_HOST}: {change.note}")
        return observed
    if not change.diffs:  # not ours and lacking our audience: we do not change someone else's provider
        raise EcsflowError(f"OIDC provider {OIDC_HOST}: {change.note}")
    wanted = {d.field: d.wanted for d in change.diffs}
    if "client_ids" in wanted:
        call(f"add the audience {AUDIENCE} to {OIDC_HOST}", iam.add_client_id_to_open_id_connect_provider,
             OpenIDConnectProviderArn=observed.id, ClientID=AUDIENCE)
        observed.attrs["client_ids"] = wanted["client_ids"]
    if "tags" in wanted:
        call(f"tag the OIDC provider {OIDC_HOST}", iam.tag_open_id_connect_provider,
             OpenIDConnectProviderArn=observed.id, Tags=_provider_tags(ctx))
        observed.tags.update(wanted["tags"])
    return observed


def roles_trusting(ctx: AwsContext, arn: str) -> list[str]:
    """Names of the account's roles whose trust policy names this provider as a federated principal."""
    iam = ctx.iam()
    names = []
    pages = iam.get_paginator("list_roles").paginate()
    for page in call("list the account's IAM roles", lambda: list(pages)):
        for role in page["Roles"]:
            raw: Any = role.get("AssumeRolePolicyDocument") or {}
            doc: dict[str, Any] = json.loads(unquote(raw)) if isinstance(raw, str) else raw
            statements = doc.get("Statement", [])
            for statement in statements if isinstance(statements, list) else [statements]:
                federated = (statement.get("Principal") or {}).get("Federated", [])
                if arn in ([federated] if isinstance(federated, str) else federated):
                    names.append(role["RoleName"])
                    break
    return sorted(names)


@aws_task(task_run_name="delete oidc provider {observed.name}")
def delete_oidc_provider(observed: Observed, ctx: AwsContext) -> str | None:
    """Delete the provider if it is this stack's and no role (of any stack) still trusts it.
    Returns None when deleted (or already gone), else why it stays."""
    require_ours(ctx, observed.tags, f"OIDC provider {observed.name}")
    ci_name = ctx.name(CI_COMPONENT, limit=64)
    others = [name for name in roles_trusting(ctx, observed.id) if name != ci_name]
    if others:
        reason = (f"OIDC provider {observed.name} kept: the roles {', '.join(others)} still trust it (it is shared "
                  f"by the account); the last stack using it deletes it, or delete it by hand")
        progress(reason)
        return reason
    call_or_none(f"delete the OIDC provider {observed.name}", ctx.iam().delete_open_id_connect_provider,
                 OpenIDConnectProviderArn=observed.id)
    return None


# ---------------------------------------------------------------- the family


def plan_pipeline(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Read-only: the provider and the CI role (nothing when the stack has no pipeline section)."""
    if spec.pipeline is None:
        return []
    role = ci_role(spec, ctx)
    return [plan_oidc_provider(spec, ctx, find_oidc_provider(ctx)), plan_role(ctx, role, find_role(ctx, role))]


def inventory_pipeline(ctx: AwsContext) -> list[Observed]:
    """The OIDC provider when it carries this stack's tags (the CI role is listed with the IAM roles)."""
    found = find_oidc_provider(ctx)
    return [found] if found is not None and ctx.owns(found.tags) else []



@aws_task(task_run_name="find repositories for the pipeline")
def find_repositories(spec: Stack, ctx: AwsContext) -> dict[str, Observed]:
    """The stack's ECR repositories (the registry phase makes them); the Actions settings name them."""
    found = {service: registry.find_repository(spec, ctx, service) for service in sorted(spec.services)}
    missing = [registry.repository_name(ctx, s) for s, repo in found.items() if repo is None]
    if missing:
        raise EcsflowError(f"the repositories {', '.join(missing)} do not exist yet: run the registry phase "
                           f"(`ecsflow up`) before writing the GitHub settings")
    return {service: repo for service, repo in found.items() if repo is not None}
