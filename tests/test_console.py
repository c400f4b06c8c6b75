"""AWS console links (tasks/console.py): one per kind of resource ecsflow makes, from the ids and ARNs
`Observed.id` holds. Pure: no server, no AWS."""

from __future__ import annotations

import pytest

from tasks.console import console_url, markdown_table, resource_kind, resource_rows
from tasks.contract import Observed

R = "ap-northeast-1"
C = f"https://{R}.console.aws.amazon.com"
ACCOUNT = "123456789012"


def arn(service: str, resource: str, region: str = R) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"


CASES = [
    # (id or ARN, kind hint, expected kind, expected link)
    ("vpc-0a1b2c", None, "vpc", f"{C}/vpcconsole/home?region={R}#VpcDetails:VpcId=vpc-0a1b2c"),
    ("subnet-0a1b2c", None, "subnet", f"{C}/vpcconsole/home?region={R}#SubnetDetails:subnetId=subnet-0a1b2c"),
    ("rtb-0a1b2c", None, "route table", f"{C}/vpcconsole/home?region={R}#RouteTableDetails:RouteTableId=rtb-0a1b2c"),
    ("igw-0a1b2c", None, "internet gateway",
     f"{C}/vpcconsole/home?region={R}#InternetGateway:internetGatewayId=igw-0a1b2c"),
    ("nat-0a1b2c", None, "nat gateway", f"{C}/vpcconsole/home?region={R}#NatGatewayDetails:natGatewayId=nat-0a1b2c"),
    ("eipalloc-0a1b2c", None, "elastic ip",
     f"{C}/vpcconsole/home?region={R}#ElasticIpDetails:AllocationId=eipalloc-0a1b2c"),
    ("sg-0a1b2c", None, "security group", f"{C}/vpcconsole/home?region={R}#SecurityGroup:groupId=sg-0a1b2c"),
    ("vpce-0a1b2c", None, "vpc endpoint", f"{C}/vpcconsole/home?region={R}#EndpointDetails:vpcEndpointId=vpce-0a1b2c"),
    (arn("ec2", "vpc/vpc-0a1b2c"), None, "vpc", f"{C}/vpcconsole/home?region={R}#VpcDetails:VpcId=vpc-0a1b2c"),
    (arn("rds", "db:library-prod-db"), None, "db instance",
     f"{C}/rds/home?region={R}#database:id=library-prod-db;is-cluster=false"),
    ("library-prod-db", "db instance", "db instance",
     f"{C}/rds/home?region={R}#database:id=library-prod-db;is-cluster=false"),
    (arn("rds", "subgrp:library-prod-db"), None, "db subnet group",
     f"{C}/rds/home?region={R}#db-subnet-group:id=library-prod-db"),
    (arn("rds", "pg:library-prod-pg16"), None, "db parameter group",
     f"{C}/rds/home?region={R}#parameter-group-details:parameter-group-name=library-prod-pg16"),
    # a snapshot copy lives in the copy region: its ARN's region wins over the stack's
    (arn("rds", "snapshot:library-prod-2026-11-02", "ap-northeast-3"), None, "db snapshot",
     "https://ap-northeast-3.console.aws.amazon.com/rds/home?region=ap-northeast-3"
     "#db-snapshot:id=library-prod-2026-11-02"),
    (arn("ecr", "repository/library-prod-backend"), None, "ecr repository",
     f"{C}/ecr/repositories/private/{ACCOUNT}/library-prod-backend?region={R}"),
    (arn("ecs", "cluster/library-prod-cluster"), None, "ecs cluster",
     f"{C}/ecs/v2/clusters/library-prod-cluster?region={R}"),
    (arn("ecs", "service/library-prod-cluster/library-prod-api"), None, "ecs service",
     f"{C}/ecs/v2/clusters/library-prod-cluster/services/library-prod-api?region={R}"),
    ("library-prod-cluster/library-prod-api", "ecs service", "ecs service",
     f"{C}/ecs/v2/clusters/library-prod-cluster/services/library-prod-api?region={R}"),
    (arn("ecs", "task-definition/library-prod-api:7"), None, "task definition",
     f"{C}/ecs/v2/task-definitions/library-prod-api/7?region={R}"),
    (arn("ecs", "task/library-prod-cluster/0123abcd"), None, "ecs task",
     f"{C}/ecs/v2/clusters/library-prod-cluster/tasks/0123abcd?region={R}"),
    ("service/library-prod-cluster/library-prod-api", "scalable target", "scalable target",
     f"{C}/ecs/v2/clusters/library-prod-cluster/services/library-prod-api?region={R}"),
    (arn("elasticloadbalancing", "loadbalancer/app/library-prod-alb/50dc6c495c0c9188"), None, "load balancer",
     f"{C}/ec2/home?region={R}#LoadBalancer:loadBalancerArn="
     + arn("elasticloadbalancing", "loadbalancer/app/library-prod-alb/50dc6c495c0c9188")),
    (arn("elasticloadbalancing", "listener/app/library-prod-alb/50dc6c495c0c9188/f2f7dc8efc522ab2"), None,
     "listener", f"{C}/ec2/home?region={R}#ELBListenerV2:listenerArn="
     + arn("elasticloadbalancing", "listener/app/library-prod-alb/50dc6c495c0c9188/f2f7dc8efc522ab2")),
    # a rule is listed on its listener's page
    (arn("elasticloadbalancing", "listener-rule/app/library-prod-alb/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d0"),
     None, "listener rule", f"{C}/ec2/home?region={R}#ELBListenerV2:listenerArn="
     + arn("elasticloadbalancing", "listener/app/library-prod-alb/50dc6c495c0c9188/f2f7dc8efc522ab2")),
    (arn("elasticloadbalancing", "targetgroup/library-prod-api/73e2d6bc24d8a067"), None, "target group",
     f"{C}/ec2/home?region={R}#TargetGroup:targetGroupArn="
     + arn("elasticloadbalancing", "targetgroup/library-prod-api/73e2d6bc24d8a067")),
    (arn("acm", "certificate/12345678-1234-1234-1234-123456789012"), None, "certificate",
     f"{C}/acm/home?region={R}#/certificates/12345678-1234-1234-1234-123456789012"),
    # the CloudFront certificate is in us-east-1 whatever the stack's region
    (arn("acm", "certificate/abcd", "us-east-1"), None, "certificate",
     "https://us-east-1.console.aws.amazon.com/acm/home?region=us-east-1#/certificates/abcd"),
    (arn("kms", "key/1234abcd-12ab-34cd-56ef-1234567890ab"), None, "kms key",
     f"{C}/kms/home?region={R}#/kms/keys/1234abcd-12ab-34cd-56ef-1234567890ab"),
    (arn("logs", "log-group:/ecsflow/library-prod/ecs-api"), None, "log group",
     f"{C}/cloudwatch/home?region={R}#logsV2:log-groups/log-group/$252Fecsflow$252Flibrary-prod$252Fecs-api"),
    (arn("logs", "log-group:/ecsflow/library-prod/ecs-api:*"), None, "log group",
     f"{C}/cloudwatch/home?region={R}#logsV2:log-groups/log-group/$252Fecsflow$252Flibrary-prod$252Fecs-api"),
    ("/ecsflow/library-prod/ecs-api:library-prod-api-http-5xx", "metric filter", "metric filter",
     f"{C}/cloudwatch/home?region={R}#logsV2:log-groups/log-group/$252Fecsflow$252Flibrary-prod$252Fecs-api"
     "/metric-filters"),
    (f"arn:aws:iam::{ACCOUNT}:role/ecsflow/library-prod/library-prod-api-execution", None, "iam role",
     "https://console.aws.amazon.com/iam/home#/roles/details/library-prod-api-execution"),
    (f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com", None, "oidc provider",
     "https://console.aws.amazon.com/iam/home#/identity_providers/details/OPENID/"
     f"arn%3Aaws%3Aiam%3A%3A{ACCOUNT}%3Aoidc-provider%2Ftoken.actions.githubusercontent.com"),
    # the six random characters AWS appends to a secret's ARN are not part of its name
    (arn("secretsmanager", "secret:library-prod/app/API_KEY-AbC123"), None, "secret",
     f"{C}/secretsmanager/secret?name=library-prod%2Fapp%2FAPI_KEY&region={R}"),
    (arn("secretsmanager", "secret:rds!db-0123-4567-x1Y2z3"), None, "secret",
     f"{C}/secretsmanager/secret?name=rds%21db-0123-4567&region={R}"),
    (arn("sns", "library-prod-alarms"), None, "sns topic",
     f"{C}/sns/v3/home?region={R}#/topic/" + arn("sns", "library-prod-alarms")),
    (arn("cloudwatch", "alarm:library-prod-api-cpu"), None, "alarm",
     f"{C}/cloudwatch/home?region={R}#alarmsV2:alarm/library-prod-api-cpu"),
    (f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/library-prod-overview", None, "dashboard",
     f"{C}/cloudwatch/home?region={R}#dashboards:name=library-prod-overview"),
    ("library-prod-overview", "dashboard", "dashboard",
     f"{C}/cloudwatch/home?region={R}#dashboards:name=library-prod-overview"),
    ("arn:aws:s3:::library-prod-alb-logs", None, "s3 bucket",
     f"https://s3.console.aws.amazon.com/s3/buckets/library-prod-alb-logs?region={R}"),
    ("Z0123456789ABCDEFGHIJ", "hosted zone", "hosted zone",
     "https://console.aws.amazon.com/route53/v2/hostedzones#ListRecordSets/Z0123456789ABCDEFGHIJ"),
    ("arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ", None, "hosted zone",
     "https://console.aws.amazon.com/route53/v2/hostedzones#ListRecordSets/Z0123456789ABCDEFGHIJ"),
    ("abcdef01-2345-6789-abcd-ef0123456789", "health check", "health check",
     "https://console.aws.amazon.com/route53/healthchecks/home#/details/abcdef01-2345-6789-abcd-ef0123456789"),
    (f"arn:aws:cloudfront::{ACCOUNT}:distribution/E2QWRUHAPOMQZL", None, "cloudfront distribution",
     "https://console.aws.amazon.com/cloudfront/v4/home#/distributions/E2QWRUHAPOMQZL"),
    (arn("wafv2", "regional/webacl/library-prod-alb/a1b2c3"), None, "web acl",
     f"https://console.aws.amazon.com/wafv2/homev2/web-acl/library-prod-alb/a1b2c3/overview?region={R}"),
    (arn("wafv2", "global/webacl/library-prod-cdn/d4e5f6", "us-east-1"), None, "web acl",
     "https://console.aws.amazon.com/wafv2/homev2/web-acl/library-prod-cdn/d4e5f6/overview?region=global"),
    (f"arn:aws:budgets::{ACCOUNT}:budget/library-prod-monthly-cost", None, "budget",
     "https://console.aws.amazon.com/billing/home#/budgets/details?name=library-prod-monthly-cost"),
]


