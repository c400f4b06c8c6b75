"""The edge family (Route 53, CloudFront, WAF) against a real moto server: what each ensure
builds, read back from AWS; a second run makes zero mutating calls; the origin secret never
shows in a plan, an Observed or a result; teardown removes exactly what it made."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import yaml
from pydantic import ValidationError

from spec import Stack
from tasks import edge
from tasks import load_balancer as lb
from tasks.aws import CALLS, AwsContext, EcsflowError
from tasks.contract import Observed
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"
DOMAIN = "library.example.com"


def stack(**load_balancer: Any) -> Stack:
    """The library stack with these load_balancer settings; a `cdn` keeps the cache paths the library's stack
    file names unless it names its own."""
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    if "cdn" in load_balancer:
        load_balancer["cdn"] = {**data["load_balancer"]["cdn"], **load_balancer["cdn"]}
    data["load_balancer"] = {"domain": DOMAIN, **load_balancer}
    return Stack.model_validate(data)


def client(service: str, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


@pytest.fixture
def world(aws: MotoServer) -> dict[str, Any]:
    """A public hosted zone for example.com, a private one of the same name (never used), another
    stack's records, and the stack's ALB (made directly: the load balancer family has its own tests)."""
    r53 = client("route53")
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="zone")["HostedZone"]["Id"]
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    r53.create_hosted_zone(Name="example.com", CallerReference="private", VPC={"VPCRegion": REGION, "VPCId": vpc},
                           HostedZoneConfig={"Comment": "internal", "PrivateZone": True})
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": "shop.example.com", "Type": "A", "TTL": 60,
                              "ResourceRecords": [{"Value": "192.0.2.1"}]}}]})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]
               ["SubnetId"] for i, az in enumerate("ac")]
    group = ec2.create_security_group(GroupName="alb", Description="alb", VpcId=vpc)["GroupId"]
    client("elbv2").create_load_balancer(Name="library-prod-alb", Subnets=subnets, SecurityGroups=[group],
                                         Tags=[{"Key": "ecsflow:stack", "Value": "library"},
                                               {"Key": "ecsflow:env", "Value": "prod"}])
    return {"zone": zone.rsplit("/", 1)[-1]}


def records(zone: str) -> dict[str, dict[str, Any]]:
    sets = client("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {f"{r['Name']} {r['Type']}": r for r in sets}


def test_dns_health_check_validation_records_and_alb_waf(world: dict[str, Any]) -> None:
    spec = stack(dns={"hosted_zone_name": "example.com"}, waf={"enabled": True, "rate_limit_per_5min": 500})
    ctx = AwsContext.for_stack(spec)
    alb = lb.find_load_balancer(ctx)
    assert alb is not None

    def run() -> tuple[Observed, Observed | None]:
        zone = edge.lookup_zone.fn(spec, ctx)
        lb.ensure_certificate.fn(spec, ctx)
        edge.ensure_validation_records.fn(spec, ctx, zone)
        edge.ensure_records.fn(spec, ctx, zone, alb, None)
        edge.ensure_health_check.fn(spec, ctx)
        for scope in ("CLOUDFRONT", "REGIONAL"):
            edge.ensure_web_acl.fn(spec, ctx, scope, alb if scope == "REGIONAL" else None, None)
        return zone, edge.find_web_acl(ctx, "REGIONAL")

    zone, acl = run()
    assert zone.id == world["zone"]  # the public zone, not the private one of the same name
    got = records(world["zone"])
    alias = got[f"{DOMAIN}. A"]["AliasTarget"]
    assert alias["DNSName"].rstrip(".") == f"dualstack.{alb.attrs['dns_name']}".lower()
    assert alias["HostedZoneId"] == alb.attrs["zone_id"] and alias["EvaluateTargetHealth"] is True
    assert f"{DOMAIN}. AAAA" not in got  # the ALB is IPv4 only
    assert got[f"_ecsflow.{DOMAIN}. TXT"]["ResourceRecords"] == [{"Value": '"ecsflow:stack=library ecsflow:env=prod"'}]
    certificate = lb.find_certificate(spec, ctx)
    assert certificate is not None
    cname = certificate.attrs["records"][0]
    assert got[f"{cname['Name']} CNAME"]["ResourceRecords"] == [{"Value": cname["Value"]}]

    [check] = client("route53").list_health_checks()["HealthChecks"]
    config = check["HealthCheckConfig"]
    assert (config["Type"], config["FullyQualifiedDomainName"], config["ResourcePath"], config["Port"]) == (
        "HTTPS", DOMAIN, "/health", 443)  # the frontend's (the /* service) health path
    tags = client("route53").list_tags_for_resource(ResourceType="healthcheck", ResourceId=check["Id"])
    assert {t["Key"]: t["Value"] for t in tags["ResourceTagSet"]["Tags"]}["ecsflow:component"] == "health-check"

    # No CloudFront: the WAF sits on the ALB, with the managed rule groups and the rate limit.
    assert edge.find_web_acl(ctx, "CLOUDFRONT") is None and acl is not None
    rules = {r["Name"]: r for r in acl.attrs["rules"]}
    assert set(rules) == {*edge.MANAGED_RULE_GROUPS, "rate-limit"}
    assert rules["rate-limit"]["Statement"]["RateBasedStatement"]["Limit"] == 500
    attached = client("wafv2").get_web_acl_for_resource(ResourceArn=alb.id)["WebACL"]
    assert attached["ARN"] == acl.id

    CALLS.reset()
    run()
    assert CALLS.mutating() == {}
    assert {c.action for c in edge.plan_edge(spec, ctx)} == {"no-op"}

    # A new rate limit is one WAF update; the plan says which field.
    faster = stack(dns={"hosted_zone_name": "example.com"}, waf={"enabled": True, "rate_limit_per_5min": 300})
    [waf_change] = [c for c in edge.plan_edge(faster, ctx) if c.resource == "waf web acl"]
    assert waf_change.action == "update" and waf_change.changed_fields == ["rules"]

    # Teardown from the inventory: our records and health check go, the other stack's record stays.
    found = {"records": edge.inventory_records(ctx), "checks": edge.inventory_health_checks(ctx),
             "acls": edge.inventory_web_acls(ctx)}
    assert [o.name for o in found["records"]] == [DOMAIN]
    for observed in found["records"]:
        edge.delete_records.fn(observed, ctx)
    for observed in found["checks"]:
        edge.delete_health_check.fn(observed, ctx)
    for observed in found["acls"]:
        edge.delete_web_acl.fn(observed, ctx)
    left = records(world["zone"])
    assert sorted(left) == ["example.com. NS", "example.com. SOA", "shop.example.com. A"]
    assert edge.inventory_records(ctx) == [] and edge.inventory_health_checks(ctx) == []
    assert edge.inventory_web_acls(ctx) == []


def test_cloudfront_with_waf_and_a_secret_origin_header(world: dict[str, Any]) -> None:
    spec = stack(dns={"hosted_zone_id": world["zone"], "health_check": False},
                 cdn={"enabled": True, "price_class": "PriceClass_200"}, waf={"enabled": True})
    ctx = AwsContext.for_stack(spec)
    alb = lb.find_load_balancer(ctx)
    assert alb is not None

    def run() -> dict[str, Any]:
        zone = edge.lookup_zone.fn(spec, ctx)
        secret = edge.ensure_origin_secret.fn(ctx)
        certificate = edge.ensure_cdn_certificate.fn(spec, ctx, zone)
        acl_cdn = edge.ensure_web_acl.fn(spec, ctx, "CLOUDFRONT", None, secret)
        acl_alb = edge.ensure_web_acl.fn(spec, ctx, "REGIONAL", alb, secret)
        distribution = edge.ensure_distribution.fn(spec, ctx, alb, certificate, acl_cdn, secret)
        edge.ensure_records.fn(spec, ctx, zone, alb, distribution)
        return {"secret": secret, "certificate": certificate, "acl_cdn": acl_cdn, "acl_alb": acl_alb,
                "distribution": distribution}

    made = run()
    value = client("secretsmanager").get_secret_value(SecretId=made["secret"].id)["SecretString"]
    assert len(value) >= 40

    # The certificate is CloudFront's: in us-east-1, validated through the zone.
    assert made["certificate"].id.split(":")[3] == "us-east-1" and made["certificate"].attrs["status"] == "ISSUED"
    cname = made["certificate"].attrs["records"][0]
    assert f"{cname['Name']} CNAME" in records(world["zone"])

    config = client("cloudfront").get_distribution_config(Id=made["distribution"].name)["DistributionConfig"]
    assert config["Aliases"]["Items"] == [DOMAIN] and config["PriceClass"] == "PriceClass_200"
    assert config["ViewerCertificate"]["ACMCertificateArn"] == made["certificate"].id
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert config["WebACLId"] == made["acl_cdn"].id
    [origin] = config["Origins"]["Items"]
    assert origin["DomainName"] == alb.attrs["dns_name"]
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    assert origin["CustomHeaders"]["Items"] == [{"HeaderName": "X-Origin-Verify", "HeaderValue": value}]
    policies = {b["PathPattern"]: b["CachePolicyId"] for b in config["CacheBehaviors"]["Items"]}
    assert policies == {"/api/*": edge.CACHING_DISABLED, "/_nuxt/*": edge.CACHING_OPTIMIZED,
                        "/assets/*": edge.CACHING_OPTIMIZED}
    assert config["DefaultCacheBehavior"]["CachePolicyId"] == edge.CACHING_DISABLED
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    tags = client("cloudfront").list_tags_for_resource(Resource=made["distribution"].id)["Tags"]["Items"]
    assert {t["Key"]: t["Value"] for t in tags}["ecsflow:component"] == "cdn"

    # WAF: the managed rules on CloudFront (us-east-1); on the ALB only the origin check, requiring the header.
    cdn_rules = {r["Name"] for r in made["acl_cdn"].attrs.get("rules") or edge.find_web_acl(ctx, "CLOUDFRONT")
                 .attrs["rules"]}
    assert cdn_rules == {*edge.MANAGED_RULE_GROUPS, "rate-limit"} and ":us-east-1:" in made["acl_cdn"].id
    acl_alb = edge.find_web_acl(ctx, "REGIONAL")
    assert acl_alb is not None
    [verify] = client("wafv2").get_web_acl(Name=acl_alb.name, Scope="REGIONAL",
                                           Id=acl_alb.attrs["acl_id"])["WebACL"]["Rules"]
    match = verify["Statement"]["NotStatement"]["Statement"]["ByteMatchStatement"]
    assert verify["Action"] == {"Block": {}} and match["SearchString"] == value.encode()
    assert match["FieldToMatch"] == {"SingleHeader": {"Name": "x-origin-verify"}}
    assert client("wafv2").get_web_acl_for_resource(ResourceArn=alb.id)["WebACL"]["ARN"] == acl_alb.id

    got = records(world["zone"])
    for kind in ("A", "AAAA"):
        target = got[f"{DOMAIN}. {kind}"]["AliasTarget"]
        assert target["HostedZoneId"] == edge.CLOUDFRONT_ZONE
        assert target["DNSName"].rstrip(".") == made["distribution"].attrs["domain_name"]

    # The secret is in no result and no plan row.
    assert value not in json.dumps([o.__dict__ for o in made.values()], default=str)
    CALLS.reset()
    again = run()
    assert CALLS.mutating() == {}
    assert value not in json.dumps([o.__dict__ for o in again.values()], default=str)
    rows = [c.as_row() for c in edge.plan_edge(spec, ctx)]
    assert {r["action"] for r in rows} == {"no-op"} and value not in json.dumps(rows)

    # Someone changes the header in the console: the plan shows an update, with digests only.
    cf = client("cloudfront")
    current = cf.get_distribution_config(Id=made["distribution"].name)
    current["DistributionConfig"]["Origins"]["Items"][0]["CustomHeaders"]["Items"][0]["HeaderValue"] = "guessable"
    cf.update_distribution(Id=made["distribution"].name, IfMatch=current["ETag"],
                           DistributionConfig=current["DistributionConfig"])
    [drift] = [c for c in edge.plan_edge(spec, ctx) if c.resource == "cloudfront distribution"]
    assert drift.action == "update" and value not in json.dumps(drift.as_row())
    assert "guessable" not in json.dumps(drift.as_row()) and "sha256:" in json.dumps(drift.as_row())
    edge.ensure_distribution.fn(spec, ctx, alb, made["certificate"], made["acl_cdn"], made["secret"])
    repaired = cf.get_distribution_config(Id=made["distribution"].name)["DistributionConfig"]
    assert repaired["Origins"]["Items"][0]["CustomHeaders"]["Items"][0]["HeaderValue"] == value

    # Teardown: the distribution is disabled and deployed before it is deleted; then the rest.
    for observed in edge.inventory_records(ctx):
        edge.delete_records.fn(observed, ctx)
    [distribution] = edge.inventory_distributions(ctx)
    edge.delete_distribution.fn(distribution, ctx)
    for observed in edge.inventory_web_acls(ctx):
        edge.delete_web_acl.fn(observed, ctx)
    for observed in edge.inventory_cdn_certificates(ctx):
        edge.delete_cdn_certificate.fn(observed, ctx)
    for observed in edge.inventory_origin_secrets(ctx):
        edge.delete_origin_secret.fn(observed, ctx)
    assert client("cloudfront").list_distributions()["DistributionList"].get("Items", []) == []
    assert edge.inventory_web_acls(ctx) == [] and edge.inventory_cdn_certificates(ctx) == []
    assert edge.inventory_origin_secrets(ctx) == [] and edge.inventory_records(ctx) == []


def test_a_cdn_without_cache_paths_caches_nothing_and_a_second_run_changes_nothing(world: dict[str, Any]) -> None:
    """No stack-file paths (the neutral default): only the default route, never cached."""
    spec = stack(dns={"hosted_zone_id": world["zone"], "health_check": False},
                 cdn={"enabled": True, "static_paths": [], "uncached_paths": []})
    ctx = AwsContext.for_stack(spec)
    alb = lb.find_load_balancer(ctx)
    assert alb is not None

    def run() -> Observed:
        zone = edge.lookup_zone.fn(spec, ctx)
        secret = edge.ensure_origin_secret.fn(ctx)
        certificate = edge.ensure_cdn_certificate.fn(spec, ctx, zone)
        return edge.ensure_distribution.fn(spec, ctx, alb, certificate, None, secret)

    made = run()
    config = client("cloudfront").get_distribution_config(Id=made.name)["DistributionConfig"]
    assert config["CacheBehaviors"]["Quantity"] == 0 and not config["CacheBehaviors"].get("Items")
    assert config["DefaultCacheBehavior"]["CachePolicyId"] == edge.CACHING_DISABLED
    CALLS.reset()
    run()
    assert CALLS.mutating() == {}
    [row] = [c for c in edge.plan_edge(spec, ctx) if c.resource == "cloudfront distribution"]
    assert row.action == "no-op", row.as_row()


def test_a_missing_zone_is_named_and_foreign_records_are_left_alone(world: dict[str, Any]) -> None:
    missing = stack(dns={"hosted_zone_name": "example.org"})
    with pytest.raises(EcsflowError, match=r"no public Route 53 hosted zone example\.org"):
        edge.lookup_zone.fn(missing, AwsContext.for_stack(missing))
    spec = stack(dns={})
    ctx = AwsContext.for_stack(spec)
    other = {"Name": f"_ecsflow.{DOMAIN}", "Type": "TXT", "TTL": 60,
             "ResourceRecords": [{"Value": '"ecsflow:stack=other ecsflow:env=prod"'}]}
    client("route53").change_resource_record_sets(HostedZoneId=world["zone"], ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": other}]})
    alb = lb.find_load_balancer(ctx)
    assert alb is not None
    with pytest.raises(EcsflowError, match="another stack owns these records"):
        edge.ensure_records.fn(spec, ctx, edge.lookup_zone.fn(spec, ctx), alb, None)
    assert edge.inventory_records(ctx) == []


@pytest.mark.parametrize(("settings", "field"), [
    ({"domain": None, "cdn": {"enabled": True}}, "cdn.enabled: CloudFront needs load_balancer.domain"),
    ({"domain": "*.example.com", "dns": {}}, "dns: Route 53 records need load_balancer.domain"),
    ({"dns": {"hosted_zone_id": "Z123", "hosted_zone_name": "example.com"}}, "either hosted_zone_id or"),
    ({"waf": {"enabled": True, "rate_limit_per_5min": 10}}, "rate_limit_per_5min"),
])
def test_bad_edge_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace("*", r"\*")):
        stack(**settings)


def test_defaults_build_no_edge() -> None:
    spec = stack()
    assert not edge.wants_edge(spec)
    assert not edge.wants_web_acl(spec, "REGIONAL") and not edge.wants_web_acl(spec, "CLOUDFRONT")


def test_the_albs_web_acl_is_deleted_even_when_the_alb_vanishes_beside_it(
        world: dict[str, Any], fault_proxy: Any) -> None:
    """Teardown deletes the ALB and its web ACL side by side: WAF then says the ALB does not exist."""
    spec = stack(waf={"enabled": True})
    ctx = AwsContext.for_stack(spec)
    alb = lb.find_load_balancer(ctx)
    assert alb is not None
    acl = edge.ensure_web_acl.fn(spec, ctx, "REGIONAL", alb, None)
    assert acl is not None
    fault_proxy.fail("GetWebACLForResource", kind="access_denied", status=400, code="WAFNonexistentItemException",
                     message="AWS WAF couldn't perform the operation because your resource doesn't exist.")
    edge.delete_web_acl.fn(acl, ctx, alb_arn=alb.id)
    assert fault_proxy.pending_faults() == 0
    assert edge.inventory_web_acls(ctx) == []
