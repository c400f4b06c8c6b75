"""Template reuse: a second app (stacks/shop.yaml: two HTTP services on their own paths, a queue
worker with no load balancer target, staging, one NAT gateway) runs through the same CLI verbs
with no code of its own: up, plan, status, a second up that changes nothing, down.

Read back with a separate boto3 client, never from ecsflow's return values.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from ecsflow.cli import main
from spec import load_stack
from tasks.aws import AwsContext, CallLog
from tasks.services import _scaling_wanted
from tests.conftest import ROOT

SHOP = ROOT / "stacks" / "shop.yaml"
REGION = "ap-northeast-1"
OURS = [{"Name": "tag:ecsflow:stack", "Values": ["shop"]}, {"Name": "tag:ecsflow:env", "Values": ["staging"]}]


def aws_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def tags(items: list[dict[str, str]] | None, key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t[value] for t in items or []}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main([*argv, "--stack", str(SHOP)]) == 0
    return capsys.readouterr().out


def still_there(arn: str) -> bool:
    """Whether a tagged resource the tagging API lists is still alive (KMS keys wait 7 days to go;
    deleted NAT gateways and INACTIVE ECS clusters/services linger in listings)."""
    if ":kms:" in arn:
        return aws_client("kms").describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] != "PendingDeletion"
    if ":natgateway/" in arn:
        nat = aws_client("ec2").describe_nat_gateways(NatGatewayIds=[arn.rsplit("/", 1)[1]])["NatGateways"]
        return any(n["State"] != "deleted" for n in nat)
    ecs = aws_client("ecs")
    if ":cluster/" in arn:
        return any(c["status"] != "INACTIVE" for c in ecs.describe_clusters(clusters=[arn])["clusters"])
    if ":service/" in arn:
        cluster = arn.split(":service/")[1].split("/")[0]
        found = ecs.describe_services(cluster=cluster, services=[arn])["services"]
        return any(s["status"] != "INACTIVE" for s in found)
    return True


@pytest.mark.prefect
def test_shop_stack_up_plan_status_rerun_down(
    aws: Any, prefect_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli(capsys, "up", "--skip-images")
    ec2, elb, ecs = aws_client("ec2"), aws_client("elbv2"), aws_client("ecs")

    # Staging with nat_gateways: single -> one NAT gateway, both private subnets route through it.
    nats = [n for n in ec2.describe_nat_gateways(Filter=OURS)["NatGateways"] if n["State"] != "deleted"]
    assert len(nats) == 1

    # Target groups and rules for the two HTTP services only; no `/*` service, so the listener answers 404.
    groups = {g["TargetGroupName"]: g for g in elb.describe_target_groups()["TargetGroups"]}
    assert set(groups) == {"shop-staging-api", "shop-staging-admin"}
    alb = elb.describe_load_balancers(Names=["shop-staging-alb"])["LoadBalancers"][0]
    listeners = {li["Port"]: li for li in elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]}
    assert listeners[443]["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    rules = [r for r in elb.describe_rules(ListenerArn=listeners[443]["ListenerArn"])["Rules"] if not r["IsDefault"]]
    routes = {tuple(r["Conditions"][0]["PathPatternConfig"]["Values"]): r["Actions"][0]["TargetGroupArn"]
              for r in rules}
    assert routes == {("/api/*",): groups["shop-staging-api"]["TargetGroupArn"],
                      ("/admin", "/admin/*"): groups["shop-staging-admin"]["TargetGroupArn"]}

    # Three ECS services; the worker is attached to no load balancer.
    arns = ecs.list_services(cluster="shop-staging-cluster")["serviceArns"]
    described = ecs.describe_services(cluster="shop-staging-cluster", services=arns)["services"]
    services = {s["serviceName"]: s for s in described}
    assert set(services) == {"shop-staging-api", "shop-staging-admin", "shop-staging-worker"}
    assert services["shop-staging-worker"]["loadBalancers"] == []
    assert [lb["containerPort"] for lb in services["shop-staging-api"]["loadBalancers"]] == [8080]
    assert all(s["desiredCount"] == 0 for s in services.values())  # --skip-images: no image yet

    # The worker's task definition: its own command and health check, no port, no PORT variable.
    worker = ecs.describe_task_definition(taskDefinition="shop-staging-worker")["taskDefinition"]
    container = worker["containerDefinitions"][0]
    assert container["command"] == ["php", "artisan", "queue:work", "--sleep=3", "--tries=3", "--max-time=3600"]
    assert container["healthCheck"]["command"] == ["CMD-SHELL", "pgrep -f queue:work > /dev/null || exit 1"]
    assert not container.get("portMappings")
    assert "PORT" not in tags(container["environment"], "name", "value")

    # The ECS security group admits the load-balanced port only.
    sg_ecs = ec2.describe_security_groups(Filters=[*OURS, {"Name": "tag:ecsflow:component",
                                                           "Values": ["sg-ecs"]}])["SecurityGroups"][0]
    assert {p["FromPort"] for p in sg_ecs["IpPermissions"]} == {8080}

    # The worker scales on CPU alone (requests per target needs a load balancer).
    spec = load_stack(SHOP)
    policies = _scaling_wanted(spec, AwsContext.for_stack(spec), "worker", None)["policies"]
    assert list(policies) == ["shop-staging-worker-cpu"]

    # Plan after up: nothing to change.
    rows = json.loads(cli(capsys, "plan", "--json"))
    assert [r for r in rows if r["action"] != "no-op"] == []

    status = json.loads(cli(capsys, "status", "--json"))
    kinds = Counter(r["kind"] for r in status["resources"])
    assert status["stack"] == "shop" and status["env"] == "staging"
    assert kinds["ecs service"] == 3 and kinds["target group"] == 2 and kinds["nat gateway"] == 1

    # A second up, logged to ECSFLOW_CALL_LOG: it reads, and changes nothing.
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ECSFLOW_CALL_LOG", str(log))
    cli(capsys, "up", "--skip-images")
    calls = [line.replace(" ", ":", 1) for line in log.read_text().splitlines()]
    assert calls, "the second run must still look"
    assert [c for c in calls if CallLog.is_mutating(c)] == []
    monkeypatch.delenv("ECSFLOW_CALL_LOG")

    cli(capsys, "down", "--yes")
    tagged = aws_client("resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": "ecsflow:stack", "Values": ["shop"]}])["ResourceTagMappingList"]
    assert [r["ResourceARN"] for r in tagged if still_there(r["ResourceARN"])] == []
    assert ec2.describe_vpcs(Filters=OURS)["Vpcs"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []


@pytest.mark.parametrize(("edit", "field", "message"), [
    (lambda w: w.pop("container_health_check"), "services.worker", "container_health_check: a worker without port"),
    (lambda w: w.update(path_patterns=["/jobs/*"]), "services.worker", "path_patterns: a service with "
     "load_balanced: false has no listener rule"),
    (lambda w: w.update(load_balanced=True), "services", "services.worker.port: required field is missing"),
    (lambda w: w["autoscaling"].update(cpu_target_percent=None), "services.worker",
     "autoscaling.cpu_target_percent: a worker scales on CPU only"),
], ids=["no health check", "path patterns", "load balanced without port", "requests-only scaling"])
def test_worker_mistakes_exit_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, field: str, message: str
) -> None:
    data = yaml.safe_load(SHOP.read_text())
    edit(data["services"]["worker"])
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", "--stack", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{field}: " in err and message in err, err
