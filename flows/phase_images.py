"""Phase 2: each service's image, built, smoke-tested, pushed, scanned and recorded.

Every service's pipeline (`image {service}`: check, build, smoke test, push, scan, record)
runs beside the others; the phase needs only the ECR repositories. A service this
machine cannot build is skipped with a warning (see tasks/images.py, BUILDABILITY RULE),
unless `strict` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture, wait
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import images
from tasks.aws import AwsContext


class ImagesRun(StackRun):
    tag: str | None = Field(None, description="Tag every image with this (e.g. the CI commit SHA) instead of its "
                                              "build context's git commit SHA.")
    strict: bool = Field(False, description="Fail instead of skipping a service this machine cannot build (no "
                                            "Docker engine, app source or base image missing).")


def stack_dir(params: StackRun) -> str:
    """Build contexts are relative to the stack file."""
    return str(Path(params.stack_file).resolve().parent)


def submit_images(spec: Stack, ctx: AwsContext, repositories: dict[str, PrefectFuture[Any]], directory: str, *,
                  tag: str | None = None, strict: bool = False) -> dict[str, PrefectFuture[Any]]:
    """One pipeline per service, each waiting only for its own repository."""
    return {service: images.publish_image.submit(spec, ctx, service, repositories[service], directory,
                                                 tag=tag, strict=strict)
            for service in spec.services}


def collect(spec: Stack, futures: dict[str, PrefectFuture[Any]]) -> list[images.ImageResult]:
    """Every service's result (a failed one as its error), then the images artifact."""
    wait(list(futures.values()))
    results = []
    for service, future in futures.items():
        if future.state.is_completed():
            results.append(future.result())
        else:
            message = future.state.message or future.state.name
            results.append(images.ImageResult(service, "skipped", reason=f"FAILED: {message}"))
    publish_images_artifact(spec, results)
    return results


def publish_images_artifact(spec: Stack, results: list[images.ImageResult]) -> None:
    rows = [images.result_row(r) for r in results]
    create_table_artifact(key=f"images-{spec.name}-{spec.env}", table=rows,
                          description=f"{spec.name}-{spec.env} images: URI, digest, compressed size, build time, "
                                      f"scan")


def image_outputs(results: list[images.ImageResult]) -> dict[str, str]:
    return {r.service: r.pinned or f"not built: {r.reason}" for r in results}


@flow(name="images", description="Build, smoke-test, push and scan each service's image, side by side.")
def images_flow(params: ImagesRun = ImagesRun()) -> dict[str, str]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    repositories = {service: images.require_repository.submit(spec, ctx, service) for service in spec.services}
    futures = submit_images(spec, ctx, repositories, stack_dir(params), tag=params.tag, strict=params.strict)
    results = collect(spec, futures)
    settle([*repositories.values(), *futures.values()])
    return image_outputs(results)
