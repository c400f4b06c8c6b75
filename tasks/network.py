"""The network family: VPC, subnets, internet and NAT gateways, route tables, security
groups, the S3 gateway endpoint and VPC flow logs.

Every resource is found by its `ecsflow:component` tag inside our VPC, so a run that
crashed after creating some of them picks them up again instead of making twins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from spec import Stack
from tasks import iam, kms, logs
from tasks.aws import AwsContext, EcsflowError, call, call_or_none, tag_map, wait_until
from tasks.contract import (
    Change,
    FieldDiff,
    Observed,
    aws_task,
    plan_from,
    refuse_replace,
    require_ours,
)

NAT_TIMEOUT = 15 * 60
ALL_TRAFFIC = "0.0.0.0/0"


def az_suffix(az: str) -> str:
    """ap-northeast-1c -> c: short, stable and readable in names."""
    return az[-1]


def nat_zones(spec: Stack) -> list[str]:
    azs = spec.network.availability_zones
    return list(azs) if spec.nat_mode == "per_az" else [azs[0]]


def nat_zone_for(spec: Stack, az: str) -> str:
    """Which NAT gateway a private subnet in `az` routes through."""
    return az if spec.nat_mode == "per_az" else spec.network.availability_zones[0]


def _tagged(ctx: AwsContext, items: Iterable[Any], component: str | None = None) -> list[Any]:
    """Filter by our tags client-side too: the server-side tag filter is the fast path, this
    is the guarantee (some EC2 emulations ignore tag filters on some describe calls)."""
    out = []
    for item in items:
        tags = tag_map(item.get("Tags"))
        if ctx.owns(tags) and (component is None or tags.get("ecsflow:component") == component):
            out.append(item)
    return out


def _find_one(ctx: AwsContext, component: str, method: Callable[..., Any], key: str, what: str,
              extra_filters: Iterable[Any] = (), live: Callable[[Any], bool] = lambda _: True) -> Any | None:
    """The one EC2 resource of `component` carrying our tags, or None."""
    found = call(f"look up {what}", method, Filters=[*ctx.ec2_filters(component), *extra_filters])[key]
    return _one([item for item in _tagged(ctx, found, component) if live(item)], what)


def _one(items: list[Any], what: str) -> Any | None:
    if len(items) > 1:
        ids = ", ".join(str(i) for i in items)
        raise EcsflowError(
            f"found {len(items)} {what} carrying our tags ({ids}); ecsflow expects one. "
            f"Delete the extra one(s) by hand, then run again."
        )
    return items[0] if items else None


def _observed(resource_id: str, tags: list[Any] | None, **attrs: Any) -> Observed:
    tag_dict = tag_map(tags)
    return Observed(id=resource_id, name=tag_dict.get("Name", resource_id), tags=tag_dict, attrs=attrs)


def _create_tags(ctx: AwsContext, kind: str, component: str) -> list[Any]:
    return [{"ResourceType": kind, "Tags": ctx.tags(component, name=ctx.name(component))}]


# ---------------------------------------------------------------- VPC


def find_vpc(ctx: AwsContext) -> Observed | None:
    ec2 = ctx.ec2()
    vpc = _find_one(ctx, "vpc", ec2.describe_vpcs, "Vpcs", "the VPC", live=lambda v: v.get("State") != "deleted")
    if vpc is None:
        return None
    vpc_id = vpc["VpcId"]
    dns_support = call(
        "read VPC DNS support", ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute="enableDnsSupport"
    )["EnableDnsSupport"]["Value"]
    dns_names = call(
        "read VPC DNS hostnames", ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute="enableDnsHostnames"
    )["EnableDnsHostnames"]["Value"]
    return _observed(
        vpc_id, vpc.get("Tags"), cidr=vpc["CidrBlock"], dns_support=dns_support, dns_hostnames=dns_names
    )


def _vpc_wanted(spec: Stack) -> dict[str, Any]:
    # DNS hostnames and support: RDS endpoints, ECS service discovery and interface endpoints need both.
    return {"cidr": spec.network.vpc_cidr, "dns_support": True, "dns_hostnames": True}


def plan_vpc(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    return plan_from(
        "vpc", ctx.name("vpc"), observed, _vpc_wanted(spec), immutable=["cidr"]
    )


@aws_task(task_run_name="ensure vpc")
def ensure_vpc(spec: Stack, ctx: AwsContext) -> Observed:
    ec2 = ctx.ec2()
    observed = find_vpc(ctx)
    if observed is None:
        vpc = call(
            "create the VPC",
            ec2.create_vpc,
            CidrBlock=spec.network.vpc_cidr,
            TagSpecifications=_create_tags(ctx, "vpc", "vpc"),
        )["Vpc"]
        vpc_id = vpc["VpcId"]
        wait_until(
            f"VPC {vpc_id} to become available",
            lambda: (
                call("read the VPC", ec2.describe_vpcs, VpcIds=[vpc_id])["Vpcs"][0]["State"] == "available"
            ),
            timeout=300,
            poll=ctx.poll_seconds,
        )
        observed = find_vpc(ctx)
        assert observed is not None
    change = plan_vpc(spec, ctx, observed)
    refuse_replace(change)
    for diff in change.diffs:
        attr = {"dns_support": "EnableDnsSupport", "dns_hostnames": "EnableDnsHostnames"}[diff.field]
        call(
            f"set {diff.field} on the VPC",
            ec2.modify_vpc_attribute,
            VpcId=observed.id,
            **{attr: {"Value": bool(diff.wanted)}},
        )
        observed.attrs[diff.field] = diff.wanted
    return observed



# ---------------------------------------------------------------- subnets


@dataclass(frozen=True)
class SubnetSpec:
    tier: str  # "public" or "private"
    az: str
    cidr: str

    @property
    def component(self) -> str:
        return f"subnet-{self.tier}-{az_suffix(self.az)}"


def subnet_specs(spec: Stack) -> list[SubnetSpec]:
    net = spec.network
    return [
        SubnetSpec(tier, az, cidr)
        for tier, cidrs in (("public", net.public_subnets), ("private", net.private_subnets))
        for az, cidr in zip(net.availability_zones, cidrs, strict=True)
    ]


def find_subnet(ctx: AwsContext, subnet: SubnetSpec) -> Observed | None:
    data = _find_one(ctx, subnet.component, ctx.ec2().describe_subnets, "Subnets", f"subnet {subnet.component}")
    if data is None:
        return None
    return _observed(
        data["SubnetId"],
        data.get("Tags"),
        cidr=data["CidrBlock"],
        az=data["AvailabilityZone"],
        vpc_id=data["VpcId"],
        map_public_ip=data.get("MapPublicIpOnLaunch", False),
    )


def _subnet_wanted(subnet: SubnetSpec) -> dict[str, Any]:
    # No automatic public IPs, even in public subnets: only the ALB and NAT live there (FSBP EC2.15).
    return {"cidr": subnet.cidr, "az": subnet.az, "map_public_ip": False}


def plan_subnet(ctx: AwsContext, subnet: SubnetSpec, observed: Observed | None) -> Change:
    return plan_from(
        "subnet",
        ctx.name(subnet.component),
        observed,
        _subnet_wanted(subnet),
        immutable=["cidr", "az"],
    )


@aws_task(task_run_name="ensure {subnet.component}")
def ensure_subnet(ctx: AwsContext, subnet: SubnetSpec, vpc: Observed) -> Observed:
    vpc_id = vpc.id
    ec2 = ctx.ec2()
    observed = find_subnet(ctx, subnet)
    if observed is None:
        call(
            f"create subnet {subnet.component}",
            ec2.create_subnet,
            VpcId=vpc_id,
            CidrBlock=subnet.cidr,
            AvailabilityZone=subnet.az,
            TagSpecifications=_create_tags(ctx, "subnet", subnet.component),
        )
        observed = find_subnet(ctx, subnet)
        assert observed is not None
    change = plan_subnet(ctx, subnet, observed)
    refuse_replace(change)
    if change.action == "update":
        call(
            f"turn off public IPs on {subnet.component}",
            ec2.modify_subnet_attribute,
            SubnetId=observed.id,
            MapPublicIpOnLaunch={"Value": False},
        )
        observed.attrs["map_public_ip"] = False
    return observed


# ---------------------------------------------------------------- internet gateway


def find_internet_gateway(ctx: AwsContext) -> Observed | None:
    data = _find_one(ctx, "igw", ctx.ec2().describe_internet_gateways, "InternetGateways", "the internet gateway")
    if data is None:
        return None
    attached = sorted(
        a["VpcId"] for a in data.get("Attachments", []) if a.get("State") in ("available", "attached")
    )
    return _observed(data["InternetGatewayId"], data.get("Tags"), vpc_ids=attached)


def plan_internet_gateway(ctx: AwsContext, observed: Observed | None, vpc_id: str | None) -> Change:
    wanted = {"vpc_ids": [vpc_id or "(new vpc)"]}
    return plan_from("internet gateway", ctx.name("igw"), observed, wanted)


@aws_task(task_run_name="ensure internet gateway")
def ensure_internet_gateway(ctx: AwsContext, vpc: Observed) -> Observed:
    vpc_id = vpc.id
    ec2 = ctx.ec2()
    observed = find_internet_gateway(ctx)
    if observed is None:
        igw = call(
            "create the internet gateway",
            ec2.create_internet_gateway,
            TagSpecifications=_create_tags(ctx, "internet-gateway", "igw"),
        )["InternetGateway"]
        observed = _observed(igw["InternetGatewayId"], igw.get("Tags"), vpc_ids=[])
    if vpc_id not in observed.attrs["vpc_ids"]:
        call(
            "attach the internet gateway",
            ec2.attach_internet_gateway,
            InternetGatewayId=observed.id,
            VpcId=vpc_id,
        )
        observed.attrs["vpc_ids"] = [vpc_id]
    return observed


# ---------------------------------------------------------------- NAT gateways and their EIPs


def find_elastic_ip(ctx: AwsContext, az: str) -> Observed | None:
    component = f"eip-nat-{az_suffix(az)}"
    data = _find_one(ctx, component, ctx.ec2().describe_addresses, "Addresses", f"elastic IP {component}")
    if data is None:
        return None
    return _observed(data["AllocationId"], data.get("Tags"), public_ip=data.get("PublicIp"))


def find_nat_gateway(ctx: AwsContext, az: str) -> Observed | None:
    component = f"nat-{az_suffix(az)}"
    data = _find_one(ctx, component, ctx.ec2().describe_nat_gateways, "NatGateways", f"NAT gateway {component}",
                     extra_filters=[{"Name": "state", "Values": ["pending", "available"]}])
    if data is None:
        return None
    return _observed(data["NatGatewayId"], data.get("Tags"), subnet_id=data["SubnetId"], state=data["State"])


def plan_nat_gateway(ctx: AwsContext, az: str, observed: Observed | None) -> Change:
    name = ctx.name(f"nat-{az_suffix(az)}")
    return Change("nat gateway", name, "create" if observed is None else "no-op")


@aws_task(task_run_name="ensure nat gateway {az}")
def ensure_nat_gateway(ctx: AwsContext, az: str, public_subnet: Observed) -> Observed:
    """EIP + NAT gateway in one public subnet, waited until available."""
    public_subnet_id = public_subnet.id
    ec2 = ctx.ec2()
    suffix = az_suffix(az)
    observed = find_nat_gateway(ctx, az)
    if observed is None:
        eip = find_elastic_ip(ctx, az)
        if eip is None:
            allocated = call(
                f"allocate the EIP for nat-{suffix}",
                ec2.allocate_address,
                Domain="vpc",
                TagSpecifications=_create_tags(ctx, "elastic-ip", f"eip-nat-{suffix}"),
            )
            eip = _observed(allocated["AllocationId"], None)
        nat = call(
            f"create nat-{suffix}",
            ec2.create_nat_gateway,
            SubnetId=public_subnet_id,
            AllocationId=eip.id,
            ClientToken=ctx.token("nat", suffix, eip.id),
            TagSpecifications=_create_tags(ctx, "natgateway", f"nat-{suffix}"),
        )["NatGateway"]
        observed = _observed(
            nat["NatGatewayId"], nat.get("Tags"), subnet_id=public_subnet_id, state=nat["State"]
        )
    if observed.attrs["state"] != "available":
        nat_id = observed.id

        def available() -> bool:
            state = call(f"read {nat_id}", ec2.describe_nat_gateways, NatGatewayIds=[nat_id])["NatGateways"][
                0
            ]
            if state["State"] == "failed":
                raise EcsflowError(
                    f"NAT gateway {nat_id} failed: {state.get('FailureMessage')}; delete it and run again"
                )
            return state["State"] == "available"

        wait_until(
            f"NAT gateway {nat_id} ({az}) to become available",
            available,
            timeout=NAT_TIMEOUT,
            poll=ctx.poll_seconds,
        )
        observed.attrs["state"] = "available"
    return observed


# ---------------------------------------------------------------- route tables


@dataclass(frozen=True)
class RouteTableSpec:
    component: str
    subnet_components: tuple[str, ...]
    via: str  # "igw" or the component of a NAT gateway


def route_table_specs(spec: Stack) -> list[RouteTableSpec]:
    subnets = subnet_specs(spec)
    tables = [RouteTableSpec("rt-public", tuple(s.component for s in subnets if s.tier == "public"), "igw")]
    for s in subnets:
        if s.tier == "private":
            suffix = az_suffix(s.az)
            tables.append(
                RouteTableSpec(
                    f"rt-private-{suffix}", (s.component,), f"nat-{az_suffix(nat_zone_for(spec, s.az))}"
                )
            )
    return tables


def find_route_table(ctx: AwsContext, table: RouteTableSpec) -> Observed | None:
    data = _find_one(ctx, table.component, ctx.ec2().describe_route_tables, "RouteTables",
                     f"route table {table.component}")
    if data is None:
        return None
    default: dict[str, Any] = next(
        (dict(r) for r in data.get("Routes", []) if r.get("DestinationCidrBlock") == ALL_TRAFFIC), {}
    )
    target = default.get("GatewayId") or default.get("NatGatewayId")
    associations = {
        a["SubnetId"]: a["RouteTableAssociationId"] for a in data.get("Associations", []) if a.get("SubnetId")
    }
    return _observed(
        data["RouteTableId"],
        data.get("Tags"),
        default_route=target,
        subnet_ids=sorted(associations),
        association_ids=associations,
    )


def _route_table_wanted(gateway_id: str, subnet_ids: Iterable[str]) -> dict[str, Any]:
    return {"default_route": gateway_id, "subnet_ids": sorted(subnet_ids)}


def plan_route_table(
    ctx: AwsContext,
    table: RouteTableSpec,
    observed: Observed | None,
    gateway_id: str | None,
    subnet_ids: list[str] | None,
) -> Change:
    if observed is None or gateway_id is None or subnet_ids is None:
        return Change("route table", ctx.name(table.component), "create" if observed is None else "no-op")
    current = {k: observed.attrs[k] for k in ("default_route", "subnet_ids")}
    return plan_from(
        "route table",
        ctx.name(table.component),
        observed,
        _route_table_wanted(gateway_id, subnet_ids),
        current=current,
    )


@aws_task(task_run_name="ensure {table.component}")
def ensure_route_table(
    ctx: AwsContext, table: RouteTableSpec, vpc: Observed, gateway: Observed, subnets: list[Observed]
) -> Observed:
    vpc_id, gateway_id, subnet_ids = vpc.id, gateway.id, [s.id for s in subnets]
    ec2 = ctx.ec2()
    observed = find_route_table(ctx, table)
    if observed is None:
        data = call(
            f"create {table.component}",
            ec2.create_route_table,
            VpcId=vpc_id,
            ClientToken=ctx.token(table.component, vpc_id),
            TagSpecifications=_create_tags(ctx, "route-table", table.component),
        )["RouteTable"]
        observed = _observed(
            data["RouteTableId"], data.get("Tags"), default_route=None, subnet_ids=[], association_ids={}
        )
    rt_id = observed.id
    target = {"GatewayId": gateway_id} if gateway_id.startswith("igw-") else {"NatGatewayId": gateway_id}
    if observed.attrs["default_route"] is None:
        call(
            f"add the default route to {table.component}",
            ec2.create_route,
            RouteTableId=rt_id,
            DestinationCidrBlock=ALL_TRAFFIC,
            **target,
        )
    elif observed.attrs["default_route"] != gateway_id:
        call(
            f"repoint the default route of {table.component}",
            ec2.replace_route,
            RouteTableId=rt_id,
            DestinationCidrBlock=ALL_TRAFFIC,
            **target,
        )
    for subnet_id in sorted(set(subnet_ids) - set(observed.attrs["subnet_ids"])):
        _associate(ctx, rt_id, subnet_id)
    for subnet_id in sorted(set(observed.attrs["subnet_ids"]) - set(subnet_ids)):
        call(
            f"detach {subnet_id} from {table.component}",
            ec2.disassociate_route_table,
            AssociationId=observed.attrs["association_ids"][subnet_id],
        )
    observed.attrs.update(default_route=gateway_id, subnet_ids=sorted(subnet_ids))
    return observed


def _associate(ctx: AwsContext, rt_id: str, subnet_id: str) -> None:
    ec2 = ctx.ec2()
    try:
        call(
            f"associate {subnet_id} with {rt_id}",
            ec2.associate_route_table,
            RouteTableId=rt_id,
            SubnetId=subnet_id,
        )
    except EcsflowError as exc:
        # A subnet has one explicit route table: move it from whatever held it before.
        if "Resource.AlreadyAssociated" not in str(exc):
            raise
        tables = call(
            "find the subnet's route table",
            ec2.describe_route_tables,
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}],
        )["RouteTables"]
        for table in tables:
            for assoc in table.get("Associations", []):
                if assoc.get("SubnetId") == subnet_id:
                    call(
                        f"move {subnet_id} to {rt_id}",
                        ec2.replace_route_table_association,
                        AssociationId=assoc["RouteTableAssociationId"],
                        RouteTableId=rt_id,
                    )


# ---------------------------------------------------------------- security groups

SECURITY_GROUPS = {
    "sg-alb": "Load balancer: HTTP/HTTPS from the internet",
    "sg-ecs": "ECS tasks: app ports from the load balancer only",
    "sg-rds": "Database: PostgreSQL from the ECS tasks only",
}


@dataclass(frozen=True, order=True)
class Rule:
    egress: bool
    protocol: str
    from_port: int
    to_port: int
    peer: str  # a CIDR or a security group id
    description: str = ""

    def key(self) -> tuple[bool, str, int, int, str]:
        return (self.egress, self.protocol, self.from_port, self.to_port, self.peer)

    def __str__(self) -> str:
        way = "egress to" if self.egress else "ingress from"
        ports = "all" if self.protocol == "-1" else f"{self.protocol}/{self.from_port}-{self.to_port}"
        return f"{way} {self.peer} {ports}"


def security_rules(spec: Stack, groups: dict[str, str]) -> dict[str, list[Rule]]:
    """The chain ALB (80/443) -> ECS (app ports, from the ALB only) -> RDS (db port, from ECS only),
    with egress as narrow as each tier needs."""
    alb, ecs, rds = groups["sg-alb"], groups["sg-ecs"], groups["sg-rds"]
    app_ports = sorted({s.port for s in spec.services.values() if s.load_balanced and s.port is not None})
    db_port = spec.database.port
    return {
        "sg-alb": [
            Rule(False, "tcp", 80, 80, ALL_TRAFFIC, "HTTP, redirected to HTTPS"),
            Rule(False, "tcp", 443, 443, ALL_TRAFFIC, "HTTPS"),
            *(Rule(True, "tcp", p, p, ecs, "to the app containers") for p in app_ports),
        ],
        "sg-ecs": [
            *(Rule(False, "tcp", p, p, alb, "from the load balancer") for p in app_ports),
            Rule(True, "tcp", 443, 443, ALL_TRAFFIC, "AWS APIs, ECR, Secrets Manager, logs"),
            Rule(True, "tcp", db_port, db_port, rds, "to the database"),
        ],
        "sg-rds": [Rule(False, "tcp", db_port, db_port, ecs, "from the ECS tasks")],
    }


def find_security_group(ctx: AwsContext, component: str) -> Observed | None:
    data = _find_one(ctx, component, ctx.ec2().describe_security_groups, "SecurityGroups",
                     f"security group {component}")
    if data is None:
        return None
    return _observed(
        data["GroupId"],
        data.get("Tags"),
        group_name=data["GroupName"],
        description=data.get("Description"),
        vpc_id=data["VpcId"],
    )


def plan_security_group(ctx: AwsContext, component: str, observed: Observed | None) -> Change:
    return plan_from(
        "security group",
        ctx.name(component),
        observed,
        {"description": SECURITY_GROUPS[component]},
        immutable=["description"],
    )


@aws_task(task_run_name="ensure security group {component}")
def ensure_security_group(ctx: AwsContext, component: str, vpc: Observed) -> Observed:
    vpc_id = vpc.id
    observed = find_security_group(ctx, component)
    if observed is None:
        name = ctx.name(component)
        created = call(
            f"create security group {name}",
            ctx.ec2().create_security_group,
            GroupName=name,
            Description=SECURITY_GROUPS[component],
            VpcId=vpc_id,
            TagSpecifications=_create_tags(ctx, "security-group", component),
        )
        observed = _observed(
            created["GroupId"],
            created.get("Tags"),
            group_name=name,
            description=SECURITY_GROUPS[component],
            vpc_id=vpc_id,
        )
    refuse_replace(plan_security_group(ctx, component, observed))
    return observed


def find_default_security_group(ctx: AwsContext, vpc_id: str) -> str | None:
    found = call(
        "look up the default security group",
        ctx.ec2().describe_security_groups,
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}],
    )["SecurityGroups"]
    return found[0]["GroupId"] if found else None


def find_rules(ctx: AwsContext, group_id: str) -> dict[tuple[bool, str, int, int, str], str]:
    """The group's rules, keyed by what they allow, valued by rule id."""
    rules: dict[tuple[bool, str, int, int, str], str] = {}
    paginator = ctx.ec2().get_paginator("describe_security_group_rules")
    for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": [group_id]}]):
        for r in page["SecurityGroupRules"]:
            peer = (
                r.get("CidrIpv4")
                or r.get("CidrIpv6")
                or r.get("ReferencedGroupInfo", {}).get("GroupId")
                or r.get("PrefixListId")
                or "?"
            )
            key = (
                bool(r["IsEgress"]),
                str(r["IpProtocol"]),
                int(r.get("FromPort", -1)),
                int(r.get("ToPort", -1)),
                str(peer),
            )
            rules[key] = r["SecurityGroupRuleId"]
    return rules


