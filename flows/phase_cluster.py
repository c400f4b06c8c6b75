"""Phase 3: the ECS cluster and the services on it.

    logs key ─> exec log group ─> cluster                                  (needs nothing else)
    per service:
      repository (+ DB secret if it takes one) ─> execution role ─┐
      task role, log group ──────────────────────────────────────┼─> task definition ─┐
      image (when the images phase runs) ─────────────────────────┘                   │
      task definition ─> migration task (a new revision with an image only) ──────────┤
      cluster, target group + listener/rules, private subnets, sg-ecs ────────────────┴─> service ─> autoscaling
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, wait

from flows.common import StackRun, open_stack, settle
from flows.phase_database import submit_database
from flows.phase_load_balancer import LoadBalancerFutures, submit_load_balancer
from flows.phase_network import submit_network
from flows.phase_registry import submit_registry
from flows.phase_security import submit_app_secrets
from spec import Stack
from tasks import cluster, dbinit, iam, kms, logs, services
from tasks.aws import AwsContext
from tasks.contract import Observed


@dataclass
class ClusterFutures:
    exec_logs: PrefectFuture[Any]
    cluster: PrefectFuture[Any]
    task_definitions: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    services: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    scaling: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    others: list[PrefectFuture[Any]] = field(default_factory=list)

    def all(self) -> list[PrefectFuture[Any]]:
        return [self.exec_logs, self.cluster, *self.task_definitions.values(), *self.services.values(),
                *self.scaling.values(), *self.others]


def submit_cluster(spec: Stack, ctx: AwsContext, logs_key: PrefectFuture[Any]) -> ClusterFutures:
    """The cluster alone: it depends on nothing but its ECS Exec log group."""
    exec_logs = logs.ensure_log_group.submit(ctx, cluster.exec_log_group(spec), logs_key)
    return ClusterFutures(exec_logs=exec_logs, cluster=cluster.ensure_cluster.submit(spec, ctx, exec_logs))


def submit_services(spec: Stack, ctx: AwsContext, futures: ClusterFutures, *, logs_key: PrefectFuture[Any],
                    repositories: dict[str, PrefectFuture[Any]], database: PrefectFuture[Any],
                    private_subnets: list[PrefectFuture[Any]], ecs_security_group: PrefectFuture[Any],
                    load_balancer: LoadBalancerFutures,
                    images: dict[str, PrefectFuture[Any]] | None = None) -> ClusterFutures:
    """Per service: roles and log group, task definition, service, autoscaling. Only a service that
    takes the database's secret waits for the database."""
    app_secret, dbinit_run = submit_dbinit(spec, ctx, futures, logs_key=logs_key, database=database,
                                           private_subnets=private_subnets, ecs_security_group=ecs_security_group)
    for service, svc in spec.services.items():
        db = database if svc.uses_database_secret else None
        # The app user's secret must exist before a role or definition names it; its user before anything runs.
        app_user = ([app_secret], [dbinit_run]) if svc.uses_app_database_secret and app_secret else ([], [])
        execution = services.ensure_execution_role.submit(spec, ctx, service, repositories[service], db,
                                                          wait_for=app_user[0])
        task = iam.ensure_role.submit(ctx, services.task_role(spec, ctx, service))
        group = logs.ensure_log_group.submit(ctx, services.log_group(spec, service), logs_key)
        image = [images[service]] if images and service in images else []
        td = services.ensure_task_definition.submit(
            spec, ctx, service, execution_role=execution, task_role=task, log_group=group,
            repository=repositories[service], database=db, wait_for=[*image, *app_user[0]])
        migration = [services.run_migration.submit(
            spec, ctx, service, cluster=futures.cluster, task_definition=td, private_subnets=private_subnets,
            security_group=ecs_security_group, wait_for=app_user[1])] if svc.migration_command else []
        # A worker (load_balanced: false) has no target group and does not wait for the listeners.
        target = load_balancer.target_groups.get(service)
        routing = load_balancer.routing() if svc.load_balanced else []
        ecs_service = services.ensure_service.submit(
            spec, ctx, service, cluster=futures.cluster, task_definition=td,
            target_group=target, private_subnets=private_subnets,
            security_group=ecs_security_group, wait_for=[*routing, *migration, *app_user[1]])
        scaling = services.ensure_scaling.submit(
            spec, ctx, service, ecs_service=ecs_service, load_balancer=load_balancer.alb if target else None,
            target_group=target)
        futures.task_definitions[service] = td
        futures.services[service] = ecs_service
        futures.scaling[service] = scaling
        futures.others += [execution, task, group, *migration]
    return futures


