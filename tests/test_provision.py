"""`ecsflow up / plan / down` end to end: real Prefect server, real moto server over HTTP.

Everything is asserted by reading AWS back with a separate boto3 client, never from
ecsflow's own return values.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from ecsflow.cli import main
from tasks.aws import CALLS
from tests.conftest import LIBRARY_STACK, ROOT

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"
OURS = [{"Name": "tag:ecsflow:stack", "Values": ["library"]}, {"Name": "tag:ecsflow:env", "Values": ["prod"]}]


def aws_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def up(stack: Path = LIBRARY_STACK) -> None:
    assert main(["up", "--stack", str(stack)]) == 0


def tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def assert_ours(tag_list: list[dict[str, str]] | dict[str, str] | None, component: str) -> None:
    found = tag_list if isinstance(tag_list, dict) else tags(tag_list)
    assert found["ecsflow:stack"] == "library", found
    assert found["ecsflow:env"] == "prod", found
    assert found["ecsflow:component"] == component, found
    assert found["project"] == "library-management", found  # the stack file's own tags


def edited_stack(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    edit(data)
    path = tmp_path / "library.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rules_of(group_id: str) -> set[tuple[bool, int, str]]:
    rules = aws_client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return {(r["IsEgress"], r.get("FromPort", -1),
             r.get("CidrIpv4") or r.get("ReferencedGroupInfo", {}).get("GroupId", "?")) for r in rules}


def census() -> Counter[str]:
    """How many of each network/database/registry resource carry our tags."""
    ec2, rds, ecr = aws_client("ec2"), aws_client("rds"), aws_client("ecr")
    count: Counter[str] = Counter()
    count["vpc"] = len(ec2.describe_vpcs(Filters=OURS)["Vpcs"])
    count["subnet"] = len(ec2.describe_subnets(Filters=OURS)["Subnets"])
    count["igw"] = len(ec2.describe_internet_gateways(Filters=OURS)["InternetGateways"])
    count["eip"] = len([a for a in ec2.describe_addresses()["Addresses"] if tags(a.get("Tags")).get("ecsflow:stack")])
    count["nat"] = len([n for n in ec2.describe_nat_gateways()["NatGateways"]
                        if n["State"] != "deleted" and tags(n.get("Tags")).get("ecsflow:stack")])
    count["route table"] = len(ec2.describe_route_tables(Filters=OURS)["RouteTables"])
    count["security group"] = len(ec2.describe_security_groups(Filters=OURS)["SecurityGroups"])
    count["endpoint"] = len([e for e in ec2.describe_vpc_endpoints(Filters=OURS)["VpcEndpoints"]
                             if e["State"].lower() not in ("deleted", "deleting")])
    count["flow log"] = len([f for f in ec2.describe_flow_logs()["FlowLogs"]
                             if tags(f.get("Tags")).get("ecsflow:stack")])
    count["db instance"] = len(rds.describe_db_instances()["DBInstances"])
    count["db subnet group"] = len(rds.describe_db_subnet_groups()["DBSubnetGroups"])
    count["repository"] = len([r for r in ecr.describe_repositories()["repositories"]
                               if r["repositoryName"].startswith("library-prod-")])
    count["kms alias"] = len([a for a in aws_client("kms").list_aliases()["Aliases"]
                              if a["AliasName"].startswith("alias/library-prod-")])
    return count


EXPECTED = Counter({"vpc": 1, "subnet": 4, "igw": 1, "eip": 2, "nat": 2, "route table": 3, "security group": 3,
                    "endpoint": 1, "flow log": 1, "db instance": 1, "db subnet group": 1, "repository": 2,
                    "kms alias": 4})  # logs, rds, ecr and the alarm topic's sns


# ---------------------------------------------------------------- up


@pytest.fixture(scope="module")
def provisioned(moto_server: Any, prefect_server: Any) -> None:
    """One `up` of the library stack for the tests below that only read it, then `down` removes it
    (these run in file order, before the tests that reset the account)."""
    moto_server.reset()
    up()


def test_up_builds_every_phase_one_resource_as_specified(provisioned: None) -> None:
    ec2 = aws_client("ec2")

    vpc = ec2.describe_vpcs(Filters=OURS)["Vpcs"][0]
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    assert_ours(vpc["Tags"], "vpc")
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]

    subnets = {tags(s["Tags"])["ecsflow:component"]: s for s in ec2.describe_subnets(Filters=OURS)["Subnets"]}
    assert {k: (s["CidrBlock"], s["AvailabilityZone"]) for k, s in subnets.items()} == {
        "subnet-public-a": ("10.0.0.0/24", "ap-northeast-1a"), "subnet-public-c": ("10.0.1.0/24", "ap-northeast-1c"),
        "subnet-private-a": ("10.0.10.0/24", "ap-northeast-1a"),
        "subnet-private-c": ("10.0.11.0/24", "ap-northeast-1c")}
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets.values())

    # One NAT per AZ in prod, each in its AZ's public subnet with its own EIP.
    nats = {tags(n["Tags"])["ecsflow:component"]: n for n in ec2.describe_nat_gateways()["NatGateways"]}
    assert set(nats) == {"nat-a", "nat-c"}
    assert nats["nat-a"]["SubnetId"] == subnets["subnet-public-a"]["SubnetId"]
    assert nats["nat-c"]["SubnetId"] == subnets["subnet-public-c"]["SubnetId"]
    igw = ec2.describe_internet_gateways(Filters=OURS)["InternetGateways"][0]
    assert igw["Attachments"][0]["VpcId"] == vpc["VpcId"]

    # Routes: public -> IGW; each private subnet -> the NAT of its own AZ.
    def default_route(subnet_id: str) -> str:
        table = ec2.describe_route_tables(
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"][0]
        route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
        return str(route.get("GatewayId") or route.get("NatGatewayId"))

    assert default_route(subnets["subnet-public-a"]["SubnetId"]) == igw["InternetGatewayId"]
    assert default_route(subnets["subnet-public-c"]["SubnetId"]) == igw["InternetGatewayId"]
    assert default_route(subnets["subnet-private-a"]["SubnetId"]) == nats["nat-a"]["NatGatewayId"]
    assert default_route(subnets["subnet-private-c"]["SubnetId"]) == nats["nat-c"]["NatGatewayId"]

    # The security-group chain ALB -> ECS -> RDS, nothing wider.
    groups = {tags(g["Tags"])["ecsflow:component"]: g["GroupId"]
              for g in ec2.describe_security_groups(Filters=OURS)["SecurityGroups"]}
    alb, ecs, rds_sg = groups["sg-alb"], groups["sg-ecs"], groups["sg-rds"]
    assert {r for r in rules_of(alb) if not r[0]} == {(False, 80, "0.0.0.0/0"), (False, 443, "0.0.0.0/0")}
    assert {r for r in rules_of(ecs) if not r[0]} == {(False, 8080, alb), (False, 80, alb)}
    assert {r for r in rules_of(rds_sg) if not r[0]} == {(False, 5432, ecs)}
    assert {r for r in rules_of(rds_sg) if r[0]} == set()
    default_group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                                          {"Name": "group-name", "Values": ["default"]}])
    assert rules_of(default_group["SecurityGroups"][0]["GroupId"]) == set()

    # S3 gateway endpoint on the private route tables; flow logs to an encrypted, finite log group.
    endpoint = ec2.describe_vpc_endpoints(Filters=OURS)["VpcEndpoints"][0]
    assert endpoint["ServiceName"] == "com.amazonaws.ap-northeast-1.s3" and len(endpoint["RouteTableIds"]) == 2
    flow_log = next(f for f in ec2.describe_flow_logs()["FlowLogs"] if f["ResourceId"] == vpc["VpcId"])
    assert flow_log["TrafficType"] == "ALL"
    group = aws_client("logs").describe_log_groups(logGroupNamePrefix=flow_log["LogGroupName"])["logGroups"][0]
    assert group["retentionInDays"] == 365 and group["kmsKeyId"].startswith("arn:aws:kms:")

    # The database.
    rds = aws_client("rds")
    db = rds.describe_db_instances(DBInstanceIdentifier="library-prod-db")["DBInstances"][0]
    assert db["Engine"] == "postgres" and db["MultiAZ"] is True and db["StorageType"] == "gp3"
    assert db["StorageEncrypted"] is True and db["KmsKeyId"].startswith("arn:aws:kms:")
    assert db["MaxAllocatedStorage"] == 100 and db["BackupRetentionPeriod"] == 7
    assert db["DeletionProtection"] is True and db["PubliclyAccessible"] is False
    assert db["IAMDatabaseAuthenticationEnabled"] is True and db["CopyTagsToSnapshot"] is True
    assert set(db["EnabledCloudwatchLogsExports"]) == {"postgresql", "upgrade"}
    assert db["MasterUserSecret"]["SecretArn"].startswith("arn:aws:secretsmanager:")
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [rds_sg]
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == {
        subnets["subnet-private-a"]["SubnetId"], subnets["subnet-private-c"]["SubnetId"]}
    assert_ours(db["TagList"], "db")
    params = rds.describe_db_parameters(DBParameterGroupName=db["DBParameterGroups"][0]["DBParameterGroupName"],
                                        Source="user")["Parameters"]
    values = {p["ParameterName"]: p.get("ParameterValue") for p in params}
    assert values["rds.force_ssl"] == "1" and values["log_min_duration_statement"] == "500"

    # The registry.
    ecr = aws_client("ecr")
    for service in ("backend", "frontend"):
        repo = ecr.describe_repositories(repositoryNames=[f"library-prod-{service}"])["repositories"][0]
        assert repo["imageTagMutability"] == "IMMUTABLE"
        assert repo["imageScanningConfiguration"]["scanOnPush"] is True
        assert repo["encryptionConfiguration"]["encryptionType"] == "KMS"
        assert_ours(ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"], f"ecr-{service}")
        rules = json.loads(ecr.get_lifecycle_policy(repositoryName=repo["repositoryName"])["lifecyclePolicyText"])
        selections = [r["selection"] for r in rules["rules"]]
        assert {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                "countNumber": 1} in selections
        assert any(s["tagStatus"] == "tagged" and s["countNumber"] == 20 for s in selections)

    assert census() == EXPECTED


def test_second_up_makes_no_mutating_call(provisioned: None) -> None:
    CALLS.reset()
    up()
    assert CALLS.calls, "the second run must still look"
    assert CALLS.mutating() == Counter()


def test_status_json_lists_what_up_made(provisioned: None, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["status", "--stack", str(LIBRARY_STACK), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    kinds = Counter(r["kind"] for r in status["resources"])
    assert kinds["subnet"] == 4 and kinds["nat gateway"] == 2 and kinds["db instance"] == 1
    assert kinds["ecr repository"] == 2 and kinds["kms key"] == 4
    assert kinds["alarm"] >= 20 and kinds["sns topic"] == 1 and kinds["dashboard"] == 1


CONSOLE = f"https://{REGION}.console.aws.amazon.com"
VPC_PAGES = {"vpc": "VpcDetails:VpcId", "subnet": "SubnetDetails:subnetId",
             "route table": "RouteTableDetails:RouteTableId", "internet gateway": "InternetGateway:internetGatewayId",
             "nat gateway": "NatGatewayDetails:natGatewayId",
             "security group": "SecurityGroup:groupId", "vpc endpoint": "EndpointDetails:vpcEndpointId"}
ELB_PAGES = {"load balancer": "LoadBalancer:loadBalancerArn", "listener": "ELBListenerV2:listenerArn",
             "target group": "TargetGroup:targetGroupArn"}


def cloudwatch_escaped(name: str) -> str:
    """How the CloudWatch console writes a log group in its URL: "/" is "$252F"."""
    return name.replace("/", "$252F")


def expected_console_link(kind: str, name: str, resource_id: str) -> str:
    """The console page of each kind ecsflow makes, written out from the AWS console's own URLs."""
    last = resource_id.rsplit("/", 1)[-1]
    account = resource_id.split(":")[4] if resource_id.startswith("arn:") else ""
    if kind in VPC_PAGES:
        return f"{CONSOLE}/vpcconsole/home?region={REGION}#{VPC_PAGES[kind]}={resource_id}"
    if kind in ELB_PAGES:
        return f"{CONSOLE}/ec2/home?region={REGION}#{ELB_PAGES[kind]}={resource_id}"
    cluster_page = f"{CONSOLE}/ecs/v2/clusters/library-prod-cluster"
    forms = {
        "listener rule": f"{CONSOLE}/ec2/home?region={REGION}#ELBListenerV2:listenerArn="
                         f"{resource_id.replace(':listener-rule/', ':listener/').rsplit('/', 1)[0]}",
        "db instance": f"{CONSOLE}/rds/home?region={REGION}#database:id={name};is-cluster=false",
        "db subnet group": f"{CONSOLE}/rds/home?region={REGION}#db-subnet-group:id={name}",
        "db parameter group": f"{CONSOLE}/rds/home?region={REGION}#parameter-group-details:parameter-group-name={name}",
        "ecr repository": f"{CONSOLE}/ecr/repositories/private/{account}/{name}?region={REGION}",
        "ecs cluster": f"{cluster_page}?region={REGION}",
        "ecs service": f"{cluster_page}/services/{name}?region={REGION}",
        # the autoscaling of a service is on the service's page (its name: service/{cluster}/{service})
        "scalable target": f"{cluster_page}/services/{name.rsplit('/', 1)[-1]}?region={REGION}",
        "task definition": f"{CONSOLE}/ecs/v2/task-definitions/{last.replace(':', '/')}?region={REGION}",
        "certificate": f"{CONSOLE}/acm/home?region={REGION}#/certificates/{last}",
        "kms key": f"{CONSOLE}/kms/home?region={REGION}#/kms/keys/{last}",
        "log group": f"{CONSOLE}/cloudwatch/home?region={REGION}#logsV2:log-groups/log-group/"
                     f"{cloudwatch_escaped(name)}",
        "metric filter": f"{CONSOLE}/cloudwatch/home?region={REGION}#logsV2:log-groups/log-group/"
                         f"{cloudwatch_escaped(resource_id.rsplit(':', 1)[0])}/metric-filters",
        "iam role": f"https://console.aws.amazon.com/iam/home#/roles/details/{name}",
        "oidc provider": "https://console.aws.amazon.com/iam/home#/identity_providers/details/OPENID/"
                         + resource_id.replace(":", "%3A").replace("/", "%2F"),
        "sns topic": f"{CONSOLE}/sns/v3/home?region={REGION}#/topic/{resource_id}",
        # a secret's name is its ARN's last part without the 6 random characters AWS appends
        "secret": f"{CONSOLE}/secretsmanager/secret?name={resource_id.split(':')[-1][:-7].replace('!', '%21')}"
                  f"&region={REGION}",
        "alarm": f"{CONSOLE}/cloudwatch/home?region={REGION}#alarmsV2:alarm/{name}",
        "dashboard": f"{CONSOLE}/cloudwatch/home?region={REGION}#dashboards:name={name}",
        "s3 bucket": f"https://s3.console.aws.amazon.com/s3/buckets/{name}?region={REGION}",
        "budget": f"https://console.aws.amazon.com/billing/home#/budgets/details?name={name}",
    }
    return forms[kind]


