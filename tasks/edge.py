"""The edge in front of the load balancer, each part by stack setting (all off by default):

- Route 53 (`load_balancer.dns`): in the stack's public hosted zone (named, or found by the
  domain), alias records for the domain to the ALB (A) or, with the CDN, to CloudFront (A and
  AAAA); ACM's DNS-validation CNAME records, so the certificates validate by themselves; an HTTPS
  health check of the app's health path. Records carry no tags, so a TXT record
  `_ecsflow.{domain}` names their owner (stack and env): teardown deletes only what it marks.
- CloudFront (`load_balancer.cdn`): a distribution for the domain with a certificate of its own
  in us-east-1 (CloudFront takes no other region's), the managed CachingOptimized policy on the
  static paths, CachingDisabled on the API paths and the default route, every viewer header
  forwarded (so the ALB's certificate for the domain matches), HTTP/2 and 3, IPv6, TLS 1.2+.
  Its origin is protected by a secret header: a generated value in Secrets Manager (never
  logged, never a parameter or result; plans compare a digest of it) that CloudFront adds and a
  regional WAF web ACL on the ALB requires, so the ALB's own hostname answers 403.
- WAF (`load_balancer.waf`): a WAFv2 web ACL with the AWS managed rule groups (common rule
  set, known bad inputs, SQL injection) and a per-IP rate limit: on CloudFront (scope
  CLOUDFRONT, us-east-1) when the CDN is on, otherwise on the ALB (scope REGIONAL).

The origin check lives in WAF rather than in the ALB's listener rules so that the secret never
appears in a rule's conditions (which plans would print) and the load balancer family stays as
it is. Teardown: records first, then the distribution (disabled, deployed, deleted), then the
web ACLs (the regional one disassociated first), the CDN certificate, the health check and the
origin secret.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets as random_secrets
import time
from typing import Any

from spec import Stack
from tasks import load_balancer as lb
from tasks.aws import (
    TAG_COMPONENT,
    AwsContext,
    EcsflowError,
    call,
    call_or_none,
    error_code,
    progress,
    tag_map,
    wait_until,
)
from tasks.contract import (
    Change,
    Observed,
    aws_task,
    diff_fields,
    plan_from,
    project,
    refuse_foreign,
    require_ours,
)

CF_REGION = "us-east-1"  # CloudFront's certificates and web ACLs live here
CLOUDFRONT_ZONE = "Z2FDTNDATAQYW2"  # the hosted zone of every CloudFront alias target
ORIGIN_HEADER = "X-Origin-Verify"
# CloudFront's managed policies (the same IDs in every account).
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER = "216adef6-5c7f-47e4-b989-5492eafa07d3"
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                       "AWSManagedRulesSQLiRuleSet")
SECRET_COMPONENT = "origin-secret"
CDN_CERT_COMPONENT = "certificate-cdn"
DISTRIBUTION_COMPONENT = "cdn"
HEALTH_COMPONENT = "health-check"
RECORDS_COMPONENT = "dns-records"
WAF_COMPONENT = {"CLOUDFRONT": "waf-cdn", "REGIONAL": "waf-alb"}
MARKER = "_ecsflow"
RECORD_TTL = 300
CERT_RECORD_TIMEOUT = 10 * 60
DEPLOY_TIMEOUT = 45 * 60  # CloudFront takes minutes (sometimes tens) to deploy a disabled distribution


def _r53(ctx: AwsContext) -> Any:
    return ctx.client("route53", CF_REGION)


def _cf(ctx: AwsContext) -> Any:
    return ctx.client("cloudfront", CF_REGION)


def _waf(ctx: AwsContext, scope: str) -> Any:
    return ctx.client("wafv2", CF_REGION if scope == "CLOUDFRONT" else None)


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def wants_edge(spec: Stack) -> bool:
    edge = spec.load_balancer
    return edge.dns is not None or edge.cdn.enabled or edge.waf.enabled


def wants_web_acl(spec: Stack, scope: str) -> bool:
    edge = spec.load_balancer
    if scope == "CLOUDFRONT":
        return edge.cdn.enabled and edge.waf.enabled
    return edge.cdn.enabled or edge.waf.enabled  # the origin check, or the WAF itself


# ---------------------------------------------------------------- hosted zone (never ours)


def _zone_observed(data: dict[str, Any]) -> Observed:
    return Observed(id=data["Id"].rsplit("/", 1)[-1], name=_fqdn(data["Name"]),
                    attrs={"private": bool((data.get("Config") or {}).get("PrivateZone"))})


def find_zone(spec: Stack, ctx: AwsContext) -> Observed | None:
    """The public zone the stack names, or the one whose name is the longest suffix of the domain."""
    dns, domain = spec.load_balancer.dns, spec.load_balancer.domain
    if dns is None or domain is None:
        return None
    r53 = _r53(ctx)
    if dns.hosted_zone_id:
        got = call_or_none(f"look up hosted zone {dns.hosted_zone_id}", r53.get_hosted_zone, Id=dns.hosted_zone_id)
        return _zone_observed(got["HostedZone"]) if got else None
    labels = domain.split(".")
    names = [dns.hosted_zone_name] if dns.hosted_zone_name else [".".join(labels[i:]) for i in range(len(labels) - 1)]
    for name in names:
        got = call(f"look up hosted zone {name}", r53.list_hosted_zones_by_name, DNSName=_fqdn(name), MaxItems="5")
        for data in got.get("HostedZones", []):
            zone = _zone_observed(data)
            if zone.name == _fqdn(name) and not zone.attrs["private"]:
                return zone
    return None


@aws_task(task_run_name="look up hosted zone")
def lookup_zone(spec: Stack, ctx: AwsContext) -> Observed:
    zone = find_zone(spec, ctx)
    if zone is None:
        dns = spec.load_balancer.dns
        what = (dns.hosted_zone_id or dns.hosted_zone_name) if dns else None
        what = what or f"for {spec.load_balancer.domain}"
        raise EcsflowError(f"load_balancer.dns: no public Route 53 hosted zone {what} in this account; create it "
                           f"(and delegate the domain to it) or set load_balancer.dns.hosted_zone_id")
    return zone


# ---------------------------------------------------------------- records


def _marker_value(ctx: AwsContext) -> str:
    return f'"ecsflow:stack={ctx.stack} ecsflow:env={ctx.env}"'


def _marker_tags(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.strip('"').split() if "=" in part)


def _rrsets_under(ctx: AwsContext, zone_id: str, domain: str) -> list[dict[str, Any]]:
    """The record sets of the domain and its subdomains: Route 53 lists them contiguously."""
    r53 = _r53(ctx)
    found: list[dict[str, Any]] = []
    args: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": _fqdn(domain)}
    while True:
        page = call(f"list the records of {domain}", r53.list_resource_record_sets, **args)
        for rrset in page.get("ResourceRecordSets", []):
            name = _fqdn(rrset["Name"].replace("\\052", "*"))
            if name != _fqdn(domain) and not name.endswith("." + _fqdn(domain)):
                return found
            found.append(rrset)
        if not page.get("IsTruncated"):
            return found
        args.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])


def _alias_target(alb: Observed, distribution: Observed | None) -> tuple[list[str], dict[str, Any]]:
    if distribution is not None:
        return ["A", "AAAA"], {"HostedZoneId": CLOUDFRONT_ZONE, "DNSName": _fqdn(distribution.attrs["domain_name"]),
                               "EvaluateTargetHealth": False}
    # The ALB is IPv4 only: an A record. `dualstack.` is the name Route 53 aliases to an ALB by.
    return ["A"], {"HostedZoneId": alb.attrs["zone_id"], "DNSName": _fqdn(f"dualstack.{alb.attrs['dns_name']}"),
                   "EvaluateTargetHealth": True}


def records_wanted(spec: Stack, ctx: AwsContext, alb: Observed, distribution: Observed | None) -> dict[str, Any]:
    """(name type) -> the record set."""
    domain = _fqdn(str(spec.load_balancer.domain))
    types, target = _alias_target(alb, distribution)
    wanted: dict[str, Any] = {f"{domain} {t}": {"Name": domain, "Type": t, "AliasTarget": target} for t in types}
    wanted[f"{MARKER}.{domain} TXT"] = {"Name": f"{MARKER}.{domain}", "Type": "TXT", "TTL": RECORD_TTL,
                                        "ResourceRecords": [{"Value": _marker_value(ctx)}]}
    return wanted


def _normal_rrset(rrset: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(rrset)
    out["Name"] = _fqdn(out["Name"])
    if "AliasTarget" in out:
        out["AliasTarget"]["DNSName"] = _fqdn(out["AliasTarget"]["DNSName"])
    return out


def find_records(spec: Stack, ctx: AwsContext, zone: Observed) -> dict[str, Any]:
    domain = str(spec.load_balancer.domain)
    return {f"{_fqdn(r['Name'])} {r['Type']}": _normal_rrset(r) for r in _rrsets_under(ctx, zone.id, domain)}


def plan_records(spec: Stack, ctx: AwsContext, zone: Observed | None, current: dict[str, Any] | None,
                 wanted: dict[str, Any] | None) -> Change:
    name = str(spec.load_balancer.domain)
    if zone is None:
        return Change("dns records", name, "create", note="needs the hosted zone (load_balancer.dns)")
    if wanted is None or current is None:
        return Change("dns records", name, "create", note="waits for the load balancer / distribution")
    have = {k: project(current.get(k), v) if k in current else None for k, v in wanted.items()}
    marker = current.get(f"{MARKER}.{_fqdn(name)} TXT")
    if marker and _marker_tags(marker["ResourceRecords"][0]["Value"]) != _marker_tags(_marker_value(ctx)):
        return Change("dns records", name, "no-op", note=f"{MARKER}.{name} says another stack owns these records: "
                                                         f"ecsflow leaves them alone")
    diffs = diff_fields(have, wanted)
    if not any(k in current for k in wanted):
        return Change("dns records", name, "create")
    return Change("dns records", name, "update" if diffs else "no-op", diffs)


@aws_task(task_run_name="ensure dns records {spec.load_balancer.domain}")
def ensure_records(spec: Stack, ctx: AwsContext, zone: Observed, alb: Observed,
                   distribution: Observed | None) -> Observed:
    """Alias records and the ownership marker in one change batch; nothing when they already hold."""
    wanted = records_wanted(spec, ctx, alb, distribution)
    current = find_records(spec, ctx, zone)
    change = plan_records(spec, ctx, zone, current, wanted)
    if change.note.startswith(MARKER):
        raise EcsflowError(f"dns records of {spec.load_balancer.domain}: {change.note}")
    stale = [current[k] for k in current
             if k.split()[0] == _fqdn(str(spec.load_balancer.domain)) and k.split()[1] in ("A", "AAAA")
             and k not in wanted and f"{MARKER}.{k.split()[0]} TXT" in current]
    changes = [{"Action": "UPSERT", "ResourceRecordSet": wanted[k]} for k in sorted(wanted)
               if project(current.get(k), wanted[k]) != wanted[k]]
    changes += [{"Action": "DELETE", "ResourceRecordSet": r} for r in stale]  # e.g. AAAA once the CDN is off
    if changes:
        call(f"write the dns records of {spec.load_balancer.domain}", _r53(ctx).change_resource_record_sets,
             HostedZoneId=zone.id, ChangeBatch={"Comment": f"ecsflow {ctx.prefix}", "Changes": changes})
    return Observed(id=f"{zone.id}/{_fqdn(str(spec.load_balancer.domain))}", name=str(spec.load_balancer.domain),
                    tags=ctx.tag_dict(RECORDS_COMPONENT), attrs={"zone_id": zone.id, "records": sorted(wanted)})


def _upsert_validation(ctx: AwsContext, zone: Observed, records: list[dict[str, Any]]) -> int:
    """ACM's CNAME records, each once (the same for a domain in every region)."""
    r53 = _r53(ctx)
    changes = []
    for record in {r["Name"]: r for r in records}.values():
        existing = _rrsets_under(ctx, zone.id, record["Name"])
        rrset = {"Name": _fqdn(record["Name"]), "Type": record["Type"], "TTL": RECORD_TTL,
                 "ResourceRecords": [{"Value": record["Value"]}]}
        if not any(_fqdn(r["Name"]) == rrset["Name"] and r["Type"] == rrset["Type"]
                   and r.get("ResourceRecords") == rrset["ResourceRecords"] for r in existing):
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
    if changes:
        call("write ACM's validation records", r53.change_resource_record_sets, HostedZoneId=zone.id,
             ChangeBatch={"Comment": f"ecsflow {ctx.prefix}: ACM DNS validation", "Changes": changes})
    return len(changes)


