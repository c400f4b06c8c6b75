"""`ecsflow deploy` and `ecsflow rollback` end to end: a busybox app in a git repository is built
by the real Docker engine, pushed to the local registry, registered and rolled out in moto, and
probed over HTTP at a real local container; notifications go to a real local HTTP receiver.

moto starts no task (no rollout completes, no target registers): tests/support/ecs_standin.py is
a STAND-IN for that part of ECS only: it runs the image the service's task definition names as a
local container behind the stack's public URL, registers it as a target and reports the rollout
done. Whether the app is healthy is decided by the HTTP probe of that container.

One stack for the module (`up --skip-images` once); the tests change it in file order:
(a) v1 deploys; deploying it again does nothing; (b) v2 passes its smoke test but fails the probe:
rolled back; (c) v3 with a migration that cannot run: stopped before any service changes;
(d) v3 deploys, then a manual rollback returns to v1's revision; (e) a blue/green rollout.

Between (a) and (b), the same stack is deployed the way production deploys it: a signed push
reaches the webhook receiver (real uvicorn), which starts the `deploy_app/deploy-app` deployment
registered from prefect.yaml (`prefect deploy`); a real process worker runs it. A second delivery
of the same payload starts nothing. (It shares this module's stack rather than provisioning one
of its own: the provisioning is the longest step of either.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import httpx
import pytest
import uvicorn
import yaml
from prefect import flow

from blocks.notifier import EcsflowNotifier
from deployments.webhook import ReceiverConfig, create_app
from ecsflow.cli import main
from ecsflow.local import wait_http
from tasks.aws import CALLS
from tests.images import conftest as images_fixtures
from tests.images.conftest import RegistryServer, commit, stack_yaml, write_app
from tests.support.ecs_standin import EcsStandIn
from tests.support.receiver import Receiver
from tests.support.servers import free_port
from tests.test_webhook import SECRET, delivery, push_payload

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parent.parent
REGION = "ap-northeast-1"
REPO = "example-org/library-app"
HEALTH = "/cgi-bin/health"
# The images tests' session fixtures: the real Docker engine and the local registry.
docker_engine = images_fixtures.docker_engine
registry_server = images_fixtures.registry_server

# busybox httpd runs it as CGI. Healthy: always 200. Broken: 200 on the first request only (it
# passes the image's smoke test, then fails in service).
HEALTHY_CGI = "#!/bin/busybox sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok {version}\\n'\n"
BROKEN_CGI = """#!/bin/busybox sh
n=$(/bin/busybox cat /tmp/hits 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > /tmp/hits
if [ "$n" -gt 1 ]; then printf 'Status: 500 Internal Server Error\\r\\n\\r\\nbroken\\n'
else printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'; fi
"""


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


@dataclass
class Deployable:
    stack_file: Path
    app: Path
    prefix: str
    hook: Receiver
    ecs: EcsStandIn
    registry: RegistryServer

    def release(self, version: str, *, broken: bool = False) -> str:
        """Write version `version` of the app and commit it; returns the commit SHA."""
        write_app(self.app, version=version, git=False)
        cgi = self.app / "www" / "cgi-bin"
        cgi.mkdir(exist_ok=True)
        (cgi / "health").write_text(BROKEN_CGI if broken else HEALTHY_CGI.format(version=version))
        (cgi / "health").chmod(0o755)
        return commit(self.app, f"version {version}")

    def service(self) -> dict[str, Any]:
        [svc] = client("ecs").describe_services(cluster=f"{self.prefix}-cluster",
                                                services=[f"{self.prefix}-web"])["services"]
        return dict(svc)

    def revision(self) -> str:
        return str(self.service()["taskDefinition"].rsplit(":", 1)[-1])

    def image_of(self, revision: str) -> str:
        td = client("ecs").describe_task_definition(taskDefinition=f"{self.prefix}-web:{revision}")
        return str(td["taskDefinition"]["containerDefinitions"][0]["image"])

    def recorded(self) -> str:
        repo = client("ecr").describe_repositories(repositoryNames=[f"{self.prefix}-web"])["repositories"][0]
        tags = client("ecr").list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        return {t["Key"]: t["Value"] for t in tags}.get("ecsflow:image", "")

    def messages(self, count: int) -> list[str]:
        return [r.json()["text"] for r in self.hook.wait_for(count)]


@pytest.fixture(scope="module")
def site(moto_server: Any, prefect_server: Any, registry_server: RegistryServer, docker_engine: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployable]:
    import secrets

    moto_server.reset()
    workdir = tmp_path_factory.mktemp("deploy")
    name = f"d{secrets.token_hex(3)}"
    app_port = free_port()
    with pytest.MonkeyPatch.context() as env, Receiver() as hook, \
            EcsStandIn(moto_server.url, registry=registry_server.host, app_port=app_port, region=REGION) as ecs:
        env.setenv("ECSFLOW_REGISTRY", registry_server.host)
        env.setenv("ECSFLOW_REGISTRY_USERNAME", registry_server.username)
        env.setenv("ECSFLOW_REGISTRY_PASSWORD", registry_server.password)
        env.setenv("AWS_ENDPOINT_URL", ecs.url)
        block = f"deploy-hook-{name}"
        EcsflowNotifier(url=hook.url("http", "/services/T1/B1/secret")).save(  # type: ignore[arg-type, call-arg]
            block, overwrite=True, _sync=True)
        data = stack_yaml(name, {"web": {"build": {"context": "web"}, "health_check_path": HEALTH,
                                         "migration_command": "/bin/busybox true",
                                         "autoscaling": {"enabled": False}}},
                          # What a deploy does not touch is left out, for time.
                          network={"flow_logs": {"enabled": False}, "s3_gateway_endpoint": False},
                          load_balancer={"public_url": f"http://127.0.0.1:{app_port}", "access_logs": False},
                          notifications={"block": block},
                          deploy={"stability_timeout_seconds": 10, "verify_timeout_seconds": 3})
        stack_file = workdir / "stack.yaml"
        stack_file.write_text(yaml.safe_dump(data, sort_keys=False))
        site = Deployable(stack_file, workdir / "web", f"{name}-dev", hook, ecs, registry_server)
        site.release("1")
        assert provision_for_deploys(str(stack_file), return_state=True).is_completed()
        yield site


@flow(name="deploy-test-setup")
def provision_for_deploys(stack_file: str) -> None:
    """What a deploy needs and nothing else (`up` would add the database, monitoring, ...): keys,
    network, repositories, load balancer, cluster and service, by the phases' own submit functions."""
    from flows.common import StackRun, open_stack, settle
    from flows.phase_cluster import submit_cluster, submit_services
    from flows.phase_load_balancer import submit_load_balancer
    from flows.phase_network import submit_network
    from flows.phase_registry import submit_registry
    from tasks import kms

    spec, ctx = open_stack(StackRun(stack_file=stack_file))
    keys = {purpose: kms.ensure_key.submit(ctx, purpose) for purpose in ("logs", "ecr")}
    net = submit_network(spec, ctx, keys["logs"])
    registry = submit_registry(spec, ctx, keys["ecr"])
    balancer = submit_load_balancer(spec, ctx, vpc=net.vpc, public_subnets=net.tier("public"),
                                    alb_security_group=net.security_groups["sg-alb"])
    cluster = submit_services(spec, ctx, submit_cluster(spec, ctx, keys["logs"]), logs_key=keys["logs"],
                              repositories=registry.repositories, database=None,  # type: ignore[arg-type]
                              private_subnets=net.tier("private"), ecs_security_group=net.security_groups["sg-ecs"],
                              load_balancer=balancer)
    settle([*keys.values(), *net.all(), *registry.all(), *balancer.all(), *cluster.all()])


def deploy(site: Deployable, *extra: str) -> int:
    return main(["deploy", "--stack", str(site.stack_file), *extra])


def latest_run(flow_name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as prefect:
        [run] = prefect.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)
        return run


def artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                       sort=ArtifactSort.CREATED_DESC, limit=1)
    return str(found[0].data) if found else ""


