"""The monitoring phase against a moto server: the topic, alarms, metric filters, dashboard and
budget it makes are read back with a separate boto3 client (metrics, namespaces, dimensions,
thresholds); a second run makes no mutating call; a changed threshold is one PutMetricAlarm;
teardown removes them all and leaves a foreign alarm alone.

What the alarms watch (ECS services, ALB and target groups, the DB instance, the services' log
groups) is made once for the module, directly with boto3 under the names and tags the other
families give them: their own tests cover how they are made, and the monitoring phase finds them
by those names and tags only. The tests share that account and run in file order.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from flows.common import StackRun
from flows.phase_monitoring import monitoring_flow, submit_monitoring_teardown
from spec import Stack, load_stack
from tasks import cluster, database, load_balancer, monitoring, services
from tasks.aws import CALLS, AwsContext, NotOurs
from tasks.contract import Observed
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"
PREFIX = "library-prod"
EMAIL = "oncall@example.com"
HOOK = "https://hooks.example.com/services/T000/B000/secret-token"


def client(service: str, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def write_stack(path: Path, **alarm_overrides: dict[str, Any]) -> Path:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["monitoring"] = {"alarm_emails": [EMAIL], "https_endpoints": [HOOK], "monthly_budget_usd": 500,
                          "alarms": alarm_overrides, "app_error_pattern": data["monitoring"]["app_error_pattern"]}
    path.write_text(yaml.safe_dump(data))
    return path


def make_watched(spec: Stack, ctx: AwsContext) -> dict[str, str]:
    """The services, load balancer, target groups, DB instance and log groups, as the families name and tag them."""
    def tags(component: str) -> list[dict[str, str]]:
        return ctx.tags(component)

    ec2, elbv2, ecs, rds, logs = (client(s) for s in ("ec2", "elbv2", "ecs", "rds", "logs"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]
               ["SubnetId"] for i, az in enumerate("ac")]
    group = ec2.create_security_group(GroupName="sg-alb", Description="alb", VpcId=vpc)["GroupId"]
    alb = elbv2.create_load_balancer(Name=load_balancer.alb_name(ctx), Subnets=subnets, SecurityGroups=[group],
                                     Scheme="internet-facing", Type="application",
                                     Tags=tags("alb"))["LoadBalancers"][0]["LoadBalancerArn"]
    arns = {"alb": alb, "subnets": ",".join(subnets), "group": group}
    ecs.create_cluster(clusterName=cluster.cluster_name(ctx), tags=cluster.ecs_tags(ctx, "cluster"))
    family = ecs.register_task_definition(
        family=f"{PREFIX}-app", containerDefinitions=[{"name": "app", "image": "x:1", "memory": 512}],
        tags=cluster.ecs_tags(ctx, "taskdef"))["taskDefinition"]["taskDefinitionArn"]
    for service, svc in spec.services.items():
        arns[service] = elbv2.create_target_group(
            Name=load_balancer.target_group_name(ctx, service), Protocol="HTTP", Port=svc.port or 80, VpcId=vpc,
            TargetType="ip", Tags=tags(load_balancer.tg_component(service)))["TargetGroups"][0]["TargetGroupArn"]
        ecs.create_service(cluster=cluster.cluster_name(ctx), serviceName=services.service_name(ctx, service),
                           taskDefinition=family, desiredCount=0,
                           tags=cluster.ecs_tags(ctx, services.svc_component(service)))
        logs.create_log_group(logGroupName=services.log_group(spec, service).name(ctx),
                              tags=ctx.tag_dict(f"ecs-{service}"))
    rds.create_db_instance(DBInstanceIdentifier=database.instance_identifier(ctx), Engine="postgres",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="admin_user",
                           MasterUserPassword="not-a-real-secret-1", Tags=tags("db"))
    return arns


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    moto_server.reset()
    path = write_stack(tmp_path_factory.mktemp("monitoring") / "library.yaml")
    spec = load_stack(path)
    arns = make_watched(spec, AwsContext.for_stack(spec))
    outputs = monitoring_flow(StackRun(stack_file=str(path)))
    assert outputs["alarm_topic"] == f"arn:aws:sns:{REGION}:123456789012:{PREFIX}-alarms"
    assert outputs["monthly_budget_usd"] == 500.0 and "dashboards:name=library-prod-overview" in outputs["dashboard"]
    stack_arns.update(arns)
    yield path


stack_arns: dict[str, str] = {}


def alarms() -> dict[str, dict[str, Any]]:
    pages = client("cloudwatch").get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{PREFIX}-")
    return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}


def dims(alarm: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in alarm["Dimensions"]}


# ---------------------------------------------------------------- what the phase made


def test_a_typo_in_an_alarm_kind_names_the_field_and_the_kinds(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from ecsflow.cli import main

    path = write_stack(tmp_path / "library.yaml", db_cpus={"threshold": 70})
    assert main(["plan", "--stack", str(path)]) == 2
    err = capsys.readouterr().err
    assert "monitoring.alarms" in err and "unknown alarm kind(s) db_cpus" in err and "db_cpu" in err, err


def test_topic_is_encrypted_published_to_by_cloudwatch_and_budgets_only_and_subscribed(stack: Path) -> None:
    sns, kms = client("sns"), client("kms")
    arn = f"arn:aws:sns:{REGION}:123456789012:{PREFIX}-alarms"
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    key = kms.describe_key(KeyId=f"alias/{PREFIX}-sns")["KeyMetadata"]
    assert attributes["KmsMasterKeyId"] == key["Arn"]
    key_policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    [service_use] = [s for s in key_policy["Statement"] if s["Sid"] == "ServiceUse"]
    assert sorted(service_use["Principal"]["Service"]) == ["budgets.amazonaws.com", "cloudwatch.amazonaws.com"]
    policy = {s["Sid"]: s for s in json.loads(attributes["Policy"])["Statement"]}
    for sid, principal in (("CloudWatchAlarmsPublish", "cloudwatch.amazonaws.com"),
                           ("BudgetsPublish", "budgets.amazonaws.com")):
        assert policy[sid]["Principal"] == {"Service": principal} and policy[sid]["Action"] == "SNS:Publish"
        assert policy[sid]["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert policy["DenyInsecureTransport"]["Effect"] == "Deny"
    tags = {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn)["Tags"]}
    assert tags["ecsflow:component"] == "alarm-topic" and tags["project"] == "library-management"
    subs = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert sorted((s["Protocol"], s["Endpoint"]) for s in subs) == [("email", EMAIL), ("https", HOOK)]
    # The webhook's token never reaches a result or a plan: only its host and a hash.
    spec = load_stack(stack)
    ctx = AwsContext.for_stack(spec)
    shown = repr(monitoring.find_topic(ctx)) + repr(monitoring.plan_monitoring(spec, ctx))
    assert "secret-token" not in shown and "https:hooks.example.com#" in shown


def test_every_alarm_watches_the_right_metric_of_the_live_resources(stack: Path) -> None:
    found = alarms()
    alb = stack_arns["alb"].split(":loadbalancer/")[1]
    tg = {s: stack_arns[s].split(":", 5)[5] for s in ("backend", "frontend")}
    service = {"ClusterName": f"{PREFIX}-cluster", "ServiceName": f"{PREFIX}-backend"}
    expected = {  # name: (namespace, metric, statistic, dimensions, threshold, comparison, missing data)
        "backend-cpu": ("AWS/ECS", "CPUUtilization", "Average", service, 85, "GreaterThanThreshold", "missing"),
        "backend-memory": ("AWS/ECS", "MemoryUtilization", "Average", service, 85, "GreaterThanThreshold",
                           "missing"),
        "backend-target-5xx": ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum",
                               {"TargetGroup": tg["backend"], "LoadBalancer": alb}, 5, "GreaterThanThreshold",
                               "notBreaching"),
        "frontend-unhealthy-hosts": ("AWS/ApplicationELB", "UnHealthyHostCount", "Maximum",
                                     {"TargetGroup": tg["frontend"], "LoadBalancer": alb}, 0, "GreaterThanThreshold",
                                     "notBreaching"),
        "alb-elb-5xx": ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "Sum", {"LoadBalancer": alb}, 10,
                        "GreaterThanThreshold", "notBreaching"),
        "alb-target-5xx": ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum", {"LoadBalancer": alb}, 10,
                           "GreaterThanThreshold", "notBreaching"),
        "alb-latency-p95": ("AWS/ApplicationELB", "TargetResponseTime", "p95", {"LoadBalancer": alb}, 1.0,
                            "GreaterThanThreshold", "notBreaching"),
        "alb-latency-p99": ("AWS/ApplicationELB", "TargetResponseTime", "p99", {"LoadBalancer": alb}, 2.5,
                            "GreaterThanThreshold", "notBreaching"),
        "db-cpu": ("AWS/RDS", "CPUUtilization", "Average", {"DBInstanceIdentifier": f"{PREFIX}-db"}, 80,
                   "GreaterThanThreshold", "missing"),
        "db-free-storage": ("AWS/RDS", "FreeStorageSpace", "Minimum", {"DBInstanceIdentifier": f"{PREFIX}-db"},
                            2 * 1024 ** 3, "LessThanThreshold", "missing"),
        "db-freeable-memory": ("AWS/RDS", "FreeableMemory", "Average", {"DBInstanceIdentifier": f"{PREFIX}-db"},
                               256 * 1024 ** 2, "LessThanThreshold", "missing"),
        "db-connections": ("AWS/RDS", "DatabaseConnections", "Maximum", {"DBInstanceIdentifier": f"{PREFIX}-db"},
                           200, "GreaterThanThreshold", "missing"),
        "backend-app-errors": (f"ecsflow/{PREFIX}", "backend-app-errors", "Sum", {}, 5, "GreaterThanThreshold",
                               "notBreaching"),
        "frontend-http-5xx": (f"ecsflow/{PREFIX}", "frontend-http-5xx", "Sum", {}, 10, "GreaterThanThreshold",
                              "notBreaching"),
    }
    for key, (namespace, metric, stat, dimensions, threshold, comparison, missing) in expected.items():
        alarm = found[f"{PREFIX}-{key}"]
        assert (alarm["Namespace"], alarm["MetricName"], dims(alarm)) == (namespace, metric, dimensions), key
        assert alarm.get("ExtendedStatistic" if stat.startswith("p") else "Statistic") == stat, key
        assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
            threshold, comparison, missing), key
        assert alarm["AlarmActions"] == alarm["OKActions"] == [f"arn:aws:sns:{REGION}:123456789012:{PREFIX}-alarms"]
        assert f"docs/monitoring.md#{alarm['AlarmDescription'].rsplit('#', 1)[1]}" in alarm["AlarmDescription"]
    # Per service: cpu, memory, running tasks, target 5xx, unhealthy hosts, app errors, http 5xx; ALB 4; DB 4.
    assert len(found) == 2 * 7 + 4 + 4, sorted(found)
    tags = client("cloudwatch").list_tags_for_resource(ResourceARN=found[f"{PREFIX}-db-cpu"]["AlarmArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags}["ecsflow:component"] == "alarm-db-cpu"


def test_running_tasks_below_desired_is_metric_math_on_container_insights(stack: Path) -> None:
    alarm = alarms()[f"{PREFIX}-backend-running-tasks"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    assert metrics["missing"]["Expression"] == "desired - running" and metrics["missing"]["ReturnData"] is True
    for metric_id, name in (("running", "RunningTaskCount"), ("desired", "DesiredTaskCount")):
        metric = metrics[metric_id]["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("ECS/ContainerInsights", name)
        assert {d["Name"]: d["Value"] for d in metric["Dimensions"]} == {
            "ClusterName": f"{PREFIX}-cluster", "ServiceName": f"{PREFIX}-backend"}
    assert (alarm["Threshold"], alarm["TreatMissingData"]) == (0, "breaching")


def test_metric_filters_count_laravel_errors_and_nginx_5xx(stack: Path) -> None:
    logs = client("logs")
    for service in ("backend", "frontend"):
        found = {f["filterName"]: f for f in logs.describe_metric_filters(
            logGroupName=f"/ecsflow/{PREFIX}/ecs-{service}")["metricFilters"]}
        errors, http = found[f"{PREFIX}-{service}-app-errors"], found[f"{PREFIX}-{service}-http-5xx"]
        assert errors["filterPattern"] == '?".ERROR:" ?".CRITICAL:" ?".ALERT:" ?".EMERGENCY:"'
        assert http["filterPattern"] == "{ $.status >= 500 }"
        assert errors["metricTransformations"] == [{"metricName": f"{service}-app-errors", "metricValue": "1",
                                                    "metricNamespace": f"ecsflow/{PREFIX}", "unit": "Count"}]


def test_dashboard_shows_services_load_balancer_and_database(stack: Path) -> None:
    body = json.loads(client("cloudwatch").get_dashboard(DashboardName=f"{PREFIX}-overview")["DashboardBody"])
    titles = [w["properties"].get("title") for w in body["widgets"]]
    for title in ("Alarms", "backend: CPU and memory %", "frontend: tasks", "load balancer: response time (s)",
                  "database: free storage and memory (bytes)"):
        assert title in titles
    assert "ecsflow:stack=library ecsflow:env=prod" in body["widgets"][0]["properties"]["markdown"]
    [latency] = [w for w in body["widgets"] if w["properties"].get("title") == "load balancer: response time (s)"]
    assert [m[-1]["stat"] for m in latency["properties"]["metrics"]] == ["p50", "p95", "p99"]


def test_budget_alerts_the_topic_on_forecast_and_actual_cost(stack: Path) -> None:
    budgets = client("budgets", "us-east-1")
    budget = budgets.describe_budget(AccountId="123456789012", BudgetName=f"{PREFIX}-monthly-cost")["Budget"]
    assert (float(budget["BudgetLimit"]["Amount"]), budget["TimeUnit"], budget["BudgetType"]) == (500, "MONTHLY",
                                                                                                   "COST")
    notes = budgets.describe_notifications_for_budget(AccountId="123456789012",
                                                      BudgetName=f"{PREFIX}-monthly-cost")["Notifications"]
    assert sorted((n["NotificationType"], n["Threshold"]) for n in notes) == [
        ("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 100)]


def test_services_roll_back_on_their_deployment_alarms(stack: Path) -> None:
    spec = load_stack(stack)
    ctx = AwsContext.for_stack(spec)
    names = monitoring.deployment_alarm_names(spec, ctx, "backend")
    assert names == [f"{PREFIX}-backend-app-errors", f"{PREFIX}-backend-target-5xx",
                     f"{PREFIX}-backend-unhealthy-hosts"]
    assert set(names) <= set(alarms()), "the names the services use are the alarms the phase made"
    wanted = services._service_wanted(spec, ctx, "backend", task_definition_arn="td", target_group_arn="tg",
                                      subnet_ids=["s"], security_group_id="sg", image_known=True, observed=None)
    assert wanted["deployment"]["alarms"] == {"alarmNames": names, "enable": True, "rollback": True}
    assert wanted["deployment"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_ensure_service_gives_the_service_its_deployment_alarms(stack: Path) -> None:
    spec = load_stack(stack)
    ctx = AwsContext.for_stack(spec)
    ecs = client("ecs")
    name, cluster_name = services.service_name(ctx, "backend"), cluster.cluster_name(ctx)
    # moto drops deploymentConfiguration on CreateService; after an update it echoes what the service has.
    ecs.update_service(cluster=cluster_name, service=name, deploymentConfiguration=services.DEPLOYMENT)
    [before] = ecs.describe_services(cluster=cluster_name, services=[name])["services"]
    assert "alarms" not in before["deploymentConfiguration"]
    services.ensure_service.fn(
        spec, ctx, "backend", cluster=Observed(id=cluster_name, name=cluster_name),
        task_definition=Observed(id=before["taskDefinition"], name="backend", attrs={"image_known": False}),
        target_group=Observed(id=stack_arns["backend"], name="backend"),
        private_subnets=[Observed(id=s, name=s) for s in stack_arns["subnets"].split(",")],
        security_group=Observed(id=stack_arns["group"], name="sg"))
    [after] = ecs.describe_services(cluster=cluster_name, services=[name])["services"]
    assert after["deploymentConfiguration"]["alarms"] == {
        "alarmNames": monitoring.deployment_alarm_names(spec, ctx, "backend"), "enable": True, "rollback": True}


# ---------------------------------------------------------------- changes (these run last, in order)


def test_second_run_makes_no_mutating_call_and_plan_sees_no_change(stack: Path) -> None:
    CALLS.reset()
    monitoring_flow(StackRun(stack_file=str(stack)))
    # It still looks, in few reads: one DescribeAlarms per subject (services, alb, db) plus the inventory.
    subjects = len(monitoring.alarm_subjects(load_stack(stack)))
    assert subjects + 1 >= CALLS.calls["cloudwatch:DescribeAlarms"] >= subjects, "the second run must still look"
    assert CALLS.calls["cloudwatch:ListTagsForResource"] == 0  # the alarms' tags: the run's tag index
    assert CALLS.mutating() == Counter()
    spec = load_stack(stack)
    pending = [c for c in monitoring.plan_monitoring(spec, AwsContext.for_stack(spec)) if c.action != "no-op"]
    assert pending == []


def test_a_changed_threshold_is_one_update(stack: Path, tmp_path: Path) -> None:
    changed = write_stack(tmp_path / "library.yaml", db_cpu={"threshold": 70})
    spec = load_stack(changed)
    pending = [c for c in monitoring.plan_monitoring(spec, AwsContext.for_stack(spec)) if c.action != "no-op"]
    assert [(c.name, c.action) for c in pending] == [(f"{PREFIX}-db-cpu", "update")]
    assert "Threshold: 80.0 -> 70.0" in [str(d) for d in pending[0].diffs]
    CALLS.reset()
    monitoring_flow(StackRun(stack_file=str(changed)))
    assert CALLS.mutating() == Counter({"cloudwatch:PutMetricAlarm": 1})
    assert alarms()[f"{PREFIX}-db-cpu"]["Threshold"] == 70


def test_a_kind_switched_off_loses_its_alarms_and_the_services_their_names(stack: Path, tmp_path: Path) -> None:
    changed = write_stack(tmp_path / "library.yaml", db_cpu={"threshold": 70}, app_errors={"enabled": False})
    spec = load_stack(changed)
    ctx = AwsContext.for_stack(spec)
    pending = [c for c in monitoring.plan_monitoring(spec, ctx) if c.action != "no-op"]
    assert sorted((c.name, c.action) for c in pending) == [
        (f"{PREFIX}-backend-app-errors", "delete"), (f"{PREFIX}-frontend-app-errors", "delete"),
        (f"{PREFIX}-overview", "update")]  # the dashboard's alarm widget lists them
    assert monitoring.deployment_alarm_names(spec, ctx, "backend") == [
        f"{PREFIX}-backend-target-5xx", f"{PREFIX}-backend-unhealthy-hosts"]
    CALLS.reset()
    monitoring_flow(StackRun(stack_file=str(changed)))
    assert CALLS.mutating() == Counter({"cloudwatch:DeleteAlarms": 2, "cloudwatch:PutDashboard": 1})
    assert f"{PREFIX}-backend-app-errors" not in alarms() and len(alarms()) == 20


def test_teardown_removes_what_the_phase_made_and_leaves_a_foreign_alarm(stack: Path) -> None:
    cloudwatch = client("cloudwatch")
    cloudwatch.put_metric_alarm(AlarmName=f"{PREFIX}-someone-elses", Namespace="AWS/EC2", MetricName="CPUUtilization",
                                Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=1,
                                ComparisonOperator="GreaterThanThreshold")
    spec = load_stack(stack)
    ctx = AwsContext.for_stack(spec)
    foreign = monitoring._alarm_observed(ctx, alarms()[f"{PREFIX}-someone-elses"])
    with pytest.raises(NotOurs):
        monitoring.delete_alarm.fn(foreign, ctx)
    with pytest.raises(NotOurs):
        monitoring.delete_alarms.fn([*monitoring.inventory_alarms(ctx), foreign], ctx)
    assert len(alarms()) == 21, "a batch with a foreign alarm deletes nothing"
    found = monitoring.inventory_monitoring(ctx)  # what `down` takes (tasks/inventory.py), and status lists
    assert len(found[("monitoring", "alarm")]) == 20 and len(found[("monitoring", "metric filter")]) == 4
    assert [len(found[("monitoring", k)]) for k in ("dashboard", "budget", "sns topic")] == [1, 1, 1]
    run_teardown(found, ctx)
    assert list(alarms()) == [f"{PREFIX}-someone-elses"]
    assert client("logs").describe_metric_filters(filterNamePrefix=f"{PREFIX}-")["metricFilters"] == []
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []
    assert client("budgets", "us-east-1").describe_budgets(AccountId="123456789012").get("Budgets", []) == []
    assert client("sns").list_topics()["Topics"] == []


def run_teardown(found: dict[tuple[str, str], list[Any]], ctx: AwsContext) -> None:
    from prefect import flow

    from flows.common import settle

    @flow(name="monitoring-teardown-test")
    def teardown() -> None:
        settle(submit_monitoring_teardown(found, ctx))

    teardown()