def plan_rules(
    ctx: AwsContext, component: str, current: Iterable[tuple[bool, str, int, int, str]], wanted: list[Rule]
) -> Change:
    have = set(current)
    want = {r.key(): r for r in wanted}
    diffs = [FieldDiff("rule", None, str(want[k])) for k in sorted(set(want) - have)]
    diffs += [FieldDiff("rule", str(Rule(*k)), None) for k in sorted(have - set(want))]
    return Change("security group rules", ctx.name(component), "update" if diffs else "no-op", tuple(diffs))


@aws_task(task_run_name="ensure rules of {component}")
def ensure_chain_rules(spec: Stack, ctx: AwsContext, component: str, groups: dict[str, Observed]) -> Change:
    """The ALB -> ECS -> RDS chain's rules for one of its groups."""
    wanted = security_rules(spec, {c: g.id for c, g in groups.items()})[component]
    return apply_rules(ctx, component, groups[component].id, wanted)


@aws_task(task_run_name="close the default security group")
def ensure_default_group_closed(ctx: AwsContext, vpc: Observed) -> Change:
    """Nothing should use the default group; with no rules, whatever does gets no traffic (FSBP EC2.2)."""
    group_id = find_default_security_group(ctx, vpc.id)
    if group_id is None:
        return Change("security group rules", "default", "no-op")
    return apply_rules(ctx, "default", group_id, [])


