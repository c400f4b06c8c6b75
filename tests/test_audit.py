"""`ecsflow audit` against a live (moto) library stack, on the real Prefect server.

One `up --skip-images` for the module (the library stack plus a Laravel APP_KEY app secret):
- the fresh stack passes every rule with zero failures;
- no secret value (the generated APP_KEY, the RDS master password) is anywhere in Prefect's
  database (runs, parameters, results, logs, artifacts) or the command's output;
- then one property per rule is broken on purpose, each on its own resource (or on a resource no
  other breakage touches for that rule), and a single audit must fail exactly those (rule,
  resource) pairs, exit 1, and say what to fix.
Everything is broken and read back with separate boto3 clients, never through ecsflow.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from ecsflow.cli import main
from tasks.audit import RULE_IDS
from tasks.aws import CALLS
from tasks.runner_policy import granted_actions, required_action, runner_policy
from tests.conftest import LIBRARY_STACK

pytestmark = pytest.mark.prefect
REGION = "ap-northeast-1"
PREFIX = "library-prod"


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def write_stack(path: Path) -> Path:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    for service in data["services"].values():
        service["build"]["context"] = str((LIBRARY_STACK.parent / service["build"]["context"]).resolve())
    data["app_secrets"] = {"app-key": {"generate": "laravel-app-key"}}
    data["services"]["backend"]["secrets"]["APP_KEY"] = "app:app-key"
    data["security"] = {"max_active_revisions": 2}
    path.write_text(yaml.safe_dump(data))
    return path


def audit(stack: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["audit", "--stack", str(stack), "--json"])
    return code, json.loads(capsys.readouterr().out)


OUTPUT = io.StringIO()  # what `up` printed (stdout and stderr)
UP_CALLS: set[str] = set()  # every AWS operation `up` and the clean audit made (in this process)


@pytest.fixture(scope="module")
def stack(moto_server: Any, prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    moto_server.reset()
    path = write_stack(tmp_path_factory.mktemp("audit") / "library.yaml")
    CALLS.reset()
    with contextlib.redirect_stdout(OUTPUT), contextlib.redirect_stderr(OUTPUT):
        assert main(["up", "--stack", str(path), "--skip-images"]) == 0
    UP_CALLS.update(CALLS.calls)
    yield path


def test_the_provisioned_library_stack_passes_every_rule(stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(stack, capsys)
    failed = [f for f in report["findings"] if not f["passed"]]
    assert (code, failed) == (0, [])
    checked = {f["rule"] for f in report["findings"]}
    # Maybe nothing to check yet: SNS topics (with monitoring), pushed images (not with --skip-images).
    assert not set(RULE_IDS) - {"ENC-SNS", "IMG-FINDINGS"} - checked, set(RULE_IDS) - checked
    UP_CALLS.update(CALLS.calls)
    resources = {(f["rule"], f["resource"]) for f in report["findings"]}
    assert ("ENC-SECRETS", f"{PREFIX}/app-key") in resources
    assert ("RDS-FORCE-SSL", f"{PREFIX}-pg16") in resources
    assert ("DEL-RDS", f"{PREFIX}-db") in resources


def test_the_runner_policy_grants_every_action_up_and_audit_used(stack: Path) -> None:
    from spec import load_stack

    assert len(UP_CALLS) > 100  # `up` and the audit ran in this process (their calls were counted)
    needed = {a for a in (required_action(c) for c in UP_CALLS) if a}
    policy = runner_policy(load_stack(stack), REGION, "123456789012")
    missing = sorted(needed - granted_actions(policy))
    assert missing == [], f"the runner policy lacks {missing}"


def test_the_security_phase_alone_changes_nothing_on_the_provisioned_stack(stack: Path) -> None:
    from flows.common import StackRun
    from flows.phase_security import security_flow

    CALLS.reset()
    result = security_flow(StackRun(stack_file=str(stack)))
    assert CALLS.mutating() == {}
    arn = client("secretsmanager").describe_secret(SecretId=f"{PREFIX}/app-key")["ARN"]
    assert result == {"app_secrets": {"app-key": arn}, "guardrails": []}


def test_no_secret_value_reaches_prefect_or_the_output(stack: Path, prefect_server: Any) -> None:
    from tests.conftest import _drain_prefect_workers

    sm = client("secretsmanager")
    app_key = sm.get_secret_value(SecretId=f"{PREFIX}/app-key")["SecretString"]
    db = client("rds").describe_db_instances(DBInstanceIdentifier=f"{PREFIX}-db")["DBInstances"][0]
    master = json.loads(sm.get_secret_value(SecretId=db["MasterUserSecret"]["SecretArn"])["SecretString"])
    assert app_key.startswith("base64:") and len(app_key) == 51  # 32 random bytes, Laravel's format
    values = {"APP_KEY": app_key, "base64 part of APP_KEY": app_key.removeprefix("base64:"),
              "DB master password": master["password"]}
    assert all(len(v) >= 8 for v in values.values())
    assert "Stack outputs" in OUTPUT.getvalue()
    _drain_prefect_workers()
    db_files = [p for p in Path(prefect_server.db_path).parent.glob(Path(prefect_server.db_path).name + "*")]
    blob = b"".join(p.read_bytes() for p in db_files)
    assert b"ensure app secret app-key" in blob  # the runs that handled the secret are recorded here
    assert b"outputs-library-prod" in blob and b"audit-library-prod" in blob  # and the artifacts
    for what, value in values.items():
        assert value.encode() not in blob, f"{what} found in Prefect's database"
        assert value not in OUTPUT.getvalue(), f"{what} printed"
    log = Path(prefect_server.log_path).read_text(errors="replace")
    assert not any(v in log for v in values.values())


def _image(repo: str, tag: str) -> str:
    ecr = client("ecr")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + "1" * 64, "size": 1,
                                      "mediaType": "application/vnd.docker.container.image.v1+json"},
                           "layers": []})
    digest = ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag=tag)["image"]["imageId"]["imageDigest"]
    ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    arn = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryArn"]
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "ecsflow:image", "Value": f"{tag}@{digest}"}])
    return f"{repo}:{tag}"


def _group(component: str) -> str:
    groups = client("ec2").describe_security_groups(Filters=[
        {"Name": "tag:ecsflow:stack", "Values": ["library"]},
        {"Name": "tag:ecsflow:component", "Values": [component]}])["SecurityGroups"]
    return str(groups[0]["GroupId"])


def _tcp(port: int, **source: Any) -> list[dict[str, Any]]:
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}]


def break_everything() -> set[tuple[str, str]]:
    """One broken property per rule; returns the (rule, resource) pairs the audit must fail."""
    ours = [{"Key": "ecsflow:stack", "Value": "library"}, {"Key": "ecsflow:env", "Value": "prod"}]
    ec2, rds, ecr, logs, elb, iam = (client(s) for s in ("ec2", "rds", "ecr", "logs", "elbv2", "iam"))
    expected: set[tuple[str, str]] = set()

    rds.create_db_instance(DBInstanceIdentifier=f"{PREFIX}-rogue", Engine="postgres", DBInstanceClass="db.t4g.micro",
                           AllocatedStorage=20, MasterUsername="rogue", MasterUserPassword="not-a-secret-1",
                           StorageEncrypted=False, DeletionProtection=True, PubliclyAccessible=False, Tags=ours)
    expected.add(("ENC-RDS", f"{PREFIX}-rogue"))
    rds.modify_db_instance(DBInstanceIdentifier=f"{PREFIX}-db", PubliclyAccessible=True, DeletionProtection=False,
                           ApplyImmediately=True)
    expected |= {("PUB-RDS", f"{PREFIX}-db"), ("DEL-RDS", f"{PREFIX}-db")}
    rds.modify_db_parameter_group(DBParameterGroupName=f"{PREFIX}-pg16", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}])
    expected.add(("RDS-FORCE-SSL", f"{PREFIX}-pg16"))

    ecr.create_repository(repositoryName=f"{PREFIX}-rogue", imageTagMutability="IMMUTABLE",
                          imageScanningConfiguration={"scanOnPush": True}, tags=ours)
    expected.add(("ENC-ECR", f"{PREFIX}-rogue"))
    ecr.put_image_tag_mutability(repositoryName=f"{PREFIX}-backend", imageTagMutability="MUTABLE")
    expected.add(("ECR-IMMUTABLE", f"{PREFIX}-backend"))
    ecr.put_image_scanning_configuration(repositoryName=f"{PREFIX}-frontend",
                                         imageScanningConfiguration={"scanOnPush": False})
    expected.add(("ECR-SCAN", f"{PREFIX}-frontend"))
    expected.add(("IMG-FINDINGS", _image(f"{PREFIX}-backend", "0.9.0")))  # moto's canned scan: 1 HIGH

    logs.create_log_group(logGroupName=f"/ecsflow/{PREFIX}/rogue", tags={"ecsflow:stack": "library",
                                                                        "ecsflow:env": "prod"})
    logs.put_retention_policy(logGroupName=f"/ecsflow/{PREFIX}/rogue", retentionInDays=400)
    expected.add(("ENC-LOGS", f"/ecsflow/{PREFIX}/rogue"))
    logs.put_retention_policy(logGroupName=f"/ecsflow/{PREFIX}/ecs-frontend", retentionInDays=30)
    expected.add(("LOG-RETENTION", f"/ecsflow/{PREFIX}/ecs-frontend"))

    client("sns").create_topic(Name=f"{PREFIX}-rogue", Tags=ours)
    expected.add(("ENC-SNS", f"{PREFIX}-rogue"))
    bucket = next(b["Name"] for b in client("s3").list_buckets()["Buckets"] if b["Name"].startswith(f"{PREFIX}-alb"))
    client("s3").delete_bucket_encryption(Bucket=bucket)
    client("s3").delete_public_access_block(Bucket=bucket)
    expected |= {("ENC-S3", bucket), ("PUB-S3", bucket)}
    s3 = client("s3")
    s3.create_bucket(Bucket=f"{PREFIX}-rogue", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_tagging(Bucket=f"{PREFIX}-rogue", Tagging={"TagSet": ours})
    s3.put_bucket_encryption(Bucket=f"{PREFIX}-rogue", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_public_access_block(Bucket=f"{PREFIX}-rogue", PublicAccessBlockConfiguration={
        k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")})
    expected.add(("S3-TLS", f"{PREFIX}-rogue"))  # no TLS-only policy
    client("secretsmanager").create_secret(Name=f"{PREFIX}/rogue", SecretString="x", Tags=ours)
    expected.add(("ENC-SECRETS", f"{PREFIX}/rogue"))
    key = client("kms").describe_key(KeyId=f"alias/{PREFIX}-ecr")["KeyMetadata"]["KeyId"]
    client("kms").disable_key_rotation(KeyId=key)
    expected.add(("KMS-ROTATION", f"alias/{PREFIX}-ecr"))

    ecs = client("ecs")
    cluster = f"{PREFIX}-cluster"
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[
        {"Name": "tag:ecsflow:stack", "Values": ["library"]}])["Subnets"]]
    ecs.update_service(cluster=cluster, service=f"{PREFIX}-frontend", networkConfiguration={"awsvpcConfiguration": {
        "subnets": subnets[:1], "securityGroups": [_group("sg-ecs")], "assignPublicIp": "ENABLED"}})
    expected.add(("PUB-ECS", f"{PREFIX}-frontend"))
    td = ecs.describe_task_definition(taskDefinition=f"{PREFIX}-frontend", include=["TAGS"])
    spec = {k: v for k, v in td["taskDefinition"].items() if k in (
        "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
        "requiresCompatibilities", "cpu", "memory")}
    for _ in range(2):
        ecs.register_task_definition(**spec, tags=td["tags"])
    expected.add(("TD-REVISIONS", f"{PREFIX}-frontend"))

    alb_sg, ecs_sg, rds_sg = _group("sg-alb"), _group("sg-ecs"), _group("sg-rds")
    ec2.authorize_security_group_ingress(GroupId=alb_sg, IpPermissions=_tcp(8443, IpRanges=[{"CidrIp": "0.0.0.0/0"}]))
    expected.add(("SG-WORLD", f"sg-alb ({alb_sg})"))
    ec2.authorize_security_group_ingress(GroupId=ecs_sg, IpPermissions=_tcp(8080, IpRanges=[{"CidrIp": "10.0.0.0/16"}]))
    expected.add(("SG-ECS", f"sg-ecs ({ecs_sg})"))
    ec2.authorize_security_group_ingress(GroupId=rds_sg, IpPermissions=_tcp(5432, UserIdGroupPairs=[
        {"GroupId": alb_sg}]))
    expected.add(("SG-RDS", f"sg-rds ({rds_sg})"))
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:ecsflow:stack", "Values": ["library"]}])["Vpcs"][0]["VpcId"]
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                    {"Name": "group-name", "Values": ["default"]}])
    default_id = default["SecurityGroups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=default_id, IpPermissions=_tcp(22, UserIdGroupPairs=[
        {"GroupId": default_id}]))
    expected.add(("SG-DEFAULT", f"default security group {default_id} of {vpc}"))
    flow_logs = [f["FlowLogId"] for f in ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc]}])[
        "FlowLogs"]]
    ec2.delete_flow_logs(FlowLogIds=flow_logs)
    expected.add(("VPC-FLOW-LOGS", vpc))

    role = f"{PREFIX}-frontend-task"
    iam.put_role_policy(RoleName=role, PolicyName="rogue", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                "Resource": "arn:aws:s3:::somewhere"}]}))
    expected.add(("IAM-ACTIONS", role))
    role = f"{PREFIX}-backend-task"
    iam.put_role_policy(RoleName=role, PolicyName="rogue", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    expected.add(("IAM-RESOURCES", role))

    alb = elb.describe_load_balancers(Names=[f"{PREFIX}-alb"])["LoadBalancers"][0]["LoadBalancerArn"]
    elb.modify_load_balancer_attributes(LoadBalancerArn=alb, Attributes=[
        {"Key": "deletion_protection.enabled", "Value": "false"}])
    expected.add(("DEL-ALB", f"{PREFIX}-alb"))
    listeners = {item["Port"]: item["ListenerArn"] for item in elb.describe_listeners(LoadBalancerArn=alb)["Listeners"]}
    elb.modify_listener(ListenerArn=listeners[443], SslPolicy="ELBSecurityPolicy-2016-08")
    expected.add(("TLS-POLICY", "HTTPS:443"))
    elb.modify_listener(ListenerArn=listeners[80], DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
        "StatusCode": "200", "ContentType": "text/plain", "MessageBody": "plain"}}])
    expected.add(("HTTP-REDIRECT", "HTTP:80"))
    return expected


@pytest.fixture(scope="module")
def broken(stack: Path) -> set[tuple[str, str]]:
    """Breaks the module's stack (after the tests above have seen it whole)."""
    return break_everything()


