"""`ecsflow down`: delete what the tag inventory lists, in reverse dependency order, waiting
for each deletion. Works from AWS's tags, not from the stack file, so a resource the stack
file no longer mentions is still found and removed."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from flows.phase_cluster import submit_cluster_teardown
from flows.phase_load_balancer import submit_load_balancer_teardown
from flows.phase_monitoring import submit_monitoring_teardown
from flows.phase_security import submit_app_secrets_teardown
from tasks import backup, database, dbinit, export, iam, kms, logs, network, pipeline, registry
from tasks.aws import EcsflowError
from tasks.inventory import take_inventory

# Network kinds deleted stage by stage: each stage waits for the one before.
NETWORK_STAGES = [["flow log", "vpc endpoint", "nat gateway"], ["elastic ip", "route table", "internet gateway"],
                  ["security group"], ["subnet"], ["vpc"]]


class TeardownRun(StackRun):
    confirm: bool = Field(False, description="Must be true: teardown deletes every resource of the stack.")
    final_snapshot: bool | None = Field(
        None, description="Take a final DB snapshot before deleting the instance. Default: yes in prod.")


@flow(name="teardown", description="Delete every resource carrying the stack's tags, in reverse dependency order.")
def teardown_flow(params: TeardownRun = TeardownRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    if not params.confirm:
        raise EcsflowError(f"teardown of {ctx.prefix} needs confirm=true (`ecsflow down --yes`)")
    logger = get_run_logger()
    final_snapshot = spec.is_prod if params.final_snapshot is None else params.final_snapshot
    found = take_inventory(ctx)
    count = sum(len(items) for items in found.values())
    logger.info("inventory of %s: %d resources carry its tags", ctx.prefix, count)
    kept: list[str] = []
    retained_keys = 0

    # The services go first (scaled to 0, drained), then the load balancer; their network interfaces
    # hold the security groups and subnets, which wait for them.
    ecs_services, app = submit_cluster_teardown(found, ctx)
    app += submit_load_balancer_teardown(found, ctx, after=ecs_services)
    app += submit_monitoring_teardown(found, ctx)  # metric filters before their log groups (below)

    # Slow deletions start together: the database, the NAT gateways, the repositories.
    instances = [database.delete_db_instance.submit(o, ctx, final_snapshot=final_snapshot, confirmed=True)
                 for o in found[("database", "db instance")]]
    repos = [registry.delete_repository.submit(o, ctx) for o in found[("registry", "ecr repository")]]
    # The restore test's temporary instances (no final snapshot) sit in the same subnet and security groups.
    temporary = [backup.delete_temporary_instance.submit(o.name, ctx)
                 for o in found.get(("backup", "temporary db instance"), [])]
    app += temporary
    groups = [database.delete_db_subnet_group.submit(o, ctx, wait_for=instances + temporary)
              for o in found[("database", "db subnet group")]]
    groups += [database.delete_db_parameter_group.submit(o, ctx, wait_for=instances)
               for o in found[("database", "db parameter group")]]
    # The app user's secret outlives the instance only in a final snapshot: then it keeps a recovery window.
    groups += [dbinit.delete_app_secret.submit(o, ctx, prod=final_snapshot, wait_for=instances)
               for o in found[("database", "app user secret")]]

    previous: list[PrefectFuture[Any]] = []
    for stage in NETWORK_STAGES:
        # Security groups and subnets hold the database's network interfaces until it is gone.
        after = previous + (instances + groups + app if "security group" in stage else [])
        if "security group" in stage:
            after = [network.revoke_all_rules.submit(o, ctx, wait_for=after)
                     for o in found[("network", "security group")]] or after
        current = [network.delete_network_resource.submit(kind, o, ctx, wait_for=after)
                   for kind in stage for o in found[("network", kind)]]
        previous = current or previous
    settle([*app, *instances, *repos, *groups, *previous])

    snapshots = [s for s in (f.result() for f in instances) if s]
    rest = [logs.delete_log_group.submit(o, ctx) for o in found[("logs", "log group")]]
    rest += [iam.delete_role.submit(o, ctx) for o in found[("iam", "iam role")]]
    # GitHub's OIDC provider after the roles (the CI role trusts it); it stays while another stack's role does.
    providers = [pipeline.delete_oidc_provider.submit(o, ctx, wait_for=list(rest))
                 for o in found.get(("pipeline", "oidc provider"), [])]
    rest += providers
    # App secrets: a 30-day recovery window in prod (undo with RestoreSecret, or the next `up`), gone at once elsewhere.
    rest += submit_app_secrets_teardown(found, ctx, prod=spec.is_prod)
    for key in found[("kms", "kms key")]:
        if snapshots and key.attrs.get("purpose") == "rds":
            # The final snapshot is encrypted with this key: deleting it would make the snapshot useless.
            rest.append(kms.retain_key.submit(key, ctx, reason=f"final snapshot {snapshots[0]}"))
            kept.append(f"KMS key {key.id} (encrypts the final snapshot)")
            retained_keys += 1
        else:
            rest.append(kms.delete_key.submit(key, ctx))
    rest += [database.hand_over_snapshot.submit(s, ctx) for s in snapshots]
    # Our backups and their copies go (the final snapshot, when taken, is the recovery point that stays),
    # then the copy region's key; the export bucket is emptied and deleted.
    backups = [backup.delete_snapshot.submit(o, ctx) for o in found.get(("backup", "db snapshot"), [])]
    rest += backups
    rest += [kms.delete_key.submit(k, backup.region_context(ctx, k.attrs["region"]), wait_for=backups)
             for k in found.get(("backup", "copy-region kms key"), [])]
    rest += [export.delete_export_bucket.submit(o, ctx) for o in found.get(("backup", "export bucket"), [])]
    kept += [f"final DB snapshot {s}" for s in snapshots]
    settle(rest)
    shared = [reason for reason in (f.result() for f in providers) if reason]
    kept += shared
    retained_keys += len(shared)  # what stays is not counted as deleted
    logger.info("teardown of %s done: %d deleted, kept %s", ctx.prefix, count, kept or "nothing")
    return {"deleted": count - retained_keys, "kept": kept}