def apply_rules(ctx: AwsContext, component: str, group_id: str, wanted: list[Rule]) -> Change:
    """Make the group's rules exactly `wanted`: add what is missing, revoke the rest
    (including AWS's default allow-all egress)."""
    ec2 = ctx.ec2()
    current = find_rules(ctx, group_id)
    change = plan_rules(ctx, component, current, wanted)
    want = {r.key(): r for r in wanted}
    for egress in (False, True):
        missing = [want[k] for k in sorted(set(want) - set(current)) if k[0] is egress]
        extra = [rule_id for k, rule_id in current.items() if k not in want and k[0] is egress]
        if extra:
            revoke: Callable[..., Any] = (
                ec2.revoke_security_group_egress if egress else ec2.revoke_security_group_ingress
            )
            call(f"revoke rules of {component}", revoke, GroupId=group_id, SecurityGroupRuleIds=extra)
        if missing:
            authorize: Callable[..., Any] = (
                ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
            )
            call(
                f"authorize rules of {component}",
                authorize,
                GroupId=group_id,
                IpPermissions=[_permission(r) for r in missing],
                TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": ctx.tags(component)}],
            )
    return change


def _permission(rule: Rule) -> dict[str, Any]:
    permission: dict[str, Any] = {
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
    }
    if rule.peer.startswith("sg-"):
        permission["UserIdGroupPairs"] = [{"GroupId": rule.peer, "Description": rule.description}]
    else:
        ipaddress.ip_network(rule.peer)
        permission["IpRanges"] = [{"CidrIp": rule.peer, "Description": rule.description}]
    return permission


