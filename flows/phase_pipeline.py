"""Phase: GitHub Actions' way into AWS. The account's OIDC provider for GitHub, the CI role that
pushes images to the stack's repositories (trusted by one repository's one branch), and, when the
stack asks, the repository's Actions variables and secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import iam, pipeline
from tasks.aws import AwsContext, EcsflowError
from tasks.github_settings import write_github_settings


@dataclass
class PipelineFutures:
    provider: PrefectFuture[Any]
    role: PrefectFuture[Any]
    settings: PrefectFuture[Any] | None

    def all(self) -> list[PrefectFuture[Any]]:
        return [self.provider, self.role, *([self.settings] if self.settings else [])]


def submit_pipeline(spec: Stack, ctx: AwsContext,
                    repositories: dict[str, PrefectFuture[Any]] | PrefectFuture[Any] | None) -> PipelineFutures:
    """The role's trust policy names the provider, so it follows it; its policy names the repositories
    by ARN and needs nothing else. The Actions settings name the role and the repositories' URIs."""
    assert spec.pipeline is not None
    provider = pipeline.ensure_oidc_provider.submit(spec, ctx)
    role = iam.ensure_role.submit(ctx, pipeline.ci_role(spec, ctx), wait_for=[provider])
    settings = (write_github_settings.submit(spec, ctx, role, repositories)
                if spec.pipeline.write_github_settings else None)
    return PipelineFutures(provider, role, settings)


def pipeline_outputs(futures: PipelineFutures) -> dict[str, Any]:
    return {"ci_role_arn": futures.role.result().id, "github_oidc_provider": futures.provider.result().id}


@flow(name="pipeline", description="GitHub OIDC provider and the CI role (one repository's branch may push the "
      "stack's images); optionally the repository's Actions settings.")
def pipeline_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    if spec.pipeline is None:
        raise EcsflowError(f"{params.stack_file} has no `pipeline:` section: add one with github_repository: "
                           f"owner/name (see docs/github.md)")
    # Alone, the phase finds the repositories the registry phase made; `up` hands over its own futures.
    repositories = pipeline.find_repositories.submit(spec, ctx) if spec.pipeline.write_github_settings else None
    futures = submit_pipeline(spec, ctx, repositories)
    settle([*([repositories] if repositories else []), *futures.all()])
    outputs = pipeline_outputs(futures)
    if futures.settings is not None:
        outputs["github_settings"] = futures.settings.result()
    return outputs
