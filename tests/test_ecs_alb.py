"""Phases 3 and 4 end to end: `up` builds the cluster, services, load balancer and autoscaling
of the library stack against a moto server; a second `up` changes nothing; a CPU change is one
new task-definition revision and one service update; `down` leaves nothing tagged.

One stack is provisioned for the whole module (each `up` costs seconds), the read-only checks
share it, and the tests that change it run last, in file order. Everything is read back from
AWS with a separate boto3 client.

The stack is stacks/library.yaml with `image_tag` set on the backend only: the backend runs
(desired count 2, autoscaling registered, its migration task run before each new revision),
the frontend has no image yet (desired count 0, no scalable target). The backend takes the
application database user's secret (`database_app:*`), so the DB initialisation task runs once
before its first migration; and the edge is on: Route 53 records and a health check in the
example.com zone, CloudFront with a WAF, the ALB's web ACL checking CloudFront's origin header.
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

from ecsflow.cli import main
from tasks.aws import CALLS
from tests.conftest import LIBRARY_STACK

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"
PREFIX = "library-prod"
BACKEND_TAG = "1.0.0"


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def ecs_tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["key"]: t["value"] for t in items or []}


def tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def assert_ours(found: dict[str, str], component: str) -> None:
    assert found.get("ecsflow:stack") == "library" and found.get("ecsflow:env") == "prod", found
    assert found.get("ecsflow:component") == component, found
    assert found.get("project") == "library-management", found


def write_stack(path: Path, edit: Any = None) -> Path:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    # Build contexts are relative to the stack file: keep them pointing at the repository's docker/.
    for service in data["services"].values():
        service["build"]["context"] = str((LIBRARY_STACK.parent / service["build"]["context"]).resolve())
    data["services"]["backend"]["image_tag"] = BACKEND_TAG
    data["services"]["backend"]["secrets"] = {"DB_USERNAME": "database_app:username",
                                              "DB_PASSWORD": "database_app:password"}
    data["load_balancer"].update(dns={"hosted_zone_name": "example.com"}, cdn={"enabled": True},
                                 waf={"enabled": True})
    if edit:
        edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


def up(stack: Path) -> None:
    assert main(["up", "--stack", str(stack), "--skip-images"]) == 0


@pytest.fixture(scope="module")
def stack(moto_server: Any, prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    moto_server.reset()
    client("route53").create_hosted_zone(Name="example.com", CallerReference="ecs-alb")
    path = write_stack(tmp_path_factory.mktemp("ecs-alb") / "library.yaml")
    up(path)
    yield path


# ---------------------------------------------------------------- what `up` made


def test_cluster_has_fargate_capacity_insights_and_exec_logging(stack: Path) -> None:
    ecs = client("ecs")
    [cluster] = ecs.describe_clusters(clusters=[f"{PREFIX}-cluster"],
                                      include=["CONFIGURATIONS", "SETTINGS", "TAGS"])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert sorted(cluster["capacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]
    strategy = {s["capacityProvider"]: (s.get("base", 0), s["weight"])
                for s in cluster["defaultCapacityProviderStrategy"]}
    assert strategy == {"FARGATE": (2, 3), "FARGATE_SPOT": (0, 1)}
    assert {s["name"]: s["value"] for s in cluster["settings"]}["containerInsights"] == "enabled"
    exec_config = cluster["configuration"]["executeCommandConfiguration"]
    assert exec_config["logging"] == "OVERRIDE"
    assert exec_config["logConfiguration"] == {"cloudWatchLogGroupName": f"/ecsflow/{PREFIX}/ecs-exec",
                                               "cloudWatchEncryptionEnabled": True}
    assert_ours(ecs_tags(cluster["tags"]), "cluster")
    group = client("logs").describe_log_groups(logGroupNamePrefix=f"/ecsflow/{PREFIX}/ecs-exec")["logGroups"][0]
    assert group["retentionInDays"] == 365 and group["kmsKeyId"].startswith("arn:aws:kms:")


def test_task_definitions_are_fargate_with_secrets_by_arn_and_a_read_only_root(stack: Path) -> None:
    ecs, ecr = client("ecs"), client("ecr")
    db = client("rds").describe_db_instances(DBInstanceIdentifier=f"{PREFIX}-db")["DBInstances"][0]
    secret = app_user_secret()
    got = ecs.describe_task_definition(taskDefinition=f"{PREFIX}-backend", include=["TAGS"])
    td = got["taskDefinition"]
    assert_ours(ecs_tags(got["tags"]), "taskdef-backend")
    assert td["revision"] == 1 and td["networkMode"] == "awsvpc" and td["requiresCompatibilities"] == ["FARGATE"]
    assert (td["cpu"], td["memory"]) == ("512", "1024")
    assert td["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    assert td["executionRoleArn"].endswith(f"/{PREFIX}-backend-execution")
    assert td["taskRoleArn"].endswith(f"/{PREFIX}-backend-task")
    [container] = td["containerDefinitions"]
    repo = ecr.describe_repositories(repositoryNames=[f"{PREFIX}-backend"])["repositories"][0]
    assert container["image"] == f"{repo['repositoryUri']}:{BACKEND_TAG}"
    assert container["memory"] == 1024 and container["essential"] is True
    assert container["portMappings"][0]["containerPort"] == 8080
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["PORT"] == "8080" and env["APP_ENV"] == "production"
    assert env["DB_HOST"] == db["Endpoint"]["Address"] and env["DB_PORT"] == "5432"
    assert env["DB_DATABASE"] == "library"
    assert not any("PASSWORD" in name for name in env), "secrets never go in plain environment"
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "DB_USERNAME": f"{secret}:username::", "DB_PASSWORD": f"{secret}:password::"}
    assert container["healthCheck"]["command"] == [
        "CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/api/health || exit 1"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    options = container["logConfiguration"]["options"]
    assert options["awslogs-group"] == f"/ecsflow/{PREFIX}/ecs-backend" and options["mode"] == "non-blocking"
    assert container["readonlyRootFilesystem"] is True
    assert {m["containerPath"] for m in container["mountPoints"]} == {
        "/tmp", "/var/www/html/storage", "/var/www/html/bootstrap/cache"}
    assert {v["name"] for v in td["volumes"]} == {m["sourceVolume"] for m in container["mountPoints"]}

    frontend = ecs.describe_task_definition(taskDefinition=f"{PREFIX}-frontend")["taskDefinition"]
    [front] = frontend["containerDefinitions"]
    assert front["image"].endswith(":ecsflow-no-image-yet"), "no image was ever pushed for the frontend"
    assert "secrets" not in front and (frontend["cpu"], frontend["memory"]) == ("256", "512")

    group = client("logs").describe_log_groups(logGroupNamePrefix=f"/ecsflow/{PREFIX}/ecs-backend")["logGroups"][0]
    assert group["retentionInDays"] == 365 and group["kmsKeyId"].startswith("arn:aws:kms:")


def test_execution_role_is_scoped_to_its_own_repository_logs_and_secrets(stack: Path) -> None:
    iam = client("iam")
    role = iam.get_role(RoleName=f"{PREFIX}-backend-execution")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    statement = trust["Statement"][0]
    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert "aws:SourceAccount" in statement["Condition"]["StringEquals"]
    assert iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"] == []
    doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="pull-logs-secrets")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["PullOwnImages"]["Resource"].endswith(f":repository/{PREFIX}-backend")
    assert all(r.endswith((f"/ecsflow/{PREFIX}/ecs-backend", f"/ecsflow/{PREFIX}/ecs-backend:*"))
               for r in by_sid["WriteOwnLogs"]["Resource"])
    assert by_sid["ReadOwnSecrets"]["Resource"] == [app_user_secret()]
    # The frontend takes no secrets: its role reads none.
    front = iam.get_role_policy(RoleName=f"{PREFIX}-frontend-execution", PolicyName="pull-logs-secrets")
    front_doc = front["PolicyDocument"]
    front_doc = json.loads(front_doc) if isinstance(front_doc, str) else front_doc
    assert "ReadOwnSecrets" not in {s["Sid"] for s in front_doc["Statement"]}
    # Task roles are empty: the stack grants the apps nothing.
    assert iam.list_role_policies(RoleName=f"{PREFIX}-backend-task")["PolicyNames"] == []


def test_services_run_privately_behind_their_target_groups(stack: Path) -> None:
    ecs, elb, ec2 = client("ecs"), client("elbv2"), client("ec2")
    ours = [{"Name": "tag:ecsflow:stack", "Values": ["library"]}]
    private = {s["SubnetId"] for s in ec2.describe_subnets(Filters=ours)["Subnets"]
               if tags(s["Tags"])["ecsflow:component"].startswith("subnet-private-")}
    sg_ecs = next(g["GroupId"] for g in ec2.describe_security_groups(Filters=ours)["SecurityGroups"]
                  if tags(g["Tags"])["ecsflow:component"] == "sg-ecs")
    got = ecs.describe_services(cluster=f"{PREFIX}-cluster", services=[f"{PREFIX}-backend", f"{PREFIX}-frontend"],
                                include=["TAGS"])["services"]
    services = {s["serviceName"].removeprefix(f"{PREFIX}-"): s for s in got}
    for name, port in (("backend", 8080), ("frontend", 80)):
        svc = services[name]
        assert svc["status"] == "ACTIVE"
        assert_ours(ecs_tags(svc["tags"]), f"service-{name}")
        network = svc["networkConfiguration"]["awsvpcConfiguration"]
        assert set(network["subnets"]) == private and network["securityGroups"] == [sg_ecs]
        assert network["assignPublicIp"] == "DISABLED"
        [attached] = svc["loadBalancers"]
        group = elb.describe_target_groups(TargetGroupArns=[attached["targetGroupArn"]])["TargetGroups"][0]
        assert group["TargetGroupName"] == f"{PREFIX}-{name}"
        assert (attached["containerName"], attached["containerPort"]) == (name, port)
        assert svc["propagateTags"] == "SERVICE"
        assert svc.get("enableExecuteCommand", False) is False
        assert svc["taskDefinition"].endswith(f"task-definition/{PREFIX}-{name}:1")
        # Settings moto does not echo (circuit breaker, grace period) are checked only where AWS answers.
        if "deploymentConfiguration" in svc:
            conf = svc["deploymentConfiguration"]
            assert (conf["minimumHealthyPercent"], conf["maximumPercent"]) == (100, 200)
            assert conf["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert services["backend"]["desiredCount"] == 2
    assert services["frontend"]["desiredCount"] == 0, "no image was ever pushed for the frontend"


def app_user_secret() -> str:
    """The application database user's secret, made by the DB initialisation."""
    return str(client("secretsmanager").describe_secret(SecretId=f"{PREFIX}-db-app-secret")["ARN"])