# ---------------------------------------------------------------- S3 gateway endpoint


def find_s3_endpoint(ctx: AwsContext) -> Observed | None:
    data = _find_one(ctx, "vpce-s3", ctx.ec2().describe_vpc_endpoints, "VpcEndpoints", "the S3 gateway endpoint",
                     live=lambda e: e.get("State", "").lower() not in ("deleted", "deleting"))
    if data is None:
        return None
    return _observed(
        data["VpcEndpointId"], data.get("Tags"), route_table_ids=sorted(data.get("RouteTableIds", []))
    )


def plan_s3_endpoint(ctx: AwsContext, observed: Observed | None, route_table_ids: list[str] | None) -> Change:
    if observed is None or route_table_ids is None:
        return Change("vpc endpoint", ctx.name("vpce-s3"), "create" if observed is None else "no-op")
    return plan_from(
        "vpc endpoint",
        ctx.name("vpce-s3"),
        observed,
        {"route_table_ids": sorted(route_table_ids)},
    )


@aws_task(task_run_name="ensure s3 gateway endpoint")
def ensure_s3_endpoint(ctx: AwsContext, vpc: Observed, route_tables: list[Observed]) -> Observed:
    """Keeps S3 traffic (ECR image layers live there) off the NAT gateways: cheaper and private."""
    vpc_id, route_table_ids = vpc.id, [r.id for r in route_tables]
    ec2 = ctx.ec2()
    observed = find_s3_endpoint(ctx)
    if observed is None:
        data = call(
            "create the S3 gateway endpoint",
            ec2.create_vpc_endpoint,
            VpcEndpointType="Gateway",
            VpcId=vpc_id,
            ServiceName=f"com.amazonaws.{ctx.region}.s3",
            RouteTableIds=sorted(route_table_ids),
            ClientToken=ctx.token("vpce-s3", vpc_id),
            TagSpecifications=_create_tags(ctx, "vpc-endpoint", "vpce-s3"),
        )["VpcEndpoint"]
        return _observed(data["VpcEndpointId"], data.get("Tags"), route_table_ids=sorted(route_table_ids))
    add = sorted(set(route_table_ids) - set(observed.attrs["route_table_ids"]))
    remove = sorted(set(observed.attrs["route_table_ids"]) - set(route_table_ids))
    if add or remove:
        call(
            "update the S3 endpoint's route tables",
            ec2.modify_vpc_endpoint,
            VpcEndpointId=observed.id,
            AddRouteTableIds=add,
            RemoveRouteTableIds=remove,
        )
        observed.attrs["route_table_ids"] = sorted(route_table_ids)
    return observed