@pytest.mark.parametrize(("resource", "hint", "kind", "link"), CASES, ids=[f"{c[2]}:{c[0][:40]}" for c in CASES])
def test_each_kind_links_to_its_console_page(resource: str, hint: str | None, kind: str, link: str) -> None:
    assert resource_kind(resource, hint) == kind
    assert console_url(resource, R, hint) == link


def test_every_kind_ecsflow_makes_is_covered_above() -> None:
    made = {"vpc", "subnet", "route table", "internet gateway", "nat gateway", "elastic ip", "security group",
            "vpc endpoint", "flow log", "db instance", "db subnet group", "db parameter group", "db snapshot",
            "ecr repository", "ecs cluster", "ecs service", "task definition", "load balancer", "listener",
            "target group", "certificate", "kms key", "log group", "iam role", "secret", "sns topic", "alarm",
            "dashboard", "s3 bucket", "hosted zone", "health check", "cloudfront distribution", "web acl", "budget",
            "oidc provider"}
    assert made - {"flow log"} <= {c[2] for c in CASES}


def test_a_flow_log_has_no_page_of_its_own() -> None:
    assert resource_kind("fl-0a1b2c") == "flow log"
    assert console_url("fl-0a1b2c", R) is None


def test_what_the_id_does_not_name_gets_no_link() -> None:
    assert console_url("library-prod-db", R) is None  # a bare name without a hint
    assert console_url("library-prod-db", R, "no such kind") is None
    assert console_url("", R, "db instance") is None
    assert console_url(arn("sqs", "library-prod-queue"), R) is None  # a service ecsflow does not use
    assert console_url(arn("wafv2", "regional/ipset/x/y"), R) is None  # a WAF IP set, not a web ACL
    assert console_url("arn:aws:s3:::bucket/some/object", R) is None
    assert console_url(arn("ecs", "service/library-prod-api"), R) is None  # old ARN format: no cluster in it
    assert console_url(arn("application-autoscaling", "scalable-target/0ec5abc"), R) is None
    assert console_url("library-prod-backend", R, "ecr repository") is None  # the page needs the account


