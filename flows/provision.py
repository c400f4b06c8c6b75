"""`ecsflow up`: every phase as one DAG, so independent work runs side by side.

    keys (rds, ecr, logs) ─┐
    vpc ─> subnets ─┬─> db subnet group ─> db instance   (the critical path in AWS)
                    ├─> nat gateways ─> route tables ─> s3 endpoint
    vpc ─> security groups ─> rules
    ecr key ─> repositories ─> images (per service: check, build, smoke test, push, scan, record)
                                                          (beside everything)
    logs key ─> cluster                                   (needs nothing else)
    github oidc provider ─> ci role (ECR push by repository name) ─> actions settings   (beside everything)
    public subnets, sg-alb ─> alb, target groups, listeners, rules   (beside the database)
    roles, log groups, repositories, images, DB secret ─> task definitions
    cluster, task definitions, target groups + rules, private subnets, sg-ecs ─> services ─> autoscaling
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from flows.phase_cluster import ClusterFutures, cluster_outputs, submit_cluster, submit_services
from flows.phase_database import database_outputs, submit_database
from flows.phase_images import collect, image_outputs, stack_dir, submit_images
from flows.phase_load_balancer import load_balancer_outputs, submit_load_balancer
from flows.phase_monitoring import MonitoringFutures, monitoring_outputs, submit_monitoring
from flows.phase_network import network_outputs, submit_network
from flows.phase_pipeline import pipeline_outputs, submit_pipeline
from flows.phase_registry import submit_registry
from flows.phase_security import submit_app_secrets, submit_guardrails
from tasks import console, cost, kms
from tasks.contract import Observed


class ProvisionRun(StackRun):
    skip_images: bool = Field(False, description="Provision everything but the images phase.")


@flow(name="provision", description="Provision or reconcile the whole stack: network, database, registry, images, "
      "load balancer, cluster and services.")
def provision_flow(params: ProvisionRun = ProvisionRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    # The critical path (vpc -> subnets -> db subnet group -> db instance) is submitted first,
    # so it is first in line for threads and connections; the rest follows beside it.
    keys = {purpose: kms.ensure_key.submit(ctx, purpose) for purpose in ("logs", "rds")}
    net = submit_network(spec, ctx, keys["logs"])
    db = submit_database(spec, ctx, private_subnets=net.tier("private"),
                         rds_security_group=net.security_groups["sg-rds"], rds_key=keys["rds"])
    keys["ecr"] = kms.ensure_key.submit(ctx, "ecr")
    app_secrets = submit_app_secrets(spec, ctx)  # values made inside the tasks; only ARNs come back
    guardrails = submit_guardrails(spec, ctx)
    registry = submit_registry(spec, ctx, keys["ecr"])
    # GitHub's OIDC provider and the CI role, beside everything: they need only the repositories' names.
    pipe = submit_pipeline(spec, ctx, registry.repositories) if spec.pipeline else None
    image_futures = {} if params.skip_images else submit_images(spec, ctx, registry.repositories,
                                                                stack_dir(params))
    balancer = submit_load_balancer(spec, ctx, vpc=net.vpc, public_subnets=net.tier("public"),
                                    alb_security_group=net.security_groups["sg-alb"])
    wait(list(app_secrets.values()))  # the task definitions name the app secrets by ARN (failures: settle below)
    cluster = submit_services(spec, ctx, submit_cluster(spec, ctx, keys["logs"]), logs_key=keys["logs"],
                              repositories=registry.repositories, database=db.instance,
                              private_subnets=net.tier("private"), ecs_security_group=net.security_groups["sg-ecs"],
                              load_balancer=balancer, images=image_futures)
    # The alarms watch the services, the load balancer and the database: they follow them (their topic,
    # key and the budget start at once).
    watch = submit_monitoring(spec, ctx, after=[*cluster.all(), *balancer.all(), *db.all()])
    image_results = collect(spec, image_futures) if image_futures else []
    if params.skip_images:
        get_run_logger().info("images phase skipped (--skip-images): services without an image will start at "
                              "desired count 0")
    settle([*keys.values(), *registry.all(), *net.all(), *db.all(), *image_futures.values(), *balancer.all(),
            *cluster.all(), *watch.all(), *app_secrets.values(), *guardrails])
    if pipe:
        settle(pipe.all())

    outputs: dict[str, Any] = {"stack": f"{spec.name}-{spec.env}", "region": ctx.region}
    outputs.update(network_outputs(net))
    outputs.update(database_outputs(db))
    outputs["repositories"] = {s: f.result().attrs["uri"] for s, f in registry.repositories.items()}
    outputs["images"] = image_outputs(image_results) if image_results else "skipped (--skip-images)"
    outputs.update(load_balancer_outputs(balancer))
    outputs.update(cluster_outputs(cluster))
    if pipe:
        outputs.update(pipeline_outputs(pipe))
    outputs.update(monitoring_outputs(watch, ctx))
    # What the run already holds, in the order of the picture above; no AWS read.
    ensured = [*net.all(), *db.all(), *registry.all(), *balancer.all(), *cluster.all(), *watch.all(),
               *app_secrets.values(), *guardrails, *(pipe.all() if pipe else []), *keys.values()]
    hints = kind_hints(cluster, watch)
    master_secret = db.instance.result().attrs.get("master_secret_arn")  # RDS made it; its ARN only
    resources = console.resource_rows(
        [(f.result(), hints.get(id(f))) for f in ensured]
        + ([(Observed(id=master_secret, name="database master secret"), None)] if master_secret else []),
        ctx.region)
    publish_outputs(outputs, cost_markdown=cost.render_markdown(cost.estimate(spec, ctx.region)),
                    resources=resources)
    return outputs


def kind_hints(cluster: ClusterFutures, watch: MonitoringFutures) -> dict[int, str]:
    """The futures whose results' ids do not say what they are (by `id()` of the future)."""
    hints = {id(f): "metric filter" for f in watch.filters.values()}
    hints |= {id(f): "scalable target" for f in cluster.scaling.values()}
    if watch.dashboard is not None:
        hints[id(watch.dashboard)] = "dashboard"  # its name, where AWS answers without the ARN
    return hints


def artifact_key(outputs: dict[str, Any]) -> str:
    return f"outputs-{outputs['stack']}"


def publish_outputs(outputs: dict[str, Any], cost_markdown: str = "",
                    resources: list[console.ResourceRow] | None = None) -> None:
    """The outputs artifact: the outputs table, a link to each resource's console page, the cost.
    Ids, names and ARNs only (a secret's ARN, never its value)."""
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in outputs.items())
    resource_section = (f"\n## Resources\n\nWhat this run ensured, each with its page in the AWS console "
                        f"({outputs['region']}).\n\n{console.markdown_table(resources)}\n") if resources else ""
    cost_section = f"\n{cost_markdown}" if cost_markdown else ""
    create_markdown_artifact(key=artifact_key(outputs), description="Stack outputs and resources (no secrets)",
                             markdown=f"# {outputs['stack']} outputs\n\n| output | value |\n|---|---|\n{rows}\n"
                             f"{resource_section}{cost_section}")
