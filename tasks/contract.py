"""The resource contract every family in tasks/ follows.

    find_x(spec, ctx)      -> observed | None     read-only, by our tags or a unique name
    plan_x(spec, observed) -> Change              read-only, normalised comparison
    ensure_x(spec, ctx)    -> observed            find, create if missing, reconcile drift
    delete_x(observed, ctx)                        NotFound is success; refuses what is not ours

`Change` is what `plan` shows and what `ensure` acts on, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar, overload

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from tasks.aws import TAG_ENV, TAG_STACK, AwsContext, EcsflowError, NotOurs, retry_delays, retry_transient

Action = Literal["create", "update", "replace", "no-op", "delete"]


@dataclass(frozen=True)
class FieldDiff:
    field: str
    current: Any
    wanted: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.current!r} -> {self.wanted!r}"


@dataclass(frozen=True)
class Change:
    resource: str  # family, e.g. "subnet"
    name: str  # our name for it, e.g. "library-prod-private-a"
    action: Action
    diffs: tuple[FieldDiff, ...] = ()
    note: str = ""

    @property
    def changed_fields(self) -> list[str]:
        return [d.field for d in self.diffs]

    def as_row(self) -> dict[str, Any]:
        return {"resource": self.resource, "name": self.name, "action": self.action,
                "changes": [str(d) for d in self.diffs], "note": self.note}


def diff_fields(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    """Compare normalised values; only keys in `wanted` count (AWS fills in others)."""
    return tuple(
        FieldDiff(key, current.get(key), value)
        for key, value in sorted(wanted.items())
        if _normalise(current.get(key)) != _normalise(value)
    )


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_normalise(v) for v in value]
        return sorted(items, key=repr)
    return value


def plan_from(resource: str, name: str, observed: Observed | None, wanted: Mapping[str, Any], *,
              current: Mapping[str, Any] | None = None, immutable: Iterable[str] = ()) -> Change:
    """The usual plan: create when missing, replace when an immutable field differs, else update/no-op.
    `current` defaults to the observed attributes."""
    if observed is None:
        return Change(resource, name, "create")
    diffs = diff_fields(observed.attrs if current is None else current, wanted)
    if not diffs:
        return Change(resource, name, "no-op")
    frozen = set(immutable)
    if any(d.field in frozen for d in diffs):
        return Change(resource, name, "replace", diffs,
                      note="cannot change in place: `ecsflow down` this resource's stack or revert the setting")
    return Change(resource, name, "update", diffs)


def current_of(observed: Observed, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """What AWS holds, in the shape of `wanted`: the same attribute keys, and only our tag keys
    (tags someone else added to our resource are not drift)."""
    current = {key: observed.attrs.get(key) for key in wanted if key != "tags"}
    if "tags" in wanted:
        current["tags"] = {key: observed.tags.get(key) for key in wanted["tags"]}
    return current


def refuse_foreign(ctx: AwsContext, observed: Observed, what: str) -> None:
    """ensure_* never adopts a same-named resource someone else made."""
    if not ctx.owns(observed.tags):
        raise NotOurs(
            f"{what} already exists but lacks the tags ecsflow:stack={ctx.stack}, ecsflow:env={ctx.env}: "
            f"ecsflow did not make it and will not take it over. Delete or rename it, or tag it if it is ours."
        )


def plan_foreign(ctx: AwsContext, resource: str, name: str, found: str, remedy: str) -> Change:
    """What plan_* says of a same-named resource someone else made (ensure_* will refuse it)."""
    return Change(resource, name, "replace",
                  note=f"{found} without the tags {TAG_STACK}={ctx.stack}, {TAG_ENV}={ctx.env}; "
                       f"ecsflow will not adopt it. {remedy}")


def refuse_replace(change: Change) -> None:
    """ensure_* never deletes and recreates a resource to change an immutable field: the user decides."""
    if change.action == "replace":
        fields = ", ".join(str(d) for d in change.diffs)
        raise EcsflowError(f"{change.resource} {change.name} cannot change in place ({fields}); "
                           f"revert the stack file, or `ecsflow down` and `up` again")


def partition(region: str) -> str:
    """The ARN partition a region belongs to: China and GovCloud have their own."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def require_ours(ctx: AwsContext, tags: Mapping[str, str], what: str) -> None:
    if not ctx.owns(dict(tags)):
        raise NotOurs(f"refusing to delete {what}: it lacks the tags ecsflow:stack={ctx.stack}, "
                      f"ecsflow:env={ctx.env}, so ecsflow did not make it")


P = ParamSpec("P")
R = TypeVar("R")


@overload
def aws_task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def aws_task(*, task_run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def aws_task(fn: Callable[P, R] | None = None, /, *, task_run_name: str | None = None) -> Any:
    """Every task that calls AWS: retried only on transient errors, with jittered exponential
    backoff, and never served from Prefect's cache (a cached "ensure" would skip the very call
    that repairs drift). `task_run_name` names the resource in the UI, e.g. "ensure vpc"."""

    def wrap(func: Callable[P, R]) -> Task[P, R]:
        return task(  # type: ignore[call-overload]
            func,
            task_run_name=task_run_name,
            retries=4,
            retry_delay_seconds=retry_delays(),
            retry_jitter_factor=0.5,
            retry_condition_fn=retry_transient,
            cache_policy=NO_CACHE,
            persist_result=False,
        )

    return wrap(fn) if fn is not None else wrap


@dataclass
class Observed:
    """What AWS holds for one resource, in the shape plan/ensure compare."""

    id: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def project(current: Any, wanted: Any) -> Any:
    """`current` cut to the shape of `wanted`: keys `wanted` does not name are dropped, recursively
    (AWS answers with defaults and extras we never set). A wanted key AWS left out becomes None.
    A list is projected element by element onto the keys of all wanted elements together."""
    if isinstance(wanted, Mapping):
        if not isinstance(current, Mapping):
            return current
        return {key: project(current[key], value) if key in current else None for key, value in wanted.items()}
    if isinstance(wanted, (list, tuple)) and isinstance(current, (list, tuple)):
        shapes = [w for w in wanted if isinstance(w, Mapping)]
        if not shapes:
            return list(current)
        template: dict[str, Any] = {}
        for shape in shapes:
            for key, value in shape.items():
                template.setdefault(key, value)
        return [project(item, template) for item in current]
    return current