def read_outputs_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["outputs-library-prod"])))
    assert found, "up publishes the outputs-library-prod artifact"
    return str(sorted(found, key=lambda a: a.created or 0)[-1].data)


RESOURCE_ROW = re.compile(r"^\| (?P<kind>[^|]+) \| (?P<name>[^|]+) \| `(?P<id>[^`]+)` "
                          r"\| \[open\]\((?P<link>[^)]+)\) \|$")


def test_outputs_artifact_links_every_resource_to_its_console_page(provisioned: None) -> None:
    markdown = read_outputs_artifact()
    head, _, rest = markdown.partition("## Resources")
    assert "| vpc_id |" in head and "| db_endpoint |" in head, "the outputs table stays first"
    assert "## Estimated monthly cost" in rest, "the cost section stays"
    table = [line for line in rest.splitlines() if line.startswith("| ") and not line.startswith("| kind |")]
    table = table[:next((i for i, line in enumerate(table) if not RESOURCE_ROW.match(line)), len(table))]
    rows = [RESOURCE_ROW.match(line).groupdict() for line in table]  # type: ignore[union-attr]
    assert rows, markdown

    # The VPC row: the VPC AWS holds, linked to its page in the stack's region.
    vpc_id = aws_client("ec2").describe_vpcs(Filters=OURS)["Vpcs"][0]["VpcId"]
    vpc_rows = [r for r in rows if r["kind"] == "vpc"]
    assert [(r["id"], r["link"]) for r in vpc_rows] == [
        (vpc_id, f"{CONSOLE}/vpcconsole/home?region={REGION}#VpcDetails:VpcId={vpc_id}")]

    log_group_pages = f"{CONSOLE}/cloudwatch/home?region={REGION}#logsV2:log-groups/log-group/"
    wrong = [row for row in rows
             # a flow log has no page of its own: it links to the log group its records go to
             if not (row["link"].startswith(log_group_pages) if row["kind"] == "flow log"
                     else row["link"] == expected_console_link(row["kind"], row["name"], row["id"]))]
    assert not wrong, wrong

    kinds = Counter(r["kind"] for r in rows)
    assert kinds["subnet"] == 4 and kinds["nat gateway"] == 2 and kinds["route table"] == 3
    assert kinds["security group"] == 3 and kinds["db instance"] == 1 and kinds["ecr repository"] == 2
    assert kinds["ecs service"] == 2 and kinds["task definition"] == 2 and kinds["target group"] == 2
    assert kinds["kms key"] == 4 and kinds["load balancer"] == 1 and kinds["alarm"] >= 20
    assert kinds["secret"] == 1, "the database's managed master secret, by its ARN"
    assert len({r["id"] for r in rows}) == len(rows), "one row per resource"

    # ARNs of secrets only, never a value.
    db = aws_client("rds").describe_db_instances(DBInstanceIdentifier="library-prod-db")["DBInstances"][0]
    password = aws_client("secretsmanager").get_secret_value(
        SecretId=db["MasterUserSecret"]["SecretArn"])["SecretString"]
    assert json.loads(password)["password"] not in markdown


