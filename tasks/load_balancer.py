"""The load balancer family: the access-log bucket, the ACM certificate, the ALB, one target
group per service, the HTTP (redirect only) and HTTPS listeners, and the path rules.

- Access logs go to an S3 bucket of our own: SSE-S3 encrypted (the only encryption ALB log
  delivery supports), versioned, public access blocked, ACLs disabled (BucketOwnerEnforced),
  a TLS-only policy plus the regional ELB log-delivery principal, and a lifecycle rule.
- HTTPS uses an ACM certificate: the stack's existing ARN (never ours, never deleted), or one
  requested for `load_balancer.domain` with DNS validation (ecsflow waits for it to be issued
  and says which CNAME record to add), or, outside prod and without either, a self-signed
  one ecsflow makes and imports (so a dev stack still serves HTTPS only; browsers warn).
- Rules: every service whose path patterns are not the catch-all `/*` gets one rule on the
  HTTPS listener; the `/*` service is the listener's default action (404 when there is
  none). Priorities follow specificity (longest literal prefix first), then the service
  name, in steps of 10: the same stack gives the same priorities on every run.
- The ALB uses the network family's `sg-alb` security group and the public subnets.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from spec import Stack
from tasks import buckets
from tasks.aws import (
    AwsContext,
    EcsflowError,
    call,
    call_or_none,
    indexed_tags,
    is_not_found,
    progress,
    tag_map,
    wait_until,
)
from tasks.contract import (
    Change,
    Observed,
    aws_task,
    current_of,
    diff_fields,
    partition,
    plan_from,
    project,
    refuse_foreign,
    refuse_replace,
    require_ours,
)

ALB_COMPONENT = "alb"
BUCKET_COMPONENT = "alb-logs"
CERT_COMPONENT = "certificate"
LOG_PREFIX = "alb"
CERT_TIMEOUT = 60 * 60  # DNS validation waits for someone to add the CNAME record
ALB_TIMEOUT = 15 * 60
NAME_LIMIT = 32  # ALB and target group names

# The account ELB delivers access logs from, per region (regions opened before August 2022);
# newer regions use the log-delivery service principal instead. Source: ELB user guide,
# "Enable access logs for your Application Load Balancer".
ELB_LOG_ACCOUNTS = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
    "us-west-2": "797873946194", "af-south-1": "098369216593", "ap-east-1": "754344448648",
    "ap-southeast-3": "589379963580", "ap-south-1": "718504428378", "ap-northeast-3": "383597477331",
    "ap-northeast-2": "600734575887", "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
    "ap-northeast-1": "582318560864", "ca-central-1": "985666609251", "eu-central-1": "054676820928",
    "eu-west-1": "156460612806", "eu-west-2": "652711504416", "eu-south-1": "635631232127",
    "eu-west-3": "009996457667", "eu-north-1": "897822967062", "me-south-1": "076674570225",
    "sa-east-1": "507241528517", "us-gov-west-1": "048591011584", "us-gov-east-1": "190560391635",
}
LOG_DELIVERY_SERVICE = "logdelivery.elasticloadbalancing.amazonaws.com"


def elb_tags(ctx: AwsContext, component: str) -> list[dict[str, str]]:
    return ctx.tags(component)


def _read_elb_tags(ctx: AwsContext, arns: list[str]) -> dict[str, dict[str, str]]:
    """Tags of up to any number of ELB resources: from the flow run's tag index where it holds them,
    the rest by DescribeTags (20 at a time)."""
    found: dict[str, dict[str, str]] = {}
    for arn in arns:
        indexed = indexed_tags(ctx, arn)
        if indexed is not None:
            found[arn] = indexed
    arns = [arn for arn in arns if arn not in found]
    for start in range(0, len(arns), 20):
        got = call("read load balancer tags", ctx.elbv2().describe_tags, ResourceArns=arns[start:start + 20])
        for item in got.get("TagDescriptions", []):
            found[item["ResourceArn"]] = tag_map(item.get("Tags"))
    return found


# ---------------------------------------------------------------- access-log bucket


def bucket_name(ctx: AwsContext) -> str:
    return buckets.bucket_name(ctx, BUCKET_COMPONENT)


def bucket_policy(ctx: AwsContext, bucket: str) -> dict[str, Any]:
    """TLS-only, and ELB may write its logs under our prefix for this account."""
    part = partition(ctx.region)
    elb_account = ELB_LOG_ACCOUNTS.get(ctx.region)
    principal = {"AWS": f"arn:{part}:iam::{elb_account}:root"} if elb_account else {"Service": LOG_DELIVERY_SERVICE}
    return buckets.tls_only_policy(ctx.region, bucket, {
        "Sid": "ElbLogDelivery", "Effect": "Allow", "Principal": principal, "Action": "s3:PutObject",
        "Resource": f"{buckets.bucket_arn(ctx.region, bucket)}/{LOG_PREFIX}/AWSLogs/{ctx.account_id()}/*"})


def _lifecycle(spec: Stack) -> list[dict[str, Any]]:
    return [{"ID": "expire-access-logs", "Status": "Enabled", "Filter": {"Prefix": ""},
             "Expiration": {"Days": spec.load_balancer.access_log_expiry_days},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]


def bucket_spec(spec: Stack, ctx: AwsContext) -> buckets.BucketSpec:
    # SSE-S3: ALB access-log delivery cannot write to an SSE-KMS bucket.
    name = bucket_name(ctx)
    return buckets.BucketSpec(name=name, component=BUCKET_COMPONENT, policy=bucket_policy(ctx, name),
                              lifecycle=_lifecycle(spec))


def find_log_bucket(ctx: AwsContext) -> Observed | None:
    return buckets.find_bucket(ctx, bucket_name(ctx))


def plan_log_bucket(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    if not spec.load_balancer.access_logs:
        return Change(buckets.RESOURCE, bucket_name(ctx), "no-op", note="access logs are off")
    return buckets.plan_bucket(ctx, bucket_spec(spec, ctx), observed)


@aws_task(task_run_name="ensure alb access-log bucket")
def ensure_log_bucket(spec: Stack, ctx: AwsContext) -> Observed | None:
    if not spec.load_balancer.access_logs:
        return None
    return buckets.ensure_bucket(ctx, bucket_spec(spec, ctx))


def inventory_log_buckets(ctx: AwsContext) -> list[Observed]:
    return buckets.inventory_bucket(ctx, bucket_name(ctx))


@aws_task(task_run_name="delete bucket {observed.name}")
def delete_log_bucket(observed: Observed, ctx: AwsContext) -> None:
    """Empty the bucket (every version and delete marker) and delete it; refuses a bucket without our tags."""
    buckets.delete_bucket(observed, ctx)


# ---------------------------------------------------------------- certificate


def _cert_observed(data: dict[str, Any], tags: dict[str, str], external: bool) -> Observed:
    records = [o.get("ResourceRecord") for o in data.get("DomainValidationOptions", []) if o.get("ResourceRecord")]
    return Observed(id=data["CertificateArn"], name=data.get("DomainName", ""), tags=tags,
                    attrs={"status": data.get("Status"), "domain": data.get("DomainName"),
                           "validation": data.get("DomainValidationOptions", [{}])[0].get("ValidationMethod"),
                           "records": records, "external": external, "in_use_by": data.get("InUseBy", [])})


def _cert_tags(ctx: AwsContext, arn: str) -> dict[str, str]:
    got = call_or_none(f"read the tags of certificate {arn}", ctx.acm().list_tags_for_certificate,
                       CertificateArn=arn)
    return tag_map((got or {}).get("Tags"))


def _our_certificates(ctx: AwsContext, domain: str | None = None) -> list[Observed]:
    acm = ctx.acm()
    paginator = acm.get_paginator("list_certificates")
    pages = call("list ACM certificates", lambda: list(paginator.paginate(
        CertificateStatuses=["PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "FAILED"])))
    found = []
    for page in pages:
        for summary in page.get("CertificateSummaryList", []):
            if domain and summary.get("DomainName") != domain:
                continue
            tags = _cert_tags(ctx, summary["CertificateArn"])
            if not ctx.owns(tags) or tags.get("ecsflow:component") != CERT_COMPONENT:
                continue
            got = call_or_none("read certificate", acm.describe_certificate, CertificateArn=summary["CertificateArn"])
            if got:
                found.append(_cert_observed(got["Certificate"], tags, external=False))
    return found


def self_signed_name(ctx: AwsContext) -> str:
    """The self-signed certificate's name: `.invalid` is reserved (RFC 2606), so nobody mistakes it."""
    return f"{ctx.prefix}.ecsflow.invalid"