@aws_task(task_run_name="ensure certificate validation records")
def ensure_validation_records(spec: Stack, ctx: AwsContext, zone: Observed) -> Observed | None:
    """Runs beside the load balancer's certificate request: waits until ACM shows the record to add,
    and adds it (the certificate task waits for the validation)."""
    lbs = spec.load_balancer
    if lbs.dns is None or not lbs.dns.validation_records or not lbs.domain or lbs.certificate_arn:
        return None

    def shown() -> Observed | None:
        cert = lb.find_certificate(spec, ctx)
        return cert if cert is not None and cert.attrs["records"] else None

    cert = wait_until(f"ACM to show the validation record of {lbs.domain}", shown, timeout=CERT_RECORD_TIMEOUT,
                      poll=ctx.poll_seconds)
    _upsert_validation(ctx, zone, cert.attrs["records"])
    return cert


# ---------------------------------------------------------------- health check


def health_path(spec: Stack) -> str:
    dns = spec.load_balancer.dns
    if dns is not None and dns.health_check_path:
        return dns.health_check_path
    default = lb.default_service(spec)
    return (spec.services[default].health_check_path if default else None) or "/"


def _health_wanted(spec: Stack, ctx: AwsContext) -> dict[str, Any]:
    return {"config": {"Type": "HTTPS", "FullyQualifiedDomainName": spec.load_balancer.domain,
                       "ResourcePath": health_path(spec), "Port": 443, "RequestInterval": 30, "FailureThreshold": 3,
                       "EnableSNI": True, "Inverted": False, "Disabled": False},
            "tags": ctx.tag_dict(HEALTH_COMPONENT)}


