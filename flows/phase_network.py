"""Phase 1a: the network. Reads like the picture: VPC -> subnets -> gateways -> routes,
and the security-group chain ALB -> ECS -> RDS beside them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import iam, kms, logs, network
from tasks.aws import AwsContext


@dataclass
class NetworkFutures:
    vpc: PrefectFuture[Any]
    subnets: dict[str, PrefectFuture[Any]]  # by component, e.g. "subnet-private-a"
    security_groups: dict[str, PrefectFuture[Any]]  # "sg-alb", "sg-ecs", "sg-rds"
    others: list[PrefectFuture[Any]]

    def tier(self, tier: str) -> list[PrefectFuture[Any]]:
        return [f for component, f in self.subnets.items() if component.startswith(f"subnet-{tier}-")]

    def all(self) -> list[PrefectFuture[Any]]:
        return [self.vpc, *self.subnets.values(), *self.security_groups.values(), *self.others]


def submit_network(spec: Stack, ctx: AwsContext, logs_key: PrefectFuture[Any]) -> NetworkFutures:
    vpc = network.ensure_vpc.submit(spec, ctx)
    subnets = {s.component: network.ensure_subnet.submit(ctx, s, vpc) for s in network.subnet_specs(spec)}
    igw = network.ensure_internet_gateway.submit(ctx, vpc)
    nats = {
        f"nat-{network.az_suffix(az)}": network.ensure_nat_gateway.submit(
            ctx, az, subnets[f"subnet-public-{network.az_suffix(az)}"])
        for az in network.nat_zones(spec)
    }
    gateways = {"igw": igw, **nats}
    route_tables = [
        network.ensure_route_table.submit(ctx, table, vpc, gateways[table.via],
                                          [subnets[c] for c in table.subnet_components])
        for table in network.route_table_specs(spec)
    ]
    private_tables = [rt for rt, table in zip(route_tables, network.route_table_specs(spec), strict=True)
                      if table.via != "igw"]
    endpoint = [network.ensure_s3_endpoint.submit(ctx, vpc, private_tables)] \
        if spec.network.s3_gateway_endpoint else []

    groups = {c: network.ensure_security_group.submit(ctx, c, vpc) for c in network.SECURITY_GROUPS}
    rules = [network.ensure_chain_rules.submit(spec, ctx, c, groups) for c in network.SECURITY_GROUPS]
    default_closed = network.ensure_default_group_closed.submit(ctx, vpc)

    flow_log: list[PrefectFuture[Any]] = []
    if spec.network.flow_logs.enabled:
        group = logs.ensure_log_group.submit(ctx, network.flow_log_group(spec), logs_key)
        role = iam.ensure_role.submit(ctx, network.flow_log_role(ctx))
        flow_log = [group, role, network.ensure_flow_log.submit(spec, ctx, vpc, group, role)]

    return NetworkFutures(vpc=vpc, subnets=subnets, security_groups=groups,
                          others=[igw, *nats.values(), *route_tables, *endpoint, *rules, default_closed, *flow_log])


def network_outputs(futures: NetworkFutures) -> dict[str, Any]:
    return {
        "vpc_id": futures.vpc.result().id,
        "public_subnet_ids": [f.result().id for f in futures.tier("public")],
        "private_subnet_ids": [f.result().id for f in futures.tier("private")],
        "security_groups": {c: f.result().id for c, f in futures.security_groups.items()},
    }


@flow(name="network", description="VPC, subnets in two AZs, IGW, NAT, routes, the ALB->ECS->RDS security "
      "groups, the S3 gateway endpoint and VPC flow logs.")
def network_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    futures = submit_network(spec, ctx, kms.ensure_key.submit(ctx, "logs"))
    settle(futures.all())
    return network_outputs(futures)