def find_certificate(spec: Stack, ctx: AwsContext) -> Observed | None:
    lb = spec.load_balancer
    if lb.certificate_arn:
        got = call_or_none(f"look up certificate {lb.certificate_arn}", ctx.acm().describe_certificate,
                           CertificateArn=lb.certificate_arn)
        if got is None:
            return None
        return _cert_observed(got["Certificate"], _cert_tags(ctx, lb.certificate_arn), external=True)
    domain = lb.domain or self_signed_name(ctx)
    usable = [c for c in _our_certificates(ctx, domain) if c.attrs["status"] in ("ISSUED", "PENDING_VALIDATION")]
    usable.sort(key=lambda c: (c.attrs["status"] != "ISSUED", c.id))
    return usable[0] if usable else None


def plan_certificate(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    lb = spec.load_balancer
    name = lb.certificate_arn or lb.domain or "(none)"
    if lb.certificate_arn:
        if observed is None:
            return Change("acm certificate", name, "no-op", note="not found: load_balancer.certificate_arn must "
                                                                "name an issued certificate in the stack's region")
        return Change("acm certificate", name, "no-op", note=f"existing certificate, {observed.attrs['status']}")
    if not lb.domain:
        name = self_signed_name(ctx)
        return Change("acm certificate", name, "create" if observed is None else "no-op",
                      note="self-signed (no load_balancer.domain): browsers will warn")
    if observed is None:
        return Change("acm certificate", name, "create", note="DNS validation: add the CNAME record ACM shows")
    if observed.attrs["status"] != "ISSUED":
        return Change("acm certificate", name, "no-op", note="waiting for DNS validation")
    return Change("acm certificate", name, "no-op")


def _idempotency_token(ctx: AwsContext, domain: str) -> str:
    # ACM: at most 32 word characters; the same request within an hour returns the same certificate.
    return hashlib.sha256(ctx.token("certificate", domain).encode()).hexdigest()[:32]


@aws_task(task_run_name="ensure acm certificate")
def ensure_certificate(spec: Stack, ctx: AwsContext) -> Observed:
    """The stack's existing certificate (must be issued), or ours for load_balancer.domain, requested
    with DNS validation and waited for until issued."""
    lb = spec.load_balancer
    problems = spec.provision_problems()
    if problems:
        raise EcsflowError("; ".join(problems))
    acm = ctx.acm()
    observed = find_certificate(spec, ctx)
    if lb.certificate_arn:
        if observed is None or observed.attrs["status"] != "ISSUED":
            status = observed.attrs["status"] if observed else "not found"
            raise EcsflowError(f"load_balancer.certificate_arn {lb.certificate_arn} is {status} in {ctx.region}; "
                               f"the HTTPS listener needs an issued certificate in the stack's region")
        return observed
    if not lb.domain:
        return observed or _import_self_signed(ctx)
    if observed is None:
        arn = call(f"request a certificate for {lb.domain}", acm.request_certificate, DomainName=lb.domain,
                   ValidationMethod="DNS", IdempotencyToken=_idempotency_token(ctx, lb.domain),
                   KeyAlgorithm="RSA_2048", Options={"CertificateTransparencyLoggingPreference": "ENABLED"},
                   Tags=ctx.tags(CERT_COMPONENT))["CertificateArn"]
    else:
        arn = observed.id
    said: list[str] = []

    def issued() -> Observed | None:
        data = call(f"read certificate {arn}", acm.describe_certificate, CertificateArn=arn)["Certificate"]
        cert = _cert_observed(data, ctx.tag_dict(CERT_COMPONENT), external=False)
        status = cert.attrs["status"]
        if status in ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED"):
            raise EcsflowError(f"certificate {arn} for {lb.domain} is {status}; delete it and run again")
        if status != "ISSUED" and cert.attrs["records"] and not said:
            for record in cert.attrs["records"]:
                progress(f"certificate for {lb.domain}: add the DNS record {record['Name']} {record['Type']} "
                         f"{record['Value']} to validate it")
            said.append("yes")
        return cert if status == "ISSUED" else None

    return wait_until(f"certificate {arn} ({lb.domain}) to be issued", issued, timeout=CERT_TIMEOUT,
                      poll=ctx.poll_seconds)


SELF_SIGNED_DAYS = 825


def _import_self_signed(ctx: AwsContext) -> Observed:
    """Outside prod, a stack without a domain still gets HTTPS: a self-signed certificate, made here
    (the key passes through memory only) and imported into ACM with our tags."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    name = self_signed_name(ctx)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    progress(f"no load_balancer.domain: importing a self-signed certificate for {name} (browsers will warn)")
    arn = call(f"import a self-signed certificate for {name}", ctx.acm().import_certificate,
               Certificate=cert.public_bytes(serialization.Encoding.PEM),
               PrivateKey=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
               Tags=ctx.tags(CERT_COMPONENT))["CertificateArn"]
    data = call(f"read certificate {arn}", ctx.acm().describe_certificate, CertificateArn=arn)["Certificate"]
    return _cert_observed(data, ctx.tag_dict(CERT_COMPONENT), external=False)


def inventory_certificates(ctx: AwsContext) -> list[Observed]:
    return _our_certificates(ctx)


@aws_task(task_run_name="delete certificate {observed.name}")
def delete_certificate(observed: Observed, ctx: AwsContext) -> None:
    """While a just-deleted listener still holds it ACM answers ResourceInUseException (retried)."""
    require_ours(ctx, observed.tags, f"certificate {observed.id}")
    call_or_none(f"delete certificate {observed.id}", ctx.acm().delete_certificate, CertificateArn=observed.id)


# ---------------------------------------------------------------- the load balancer


def alb_name(ctx: AwsContext) -> str:
    return ctx.name(ALB_COMPONENT, limit=NAME_LIMIT)


def _alb_attributes(spec: Stack, bucket: str | None) -> dict[str, str]:
    lb = spec.load_balancer
    attrs = {
        "routing.http.drop_invalid_header_fields.enabled": "true",
        "routing.http.desync_mitigation_mode": lb.desync_mitigation_mode,
        "deletion_protection.enabled": str(spec.alb_deletion_protection).lower(),
        "idle_timeout.timeout_seconds": str(lb.idle_timeout_seconds),
        "access_logs.s3.enabled": str(bool(lb.access_logs and bucket)).lower(),
    }
    if lb.access_logs and bucket:
        attrs.update({"access_logs.s3.bucket": bucket, "access_logs.s3.prefix": LOG_PREFIX})
    return attrs


def _alb_wanted(spec: Stack, ctx: AwsContext, subnet_ids: list[str], security_group_id: str,
                bucket: str | None) -> dict[str, Any]:
    return {"scheme": "internet-facing", "type": "application", "ip_address_type": "ipv4",
            "subnet_ids": sorted(subnet_ids), "security_group_ids": [security_group_id],
            "attributes": _alb_attributes(spec, bucket), "tags": ctx.tag_dict(ALB_COMPONENT)}


def _alb_observed(ctx: AwsContext, data: dict[str, Any]) -> Observed:
    arn = data["LoadBalancerArn"]
    attributes = call(f"read the attributes of {data['LoadBalancerName']}",
                      ctx.elbv2().describe_load_balancer_attributes, LoadBalancerArn=arn)["Attributes"]
    return Observed(
        id=arn, name=data["LoadBalancerName"], tags=_read_elb_tags(ctx, [arn]).get(arn, {}),
        attrs={"scheme": data.get("Scheme"), "type": data.get("Type"), "ip_address_type": data.get("IpAddressType"),
               "subnet_ids": sorted(z["SubnetId"] for z in data.get("AvailabilityZones", [])),
               "security_group_ids": sorted(data.get("SecurityGroups", [])),
               "attributes": {a["Key"]: a["Value"] for a in attributes},
               "dns_name": data.get("DNSName"), "zone_id": data.get("CanonicalHostedZoneId"),
               "vpc_id": data.get("VpcId"), "state": (data.get("State") or {}).get("Code")},
    )


def find_load_balancer(ctx: AwsContext) -> Observed | None:
    name = alb_name(ctx)
    got = call_or_none(f"look up load balancer {name}", ctx.elbv2().describe_load_balancers, Names=[name])
    items = (got or {}).get("LoadBalancers", [])
    if not items:
        return None
    try:
        return _alb_observed(ctx, items[0])
    except EcsflowError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None  # deleted between the two reads (a teardown task beside this one)
        raise


def _alb_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = {k: observed.attrs.get(k) for k in wanted if k not in ("tags", "attributes")}
    have = observed.attrs.get("attributes", {})
    current["attributes"] = {k: have.get(k) for k in wanted["attributes"]}
    current["tags"] = {k: observed.tags.get(k) for k in wanted["tags"]}
    return current


def plan_load_balancer(spec: Stack, ctx: AwsContext, observed: Observed | None, subnet_ids: list[str] | None,
                       security_group_id: str | None, bucket: str | None) -> Change:
    if observed is None or subnet_ids is None or security_group_id is None:
        return Change("load balancer", alb_name(ctx), "create" if observed is None else "no-op",
                      note="" if observed is None else "its subnets or security group are missing")
    wanted = _alb_wanted(spec, ctx, subnet_ids, security_group_id, bucket)
    return plan_from("load balancer", alb_name(ctx), observed, wanted, current=_alb_current(observed, wanted),
                     immutable=("scheme", "type"))


@aws_task(task_run_name="ensure application load balancer")
def ensure_load_balancer(spec: Stack, ctx: AwsContext, public_subnets: list[Observed], security_group: Observed,
                         log_bucket: Observed | None) -> Observed:
    elb = ctx.elbv2()
    name = alb_name(ctx)
    subnet_ids = [s.id for s in public_subnets]
    bucket = log_bucket.name if log_bucket else None
    wanted = _alb_wanted(spec, ctx, subnet_ids, security_group.id, bucket)
    observed = find_load_balancer(ctx)
    if observed is None:
        data = call(f"create load balancer {name}", elb.create_load_balancer, Name=name, Type="application",
                    Scheme="internet-facing", IpAddressType="ipv4", Subnets=sorted(subnet_ids),
                    SecurityGroups=[security_group.id], Tags=elb_tags(ctx, ALB_COMPONENT))["LoadBalancers"][0]
        arn = data["LoadBalancerArn"]
        # The attributes go in right away (access logs, header hygiene), not after the wait.
        call(f"set the attributes of {name}", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
             Attributes=[{"Key": k, "Value": v} for k, v in sorted(wanted["attributes"].items())])
    else:
        refuse_foreign(ctx, observed, f"load balancer {name}")
        change = plan_load_balancer(spec, ctx, observed, subnet_ids, security_group.id, bucket)
        refuse_replace(change)
        arn = observed.id
        fields = {d.field: d for d in change.diffs}
        if "subnet_ids" in fields:
            call(f"set the subnets of {name}", elb.set_subnets, LoadBalancerArn=arn, Subnets=sorted(subnet_ids))
        if "security_group_ids" in fields:
            call(f"set the security groups of {name}", elb.set_security_groups, LoadBalancerArn=arn,
                 SecurityGroups=[security_group.id])
        if "attributes" in fields:
            have = observed.attrs.get("attributes", {})
            changed = {k: v for k, v in wanted["attributes"].items() if have.get(k) != v}
            call(f"set the attributes of {name}", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
                 Attributes=[{"Key": k, "Value": v} for k, v in sorted(changed.items())])
        if "tags" in fields:
            call(f"tag {name}", elb.add_tags, ResourceArns=[arn], Tags=elb_tags(ctx, ALB_COMPONENT))
        if not fields and observed.attrs.get("state") == "active":
            return observed

    def active() -> Observed | None:
        found = find_load_balancer(ctx)
        if found is None:
            raise EcsflowError(f"load balancer {name} vanished while ecsflow waited for it; run again")
        if found.attrs["state"] == "failed":
            raise EcsflowError(f"load balancer {name} failed to provision; see it in the EC2 console")
        return found if found.attrs["state"] == "active" else None

    return wait_until(f"load balancer {name} to become active", active, timeout=ALB_TIMEOUT, poll=ctx.poll_seconds)


def inventory_load_balancers(ctx: AwsContext) -> list[Observed]:
    paginator = ctx.elbv2().get_paginator("describe_load_balancers")
    items = [lb for page in call("list load balancers", lambda: list(paginator.paginate()))
             for lb in page.get("LoadBalancers", [])]
    tags = _read_elb_tags(ctx, [lb["LoadBalancerArn"] for lb in items])
    return [Observed(id=lb["LoadBalancerArn"], name=lb["LoadBalancerName"], tags=tags.get(lb["LoadBalancerArn"], {}),
                     attrs={"dns_name": lb.get("DNSName")})
            for lb in items if ctx.owns(tags.get(lb["LoadBalancerArn"], {}))]


@aws_task(task_run_name="delete load balancer {observed.name}")
def delete_load_balancer(observed: Observed, ctx: AwsContext) -> None:
    """Turns deletion protection off (teardown is confirmed by then), deletes, and waits until the
    load balancer and its network interfaces are gone (its security group and subnets go next)."""
    require_ours(ctx, observed.tags, f"load balancer {observed.name}")
    elb = ctx.elbv2()
    arn = observed.id
    if call_or_none(f"turn off deletion protection of {observed.name}", elb.modify_load_balancer_attributes,
                    LoadBalancerArn=arn,
                    Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}]) is None:
        return
    call_or_none(f"delete load balancer {observed.name}", elb.delete_load_balancer, LoadBalancerArn=arn)
    ec2 = ctx.ec2()
    description = "ELB " + "/".join(arn.split(":loadbalancer/", 1)[-1].split("/")[:3])

    def gone() -> bool:
        if call_or_none(f"look up {observed.name}", elb.describe_load_balancers, LoadBalancerArns=[arn]):
            return False
        enis = call("list the load balancer's network interfaces", ec2.describe_network_interfaces,
                    Filters=[{"Name": "description", "Values": [description]}])["NetworkInterfaces"]
        return not enis

    wait_until(f"load balancer {observed.name} and its network interfaces to be deleted", gone,
               timeout=ALB_TIMEOUT, poll=ctx.poll_seconds)


# ---------------------------------------------------------------- target groups


def target_group_name(ctx: AwsContext, service: str) -> str:
    return ctx.name(service, limit=NAME_LIMIT)


def tg_component(service: str) -> str:
    return f"tg-{service}"


def _tg_wanted(spec: Stack, ctx: AwsContext, service: str, vpc_id: str) -> dict[str, Any]:
    svc = spec.services[service]
    return {"protocol": "HTTP", "target_type": "ip", "vpc_id": vpc_id,
            "health_check": {"HealthCheckProtocol": "HTTP", "HealthCheckPort": "traffic-port",
                             "HealthCheckEnabled": True, "HealthCheckPath": svc.health_check_path,
                             "HealthCheckIntervalSeconds": svc.health_check_interval_seconds,
                             "HealthCheckTimeoutSeconds": svc.health_check_timeout_seconds,
                             "HealthyThresholdCount": svc.healthy_threshold,
                             "UnhealthyThresholdCount": svc.unhealthy_threshold,
                             "Matcher": {"HttpCode": "200-399"}},
            "tags": ctx.tag_dict(tg_component(service))}


def _tg_observed(ctx: AwsContext, data: dict[str, Any], tags: dict[str, str] | None = None) -> Observed:
    arn = data["TargetGroupArn"]
    if tags is None:
        tags = _read_elb_tags(ctx, [arn]).get(arn, {})
    return Observed(
        id=arn, name=data["TargetGroupName"], tags=tags,
        attrs={"protocol": data.get("Protocol"), "target_type": data.get("TargetType"), "vpc_id": data.get("VpcId"),
               "port": data.get("Port"), "load_balancer_arns": data.get("LoadBalancerArns", []),
               "health_check": {k: data.get(k) for k in (
                   "HealthCheckProtocol", "HealthCheckPort", "HealthCheckEnabled", "HealthCheckPath",
                   "HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds", "HealthyThresholdCount",
                   "UnhealthyThresholdCount", "Matcher")}},
    )


def find_target_group(ctx: AwsContext, service: str) -> Observed | None:
    name = target_group_name(ctx, service)
    got = call_or_none(f"look up target group {name}", ctx.elbv2().describe_target_groups, Names=[name])
    items = (got or {}).get("TargetGroups", [])
    return _tg_observed(ctx, items[0]) if items else None


def plan_target_group(spec: Stack, ctx: AwsContext, service: str, observed: Observed | None,
                      vpc_id: str | None) -> Change:
    """The port is not compared: ECS registers each task with its container port, and the health
    check probes the traffic port, so the group's own port is only a default nobody uses."""
    name = target_group_name(ctx, service)
    if observed is None or vpc_id is None:
        return Change("target group", name, "create" if observed is None else "no-op")
    wanted = _tg_wanted(spec, ctx, service, vpc_id)
    current = current_of(observed, wanted)
    return plan_from("target group", name, observed, wanted, current=current,
                     immutable=("protocol", "target_type", "vpc_id"))


@aws_task(task_run_name="ensure target group {service}")
def ensure_target_group(spec: Stack, ctx: AwsContext, service: str, vpc: Observed) -> Observed:
    elb = ctx.elbv2()
    name = target_group_name(ctx, service)
    wanted = _tg_wanted(spec, ctx, service, vpc.id)
    observed = find_target_group(ctx, service)
    health = wanted["health_check"]
    if observed is None:
        data = call(f"create target group {name}", elb.create_target_group, Name=name, Protocol="HTTP",
                    ProtocolVersion="HTTP1", Port=spec.services[service].port, VpcId=vpc.id, TargetType="ip",
                    IpAddressType="ipv4", Tags=elb_tags(ctx, tg_component(service)), **health)["TargetGroups"][0]
        observed = _tg_observed(ctx, data, tags=ctx.tag_dict(tg_component(service)))
    else:
        refuse_foreign(ctx, observed, f"target group {name}")
        change = plan_target_group(spec, ctx, service, observed, vpc.id)
        refuse_replace(change)
        fields = set(change.changed_fields)
        if "health_check" in fields:
            args = {k: v for k, v in health.items() if k != "HealthCheckEnabled"}
            data = call(f"update the health check of {name}", elb.modify_target_group, TargetGroupArn=observed.id,
                        **args)["TargetGroups"][0]
            observed = _tg_observed(ctx, data, tags=observed.tags)
        if "tags" in fields:
            call(f"tag {name}", elb.add_tags, ResourceArns=[observed.id], Tags=elb_tags(ctx, tg_component(service)))
            observed.tags.update(wanted["tags"])
    _ensure_tg_attributes(ctx, observed)
    return observed


DEREGISTRATION_DELAY = "30"  # seconds: tasks stop quickly on deploys (AWS's default is 300)


def _ensure_tg_attributes(ctx: AwsContext, observed: Observed) -> None:
    got = call(f"read the attributes of {observed.name}", ctx.elbv2().describe_target_group_attributes,
               TargetGroupArn=observed.id)["Attributes"]
    have = {a["Key"]: a["Value"] for a in got}
    if have.get("deregistration_delay.timeout_seconds", DEREGISTRATION_DELAY) != DEREGISTRATION_DELAY:
        call(f"set the deregistration delay of {observed.name}", ctx.elbv2().modify_target_group_attributes,
             TargetGroupArn=observed.id,
             Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": DEREGISTRATION_DELAY}])


def inventory_target_groups(ctx: AwsContext) -> list[Observed]:
    paginator = ctx.elbv2().get_paginator("describe_target_groups")
    items = [tg for page in call("list target groups", lambda: list(paginator.paginate()))
             for tg in page.get("TargetGroups", [])]
    tags = _read_elb_tags(ctx, [tg["TargetGroupArn"] for tg in items])
    return [_tg_observed(ctx, tg, tags=tags.get(tg["TargetGroupArn"], {}))
            for tg in items if ctx.owns(tags.get(tg["TargetGroupArn"], {}))]


@aws_task(task_run_name="delete target group {observed.name}")
def delete_target_group(observed: Observed, ctx: AwsContext) -> None:
    """After the listeners and rules that forward to it (ResourceInUse until then, retried)."""
    require_ours(ctx, observed.tags, f"target group {observed.name}")
    call_or_none(f"delete target group {observed.name}", ctx.elbv2().delete_target_group,
                 TargetGroupArn=observed.id)


# ---------------------------------------------------------------- listeners

LISTENERS = {80: "listener-http", 443: "listener-https"}
REDIRECT = {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "Host": "#{host}",
                                                   "Path": "/#{path}", "Query": "#{query}",
                                                   "StatusCode": "HTTP_301"}}
NOT_FOUND = {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain",
                                                               "MessageBody": "Not Found"}}


