"""The one place that talks to boto3: clients, errors, retries, waits.

Clients honour the standard AWS environment (AWS_ENDPOINT_URL and its per-service
variants, AWS_REGION, AWS_PROFILE...) or a prefect-aws AwsCredentials block named
in the stack file. botocore's adaptive retry mode absorbs short throttling; what is
still transient after that is retried by Prefect through `retry_transient`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from botocore.parsers import ResponseParserError

from spec import Stack

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_sts import STSClient

T = TypeVar("T")

TAG_STACK = "ecsflow:stack"
TAG_ENV = "ecsflow:env"
TAG_COMPONENT = "ecsflow:component"


# ---------------------------------------------------------------- errors


class EcsflowError(Exception):
    """Something went wrong; the message says what to do about it."""


class TransientAwsError(EcsflowError):
    """Worth retrying: throttling, a 5xx, or eventual consistency."""


class PermissionDenied(EcsflowError):
    """The credentials lack a permission. Retrying will not help."""


class AwsRequestError(EcsflowError):
    """AWS refused the request (validation, conflict, limit). Retrying will not help."""


class NotOurs(EcsflowError):
    """A delete was asked of a resource that does not carry our stack tag."""


class WaitTimeout(EcsflowError):
    """A resource did not reach the wanted state in time."""


TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalServerError", "ServerException", "PriorRequestNotComplete",
    # Eventual consistency: a just-created role or a just-deleted dependant.
    "DependencyViolation", "InvalidParameterValue.IamRoleNotReady", "InvalidDBInstanceState",
    "InvalidDBSubnetGroupStateFault", "InvalidDBParameterGroupState", "IncorrectState",
    # Teardown: a listener, service or task still lets go of what is deleted next.
    "ResourceInUse", "ResourceInUseException", "ClusterContainsServicesException", "ClusterContainsTasksException",
}
PERMISSION_CODES = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "SignatureDoesNotMatch", "OptInRequired",
}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return "NotFound" in code or code in {
        "NoSuchEntity", "ResourceNotFoundException", "RepositoryNotFoundException",
        "DBInstanceNotFound", "DBSubnetGroupNotFoundFault", "DBParameterGroupNotFound",
        "InvalidAllocationID.NotFound", "NotFoundException",
        "NoSuchBucket", "NoSuchBucketPolicy", "NoSuchTagSet", "NoSuchLifecycleConfiguration",
        "NoSuchPublicAccessBlockConfiguration",
    }


def translate(exc: BaseException, doing: str) -> EcsflowError:
    """Turn a boto error into one of ours, with a message that says what to do."""
    if isinstance(exc, EcsflowError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = exc.response.get("Error", {}).get("Message", "")
        op = exc.operation_name
        if code in PERMISSION_CODES:
            return PermissionDenied(
                f"{doing}: AWS denied {op} ({code}: {message}). Grant the runner's credentials this action "
                f"(see docs/aws.md for the policy ecsflow needs) or pick another credentials block."
            )
        if code in TRANSIENT_CODES or status >= 500:
            return TransientAwsError(f"{doing}: {op} failed transiently ({code or status}: {message}); retrying")
        return AwsRequestError(f"{doing}: AWS rejected {op} ({code}: {message})")
    if isinstance(exc, NoCredentialsError):
        return PermissionDenied(
            f"{doing}: no AWS credentials found. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"or name an AwsCredentials block in the stack file (aws.credentials_block)."
        )
    if isinstance(exc, ResponseParserError):  # e.g. a 5xx with an HTML body from a proxy or an overloaded endpoint
        return TransientAwsError(f"{doing}: AWS answered with a response that cannot be read; retrying ({exc})")
    if isinstance(exc, EndpointConnectionError):
        return TransientAwsError(f"{doing}: cannot reach {exc.kwargs.get('endpoint_url')}; retrying")
    if isinstance(exc, BotoCoreError):
        return TransientAwsError(f"{doing}: {exc}")
    return EcsflowError(f"{doing}: {exc}")


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only what may pass by itself."""
    try:
        state.result()
    except TransientAwsError:
        return True
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        # A raw boto error that escaped a read helper (not wrapped by `call`): judged the same way,
        # e.g. a 5xx whose HTML body botocore cannot parse (ResponseParserError).
        return isinstance(translate(exc, "retry check"), TransientAwsError)
    except Exception:
        return False
    return False


def retry_delays() -> list[float]:
    """Exponential backoff for Prefect task retries; ECSFLOW_RETRY_BASE_SECONDS scales it."""
    base = float(os.environ.get("ECSFLOW_RETRY_BASE_SECONDS", "5"))
    return [base * 2**i for i in range(4)]


