"""ECR: one private repository per service, and the registry-level scanning rule.

Repositories are named `{stack}-{env}-{service}` (unique, so found by name), made
with immutable tags, scan on push, KMS encryption with the stack's "ecr" key and
our tags in CreateRepository itself, then given a lifecycle policy (expire untagged
images, keep the last N tagged releases). Drift in mutability, scanning, lifecycle
or tags is repaired in place; encryption cannot change after creation.

The registry scanning configuration is one per account and region, shared with
every other stack and with whoever else uses the registry, and has no tags. So we
never own it: ensure adds our `{stack}-{env}-*` filter to the SCAN_ON_PUSH rule and
keeps everything else as found (an ENHANCED registry stays ENHANCED); teardown
removes only our filter. Put is read-modify-write of the whole configuration, so
two stacks changing it in the same second can lose one update; the next `up`
repairs it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import Task

from spec import Stack
from tasks import kms
from tasks.aws import AwsContext, NotOurs, call, call_or_none, tags_of
from tasks.contract import Change, Observed, aws_task, current_of, plan_foreign, plan_from, refuse_replace, require_ours

if TYPE_CHECKING:
    from mypy_boto3_ecr.type_defs import RepositoryTypeDef, TagTypeDef

P = ParamSpec("P")
R = TypeVar("R")

RESOURCE = "ecr-repository"
SCANNING_RESOURCE = "ecr-registry-scanning"
NAME_LIMIT = 256  # ECR repository names
IMMUTABLE_FIELDS = ("name", "encryption")


def _aws_task(run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`aws_task` (transient-only retries, no cache) with a readable task run name."""

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        return aws_task(fn).with_options(task_run_name=run_name)

    return wrap


# ---------------------------------------------------------------- wanted state


def repository_name(ctx: AwsContext, service: str) -> str:
    return ctx.name(service, limit=NAME_LIMIT)


def component(service: str) -> str:
    return f"ecr-{service}"


def lifecycle_policy(spec: Stack) -> dict[str, Any]:
    """Rule 1 expires untagged images; rule 2 keeps the last N tagged releases."""
    reg = spec.registry
    return {"rules": [
        {
            "rulePriority": 1,
            "description": f"Expire untagged images after {reg.untagged_expiry_days} "
                           f"day{'' if reg.untagged_expiry_days == 1 else 's'}",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                          "countUnit": "days", "countNumber": reg.untagged_expiry_days},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"Keep the last {reg.keep_releases} releases",
            "selection": {"tagStatus": "tagged", "tagPatternList": ["*"],
                          "countType": "imageCountMoreThan", "countNumber": reg.keep_releases},
            "action": {"type": "expire"},
        },
    ]}


def _encryption(kms_key_arn: str) -> dict[str, str]:
    return {"encryptionType": "KMS", "kmsKey": kms_key_arn}


def key_arn(kms_key: str | Observed) -> str:
    """The "ecr" key's ARN, given the ARN or what `kms.ensure_key`/`kms.find_key` returned."""
    return kms_key.id if isinstance(kms_key, Observed) else kms_key


def _wanted(spec: Stack, ctx: AwsContext, service: str, kms_key_arn: str | Observed) -> dict[str, Any]:
    return {
        "name": repository_name(ctx, service),
        "image_tag_mutability": "IMMUTABLE",
        "scan_on_push": spec.registry.scan_on_push,
        "lifecycle_policy": lifecycle_policy(spec),
        "encryption": _encryption(key_arn(kms_key_arn)),
        "tags": ctx.tag_dict(component(service)),
    }


# ---------------------------------------------------------------- reading


def _observe(repo: RepositoryTypeDef, tags: dict[str, str], lifecycle: dict[str, Any] | None) -> Observed:
    enc = repo.get("encryptionConfiguration") or {"encryptionType": "AES256"}
    encryption: dict[str, Any] = {"encryptionType": enc.get("encryptionType")}
    if enc.get("kmsKey"):
        encryption["kmsKey"] = enc.get("kmsKey")
    return Observed(
        id=repo.get("repositoryArn", ""),
        name=repo.get("repositoryName", ""),
        tags=tags,
        attrs={
            "name": repo.get("repositoryName"),
            "image_tag_mutability": repo.get("imageTagMutability"),
            "scan_on_push": bool(repo.get("imageScanningConfiguration", {}).get("scanOnPush", False)),
            "lifecycle_policy": lifecycle,
            "encryption": encryption,
            "uri": repo.get("repositoryUri"),
            "registry_id": repo.get("registryId"),
        },
    )