def default_service(spec: Stack) -> str | None:
    """The service behind `/*`, the HTTPS listener's default action."""
    return next((name for name, s in spec.services.items() if s.is_default_route), None)


def _listener_wanted(spec: Stack, ctx: AwsContext, port: int, certificate_arn: str | None,
                     target_groups: dict[str, str]) -> dict[str, Any]:
    if port == 80:
        return {"protocol": "HTTP", "default_actions": [REDIRECT], "tags": ctx.tag_dict(LISTENERS[port])}
    default = default_service(spec)
    action = {"Type": "forward", "TargetGroupArn": target_groups[default]} if default else NOT_FOUND
    return {"protocol": "HTTPS", "ssl_policy": spec.load_balancer.ssl_policy, "certificates": [certificate_arn],
            "default_actions": [action], "tags": ctx.tag_dict(LISTENERS[port])}


def _listener_observed(data: dict[str, Any], tags: dict[str, str]) -> Observed:
    return Observed(id=data["ListenerArn"], name=f"{data['Protocol']}:{data['Port']}", tags=tags,
                    attrs={"port": data["Port"], "protocol": data.get("Protocol"), "ssl_policy": data.get("SslPolicy"),
                           "certificates": [c["CertificateArn"] for c in data.get("Certificates", [])],
                           "default_actions": data.get("DefaultActions", []),
                           "load_balancer_arn": data.get("LoadBalancerArn")})