# ---------------------------------------------------------------- flow logs


def find_flow_log(ctx: AwsContext, vpc_id: str | None) -> Observed | None:
    if vpc_id is None:
        return None
    found = call(
        "look up the VPC flow log",
        ctx.ec2().describe_flow_logs,
        Filters=[{"Name": "resource-id", "Values": [vpc_id]}],
    )["FlowLogs"]
    ours = [f for f in found if ctx.owns(tag_map(f.get("Tags")))]
    data = _one(ours, "VPC flow logs")
    if data is None:
        return None
    return _observed(
        data["FlowLogId"],
        data.get("Tags"),
        traffic_type=data.get("TrafficType"),
        log_group=data.get("LogGroupName"),
        role_arn=data.get("DeliverLogsPermissionArn"),
    )


def _flow_log_wanted(spec: Stack, log_group: str, role_arn: str) -> dict[str, Any]:
    return {"traffic_type": spec.network.flow_logs.traffic_type, "log_group": log_group, "role_arn": role_arn}


def plan_flow_log(
    spec: Stack, ctx: AwsContext, observed: Observed | None, log_group: str, role_arn: str | None
) -> Change:
    if not spec.network.flow_logs.enabled:
        return Change("flow log", ctx.name("flow-log"), "delete" if observed else "no-op")
    if role_arn is None:
        return Change("flow log", ctx.name("flow-log"), "create" if observed is None else "no-op")
    wanted = _flow_log_wanted(spec, log_group, role_arn)
    change = plan_from("flow log", ctx.name("flow-log"), observed, wanted)
    # Flow logs cannot be modified; replacing ours is safe (a few seconds without records).
    return (
        change if change.action != "update" else Change(change.resource, change.name, "replace", change.diffs)
    )