def _health_checks(ctx: AwsContext) -> list[Observed]:
    """Our health checks (Route 53 tags are read 10 at a time)."""
    r53 = _r53(ctx)
    pages = r53.get_paginator("list_health_checks").paginate()
    items = [h for page in call("list Route 53 health checks", lambda: list(pages)) for h in page["HealthChecks"]]
    tags: dict[str, dict[str, str]] = {}
    for start in range(0, len(items), 10):
        got = call("read health check tags", r53.list_tags_for_resources, ResourceType="healthcheck",
                   ResourceIds=[h["Id"] for h in items[start:start + 10]])
        tags.update({t["ResourceId"]: tag_map(t.get("Tags")) for t in got.get("ResourceTagSets", [])})
    return [Observed(id=h["Id"], name=str(h["HealthCheckConfig"].get("FullyQualifiedDomainName")),
                     tags=tags.get(h["Id"], {}), attrs={"config": h["HealthCheckConfig"],
                                                       "version": h.get("HealthCheckVersion")})
            for h in items if ctx.owns(tags.get(h["Id"], {}))]


def find_health_check(ctx: AwsContext) -> Observed | None:
    return next((h for h in _health_checks(ctx) if h.tags.get(TAG_COMPONENT) == HEALTH_COMPONENT), None)


