"""AWS console deep links for what ecsflow makes, built from what `Observed.id` already holds (an ARN,
an EC2 id, or a bare name with a `kind` hint), with no AWS call: the outputs artifact links every
resource without reading anything again.

The formats are the console's own (checked against the console in 2026); a resource the console has no
page for (a flow log, a scalable target's ARN) gets None, or the page it lives on when the id says which.
An ARN's own region wins over `region`: the CloudFront certificate lives in us-east-1, a snapshot copy
in the copy region.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tasks.contract import Observed, partition

# EC2 ids say their kind in their prefix.
EC2_PREFIXES = {
    "vpc-": "vpc", "subnet-": "subnet", "rtb-": "route table", "igw-": "internet gateway",
    "nat-": "nat gateway", "eipalloc-": "elastic ip", "sg-": "security group", "vpce-": "vpc endpoint",
    "fl-": "flow log",
}

# (service, resource type) of an ARN -> kind. An empty type: the resource part is the name itself.
ARN_KINDS = {
    ("ec2", "vpc"): "vpc", ("ec2", "subnet"): "subnet", ("ec2", "route-table"): "route table",
    ("ec2", "internet-gateway"): "internet gateway", ("ec2", "natgateway"): "nat gateway",
    ("ec2", "elastic-ip"): "elastic ip", ("ec2", "security-group"): "security group",
    ("ec2", "vpc-endpoint"): "vpc endpoint", ("ec2", "vpc-flow-log"): "flow log",
    ("rds", "db"): "db instance", ("rds", "subgrp"): "db subnet group", ("rds", "pg"): "db parameter group",
    ("rds", "snapshot"): "db snapshot",
    ("ecr", "repository"): "ecr repository",
    ("ecs", "cluster"): "ecs cluster", ("ecs", "service"): "ecs service", ("ecs", "task-definition"): "task definition",
    ("ecs", "task"): "ecs task",
    ("elasticloadbalancing", "loadbalancer"): "load balancer", ("elasticloadbalancing", "listener"): "listener",
    ("elasticloadbalancing", "listener-rule"): "listener rule", ("elasticloadbalancing", "targetgroup"): "target group",
    ("acm", "certificate"): "certificate",
    ("kms", "key"): "kms key",
    ("logs", "log-group"): "log group",
    ("iam", "role"): "iam role", ("iam", "oidc-provider"): "oidc provider",
    ("secretsmanager", "secret"): "secret",
    ("sns", ""): "sns topic",
    ("cloudwatch", "alarm"): "alarm", ("cloudwatch", "dashboard"): "dashboard",
    ("s3", ""): "s3 bucket",
    ("route53", "hostedzone"): "hosted zone", ("route53", "healthcheck"): "health check",
    ("cloudfront", "distribution"): "cloudfront distribution",
    ("wafv2", "regional"): "web acl", ("wafv2", "global"): "web acl",
    ("budgets", "budget"): "budget",
    ("application-autoscaling", "scalable-target"): "scalable target",
    ("securityhub", "hub"): "security hub",
    ("guardduty", "detector"): "guardduty detector",
}

KINDS = frozenset({*EC2_PREFIXES.values(), *ARN_KINDS.values(), "metric filter", "config recorder"})

# Where the resource part of an ARN separates type and name with ":" rather than "/".
_COLON_TYPES = {("rds", t) for t in ("db", "subgrp", "pg", "snapshot")} | {
    ("logs", "log-group"), ("secretsmanager", "secret"), ("cloudwatch", "alarm")}


@dataclass(frozen=True)
class Ref:
    """One resource as the link builders see it: its kind, the part after the type (the name or id, e.g.
    "vpc-0abc", "library-prod-db", "cluster/service"), where it lives, and the whole ARN when known."""

    kind: str
    name: str
    region: str
    partition: str = "aws"
    account: str = ""
    arn: str | None = None


def parse(resource_id_or_arn: str, region: str, kind: str | None = None) -> Ref | None:
    """The kind from the ARN (service and type) or the EC2 id's prefix; else `kind` names it."""
    value = resource_id_or_arn.strip()
    if value.startswith("arn:"):
        return _parse_arn(value, region)
    for prefix, ec2_kind in EC2_PREFIXES.items():
        if value.startswith(prefix) and (kind is None or kind == ec2_kind):
            return Ref(ec2_kind, value, region, partition(region))
    if kind is None or kind not in KINDS or not value:
        return None
    return Ref(kind, value, region, partition(region))


