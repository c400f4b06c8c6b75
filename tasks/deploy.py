"""Deploying a commit: the steps of the deploy_app flow, each a task, and the rollback.

    tag per service (the commit)  ->  read what runs  ->  nothing to do if the commit is live
    image {service}: check -> build -> smoke test -> push -> scan     (tasks/images.py, side by side)
    register task definition (the stack's definition with the new image)
    migration task of the new revision                                 (tasks/services.py)
    update service  ->  wait until stable  ->  verify health (held for a few checks in a row)
    any failure after an update: every updated service back to its previous revision, wait, verify
    success: record the image on the repository (`ecsflow:image`, what the next `up` runs)

The image is recorded only once the deploy succeeded, so a rolled-back commit never becomes what
`ecsflow up` registers. Strategies (stack file `deploy.services.<name>.strategy`): `rolling`
(ECS rolling update with the circuit breaker and its own rollback) or `blue_green` (ECS native
blue/green: alternate target group, test listener rule, bake time; see tasks/blue_green.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spec import Stack
from tasks import images, services
from tasks.aws import AwsContext, EcsflowError, call, progress, wait_until
from tasks.cluster import cluster_name
from tasks.contract import Observed, aws_task

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{7,64}$")


class DeployError(EcsflowError):
    """The deploy cannot start: the message says what to fix."""


class RolloutFailed(EcsflowError):
    """ECS reports the rollout failed, or it did not settle in time."""


# ---------------------------------------------------------------- what to deploy


def build_context(spec: Stack, service: str, stack_dir: str) -> Path:
    return (Path(stack_dir) / spec.services[service].build.context).resolve()


def deployable(spec: Stack, stack_dir: str, wanted: list[str] | None) -> list[str]:
    """The named services (each must exist), or every service whose build context is here."""
    if wanted:
        unknown = [s for s in wanted if s not in spec.services]
        if unknown:
            raise DeployError(f"services: {', '.join(unknown)} not in the stack file (it has "
                              f"{', '.join(spec.services)})")
        return list(dict.fromkeys(wanted))
    found = [s for s in spec.services if build_context(spec, s, stack_dir).is_dir()]
    if not found:
        raise DeployError(f"no service of {spec.name}-{spec.env} has its build context on this machine "
                          f"(services.*.build.context, relative to the stack file); check out the app first")
    return found


def resolve_tag(spec: Stack, service: str, stack_dir: str, commit: str | None) -> str:
    """The image tag of this deploy: the commit asked for, else the build context's HEAD (or its
    content digest outside git). A git context checked out at another commit is refused: the
    image would carry a commit's name but other bytes."""
    context = build_context(spec, service, stack_dir)
    build = spec.services[service].build
    if commit is not None:
        if not COMMIT_PATTERN.fullmatch(commit):
            raise DeployError(f"commit {commit!r} is not a git commit SHA (7-64 hex digits)")
        head = images._git(context, "rev-parse", "HEAD") if context.is_dir() else None
        if head and not head.startswith(commit) and head != commit:
            raise DeployError(f"service {service}: its build context {context} is checked out at {head[:12]}, not at "
                              f"{commit[:12]}; check that commit out there (git fetch && git checkout {commit[:12]}) "
                              f"and run the deploy again")
        return head if head and head.startswith(commit) else commit
    if not context.is_dir():
        raise DeployError(f"service {service}: its build context {context} does not exist; check out the app or "
                          f"pass the commit to deploy")
    return images.source_revision(context, build.dockerfile, build.args).tag


def image_tag_of(image: str | None) -> str | None:
    """`{registry}/{repository}:{tag}[@digest]` -> tag."""
    if not image:
        return None
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


@dataclass(frozen=True)
class Live:
    """What one service runs before the deploy."""

    service: str
    task_definition: str  # ARN
    image: str | None
    desired_count: int

    @property
    def revision(self) -> str:
        return self.task_definition.rsplit("/", 1)[-1]

    @property
    def tag(self) -> str | None:
        return image_tag_of(self.image)