def find_listener(ctx: AwsContext, alb_arn: str, port: int) -> Observed | None:
    got = call_or_none(f"look up the listeners of {alb_name(ctx)}", ctx.elbv2().describe_listeners,
                       LoadBalancerArn=alb_arn)
    for data in (got or {}).get("Listeners", []):
        if data["Port"] == port:
            return _listener_observed(data, _read_elb_tags(ctx, [data["ListenerArn"]]).get(data["ListenerArn"], {}))
    return None


def _listener_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = current_of(observed, wanted)
    current["default_actions"] = project(observed.attrs.get("default_actions"), wanted["default_actions"])
    return current


def plan_listener(spec: Stack, ctx: AwsContext, port: int, observed: Observed | None, certificate_arn: str | None,
                  target_groups: dict[str, str] | None) -> Change:
    name = f"{alb_name(ctx)}:{port}"
    if observed is None or target_groups is None or (port == 443 and certificate_arn is None):
        return Change("listener", name, "create" if observed is None else "no-op")
    wanted = _listener_wanted(spec, ctx, port, certificate_arn, target_groups)
    return plan_from("listener", name, observed, wanted, current=_listener_current(observed, wanted))


@aws_task(task_run_name="ensure listener {port}")
def ensure_listener(spec: Stack, ctx: AwsContext, port: int, alb: Observed, certificate: Observed | None,
                    target_groups: dict[str, Observed]) -> Observed:
    """HTTP :80 only redirects to HTTPS; HTTPS :443 terminates TLS 1.3-capable connections and forwards
    to the `/*` service (the path rules come on top)."""
    elb = ctx.elbv2()
    cert_arn = certificate.id if certificate else None
    groups = {s: tg.id for s, tg in target_groups.items()}
    wanted = _listener_wanted(spec, ctx, port, cert_arn, groups)
    args: dict[str, Any] = {"Protocol": wanted["protocol"], "DefaultActions": wanted["default_actions"]}
    if port == 443:
        args.update(SslPolicy=wanted["ssl_policy"], Certificates=[{"CertificateArn": cert_arn}])
    observed = find_listener(ctx, alb.id, port)
    if observed is None:
        data = call(f"create listener {port} of {alb.name}", elb.create_listener, LoadBalancerArn=alb.id, Port=port,
                    Tags=elb_tags(ctx, LISTENERS[port]), **args)["Listeners"][0]
        return _listener_observed(data, ctx.tag_dict(LISTENERS[port]))
    refuse_foreign(ctx, observed, f"listener {port} of {alb.name}")
    change = plan_listener(spec, ctx, port, observed, cert_arn, groups)
    fields = set(change.changed_fields)
    if fields - {"tags"}:
        data = call(f"update listener {port} of {alb.name}", elb.modify_listener, ListenerArn=observed.id, Port=port,
                    **args)["Listeners"][0]
        observed = _listener_observed(data, observed.tags)
    if "tags" in fields:
        call(f"tag listener {port}", elb.add_tags, ResourceArns=[observed.id], Tags=elb_tags(ctx, LISTENERS[port]))
        observed.tags.update(wanted["tags"])
    return observed