def submit_dbinit(spec: Stack, ctx: AwsContext, futures: ClusterFutures, *, logs_key: PrefectFuture[Any],
                  database: PrefectFuture[Any], private_subnets: list[PrefectFuture[Any]],
                  ecs_security_group: PrefectFuture[Any]) -> tuple[PrefectFuture[Any] | None,
                                                                   PrefectFuture[Any] | None]:
    """The application database user, when a service takes `database_app:*`: its secret, then a one-off
    task (its own role, log group and definition) that creates the user, database and grants, once.

        app secret, db instance ─> execution role ─┐
        logs key ─> log group ─────────────────────┴─> task definition ─> run (cluster, subnets, sg-ecs)
    """
    if not spec.uses_app_database_user:
        return None, None
    secret = dbinit.ensure_app_secret.submit(spec, ctx)
    role = dbinit.ensure_execution_role.submit(spec, ctx, database, secret)
    group = logs.ensure_log_group.submit(ctx, dbinit.log_group(spec), logs_key)
    td = dbinit.ensure_task_definition.submit(spec, ctx, execution_role=role, database=database, app_secret=secret,
                                              log_group=group)
    run = dbinit.run_dbinit.submit(spec, ctx, cluster=futures.cluster, task_definition=td,
                                   private_subnets=private_subnets, security_group=ecs_security_group,
                                   app_secret=secret)
    futures.others += [secret, role, group, td, run]
    return secret, run


def cluster_outputs(futures: ClusterFutures) -> dict[str, Any]:
    outputs: dict[str, Any] = {"cluster": futures.cluster.result().name}
    outputs["services"] = {
        service: {"task_definition": futures.task_definitions[service].result().id.rsplit("/", 1)[-1],
                  "desired_count": f.result().attrs.get("desired_count"),
                  "image": futures.task_definitions[service].result().attrs.get("image")}
        for service, f in futures.services.items()}
    return outputs


def submit_cluster_teardown(found: dict[tuple[str, str], list[Observed]],
                            ctx: AwsContext) -> tuple[list[PrefectFuture[Any]], list[PrefectFuture[Any]]]:
    """Autoscaling, then the services (scaled to 0, deleted, drained), then the task definitions and
    the cluster. Returns (services, everything): the load balancer waits for the services."""
    family = "cluster"
    scaling = [services.delete_scaling.submit(o, ctx) for o in found[(family, "scalable target")]]
    gone = [services.delete_service.submit(o, ctx, wait_for=scaling) for o in found[(family, "ecs service")]]
    definitions = [services.delete_task_definition.submit(o, ctx, wait_for=gone)
                   for o in found[(family, "task definition")]]
    clusters = [cluster.delete_cluster.submit(o, ctx, wait_for=gone) for o in found[(family, "ecs cluster")]]
    return gone, [*scaling, *gone, *definitions, *clusters]


@flow(name="cluster", description="ECS cluster (Fargate + Spot), and per service its roles, log group, task "
      "definition, service and autoscaling.")
def cluster_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    # The services need the network, repositories, database and load balancer; ensuring them is a no-op
    # when they exist.
    keys = {purpose: kms.ensure_key.submit(ctx, purpose) for purpose in ("logs", "rds", "ecr")}
    net = submit_network(spec, ctx, keys["logs"])
    registry = submit_registry(spec, ctx, keys["ecr"])
    db = submit_database(spec, ctx, private_subnets=net.tier("private"),
                         rds_security_group=net.security_groups["sg-rds"], rds_key=keys["rds"])
    balancer = submit_load_balancer(spec, ctx, vpc=net.vpc, public_subnets=net.tier("public"),
                                    alb_security_group=net.security_groups["sg-alb"])
    app_secrets = submit_app_secrets(spec, ctx)
    wait(list(app_secrets.values()))  # the task definitions name the app secrets by ARN
    futures = submit_services(spec, ctx, submit_cluster(spec, ctx, keys["logs"]), logs_key=keys["logs"],
                              repositories=registry.repositories, database=db.instance,
                              private_subnets=net.tier("private"), ecs_security_group=net.security_groups["sg-ecs"],
                              load_balancer=balancer)
    settle([*keys.values(), *net.all(), *registry.all(), *db.all(), *balancer.all(), *app_secrets.values(),
            *futures.all()])
    return cluster_outputs(futures)