def resource_kind(resource_id_or_arn: str, kind: str | None = None) -> str | None:
    """What the id names ("vpc", "ecs service", ...), or None when neither it nor `kind` says."""
    ref = parse(resource_id_or_arn, "us-east-1", kind)
    return ref.kind if ref else None


def console_url(resource_id_or_arn: str, region: str, kind: str | None = None) -> str | None:
    """The AWS console page of one resource, or None when the id does not say what it is (give `kind`
    for a bare name) or the console has no page for it."""
    ref = parse(resource_id_or_arn, region, kind)
    if ref is None:
        return None
    build = _BUILDERS.get(ref.kind)
    return build(ref) if build else None


def _parse_arn(arn: str, region: str) -> Ref | None:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    _, partition, service, arn_region, account, resource = parts
    slash, colon = resource.find("/"), resource.find(":")
    if colon != -1 and (slash == -1 or colon < slash) and (service, resource[:colon]) in _COLON_TYPES:
        resource_type, name = resource[:colon], resource[colon + 1:]
    elif slash != -1:
        resource_type, name = resource[:slash], resource[slash + 1:]
    else:
        resource_type, name = "", resource
    kind = ARN_KINDS.get((service, resource_type))
    if kind is None:
        return None
    if service == "wafv2" and not name.startswith("webacl/"):
        return None  # an IP set or a rule group, not a web ACL
    if service == "s3" and "/" in name:
        return None  # an object, not a bucket
    return Ref(kind, name, arn_region or region, partition, account, arn)


_DOMAINS = {"aws": "console.aws.amazon.com", "aws-cn": "console.amazonaws.cn",
            "aws-us-gov": "console.amazonaws-us-gov.com"}


def _regional(ref: Ref, path: str) -> str:
    """A regional console page; `path` already holds its query and fragment."""
    domain = _DOMAINS.get(ref.partition, _DOMAINS["aws"])
    return f"https://{ref.region}.{domain}/{path}"


def _global(ref: Ref, path: str) -> str:
    """IAM, Route 53, CloudFront, WAF and Budgets: one console for every region."""
    return f"https://{_DOMAINS.get(ref.partition, _DOMAINS['aws'])}/{path}"


def _q(value: str) -> str:
    return quote(value, safe="")


def _cloudwatch_path(value: str) -> str:
    """CloudWatch's console escapes names twice, with "$" for "%": "/ecs/x" -> "$252Fecs$252Fx"."""
    return _q(_q(value)).replace("%", "$")


def _vpc(fragment: str) -> Callable[[Ref], str]:
    return lambda ref: _regional(ref, f"vpcconsole/home?region={ref.region}#{fragment}={ref.name}")


def _elb(fragment: str) -> Callable[[Ref], str | None]:
    return lambda ref: (_regional(ref, f"ec2/home?region={ref.region}#{fragment}={ref.arn}") if ref.arn else None)


def _rds(fragment: str) -> Callable[[Ref], str]:
    return lambda ref: _regional(ref, f"rds/home?region={ref.region}#{fragment.format(_q(ref.name))}")


def _ecs(ref: Ref, path: str) -> str:
    return _regional(ref, f"ecs/v2/{path}?region={ref.region}")


def _ecs_service(ref: Ref) -> str | None:
    # ARN: service/{cluster}/{service}; hint: {cluster}/{service}. The old ARN format (no cluster) has no page.
    cluster, _, service = ref.name.rpartition("/")
    return _ecs(ref, f"clusters/{_q(cluster)}/services/{_q(service)}") if cluster and service else None


def _ecs_task(ref: Ref) -> str | None:
    cluster, _, task_id = ref.name.rpartition("/")
    return _ecs(ref, f"clusters/{_q(cluster)}/tasks/{_q(task_id)}") if cluster and task_id else None


def _task_definition(ref: Ref) -> str | None:
    family, _, revision = ref.name.partition(":")
    return _ecs(ref, f"task-definitions/{_q(family)}/{_q(revision)}") if family and revision.isdigit() else None