def plan_health_check(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    name = f"https://{spec.load_balancer.domain}{health_path(spec)}"
    wanted = _health_wanted(spec, ctx)
    current = None
    if observed is not None:
        current = {"config": project(observed.attrs["config"], wanted["config"]),
                   "tags": {k: observed.tags.get(k) for k in wanted["tags"]}}
    return plan_from("route53 health check", name, observed, wanted, current=current)


@aws_task(task_run_name="ensure route53 health check")
def ensure_health_check(spec: Stack, ctx: AwsContext) -> Observed:
    """Route 53 tags a health check only after creating it (no tags in CreateHealthCheck)."""
    r53 = _r53(ctx)
    wanted = _health_wanted(spec, ctx)
    observed = find_health_check(ctx)
    if observed is None:
        # A caller reference is never reusable once its health check is deleted: the time keeps it fresh.
        reference = f"{ctx.token('health-check')}-{int(time.time())}"[-64:]
        data = call("create the route53 health check", r53.create_health_check, CallerReference=reference,
                    HealthCheckConfig=wanted["config"])["HealthCheck"]
        call("tag the route53 health check", r53.change_tags_for_resource, ResourceType="healthcheck",
             ResourceId=data["Id"], AddTags=ctx.tags(HEALTH_COMPONENT))
        return Observed(id=data["Id"], name=str(spec.load_balancer.domain), tags=wanted["tags"],
                        attrs={"config": data["HealthCheckConfig"]})
    fields = set(plan_health_check(spec, ctx, observed).changed_fields)
    if "config" in fields:
        config = {k: v for k, v in wanted["config"].items() if k not in ("Type", "RequestInterval")}
        data = call("update the route53 health check", r53.update_health_check, HealthCheckId=observed.id,
                    HealthCheckVersion=observed.attrs["version"], **config)["HealthCheck"]
        observed.attrs["config"] = data["HealthCheckConfig"]
    if "tags" in fields:
        call("tag the route53 health check", r53.change_tags_for_resource, ResourceType="healthcheck",
             ResourceId=observed.id, AddTags=ctx.tags(HEALTH_COMPONENT))
        observed.tags.update(wanted["tags"])
    return observed


@aws_task(task_run_name="delete route53 health check {observed.id}")
def delete_health_check(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"health check {observed.id}")
    call_or_none(f"delete health check {observed.id}", _r53(ctx).delete_health_check, HealthCheckId=observed.id)


# ---------------------------------------------------------------- the origin secret


def secret_name(ctx: AwsContext) -> str:
    return ctx.name(SECRET_COMPONENT, limit=256)


def _secret_observed(data: dict[str, Any]) -> Observed:
    return Observed(id=data["ARN"], name=data["Name"], tags=tag_map(data.get("Tags")),
                    attrs={"deleted": data.get("DeletedDate") is not None})


def find_origin_secret(ctx: AwsContext) -> Observed | None:
    got = call_or_none(f"look up secret {secret_name(ctx)}", ctx.client("secretsmanager").describe_secret,
                       SecretId=secret_name(ctx))
    return _secret_observed(got) if got else None


def plan_origin_secret(ctx: AwsContext, observed: Observed | None) -> Change:
    tags = ctx.tag_dict(SECRET_COMPONENT)
    wanted: dict[str, Any] = {"deleted": False, "tags": tags}
    current = None if observed is None else {"deleted": observed.attrs["deleted"],
                                             "tags": {k: observed.tags.get(k) for k in tags}}
    return plan_from("secret", secret_name(ctx), observed, wanted, current=current)


@aws_task(task_run_name="ensure cdn origin secret")
def ensure_origin_secret(ctx: AwsContext) -> Observed:
    """A generated header value; only its ARN leaves this task."""
    sm = ctx.client("secretsmanager")
    name = secret_name(ctx)
    observed = find_origin_secret(ctx)
    if observed is None:
        data = call(f"create secret {name}", sm.create_secret, Name=name,
                    SecretString=random_secrets.token_urlsafe(32),
                    ClientRequestToken=hashlib.sha256(ctx.token("origin-secret").encode()).hexdigest(),
                    Description=f"ecsflow {ctx.prefix}: the header CloudFront sends and the ALB's web ACL requires",
                    Tags=ctx.tags(SECRET_COMPONENT))
        return Observed(id=data["ARN"], name=name, tags=ctx.tag_dict(SECRET_COMPONENT), attrs={"deleted": False})
    refuse_foreign(ctx, observed, f"secret {name}")
    if observed.attrs["deleted"]:
        call(f"restore secret {name}", sm.restore_secret, SecretId=observed.id)
    if any(observed.tags.get(k) != v for k, v in ctx.tag_dict(SECRET_COMPONENT).items()):
        call(f"tag secret {name}", sm.tag_resource, SecretId=observed.id, Tags=ctx.tags(SECRET_COMPONENT))
    return observed


def _origin_value(ctx: AwsContext, secret_arn: str) -> str:
    """Read inside a task, used in a request, never returned or logged."""
    return str(call("read the origin secret", ctx.client("secretsmanager").get_secret_value,
                    SecretId=secret_arn)["SecretString"])


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


@aws_task(task_run_name="delete secret {observed.name}")
def delete_origin_secret(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"secret {observed.name}")
    call_or_none(f"delete secret {observed.name}", ctx.client("secretsmanager").delete_secret,
                 SecretId=observed.id, ForceDeleteWithoutRecovery=True)


# ---------------------------------------------------------------- CloudFront's certificate (us-east-1)


def find_cdn_certificate(spec: Stack, ctx: AwsContext) -> Observed | None:
    found = [c for c in _cdn_certificates(ctx, spec.load_balancer.domain)
             if c.attrs["status"] in ("ISSUED", "PENDING_VALIDATION")]
    found.sort(key=lambda c: (c.attrs["status"] != "ISSUED", c.id))
    return found[0] if found else None


def _cdn_certificates(ctx: AwsContext, domain: str | None = None) -> list[Observed]:
    acm = ctx.client("acm", CF_REGION)
    pages = acm.get_paginator("list_certificates").paginate(
        CertificateStatuses=["PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "FAILED"])
    found = []
    for page in call("list ACM certificates in us-east-1", lambda: list(pages)):
        for summary in page.get("CertificateSummaryList", []):
            if domain and summary.get("DomainName") != domain:
                continue
            arn = summary["CertificateArn"]
            tags = tag_map((call_or_none("read certificate tags", acm.list_tags_for_certificate,
                                         CertificateArn=arn) or {}).get("Tags"))
            if not ctx.owns(tags) or tags.get(TAG_COMPONENT) != CDN_CERT_COMPONENT:
                continue
            got = call_or_none("read certificate", acm.describe_certificate, CertificateArn=arn)
            if got:
                found.append(lb._cert_observed(got["Certificate"], tags, external=False))
    return found


def plan_cdn_certificate(spec: Stack, observed: Observed | None) -> Change:
    name = f"{spec.load_balancer.domain} (us-east-1, CloudFront)"
    if observed is None:
        return Change("acm certificate", name, "create", note="DNS validation")
    return Change("acm certificate", name, "no-op",
                  note="" if observed.attrs["status"] == "ISSUED" else "waiting for DNS validation")


@aws_task(task_run_name="ensure cdn certificate (us-east-1)")
def ensure_cdn_certificate(spec: Stack, ctx: AwsContext, zone: Observed | None) -> Observed:
    """Requested with DNS validation; its CNAME goes into the zone (when the stack names one)."""
    domain = str(spec.load_balancer.domain)
    acm = ctx.client("acm", CF_REGION)
    observed = find_cdn_certificate(spec, ctx)
    write = zone is not None and spec.load_balancer.dns is not None and spec.load_balancer.dns.validation_records
    if observed is not None and observed.attrs["status"] == "ISSUED":
        if write and zone is not None and observed.attrs["records"]:
            _upsert_validation(ctx, zone, observed.attrs["records"])  # renewals validate through it too
        return observed
    if observed is None:
        token = hashlib.sha256(ctx.token("certificate-cdn", domain).encode()).hexdigest()[:32]
        arn = call(f"request a us-east-1 certificate for {domain}", acm.request_certificate, DomainName=domain,
                   ValidationMethod="DNS", IdempotencyToken=token, KeyAlgorithm="RSA_2048",
                   Options={"CertificateTransparencyLoggingPreference": "ENABLED"},
                   Tags=ctx.tags(CDN_CERT_COMPONENT))["CertificateArn"]
    else:
        arn = observed.id
    said: list[str] = []

    def issued() -> Observed | None:
        data = call(f"read certificate {arn}", acm.describe_certificate, CertificateArn=arn)["Certificate"]
        cert = lb._cert_observed(data, ctx.tag_dict(CDN_CERT_COMPONENT), external=False)
        status = cert.attrs["status"]
        if status in ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED"):
            raise EcsflowError(f"CloudFront certificate {arn} for {domain} is {status}; delete it and run again")
        if cert.attrs["records"] and not said:
            if write and zone is not None:
                _upsert_validation(ctx, zone, cert.attrs["records"])
            elif status != "ISSUED":
                for record in cert.attrs["records"]:
                    progress(f"CloudFront certificate for {domain}: add the DNS record {record['Name']} "
                             f"{record['Type']} {record['Value']}")
            said.append("yes")
        return cert if status == "ISSUED" else None

    return wait_until(f"CloudFront certificate {arn} ({domain}) to be issued", issued, timeout=lb.CERT_TIMEOUT,
                      poll=ctx.poll_seconds)


@aws_task(task_run_name="delete cdn certificate {observed.name}")
def delete_cdn_certificate(observed: Observed, ctx: AwsContext) -> None:
    """After the distribution is gone (ResourceInUse until then, retried)."""
    require_ours(ctx, observed.tags, f"certificate {observed.id}")
    call_or_none(f"delete certificate {observed.id}", ctx.client("acm", CF_REGION).delete_certificate,
                 CertificateArn=observed.id)


# ---------------------------------------------------------------- WAF web ACLs


def web_acl_name(ctx: AwsContext, scope: str) -> str:
    return ctx.name(WAF_COMPONENT[scope], limit=128)


def _visibility(metric: str) -> dict[str, Any]:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric}


def web_acl_rules(spec: Stack, scope: str, origin_value: str | None) -> list[dict[str, Any]]:
    """The managed rule groups and the rate limit where the WAF sits; on the ALB behind CloudFront, the
    origin check first (a request without CloudFront's secret header is blocked)."""
    edge = spec.load_balancer
    rules: list[dict[str, Any]] = []
    if scope == "REGIONAL" and edge.cdn.enabled:
        rules.append({"Name": "origin-verify", "Priority": 0, "Action": {"Block": {}},
                      "VisibilityConfig": _visibility("origin-verify"),
                      "Statement": {"NotStatement": {"Statement": {"ByteMatchStatement": {
                          "SearchString": (origin_value or "").encode(),
                          "FieldToMatch": {"SingleHeader": {"Name": ORIGIN_HEADER.lower()}},
                          "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
                          "PositionalConstraint": "EXACTLY"}}}}})
    if edge.waf.enabled and (scope == "CLOUDFRONT") == edge.cdn.enabled:
        rules += [{"Name": group, "Priority": 10 * (i + 1), "OverrideAction": {"None": {}},
                   "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": group}},
                   "VisibilityConfig": _visibility(group)} for i, group in enumerate(MANAGED_RULE_GROUPS)]
        rules.append({"Name": "rate-limit", "Priority": 100, "Action": {"Block": {}},
                      "Statement": {"RateBasedStatement": {"Limit": edge.waf.rate_limit_per_5min,
                                                           "AggregateKeyType": "IP"}},
                      "VisibilityConfig": _visibility("rate-limit")})
    return rules