def inventory_listeners(ctx: AwsContext, load_balancers: list[Observed]) -> list[Observed]:
    found = []
    for alb in load_balancers:
        got = call_or_none(f"list the listeners of {alb.name}", ctx.elbv2().describe_listeners,
                           LoadBalancerArn=alb.id)
        items = (got or {}).get("Listeners", [])
        tags = _read_elb_tags(ctx, [item["ListenerArn"] for item in items])
        found += [_listener_observed(item, tags.get(item["ListenerArn"], {})) for item in items]
    return [o for o in found if ctx.owns(o.tags)]


@aws_task(task_run_name="delete listener {observed.name}")
def delete_listener(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"listener {observed.id}")
    call_or_none(f"delete listener {observed.name}", ctx.elbv2().delete_listener, ListenerArn=observed.id)


# ---------------------------------------------------------------- path rules


def rule_component(service: str) -> str:
    return f"rule-{service}"


def _specificity(pattern: str) -> int:
    return len(re.split(r"[*?]", pattern, maxsplit=1)[0])


def rule_priorities(spec: Stack) -> dict[str, int]:
    """Service -> priority for every service with its own rule: most specific first, steps of 10."""
    routed = [name for name, s in spec.services.items() if s.load_balanced and not s.is_default_route]
    routed.sort(key=lambda name: (-max(_specificity(p) for p in spec.services[name].path_patterns), name))
    return {name: 10 * (i + 1) for i, name in enumerate(routed)}