@aws_task(task_run_name="read live state {service}")
def read_live(spec: Stack, ctx: AwsContext, service: str) -> Live:
    observed = services.find_service(ctx, service)
    if observed is None:
        raise DeployError(f"the ECS service {services.service_name(ctx, service)} does not exist; run `ecsflow up "
                          f"--stack ...` first")
    arn = str(observed.attrs["task_definition"])
    got = call(f"read task definition {arn}", ctx.ecs().describe_task_definition, taskDefinition=arn)
    containers = got["taskDefinition"].get("containerDefinitions") or [{}]
    image = next((c.get("image") for c in containers if c.get("name") == service), containers[0].get("image"))
    return Live(service, arn, image, int(observed.attrs.get("desired_count") or 0))


def with_image_tags(spec: Stack, tags: dict[str, str]) -> Stack:
    """The stack with each deployed service pinned to its new tag: the task definition ecsflow
    registers is the stack's own (settings changed in the file roll out too) with the new image."""
    changed = {name: svc.model_copy(update={"image_tag": tags[name]}) if name in tags else svc
               for name, svc in spec.services.items()}
    return spec.model_copy(update={"services": changed})


# ---------------------------------------------------------------- images


@task(task_run_name="deploy image {service}", cache_policy=NO_CACHE, persist_result=False)
def build_and_push(spec: Stack, ctx: AwsContext, service: str, repository: Observed, stack_dir: str,
                   tag: str) -> images.ImageResult:
    """check -> build -> smoke test -> push -> scan (tasks/images.py), strict: a deploy that cannot
    build fails. Not recorded on the repository yet: that waits for a healthy rollout."""
    plan = images.check_image(spec, ctx, service, repository, stack_dir, tag=tag, strict=True)
    built = None
    if plan.action == "build":
        built = images.build_image(spec, service, plan, stack_dir)
        images.smoke_test_image(spec, service, built)
        pushed = images.push_image(spec, ctx, service, plan, built)
        digest, size = pushed.digest, pushed.size_bytes
    else:
        digest, size = plan.digest, plan.size_bytes
    scan = images.scan_image(spec, ctx, service, plan, digest) if plan.target.has_scanner else \
        f"no scanner ({plan.target.host} is an override registry)"
    return images.ImageResult(service, "pushed" if built else "present", uri=plan.ref, digest=digest,
                              size_bytes=size, build_seconds=built.build_seconds if built else None, scan=scan)


@aws_task(task_run_name="record image {service}")
def record_deployed_image(spec: Stack, ctx: AwsContext, service: str, tag: str, digest: str) -> None:
    from tasks.registry import find_repository

    repo = find_repository(spec, ctx, service)
    if repo is None:
        raise DeployError(f"the repository of {service} vanished during the deploy")
    images.record_image.fn(ctx, service, repo, tag, digest)


@aws_task(task_run_name="record image {service}")
def record_running_image(spec: Stack, ctx: AwsContext, service: str, task_definition: str) -> str | None:
    """After a manual rollback: the repository's `ecsflow:image` names the image the service runs
    again, so the next `ecsflow up` keeps it there."""
    from tasks.registry import find_repository

    got = call(f"read task definition {task_definition}", ctx.ecs().describe_task_definition,
               taskDefinition=task_definition)
    containers = got["taskDefinition"].get("containerDefinitions") or [{}]
    tag = image_tag_of(next((c.get("image") for c in containers if c.get("name") == service),
                            containers[0].get("image")))
    repo = find_repository(spec, ctx, service)
    if not tag or tag == services.NO_IMAGE_TAG or repo is None:
        return None
    target = images.registry_target(spec, repo)
    creds = images.registry_credentials(spec, ctx, target) if target.kind == "override" else None
    found = images.lookup_image(ctx, target, tag, creds)
    if found is None:
        progress(f"{service}: {target.image}:{tag} is no longer in the registry; the recorded image stays as it was")
        return None
    images.record_image.fn(ctx, service, repo, tag, found.digest)
    return images.recorded_value(tag, found.digest)


