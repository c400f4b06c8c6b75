"""Smoke tests of the Route 53, CloudFront, WAFv2, ACM (us-east-1) and Secrets Manager calls the
edge and DB-initialisation families rely on, against moto 5.2.5 in server mode. Each gap is pinned
here with what ecsflow does about it (tasks/ keeps the real calls); a test that fails means moto
changed: update the note and, where it closed a gap, the code that works around it."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


def client(service: str, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


@pytest.fixture
def alb(aws: MotoServer) -> str:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.6.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]
               ["SubnetId"] for i, az in enumerate("ac")]
    group = ec2.create_security_group(GroupName="alb", Description="alb", VpcId=vpc)["GroupId"]
    return str(client("elbv2").create_load_balancer(Name="smoke-alb", Subnets=subnets, SecurityGroups=[group])
               ["LoadBalancers"][0]["LoadBalancerArn"])


def test_route53_alias_records_are_listed_by_reversed_labels(aws: MotoServer) -> None:
    r53 = client("route53")
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="smoke")["HostedZone"]["Id"]
    changes = [{"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "TXT", "TTL": 60,
                                                          "ResourceRecords": [{"Value": '"x"'}]}}
               for name in ("b.app.example.com", "_v.app.example.com", "a.example.com", "zzz.example.com")]
    changes.append({"Action": "UPSERT", "ResourceRecordSet": {"Name": "app.example.com", "Type": "A", "AliasTarget": {
        "HostedZoneId": "Z14GRHDCWA56QT", "DNSName": "dualstack.smoke.elb.amazonaws.com.",
        "EvaluateTargetHealth": True}}})
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    listed = r53.list_resource_record_sets(HostedZoneId=zone, StartRecordName="app.example.com")
    names = [r["Name"] for r in listed["ResourceRecordSets"]]
    # A domain and its subdomains are contiguous from StartRecordName on (edge.find_records relies on it).
    assert names[:3] == ["app.example.com.", "_v.app.example.com.", "b.app.example.com."]
    assert listed["ResourceRecordSets"][0]["AliasTarget"]["EvaluateTargetHealth"] is True
    # Public and private zones of one name are told apart by Config.PrivateZone.
    assert r53.list_hosted_zones_by_name(DNSName="example.com.")["HostedZones"][0]["Config"]["PrivateZone"] is False


def test_route53_health_checks_are_tagged_after_creation(aws: MotoServer) -> None:
    r53 = client("route53")
    config = {"Type": "HTTPS", "FullyQualifiedDomainName": "app.example.com", "ResourcePath": "/health", "Port": 443,
              "RequestInterval": 30, "FailureThreshold": 3, "EnableSNI": True}
    check = r53.create_health_check(CallerReference="smoke-1", HealthCheckConfig=config)["HealthCheck"]
    r53.change_tags_for_resource(ResourceType="healthcheck", ResourceId=check["Id"],
                                 AddTags=[{"Key": "ecsflow:stack", "Value": "smoke"}])
    tags = r53.list_tags_for_resources(ResourceType="healthcheck", ResourceIds=[check["Id"]])["ResourceTagSets"]
    assert tags[0]["Tags"] == [{"Key": "ecsflow:stack", "Value": "smoke"}]
    updated = r53.update_health_check(HealthCheckId=check["Id"], HealthCheckVersion=check["HealthCheckVersion"],
                                      ResourcePath="/api/health")["HealthCheck"]
    assert updated["HealthCheckConfig"]["ResourcePath"] == "/api/health"
    r53.delete_health_check(HealthCheckId=check["Id"])
    assert r53.list_health_checks()["HealthChecks"] == []


def test_acm_in_us_east_1_shows_its_dns_validation_record(aws: MotoServer) -> None:
    acm = client("acm", "us-east-1")
    arn = acm.request_certificate(DomainName="app.example.com", ValidationMethod="DNS",
                                  Tags=[{"Key": "ecsflow:stack", "Value": "smoke"}])["CertificateArn"]
    assert arn.split(":")[3] == "us-east-1"
    [option] = acm.describe_certificate(CertificateArn=arn)["Certificate"]["DomainValidationOptions"]
    assert option["ResourceRecord"]["Type"] == "CNAME"
    assert option["ResourceRecord"]["Value"].endswith(".acm-validations.aws.")


def distribution_config(reference: str) -> dict[str, Any]:
    return {"CallerReference": reference, "Comment": "smoke", "Enabled": True,
            "Aliases": {"Quantity": 1, "Items": ["app.example.com"]},
            "Origins": {"Quantity": 1, "Items": [{
                "Id": "alb", "DomainName": "smoke.elb.amazonaws.com",
                "CustomHeaders": {"Quantity": 1, "Items": [{"HeaderName": "X-Origin-Verify", "HeaderValue": "v"}]},
                "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443, "OriginProtocolPolicy": "https-only",
                                       "OriginSslProtocols": {"Quantity": 1, "Items": ["TLSv1.2"]}}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "alb", "ViewerProtocolPolicy": "redirect-to-https",
                                     "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"},
            "ViewerCertificate": {"ACMCertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
                                  "SSLSupportMethod": "sni-only", "MinimumProtocolVersion": "TLSv1.2_2021"}}


def test_cloudfront_distribution_life_cycle(aws: MotoServer) -> None:
    cf = client("cloudfront", "us-east-1")
    made = cf.create_distribution_with_tags(DistributionConfigWithTags={
        "DistributionConfig": distribution_config("smoke"), "Tags": {"Items": [{"Key": "ecsflow:stack",
                                                                                 "Value": "smoke"}]}})
    dist = made["Distribution"]
    assert dist["Status"] == "InProgress" and dist["DomainName"].endswith(".cloudfront.net")
    got = cf.get_distribution_config(Id=dist["Id"])
    config = got["DistributionConfig"]
    assert config["Origins"]["Items"][0]["CustomHeaders"]["Items"][0]["HeaderValue"] == "v"
    # Gap: the echo says CloudFrontDefaultCertificate true beside our ACM certificate (AWS says false);
    # plans project the config onto the keys ecsflow sets, so the extra key never shows as drift.
    assert config["ViewerCertificate"]["CloudFrontDefaultCertificate"] is True
    tags = cf.list_tags_for_resource(Resource=dist["ARN"])["Tags"]["Items"]
    assert tags == [{"Key": "ecsflow:stack", "Value": "smoke"}]
    # Gap: a disabled distribution is "Deployed" at once (AWS takes minutes): teardown's wait passes at once.
    updated = cf.update_distribution(Id=dist["Id"], IfMatch=got["ETag"], DistributionConfig={**config,
                                                                                             "Enabled": False})
    current = cf.get_distribution(Id=dist["Id"])
    assert current["Distribution"]["Status"] == "Deployed" and current["ETag"] == updated["ETag"]
    cf.delete_distribution(Id=dist["Id"], IfMatch=current["ETag"])
    assert cf.list_distributions()["DistributionList"].get("Items", []) == []


def test_wafv2_web_acl_round_trip_and_alb_association(alb: str) -> None:
    waf = client("wafv2")
    visibility = {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "m"}
    rules = [
        {"Name": "origin-verify", "Priority": 0, "Action": {"Block": {}}, "VisibilityConfig": visibility,
         "Statement": {"NotStatement": {"Statement": {"ByteMatchStatement": {
             "SearchString": b"secret", "FieldToMatch": {"SingleHeader": {"Name": "x-origin-verify"}},
             "TextTransformations": [{"Priority": 0, "Type": "NONE"}], "PositionalConstraint": "EXACTLY"}}}}},
        {"Name": "AWSManagedRulesSQLiRuleSet", "Priority": 10, "OverrideAction": {"None": {}},
         "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": "AWSManagedRulesSQLiRuleSet"}},
         "VisibilityConfig": visibility},
        {"Name": "rate-limit", "Priority": 100, "Action": {"Block": {}}, "VisibilityConfig": visibility,
         "Statement": {"RateBasedStatement": {"Limit": 2000, "AggregateKeyType": "IP"}}},
    ]
    summary = waf.create_web_acl(Name="smoke", Scope="REGIONAL", DefaultAction={"Allow": {}}, Rules=rules,
                                 VisibilityConfig=visibility,
                                 Tags=[{"Key": "ecsflow:stack", "Value": "smoke"}])["Summary"]
    got = waf.get_web_acl(Name="smoke", Scope="REGIONAL", Id=summary["Id"])
    assert got["WebACL"]["Rules"] == rules  # the byte match's search string comes back as the bytes sent
    waf.update_web_acl(Name="smoke", Scope="REGIONAL", Id=summary["Id"], LockToken=got["LockToken"],
                       DefaultAction={"Allow": {}}, Rules=rules[1:], VisibilityConfig=visibility)
    assert len(waf.get_web_acl(Name="smoke", Scope="REGIONAL", Id=summary["Id"])["WebACL"]["Rules"]) == 2

    waf.associate_web_acl(WebACLArn=summary["ARN"], ResourceArn=alb)
    assert waf.get_web_acl_for_resource(ResourceArn=alb)["WebACL"]["ARN"] == summary["ARN"]
    # Gap: ListResourcesForWebACL answers HTTP 500; edge.delete_web_acl asks the ALB's side instead
    # (GetWebACLForResource), which is as good in AWS since ecsflow associates its ACL with its ALB only.
    once = boto3.client("wafv2", region_name=REGION, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError, match=r"\(500\)"):
        once.list_resources_for_web_acl(WebACLArn=summary["ARN"], ResourceType="APPLICATION_LOAD_BALANCER")
    waf.disassociate_web_acl(ResourceArn=alb)
    assert "WebACL" not in waf.get_web_acl_for_resource(ResourceArn=alb)
    lock = waf.get_web_acl(Name="smoke", Scope="REGIONAL", Id=summary["Id"])["LockToken"]
    waf.delete_web_acl(Name="smoke", Scope="REGIONAL", Id=summary["Id"], LockToken=lock)
    assert waf.list_web_acls(Scope="REGIONAL")["WebACLs"] == []


def test_cloudfront_scope_web_acls_live_in_us_east_1(aws: MotoServer) -> None:
    visibility = {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "m"}
    summary = client("wafv2", "us-east-1").create_web_acl(
        Name="smoke-cdn", Scope="CLOUDFRONT", DefaultAction={"Allow": {}}, Rules=[],
        VisibilityConfig=visibility)["Summary"]
    assert ":us-east-1:" in summary["ARN"] and ":global/webacl/" in summary["ARN"]


def test_secrets_manager_create_token_delete_and_restore(aws: MotoServer) -> None:
    sm = client("secretsmanager")
    token = "a" * 64
    made = sm.create_secret(Name="smoke-db-app-secret", SecretString="{}", ClientRequestToken=token,
                            Tags=[{"Key": "ecsflow:stack", "Value": "smoke"}])
    described = sm.describe_secret(SecretId="smoke-db-app-secret")
    assert described["ARN"] == made["ARN"] and described["VersionIdsToStages"] == {token: ["AWSCURRENT"]}
    listed = sm.list_secrets(Filters=[{"Key": "tag-key", "Values": ["ecsflow:stack"]},
                                      {"Key": "tag-value", "Values": ["smoke"]}])["SecretList"]
    assert [s["Name"] for s in listed] == ["smoke-db-app-secret"]
    sm.delete_secret(SecretId=made["ARN"], RecoveryWindowInDays=7)
    assert "DeletedDate" in sm.describe_secret(SecretId=made["ARN"])
    sm.restore_secret(SecretId=made["ARN"])
    assert "DeletedDate" not in sm.describe_secret(SecretId=made["ARN"])
    sm.delete_secret(SecretId=made["ARN"], ForceDeleteWithoutRecovery=True)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        sm.describe_secret(SecretId=made["ARN"])
