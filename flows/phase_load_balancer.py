"""Phase 4: the load balancer. Needs only the public subnets and `sg-alb` (and the VPC for the
target groups), so it runs beside the database and the cluster:

    log bucket ──┐
    certificate ─┼─> https listener ─> path rules
    subnets, sg-alb ─> alb ─┬─> http listener (redirect only)
    vpc ─> target groups ───┘
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from flows.phase_network import submit_network
from spec import Stack
from tasks import edge, kms
from tasks import load_balancer as lb
from tasks.aws import AwsContext
from tasks.contract import Observed


@dataclass
class LoadBalancerFutures:
    bucket: PrefectFuture[Any]
    certificate: PrefectFuture[Any]
    alb: PrefectFuture[Any]
    target_groups: dict[str, PrefectFuture[Any]]
    listeners: dict[int, PrefectFuture[Any]]
    rules: PrefectFuture[Any]
    edge: list[PrefectFuture[Any]] = field(default_factory=list)  # Route 53, CloudFront, WAF (by stack setting)

    def routing(self) -> list[PrefectFuture[Any]]:
        """What attaches the target groups to the load balancer (an ECS service needs that first)."""
        return [*self.listeners.values(), self.rules]

    def all(self) -> list[PrefectFuture[Any]]:
        return [self.bucket, self.certificate, self.alb, *self.target_groups.values(), *self.routing(), *self.edge]


def submit_load_balancer(spec: Stack, ctx: AwsContext, *, vpc: PrefectFuture[Any],
                         public_subnets: list[PrefectFuture[Any]],
                         alb_security_group: PrefectFuture[Any]) -> LoadBalancerFutures:
    bucket = lb.ensure_log_bucket.submit(spec, ctx)
    certificate = lb.ensure_certificate.submit(spec, ctx)
    alb = lb.ensure_load_balancer.submit(spec, ctx, public_subnets, alb_security_group, bucket)
    groups = {service: lb.ensure_target_group.submit(spec, ctx, service, vpc)
              for service, svc in spec.services.items() if svc.load_balanced}
    listeners = {port: lb.ensure_listener.submit(spec, ctx, port, alb, certificate if port == 443 else None, groups)
                 for port in lb.LISTENERS}
    rules = lb.ensure_rules.submit(spec, ctx, listeners[443], groups)
    return LoadBalancerFutures(bucket=bucket, certificate=certificate, alb=alb, target_groups=groups,
                               listeners=listeners, rules=rules, edge=submit_edge(spec, ctx, alb=alb))


def submit_edge(spec: Stack, ctx: AwsContext, *, alb: PrefectFuture[Any]) -> list[PrefectFuture[Any]]:
    """The optional edge after the ALB (nothing when the stack asks for none of it):

        hosted zone ─> validation records (beside the ALB's certificate, which waits for them)
        origin secret ─┬─> alb web acl (origin check, or the WAF itself) ─> associated with the alb
        zone ─> cdn certificate (us-east-1) ─┐
        cloudfront web acl ──────────────────┴─> distribution ─> alias records ─> health check
    """
    if not edge.wants_edge(spec):
        return []
    lbs = spec.load_balancer
    futures: list[PrefectFuture[Any]] = []
    zone = edge.lookup_zone.submit(spec, ctx) if lbs.dns is not None else None
    if zone is not None:
        futures += [zone, edge.ensure_validation_records.submit(spec, ctx, zone)]
    secret = edge.ensure_origin_secret.submit(ctx) if lbs.cdn.enabled else None
    acls = {scope: edge.ensure_web_acl.submit(spec, ctx, scope, alb if scope == "REGIONAL" else None, secret)
            for scope in ("CLOUDFRONT", "REGIONAL")}
    futures += [f for f in (secret, *acls.values()) if f is not None]
    distribution = None
    if lbs.cdn.enabled and secret is not None:
        certificate = edge.ensure_cdn_certificate.submit(spec, ctx, zone)
        distribution = edge.ensure_distribution.submit(spec, ctx, alb, certificate, acls["CLOUDFRONT"], secret)
        futures += [certificate, distribution]
    if zone is not None:
        records = edge.ensure_records.submit(spec, ctx, zone, alb, distribution)
        futures.append(records)
        if lbs.dns is not None and lbs.dns.health_check:
            futures.append(edge.ensure_health_check.submit(spec, ctx, wait_for=[records]))
    return futures


def load_balancer_outputs(futures: LoadBalancerFutures) -> dict[str, Any]:
    alb = futures.alb.result()
    return {"load_balancer_dns": alb.attrs.get("dns_name"), "certificate_arn": futures.certificate.result().id}


def submit_load_balancer_teardown(found: dict[tuple[str, str], list[Observed]], ctx: AwsContext, *,
                                  after: list[PrefectFuture[Any]]) -> list[PrefectFuture[Any]]:
    """Rules, then listeners, then the ALB and the target groups, then the certificate and the log
    bucket. `after` (the ECS services) goes first: their tasks drain from the target groups."""
    family = "load_balancer"
    rules = [lb.delete_rule.submit(o, ctx, wait_for=after) for o in found[(family, "listener rule")]]
    listeners = [lb.delete_listener.submit(o, ctx, wait_for=after + rules) for o in found[(family, "listener")]]
    albs = [lb.delete_load_balancer.submit(o, ctx, wait_for=listeners) for o in found[(family, "load balancer")]]
    groups = [lb.delete_target_group.submit(o, ctx, wait_for=after + rules + listeners)
              for o in found[(family, "target group")]]
    certificates = [lb.delete_certificate.submit(o, ctx, wait_for=listeners + albs)
                    for o in found[(family, "certificate")]]
    buckets = [lb.delete_log_bucket.submit(o, ctx, wait_for=albs) for o in found[(family, "log bucket")]]
    return [*rules, *listeners, *albs, *groups, *certificates, *buckets, *submit_edge_teardown(found, ctx)]


def submit_edge_teardown(found: dict[tuple[str, str], list[Observed]], ctx: AwsContext) -> list[PrefectFuture[Any]]:
    """DNS records first (nobody is sent to what goes next), then the distribution (disabled, deployed,
    deleted), then its web ACL, certificate and origin secret; the ALB's web ACL lets go of it first."""
    def of(kind: str) -> list[Observed]:
        return found.get(("edge", kind), [])

    records = [edge.delete_records.submit(o, ctx) for o in of("dns records")]
    checks = [edge.delete_health_check.submit(o, ctx, wait_for=records) for o in of("health check")]
    distributions = [edge.delete_distribution.submit(o, ctx, wait_for=records) for o in of("cloudfront distribution")]
    acls = [edge.delete_web_acl.submit(o, ctx, wait_for=distributions) for o in of("web acl")]
    certificates = [edge.delete_cdn_certificate.submit(o, ctx, wait_for=distributions)
                    for o in of("cdn certificate")]
    secrets = [edge.delete_origin_secret.submit(o, ctx, wait_for=distributions + acls) for o in of("origin secret")]
    return [*records, *checks, *distributions, *acls, *certificates, *secrets]


@flow(name="load-balancer", description="ALB in the public subnets: access logs to S3, HTTP redirect, HTTPS with "
      "an ACM certificate and TLS 1.3, target groups and path rules per service.")
def load_balancer_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    # The load balancer needs the network's subnets and sg-alb; ensuring them is a no-op when they exist.
    net = submit_network(spec, ctx, kms.ensure_key.submit(ctx, "logs"))
    futures = submit_load_balancer(spec, ctx, vpc=net.vpc, public_subnets=net.tier("public"),
                                   alb_security_group=net.security_groups["sg-alb"])
    settle([*net.all(), *futures.all()])
    return load_balancer_outputs(futures)