def _read_tags(ctx: AwsContext, arn: str) -> dict[str, str]:
    resp = call(f"read the tags of {arn}", ctx.ecr().list_tags_for_resource, resourceArn=arn)
    return {t["Key"]: t["Value"] for t in resp.get("tags", [])}


def _read_lifecycle(ctx: AwsContext, name: str) -> dict[str, Any] | None:
    resp = call_or_none(f"read the lifecycle policy of repository {name}", ctx.ecr().get_lifecycle_policy,
                        repositoryName=name)
    if resp is None or not resp.get("lifecyclePolicyText"):
        return None
    policy: dict[str, Any] = json.loads(resp["lifecyclePolicyText"])
    return policy


def _observe_full(ctx: AwsContext, repo: RepositoryTypeDef, tags: dict[str, str] | None = None) -> Observed:
    name = repo.get("repositoryName", "")
    if tags is None:
        tags = _read_tags(ctx, repo.get("repositoryArn", ""))
    return _observe(repo, tags, _read_lifecycle(ctx, name))


def find_repository(spec: Stack, ctx: AwsContext, service: str, *, fresh_tags: bool = False) -> Observed | None:
    """The service's repository, by its unique name (whoever made it), or None. Its tags come from the
    flow run's tag index when it holds them; `fresh_tags` reads them from ECR, for callers that use the
    recorded image (`ecsflow:image`), which a lagging index could show as it was."""
    name = repository_name(ctx, service)
    resp = call_or_none(f"look up repository {name}", ctx.ecr().describe_repositories, repositoryNames=[name])
    repos = resp.get("repositories", []) if resp else []
    if not repos:
        return None
    arn = repos[0].get("repositoryArn", "")
    tags = _read_tags(ctx, arn) if fresh_tags else tags_of(ctx, arn, lambda: _read_tags(ctx, arn))
    return _observe_full(ctx, repos[0], tags)


def inventory_repositories(ctx: AwsContext) -> list[Observed]:
    """Every repository carrying our ecsflow:stack and ecsflow:env tags (names start with our prefix)."""
    prefix = f"{ctx.prefix}-"
    pages = ctx.ecr().get_paginator("describe_repositories").paginate()
    found = []
    for page in call(f"list the repositories of {ctx.prefix}", lambda: list(pages)):
        for repo in page.get("repositories", []):
            if not repo.get("repositoryName", "").startswith(prefix):
                continue
            tags = _read_tags(ctx, repo.get("repositoryArn", ""))
            if ctx.owns(tags):
                found.append(_observe_full(ctx, repo, tags))
    return sorted(found, key=lambda o: o.name)


# ---------------------------------------------------------------- plan


def plan_repository(spec: Stack, ctx: AwsContext, service: str, observed: Observed | None,
                    kms_key_arn: str | Observed) -> Change:
    """Read-only: what `ensure_repository` would do. Encryption and name are immutable."""
    name = repository_name(ctx, service)
    if observed is None:
        return Change(RESOURCE, name, "create")
    if not ctx.owns(observed.tags):
        return plan_foreign(ctx, RESOURCE, name, f"repository {name} exists", "Delete it or rename the stack.")
    wanted = _wanted(spec, ctx, service, kms_key_arn)
    current = current_of(observed, wanted)
    return plan_from(RESOURCE, name, observed, wanted, current=current, immutable=IMMUTABLE_FIELDS)


# ---------------------------------------------------------------- ensure / delete


def _ecr_tags(ctx: AwsContext, service: str) -> list[TagTypeDef]:
    return [{"Key": t["Key"], "Value": t["Value"]} for t in ctx.tags(component(service))]