def test_a_changed_setting_is_planned_and_applied_alone(
    provisioned: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    def edit(data: dict[str, Any]) -> None:
        data["database"]["backup_retention_days"] = 14
        data["registry"]["keep_releases"] = 30
        data["services"]["backend"]["port"] = 8081

    changed = edited_stack(tmp_path, edit)
    capsys.readouterr()
    assert main(["plan", "--stack", str(changed), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    pending = {(r["resource"], r["name"]): r for r in rows if r["action"] != "no-op"}
    assert set(pending) == {
        ("db instance", "library-prod-db"),
        ("ecr-repository", "library-prod-backend"), ("ecr-repository", "library-prod-frontend"),
        ("security group rules", "library-prod-sg-alb"), ("security group rules", "library-prod-sg-ecs"),
        # The container port lives in the task definition and in the service's load balancer mapping.
        ("task definition", "library-prod-backend"), ("ecs service", "library-prod-backend"),
    }, pending
    db_change = pending[("db instance", "library-prod-db")]
    assert db_change["action"] == "update" and len(db_change["changes"]) == 1
    assert "BackupRetentionPeriod" in db_change["changes"][0] and "14" in db_change["changes"][0]
    ecs_rules = " ".join(pending[("security group rules", "library-prod-sg-ecs")]["changes"])
    assert "8081" in ecs_rules and "8080" in ecs_rules

    CALLS.reset()
    up(changed)
    mutating = {call.split(":")[1] for call in CALLS.mutating()}
    assert mutating == {"ModifyDBInstance", "PutLifecyclePolicy", "AuthorizeSecurityGroupIngress",
                        "RevokeSecurityGroupIngress", "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupEgress",
                        "RegisterTaskDefinition", "UpdateService"}
    assert CALLS.mutating()["rds:ModifyDBInstance"] == 1
    assert CALLS.mutating()["ecs:RegisterTaskDefinition"] == 1 and CALLS.mutating()["ecs:UpdateService"] == 1
    db = aws_client("rds").describe_db_instances(DBInstanceIdentifier="library-prod-db")["DBInstances"][0]
    assert db["BackupRetentionPeriod"] == 14

    CALLS.reset()
    up(changed)
    assert CALLS.mutating() == Counter()


def test_down_removes_everything_tagged_and_nothing_else(provisioned: None) -> None:
    # Last of the tests on the module's stack. Resources made by hand, untagged, stay.
    ec2, ecr = aws_client("ec2"), aws_client("ecr")
    foreign_vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ecr.create_repository(repositoryName="library-prod-legacy")
    assert main(["down", "--stack", str(LIBRARY_STACK), "--yes"]) == 0

    kms = aws_client("kms")
    tagged = aws_client("resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": "ecsflow:stack", "Values": ["library"]}])["ResourceTagMappingList"]

    ecs = aws_client("ecs")

    def gone(arn: str) -> bool:
        # KMS cannot delete a key at once (7 days at least); AWS shows deleted NAT gateways for an hour;
        # moto's tagging API keeps listing deleted ECS clusters and services, which describe shows INACTIVE.
        if ":kms:" in arn:
            return bool(kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "PendingDeletion")
        if ":natgateway/" in arn:
            nat = ec2.describe_nat_gateways(NatGatewayIds=[arn.rsplit("/", 1)[1]])["NatGateways"][0]
            return bool(nat["State"] == "deleted")
        if ":cluster/" in arn:
            return all(c["status"] == "INACTIVE" for c in ecs.describe_clusters(clusters=[arn])["clusters"])
        if ":service/" in arn:
            cluster = arn.split(":service/")[1].split("/")[0]
            return all(s["status"] == "INACTIVE" for s in ecs.describe_services(cluster=cluster,
                                                                                services=[arn])["services"])
        return False

    leftovers = [r["ResourceARN"] for r in tagged if not gone(r["ResourceARN"])]
    assert leftovers == []
    still = census()
    assert still == Counter({"repository": 1}), still  # the foreign library-prod-legacy repository
    assert ec2.describe_vpcs(VpcIds=[foreign_vpc])["Vpcs"][0]["State"] == "available"
    assert ecr.describe_repositories(repositoryNames=["library-prod-legacy"])["repositories"]

    # Prod: the final snapshot stays, handed over (no stack tags), with the key that encrypts it.
    snapshots = aws_client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"].startswith("library-prod-db-final-") for s in snapshots] == [True]
    assert "ecsflow:stack" not in tags(aws_client("rds").list_tags_for_resource(
        ResourceName=snapshots[0]["DBSnapshotArn"])["TagList"])

    # And `status` agrees.
    assert main(["status", "--stack", str(LIBRARY_STACK), "--json"]) == 0




# ---------------------------------------------------------------- crash and resume


def test_a_run_killed_midway_resumes_with_exactly_one_of_each(
    aws: Any, prefect_server: Any, fault_proxy: Any, tmp_path: Path
) -> None:
    # NAT gateways and the database answer slowly, so the kill lands after the VPC and subnets exist.
    fault_proxy.delay("CreateNatGateway", 30)
    fault_proxy.delay("CreateDBInstance", 30)
    env = dict(os.environ, AWS_ENDPOINT_URL=fault_proxy.url, PYTHONUNBUFFERED="1")
    log = (tmp_path / "killed-run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ecsflow.cli", "up", "--stack", str(LIBRARY_STACK)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while fault_proxy.calls.get("CreateNatGateway", 0) == 0 or fault_proxy.calls.get("CreateDBInstance", 0) == 0:
            assert proc.poll() is None, (tmp_path / "killed-run.log").read_text()
            assert time.monotonic() < deadline, "the run never reached the NAT gateways and the database"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    before = census()
    assert before["vpc"] == 1 and before["subnet"] == 4 and before["db instance"] == 0

    fault_proxy.reset_rules()
    up()
    assert census() == EXPECTED


# ---------------------------------------------------------------- faults


def test_transient_faults_are_retried(aws: Any, prefect_server: Any, fault_proxy: Any) -> None:
    fault_proxy.fail("CreateVpc", times=2, kind="throttle")
    fault_proxy.fail("CreateSubnet", times=2, kind="server_error")
    fault_proxy.fail("CreateRepository", times=1, kind="throttle")
    fault_proxy.fail("CreateDBInstance", times=1, kind="server_error")
    up()
    assert fault_proxy.pending_faults() == 0
    assert census() == EXPECTED


def test_a_permission_error_fails_at_once_with_a_clear_message(
    aws: Any, prefect_server: Any, fault_proxy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fault_proxy.fail("CreateDBSubnetGroup", times=None, kind="access_denied")
    assert main(["up", "--stack", str(LIBRARY_STACK)]) == 1
    err = capsys.readouterr().err
    assert "CreateDBSubnetGroup" in err and "Grant" in err
    assert fault_proxy.calls["CreateDBSubnetGroup"] == 1, "a permission error must not be retried"