def _comparable_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules without the origin secret: plans never show it (WAF also echoes it in its own encoding)."""
    out = copy.deepcopy(rules)
    for rule in out:
        match = rule.get("Statement", {}).get("NotStatement", {}).get("Statement", {}).get("ByteMatchStatement")
        if match is not None:
            match["SearchString"] = "(secret)"
    return out


def find_web_acl(ctx: AwsContext, scope: str) -> Observed | None:
    waf = _waf(ctx, scope)
    name = web_acl_name(ctx, scope)
    listed = call(f"list {scope.lower()} web ACLs", waf.list_web_acls, Scope=scope, Limit=100)["WebACLs"]
    summary = next((a for a in listed if a["Name"] == name), None)
    if summary is None:
        return None
    got = call_or_none(f"read web ACL {name}", waf.get_web_acl, Name=name, Scope=scope, Id=summary["Id"])
    if got is None:
        return None
    tags = call(f"read the tags of web ACL {name}", waf.list_tags_for_resource, ResourceARN=summary["ARN"])
    acl = got["WebACL"]
    return Observed(id=acl["ARN"], name=name, tags=tag_map((tags.get("TagInfoForResource") or {}).get("TagList")),
                    attrs={"scope": scope, "acl_id": acl["Id"], "lock_token": got.get("LockToken"),
                           "default_action": acl.get("DefaultAction"),
                           # without the origin secret: an Observed may end up in a log or a result
                           "rules": _comparable_rules(acl.get("Rules", []))})


def _acl_wanted(spec: Stack, ctx: AwsContext, scope: str) -> dict[str, Any]:
    return {"default_action": {"Allow": {}}, "rules": _comparable_rules(web_acl_rules(spec, scope, None)),
            "tags": ctx.tag_dict(WAF_COMPONENT[scope])}


def _acl_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    """Each rule cut to the shape of the wanted rule of its name (rules differ in shape)."""
    shapes = {r["Name"]: r for r in wanted["rules"]}
    rules = [project(r, shapes[r["Name"]]) if r.get("Name") in shapes else r for r in observed.attrs.get("rules") or []]
    return {"default_action": observed.attrs.get("default_action"), "rules": _comparable_rules(rules),
            "tags": {k: observed.tags.get(k) for k in wanted["tags"]}}


def plan_web_acl(spec: Stack, ctx: AwsContext, scope: str, observed: Observed | None) -> Change:
    name = f"{web_acl_name(ctx, scope)} ({scope.lower()})"
    if not wants_web_acl(spec, scope):
        return Change("waf web acl", name, "delete" if observed and ctx.owns(observed.tags) else "no-op")
    wanted = _acl_wanted(spec, ctx, scope)
    return plan_from("waf web acl", name, observed, wanted,
                     current=_acl_current(observed, wanted) if observed else None)


@aws_task(task_run_name="ensure waf web acl {scope}")
def ensure_web_acl(spec: Stack, ctx: AwsContext, scope: str, alb: Observed | None,
                   origin_secret: Observed | None) -> Observed | None:
    """Create, reconcile or (when the stack turned it off) remove the web ACL; the regional one is
    associated with the ALB."""
    waf = _waf(ctx, scope)
    name = web_acl_name(ctx, scope)
    observed = find_web_acl(ctx, scope)
    if not wants_web_acl(spec, scope):
        if observed is not None and ctx.owns(observed.tags):
            delete_web_acl.fn(observed, ctx, alb_arn=alb.id if alb else None)
        return None
    value = _origin_value(ctx, origin_secret.id) if scope == "REGIONAL" and origin_secret else None
    rules = web_acl_rules(spec, scope, value)
    if scope == "REGIONAL" and spec.load_balancer.cdn.enabled and value is None:
        raise EcsflowError("the ALB's web ACL needs the CDN origin secret; run `ecsflow up` again")
    args = {"DefaultAction": {"Allow": {}}, "Rules": rules, "VisibilityConfig": _visibility(name.replace("-", ""))}
    if observed is None:
        summary = call(f"create web ACL {name}", waf.create_web_acl, Name=name, Scope=scope,
                       Description=f"ecsflow {ctx.prefix}", Tags=ctx.tags(WAF_COMPONENT[scope]), **args)["Summary"]
        observed = Observed(id=summary["ARN"], name=name, tags=ctx.tag_dict(WAF_COMPONENT[scope]),
                            attrs={"scope": scope, "acl_id": summary["Id"]})
    else:
        refuse_foreign(ctx, observed, f"web ACL {name}")
        fields = set(plan_web_acl(spec, ctx, scope, observed).changed_fields)
        if fields - {"tags"}:
            call(f"update web ACL {name}", waf.update_web_acl, Name=name, Scope=scope, Id=observed.attrs["acl_id"],
                 LockToken=observed.attrs["lock_token"], **args)
        if "tags" in fields:
            call(f"tag web ACL {name}", waf.tag_resource, ResourceARN=observed.id,
                 Tags=ctx.tags(WAF_COMPONENT[scope]))
    if scope == "REGIONAL" and alb is not None:
        got = call(f"read the web ACL of {alb.name}", waf.get_web_acl_for_resource, ResourceArn=alb.id)
        if (got.get("WebACL") or {}).get("ARN") != observed.id:
            call(f"associate web ACL {name} with {alb.name}", waf.associate_web_acl, WebACLArn=observed.id,
                 ResourceArn=alb.id)
    return observed


def inventory_web_acls(ctx: AwsContext) -> list[Observed]:
    return [acl for scope in ("CLOUDFRONT", "REGIONAL") if (acl := find_web_acl(ctx, scope)) and ctx.owns(acl.tags)]


@aws_task(task_run_name="delete waf web acl {observed.name}")
def delete_web_acl(observed: Observed, ctx: AwsContext, *, alb_arn: str | None = None) -> None:
    """The regional ACL lets go of the ALB first (WAFAssociatedItemException otherwise); the
    CloudFront one after its distribution is gone."""
    require_ours(ctx, observed.tags, f"web ACL {observed.name}")
    scope = observed.attrs["scope"]
    waf = _waf(ctx, scope)
    if scope == "REGIONAL":
        # We associate it with our ALB only (a deleted ALB lets go by itself); asked by the ALB's side,
        # since ListResourcesForWebACL fails on moto (tests/test_moto_smoke_edge.py).
        alb = None if alb_arn else lb.find_load_balancer(ctx)
        arn = alb_arn or (alb.id if alb else None)
        got = _waf_or_none("read the ALB's web ACL", waf.get_web_acl_for_resource, ResourceArn=arn) if arn else None
        if arn and ((got or {}).get("WebACL") or {}).get("ARN") == observed.id:
            _waf_or_none(f"disassociate web ACL {observed.name}", waf.disassociate_web_acl, ResourceArn=arn)
    current = find_web_acl(ctx, scope)
    if current is None:
        return
    _waf_or_none(f"delete web ACL {observed.name}", waf.delete_web_acl, Name=current.name, Scope=scope,
                 Id=current.attrs["acl_id"], LockToken=current.attrs["lock_token"])


def _waf_or_none(doing: str, fn: Any, **kwargs: Any) -> Any:
    """WAF says WAFNonexistentItemException for a resource (or an ALB being deleted beside) that is gone."""
    try:
        return call_or_none(doing, fn, **kwargs)
    except EcsflowError as exc:
        if exc.__cause__ is not None and error_code(exc.__cause__) == "WAFNonexistentItemException":
            return None
        raise


# ---------------------------------------------------------------- CloudFront


def _comment(ctx: AwsContext) -> str:
    return f"ecsflow {ctx.prefix}"


ALL_METHODS = {"Quantity": 7, "Items": ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"],
               "CachedMethods": {"Quantity": 2, "Items": ["GET", "HEAD"]}}
READ_METHODS = {"Quantity": 2, "Items": ["GET", "HEAD"], "CachedMethods": {"Quantity": 2, "Items": ["GET", "HEAD"]}}


def _behaviour(cache_policy: str, methods: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    behaviour = {"TargetOriginId": "alb", "ViewerProtocolPolicy": "redirect-to-https", "AllowedMethods": methods,
                 "Compress": True, "CachePolicyId": cache_policy, "OriginRequestPolicyId": ALL_VIEWER}
    return {"PathPattern": path, **behaviour} if path else behaviour


def distribution_config(spec: Stack, ctx: AwsContext, *, alb_dns: str, certificate_arn: str,
                        web_acl_arn: str | None, origin_value: str) -> dict[str, Any]:
    cdn = spec.load_balancer.cdn
    behaviours = [_behaviour(CACHING_DISABLED, ALL_METHODS, p) for p in cdn.uncached_paths]
    behaviours += [_behaviour(CACHING_OPTIMIZED, READ_METHODS, p) for p in cdn.static_paths]
    return {
        "CallerReference": ctx.token("distribution"),
        "Comment": _comment(ctx),
        "Enabled": True,
        "Aliases": {"Quantity": 1, "Items": [str(spec.load_balancer.domain)]},
        "Origins": {"Quantity": 1, "Items": [{
            "Id": "alb", "DomainName": alb_dns, "OriginPath": "",
            "CustomHeaders": {"Quantity": 1, "Items": [{"HeaderName": ORIGIN_HEADER, "HeaderValue": origin_value}]},
            "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443, "OriginProtocolPolicy": "https-only",
                                   "OriginSslProtocols": {"Quantity": 1, "Items": ["TLSv1.2"]},
                                   "OriginReadTimeout": 30, "OriginKeepaliveTimeout": 5}}]},
        "DefaultCacheBehavior": _behaviour(CACHING_DISABLED, ALL_METHODS),
        # AWS omits Items when there are none: so do we, or the plan would see a difference that never goes.
        "CacheBehaviors": {"Quantity": len(behaviours), **({"Items": behaviours} if behaviours else {})},
        "ViewerCertificate": {"ACMCertificateArn": certificate_arn, "SSLSupportMethod": "sni-only",
                              "MinimumProtocolVersion": "TLSv1.2_2021"},
        "PriceClass": cdn.price_class,
        "HttpVersion": "http2and3",
        "IsIPV6Enabled": True,
        "WebACLId": web_acl_arn or "",
    }


def _masked(config: dict[str, Any]) -> dict[str, Any]:
    """The origin header's value as a digest: what plans compare and show."""
    out = copy.deepcopy(config)
    for origin in (out.get("Origins") or {}).get("Items") or []:
        for header in (origin.get("CustomHeaders") or {}).get("Items") or []:
            header["HeaderValue"] = _digest(str(header.get("HeaderValue")))
    return out


