"""Phase 1c: the ECR repositories the images phase pushes to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import kms, registry
from tasks.aws import AwsContext


@dataclass
class RegistryFutures:
    repositories: dict[str, PrefectFuture[Any]]
    scanning: PrefectFuture[Any]

    def all(self) -> list[PrefectFuture[Any]]:
        return [*self.repositories.values(), self.scanning]


def submit_registry(spec: Stack, ctx: AwsContext, ecr_key: PrefectFuture[Any]) -> RegistryFutures:
    return RegistryFutures(
        repositories={
            service: registry.ensure_repository.submit(spec, ctx, service, ecr_key) for service in spec.services
        },
        scanning=registry.ensure_registry_scanning.submit(spec, ctx),
    )


@flow(name="registry", description="ECR repositories: immutable tags, scan on push, KMS, lifecycle policy.")
def registry_flow(params: StackRun = StackRun()) -> dict[str, str]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    futures = submit_registry(spec, ctx, kms.ensure_key.submit(ctx, "ecr"))
    settle(futures.all())
    return {service: f.result().attrs["uri"] for service, f in futures.repositories.items()}