def migrations(started_by: str = "ecsflow-migrate") -> list[dict[str, Any]]:
    ecs = client("ecs")
    # AWS lists a stopped task under desiredStatus STOPPED; moto keeps it under RUNNING: ask for both.
    arns = {arn for status in ("RUNNING", "STOPPED") for arn in ecs.list_tasks(
        cluster=f"{PREFIX}-cluster", startedBy=started_by, desiredStatus=status)["taskArns"]}
    if not arns:
        return []
    tasks: list[dict[str, Any]] = ecs.describe_tasks(cluster=f"{PREFIX}-cluster", tasks=sorted(arns))["tasks"]
    return sorted(tasks, key=lambda t: t["taskDefinitionArn"])


def test_the_backend_migration_ran_once_on_its_first_revision(stack: Path) -> None:
    [task] = migrations()
    assert task["taskDefinitionArn"].endswith(f"task-definition/{PREFIX}-backend:1")
    assert task["lastStatus"] == "STOPPED" and task["containers"][0]["exitCode"] == 0
    assert task["overrides"]["containerOverrides"] == [
        {"name": "backend", "command": ["php", "artisan", "migrate", "--force"]}]
    assert task["launchType"] == "FARGATE"  # on-demand: Spot must not cut a migration short


def test_the_database_was_initialised_once_before_the_first_migration(stack: Path) -> None:
    # (The order, init before migration, is the flow's: moto's tasks carry no timestamps to show it.)
    [init] = migrations("ecsflow-dbinit")
    assert init["taskDefinitionArn"].endswith(f"task-definition/{PREFIX}-dbinit:1")
    assert init["lastStatus"] == "STOPPED" and init["containers"][0]["exitCode"] == 0
    tags = client("secretsmanager").describe_secret(SecretId=app_user_secret())["Tags"]
    assert "ecsflow:dbinit" in {t["Key"] for t in tags}, "marked done: the next `up` runs nothing"
    definition = client("ecs").describe_task_definition(taskDefinition=f"{PREFIX}-dbinit")["taskDefinition"]
    [container] = definition["containerDefinitions"]
    master = client("rds").describe_db_instances(
        DBInstanceIdentifier=f"{PREFIX}-db")["DBInstances"][0]["MasterUserSecret"]["SecretArn"]
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "PGUSER": f"{master}:username::", "PGPASSWORD": f"{master}:password::",
        "APP_DB_PASSWORD": f"{app_user_secret()}:password::"}
    assert container["image"] == "public.ecr.aws/docker/library/postgres:16-alpine"