def _distribution_observed(ctx: AwsContext, summary: dict[str, Any], tags: dict[str, str]) -> Observed:
    got = call(f"read distribution {summary['Id']}", _cf(ctx).get_distribution_config, Id=summary["Id"])
    return Observed(id=summary["ARN"], name=summary["Id"], tags=tags,
                    attrs={"distribution_id": summary["Id"], "domain_name": summary["DomainName"],
                           "status": summary.get("Status"), "etag": got["ETag"], "config": got["DistributionConfig"]})


def _distributions(ctx: AwsContext) -> list[Observed]:
    cf = _cf(ctx)
    pages = cf.get_paginator("list_distributions").paginate()
    items = [d for page in call("list CloudFront distributions", lambda: list(pages))
             for d in (page.get("DistributionList") or {}).get("Items", []) or []]
    found = []
    for summary in items:
        if summary.get("Comment") != _comment(ctx):
            continue
        tags = tag_map((call("read distribution tags", cf.list_tags_for_resource,
                             Resource=summary["ARN"]).get("Tags") or {}).get("Items"))
        if ctx.owns(tags):
            found.append(_distribution_observed(ctx, summary, tags))
    return found


def find_distribution(ctx: AwsContext) -> Observed | None:
    return next(iter(_distributions(ctx)), None)