@aws_task(task_run_name="find repository {service}")
def require_repository(spec: Stack, ctx: AwsContext, service: str) -> Observed:
    return images.require_repository.fn(spec, ctx, service)


# ---------------------------------------------------------------- task definitions


@aws_task(task_run_name="register task definition {service}")
def register_revision(spec: Stack, ctx: AwsContext, service: str, repository: Observed) -> Observed:
    """The stack's task definition with the deployed image (a new revision when it differs).
    Roles and log group must exist (`ecsflow up` makes them); they are looked up, not changed."""
    from tasks import database, iam, logs

    svc = spec.services[service]
    db = database.find_db_instance(spec, ctx) if svc.uses_database_secret else None
    execution = iam.find_role(ctx, services.execution_role(spec, ctx, service, repository.id, []))
    task_role = iam.find_role(ctx, services.task_role(spec, ctx, service))
    group = logs.find_log_group(ctx, services.log_group(spec, service))
    missing = [what for what, found in (("execution role", execution), ("task role", task_role),
                                        ("log group", group)) if found is None]
    if svc.uses_database_secret and db is None:
        missing.append("database")
    if missing or execution is None or task_role is None or group is None:
        raise DeployError(f"service {service} lacks its {', '.join(missing)}; run `ecsflow up --stack ...` first")
    return services.ensure_task_definition.fn(spec, ctx, service, execution_role=execution, task_role=task_role,
                                              log_group=group, repository=repository, database=db)


@aws_task(task_run_name="run migration {service}")
def migrate(spec: Stack, ctx: AwsContext, service: str, task_definition: Observed) -> Observed | None:
    from tasks import network
    from tasks.cluster import find_cluster

    cluster = find_cluster(ctx)
    subnets = [network.find_subnet(ctx, s) for s in network.subnet_specs(spec) if s.tier == "private"]
    group = network.find_security_group(ctx, "sg-ecs")
    if cluster is None or group is None or not all(subnets):
        raise DeployError(f"the migration of {service} needs the cluster, private subnets and sg-ecs; run "
                          f"`ecsflow up --stack ...` first")
    return services.run_migration.fn(spec, ctx, service, cluster=cluster, task_definition=task_definition,
                                     private_subnets=[s for s in subnets if s], security_group=group)


# ---------------------------------------------------------------- rollout


def _desired(spec: Stack, ctx: AwsContext, service: str, current: int) -> int | None:
    """A service that never had an image runs at 0: give it its count now. Else leave the count
    to autoscaling (None: not part of the update)."""
    if current > 0:
        return None
    return services.desired_count(spec, service, True, None)


@aws_task(task_run_name="update service {service}")
def update_service(spec: Stack, ctx: AwsContext, service: str, task_definition: str, *,
                   desired_now: int) -> Observed:
    """Point the service at `task_definition` with its strategy's deployment configuration."""
    from tasks import blue_green

    args: dict[str, Any] = {"cluster": cluster_name(ctx), "service": services.service_name(ctx, service),
                            "taskDefinition": task_definition}
    count = _desired(spec, ctx, service, desired_now)
    if count is not None:
        args["desiredCount"] = count
    args.update(blue_green.deployment_arguments(spec, ctx, service))
    revision = task_definition.rsplit("/", 1)[-1]
    data = call(f"update ECS service {args['service']} to {revision}", ctx.ecs().update_service, **args)["service"]
    progress(f"{service}: rolling out {revision} ({spec.deploy.for_service(service).strategy})")
    return Observed(id=data["serviceArn"], name=data["serviceName"],
                    attrs={"task_definition": data.get("taskDefinition"), "desired_count": data.get("desiredCount")})