def _rule_wanted(spec: Stack, ctx: AwsContext, service: str, priority: int, target_group_arn: str) -> dict[str, Any]:
    return {"priority": str(priority),
            "conditions": [{"Field": "path-pattern",
                            "PathPatternConfig": {"Values": list(spec.services[service].path_patterns)}}],
            "actions": [{"Type": "forward", "TargetGroupArn": target_group_arn}],
            "tags": ctx.tag_dict(rule_component(service))}


def _rule_observed(data: dict[str, Any], tags: dict[str, str]) -> Observed:
    return Observed(id=data["RuleArn"], name=tags.get("ecsflow:component", data["RuleArn"]), tags=tags,
                    attrs={"priority": data.get("Priority"), "conditions": data.get("Conditions", []),
                           "actions": data.get("Actions", [])})


def find_rules(ctx: AwsContext, listener_arn: str) -> list[Observed]:
    """Every non-default rule of the listener, ours or not (tags tell)."""
    got = call_or_none("look up the listener's rules", ctx.elbv2().describe_rules, ListenerArn=listener_arn)
    items = [r for r in (got or {}).get("Rules", []) if not r.get("IsDefault")]
    tags = _read_elb_tags(ctx, [r["RuleArn"] for r in items])
    return [_rule_observed(r, tags.get(r["RuleArn"], {})) for r in items]