def _distribution_wanted(spec: Stack, ctx: AwsContext, alb: Observed, certificate: Observed,
                         web_acl: Observed | None, origin_value: str) -> dict[str, Any]:
    config = distribution_config(spec, ctx, alb_dns=alb.attrs["dns_name"], certificate_arn=certificate.id,
                                 web_acl_arn=web_acl.id if web_acl else None, origin_value=origin_value)
    config.pop("CallerReference")
    return {"config": _masked(config), "tags": ctx.tag_dict(DISTRIBUTION_COMPONENT)}


def _distribution_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    return {"config": _masked(project(observed.attrs["config"], wanted["config"])),
            "tags": {k: observed.tags.get(k) for k in wanted["tags"]}}


def plan_distribution(spec: Stack, ctx: AwsContext, observed: Observed | None,
                      wanted: dict[str, Any] | None) -> Change:
    name = f"{spec.load_balancer.domain} (cloudfront)"
    if observed is None:
        return Change("cloudfront distribution", name, "create")
    if wanted is None:
        return Change("cloudfront distribution", name, "no-op", note="its certificate or load balancer is missing")
    return plan_from("cloudfront distribution", name, observed, wanted, current=_distribution_current(observed, wanted))


@aws_task(task_run_name="ensure cloudfront distribution")
def ensure_distribution(spec: Stack, ctx: AwsContext, alb: Observed, certificate: Observed,
                        web_acl: Observed | None, origin_secret: Observed) -> Observed:
    """Created with its tags; updated with the ETag it was read at. Deploying takes CloudFront minutes:
    the DNS records can point at it right away, so nothing waits here."""
    cf = _cf(ctx)
    value = _origin_value(ctx, origin_secret.id)
    config = distribution_config(spec, ctx, alb_dns=alb.attrs["dns_name"], certificate_arn=certificate.id,
                                 web_acl_arn=web_acl.id if web_acl else None, origin_value=value)
    observed = find_distribution(ctx)
    if observed is None:
        data = call(f"create the CloudFront distribution for {spec.load_balancer.domain}",
                    cf.create_distribution_with_tags, DistributionConfigWithTags={
                        "DistributionConfig": config,
                        "Tags": {"Items": ctx.tags(DISTRIBUTION_COMPONENT)}})["Distribution"]
        return Observed(id=data["ARN"], name=data["Id"], tags=ctx.tag_dict(DISTRIBUTION_COMPONENT),
                        attrs={"distribution_id": data["Id"], "domain_name": data["DomainName"],
                               "status": data.get("Status")})
    wanted = _distribution_wanted(spec, ctx, alb, certificate, web_acl, value)
    fields = set(plan_distribution(spec, ctx, observed, wanted).changed_fields)
    if "config" in fields:
        merged = {**observed.attrs["config"], **{k: v for k, v in config.items() if k != "CallerReference"}}
        data = call(f"update the CloudFront distribution {observed.name}", cf.update_distribution,
                    Id=observed.name, IfMatch=observed.attrs["etag"], DistributionConfig=merged)["Distribution"]
        observed.attrs["status"] = data.get("Status")
    if "tags" in fields:
        call(f"tag the CloudFront distribution {observed.name}", cf.tag_resource, Resource=observed.id,
             Tags={"Items": ctx.tags(DISTRIBUTION_COMPONENT)})
        observed.tags.update(wanted["tags"])
    observed.attrs.pop("config", None)  # holds the origin secret: it never leaves this task
    return observed


def inventory_distributions(ctx: AwsContext) -> list[Observed]:
    found = _distributions(ctx)
    for item in found:
        item.attrs.pop("config", None)
    return found