def _scalable_target(ref: Ref) -> str | None:
    """The autoscaling of an ECS service lives on the service's page; its resource id names it
    (service/{cluster}/{service}); the scalable target's ARN does not."""
    if ref.arn is not None or not ref.name.startswith("service/"):
        return None
    return _ecs_service(Ref("ecs service", ref.name.removeprefix("service/"), ref.region, ref.partition))


def _repository(ref: Ref) -> str | None:
    if not ref.account:
        return None  # the page's path names the registry (account)
    return _regional(ref, f"ecr/repositories/private/{ref.account}/{ref.name}?region={ref.region}")


def _log_group(ref: Ref) -> str:
    name = ref.name.removesuffix(":*")
    return _regional(ref, f"cloudwatch/home?region={ref.region}#logsV2:log-groups/log-group/{_cloudwatch_path(name)}")


def _metric_filter(ref: Ref) -> str | None:
    """Our metric filter ids are "{log group}:{filter}": the filters are a tab of the log group's page."""
    group, _, name = ref.name.rpartition(":")
    if not group or not name:
        return None
    return _regional(ref, f"cloudwatch/home?region={ref.region}#logsV2:log-groups/log-group/"
                          f"{_cloudwatch_path(group)}/metric-filters")


def _secret(ref: Ref) -> str:
    # A secret's ARN ends in "-" and six random characters that its name does not have.
    name = ref.name
    if ref.arn is not None and re.fullmatch(r".+-[A-Za-z0-9]{6}", name):
        name = name[:-7]
    return _regional(ref, f"secretsmanager/secret?name={_q(name)}&region={ref.region}")


def _sns_topic(ref: Ref) -> str | None:
    return _regional(ref, f"sns/v3/home?region={ref.region}#/topic/{ref.arn}") if ref.arn else None


def _iam_role(ref: Ref) -> str:
    return _global(ref, f"iam/home#/roles/details/{_q(ref.name.rsplit('/', 1)[-1])}")


def _oidc_provider(ref: Ref) -> str | None:
    return _global(ref, f"iam/home#/identity_providers/details/OPENID/{_q(ref.arn)}") if ref.arn else None


def _web_acl(ref: Ref) -> str | None:
    # ARN: {regional|global}/webacl/{name}/{id}; the console's region for CloudFront's scope is "global".
    if ref.arn is None:
        return None
    scope = ref.arn.split(":", 5)[5].split("/", 1)[0]
    parts = ref.name.split("/")
    if len(parts) != 3:
        return None
    _, name, acl_id = parts
    region = "global" if scope == "global" else ref.region
    return _global(ref, f"wafv2/homev2/web-acl/{_q(name)}/{_q(acl_id)}/overview?region={region}")


def _s3_bucket(ref: Ref) -> str:
    if ref.partition == "aws":
        return f"https://s3.console.aws.amazon.com/s3/buckets/{ref.name}?region={ref.region}"
    return _regional(ref, f"s3/buckets/{ref.name}?region={ref.region}")


def _elb_listener_of_rule(ref: Ref) -> str | None:
    """A listener rule has no page of its own: its listener's page lists it."""
    if ref.arn is None:
        return None
    listener_arn = ref.arn.replace(":listener-rule/", ":listener/", 1).rsplit("/", 1)[0]
    return _regional(ref, f"ec2/home?region={ref.region}#ELBListenerV2:listenerArn={listener_arn}")