def _rule_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    return {"priority": observed.attrs["priority"],
            "conditions": project(observed.attrs["conditions"], wanted["conditions"]),
            "actions": project(observed.attrs["actions"], wanted["actions"]),
            "tags": {k: observed.tags.get(k) for k in wanted["tags"]}}


def plan_rules(spec: Stack, ctx: AwsContext, rules: list[Observed] | None,
               target_groups: dict[str, str] | None) -> list[Change]:
    ours = {r.tags.get("ecsflow:component"): r for r in rules or [] if ctx.owns(r.tags)}
    changes = []
    for service, priority in rule_priorities(spec).items():
        name = f"{alb_name(ctx)} {' '.join(spec.services[service].path_patterns)} -> {service}"
        observed = ours.pop(rule_component(service), None)
        if observed is None or target_groups is None:
            changes.append(Change("listener rule", name, "create" if observed is None else "no-op"))
            continue
        wanted = _rule_wanted(spec, ctx, service, priority, target_groups[service])
        changes.append(plan_from("listener rule", name, observed, wanted, current=_rule_current(observed, wanted)))
    changes += [Change("listener rule", o.name, "delete", note="its service left the stack") for o in ours.values()]
    return changes


@aws_task(task_run_name="ensure listener rules")
def ensure_rules(spec: Stack, ctx: AwsContext, listener: Observed,
                 target_groups: dict[str, Observed]) -> list[Observed]:
    """One forward rule per routed service on the HTTPS listener. Our rules of services that left the
    stack go first (freeing their priorities), then priorities move in one call, then the rest."""
    elb = ctx.elbv2()
    existing = find_rules(ctx, listener.id)
    ours = {r.tags.get("ecsflow:component"): r for r in existing if ctx.owns(r.tags)}
    priorities = rule_priorities(spec)
    wanted = {s: _rule_wanted(spec, ctx, s, p, target_groups[s].id) for s, p in priorities.items()}
    # A blue/green service's test rule belongs to its deploys (tasks/blue_green.py): up leaves it alone.
    deploys_own = {f"{rule_component(s)}-test" for s in spec.services
                   if spec.deploy.for_service(s).strategy == "blue_green"}
    for component, rule in list(ours.items()):
        if component in deploys_own:
            del ours[component]
        elif component not in {rule_component(s) for s in wanted}:
            call(f"delete rule {component}", elb.delete_rule, RuleArn=rule.id)
            del ours[component]
    moves = [{"RuleArn": ours[rule_component(s)].id, "Priority": int(w["priority"])} for s, w in wanted.items()
             if rule_component(s) in ours and ours[rule_component(s)].attrs["priority"] != w["priority"]]
    if moves:
        call("reorder the listener rules", elb.set_rule_priorities, RulePriorities=moves)
    taken = {r.attrs["priority"]: r for r in existing if not ctx.owns(r.tags)}
    result = []
    for service, want in wanted.items():
        observed = ours.get(rule_component(service))
        if observed is None:
            if want["priority"] in taken:
                raise EcsflowError(f"listener rule priority {want['priority']} (for {service}) is held by a rule "
                                   f"ecsflow did not make ({taken[want['priority']].id}); remove that rule")
            data = call(f"create the rule for {service}", elb.create_rule, ListenerArn=listener.id,
                        Priority=int(want["priority"]), Conditions=want["conditions"], Actions=want["actions"],
                        Tags=elb_tags(ctx, rule_component(service)))["Rules"][0]
            result.append(_rule_observed(data, want["tags"]))
            continue
        diffs = diff_fields(_rule_current(observed, want), {k: v for k, v in want.items() if k != "priority"})
        fields = {d.field for d in diffs}
        if fields & {"conditions", "actions"}:
            data = call(f"update the rule for {service}", elb.modify_rule, RuleArn=observed.id,
                        Conditions=want["conditions"], Actions=want["actions"])["Rules"][0]
            observed = _rule_observed(data, observed.tags)
        if "tags" in fields:
            call(f"tag the rule for {service}", elb.add_tags, ResourceArns=[observed.id],
                 Tags=elb_tags(ctx, rule_component(service)))
        observed.attrs["priority"] = want["priority"]
        result.append(observed)
    return result