def test_the_edge_puts_cloudfront_and_waf_in_front_of_the_alb(stack: Path) -> None:
    alb = client("elbv2").describe_load_balancers(Names=[f"{PREFIX}-alb"])["LoadBalancers"][0]
    cf = client("cloudfront")
    [summary] = cf.list_distributions()["DistributionList"]["Items"]
    config = cf.get_distribution_config(Id=summary["Id"])["DistributionConfig"]
    assert config["Aliases"]["Items"] == ["library.example.com"]
    assert config["Origins"]["Items"][0]["DomainName"] == alb["DNSName"]
    zone = client("route53").list_hosted_zones_by_name(DNSName="example.com.")["HostedZones"][0]["Id"]
    sets = {(r["Name"], r["Type"]): r for r in client("route53").list_resource_record_sets(
        HostedZoneId=zone)["ResourceRecordSets"]}
    for kind in ("A", "AAAA"):
        assert sets[("library.example.com.", kind)]["AliasTarget"]["DNSName"].rstrip(".") == summary["DomainName"]
    cdn_acls = boto3.client("wafv2", region_name="us-east-1").list_web_acls(Scope="CLOUDFRONT")["WebACLs"]
    assert [a["ARN"] for a in cdn_acls] == [config["WebACLId"]]
    attached = client("wafv2").get_web_acl_for_resource(ResourceArn=alb["LoadBalancerArn"])["WebACL"]
    assert attached["Name"] == f"{PREFIX}-waf-alb" and [r["Name"] for r in attached["Rules"]] == ["origin-verify"]
    [check] = client("route53").list_health_checks()["HealthChecks"]
    assert check["HealthCheckConfig"]["FullyQualifiedDomainName"] == "library.example.com"