# ---------------------------------------------------------------- call accounting


class CallLog:
    """Counts every AWS API call ecsflow makes, in-process, and optionally appends them to
    the file named by ECSFLOW_CALL_LOG (one `service operation` per line)."""

    READ_PREFIXES = ("Describe", "List", "Get", "Lookup", "Search", "BatchGet", "Head")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def record(self, service: str, operation: str) -> None:
        with self._lock:
            self.calls[f"{service}:{operation}"] += 1
            path = os.environ.get("ECSFLOW_CALL_LOG")
            if path:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(f"{service} {operation}\n")

    @classmethod
    def is_mutating(cls, call: str) -> bool:
        return not call.split(":", 1)[1].startswith(cls.READ_PREFIXES)

    def mutating(self) -> Counter[str]:
        with self._lock:
            return Counter({k: v for k, v in self.calls.items() if self.is_mutating(k)})

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


CALLS = CallLog()


# ---------------------------------------------------------------- context and clients

# Clients are thread-safe, sessions are not: build under a lock, share across task threads.
# (Module-level, so pickled by reference when Prefect ships flow code.)
_LOCKS_LOCK = threading.Lock()
_LOCKS: dict[Any, threading.Lock] = {}
_CLIENTS: dict[Any, Any] = {}
_ACCOUNTS: dict[Any, str] = {}


def _lock_for(key: Any) -> threading.Lock:
    """One lock per client (or account) key: threads building different clients do not wait
    for each other, threads wanting the same one build it once."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class AwsContext:
    """Where and as whom to call AWS, plus the stack's identity for names and tags."""

    stack: str
    env: str
    region: str
    credentials_block: str | None = None
    extra_tags: tuple[tuple[str, str], ...] = ()
    poll_seconds: float = field(default_factory=lambda: float(os.environ.get("ECSFLOW_POLL_SECONDS", "10")))

    @classmethod
    def for_stack(cls, stack: Stack) -> AwsContext:
        region = stack.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            region = boto3.session.Session().region_name
        if not region:
            raise EcsflowError("no AWS region: set `region:` in the stack file or AWS_REGION")
        return cls(stack=stack.name, env=stack.env, region=region,
                   credentials_block=stack.aws.credentials_block,
                   extra_tags=tuple(sorted(stack.tags.items())))

    # names and tags -----------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{self.stack}-{self.env}"

    def name(self, component: str, limit: int = 255) -> str:
        return fit_name(f"{self.prefix}-{component}", limit)

    def tag_dict(self, component: str) -> dict[str, str]:
        tags = dict(self.extra_tags)
        tags.update({TAG_STACK: self.stack, TAG_ENV: self.env, TAG_COMPONENT: component})
        return tags

    def tags(self, component: str, *, name: str | None = None) -> list[dict[str, str]]:
        """AWS's usual [{"Key":..., "Value":...}] form; EC2 also gets a Name tag."""
        items = self.tag_dict(component)
        if name:
            items["Name"] = name
        return [{"Key": k, "Value": v} for k, v in sorted(items.items())]

    def owns(self, tags: dict[str, str]) -> bool:
        return tags.get(TAG_STACK) == self.stack and tags.get(TAG_ENV) == self.env

    def ec2_filters(self, component: str | None = None) -> list[Any]:
        filters = [{"Name": f"tag:{TAG_STACK}", "Values": [self.stack]},
                   {"Name": f"tag:{TAG_ENV}", "Values": [self.env]}]
        if component:
            filters.append({"Name": f"tag:{TAG_COMPONENT}", "Values": [component]})
        return filters

    def token(self, *parts: str) -> str:
        """A deterministic client token: the same request after a crash is not made twice."""
        return fit_name("-".join(("ecsflow", self.prefix, *parts)), 64)

    # clients ------------------------------------------------------------------

    def _session(self) -> boto3.session.Session:
        """A session of its own for each client: sessions are not thread-safe, so clients built
        side by side must not share one."""
        if self.credentials_block:
            from prefect_aws import AwsCredentials

            creds = AwsCredentials.load(self.credentials_block, _sync=True)
            return creds.get_boto3_session()
        return boto3.session.Session(region_name=self.region)

    def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.region
        key = (service, region, self.credentials_block, os.environ.get("AWS_ENDPOINT_URL"))
        client = _CLIENTS.get(key)
        if client is not None:
            return client
        with _lock_for(key):
            return self._new_client(key, service, region)

    def _new_client(self, key: Any, service: str, region: str) -> Any:
        cache = _CLIENTS
        if key not in cache:
            config = Config(retries={"mode": "adaptive", "max_attempts": 8},
                            connect_timeout=10, read_timeout=60, user_agent_extra="ecsflow")
            client = self._session().client(service, region_name=region, config=config)  # type: ignore[call-overload]
            client.meta.events.register(
                "before-call", lambda model, **_: CALLS.record(service, model.name)
            )
            client.meta.events.register("before-parameter-build", _note_mutation)
            cache[key] = client
        return cache[key]

    def ec2(self) -> EC2Client:
        return self.client("ec2")

    def rds(self) -> RDSClient:
        return self.client("rds")

    def ecr(self) -> ECRClient:
        return self.client("ecr")

    def kms(self) -> KMSClient:
        return self.client("kms")

    def logs(self) -> CloudWatchLogsClient:
        return self.client("logs")

    def iam(self) -> IAMClient:
        return self.client("iam")

    def sts(self) -> STSClient:
        return self.client("sts")

    # No boto3 stubs for these in the dev group: typed as Any.
    def ecs(self) -> Any:
        return self.client("ecs")

    def elbv2(self) -> Any:
        return self.client("elbv2")

    def acm(self) -> Any:
        return self.client("acm")

    def s3(self) -> Any:
        return self.client("s3")

    def autoscaling(self) -> Any:
        return self.client("application-autoscaling")

    def account_id(self) -> str:
        cache = _ACCOUNTS
        key = (self.region, self.credentials_block, os.environ.get("AWS_ENDPOINT_URL"))
        if key not in cache:
            with _lock_for(("account", *key)):
                if key not in cache:
                    cache[key] = call(f"identify the AWS account for {self.prefix}",
                                      self.sts().get_caller_identity)["Account"]
        return cache[key]


