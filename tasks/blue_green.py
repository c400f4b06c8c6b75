"""Deployment strategy per service (stack file `deploy.services.<name>.strategy`).

rolling (the default): ECS rolling update, minimum healthy 100 % / maximum 200 %, the deployment
circuit breaker with rollback.

blue_green: ECS native blue/green (deploymentConfiguration.strategy BLUE_GREEN, ECS deployment
controller; chosen over CodeDeploy because it needs no CodeDeploy application, deployment group or
AppSpec, keeps the circuit breaker, and the same UpdateService call that rolls out a revision
starts it). What it needs, ensured before each blue/green rollout:
- an alternate target group `{stack}-{env}-{service}-alt`, a twin of the service's own (same VPC,
  port, health check); ECS starts the new (green) tasks there;
- a test listener rule on the HTTPS listener: requests carrying the `test_header` header reach
  the green tasks before production traffic moves (path patterns of the service as well);
- the production listener rule: the service's path rule, or the listener's default rule for the
  `/*` service; ECS moves it to the green target group, then waits the bake time before it stops
  the blue tasks (a rollback within the bake time is instant);
- an infrastructure role that ECS assumes to change those rules
  (AmazonECSInfrastructureRolePolicyForLoadBalancers).
Each rollout names the service's current production target group as primary and the other one as
alternate: after a blue/green deployment AWS swaps them.

All three are tagged as the stack's, so teardown's inventory finds them: the target group with the
load balancer's, the role under the stack's IAM path; the rule goes with its listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spec import Stack
from tasks import iam, services
from tasks import load_balancer as lb
from tasks.aws import AwsContext, EcsflowError, call, call_or_none
from tasks.contract import Observed, aws_task, refuse_foreign

INFRASTRUCTURE_POLICY = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
HTTPS = 443


def rolling_configuration() -> dict[str, Any]:
    return {**services.DEPLOYMENT, "strategy": "ROLLING"}


def blue_green_configuration(spec: Stack, service: str) -> dict[str, Any]:
    return {**services.DEPLOYMENT, "strategy": "BLUE_GREEN",
            "bakeTimeInMinutes": spec.deploy.for_service(service).bake_time_minutes}


def alternate_name(ctx: AwsContext, service: str) -> str:
    return ctx.name(f"{service}-alt", limit=lb.NAME_LIMIT)


def alternate_component(service: str) -> str:
    return f"tg-{service}-alt"


def test_rule_component(service: str) -> str:
    return f"rule-{service}-test"


def infrastructure_role(ctx: AwsContext) -> iam.RoleSpec:
    return iam.RoleSpec(component="ecs-infrastructure", service_principal="ecs.amazonaws.com",
                        managed_policy_arns=(INFRASTRUCTURE_POLICY,),
                        description=f"ecsflow {ctx.prefix}: ECS moves listener rules in blue/green deployments")


@dataclass(frozen=True)
class BlueGreen:
    production_target_group: str
    alternate_target_group: str
    production_rule: str
    test_rule: str
    role: str


def find_alternate(ctx: AwsContext, service: str) -> Observed | None:
    name = alternate_name(ctx, service)
    got = call_or_none(f"look up target group {name}", ctx.elbv2().describe_target_groups, Names=[name])
    items = (got or {}).get("TargetGroups", [])
    return lb._tg_observed(ctx, items[0]) if items else None


def _ensure_alternate(spec: Stack, ctx: AwsContext, service: str, primary: Observed) -> Observed:
    name = alternate_name(ctx, service)
    observed = find_alternate(ctx, service)
    if observed is not None:
        refuse_foreign(ctx, observed, f"target group {name}")
        return observed
    health = lb._tg_wanted(spec, ctx, service, str(primary.attrs.get("vpc_id")))["health_check"]
    data = call(f"create target group {name}", ctx.elbv2().create_target_group, Name=name, Protocol="HTTP",
                ProtocolVersion="HTTP1", Port=spec.services[service].port, VpcId=primary.attrs.get("vpc_id"),
                TargetType="ip", IpAddressType="ipv4", Tags=lb.elb_tags(ctx, alternate_component(service)),
                **health)["TargetGroups"][0]
    return lb._tg_observed(ctx, data, tags=ctx.tag_dict(alternate_component(service)))


def _rules(ctx: AwsContext, listener: str) -> list[dict[str, Any]]:
    return list(call("look up the listener's rules", ctx.elbv2().describe_rules, ListenerArn=listener)["Rules"])


def _test_priority(spec: Stack, service: str) -> int:
    """Just ahead of the service's path rule (ecsflow's path rules are multiples of 10)."""
    path = lb.rule_priorities(spec).get(service)
    return (path if path is not None else 10 * (len(lb.rule_priorities(spec)) + 1)) - 5


def _ensure_test_rule(spec: Stack, ctx: AwsContext, service: str, listener: str, production_group: str) -> str:
    svc = spec.services[service]
    header = spec.deploy.for_service(service).test_header
    tags = lb._read_elb_tags(ctx, [r["RuleArn"] for r in _rules(ctx, listener) if not r.get("IsDefault")])
    for arn, found in tags.items():
        if ctx.owns(found) and found.get("ecsflow:component") == test_rule_component(service):
            return arn
    conditions: list[dict[str, Any]] = [{"Field": "http-header",
                                         "HttpHeaderConfig": {"HttpHeaderName": header, "Values": ["*"]}}]
    if not svc.is_default_route:
        conditions.append({"Field": "path-pattern", "PathPatternConfig": {"Values": list(svc.path_patterns)}})
    data = call(f"create the blue/green test rule of {service}", ctx.elbv2().create_rule, ListenerArn=listener,
                Priority=_test_priority(spec, service), Conditions=conditions,
                Actions=[{"Type": "forward", "TargetGroupArn": production_group}],
                Tags=lb.elb_tags(ctx, test_rule_component(service)))["Rules"][0]
    return str(data["RuleArn"])


def _production_rule(spec: Stack, ctx: AwsContext, service: str, listener: str) -> str:
    rules = _rules(ctx, listener)
    if spec.services[service].is_default_route:
        return str(next(r["RuleArn"] for r in rules if r.get("IsDefault")))
    tags = lb._read_elb_tags(ctx, [r["RuleArn"] for r in rules if not r.get("IsDefault")])
    for arn, found in tags.items():
        if ctx.owns(found) and found.get("ecsflow:component") == lb.rule_component(service):
            return arn
    raise EcsflowError(f"the listener rule of {service} does not exist; run `ecsflow up --stack ...` first")


@aws_task(task_run_name="ensure blue/green {service}")
def ensure_blue_green(spec: Stack, ctx: AwsContext, service: str) -> BlueGreen:
    """The alternate target group, test listener rule and infrastructure role of one service, and
    which target group serves production now."""
    primary = lb.find_target_group(ctx, service)
    alb = lb.find_load_balancer(ctx)
    listener = lb.find_listener(ctx, alb.id, HTTPS) if alb else None
    current = services.find_service(ctx, service)
    if primary is None or listener is None or current is None:
        raise EcsflowError(f"blue/green for {service} needs its target group, the HTTPS listener and the ECS "
                           f"service; run `ecsflow up --stack ...` first")
    alternate = _ensure_alternate(spec, ctx, service, primary)
    attached = [x["targetGroupArn"] for x in current.attrs.get("load_balancers", []) if x.get("targetGroupArn")]
    production = attached[0] if attached and attached[0] in (primary.id, alternate.id) else primary.id
    other = alternate.id if production == primary.id else primary.id
    role = iam.ensure_role.fn(ctx, infrastructure_role(ctx))
    return BlueGreen(production_target_group=production, alternate_target_group=other,
                     production_rule=_production_rule(spec, ctx, service, listener.id),
                     test_rule=_ensure_test_rule(spec, ctx, service, listener.id, production), role=role.id)


def deployment_arguments(spec: Stack, ctx: AwsContext, service: str) -> dict[str, Any]:
    """The UpdateService arguments that choose the service's strategy (blue/green ensures its
    resources first)."""
    if spec.deploy.for_service(service).strategy != "blue_green":
        return {"deploymentConfiguration": rolling_configuration()}
    bg = ensure_blue_green.fn(spec, ctx, service)
    svc = spec.services[service]
    return {"deploymentConfiguration": blue_green_configuration(spec, service),
            "loadBalancers": [{"targetGroupArn": bg.production_target_group, "containerName": service,
                               "containerPort": svc.port,
                               "advancedConfiguration": {"alternateTargetGroupArn": bg.alternate_target_group,
                                                         "productionListenerRule": bg.production_rule,
                                                         "testListenerRule": bg.test_rule, "roleArn": bg.role}}]}
