"""The ECS cluster: Fargate and Fargate Spot capacity providers with the stack's default
strategy, Container Insights, ECS Exec session logging to a KMS-encrypted log group, tags.

The cluster is found by its unique name (`{stack}-{env}-cluster`); a deleted cluster stays
visible as INACTIVE for a while and counts as missing. Settings and the Exec logging
configuration are changed with UpdateCluster, the capacity providers and strategy with
PutClusterCapacityProviders, each only when what AWS returns differs.
"""

from __future__ import annotations

from typing import Any

from spec import Stack
from tasks import kms, logs
from tasks.aws import AwsContext, EcsflowError, NotOurs, call, call_or_none
from tasks.contract import Change, Observed, aws_task, current_of, plan_from, project, require_ours

RESOURCE = "ecs cluster"
COMPONENT = "cluster"
EXEC_LOG_COMPONENT = "ecs-exec"
LIVE_STATES = {"ACTIVE", "PROVISIONING"}


def cluster_name(ctx: AwsContext) -> str:
    return ctx.name(COMPONENT, limit=255)


def ecs_tags(ctx: AwsContext, component: str) -> list[dict[str, str]]:
    """ECS spells its tags in lower case: [{"key":..., "value":...}]."""
    return [{"key": k, "value": v} for k, v in sorted(ctx.tag_dict(component).items())]


def ecs_tag_map(tags: list[Any] | None) -> dict[str, str]:
    return {t["key"]: t["value"] for t in tags or []}


def exec_log_group(spec: Stack) -> logs.LogGroupSpec:
    return logs.LogGroupSpec(EXEC_LOG_COMPONENT, spec.log_retention_days)


def _strategy(spec: Stack) -> list[dict[str, Any]]:
    return [{"capacityProvider": s.provider, "weight": s.weight, "base": s.base} for s in spec.capacity_strategy]


def _wanted(spec: Stack, ctx: AwsContext) -> dict[str, Any]:
    return {
        # Both providers are attached, whatever the strategy uses: a service may pick its own.
        "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
        "strategy": _strategy(spec),
        "container_insights": spec.cluster.container_insights,
        "exec_configuration": {
            "logging": "OVERRIDE",
            "logConfiguration": {"cloudWatchLogGroupName": exec_log_group(spec).name(ctx),
                                 "cloudWatchEncryptionEnabled": True},
        },
        "tags": ctx.tag_dict(COMPONENT),
    }


def _observe(data: dict[str, Any]) -> Observed:
    settings = {s["name"]: s["value"] for s in data.get("settings", [])}
    strategy = [{"capacityProvider": s["capacityProvider"], "weight": s.get("weight", 0), "base": s.get("base", 0)}
                for s in data.get("defaultCapacityProviderStrategy", [])]
    return Observed(
        id=data["clusterArn"], name=data["clusterName"], tags=ecs_tag_map(data.get("tags")),
        attrs={"capacity_providers": sorted(data.get("capacityProviders", [])),
               "strategy": strategy,
               "container_insights": settings.get("containerInsights", "disabled"),
               "exec_configuration": (data.get("configuration") or {}).get("executeCommandConfiguration"),
               "status": data.get("status")},
    )


def find_cluster(ctx: AwsContext) -> Observed | None:
    name = cluster_name(ctx)
    got = call_or_none(f"look up ECS cluster {name}", ctx.ecs().describe_clusters, clusters=[name],
                       include=["CONFIGURATIONS", "SETTINGS", "TAGS"])
    live = [c for c in (got or {}).get("clusters", []) if c.get("status") in LIVE_STATES]
    return _observe(live[0]) if live else None


def _current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = current_of(observed, wanted)
    current["exec_configuration"] = project(observed.attrs.get("exec_configuration"), wanted["exec_configuration"])
    return current


def plan_cluster(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    wanted = _wanted(spec, ctx)
    current = _current(observed, wanted) if observed else None
    return plan_from(RESOURCE, cluster_name(ctx), observed, wanted, current=current)


@aws_task(task_run_name="ensure ecs cluster")
def ensure_cluster(spec: Stack, ctx: AwsContext, exec_logs: Observed) -> Observed:
    """Create the cluster with everything in the one call, or repair what drifted."""
    ecs = ctx.ecs()
    name = cluster_name(ctx)
    wanted = _wanted(spec, ctx)
    if exec_logs.name != wanted["exec_configuration"]["logConfiguration"]["cloudWatchLogGroupName"]:
        raise EcsflowError(f"ECS Exec log group {exec_logs.name} is not the cluster's; this is a bug in ecsflow")
    observed = find_cluster(ctx)
    if observed is None:
        created = call(f"create ECS cluster {name}", ecs.create_cluster, clusterName=name,
                       capacityProviders=wanted["capacity_providers"],
                       defaultCapacityProviderStrategy=wanted["strategy"],
                       settings=[{"name": "containerInsights", "value": wanted["container_insights"]}],
                       configuration={"executeCommandConfiguration": wanted["exec_configuration"]},
                       tags=ecs_tags(ctx, COMPONENT))["cluster"]
        return _observe(created)
    if not ctx.owns(observed.tags):
        raise NotOurs(f"ECS cluster {name} exists without the tags ecsflow:stack={ctx.stack}, "
                      f"ecsflow:env={ctx.env}; ecsflow will not take it over. Delete or rename it.")
    change = plan_cluster(spec, ctx, observed)
    fields = set(change.changed_fields)
    if fields & {"capacity_providers", "strategy"}:
        call(f"set the capacity providers of {name}", ecs.put_cluster_capacity_providers, cluster=name,
             capacityProviders=wanted["capacity_providers"], defaultCapacityProviderStrategy=wanted["strategy"])
    if fields & {"container_insights", "exec_configuration"}:
        call(f"update ECS cluster {name}", ecs.update_cluster, cluster=name,
             settings=[{"name": "containerInsights", "value": wanted["container_insights"]}],
             configuration={"executeCommandConfiguration": wanted["exec_configuration"]})
    if "tags" in fields:
        call(f"tag ECS cluster {name}", ecs.tag_resource, resourceArn=observed.id, tags=ecs_tags(ctx, COMPONENT))
    if not fields:
        return observed
    found = find_cluster(ctx)
    if found is None:
        raise EcsflowError(f"ECS cluster {name} vanished while ecsflow updated it; run again")
    return found


def inventory_clusters(ctx: AwsContext) -> list[Observed]:
    found = find_cluster(ctx)
    return [found] if found and ctx.owns(found.tags) else []


@aws_task(task_run_name="delete ecs cluster {observed.name}")
def delete_cluster(observed: Observed, ctx: AwsContext) -> None:
    """Services must be gone first (AWS answers ClusterContainsServicesException, retried, until they are)."""
    require_ours(ctx, observed.tags, f"ECS cluster {observed.name}")
    call_or_none(f"delete ECS cluster {observed.name}", ctx.ecs().delete_cluster, cluster=observed.id)


def plan_cluster_family(spec: Stack, ctx: AwsContext) -> list[Change]:
    """The cluster and its ECS Exec log group."""
    group = exec_log_group(spec)
    return [logs.plan_log_group(ctx, group, logs.find_log_group(ctx, group), kms.find_key(ctx, "logs")),
            plan_cluster(spec, ctx, find_cluster(ctx))]