def inventory_rules(ctx: AwsContext, listeners: list[Observed]) -> list[Observed]:
    return [r for listener in listeners if listener.attrs.get("port") == 443
            for r in find_rules(ctx, listener.id) if ctx.owns(r.tags)]


@aws_task(task_run_name="delete listener rule {observed.name}")
def delete_rule(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"listener rule {observed.id}")
    call_or_none(f"delete listener rule {observed.name}", ctx.elbv2().delete_rule, RuleArn=observed.id)


# ---------------------------------------------------------------- the family's plan


def plan_load_balancer_family(spec: Stack, ctx: AwsContext) -> list[Change]:
    from tasks import network

    changes: list[Change] = []
    bucket = find_log_bucket(ctx) if spec.load_balancer.access_logs else None
    changes.append(plan_log_bucket(spec, ctx, bucket))
    certificate = find_certificate(spec, ctx)
    changes.append(plan_certificate(spec, ctx, certificate))
    vpc = network.find_vpc(ctx)
    subnets = [network.find_subnet(ctx, s) if vpc else None for s in network.subnet_specs(spec) if s.tier == "public"]
    group = network.find_security_group(ctx, "sg-alb") if vpc else None
    alb = find_load_balancer(ctx)
    bucket_for_alb = bucket_name(ctx) if spec.load_balancer.access_logs else None
    changes.append(plan_load_balancer(spec, ctx, alb, [s.id for s in subnets if s] if all(subnets) else None,
                                      group.id if group else None, bucket_for_alb))
    groups = {s: find_target_group(ctx, s) for s, svc in spec.services.items() if svc.load_balanced}
    changes += [plan_target_group(spec, ctx, s, groups[s], vpc.id if vpc else None) for s in groups]
    group_arns = {s: g.id for s, g in groups.items() if g} if all(groups.values()) else None
    https = None
    for port in LISTENERS:
        listener = find_listener(ctx, alb.id, port) if alb else None
        https = listener if port == 443 else https
        changes.append(plan_listener(spec, ctx, port, listener, certificate.id if certificate else None, group_arns))
    changes += plan_rules(spec, ctx, find_rules(ctx, https.id) if https else None, group_arns)
    return changes


def resource_label(alb_arn: str, target_group_arn: str) -> str:
    """app/{alb}/{id}/targetgroup/{tg}/{id}: what ALBRequestCountPerTarget scaling is keyed by."""
    return f"{alb_arn.split(':loadbalancer/', 1)[1]}/{target_group_arn.split(':', 5)[5]}"