_BUILDERS: dict[str, Callable[[Ref], str | None]] = {
    "vpc": _vpc("VpcDetails:VpcId"),
    "subnet": _vpc("SubnetDetails:subnetId"),
    "route table": _vpc("RouteTableDetails:RouteTableId"),
    "internet gateway": _vpc("InternetGateway:internetGatewayId"),
    "nat gateway": _vpc("NatGatewayDetails:natGatewayId"),
    "elastic ip": _vpc("ElasticIpDetails:AllocationId"),
    "security group": _vpc("SecurityGroup:groupId"),
    "vpc endpoint": _vpc("EndpointDetails:vpcEndpointId"),
    # "flow log": none. A flow log is a tab of its VPC's page, which its id does not name.
    "db instance": _rds("database:id={};is-cluster=false"),
    "db subnet group": _rds("db-subnet-group:id={}"),
    "db parameter group": _rds("parameter-group-details:parameter-group-name={}"),
    "db snapshot": _rds("db-snapshot:id={}"),
    "ecr repository": _repository,
    "ecs cluster": lambda ref: _ecs(ref, f"clusters/{_q(ref.name)}"),
    "ecs service": _ecs_service,
    "ecs task": _ecs_task,
    "task definition": _task_definition,
    "scalable target": _scalable_target,
    "load balancer": _elb("LoadBalancer:loadBalancerArn"),
    "listener": _elb("ELBListenerV2:listenerArn"),
    "listener rule": _elb_listener_of_rule,
    "target group": _elb("TargetGroup:targetGroupArn"),
    "certificate": lambda ref: _regional(ref, f"acm/home?region={ref.region}#/certificates/{_q(ref.name)}"),
    "kms key": lambda ref: _regional(ref, f"kms/home?region={ref.region}#/kms/keys/{_q(ref.name)}"),
    "log group": _log_group,
    "metric filter": _metric_filter,
    "iam role": _iam_role,
    "oidc provider": _oidc_provider,
    "secret": _secret,
    "sns topic": _sns_topic,
    "alarm": lambda ref: _regional(ref, f"cloudwatch/home?region={ref.region}#alarmsV2:alarm/{_q(ref.name)}"),
    "dashboard": lambda ref: _regional(ref, f"cloudwatch/home?region={ref.region}#dashboards:name={_q(ref.name)}"),
    "s3 bucket": _s3_bucket,
    "hosted zone": lambda ref: _global(ref, f"route53/v2/hostedzones#ListRecordSets/{_q(ref.name)}"),
    "health check": lambda ref: _global(ref, f"route53/healthchecks/home#/details/{_q(ref.name)}"),
    "cloudfront distribution": lambda ref: _global(ref, f"cloudfront/v4/home#/distributions/{_q(ref.name)}"),
    "web acl": _web_acl,
    "budget": lambda ref: _global(ref, f"billing/home#/budgets/details?name={_q(ref.name)}"),
    "security hub": lambda ref: _regional(ref, f"securityhub/home?region={ref.region}#/summary"),
    "guardduty detector": lambda ref: _regional(ref, f"guardduty/home?region={ref.region}#/summary"),
    "config recorder": lambda ref: _regional(ref, f"config/home?region={ref.region}#/settings"),
}

# Runs, not resources a stack keeps: left out of the resource table.
TRANSIENT_KINDS = frozenset({"ecs task"})


@dataclass(frozen=True)
class ResourceRow:
    kind: str
    name: str
    id: str
    link: str | None


def resource_rows(results: Iterable[tuple[Any, str | None]], region: str) -> list[ResourceRow]:
    """One row per resource among task results (an `Observed`, or a list or dict of them), each with
    its kind hint (None: from the id). Only ids and names: an Observed's attrs never reach a row.
    Results of unknown kind (an account setting, a check) and one-off runs are left out."""
    rows: dict[str, ResourceRow] = {}
    for result, hint in results:
        for observed in _observed_in(result):
            row = _row(observed, region, hint)
            if row is not None and row.id not in rows:
                rows[row.id] = row
    return list(rows.values())


def _observed_in(result: Any) -> list[Observed]:
    if isinstance(result, (list, tuple)):
        return [o for item in result for o in _observed_in(item)]
    if isinstance(result, dict):
        return [o for item in result.values() for o in _observed_in(item)]
    return [result] if isinstance(result, Observed) and result.id else []


def _row(observed: Observed, region: str, hint: str | None) -> ResourceRow | None:
    ref = parse(observed.id, region, hint)
    if ref is None or ref.kind in TRANSIENT_KINDS:
        return None
    link = console_url(observed.id, region, hint)
    if link is None and ref.kind == "scalable target":
        link = console_url(observed.name, region, "scalable target")  # its name is the service's resource id
    if link is None and ref.kind == "flow log" and observed.attrs.get("log_group"):
        link = console_url(str(observed.attrs["log_group"]), region, "log group")  # where its records are
    return ResourceRow(ref.kind, str(observed.name), observed.id, link)


def markdown_table(rows: list[ResourceRow]) -> str:
    lines = ["| kind | name | id | console |", "|---|---|---|---|"]
    for row in rows:
        link = f"[open]({row.link})" if row.link else "-"
        lines.append(f"| {row.kind} | {_cell(row.name)} | `{_cell(row.id)}` | {link} |")
    return "\n".join(lines)


def _cell(value: str) -> str:
    return value.replace("|", "\\|")