def test_autoscaling_tracks_cpu_and_requests_per_target(stack: Path) -> None:
    aas, elb = client("application-autoscaling"), client("elbv2")
    backend = f"service/{PREFIX}-cluster/{PREFIX}-backend"
    [target] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[backend])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 8)
    policies = {p["PolicyName"]: p["TargetTrackingScalingPolicyConfiguration"]
                for p in aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=backend)["ScalingPolicies"]}
    cpu = policies[f"{PREFIX}-backend-cpu"]
    assert cpu["TargetValue"] == 60.0
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    requests = policies[f"{PREFIX}-backend-requests"]
    assert requests["TargetValue"] == 1000.0
    metric = requests["PredefinedMetricSpecification"]
    assert metric["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    alb = elb.describe_load_balancers(Names=[f"{PREFIX}-alb"])["LoadBalancers"][0]["LoadBalancerArn"]
    group = elb.describe_target_groups(Names=[f"{PREFIX}-backend"])["TargetGroups"][0]["TargetGroupArn"]
    assert metric["ResourceLabel"] == f"{alb.split(':loadbalancer/')[1]}/{group.split(':')[-1]}"
    # The frontend has no image: min 2 tasks would only fail, so its scaling waits.
    frontend = f"service/{PREFIX}-cluster/{PREFIX}-frontend"
    assert aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[frontend])["ScalableTargets"] == []