def test_each_rule_catches_its_broken_property(stack: Path, broken: set[tuple[str, str]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    expected = broken
    assert {rule for rule, _ in expected} == set(RULE_IDS)  # every rule gets its breakage
    code, report = audit(stack, capsys)
    failed = {(f["rule"], f["resource"]) for f in report["findings"] if not f["passed"]}
    assert code == 1 and report["passed"] is False
    assert failed == expected, {"missed": expected - failed, "unexpected": failed - expected}
    messages = {f["rule"]: f["message"] for f in report["findings"] if not f["passed"]}
    assert "8443" in messages["SG-WORLD"] and "10.0.0.0/16" in messages["SG-ECS"]
    assert "s3:*" in messages["IAM-ACTIONS"] and "s3:GetObject" in messages["IAM-RESOURCES"]
    assert "30 days" in messages["LOG-RETENTION"] and "HIGH 1" in messages["IMG-FINDINGS"]
    assert "4 ACTIVE" not in messages["TD-REVISIONS"] and "3 ACTIVE revisions" in messages["TD-REVISIONS"]


def test_one_rule_alone_prints_a_table_and_exits_1(stack: Path, broken: set[tuple[str, str]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["audit", "--stack", str(stack), "--rule", "SG-WORLD"]) == 1
    out = capsys.readouterr().out
    assert "FAIL SG-WORLD" in out and "open to the internet on port(s) 8443" in out
    assert "pass SG-WORLD       sg-ecs" in out and "1 failed of 3 checks." in out