def test_other_partitions_use_their_console() -> None:
    assert console_url("vpc-0a1b2c", "cn-north-1") == (
        "https://cn-north-1.console.amazonaws.cn/vpcconsole/home?region=cn-north-1#VpcDetails:VpcId=vpc-0a1b2c")
    gov = "arn:aws-us-gov:iam::123456789012:role/r"
    assert console_url(gov, "us-gov-west-1") == "https://console.amazonaws-us-gov.com/iam/home#/roles/details/r"


def test_resource_rows_take_ids_and_names_only_and_skip_what_is_not_a_resource() -> None:
    secret = Observed(id=arn("secretsmanager", "secret:library-prod/app/API_KEY-AbC123"), name="API_KEY",
                      attrs={"value": "hunter2"})
    flow_log = Observed(id="fl-0a1b2c", name="library-prod-flow-log", attrs={"log_group": "/ecsflow/x/vpc-flow-logs"})
    migration = Observed(id=arn("ecs", "task/library-prod-cluster/0123abcd"), name="migration api")
    scaling = Observed(id=arn("application-autoscaling", "scalable-target/0ec5abc"),
                       name="service/library-prod-cluster/library-prod-api")
    rows = resource_rows([(Observed(id="vpc-0a1b2c", name="library-prod-vpc"), None), ([secret, secret], None),
                          ({"log": flow_log}, None), (migration, None), (scaling, "scalable target"),
                          (Observed(id="123456789012", name="registry-scanning"), None), ("a change", None),
                          (None, None)], R)
    assert [(r.kind, r.name) for r in rows] == [("vpc", "library-prod-vpc"), ("secret", "API_KEY"),
                                                ("flow log", "library-prod-flow-log"),
                                                ("scalable target", "service/library-prod-cluster/library-prod-api")]
    # a flow log links to the log group its records go to
    assert rows[2].link == f"{C}/cloudwatch/home?region={R}#logsV2:log-groups/log-group/" \
                           "$252Fecsflow$252Fx$252Fvpc-flow-logs"
    assert rows[3].link == f"{C}/ecs/v2/clusters/library-prod-cluster/services/library-prod-api?region={R}"
    table = markdown_table(rows)
    assert "hunter2" not in table
    assert f"| vpc | library-prod-vpc | `vpc-0a1b2c` | [open]({C}/vpcconsole/home?region={R}" in table