def stability_problem(data: dict[str, Any], task_definition: str) -> tuple[bool, str | None]:
    """(stable, failure): stable when the PRIMARY deployment runs `task_definition`, its rollout
    completed, no other deployment is left and every desired task runs; a failure when ECS
    says the rollout failed (the circuit breaker) or moved the service to another revision."""
    deployments = data.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return False, None
    if primary.get("rolloutState") == "FAILED":
        return False, f"ECS reports the rollout failed: {primary.get('rolloutStateReason') or 'no reason given'}"
    if primary.get("taskDefinition") != task_definition:
        if data.get("taskDefinition") != task_definition:
            return False, (f"the service now runs {str(data.get('taskDefinition')).rsplit('/', 1)[-1]} (the circuit "
                           f"breaker rolled it back, or someone else updated it)")
        return False, None
    running = int(primary.get("runningCount") or 0)
    desired = int(primary.get("desiredCount") or data.get("desiredCount") or 0)
    stable = primary.get("rolloutState") in (None, "COMPLETED") and len(deployments) == 1 and running >= desired
    return stable, None


@aws_task(task_run_name="wait until {service} is stable")
def wait_stable(spec: Stack, ctx: AwsContext, service: str, task_definition: str, timeout: float) -> dict[str, Any]:
    ecs = ctx.ecs()
    name = services.service_name(ctx, service)
    failure: list[str] = []

    def settled() -> dict[str, Any] | None:
        got = call(f"read ECS service {name}", ecs.describe_services, cluster=cluster_name(ctx), services=[name])
        data = (got.get("services") or [{}])[0]
        stable, problem = stability_problem(data, task_definition)
        if problem:
            failure.append(problem)
            return {"failed": problem}
        return {"running": data.get("runningCount"), "desired": data.get("desiredCount")} if stable else None

    try:
        facts = wait_until(f"{service} to be stable on {task_definition.rsplit('/', 1)[-1]}", settled,
                           timeout=timeout, poll=ctx.poll_seconds)
    except EcsflowError as exc:
        raise RolloutFailed(f"{service} did not become stable within {timeout:.0f}s (deploy."
                            f"stability_timeout_seconds)") from exc
    if failure:
        raise RolloutFailed(f"{service}: {failure[0]}")
    return facts


@aws_task(task_run_name="verify health {service}")
def verify(spec: Stack, ctx: AwsContext, service: str, timeout: float, hold: int = 3) -> dict[str, Any]:
    """tasks/services.py's checks (rollout, running vs desired, target health, HTTP probe of the
    public URL) passing `hold` times in a row: one lucky answer is not a healthy app."""
    streak = [0]
    last: list[list[str]] = [[]]

    def held() -> dict[str, Any] | None:
        problems, facts = services.health_problems(spec, ctx, service)
        last[0] = problems
        streak[0] = 0 if problems else streak[0] + 1
        return facts if streak[0] >= hold else None

    try:
        return wait_until(f"{service} to serve ({hold} checks in a row)", held, timeout=timeout,
                          poll=max(ctx.poll_seconds, 0.2))
    except EcsflowError as exc:
        reason = "; ".join(last[0]) or "it did not stay healthy"
        raise services.HealthCheckFailed(f"{service} is not healthy: {reason}") from exc


@aws_task(task_run_name="roll back {service} to {revision}")
def roll_back(spec: Stack, ctx: AwsContext, service: str, task_definition: str, revision: str) -> Observed:
    """Point the service at its previous revision again (with the same strategy: a blue/green
    service shifts back through its alternate target group)."""
    from tasks import blue_green

    name = services.service_name(ctx, service)
    args = {"cluster": cluster_name(ctx), "service": name, "taskDefinition": task_definition,
            **blue_green.deployment_arguments(spec, ctx, service)}
    data = call(f"roll {name} back to {revision}", ctx.ecs().update_service, **args)["service"]
    progress(f"{service}: rolled back to {revision}")
    return Observed(id=data["serviceArn"], name=data["serviceName"], attrs={"task_definition": task_definition})


# ---------------------------------------------------------------- the record on each revision

DEPLOYED_TAG = "ecsflow:deploy"  # on a task definition revision: "ok" (verified) or "rolled-back"