@aws_task(task_run_name="ensure vpc flow log")
def ensure_flow_log(
    spec: Stack, ctx: AwsContext, vpc: Observed, log_group: Observed, role: Observed
) -> Observed | None:
    vpc_id, role_arn = vpc.id, role.id
    ec2 = ctx.ec2()
    observed = find_flow_log(ctx, vpc_id)
    change = plan_flow_log(spec, ctx, observed, log_group.name, role_arn)
    if change.action in ("replace", "delete") and observed is not None:
        call("delete the old flow log", ec2.delete_flow_logs, FlowLogIds=[observed.id])
        observed = None
    if change.action in ("create", "replace"):
        created = call(
            "create the VPC flow log",
            ec2.create_flow_logs,
            ResourceIds=[vpc_id],
            ResourceType="VPC",
            TrafficType=spec.network.flow_logs.traffic_type,
            LogDestinationType="cloud-watch-logs",
            LogGroupName=log_group.name,
            DeliverLogsPermissionArn=role_arn,
            ClientToken=ctx.token("flow-log", vpc_id, role_arn[-8:]),
            TagSpecifications=_create_tags(ctx, "vpc-flow-log", "flow-log"),
        )
        if created.get("Unsuccessful"):
            raise EcsflowError(f"creating the VPC flow log failed: {created['Unsuccessful']}")
        observed = find_flow_log(ctx, vpc_id)
    return observed