@_aws_task("ensure repository {service}")
def ensure_repository(spec: Stack, ctx: AwsContext, service: str, kms_key_arn: str | Observed) -> Observed:
    """Find or create the service's repository and repair drift, touching only fields that differ."""
    ecr = ctx.ecr()
    name = repository_name(ctx, service)
    observed = find_repository(spec, ctx, service)
    if observed is None:
        resp = call(f"create repository {name}", ecr.create_repository,
                    repositoryName=name,
                    tags=_ecr_tags(ctx, service),
                    imageTagMutability="IMMUTABLE",
                    imageScanningConfiguration={"scanOnPush": spec.registry.scan_on_push},
                    encryptionConfiguration=_encryption(key_arn(kms_key_arn)))
        # What CreateRepository answered plus the tags we sent; the lifecycle policy comes next.
        observed = _observe(resp["repository"], ctx.tag_dict(component(service)), None)
    change = plan_repository(spec, ctx, service, observed, kms_key_arn)
    if change.action == "replace" and not ctx.owns(observed.tags):
        raise NotOurs(change.note)
    refuse_replace(change)
    wanted = {d.field: d.wanted for d in change.diffs}
    doing = f"reconcile repository {name}"
    if "image_tag_mutability" in wanted:
        call(doing, ecr.put_image_tag_mutability, repositoryName=name,
             imageTagMutability=wanted["image_tag_mutability"])
    if "scan_on_push" in wanted:
        call(doing, ecr.put_image_scanning_configuration, repositoryName=name,
             imageScanningConfiguration={"scanOnPush": wanted["scan_on_push"]})
    if "lifecycle_policy" in wanted:
        call(doing, ecr.put_lifecycle_policy, repositoryName=name,
             lifecyclePolicyText=json.dumps(wanted["lifecycle_policy"]))
    if "tags" in wanted:
        call(doing, ecr.tag_resource, resourceArn=observed.id, tags=_ecr_tags(ctx, service))
        observed.tags.update(wanted["tags"])
    observed.attrs.update({k: v for k, v in wanted.items() if k != "tags"})
    return observed


@_aws_task("delete repository {observed.name}")
def delete_repository(observed: Observed, ctx: AwsContext) -> None:
    """Delete the repository and its images. Refuses one without our tags; missing is success."""
    require_ours(ctx, observed.tags, f"repository {observed.name}")
    call_or_none(f"delete repository {observed.name}", ctx.ecr().delete_repository,
                 repositoryName=observed.name, force=True)