@aws_task(task_run_name="mark {service} {verdict}")
def mark_revision(ctx: AwsContext, service: str, task_definition: str, verdict: str) -> None:
    """Remember on the revision whether it passed a deploy: a manual rollback goes back to the
    newest revision that did, never to one that was rolled back."""
    call(f"tag {task_definition.rsplit('/', 1)[-1]} {DEPLOYED_TAG}={verdict}", ctx.ecs().tag_resource,
         resourceArn=task_definition, tags=[{"key": DEPLOYED_TAG, "value": verdict}])


@aws_task(task_run_name="retire {service} {revision}")
def retire_revision(ctx: AwsContext, service: str, task_definition: str, revision: str) -> None:
    """A revision a failed deploy registered: marked rolled-back and deregistered (INACTIVE, still
    readable), so the family's latest active revision is again the one that runs and the next
    `ecsflow up` has nothing to redo."""
    mark_revision.fn(ctx, service, task_definition, "rolled-back")
    call(f"deregister {revision}", ctx.ecs().deregister_task_definition, taskDefinition=task_definition)


def _verdict(ctx: AwsContext, arn: str) -> str | None:
    got = call(f"read the tags of {arn}", ctx.ecs().list_tags_for_resource, resourceArn=arn)
    return {t["key"]: t["value"] for t in got.get("tags", [])}.get(DEPLOYED_TAG)


# ---------------------------------------------------------------- manual rollback


def revisions(ctx: AwsContext, service: str) -> list[str]:
    """The family's ACTIVE revisions, oldest first (ARNs)."""
    ecs = ctx.ecs()
    pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix=services.family(ctx, service),
                                                                status="ACTIVE", sort="ASC")
    arns = [a for page in call(f"list the revisions of {service}", lambda: list(pages))
            for a in page.get("taskDefinitionArns", [])]
    family = services.family(ctx, service)
    return [a for a in arns if a.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family]


@aws_task(task_run_name="choose rollback target {service}")
def rollback_target(spec: Stack, ctx: AwsContext, service: str, to_revision: int | None) -> tuple[str, str]:
    """(current ARN, target ARN): the named revision, else the one before the running one."""
    live = read_live.fn(spec, ctx, service)
    arns = revisions(ctx, service)
    number = int(live.revision.rsplit(":", 1)[-1])
    if to_revision is not None:
        target = next((a for a in arns if a.endswith(f":{to_revision}")), None)
        if target is None:
            shown = ", ".join(a.rsplit(":", 1)[-1] for a in arns)
            raise DeployError(f"{service}: revision {to_revision} is not an active revision of "
                              f"{services.family(ctx, service)} (active: {shown})")
    else:
        older = [a for a in arns if int(a.rsplit(":", 1)[-1]) < number]
        verdicts = {a: _verdict(ctx, a) for a in older}
        good = [a for a in older if verdicts[a] == "ok"]
        # Revisions a deploy rolled back are skipped; without any record, the one before.
        candidates = good or [a for a in older if verdicts[a] != "rolled-back"]
        if not candidates:
            raise DeployError(f"{service} runs {live.revision}, and there is no earlier revision to roll back to "
                              f"(none active that was not rolled back); name one with --to")
        target = candidates[-1]
    return live.task_definition, target


# ---------------------------------------------------------------- report


@dataclass
class StepClock:
    """Seconds per step, for the artifact."""

    steps: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self._started, 2)
        self._started = now

    @property
    def total(self) -> float:
        return round(sum(self.steps.values()), 2)


def markdown_report(title: str, *, commit: str, rows: list[dict[str, str]], clock: StepClock,
                    outcome: str) -> str:
    head = ["service", "image", "digest", "revision before", "revision after", "health"]
    lines = [f"# {title}", "", f"- commit: `{commit}`", f"- outcome: {outcome}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r.get(h, "")).replace("|", "\\|").replace("\n", " ") for h in head) + " |"
              for r in rows]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.2f} |" for step, seconds in clock.steps.items()]
    lines.append(f"| total | {clock.total:.2f} |")
    return "\n".join(lines)