def fit_name(name: str, limit: int) -> str:
    """Cut a name to an AWS length limit deterministically: a stable hash keeps cut names unique."""
    if len(name) <= limit:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"


def call(doing: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Call one AWS operation, translating failures into our errors."""
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        raise translate(exc, doing) from exc


def call_or_none(doing: str, fn: Callable[..., T], /, **kwargs: Any) -> T | None:
    """Like `call`, but a NotFound answer is None (the resource is gone, which is fine)."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, doing) from exc
    except BotoCoreError as exc:
        raise translate(exc, doing) from exc


def wait_until(what: str, check: Callable[[], T | None], *, timeout: float, poll: float) -> T:
    """Poll `check` until it returns something truthy; check first, then sleep (so an
    already-converged resource costs one call)."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        result = check()
        if result:
            return result
        if not said:
            progress(f"waiting for {what} (up to {timeout / 60:.0f} min)")
            said = True
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; check it in the AWS console "
                              f"and run the command again to resume")
        time.sleep(min(poll * (0.8 + 0.4 * random.random()), max(deadline - time.monotonic(), 0.05)))


def progress(message: str) -> None:
    """Say what a run is doing: into the Prefect run's log (and console) inside a run, else stderr's logger."""
    import logging

    try:
        from prefect import get_run_logger

        get_run_logger().info(message)
    except Exception:
        logging.getLogger("ecsflow").info(message)


def tag_map(tags: list[Any] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


# ---------------------------------------------------------------- the flow run's tag index

# One paginated `tag:GetResources` pass over the stack's tags stands in for a tag read per resource.
# It is a POSITIVE hint only: an ARN it holds gets its tags from it; an ARN it lacks falls back to the
# family's own read, so find-by-tag stays right where the tagging API is behind or blind:
#   - a resource made after the pass, or one AWS's tagging API has not caught up with (eventually
#     consistent) is simply not in it;
#   - IAM (roles) is not covered by the tagging API at all; ECR, CloudWatch alarms, log groups, SNS,
#     KMS, RDS, ECS, ELBv2 are on AWS.
#   - moto 5.2.5 (moto/resourcegroupstaggingapi + each backend's iter_tagged_resources) covers KMS
#     keys, log groups, CloudWatch alarms, SNS topics, ECS services/clusters/task definitions, ELBv2
#     load balancers and target groups, RDS instances/clusters/snapshots (not subnet or parameter
#     groups), S3 buckets, secrets, SSM parameters, ACM, CloudFront and most EC2 types; not ECR
#     repositories (their reads fall back here, where AWS would answer from the index).
# Any mutating call of the flow run that names a resource (by ARN, id or name) takes that resource
# out of the index for the rest of the run: what the run itself changed is read fresh.
# Tags that carry state rather than identity (the recorded image, a revision's deploy verdict) are
# read per resource, never from here: a lagging index could undo a deploy.

_TAG_RUNS_LOCK = threading.Lock()
_TAG_RUNS: dict[str, _RunTags] = {}
_TAG_RUNS_KEPT = 16  # a serving process runs many flows: keep the newest few


class _RunTags:
    """One flow run's tag indexes (by stack, env, region, credentials, endpoint) and the resources
    its mutating calls named."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indexes: dict[tuple[Any, ...], TagIndex] = {}
        self.touched: set[str] = set()

    def is_touched(self, arn: str) -> bool:
        with self.lock:
            return any(arn == t or arn.endswith((f"/{t}", f":{t}")) for t in self.touched)


class TagIndex:
    """Tags by ARN of every resource carrying the stack's `ecsflow:stack` and `ecsflow:env` tags,
    read with one paginated GetResources pass when first asked."""

    # ResourcesPerPage's maximum. (moto 5.2.5 also cuts a page at 100 tags, its TagsPerPage default, so
    # there a page holds ~20 of our resources.)
    PAGE_SIZE = 100

    def __init__(self, ctx: AwsContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._tags: dict[str, dict[str, str]] | None = None

    def _fill(self) -> dict[str, dict[str, str]]:
        with self._lock:
            if self._tags is None:
                ctx = self._ctx
                tagging = ctx.client("resourcegroupstaggingapi")
                pages = tagging.get_paginator("get_resources").paginate(
                    TagFilters=[{"Key": TAG_STACK, "Values": [ctx.stack]}, {"Key": TAG_ENV, "Values": [ctx.env]}],
                    PaginationConfig={"PageSize": self.PAGE_SIZE})  # ResourcesPerPage
                found: dict[str, dict[str, str]] = {}
                try:
                    for page in call(f"read the tags of {ctx.prefix}'s resources", lambda: list(pages)):
                        for item in page.get("ResourceTagMappingList", []):
                            found[item["ResourceARN"]] = tag_map(item.get("Tags"))
                except EcsflowError as exc:
                    # Only a shortcut: without it every family reads its own tags, as before.
                    progress(f"{exc}; reading each resource's tags instead (grant tag:GetResources to save calls)")
                    found = {}
                self._tags = found
            return self._tags

    def get(self, arn: str) -> dict[str, str] | None:
        tags = self._fill().get(arn)
        return dict(tags) if tags is not None else None

    def __len__(self) -> int:
        return len(self._fill())


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:
        return None
    return str(run_id) if run_id else None


def _current_run() -> _RunTags | None:
    """The tag state of the flow run this thread works for (its tasks' threads share it), or None."""
    run_id = _flow_run_id()
    if run_id is None:
        return None
    with _TAG_RUNS_LOCK:
        run = _TAG_RUNS.pop(run_id, None) or _RunTags()
        _TAG_RUNS[run_id] = run  # newest last
        while len(_TAG_RUNS) > _TAG_RUNS_KEPT:
            del _TAG_RUNS[next(iter(_TAG_RUNS))]
        return run


def _index_of(run: _RunTags, ctx: AwsContext) -> TagIndex:
    key = (ctx.stack, ctx.env, ctx.region, ctx.credentials_block, os.environ.get("AWS_ENDPOINT_URL"))
    with run.lock:
        return run.indexes.setdefault(key, TagIndex(ctx))


def tag_index(ctx: AwsContext) -> TagIndex | None:
    """This flow run's tag index for the context's stack, or None outside a flow run."""
    run = _current_run()
    return _index_of(run, ctx) if run is not None else None


def indexed_tags(ctx: AwsContext, arn: str) -> dict[str, str] | None:
    """The resource's tags from the flow run's index, or None: not in a flow run, not in the index,
    or changed by this run (then read the resource itself)."""
    run = _current_run()
    if run is None or not arn or run.is_touched(arn):
        return None
    return _index_of(run, ctx).get(arn)


def tags_of(ctx: AwsContext, arn: str, read: Callable[[], dict[str, str]]) -> dict[str, str]:
    """The resource's tags: from the flow run's index when it holds them, else `read()`."""
    tags = indexed_tags(ctx, arn)
    return tags if tags is not None else read()


def _names_in(params: Any) -> set[str]:
    """The strings a request names its resources by (top-level values and lists of them)."""
    found: set[str] = set()
    if isinstance(params, dict):
        for value in params.values():
            items = value if isinstance(value, list) else [value]
            found.update(v for v in items if isinstance(v, str) and len(v) >= 3)
    return found


def _note_mutation(model: Any, params: Any = None, **_: Any) -> None:
    """botocore hook on every request's parameters: a mutating call takes what it names out of the flow run's index."""
    if not CallLog.is_mutating(f"-:{model.name}"):
        return
    names = _names_in(params)
    run = _current_run() if names else None
    if run is not None:
        with run.lock:
            run.touched.update(names)
