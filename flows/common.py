"""What every flow shares: its parameter model and how it turns a stack file into (spec, ctx)."""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectFuture, wait
from pydantic import BaseModel, Field

from spec import Stack, load_stack
from tasks.aws import AwsContext


class StackRun(BaseModel):
    """Which stack a flow acts on. A pydantic model, so the Prefect UI renders it as a form."""

    stack_file: str = Field("stacks/library.yaml", description="Path of the stack file, as the runner sees it.")


def open_stack(params: StackRun) -> tuple[Stack, AwsContext]:
    spec = load_stack(params.stack_file)
    return spec, AwsContext.for_stack(spec)


def settle(futures: list[PrefectFuture[Any]]) -> None:
    """Wait for every future, then raise the first failure: a failed task must fail the flow,
    but only after its siblings have finished (no half-made resource left mid-call)."""
    wait(futures)
    # Root causes first: a task whose upstream failed never ran, and its error says only that.
    for future in sorted(futures, key=lambda f: not (f.state.is_failed() or f.state.is_crashed())):
        future.result()