# ---------------------------------------------------------------- (a)


def test_a_deploy_rolls_out_the_commit_and_a_second_deploy_of_it_does_nothing(
        site: Deployable, capsys: pytest.CaptureFixture[str]) -> None:
    sha = subprocess.run(["git", "-C", str(site.app), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    before = site.revision()
    assert site.image_of(before).endswith(":ecsflow-no-image-yet")

    assert deploy(site) == 0
    out = capsys.readouterr().out
    after = site.revision()
    assert int(after) == int(before) + 1
    assert site.image_of(after).endswith(f"/{site.prefix}-web:{sha}")
    assert site.service()["desiredCount"] == 1, "a service that never had an image gets its count"
    digest = site.registry.digest(f"{site.prefix}-web", sha)
    assert digest and site.recorded() == f"{sha}@{digest}"
    assert f"Deployed {sha}" in out and f"{site.prefix}-web:{before} -> {site.prefix}-web:{after}" in out
    assert site.ecs.started[-1].endswith(f":{after}"), "the new revision's image ran as the service's task"
    migrations = client("ecs").list_tasks(cluster=f"{site.prefix}-cluster", startedBy="ecsflow-migrate")["taskArns"]
    assert len(migrations) == 1

    report = artifact(f"deploy-{site.prefix}")
    assert f"commit: `{sha}`" in report and digest in report and "succeeded" in report
    assert f"| web | {site.registry.host}/{site.prefix}-web:{sha} | {digest} | {site.prefix}-web:{before} | " \
           f"{site.prefix}-web:{after} |" in report
    assert f"{HEALTH}: HTTP 200" in report and "| build, smoke test, push, scan |" in report
    started, succeeded = site.messages(2)[-2:]
    assert "deploy of" in started and "started" in started
    assert "succeeded" in succeeded and sha in succeeded and "http://127.0.0.1:" in succeeded

    CALLS.reset()
    assert deploy(site) == 0
    assert f"commit {sha[:12]} is already live on web" in capsys.readouterr().out
    assert site.revision() == after
    assert CALLS.mutating() == {}, "an already-live commit changes nothing"
    assert len(site.hook.wait_for(3, timeout=0.3)) == 2, "and sends nothing"


def test_a_deploy_waits_while_another_deploy_of_the_stack_holds_the_slot(site: Deployable) -> None:
    """The stack's global concurrency limit: a deploy starts only once the running one lets go."""
    import threading
    import time

    from prefect.concurrency.sync import concurrency

    from flows.deploy_app import slot_name, stack_tag
    from spec import load_stack

    spec = load_stack(site.stack_file)
    results: list[int] = []
    before = latest_run("deploy_app").id
    with concurrency(slot_name(spec), occupy=1, strict=True):
        waiting = threading.Thread(target=lambda: results.append(deploy(site)))
        waiting.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the new run has tagged itself, right before it asks
            run = latest_run("deploy_app")
            if run.id != before and stack_tag(spec) in run.tags:
                break
            time.sleep(0.1)
        waiting.join(1)
        assert waiting.is_alive() and results == [], "the second deploy waits for the slot"
        assert latest_run("deploy_app").state.is_running()
    waiting.join(60)
    assert results == [0], "and runs once the slot is free (here: already live)"


def test_with_cancel_older_a_new_deploy_cancels_the_running_one(site: Deployable) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.deploy_app import DeployRun, deploy_app_flow, stack_tag
    from spec import load_stack

    original = site.stack_file.read_text()
    data = yaml.safe_load(original)
    data["deploy"]["overlap"] = "cancel_older"
    site.stack_file.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        with get_client(sync_client=True) as prefect:
            older = prefect.create_flow_run(deploy_app_flow, parameters={"params": DeployRun().model_dump()},
                                            tags=[stack_tag(load_stack(site.stack_file))], state=Running())
            assert deploy(site) == 0
            state = prefect.read_flow_run(older.id).state
    finally:
        site.stack_file.write_text(original)
    assert state is not None and state.type.value in ("CANCELLING", "CANCELLED")
    assert "a newer deploy of the same stack started" in (state.message or "")


# ---------------------------------------------------------------- (a) through the webhook


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """A Prefect worker wants a second signal; SIGKILL if it still hangs on."""
    for sig, wait in ((signal.SIGINT, 2.0), (signal.SIGINT, 2.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


@pytest.fixture
def worker(site: Deployable, docker_engine: str, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[str, UUID]]:
    """prefect.yaml's deploy-app deployment on a fresh process pool, and a worker polling it (for the
    one test that needs them: the worker stops with it)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"ecsflow-test-{uuid.uuid4().hex[:8]}"
    logs = tmp_path_factory.mktemp("worker")
    with get_client(sync_client=True) as prefect:
        prefect.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = dict(os.environ, ECSFLOW_HOME=str(ROOT), DOCKER_HOST=docker_engine, PREFECT_WORKER_QUERY_SECONDS="1")
    deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "deploy-app",
                               "--pool", pool], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name("deploy_app/deploy-app")
    assert deployment.work_pool_name == pool
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"

    with open(logs / "worker.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                 "--type", "process"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield pool, deployment.id
    finally:
        _stop(proc)
        print((logs / "worker.log").read_text()[-3000:])


@pytest.fixture
def receiver(site: Deployable, worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from prefect.blocks.system import Secret

    block = f"ecsflow-test-e2e-{uuid.uuid4().hex[:8]}"
    Secret(value=SECRET).save(block)
    config = ReceiverConfig(stack_file=str(site.stack_file), repository=REPO, branch="main", secret_block=block,
                            state_file=tmp_path_factory.mktemp("receiver") / "deliveries.sqlite")
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_http(f"{url}/healthz", timeout=30)
        yield f"{url}/github"
    finally:
        server.should_exit = True
        thread.join(10)


def _wait_final(run_id: UUID, timeout: float = 300.0) -> Any:
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:
            run = prefect.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"flow run {run_id} still {run.state and run.state.name}"
            time.sleep(1)


def test_a_signed_push_deploys_through_the_worker_and_a_redelivery_starts_nothing(
        site: Deployable, worker: tuple[str, UUID], receiver: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    _, deployment_id = worker
    sha = site.release("1.1")  # the commit the push announces (v1 is live already)
    before = site.revision()
    sent = len(site.hook.received)
    body, headers = delivery(push_payload(repo=REPO, after=sha))

    answer = httpx.post(receiver, content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    run_id = UUID(answer.json()["flow_run_id"])

    run = _wait_final(run_id)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    assert run.parameters["params"] == {"stack_file": str(site.stack_file), "commit": sha, "ref": "refs/heads/main"}
    after = site.revision()
    assert int(after) == int(before) + 1
    assert site.image_of(after).endswith(f"/{site.prefix}-web:{sha}")
    assert site.registry.digest(f"{site.prefix}-web", sha)
    assert any(sha in text and "succeeded" in text for text in site.messages(sent + 2)[sent:])

    again = httpx.post(receiver, content=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "flow_run_id": str(run_id)}
    time.sleep(2)  # a stray run would be visible by now (the worker polls every second)
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert [r.id for r in runs] == [run_id]
    assert site.revision() == after
    assert json.loads(body)["after"] == sha


# ---------------------------------------------------------------- (b)


def test_b_a_deploy_that_fails_the_probe_is_rolled_back(site: Deployable,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = site.revision()
    recorded = site.recorded()
    sha = site.release("2", broken=True)
    sent = len(site.hook.received)

    assert deploy(site) == 1
    err = capsys.readouterr().err
    assert f"{HEALTH} answered HTTP 500" in err, err
    assert f"rolled back web to {site.prefix}-web:{good} (healthy again)" in err, err
    assert site.revision() == good, "the service is back on the revision it ran"
    assert site.ecs.started[-2:] == [site.ecs.started[-2], site.service()["taskDefinition"]]
    assert site.recorded() == recorded, "a rolled-back image is never recorded as the one to run"
    broken = int(good) + 1
    retired = client("ecs").describe_task_definition(taskDefinition=f"{site.prefix}-web:{broken}", include=["TAGS"])
    assert retired["taskDefinition"]["status"] == "INACTIVE"
    assert {"key": "ecsflow:deploy", "value": "rolled-back"} in retired["tags"]

    run = latest_run("deploy_app")
    assert run.state.is_failed() and "answered HTTP 500" in (run.state.message or "")
    failed = site.messages(sent + 2)[-1]
    assert f"deploy of {sha[:12]} failed" in failed and "rolled back web" in failed and "HTTP 500" in failed
    assert "| verify health (failed) |" in artifact(f"deploy-{site.prefix}")


# ---------------------------------------------------------------- (c)


def test_c_a_migration_that_cannot_run_stops_the_rollout(site: Deployable,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = site.revision()
    site.release("3")
    sent = len(site.hook.received)
    # moto runs every task to exit 0: the migration is made to fail at its start instead.
    site.ecs.fail("RunTask", times=None, kind="access_denied", code="InvalidParameterException", status=400,
                  message="No Container Instances were found in your cluster.")
    try:
        assert deploy(site) == 1
    finally:
        site.ecs.reset_rules()
    err = capsys.readouterr().err
    assert "run migrations: " in err and "InvalidParameterException" in err and "no service was changed" in err
    assert site.revision() == good
    assert site.messages(sent + 2)[-1].count("no service was changed") == 1


# ---------------------------------------------------------------- (d)


def test_d_a_manual_rollback_returns_to_the_last_verified_revision(site: Deployable,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    first = site.revision()
    recorded = site.recorded()
    assert deploy(site, "--no-migrations") == 0
    current = site.revision()
    assert current != first
    capsys.readouterr()

    assert main(["rollback", "--stack", str(site.stack_file)]) == 0
    out = capsys.readouterr().out
    assert f"web: {site.prefix}-web:{current} -> {site.prefix}-web:{first}" in out
    assert site.revision() == first, "back on the last revision a deploy verified (not the rolled-back one)"
    assert site.recorded() == recorded, "the recorded image follows the rollback"
    assert "rollback succeeded" in site.messages(len(site.hook.received))[-1]


# ---------------------------------------------------------------- (e)


def test_e_blue_green_rolls_out_with_an_alternate_target_group_a_test_rule_and_a_role(site: Deployable) -> None:
    """What moto emulates of ECS native blue/green: the resources and the UpdateService request
    (the deploy's own `update service` step, on the running revision; the rest of a deploy is the
    same for both strategies). The traffic shift, test traffic and bake time are not emulated
    (docs/deploy.md)."""
    from spec import load_stack
    from tasks.aws import AwsContext
    from tasks.deploy import read_live, update_service

    data = yaml.safe_load(site.stack_file.read_text())
    data["deploy"].update(services={"web": {"strategy": "blue_green", "bake_time_minutes": 5}},
                          stability_timeout_seconds=600)
    site.stack_file.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_stack(site.stack_file)
    ctx = AwsContext.for_stack(spec)
    live = read_live.fn(spec, ctx, "web")
    update_service.fn(spec, ctx, "web", live.task_definition, desired_now=live.desired_count)

    elb, iam = client("elbv2"), client("iam")
    [primary] = elb.describe_target_groups(Names=[f"{site.prefix}-web"])["TargetGroups"]
    [alternate] = elb.describe_target_groups(Names=[f"{site.prefix}-web-alt"])["TargetGroups"]
    assert (alternate["VpcId"], alternate["HealthCheckPath"], alternate["TargetType"]) == (
        primary["VpcId"], HEALTH, "ip")
    tags = elb.describe_tags(ResourceArns=[alternate["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]
    assert {"Key": "ecsflow:component", "Value": "tg-web-alt"} in tags
    [alb] = elb.describe_load_balancers(Names=[f"{site.prefix}-alb"])["LoadBalancers"]
    https = next(x for x in elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
                 if x["Port"] == 443)
    rules = elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
    test_rule = next(r for r in rules if any(c["Field"] == "http-header" for c in r["Conditions"]))
    header = next(c for c in test_rule["Conditions"] if c["Field"] == "http-header")["HttpHeaderConfig"]
    assert header == {"HttpHeaderName": "X-Ecsflow-Test", "Values": ["*"]}
    assert int(test_rule["Priority"]) < min(int(r["Priority"]) for r in rules
                                            if r is not test_rule and r["Priority"] != "default")
    role = iam.get_role(RoleName=f"{site.prefix}-ecs-infrastructure")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonECSInfrastructureRolePolicyForLoadBalancers"]
    # moto keeps the request's load balancer block as sent: the ECS side of the wiring.
    [attached_lb] = site.service()["loadBalancers"]
    assert attached_lb["targetGroupArn"] == primary["TargetGroupArn"]
    advanced = attached_lb["advancedConfiguration"]
    assert advanced["alternateTargetGroupArn"] == alternate["TargetGroupArn"]
    assert advanced["testListenerRule"] == test_rule["RuleArn"] and advanced["roleArn"] == role["Arn"]
    # All three carry what teardown's inventory looks for: the stack's tags (the role: under its IAM path).
    rule_tags = elb.describe_tags(ResourceArns=[test_rule["RuleArn"]])["TagDescriptions"][0]["Tags"]
    role_tags = iam.list_role_tags(RoleName=role["RoleName"])["Tags"]
    for found in (tags, rule_tags, role_tags):
        assert {"Key": "ecsflow:stack", "Value": site.prefix.rsplit("-", 1)[0]} in found
        assert {"Key": "ecsflow:env", "Value": "dev"} in found
    assert role["Path"] == f"/ecsflow/{site.prefix}/"
    # The next blue/green rollout finds them all: its only change is the rollout itself.
    CALLS.reset()
    update_service.fn(spec, ctx, "web", live.task_definition, desired_now=live.desired_count)
    assert CALLS.mutating() == {"ecs:UpdateService": 1}
    # `up` reconciles the listener rules around the test rule, which belongs to the deploys.
    from tasks import load_balancer

    listener = load_balancer.find_listener(ctx, alb["LoadBalancerArn"], 443)
    groups = {s: load_balancer.find_target_group(ctx, s) for s in spec.services if spec.services[s].load_balanced}
    assert listener and all(groups.values())
    CALLS.reset()
    load_balancer.ensure_rules.fn(spec, ctx, listener, groups)
    assert CALLS.mutating() == {}
    assert test_rule["RuleArn"] in {r["RuleArn"] for r in elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]}


def test_bad_input_exits_2_and_changes_nothing(site: Deployable, capsys: pytest.CaptureFixture[str]) -> None:
    revision = site.revision()
    assert deploy(site, "--services", "nope") == 2
    assert "--services: nope is not a service" in capsys.readouterr().err
    assert deploy(site, "--commit", "not-a-sha") == 2
    assert main(["rollback", "--stack", str(site.stack_file), "--to", "0"]) == 2
    assert site.revision() == revision
    assert os.environ.get("AWS_ENDPOINT_URL") == site.ecs.url


def test_no_secret_value_reaches_prefect_after_the_deploys(site: Deployable, prefect_server: Any) -> None:
    """The registry password (the deploys' one credential given by value) is in no recorded run, log or
    artifact, nor in the server's own log, after every deploy, rollback and failure above."""
    from tests.conftest import _drain_prefect_workers

    _drain_prefect_workers()
    db = Path(prefect_server.db_path)
    blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert f"deploy-{site.prefix}".encode() in blob  # the deploy artifacts are recorded here
    password = site.registry.password
    assert len(password) >= 12
    assert password.encode() not in blob, "the registry password is in Prefect's database"
    assert password not in Path(prefect_server.log_path).read_text(errors="replace")