@aws_task(task_run_name="delete cloudfront distribution {observed.name}")
def delete_distribution(observed: Observed, ctx: AwsContext, *, timeout: float = DEPLOY_TIMEOUT) -> None:
    """CloudFront deletes only a disabled, deployed distribution: disable, wait, delete."""
    require_ours(ctx, observed.tags, f"distribution {observed.name}")
    cf = _cf(ctx)
    dist_id = observed.name
    got = call_or_none(f"read distribution {dist_id}", cf.get_distribution_config, Id=dist_id)
    if got is None:
        return
    if got["DistributionConfig"].get("Enabled"):
        call(f"disable distribution {dist_id}", cf.update_distribution, Id=dist_id, IfMatch=got["ETag"],
             DistributionConfig={**got["DistributionConfig"], "Enabled": False})

    def deployed() -> str | None:
        current = call(f"read distribution {dist_id}", cf.get_distribution, Id=dist_id)
        return str(current["ETag"]) if current["Distribution"].get("Status") == "Deployed" else None

    etag = wait_until(f"CloudFront distribution {dist_id} to deploy its disabled state", deployed, timeout=timeout,
                      poll=max(ctx.poll_seconds, 0.05) * 3)
    call_or_none(f"delete distribution {dist_id}", cf.delete_distribution, Id=dist_id, IfMatch=etag)


# ---------------------------------------------------------------- zone records: inventory and delete


def inventory_records(ctx: AwsContext) -> list[Observed]:
    """Records this stack wrote, found by their `_ecsflow.{domain}` marker in the account's public zones."""
    r53 = _r53(ctx)
    pages = r53.get_paginator("list_hosted_zones").paginate()
    zones = [_zone_observed(z) for page in call("list hosted zones", lambda: list(pages))
             for z in page.get("HostedZones", [])]
    found = []
    for zone in zones:
        if zone.attrs["private"]:
            continue
        rpages = r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone.id)
        rrsets = [r for page in call(f"list the records of {zone.name}", lambda p=rpages: list(p))
                  for r in page.get("ResourceRecordSets", [])]
        for marker in rrsets:
            name = _fqdn(marker["Name"])
            if marker["Type"] != "TXT" or not name.startswith(f"{MARKER}."):
                continue
            tags = _marker_tags((marker.get("ResourceRecords") or [{}])[0].get("Value", ""))
            if not ctx.owns(tags):
                continue
            domain = name.removeprefix(f"{MARKER}.")
            ours = [marker] + [r for r in rrsets if (_fqdn(r["Name"]) == domain and r["Type"] in ("A", "AAAA")
                                                      and "AliasTarget" in r)
                               or (r["Type"] == "CNAME" and _fqdn(r["Name"]).endswith("." + domain)
                                   and "acm-validations.aws" in json.dumps(r.get("ResourceRecords")))]
            found.append(Observed(id=f"{zone.id}/{domain}", name=domain.rstrip("."),
                                  tags={**tags, TAG_COMPONENT: RECORDS_COMPONENT},
                                  attrs={"zone_id": zone.id, "rrsets": ours}))
    return found


@aws_task(task_run_name="delete dns records {observed.name}")
def delete_records(observed: Observed, ctx: AwsContext) -> None:
    """The alias records, ACM's validation records and the marker, in one batch (the marker last)."""
    require_ours(ctx, observed.tags, f"dns records of {observed.name}")
    rrsets = sorted(observed.attrs["rrsets"], key=lambda r: r["Type"] == "TXT")
    if rrsets:
        call_or_none(f"delete the dns records of {observed.name}", _r53(ctx).change_resource_record_sets,
                     HostedZoneId=observed.attrs["zone_id"],
                     ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in rrsets]})


def inventory_health_checks(ctx: AwsContext) -> list[Observed]:
    return _health_checks(ctx)


def inventory_origin_secrets(ctx: AwsContext) -> list[Observed]:
    found = find_origin_secret(ctx)
    return [found] if found is not None and ctx.owns(found.tags) and not found.attrs["deleted"] else []


def inventory_cdn_certificates(ctx: AwsContext) -> list[Observed]:
    return _cdn_certificates(ctx)


# ---------------------------------------------------------------- the family's plan


def plan_edge(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Read-only: what `up` would do at the edge (nothing when the stack asks for none of it)."""
    if not wants_edge(spec):
        return []
    edge = spec.load_balancer
    changes: list[Change] = []
    zone = find_zone(spec, ctx) if edge.dns else None
    if edge.dns is not None:
        changes.append(Change("hosted zone", str(edge.dns.hosted_zone_id or edge.dns.hosted_zone_name or edge.domain),
                              "no-op", note="found" if zone else "NOT FOUND: create it or fix load_balancer.dns"))
    alb = lb.find_load_balancer(ctx)
    distribution = find_distribution(ctx) if edge.cdn.enabled else None
    secret = find_origin_secret(ctx) if edge.cdn.enabled else None
    acls = {scope: find_web_acl(ctx, scope) for scope in ("CLOUDFRONT", "REGIONAL")}
    if edge.cdn.enabled:
        changes.append(plan_origin_secret(ctx, secret))
        certificate = find_cdn_certificate(spec, ctx)
        changes.append(plan_cdn_certificate(spec, certificate))
        wanted = None
        if alb and certificate and secret and not secret.attrs["deleted"]:
            wanted = _distribution_wanted(spec, ctx, alb, certificate, acls["CLOUDFRONT"],
                                          _origin_value(ctx, secret.id))
        changes.append(plan_distribution(spec, ctx, distribution, wanted))
    changes += [plan_web_acl(spec, ctx, scope, acls[scope]) for scope in ("CLOUDFRONT", "REGIONAL")
                if wants_web_acl(spec, scope) or acls[scope]]
    if edge.dns is not None:
        wanted_records = records_wanted(spec, ctx, alb, distribution) if alb and (distribution or
                                                                                  not edge.cdn.enabled) else None
        changes.append(plan_records(spec, ctx, zone, find_records(spec, ctx, zone) if zone else None,
                                    wanted_records))
        if edge.dns.health_check:
            changes.append(plan_health_check(spec, ctx, find_health_check(ctx)))
    return changes