def plan_registry(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Plan the whole family: every service's repository, then the registry scanning rule.
    The "ecr" key is looked up; without it a new key will be made, so an existing
    repository (encrypted with another key) would need replacing."""
    key = kms.find_key(ctx, "ecr")
    changes = []
    for service in spec.services:
        observed = find_repository(spec, ctx, service)
        if key is None and observed is not None:
            changes.append(Change(RESOURCE, observed.name, "replace",
                                  note=f"its KMS key {kms.alias_name(ctx, 'ecr')} is missing; "
                                       f"a repository's encryption key cannot change"))
        else:
            changes.append(plan_repository(spec, ctx, service, observed, key.id if key else ""))
    changes.append(plan_registry_scanning(spec, ctx, find_registry_scanning(ctx)))
    return changes


# ---------------------------------------------------------------- registry scanning


def scan_filter(ctx: AwsContext) -> dict[str, str]:
    return {"filter": f"{ctx.prefix}-*", "filterType": "WILDCARD"}


def _covers(rules: list[dict[str, Any]], pattern: str) -> bool:
    """Does a scan-on-push (or continuous) rule already match every name our pattern matches?"""
    return any(
        rule.get("scanFrequency") in ("SCAN_ON_PUSH", "CONTINUOUS_SCAN")
        and any(f.get("filterType", "WILDCARD") == "WILDCARD" and fnmatchcase(pattern, f.get("filter", ""))
                for f in rule.get("repositoryFilters", []))
        for rule in rules
    )


def _with_filter(rules: list[dict[str, Any]], ours: dict[str, str]) -> list[dict[str, Any]]:
    if _covers(rules, ours["filter"]):
        return rules
    rules = copy.deepcopy(rules)
    for rule in rules:
        if rule.get("scanFrequency") == "SCAN_ON_PUSH":
            rule["repositoryFilters"] = [*rule.get("repositoryFilters", []), ours]
            return rules
    return [*rules, {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [ours]}]


def _without_filter(rules: list[dict[str, Any]], ours: dict[str, str]) -> list[dict[str, Any]]:
    kept = []
    for rule in rules:
        filters = [f for f in rule.get("repositoryFilters", []) if f != ours]
        if filters:
            kept.append({**rule, "repositoryFilters": filters})
        elif not rule.get("repositoryFilters"):
            kept.append(rule)  # not ours: a rule that had no filters before we looked
    return kept


def find_registry_scanning(ctx: AwsContext) -> Observed | None:
    """The registry's scanning configuration (AWS always has one; BASIC with no rules by default)."""
    resp = call_or_none("read the ECR registry scanning configuration",
                        ctx.ecr().get_registry_scanning_configuration)
    if resp is None:
        return None
    conf = resp.get("scanningConfiguration", {})
    rules: list[dict[str, Any]] = [
        {"scanFrequency": r["scanFrequency"],
         "repositoryFilters": [{"filter": f["filter"], "filterType": f["filterType"]}
                               for f in r.get("repositoryFilters", [])]}
        for r in conf.get("rules", [])
    ]
    return Observed(id=resp.get("registryId", ""), name="registry-scanning",
                    attrs={"scan_type": conf.get("scanType", "BASIC"), "rules": rules})


def _scanning_wanted(spec: Stack, ctx: AwsContext, observed: Observed) -> dict[str, Any]:
    scan_type = observed.attrs.get("scan_type") or "BASIC"
    rules: list[dict[str, Any]] = observed.attrs.get("rules", [])
    ours = scan_filter(ctx)
    wanted_rules = _with_filter(rules, ours) if spec.registry.scan_on_push else _without_filter(rules, ours)
    # ENHANCED (Amazon Inspector) is a superset someone chose for the whole registry: keep it.
    return {"scan_type": "ENHANCED" if scan_type == "ENHANCED" else "BASIC", "rules": wanted_rules}


def plan_registry_scanning(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    """Read-only: does the registry's scan-on-push rule cover `{stack}-{env}-*` (when scan_on_push)?"""
    if observed is None:
        return Change(SCANNING_RESOURCE, scan_filter(ctx)["filter"], "create")
    wanted = _scanning_wanted(spec, ctx, observed)
    return plan_from(SCANNING_RESOURCE, scan_filter(ctx)["filter"], observed, wanted)


def _put_scanning(ctx: AwsContext, scan_type: str, rules: list[dict[str, Any]]) -> None:
    call("update the ECR registry scanning configuration", ctx.ecr().put_registry_scanning_configuration,
         scanType=scan_type, rules=rules)


@_aws_task("ensure registry scanning")
def ensure_registry_scanning(spec: Stack, ctx: AwsContext) -> Observed:
    """Add our filter to the registry's scan-on-push rule, keeping every other rule as found."""
    observed = find_registry_scanning(ctx) or Observed(id="", name="registry-scanning",
                                                       attrs={"scan_type": "BASIC", "rules": []})
    change = plan_registry_scanning(spec, ctx, observed)
    if change.action == "no-op":
        return observed
    wanted = _scanning_wanted(spec, ctx, observed)
    _put_scanning(ctx, wanted["scan_type"], wanted["rules"])
    observed.attrs.update(wanted)
    return observed


@_aws_task("delete registry scanning filter")
def delete_registry_scanning(ctx: AwsContext) -> None:
    """Remove only our `{stack}-{env}-*` filter; the configuration itself is the registry's, not ours."""
    observed = find_registry_scanning(ctx)
    if observed is None:
        return
    rules: list[dict[str, Any]] = observed.attrs["rules"]
    kept = _without_filter(rules, scan_filter(ctx))
    if kept != rules:
        _put_scanning(ctx, observed.attrs["scan_type"], kept)
