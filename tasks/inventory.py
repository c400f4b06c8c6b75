"""Everything ecsflow made for one stack, found by tags alone (never from the stack file's names).

`status` prints it; `teardown` deletes it in the order below, which is reverse dependency order.
"""

from __future__ import annotations

from typing import Any

from tasks import (
    app_secrets,
    cluster,
    database,
    dbinit,
    edge,
    iam,
    kms,
    load_balancer,
    logs,
    network,
    pipeline,
    registry,
    services,
)
from tasks.aws import TAG_COMPONENT, AwsContext
from tasks.contract import Observed, aws_task


def inventory(ctx: AwsContext) -> dict[tuple[str, str], list[Observed]]:
    """(family, kind) -> resources, in teardown order."""
    from tasks import monitoring

    clusters = cluster.inventory_clusters(ctx)
    albs = load_balancer.inventory_load_balancers(ctx)
    listeners = load_balancer.inventory_listeners(ctx, albs)
    found: dict[tuple[str, str], list[Observed]] = {
        **monitoring.inventory_monitoring(ctx),  # first: the alarms watch what follows
        ("cluster", "scalable target"): services.inventory_scaling(ctx, clusters),
        ("cluster", "ecs service"): services.inventory_services(ctx),
        ("cluster", "task definition"): services.inventory_task_definitions(ctx),
        ("cluster", "ecs cluster"): clusters,
        ("edge", "dns records"): edge.inventory_records(ctx),
        ("edge", "health check"): edge.inventory_health_checks(ctx),
        ("edge", "cloudfront distribution"): edge.inventory_distributions(ctx),
        ("edge", "web acl"): edge.inventory_web_acls(ctx),
        ("edge", "cdn certificate"): edge.inventory_cdn_certificates(ctx),
        ("edge", "origin secret"): edge.inventory_origin_secrets(ctx),
        ("load_balancer", "listener rule"): load_balancer.inventory_rules(ctx, listeners),
        ("load_balancer", "listener"): listeners,
        ("load_balancer", "load balancer"): albs,
        ("load_balancer", "target group"): load_balancer.inventory_target_groups(ctx),
        ("load_balancer", "certificate"): load_balancer.inventory_certificates(ctx),
        ("load_balancer", "log bucket"): load_balancer.inventory_log_buckets(ctx),
        ("database", "db instance"): database.inventory_db_instances(ctx),
        ("database", "db subnet group"): database.inventory_db_subnet_groups(ctx),
        ("database", "db parameter group"): database.inventory_db_parameter_groups(ctx),
    }
    for kind, items in network.inventory_network(ctx).items():
        found[("network", kind)] = items
    found[("logs", "log group")] = logs.inventory_log_groups(ctx)
    found[("iam", "iam role")] = iam.inventory_roles(ctx)
    found[("registry", "ecr repository")] = registry.inventory_repositories(ctx)
    found[("security", "app secret")] = app_secrets.inventory_app_secrets(ctx)
    found[("database", "app user secret")] = dbinit.inventory_app_secrets(ctx)
    found[("kms", "kms key")] = kms.inventory_keys(ctx)
    # The backup family: the restore test's temporary instances, our backup snapshots (and their copies),
    # the copy region's KMS key, the export bucket.
    from tasks import backup, export

    found[("backup", "temporary db instance")] = backup.inventory_temporary_instances(ctx)
    found[("backup", "db snapshot")] = backup.inventory_backups(ctx)
    found[("backup", "copy-region kms key")] = backup.inventory_copy_keys(ctx, found[("backup", "db snapshot")])
    found[("backup", "export bucket")] = export.inventory_export_buckets(ctx)
    # The account's GitHub OIDC provider, when this stack made it (its CI role is among the IAM roles).
    found[("pipeline", "oidc provider")] = pipeline.inventory_pipeline(ctx)
    return found


@aws_task(task_run_name="take inventory of the stack's resources")
def take_inventory(ctx: AwsContext) -> dict[tuple[str, str], list[Observed]]:
    return inventory(ctx)


def inventory_rows(ctx: AwsContext) -> list[dict[str, Any]]:
    return [
        {"family": family, "kind": kind, "id": item.id, "name": item.name,
         "component": item.tags.get(TAG_COMPONENT, "")}
        for (family, kind), items in inventory(ctx).items()
        for item in items
    ]