FLOW_LOG_GROUP = "vpc-flow-logs"


def flow_log_group(spec: Stack) -> logs.LogGroupSpec:
    return logs.LogGroupSpec(FLOW_LOG_GROUP, spec.network.flow_logs.retention_days)


def flow_log_role(ctx: AwsContext) -> iam.RoleSpec:
    group_arn = f"arn:aws:logs:{ctx.region}:{ctx.account_id()}:log-group:{logs.log_prefix(ctx)}{FLOW_LOG_GROUP}"
    return iam.RoleSpec(
        component="flow-logs",
        service_principal="vpc-flow-logs.amazonaws.com",
        inline_policies={"deliver-flow-logs": flow_log_policy(group_arn)},
        description="Delivers this stack's VPC flow logs to CloudWatch Logs",
    )


def flow_log_policy(log_group_arn: str) -> dict[str, Any]:
    """What the flow-log delivery role may do: write to its own log group, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ],
    }


# ---------------------------------------------------------------- inventory and deletion

# kind -> (describe method, result key, id key); the order is teardown order.
EC2_KINDS: dict[str, tuple[str, str, str]] = {
    "flow log": ("describe_flow_logs", "FlowLogs", "FlowLogId"),
    "vpc endpoint": ("describe_vpc_endpoints", "VpcEndpoints", "VpcEndpointId"),
    "nat gateway": ("describe_nat_gateways", "NatGateways", "NatGatewayId"),
    "elastic ip": ("describe_addresses", "Addresses", "AllocationId"),
    "route table": ("describe_route_tables", "RouteTables", "RouteTableId"),
    "internet gateway": ("describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
    "security group": ("describe_security_groups", "SecurityGroups", "GroupId"),
    "subnet": ("describe_subnets", "Subnets", "SubnetId"),
    "vpc": ("describe_vpcs", "Vpcs", "VpcId"),
}
GONE_STATES = {"deleted", "deleting", "failed"}


def inventory_network(ctx: AwsContext) -> dict[str, list[Observed]]:
    """Everything of the network family carrying our stack and env tags, by kind, in teardown order."""
    ec2 = ctx.ec2()
    inventory: dict[str, list[Observed]] = {}
    for kind, (method, key, id_key) in EC2_KINDS.items():
        items: list[Any]
        if kind == "flow log":
            items = [
                f
                for f in call("list flow logs", ec2.describe_flow_logs)["FlowLogs"]
                if ctx.owns(tag_map(f.get("Tags")))
            ]
        else:
            items = _tagged(ctx, call(f"list {kind}s", getattr(ec2, method), Filters=ctx.ec2_filters())[key])
        inventory[kind] = [
            _observed(item[id_key], item.get("Tags"), state=str(item.get("State", "")).lower(), raw=dict(item))
            for item in items
            if str(item.get("State", "")).lower() not in GONE_STATES
        ]
    return inventory


@aws_task(task_run_name="delete {kind} {observed.id}")
def delete_network_resource(kind: str, observed: Observed, ctx: AwsContext) -> None:
    """Delete one network resource we made, waiting where AWS deletes in the background."""
    require_ours(ctx, observed.tags, f"{kind} {observed.id}")
    ec2 = ctx.ec2()
    rid = observed.id
    doing = f"delete {kind} {rid}"
    if kind == "flow log":
        call_or_none(doing, ec2.delete_flow_logs, FlowLogIds=[rid])
    elif kind == "vpc endpoint":
        call_or_none(doing, ec2.delete_vpc_endpoints, VpcEndpointIds=[rid])
    elif kind == "nat gateway":
        call_or_none(doing, ec2.delete_nat_gateway, NatGatewayId=rid)

        def gone() -> bool:
            found = call_or_none(f"read {rid}", ec2.describe_nat_gateways, NatGatewayIds=[rid])
            return not found or all(n["State"] == "deleted" for n in found["NatGateways"])

        wait_until(f"NAT gateway {rid} to be deleted", gone, timeout=NAT_TIMEOUT, poll=ctx.poll_seconds)
    elif kind == "elastic ip":
        call_or_none(doing, ec2.release_address, AllocationId=rid)
    elif kind == "route table":
        for assoc in observed.attrs["raw"].get("Associations", []):
            if not assoc.get("Main"):
                call_or_none(
                    f"detach {assoc['RouteTableAssociationId']}",
                    ec2.disassociate_route_table,
                    AssociationId=assoc["RouteTableAssociationId"],
                )
        call_or_none(doing, ec2.delete_route_table, RouteTableId=rid)
    elif kind == "internet gateway":
        for attachment in observed.attrs["raw"].get("Attachments", []):
            call_or_none(
                f"detach {rid}", ec2.detach_internet_gateway, InternetGatewayId=rid, VpcId=attachment["VpcId"]
            )
        call_or_none(doing, ec2.delete_internet_gateway, InternetGatewayId=rid)
    elif kind == "security group":
        call_or_none(doing, ec2.delete_security_group, GroupId=rid)
    elif kind == "subnet":
        call_or_none(doing, ec2.delete_subnet, SubnetId=rid)
    elif kind == "vpc":
        call_or_none(doing, ec2.delete_vpc, VpcId=rid)
    else:
        raise ValueError(f"unknown network kind {kind}")


@aws_task(task_run_name="revoke cross-references of security group {observed.id}")
def revoke_all_rules(observed: Observed, ctx: AwsContext) -> None:
    """Security groups that reference each other cannot be deleted until the references go."""
    require_ours(ctx, observed.tags, f"security group {observed.id}")
    ec2 = ctx.ec2()
    rules = find_rules(ctx, observed.id)
    ingress = [rid for key, rid in rules.items() if not key[0]]
    egress = [rid for key, rid in rules.items() if key[0]]
    if ingress:
        call_or_none(
            "revoke ingress",
            ec2.revoke_security_group_ingress,
            GroupId=observed.id,
            SecurityGroupRuleIds=ingress,
        )
    if egress:
        call_or_none(
            "revoke egress",
            ec2.revoke_security_group_egress,
            GroupId=observed.id,
            SecurityGroupRuleIds=egress,
        )


# ---------------------------------------------------------------- the family's plan


def plan_network(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Plan every network resource; children of a missing parent are planned as creates."""
    vpc = find_vpc(ctx)
    changes = [plan_vpc(spec, ctx, vpc)]
    subnets = {s.component: find_subnet(ctx, s) if vpc else None for s in subnet_specs(spec)}
    changes += [plan_subnet(ctx, s, subnets[s.component]) for s in subnet_specs(spec)]
    igw = find_internet_gateway(ctx) if vpc else None
    changes.append(plan_internet_gateway(ctx, igw, vpc.id if vpc else None))
    nats = {f"nat-{az_suffix(az)}": find_nat_gateway(ctx, az) if vpc else None for az in nat_zones(spec)}
    changes += [plan_nat_gateway(ctx, az, nats[f"nat-{az_suffix(az)}"]) for az in nat_zones(spec)]
    gateways = {"igw": igw, **nats}
    tables = []
    for table in route_table_specs(spec):
        observed = find_route_table(ctx, table) if vpc else None
        gateway = gateways.get(table.via)
        members = [subnets[c] for c in table.subnet_components]
        subnet_ids = [m.id for m in members if m] if all(members) else None
        changes.append(plan_route_table(ctx, table, observed, gateway.id if gateway else None, subnet_ids))
        if table.via != "igw":
            tables.append(observed)
    if spec.network.s3_gateway_endpoint:
        endpoint = find_s3_endpoint(ctx) if vpc else None
        table_ids = [t.id for t in tables if t] if all(tables) else None
        changes.append(plan_s3_endpoint(ctx, endpoint, table_ids))
    groups = {c: find_security_group(ctx, c) if vpc else None for c in SECURITY_GROUPS}
    changes += [plan_security_group(ctx, c, groups[c]) for c in SECURITY_GROUPS]
    if all(groups.values()):
        wanted = security_rules(spec, {c: g.id for c, g in groups.items() if g})
        changes += [plan_rules(ctx, c, find_rules(ctx, g.id), wanted[c]) for c, g in groups.items() if g]
    else:
        changes += [Change("security group rules", ctx.name(c), "create") for c in SECURITY_GROUPS]
    default_group = find_default_security_group(ctx, vpc.id) if vpc else None
    if default_group:
        changes.append(plan_rules(ctx, "default", find_rules(ctx, default_group), []))
    if spec.network.flow_logs.enabled:
        group_spec, role_spec = flow_log_group(spec), flow_log_role(ctx)
        group = logs.find_log_group(ctx, group_spec)
        role = iam.find_role(ctx, role_spec)
        logs_key = kms.find_key(ctx, "logs")
        changes.append(logs.plan_log_group(ctx, group_spec, group, logs_key))
        changes.append(iam.plan_role(ctx, role_spec, role))
        changes.append(plan_flow_log(spec, ctx, find_flow_log(ctx, vpc.id if vpc else None),
                                     group_spec.name(ctx), role.id if role else None))
    return changes