def test_load_balancer_is_public_hardened_and_logs_to_s3(stack: Path) -> None:
    elb, ec2 = client("elbv2"), client("ec2")
    alb = elb.describe_load_balancers(Names=[f"{PREFIX}-alb"])["LoadBalancers"][0]
    assert alb["Scheme"] == "internet-facing" and alb["Type"] == "application"
    ours = [{"Name": "tag:ecsflow:stack", "Values": ["library"]}]
    public = {s["SubnetId"] for s in ec2.describe_subnets(Filters=ours)["Subnets"]
              if tags(s["Tags"])["ecsflow:component"].startswith("subnet-public-")}
    assert {z["SubnetId"] for z in alb["AvailabilityZones"]} == public
    sg_alb = next(g["GroupId"] for g in ec2.describe_security_groups(Filters=ours)["SecurityGroups"]
                  if tags(g["Tags"])["ecsflow:component"] == "sg-alb")
    assert alb["SecurityGroups"] == [sg_alb]
    assert_ours(tags(elb.describe_tags(ResourceArns=[alb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]), "alb")
    attrs = {a["Key"]: a["Value"] for a in
             elb.describe_load_balancer_attributes(LoadBalancerArn=alb["LoadBalancerArn"])["Attributes"]}
    bucket = f"{PREFIX}-alb-logs-123456789012-{REGION}"
    assert attrs["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attrs["routing.http.desync_mitigation_mode"] == "defensive"
    assert attrs["deletion_protection.enabled"] == "true"  # prod
    assert attrs["idle_timeout.timeout_seconds"] == "60"
    assert (attrs["access_logs.s3.enabled"], attrs["access_logs.s3.bucket"], attrs["access_logs.s3.prefix"]) == (
        "true", bucket, "alb")

    s3 = client("s3")
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    policy = {s["Sid"]: s for s in json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]}
    delivery = policy["ElbLogDelivery"]
    assert delivery["Principal"] == {"AWS": "arn:aws:iam::582318560864:root"}  # ELB's account in ap-northeast-1
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == f"arn:aws:s3:::{bucket}/alb/AWSLogs/123456789012/*"
    tls = policy["DenyInsecureTransport"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["Expiration"] == {"Days": 365}
    assert_ours(tags(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]), "alb-logs")


def test_listeners_redirect_http_and_serve_tls13_with_path_rules(stack: Path) -> None:
    elb, acm = client("elbv2"), client("acm")
    alb = elb.describe_load_balancers(Names=[f"{PREFIX}-alb"])["LoadBalancers"][0]["LoadBalancerArn"]
    listeners = {item["Port"]: item for item in elb.describe_listeners(LoadBalancerArn=alb)["Listeners"]}
    assert set(listeners) == {80, 443}
    http = listeners[80]
    assert http["Protocol"] == "HTTP"
    assert http["DefaultActions"] == [{"Type": "redirect", "RedirectConfig": {
        "Protocol": "HTTPS", "Port": "443", "Host": "#{host}", "Path": "/#{path}", "Query": "#{query}",
        "StatusCode": "HTTP_301"}}]
    https = listeners[443]
    assert https["Protocol"] == "HTTPS" and https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    [certificate] = https["Certificates"]
    cert = acm.describe_certificate(CertificateArn=certificate["CertificateArn"])["Certificate"]
    assert cert["DomainName"] == "library.example.com" and cert["Status"] == "ISSUED"
    assert cert["DomainValidationOptions"][0]["ValidationMethod"] == "DNS"
    assert_ours(tags(acm.list_tags_for_certificate(CertificateArn=cert["CertificateArn"])["Tags"]), "certificate")

    groups = {g["TargetGroupName"].removeprefix(f"{PREFIX}-"): g
              for g in elb.describe_target_groups(Names=[f"{PREFIX}-backend", f"{PREFIX}-frontend"])["TargetGroups"]}
    for name, path in (("backend", "/api/health"), ("frontend", "/health")):
        group = groups[name]
        assert group["TargetType"] == "ip" and group["Protocol"] == "HTTP"
        assert group["HealthCheckPath"] == path and group["Matcher"] == {"HttpCode": "200-399"}
        assert (group["HealthyThresholdCount"], group["UnhealthyThresholdCount"]) == (2, 3)
        assert_ours(tags(elb.describe_tags(ResourceArns=[group["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]),
                    f"tg-{name}")
    # Default route -> frontend; /api/* -> backend at a fixed priority.
    assert [a["TargetGroupArn"] for a in https["DefaultActions"]] == [groups["frontend"]["TargetGroupArn"]]
    rules = [r for r in elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert [(r["Priority"], r["Conditions"][0]["PathPatternConfig"]["Values"],
             r["Actions"][0]["TargetGroupArn"]) for r in rules] == [
        ("10", ["/api/*"], groups["backend"]["TargetGroupArn"])]


def test_plan_and_status_see_everything_as_made(stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["plan", "--stack", str(stack), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r for r in rows if r["action"] != "no-op"] == []
    assert {"db init task", "cloudfront distribution", "waf web acl", "dns records"} <= {r["resource"] for r in rows}
    resources = Counter(r["resource"] for r in rows)
    assert resources["task definition"] == 2 and resources["ecs service"] == 2 and resources["listener"] == 2
    assert main(["status", "--stack", str(stack), "--json"]) == 0
    kinds = Counter(r["kind"] for r in json.loads(capsys.readouterr().out)["resources"])
    # Three task definitions: the two services' and the DB initialisation's.
    assert kinds["ecs cluster"] == 1 and kinds["ecs service"] == 2 and kinds["task definition"] == 3
    assert kinds["app user secret"] == 1 and kinds["origin secret"] == 1 and kinds["dns records"] == 1
    assert kinds["health check"] == 1 and kinds["cloudfront distribution"] == 1 and kinds["web acl"] == 2
    assert kinds["cdn certificate"] == 1
    assert kinds["load balancer"] == 1 and kinds["listener"] == 2 and kinds["listener rule"] == 1
    assert kinds["target group"] == 2 and kinds["certificate"] == 1 and kinds["log bucket"] == 1
    assert kinds["scalable target"] == 1


def test_verify_health_probes_the_public_url_and_names_what_is_wrong(stack: Path) -> None:
    """moto never completes a rollout nor registers targets, so the service checks fail here; the
    HTTP probe goes to a real local server (the stack's public_url)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from spec import load_stack
    from tasks.aws import AwsContext
    from tasks.services import HealthCheckFailed, health_problems, verify_health

    class App(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/api/health" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = load_stack(stack)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        spec = spec.model_copy(update={"load_balancer": spec.load_balancer.model_copy(update={"public_url": url})})
        ctx = AwsContext.for_stack(spec)
        problems, facts = health_problems(spec, ctx, "backend")
        assert facts["probe"] == f"{url}/api/health: HTTP 200"
        assert (facts["desired"], facts["running"]) == (2, 0)
        assert "0 of 2 tasks running" in problems and not any(url in p for p in problems)
        with pytest.raises(HealthCheckFailed) as failed:
            verify_health.fn(spec, ctx, "frontend", timeout=0.2)
        message = str(failed.value)
        assert "desired count is 0" in message and f"{url}/health answered HTTP 503" in message
    finally:
        server.shutdown()


# ---------------------------------------------------------------- changes (these run last, in order)


def test_second_up_makes_no_mutating_call(stack: Path) -> None:
    CALLS.reset()
    up(stack)
    assert CALLS.calls["ecs:DescribeTaskDefinition"] >= 2, "the second run must still look"
    assert CALLS.mutating() == Counter()


def test_a_cpu_change_is_one_new_revision_and_one_service_update(
    stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["services"]["backend"]["cpu"] = 256  # 512 -> 256 (1024 MiB is allowed with both)

    changed = write_stack(tmp_path / "library.yaml", edit)
    capsys.readouterr()
    assert main(["plan", "--stack", str(changed), "--json"]) == 0
    pending = [r for r in json.loads(capsys.readouterr().out) if r["action"] != "no-op"]
    definitions = [r for r in pending if r["resource"] == "task definition"]
    assert len(definitions) == 1, pending
    assert definitions[0]["name"] == f"{PREFIX}-backend" and definitions[0]["changes"] == ["cpu: '512' -> '256'"]
    assert "revision 2" in definitions[0]["note"]
    # The service follows the new revision; nothing else moves.
    assert {(r["resource"], r["name"]) for r in pending} == {
        ("task definition", f"{PREFIX}-backend"), ("ecs service", f"{PREFIX}-backend")}, pending

    CALLS.reset()
    up(changed)
    mutating = CALLS.mutating()
    # The backend's migration runs once on the new revision before the service moves to it.
    assert mutating == Counter({"ecs:RegisterTaskDefinition": 1, "ecs:RunTask": 1, "ecs:UpdateService": 1}), mutating
    assert [t["taskDefinitionArn"].rsplit(":", 1)[1] for t in migrations()] == ["1", "2"]
    ecs = client("ecs")
    td = ecs.describe_task_definition(taskDefinition=f"{PREFIX}-backend")["taskDefinition"]
    assert (td["revision"], td["cpu"]) == (2, "256")
    svc = ecs.describe_services(cluster=f"{PREFIX}-cluster", services=[f"{PREFIX}-backend"])["services"][0]
    assert svc["taskDefinition"].endswith(f"{PREFIX}-backend:2")
    assert svc["desiredCount"] == 2, "autoscaling owns the count; a deploy does not reset it"

    CALLS.reset()
    up(changed)
    assert CALLS.mutating() == Counter()


def test_a_migration_that_cannot_run_stops_the_rollout_and_says_why(
    stack: Path, moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.faultproxy import FaultProxy

    def edit(data: dict[str, Any]) -> None:
        data["services"]["backend"]["environment"]["LOG_LEVEL"] = "debug"

    changed = write_stack(tmp_path / "library.yaml", edit)
    with FaultProxy(moto_server.url) as proxy:
        proxy.fail("RunTask", times=None, kind="access_denied", code="InvalidParameterException", status=400,
                   message="No Container Instances were found in your cluster.")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        capsys.readouterr()
        assert main(["up", "--stack", str(changed), "--skip-images"]) == 1
        assert proxy.calls["RunTask"] == 1, "a refused request is not retried"
    monkeypatch.undo()  # back to moto itself
    err = capsys.readouterr().err
    assert "run the migration of backend" in err and "InvalidParameterException" in err, err
    ecs = client("ecs")
    assert ecs.describe_task_definition(taskDefinition=f"{PREFIX}-backend")["taskDefinition"]["revision"] == 3
    svc = ecs.describe_services(cluster=f"{PREFIX}-cluster", services=[f"{PREFIX}-backend"])["services"][0]
    assert svc["taskDefinition"].endswith(f"{PREFIX}-backend:2"), "the service stays on the migrated revision"


def test_down_leaves_nothing_tagged(stack: Path) -> None:
    assert main(["down", "--stack", str(stack), "--yes"]) == 0
    ecs, ec2, kms = client("ecs"), client("ec2"), client("kms")

    def gone(arn: str) -> bool:
        # KMS keys wait 7 days; AWS shows deleted NAT gateways and stopped tasks for an hour; moto's
        # tagging API keeps listing deleted ECS clusters and services, which describe calls show INACTIVE.
        if ":kms:" in arn:
            return bool(kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "PendingDeletion")
        if ":secretsmanager:" in arn:  # the app user's secret keeps a recovery window beside the final snapshot
            return "DeletedDate" in client("secretsmanager").describe_secret(SecretId=arn)
        if ":natgateway/" in arn:
            return bool(ec2.describe_nat_gateways(NatGatewayIds=[arn.rsplit("/", 1)[1]])["NatGateways"][0]["State"]
                        == "deleted")
        if ":cluster/" in arn:
            return all(c["status"] == "INACTIVE" for c in ecs.describe_clusters(clusters=[arn])["clusters"])
        if ":task/" in arn:  # the migration tasks: AWS shows stopped tasks for about an hour
            cluster = arn.split(":task/")[1].split("/")[0]
            return all(t["lastStatus"] == "STOPPED" for t in ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"])
        if ":service/" in arn:
            cluster = arn.split(":service/")[1].split("/")[0]
            return all(s["status"] == "INACTIVE" for s in ecs.describe_services(cluster=cluster,
                                                                                services=[arn])["services"])
        return False

    tagged = client("resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": "ecsflow:stack", "Values": ["library"]}])["ResourceTagMappingList"]
    assert [r["ResourceARN"] for r in tagged if not gone(r["ResourceARN"])] == []
    # What the tagging API may not cover, by describe calls.
    assert client("elbv2").describe_load_balancers()["LoadBalancers"] == []
    assert client("elbv2").describe_target_groups()["TargetGroups"] == []
    assert [c for c in client("acm").list_certificates()["CertificateSummaryList"]] == []
    assert not [b for b in client("s3").list_buckets()["Buckets"] if b["Name"].startswith(PREFIX)]
    aas = client("application-autoscaling")
    assert aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"] == []
    assert ecs.list_task_definitions(familyPrefix=PREFIX)["taskDefinitionArns"] == []
    assert ecs.list_task_definitions(familyPrefix=PREFIX, status="INACTIVE")["taskDefinitionArns"] == []
    assert [r["RoleName"] for r in client("iam").list_roles(PathPrefix=f"/ecsflow/{PREFIX}/")["Roles"]] == []
    # The edge and the DB initialisation's secret: the hosted zone keeps only its own records.
    assert client("cloudfront").list_distributions()["DistributionList"].get("Items", []) == []
    assert boto3.client("wafv2", region_name="us-east-1").list_web_acls(Scope="CLOUDFRONT")["WebACLs"] == []
    assert client("wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"] == []
    assert client("route53").list_health_checks()["HealthChecks"] == []
    zone = client("route53").list_hosted_zones_by_name(DNSName="example.com.")["HostedZones"][0]["Id"]
    assert {r["Type"] for r in client("route53").list_resource_record_sets(
        HostedZoneId=zone)["ResourceRecordSets"]} == {"NS", "SOA"}
    assert boto3.client("acm", region_name="us-east-1").list_certificates()["CertificateSummaryList"] == []
    assert [s["Name"] for s in client("secretsmanager").list_secrets()["SecretList"]
            if s["Name"].startswith(PREFIX) and "DeletedDate" not in s] == []
