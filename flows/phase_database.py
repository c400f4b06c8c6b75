"""Phase 1b: the database. Starts as soon as the private subnets and the RDS security group exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from flows.phase_network import submit_network
from spec import Stack
from tasks import database, iam, kms
from tasks.aws import AwsContext


@dataclass
class DatabaseFutures:
    instance: PrefectFuture[Any]
    others: list[PrefectFuture[Any]]

    def all(self) -> list[PrefectFuture[Any]]:
        return [self.instance, *self.others]


def submit_database(spec: Stack, ctx: AwsContext, *, private_subnets: list[PrefectFuture[Any]],
                    rds_security_group: PrefectFuture[Any], rds_key: PrefectFuture[Any]) -> DatabaseFutures:
    subnet_group = database.ensure_db_subnet_group.submit(spec, ctx, private_subnets)
    parameter_group = database.ensure_db_parameter_group.submit(spec, ctx)
    monitoring_role = (iam.ensure_role.submit(ctx, database.monitoring_role(ctx))
                       if spec.database.monitoring_interval else None)
    instance = database.ensure_db_instance.submit(
        spec, ctx, kms_key=rds_key, security_group=rds_security_group, monitoring_role=monitoring_role,
        wait_for=[subnet_group, parameter_group],
    )
    return DatabaseFutures(instance=instance,
                           others=[subnet_group, parameter_group, *([monitoring_role] if monitoring_role else [])])


def database_outputs(futures: DatabaseFutures) -> dict[str, Any]:
    db = futures.instance.result()
    return {"db_endpoint": db.attrs.get("endpoint"), "db_master_secret_arn": db.attrs.get("master_secret_arn")}


@flow(name="database", description="RDS PostgreSQL: subnet group, parameter group, Multi-AZ encrypted instance "
      "with a managed master secret.")
def database_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    # The database needs the network's subnets and security group; ensuring them is a no-op when they exist.
    net = submit_network(spec, ctx, kms.ensure_key.submit(ctx, "logs"))
    futures = submit_database(spec, ctx, private_subnets=net.tier("private"),
                              rds_security_group=net.security_groups["sg-rds"],
                              rds_key=kms.ensure_key.submit(ctx, "rds"))
    settle([*net.all(), *futures.all()])
    return database_outputs(futures)