def test_the_audit_report_links_what_it_checked_failed_first() -> None:
    from flows.audit import console_links
    from tasks.audit import Finding

    findings = [Finding("ENC-RDS", "RDS storage encrypted with KMS", "high", "library-prod-db", True, "ok"),
                Finding("SG-ECS", "ECS reachable only from the ALB", "high", "sg-ecs (sg-0abc)", False, "open to all"),
                Finding("TD-REVISIONS", "Few active task-definition revisions", "low", "library-prod-api", True, "ok")]
    section = console_links(findings, R)
    assert section.splitlines()[1:5] == [
        "## In the AWS console", "", "| result | resource | page |", "|---|---|---|"]
    assert section.splitlines()[5:] == [
        f"| **FAIL** | `sg-ecs (sg-0abc)` | [open]({C}/vpcconsole/home?region={R}#SecurityGroup:groupId=sg-0abc) |",
        f"| pass | `library-prod-db` | [open]({C}/rds/home?region={R}#database:id=library-prod-db;is-cluster=false) |"]


def test_the_deploy_summary_links_each_service() -> None:
    from flows.deploy_app import service_links
    from tasks.aws import AwsContext

    ctx = AwsContext(stack="library", env="prod", region=R)  # the names come from the stack alone, no AWS read
    assert service_links(ctx, ["backend"]).splitlines()[-1] == (
        f"| backend | [library-prod-backend]({C}/ecs/v2/clusters/library-prod-cluster/services/library-prod-backend"
        f"?region={R}) |")
    assert service_links(ctx, []) == ""
