"""`ecsflow plan`: every family's find + plan, read-only, published as a markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import StackRun, open_stack
from tasks import (
    app_secrets,
    cluster,
    cost,
    database,
    dbinit,
    edge,
    guardrails,
    kms,
    load_balancer,
    network,
    pipeline,
    registry,
    services,
)
from tasks.aws import retry_delays, retry_transient
from tasks.contract import Change

FAMILIES = {"kms": kms.plan_keys, "network": network.plan_network, "database": database.plan_database,
            "registry": registry.plan_registry, "load_balancer": load_balancer.plan_load_balancer_family,
            "cluster": cluster.plan_cluster_family, "services": services.plan_services,
            "app_secrets": app_secrets.plan_app_secrets, "dbinit": dbinit.plan_dbinit,
            "guardrails": guardrails.plan_guardrails,
            "edge": edge.plan_edge}


def _plan_monitoring(spec: Any, ctx: Any) -> list[Change]:
    from tasks import monitoring

    return monitoring.plan_monitoring(spec, ctx)


FAMILIES["monitoring"] = _plan_monitoring
FAMILIES["pipeline"] = pipeline.plan_pipeline  # GitHub OIDC provider and CI role; none without `pipeline:`


@task(task_run_name="plan {family}", retries=3, retry_delay_seconds=retry_delays(),
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def plan_family(family: str, spec: Any, ctx: Any) -> list[Change]:
    return list(FAMILIES[family](spec, ctx))


@flow(name="plan", description="Show what `up` would change: resource, action and changed fields. Read-only.")
def plan_flow(params: StackRun = StackRun()) -> list[dict[str, Any]]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    futures = [plan_family.submit(family, spec, ctx) for family in FAMILIES]
    changes = [change for f in futures for change in f.result()]
    rows = [c.as_row() for c in changes]
    markdown = plan_markdown(ctx.prefix, changes) + "\n" + cost.render_markdown(cost.estimate(spec, ctx.region))
    create_markdown_artifact(key=f"plan-{ctx.prefix}", markdown=markdown, description=f"Plan for {ctx.prefix}")
    return rows


def plan_markdown(prefix: str, changes: list[Change]) -> str:
    pending = [c for c in changes if c.action != "no-op"]
    lines = [f"# Plan for {prefix}", "",
             f"{len(pending)} to change, {len(changes) - len(pending)} unchanged.", "",
             "| resource | name | action | changed fields |", "|---|---|---|---|"]
    for c in pending:
        fields = "<br>".join(str(d) for d in c.diffs) or c.note
        lines.append(f"| {c.resource} | {c.name} | **{c.action}** | {fields} |")
    return "\n".join(lines) + "\n"
