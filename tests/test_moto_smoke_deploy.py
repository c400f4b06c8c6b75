"""Smoke tests of the ECS and ELBv2 calls the deploy flow relies on, against moto 5.2.5 in server
mode. Each gap is pinned with what ecsflow does about it; a test fails when moto catches up."""

from __future__ import annotations

from typing import Any

from tests.support.servers import MotoServer
from tests.test_moto_smoke_ecs_alb import client, network, task_definition

__all__ = ["network"]  # the fixture, used by name


def _service(ecs: Any, elb: Any, net: dict[str, Any]) -> tuple[str, str]:
    ecs.create_cluster(clusterName="smoke", capacityProviders=["FARGATE"])
    group = elb.create_target_group(Name="smoke", Protocol="HTTP", Port=80, VpcId=net["vpc"],
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    first = task_definition(ecs)
    ecs.create_service(cluster="smoke", serviceName="web", taskDefinition=first, desiredCount=2,
                       launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": net["subnets"],
                                                                     "securityGroups": [net["group"]]}},
                       loadBalancers=[{"targetGroupArn": group, "containerName": "app", "containerPort": 80}])
    return first, group


def test_ecs_rollouts_never_complete_and_no_task_runs(aws: MotoServer, network: dict[str, Any]) -> None:
    """Gap: a service's tasks never run and its rollout stays IN_PROGRESS, an update starts no new
    deployment, and no target is registered. So the deploy's wait and health checks cannot pass on
    moto alone: tests/support/ecs_standin.py stands in for ECS (docs/deploy.md)."""
    ecs, elb = client("ecs"), client("elbv2")
    first, group = _service(ecs, elb, network)
    second = task_definition(ecs)
    ecs.update_service(cluster="smoke", service="web", taskDefinition=second,
                       deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100,
                                                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                                "strategy": "ROLLING"})
    [svc] = ecs.describe_services(cluster="smoke", services=["web"])["services"]
    assert svc["taskDefinition"] == second and svc["runningCount"] == 0
    [deployment] = svc["deployments"]
    assert deployment["rolloutState"] == "IN_PROGRESS" and deployment["taskDefinition"] == first
    assert elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"] == []
    # What the stand-in does instead of ECS: registered targets are healthy at once.
    elb.register_targets(TargetGroupArn=group, Targets=[{"Id": "10.9.0.10", "Port": 80}])
    [target] = elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert target["TargetHealth"]["State"] == "healthy"


def test_ecs_blue_green_is_accepted_but_not_performed(aws: MotoServer, network: dict[str, Any]) -> None:
    """Gap: UpdateService takes the BLUE_GREEN configuration and keeps the load balancer block as
    sent, but validates nothing (the rules, role and alternate group named need not exist) and
    starts no deployment: no green tasks, test traffic, traffic shift or
    bake time. The deploy tests check what ecsflow sends and makes; the rest is in docs/deploy.md."""
    ecs, elb = client("ecs"), client("elbv2")
    _, group = _service(ecs, elb, network)
    second = task_definition(ecs)
    advanced = {"alternateTargetGroupArn": group.replace("smoke", "nothing-here"),
                "productionListenerRule": "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:listener-rule/x",
                "testListenerRule": "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:listener-rule/y",
                "roleArn": "arn:aws:iam::123456789012:role/nobody"}
    ecs.update_service(cluster="smoke", service="web", taskDefinition=second,
                       deploymentConfiguration={"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 5,
                                                "maximumPercent": 200, "minimumHealthyPercent": 100},
                       loadBalancers=[{"targetGroupArn": group, "containerName": "app", "containerPort": 80,
                                       "advancedConfiguration": advanced}])
    [svc] = ecs.describe_services(cluster="smoke", services=["web"])["services"]
    assert svc["loadBalancers"][0]["advancedConfiguration"] == advanced
    # Stored as sent (on create it is not echoed at all; see test_moto_smoke_ecs_alb.py).
    assert svc["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    assert len(svc["deployments"]) == 1 and svc["deployments"][0]["rolloutState"] == "IN_PROGRESS"
