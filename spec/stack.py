"""The stack file, as pydantic models: what to build, and nothing about how.

Every model forbids unknown keys so a typo is an error, not a silently ignored
setting. Cross-field rules (CIDRs inside the VPC, distinct AZs, Fargate sizes)
live next to the fields they check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]*[a-z0-9]$"

# Fargate's allowed CPU units -> allowed memory (MiB). Source: the ECS developer guide,
# "Task CPU and memory" (Linux platform).
FARGATE_SIZES: dict[int, list[int]] = {
    256: [512, 1024, 2048],
    512: [1024 * g for g in range(1, 5)],
    1024: [1024 * g for g in range(2, 9)],
    2048: [1024 * g for g in range(4, 17)],
    4096: [1024 * g for g in range(8, 31)],
    8192: [1024 * g for g in range(16, 61, 4)],
    16384: [1024 * g for g in range(32, 121, 8)],
}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cidr(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 network in CIDR form such as 10.0.1.0/24 ({exc})") from None
    return str(net)


Cidr = Annotated[str, Field(description="An IPv4 network, e.g. 10.0.1.0/24")]


class AwsSettings(Model):
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-aws AwsCredentials block to use. Unset: the standard AWS "
        "environment (AWS_PROFILE, AWS_ACCESS_KEY_ID..., instance role).",
    )


class FlowLogs(Model):
    enabled: bool = True
    retention_days: int = Field(365, description="Retention of the flow-log log group, in days.")
    traffic_type: Literal["ALL", "ACCEPT", "REJECT"] = "ALL"


class Network(Model):
    vpc_cidr: Cidr = "10.0.0.0/16"
    availability_zones: list[str] = Field(
        ..., description="Exactly two distinct availability zones of the stack's region."
    )
    public_subnets: list[Cidr] = Field(..., description="One public subnet CIDR per availability zone.")
    private_subnets: list[Cidr] = Field(..., description="One private subnet CIDR per availability zone.")
    nat_gateways: Literal["per_az", "single"] | None = Field(
        None,
        description="per_az: one NAT gateway per AZ (survives an AZ outage); single: one NAT gateway "
        "for cost. Default: per_az in prod, single elsewhere.",
    )
    flow_logs: FlowLogs = FlowLogs()
    s3_gateway_endpoint: bool = True

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        return _cidr(value)

    @field_validator("public_subnets", "private_subnets")
    @classmethod
    def _subnet_cidrs(cls, value: list[str]) -> list[str]:
        return [_cidr(v) for v in value]

    @model_validator(mode="after")
    def _layout(self) -> Network:
        azs = self.availability_zones
        if len(azs) != 2 or len(set(azs)) != 2:
            raise ValueError(f"availability_zones must name exactly two distinct zones, got {azs}")
        for kind in ("public_subnets", "private_subnets"):
            cidrs = getattr(self, kind)
            if len(cidrs) != len(azs):
                raise ValueError(f"{kind} needs one CIDR per availability zone ({len(azs)}), got {len(cidrs)}")
        vpc = ipaddress.IPv4Network(self.vpc_cidr)
        if not 16 <= vpc.prefixlen <= 28:
            raise ValueError(f"vpc_cidr {self.vpc_cidr} must have a prefix between /16 and /28 (AWS limit)")
        subnets = [(k, ipaddress.IPv4Network(c)) for k in ("public_subnets", "private_subnets")
                   for c in getattr(self, k)]
        for kind, net in subnets:
            if not net.subnet_of(vpc):
                raise ValueError(f"{kind}: {net} is not inside vpc_cidr {vpc}")
            if net.prefixlen > 28:
                raise ValueError(f"{kind}: {net} is smaller than /28, the smallest subnet AWS allows")
        for i, (kind_a, a) in enumerate(subnets):
            for kind_b, b in subnets[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(f"subnets overlap: {kind_a} {a} and {kind_b} {b}")
        return self


class Database(Model):
    engine_version: str = Field("16.4", description="PostgreSQL engine version.")
    instance_class: str = Field("db.t4g.medium", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    allocated_storage_gb: int = Field(20, ge=20, le=65536, description="gp3 storage, GiB (20 minimum).")
    max_allocated_storage_gb: int = Field(100, le=65536, description="Storage autoscaling ceiling, GiB.")
    multi_az: bool = True
    backup_retention_days: int = Field(7, ge=1, le=35)
    backup_window: str = Field("18:00-19:00", pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    maintenance_window: str = Field("sun:19:30-sun:20:30")
    deletion_protection: bool | None = Field(None, description="Default: on in prod.")
    db_name: str = Field("app", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,62}$")
    master_username: str = Field("ecsflow_admin", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,15}$")
    port: int = Field(5432, ge=1150, le=65535)
    performance_insights: bool = True
    monitoring_interval: Literal[0, 1, 5, 10, 15, 30, 60] = Field(
        60, description="Enhanced monitoring interval in seconds; 0 turns it off."
    )
    log_exports: list[Literal["postgresql", "upgrade"]] = ["postgresql", "upgrade"]
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="PostgreSQL parameters on top of ecsflow's defaults (rds.force_ssl=1, "
        "log_min_duration_statement=500, ...).",
    )
    app_username: str = Field(
        "app", pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="The application's own database user (not the master user), created with its database, "
        "grants and a generated password in a Secrets Manager secret on first provision, when a service takes a "
        "`database_app:*` secret.")
    init_image: str | None = Field(
        None, min_length=1, description="Image with psql that runs the database initialisation as a one-off ECS "
        "task. Default: public.ecr.aws/docker/library/postgres:{major version}-alpine.")

    @model_validator(mode="after")
    def _storage(self) -> Database:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(
                f"max_allocated_storage_gb ({self.max_allocated_storage_gb}) must be at least "
                f"allocated_storage_gb ({self.allocated_storage_gb})"
            )
        if self.app_username.lower() == self.master_username.lower():
            raise ValueError(f"app_username ({self.app_username}) must differ from master_username: the app gets "
                             f"a user of its own")
        if not re.fullmatch(r"\d+(\.\d+)?", self.engine_version):
            raise ValueError(f"engine_version {self.engine_version!r} is not a PostgreSQL version like 16.4")
        return self

    @property
    def major_version(self) -> str:
        return self.engine_version.split(".")[0]

    @property
    def psql_image(self) -> str:
        return self.init_image or f"public.ecr.aws/docker/library/postgres:{self.major_version}-alpine"


class Registry(Model):
    keep_releases: int = Field(20, ge=1, le=1000, description="Tagged release images kept per repository.")
    untagged_expiry_days: int = Field(1, ge=1)
    scan_on_push: bool = True


Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"]


class Images(Model):
    """How the images phase builds, checks and publishes each service's image."""

    registry: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*(:\d{1,5})?$",
        description="Push to this registry (host or host:port) instead of the stack's ECR repositories, e.g. a "
        "local registry for a demo. The ECSFLOW_REGISTRY environment variable overrides it. Such a registry has "
        "no scanner: scan settings apply to ECR only.",
    )
    registry_credentials_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block whose value is {\"username\": ..., \"password\": ...} for the "
        "override registry. Unset: ECSFLOW_REGISTRY_USERNAME / ECSFLOW_REGISTRY_PASSWORD, else anonymous.",
    )
    scan_severity_threshold: Severity = Field(
        "HIGH", description="ECR scan findings at or above this severity trigger `on_findings`.")
    on_findings: Literal["fail", "warn"] = Field(
        "fail", description="fail: the run fails (the image stays pushed but is not recorded as the service's "
        "image); warn: log the findings and go on.")
    scan_timeout_seconds: int = Field(600, ge=10, le=3600, description="How long to wait for ECR's scan.")
    smoke_test_timeout_seconds: int = Field(
        60, ge=2, le=1800, description="How long a freshly built container may take to answer its health check.")

SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:(secret|parameter)[:/].+$")
DATABASE_SECRET_KEYS = ("username", "password")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def database_secret_key(reference: str) -> str | None:
    """`database` -> "" (the whole JSON secret), `database:password` -> "password", else None."""
    if reference == "database":
        return ""
    name, _, key = reference.partition(":")
    return key if name == "database" and key in DATABASE_SECRET_KEYS else None


APP_DATABASE_SECRET = "database_app"


def app_database_secret_key(reference: str) -> str | None:
    """The application user's secret (made by the DB initialisation, not the master one):
    `database_app` -> "" (the whole JSON secret), `database_app:password` -> "password", else None."""
    if reference == APP_DATABASE_SECRET:
        return ""
    name, _, key = reference.partition(":")
    return key if name == APP_DATABASE_SECRET and key in DATABASE_SECRET_KEYS else None


APP_SECRET_PREFIX = "app:"
APP_SECRET_NAME = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"


def app_secret_name(reference: str) -> str | None:
    """`app:app-key` -> "app-key" (one of the stack's `app_secrets`), else None."""
    if not reference.startswith(APP_SECRET_PREFIX):
        return None
    name = reference.removeprefix(APP_SECRET_PREFIX)
    return name if re.fullmatch(APP_SECRET_NAME, name) else None


class AppSecret(Model):
    """A secret the app needs (e.g. Laravel's APP_KEY), generated by ecsflow inside AWS or in the task that
    creates it: its value never passes through the stack file, flow parameters, logs, results or artifacts."""

    generate: Literal["laravel-app-key", "password", "hex"] = Field(
        "password", description="laravel-app-key: `base64:` + 32 random bytes in base64 (what `php artisan "
        "key:generate` makes); password: Secrets Manager's GetRandomPassword; hex: random bytes as hex.")
    length: int = Field(40, ge=16, le=4096, description="password: characters; hex: bytes. Ignored for "
                        "laravel-app-key (always 32 bytes).")
    exclude_punctuation: bool = Field(True, description="password: letters and digits only (safe in URLs and "
                                      ".env files).")
    rotation_days: int | None = Field(
        None, ge=1, le=1000, description="Rotate every N days. Needs rotation_lambda_arn: Secrets Manager rotates "
        "only through a Lambda function that knows how to change the secret where it is used.")
    rotation_lambda_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$",
        description="The rotation Lambda (it must allow secretsmanager.amazonaws.com to invoke it).")
    description: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _rotation(self) -> AppSecret:
        if self.rotation_days is not None and self.rotation_lambda_arn is None:
            raise ValueError("rotation_days needs rotation_lambda_arn: Secrets Manager rotates a secret only by "
                             "calling a Lambda function that sets the new value where it is used; name one, or "
                             "drop rotation_days")
        if self.rotation_lambda_arn is not None and self.rotation_days is None:
            raise ValueError("rotation_lambda_arn needs rotation_days (how often to rotate)")
        return self


class Security(Model):
    """Account-level guardrails (off by default: they are per account and region, shared with every other
    stack there) and the audit's thresholds."""

    security_hub: bool = Field(False, description="Enable Security Hub with the AWS Foundational Security Best "
                               "Practices standard.")
    config_recorder: bool = Field(False, description="An AWS Config recorder (all supported resources) and a "
                                  "delivery channel to an encrypted S3 bucket of the stack.")
    guardduty: bool = Field(False, description="A GuardDuty detector.")
    max_active_revisions: int = Field(
        10, ge=1, le=1000, description="The audit fails a task definition family with more ACTIVE revisions than "
        "this (old revisions keep old images and secrets references runnable).")


class Autoscaling(Model):
    """Target tracking on CPU and on ALB requests per target, between min_count and max_count."""

    enabled: bool = True
    min_count: int | None = Field(None, ge=0, le=1000, description="Default: the service's desired_count.")
    max_count: int | None = Field(None, ge=1, le=1000,
                                  description="Default: four times min_count (at least 2).")
    cpu_target_percent: float | None = Field(60.0, gt=0, le=100, description="Average CPU to hold; null: off.")
    requests_per_target: int | None = Field(1000, ge=1, le=1_000_000,
                                            description="ALB requests per task per minute to hold; null: off.")
    scale_in_cooldown_seconds: int = Field(300, ge=0, le=3600)
    scale_out_cooldown_seconds: int = Field(60, ge=0, le=3600)

    @model_validator(mode="after")
    def _targets(self) -> Autoscaling:
        if self.enabled and self.cpu_target_percent is None and self.requests_per_target is None:
            raise ValueError("autoscaling needs cpu_target_percent or requests_per_target (or enabled: false)")
        if self.min_count is not None and self.max_count is not None and self.max_count < self.min_count:
            raise ValueError(f"max_count ({self.max_count}) must be at least min_count ({self.min_count})")
        return self


class Build(Model):
    context: str = Field(".", description="Docker build context, relative to the stack file.")
    dockerfile: str = Field("Dockerfile", description="Dockerfile path inside the context.")
    args: dict[str, str] = Field(default_factory=dict)


class Service(Model):
    load_balanced: bool = Field(
        True, description="false: a worker (queue consumer, scheduler) that takes no traffic from the load "
        "balancer: no target group, listener rule or requests-per-target scaling. Its port and "
        "health_check_path are then optional, and without them container_health_check is required.")
    port: int | None = Field(None, ge=1, le=65535, description="Container port the app listens on (required "
                             "when load_balanced).")
    health_check_path: str | None = Field(None, pattern=r"^/", description="Path the load balancer and the "
                                          "container health check probe, e.g. /health (required when "
                                          "load_balanced).")
    cpu: int = Field(512, description="Fargate CPU units (256, 512, 1024, ...).")
    memory: int = Field(1024, description="MiB; must be a Fargate pair with cpu.")
    desired_count: int = Field(2, ge=0, le=1000)
    path_patterns: list[str] = Field(default_factory=lambda: ["/*"])
    build: Build = Build()
    image_tag: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="Run this tag of the service's repository instead of the one the images phase recorded. "
        "Unset and nothing recorded: the service is created at desired count 0.")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Plain environment variables (never secrets: use `secrets`). PORT is set "
        "to `port`; services taking a database secret also get DB_HOST, DB_PORT and DB_DATABASE.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variable -> a Secrets Manager secret or SSM parameter ARN (a secret ARN may end "
        "in :json-key::), or `database:password` / `database:username` / `database` for the RDS-managed master "
        "secret. Injected by ECS from the ARN; never plain environment.")
    health_check_interval_seconds: int = Field(15, ge=5, le=300, description="Load balancer health check interval.")
    health_check_timeout_seconds: int = Field(5, ge=2, le=120)
    healthy_threshold: int = Field(2, ge=2, le=10)
    unhealthy_threshold: int = Field(3, ge=2, le=10)
    health_check_grace_seconds: int = Field(
        60, ge=0, le=7200, description="How long ECS ignores failing load balancer health checks of a new task.")
    container_health_check: str | None = Field(
        None, min_length=1, description="Shell command of the container health check. Default: wget of "
        "http://127.0.0.1:{port}{health_check_path} (busybox and most base images have wget).")
    read_only_root_filesystem: bool = Field(True, description="Mount the container's root file system read-only.")
    writable_paths: list[str] = Field(
        default_factory=lambda: ["/tmp"],
        description="Writable scratch directories on a read-only root (Fargate ephemeral volumes; Fargate has "
        "no tmpfs).")
    enable_exec: bool = Field(False, description="Allow `aws ecs execute-command` into the tasks (logged).")
    migration_command: str | None = Field(
        None, min_length=1, description="One-off command run as a task of the new revision (e.g. `php artisan "
        "migrate --force`, `python manage.py migrate`) before the service moves to it; a non-zero exit stops the "
        "rollout.")
    migration_timeout_seconds: int = Field(900, ge=30, le=86400)
    command: str | None = Field(
        None, min_length=1, description="Run this command instead of the image's default (split like a shell "
        "would, no shell features), e.g. a queue worker started from the web app's image.")
    cpu_architecture: Literal["X86_64", "ARM64"] = "X86_64"
    autoscaling: Autoscaling = Autoscaling()
    task_role_statements: list[dict[str, Any]] = Field(
        default_factory=list, description="IAM policy statements the app itself needs (its task role is empty "
        "otherwise).")

    @field_validator("path_patterns")
    @classmethod
    def _path_patterns(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("path_patterns needs at least one pattern, e.g. /api/* or /* (the default route)")
        if len(value) > 5:
            raise ValueError(f"at most 5 path patterns per service (an ALB rule's limit), got {len(value)}")
        for pattern in value:
            if not re.fullmatch(r"/[A-Za-z0-9_\-.$/~\"'@:+*?&]{0,127}", pattern):
                raise ValueError(f"path pattern {pattern!r} must start with / and use at most 128 URL characters")
        if "/*" in value and len(value) > 1:
            raise ValueError("/* (the default route) must be the service's only path pattern")
        if len(set(value)) != len(value):
            raise ValueError(f"path_patterns repeats a pattern: {value}")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"secret variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if (database_secret_key(ref) is None and app_database_secret_key(ref) is None
                    and app_secret_name(ref) is None and not SECRET_ARN.fullmatch(ref)):
                raise ValueError(
                    f"{name}: unknown secret reference {ref!r}; use a Secrets Manager or SSM parameter ARN, or "
                    f"database / database:username / database:password (the master user), or database_app / "
                    f"database_app:username / database_app:password (the application's own user), or "
                    f"app:NAME (one of the stack's app_secrets)")
        return value

    @field_validator("writable_paths")
    @classmethod
    def _writable_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not re.fullmatch(r"/[A-Za-z0-9_./-]*", path) or path == "/":
                raise ValueError(f"writable path {path!r} must be an absolute directory other than /")
        if len(set(value)) != len(value):
            raise ValueError(f"writable_paths repeats a path: {value}")
        return value

    @model_validator(mode="after")
    def _worker(self) -> Service:
        if self.load_balanced:
            return self  # port and health_check_path: checked by Stack, which can name the service
        if "path_patterns" in self.model_fields_set:
            raise ValueError("path_patterns: a service with load_balanced: false has no listener rule; remove it")
        if self.container_health_check is None and (self.port is None or self.health_check_path is None):
            raise ValueError("container_health_check: a worker without port and health_check_path needs a shell "
                             "command that exits 0 while it is healthy, e.g. `pgrep -f queue:work`")
        if self.autoscaling.enabled and self.autoscaling.cpu_target_percent is None:
            raise ValueError("autoscaling.cpu_target_percent: a worker scales on CPU only (requests_per_target "
                             "needs a load balancer); set it or autoscaling.enabled: false")
        return self

    @model_validator(mode="after")
    def _fargate_size(self) -> Service:
        if self.cpu not in FARGATE_SIZES:
            raise ValueError(f"cpu {self.cpu} is not a Fargate size; use one of {sorted(FARGATE_SIZES)}")
        allowed = FARGATE_SIZES[self.cpu]
        if self.memory not in allowed:
            raise ValueError(
                f"memory {self.memory} is not allowed with cpu {self.cpu} on Fargate; "
                f"use one of {allowed[0]}..{allowed[-1]} (steps as in {allowed[:3]})"
            )
        if self.health_check_timeout_seconds >= self.health_check_interval_seconds:
            raise ValueError(f"health_check_timeout_seconds ({self.health_check_timeout_seconds}) must be less "
                             f"than health_check_interval_seconds ({self.health_check_interval_seconds})")
        overlap = sorted(set(self.environment) & set(self.secrets))
        if overlap:
            raise ValueError(f"{', '.join(overlap)} set in both environment and secrets; keep it in secrets")
        return self

    @property
    def is_default_route(self) -> bool:
        return self.load_balanced and self.path_patterns == ["/*"]

    @property
    def uses_database_secret(self) -> bool:
        """Takes a database secret, the master's or the application user's (so it gets DB_HOST...)."""
        return any(database_secret_key(ref) is not None or app_database_secret_key(ref) is not None
                   for ref in self.secrets.values())

    @property
    def uses_app_database_secret(self) -> bool:
        return any(app_database_secret_key(ref) is not None for ref in self.secrets.values())

    @property
    def scaling_bounds(self) -> tuple[int, int]:
        """(min, max) tasks for autoscaling."""
        low = self.desired_count if self.autoscaling.min_count is None else self.autoscaling.min_count
        high = self.autoscaling.max_count if self.autoscaling.max_count is not None else max(4 * low, 2)
        return low, max(high, low)


class CapacityShare(Model):
    provider: Literal["FARGATE", "FARGATE_SPOT"]
    weight: int = Field(1, ge=0, le=1000, description="Relative share of tasks beyond the base.")
    base: int = Field(0, ge=0, le=100000, description="Tasks always placed on this provider first.")


class Cluster(Model):
    capacity_strategy: list[CapacityShare] | None = Field(
        None, description="The cluster's default capacity provider strategy. Default: on-demand FARGATE only in "
        "prod (base 1); elsewhere FARGATE base 1 plus FARGATE_SPOT weight 3.")
    container_insights: Literal["enabled", "enhanced", "disabled"] = "enabled"
    log_retention_days: int | None = Field(
        None, ge=1, le=3653, description="Retention of the services' and ECS Exec's log groups, in days. Default: "
        "365 in prod (AWS FSBP asks for at least a year), 90 elsewhere.")

    @field_validator("capacity_strategy")
    @classmethod
    def _strategy(cls, value: list[CapacityShare] | None) -> list[CapacityShare] | None:
        if value is None:
            return None
        providers = [s.provider for s in value]
        if not value or len(set(providers)) != len(providers):
            raise ValueError(f"capacity_strategy must name FARGATE and/or FARGATE_SPOT once each, got {providers}")
        if sum(1 for s in value if s.base) > 1:
            raise ValueError("only one capacity provider of the strategy may have a base")
        if not any(s.weight for s in value):
            raise ValueError("at least one capacity provider of the strategy needs a weight above 0")
        return value


TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


class Dns(Model):
    """Route 53 for load_balancer.domain: alias records, a health check, the ACM validation records."""

    hosted_zone_id: str | None = Field(None, pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$",
                                       description="The public hosted zone to write the records in.")
    hosted_zone_name: str | None = Field(
        None, description="Or find the public hosted zone by this name. Neither: the zone whose name is the "
        "longest suffix of the domain.")
    health_check: bool = Field(True, description="A Route 53 HTTPS health check of the app's health path.")
    health_check_path: str | None = Field(
        None, pattern=r"^/", description="Default: the health_check_path of the default (/*) service.")
    validation_records: bool = Field(
        True, description="Write ACM's DNS-validation CNAME records, so the certificates validate by themselves.")


class Cdn(Model):
    """CloudFront in front of the load balancer."""

    enabled: bool = False
    price_class: Literal["PriceClass_100", "PriceClass_200", "PriceClass_All"] = "PriceClass_100"
    # No default paths: which ones are safe to cache depends on the app's framework (its build's hashed
    # assets), so the stack file names them; caching nothing is the safe default.
    static_paths: list[str] = Field(
        default_factory=list,
        description="Cached at the edge (CloudFront's managed CachingOptimized policy), e.g. the front end's "
        "hashed build assets such as /assets/*. Empty: nothing is cached, every request reaches the load balancer.")
    uncached_paths: list[str] = Field(
        default_factory=list, description="Never cached (CachingDisabled), listed before static_paths so they win "
        "over a broader static pattern, e.g. /api/*. The default route is never cached either.")

    @field_validator("static_paths", "uncached_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"/[A-Za-z0-9_\-.$/~\"'@:+*?&]{0,254}", pattern):
                raise ValueError(f"CloudFront path pattern {pattern!r} must start with / (e.g. /assets/*)")
        return value


class Waf(Model):
    """A WAFv2 web ACL: AWS managed rules (common, known bad inputs, SQL injection) and a rate limit.
    On CloudFront when the CDN is on, otherwise on the load balancer."""

    enabled: bool = False
    rate_limit_per_5min: int = Field(2000, ge=100, le=2_000_000_000,
                                     description="Requests per client IP in any 5 minutes before it is blocked.")


class LoadBalancer(Model):
    domain: str | None = Field(
        None, pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        description="Request an ACM certificate for this name (DNS validation: add the CNAME ACM shows).")
    certificate_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$",
        description="Use this existing ACM certificate (same region) instead of requesting one. Neither this "
        "nor domain: outside prod, a self-signed certificate is imported (browsers warn); prod refuses.")
    ssl_policy: str = Field(TLS_POLICY, pattern=r"^ELBSecurityPolicy-TLS13-",
                            description="The HTTPS listener's security policy (TLS 1.3 policies only).")
    idle_timeout_seconds: int = Field(60, ge=1, le=4000)
    desync_mitigation_mode: Literal["defensive", "strictest"] = Field(
        "defensive", description="HTTP desync protection (AWS FSBP ELB.12 accepts either).")
    deletion_protection: bool | None = Field(None, description="Default: on in prod.")
    public_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+(:\d+)?(/[^\s]*)?$",
        description="Where `verify health` probes the app (each service's health_check_path under it). "
        "Default: https://{domain} when a domain is set.")
    access_logs: bool = True
    access_log_expiry_days: int = Field(365, ge=1, le=3650, description="Access logs are deleted after this.")
    dns: Dns | None = Field(None, description="Route 53 records for the domain (needs domain). Unset: none.")
    cdn: Cdn = Cdn()
    waf: Waf = Waf()

    @model_validator(mode="after")
    def _certificate(self) -> LoadBalancer:
        if self.domain and self.certificate_arn:
            raise ValueError("name either domain (a certificate is requested) or certificate_arn, not both")
        plain = self.domain is not None and not self.domain.startswith("*.")
        if self.dns is not None and not plain:
            raise ValueError("dns: Route 53 records need load_balancer.domain (a name, not a wildcard)")
        if self.cdn.enabled and not plain:
            raise ValueError("cdn.enabled: CloudFront needs load_balancer.domain (its alias and certificate)")
        if self.dns is not None and self.dns.hosted_zone_id and self.dns.hosted_zone_name:
            raise ValueError("dns: name either hosted_zone_id or hosted_zone_name, not both")
        return self


class Notifications(Model):
    """Where run notifications go (deploy, rollback, backup, restore test)."""

    block: str | None = Field(
        None, min_length=1, description="Name of an `ecsflow-notifier` Prefect block (a Slack incoming webhook or "
        "any apprise URL, kept secret in the block). Unset: notifications are off.")


class ServiceDeploy(Model):
    """How one service rolls out a new revision."""

    strategy: Literal["rolling", "blue_green"] = Field(
        "rolling", description="rolling: ECS rolling update (100 % / 200 %) with the circuit breaker and rollback. "
        "blue_green: ECS native blue/green: the new revision starts beside the old one on an alternate target "
        "group, a test listener rule reaches it, production traffic shifts at once, the old tasks stay for the "
        "bake time.")
    bake_time_minutes: int = Field(
        10, ge=0, le=1440, description="blue_green: how long the old revision stays ready for an instant "
        "rollback after the traffic shift.")
    test_header: str = Field(
        "X-Ecsflow-Test", pattern=r"^[A-Za-z0-9-]{1,40}$",
        description="blue_green: requests carrying this header (any value) reach the new revision through the "
        "test listener rule before the traffic shift.")


class Deploy(Model):
    """How `ecsflow deploy` (the deploy_app flow) rolls out a commit."""

    stability_timeout_seconds: int = Field(
        900, ge=10, le=7200, description="How long the services may take to become stable and healthy after the "
        "update before the deploy rolls them back.")
    verify_timeout_seconds: int = Field(
        300, ge=3, le=3600, description="How long the health checks (rollout, running tasks, target health, HTTP "
        "probe of load_balancer.public_url) may take to pass three times in a row once the services are stable.")
    overlap: Literal["queue", "cancel_older"] = Field(
        "queue", description="A second deploy of the same stack while one runs: queue (it waits for a free slot) "
        "or cancel_older (it cancels the running deploy, which rolls back what it updated, and goes on).")
    services: dict[str, ServiceDeploy] = Field(
        default_factory=dict, description="Per service settings; a service not named rolls out with `rolling`.")

    def for_service(self, service: str) -> ServiceDeploy:
        return self.services.get(service) or ServiceDeploy()

    @model_validator(mode="after")
    def _bake_within_timeout(self) -> Deploy:
        for name, settings in self.services.items():
            if settings.strategy == "blue_green" and settings.bake_time_minutes * 60 >= self.stability_timeout_seconds:
                raise ValueError(f"deploy.services.{name}.bake_time_minutes ({settings.bake_time_minutes}) must end "
                                 f"within deploy.stability_timeout_seconds ({self.stability_timeout_seconds}): a "
                                 f"blue/green rollout completes after its bake time; raise the timeout")
        return self


AWS_REGION = r"^[a-z]{2}(-[a-z]+)+-\d$"
SQL_TABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


class RestoreTest(Model):
    """What the weekly restore test checks on the temporary instance restored from the newest snapshot."""

    key_tables: list[Annotated[str, Field(pattern=SQL_TABLE)]] = Field(
        default_factory=list, description="Tables (table or schema.table) whose row counts the restore test and "
        "the dump check report; each must exist and be readable. Empty: every table is counted by the dump check.")
    verify_query: str | None = Field(
        None, min_length=1, description="One read-only SQL query run on the restored database; its first column "
        "of the first row must be non-null and not false (e.g. `select max(created_at) from loans`). A timestamp "
        "result is also reported as the age of the newest data.")
    instance_class: str = Field("db.t4g.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
                                description="Class of the temporary instance (small: it only has to start).")
    timeout_minutes: int = Field(90, ge=5, le=720, description="How long the restore may take before the test "
                                 "fails (the temporary instance is deleted either way).")


EXPORT_STORAGE_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
                          "DEEP_ARCHIVE")


class Export(Model):
    """The daily `pg_dump` to S3: where the dumps age to and when they expire."""

    transition_days: int = Field(30, ge=0, le=3650, description="Days until a dump moves to storage_class.")
    storage_class: Literal["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
                           "DEEP_ARCHIVE"] = "GLACIER_IR"
    expiry_days: int = Field(365, ge=1, le=3650, description="Days until a dump (and 30 days later its old "
                             "versions) is deleted.")

    @model_validator(mode="after")
    def _ages(self) -> Export:
        if self.storage_class in ("STANDARD_IA", "ONEZONE_IA") and self.transition_days < 30:
            raise ValueError(f"transition_days: S3 moves objects to {self.storage_class} after 30 days at the "
                             f"earliest, got {self.transition_days}")
        if self.expiry_days <= self.transition_days:
            raise ValueError(f"expiry_days ({self.expiry_days}) must be later than transition_days "
                             f"({self.transition_days})")
        return self


class LoadTest(Model):
    """The manual load test against the stack's own public URL; it stops at whichever bound comes first."""

    duration_seconds: int = Field(60, ge=1, le=3600)
    requests: int = Field(1000, ge=1, le=1_000_000, description="Total requests at most.")
    concurrency: int = Field(10, ge=1, le=500, description="Requests in flight at once.")
    path: str = Field("/", pattern=r"^/[^\s]*$", description="Path under load_balancer.public_url.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per request; a timeout counts as an error.")


class EndpointOverride(Model):
    """A PostgreSQL server standing in for RDS (tests, a local demo): the restore test's verification and
    the export connect here instead of the restored / production instance. The RDS steps still run."""

    host: str = Field(..., min_length=1)
    port: int = Field(5432, ge=1, le=65535)
    db_name: str | None = Field(None, description="Default: database.db_name.")
    secret_arn: str = Field(..., pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$",
                            description="Secrets Manager secret holding {\"username\": ..., \"password\": ...}.")
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "prefer"


class Backup(Model):
    """Snapshots, their copies, the restore test, the data export and the load test."""

    snapshot_retention_days: int = Field(
        35, ge=1, le=3650, description="Our manual snapshots (and their copies) older than this are deleted; the "
        "newest one is always kept. Automated and foreign snapshots are never touched.")
    copy_region: str | None = Field(
        None, pattern=AWS_REGION, description="Copy each snapshot to this second region, encrypted with a KMS key "
        "of ecsflow's own there. Unset: no copy.")
    restore_test: RestoreTest = RestoreTest()
    export: Export = Export()
    load_test: LoadTest = LoadTest()
    endpoint_override: EndpointOverride | None = Field(
        None, description="Verify and export against this stand-in PostgreSQL instead of RDS (tests and demos "
        "only: production leaves it unset).")


GITHUB_REPOSITORY = r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}/[A-Za-z0-9_.-]{1,100}$"


REPO_PATH = r"^(\.|[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199})$"


class PipelineCheck(Model):
    """One job of test.yml (on every pull request, and as the gate before each deploy): a directory of the
    app repository, an optional toolchain, and the shell commands that check it."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$", description="The job's name in GitHub.")
    directory: str = Field(".", pattern=REPO_PATH, description="Working directory, relative to the repository root.")
    run: str = Field(
        ..., min_length=1, max_length=8000, description="Shell commands run by bash with -e (the first failing one "
        "fails the check), e.g. `npm ci` then `npm test`. They run a pull request's code with a read-only token and "
        "no secrets.")
    php_version: str | None = Field(None, pattern=r"^\d+\.\d+$",
                                    description="Set up PHP of this version, with Composer, before `run`.")
    php_extensions: str | None = Field(None, pattern=r"^[a-z0-9_]+(, ?[a-z0-9_]+)*$",
                                       description="PHP extensions to add, e.g. `pdo_pgsql, intl`.")
    node_version: str | None = Field(None, pattern=r"^\d+(\.\d+){0,2}$",
                                     description="Set up Node.js of this version before `run`.")

    @model_validator(mode="after")
    def _extensions(self) -> PipelineCheck:
        if self.php_extensions is not None and self.php_version is None:
            raise ValueError(f"checks[{self.name}].php_extensions needs php_version (the PHP they are added to)")
        return self


class PipelineImage(Model):
    """Where a service's image is built from in the app repository (test.yml lints and scans it; deploy.yml
    builds, scans, signs and pushes it)."""

    service: str = Field(..., description="One of the stack's services.")
    context: str = Field(..., pattern=REPO_PATH, description="Build context, relative to the repository root.")
    dockerfile: str | None = Field(None, pattern=REPO_PATH, description="Default: {context}/Dockerfile.")


class Pipeline(Model):
    """CI/CD: the GitHub repository whose pushes deploy this stack, and the AWS side GitHub Actions uses
    (an IAM OIDC provider for token.actions.githubusercontent.com and a CI role trusted by this repository's
    branch alone). See docs/github.md."""

    github_repository: str = Field(
        ..., description="owner/name of the app's GitHub repository, e.g. example-org/library-app. Only its "
        "`branch` may assume the CI role; the webhook receiver accepts pushes from it alone.")
    branch: str = Field("main", description="The branch that deploys (no wildcards: the CI role's trust policy "
                        "matches it exactly).")
    oidc_provider: Literal["create", "existing"] = Field(
        "create", description="create: make the account's GitHub OIDC provider if it is missing (tagged as this "
        "stack's; an existing one is used as it is); existing: the provider must already exist, ecsflow never "
        "creates, changes or deletes it.")
    write_github_settings: bool = Field(
        False, description="Write the repository's Actions variables (role ARN, region, repositories, webhook "
        "URL) and the webhook secret through GitHub's REST API, with the token in github_token_block.")
    github_token_block: str | None = Field(
        None, min_length=1, description="Prefect Secret block holding a GitHub token that may write the "
        "repository's Actions secrets and variables (fine-grained: Secrets and Variables read/write).")
    webhook_url: str | None = Field(
        None, pattern=r"^https://[^\s/]+(:\d+)?(/[^\s]*)?$",
        description="HTTPS URL of the webhook receiver's /github endpoint; deploy.yml posts the signed push "
        "there once the image is in ECR.")
    webhook_secret_block: str = Field(
        "ecsflow-webhook-secret", min_length=1, description="Prefect Secret block with the webhook HMAC secret "
        "(the one the receiver verifies with); written as the Actions secret ECSFLOW_WEBHOOK_SECRET.")
    github_api_url: str = Field(
        "https://api.github.com", pattern=r"^https?://[^\s]+$",
        description="GitHub's REST API (GitHub Enterprise Server: https://HOST/api/v3).")
    checks: list[PipelineCheck] = Field(
        default_factory=list, description="The app's own checks, one test.yml job each (written as the Actions "
        "variable ECSFLOW_CHECKS). Empty: test.yml only lints and scans the images.")
    images: list[PipelineImage] | None = Field(
        None, description="Each service's build context in the app repository (the Actions variable "
        "ECSFLOW_IMAGES). Default: one per service, its context a directory named after the service.")

    @field_validator("github_repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not re.fullmatch(GITHUB_REPOSITORY, value) or value.split("/")[1] in (".", ".."):
            raise ValueError(f"github_repository {value!r} must be owner/name as on GitHub, e.g. "
                             f"example-org/library-app (owner: letters, digits, single hyphens; name: letters, "
                             f"digits, . _ -)")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if (value.startswith(("refs/", "/", "-")) or value.endswith(("/", ".lock", "."))
                or not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", value) or ".." in value or "//" in value):
            raise ValueError(f"branch {value!r} must be a plain branch name such as main or release/v2 (no refs/ "
                             f"prefix, no wildcards: the CI role trusts exactly this branch)")
        return value

    @model_validator(mode="after")
    def _token(self) -> Pipeline:
        if self.write_github_settings and not self.github_token_block:
            raise ValueError("write_github_settings needs github_token_block: the name of a Prefect Secret block "
                             "holding a GitHub token allowed to write the repository's Actions secrets and variables")
        return self

    @field_validator("checks")
    @classmethod
    def _check_names(cls, value: list[PipelineCheck]) -> list[PipelineCheck]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError(f"checks: each check needs a name of its own, got {names}")
        return value

    def images_for(self, services: list[str]) -> list[PipelineImage]:
        """`images`, or by default one per service built from the directory of its name."""
        if self.images is not None:
            return self.images
        return [PipelineImage(service=s, context=s) for s in services]

    @property
    def owner(self) -> str:
        return self.github_repository.split("/")[0]

    @property
    def repository_name(self) -> str:
        return self.github_repository.split("/")[1]


class AlarmDefault(Model):
    """One alarm kind's settings: `threshold` in the unit named in ALARM_KINDS."""

    threshold: float
    period_seconds: int = 60
    evaluation_periods: int = 5
    datapoints_to_alarm: int | None = None
    enabled: bool = True


# Alarm kind -> (unit of the threshold, default). docs/monitoring.md lists what each one means.
ALARM_KINDS: dict[str, tuple[str, AlarmDefault]] = {
    "service_cpu": ("percent", AlarmDefault(threshold=85, period_seconds=60, evaluation_periods=5)),
    "service_memory": ("percent", AlarmDefault(threshold=85, period_seconds=60, evaluation_periods=5)),
    "running_tasks": ("tasks missing", AlarmDefault(threshold=0, period_seconds=60, evaluation_periods=5)),
    "service_5xx": ("count", AlarmDefault(threshold=5, period_seconds=60, evaluation_periods=2)),
    "unhealthy_hosts": ("hosts", AlarmDefault(threshold=0, period_seconds=60, evaluation_periods=3)),
    "alb_5xx": ("count", AlarmDefault(threshold=10, period_seconds=60, evaluation_periods=5,
                                      datapoints_to_alarm=3)),
    "target_5xx": ("count", AlarmDefault(threshold=10, period_seconds=60, evaluation_periods=5,
                                         datapoints_to_alarm=3)),
    "latency_p95": ("seconds", AlarmDefault(threshold=1.0, period_seconds=60, evaluation_periods=5)),
    "latency_p99": ("seconds", AlarmDefault(threshold=2.5, period_seconds=60, evaluation_periods=5)),
    "db_cpu": ("percent", AlarmDefault(threshold=80, period_seconds=300, evaluation_periods=3)),
    "db_free_storage": ("GiB", AlarmDefault(threshold=2, period_seconds=300, evaluation_periods=1)),
    "db_freeable_memory": ("MiB", AlarmDefault(threshold=256, period_seconds=300, evaluation_periods=3)),
    "db_connections": ("connections", AlarmDefault(threshold=200, period_seconds=300, evaluation_periods=3)),
    "app_errors": ("log lines", AlarmDefault(threshold=5, period_seconds=300, evaluation_periods=1)),
    "http_5xx": ("log lines", AlarmDefault(threshold=10, period_seconds=300, evaluation_periods=1)),
}


class AlarmOverride(Model):
    """Per alarm kind: whatever is set replaces ecsflow's default; the rest stays."""

    threshold: float | None = Field(None, ge=0, description="In the kind's unit (see docs/monitoring.md).")
    period_seconds: int | None = Field(None, description="10, 30 or a multiple of 60.")
    evaluation_periods: int | None = Field(None, ge=1, le=100)
    datapoints_to_alarm: int | None = Field(None, ge=1, le=100, description="M of the N evaluation periods "
                                            "(default: all of them).")
    enabled: bool | None = None

    @field_validator("period_seconds")
    @classmethod
    def _period(cls, value: int | None) -> int | None:
        if value is not None and not (value in (10, 30) or (value >= 60 and value % 60 == 0)):
            raise ValueError(f"period_seconds {value}: CloudWatch takes 10, 30 or a multiple of 60")
        if value is not None and value > 86400:
            raise ValueError(f"period_seconds {value}: at most 86400 (a day)")
        return value


class Monitoring(Model):
    """Alarms (to an encrypted SNS topic), log metric filters, a dashboard and a monthly cost budget."""

    enabled: bool = True
    alarm_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list, description="E-mail addresses subscribed to the alarm topic (each confirms once).")
    https_endpoints: list[Annotated[str, Field(pattern=r"^https://[^\s/]+(:\d+)?(/[^\s]*)?$")]] = Field(
        default_factory=list, description="HTTPS endpoints subscribed to the alarm topic (a chat webhook relay, "
        "an on-call service). They may hold tokens: ecsflow shows only their host.")
    alarms: dict[str, AlarmOverride] = Field(
        default_factory=dict, description="Per alarm kind (service_cpu, latency_p95, db_free_storage, ...: see "
        "docs/monitoring.md), threshold / period_seconds / evaluation_periods / datapoints_to_alarm / enabled.")
    app_error_pattern: str = Field(
        "?ERROR ?CRITICAL ?FATAL", min_length=1, max_length=1024,
        description="CloudWatch Logs filter pattern for application errors. Default: lines with the upper-case "
        "level words most loggers write (case-sensitive terms); name your framework's own format for fewer false "
        "matches (stacks/library.yaml names Monolog's `channel.LEVEL:` lines).")
    http_5xx_pattern: str = Field(
        "{ $.status >= 500 }", min_length=1, max_length=1024,
        description="Filter pattern for 5xx answers in the web server's access log. Default: a JSON access log "
        "with a numeric `status` field (lines that are not JSON never match).")
    dashboard: bool = Field(True, description="A CloudWatch dashboard of the services, load balancer and database.")
    monthly_budget_usd: float | None = Field(
        None, gt=0, le=1_000_000_000, description="A monthly cost budget (the whole account's cost) alerting the "
        "alarm topic. Unset: no budget.")
    budget_actual_percents: list[Annotated[float, Field(gt=0, le=1000)]] = Field(
        default_factory=lambda: [80.0, 100.0], description="Alert when the month's actual cost passes these "
        "percentages of the budget.")
    budget_forecast_percent: float | None = Field(
        100.0, gt=0, le=1000, description="Alert when the month's forecast passes this percentage; null: off.")

    @field_validator("alarms")
    @classmethod
    def _alarm_kinds(cls, value: dict[str, AlarmOverride]) -> dict[str, AlarmOverride]:
        unknown = sorted(set(value) - set(ALARM_KINDS))
        if unknown:
            raise ValueError(f"unknown alarm kind(s) {', '.join(unknown)}; use one of {', '.join(ALARM_KINDS)}")
        for kind, override in value.items():
            periods = override.evaluation_periods or ALARM_KINDS[kind][1].evaluation_periods
            if override.datapoints_to_alarm is not None and override.datapoints_to_alarm > periods:
                raise ValueError(f"{kind}: datapoints_to_alarm ({override.datapoints_to_alarm}) cannot exceed "
                                 f"evaluation_periods ({periods})")
        return value

    @field_validator("budget_actual_percents")
    @classmethod
    def _percents(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value) or len(value) > 4:
            raise ValueError(f"budget_actual_percents: at most 4 distinct percentages, got {value}")
        return sorted(value)

    def alarm(self, kind: str) -> AlarmDefault:
        """The kind's settings: ecsflow's default with the stack's overrides on top."""
        default = ALARM_KINDS[kind][1]
        override = self.alarms.get(kind)
        if override is None:
            return default
        merged = default.model_copy(update=override.model_dump(exclude_none=True))
        if override.evaluation_periods is not None and override.datapoints_to_alarm is None:
            merged = merged.model_copy(update={"datapoints_to_alarm": default.datapoints_to_alarm
                                               if (default.datapoints_to_alarm or 0) <= merged.evaluation_periods
                                               else None})
        return merged


class Stack(Model):
    """One application environment: everything ecsflow builds for it."""

    name: str = Field(..., min_length=2, max_length=20, pattern=NAME_PATTERN,
                      description="Stack name, part of every resource name.")
    env: str = Field(..., min_length=2, max_length=12, pattern=NAME_PATTERN,
                     description="Environment name, e.g. prod or staging. 'prod' turns on the safest defaults.")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$",
                               description="AWS region. Unset: AWS_REGION / the profile's region.")
    aws: AwsSettings = AwsSettings()
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")
    network: Network
    database: Database = Database()
    registry: Registry = Registry()
    images: Images = Images()
    services: dict[str, Service] = Field(..., min_length=1)
    cluster: Cluster = Cluster()
    load_balancer: LoadBalancer = LoadBalancer()
    backup: Backup = Backup()
    notifications: Notifications = Notifications()
    deploy: Deploy = Deploy()
    app_secrets: dict[str, AppSecret] = Field(
        default_factory=dict, description="Secrets ecsflow generates in Secrets Manager (name -> how); a service "
        "takes one with `secrets: {APP_KEY: app:NAME}`.")
    security: Security = Security()
    monitoring: Monitoring = Field(default_factory=Monitoring)
    pipeline: Pipeline | None = Field(
        None, description="GitHub Actions CI/CD for this stack (OIDC provider, CI role, workflow settings). "
        "Unset: no pipeline phase.")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if key.lower().startswith(("aws:", "ecsflow:")):
                raise ValueError(f"tag key {key!r} uses a reserved prefix (aws:, ecsflow:)")
            if not 1 <= len(key) <= 128 or len(val) > 256:
                raise ValueError(f"tag {key!r}: keys are 1-128 characters, values at most 256")
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, Service]) -> dict[str, Service]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name) or len(name) > 20:
                raise ValueError(
                    f"service name {name!r} must be 2-20 characters of a-z, 0-9 and '-', starting with a letter"
                )
        for name, service in value.items():
            for field in ("port", "health_check_path"):
                if service.load_balanced and getattr(service, field) is None:
                    raise ValueError(f"services.{name}.{field}: required field is missing (a load-balanced service "
                                     f"needs port and health_check_path; set load_balanced: false for a worker "
                                     f"that takes no traffic)")
        claimed: dict[str, str] = {}
        for name, service in value.items():
            for pattern in service.path_patterns if service.load_balanced else []:
                if pattern in claimed:
                    raise ValueError(
                        f"path pattern collision: {pattern!r} is in services.{claimed[pattern]}.path_patterns and "
                        f"services.{name}.path_patterns; each pattern routes to one service")
                claimed[pattern] = name
        return value

    @model_validator(mode="after")
    def _prod_log_retention(self) -> Stack:
        days = self.cluster.log_retention_days
        if self.is_prod and days is not None and days < 365:
            raise ValueError(f"cluster.log_retention_days: {days} is below the 365 days production logs keep "
                             f"(AWS Foundational Security Best Practices, CloudWatch.16)")
        return self

    @model_validator(mode="after")
    def _deploy_services(self) -> Stack:
        unknown = sorted(set(self.deploy.services) - set(self.services))
        if unknown:
            raise ValueError(f"deploy.services names {', '.join(unknown)}, which is not in services "
                             f"({', '.join(self.services)})")
        for name, settings in self.deploy.services.items():
            if settings.strategy == "blue_green" and not self.services[name].load_balanced:
                raise ValueError(f"deploy.services.{name}.strategy: blue_green shifts load balancer traffic, and "
                                 f"services.{name} has load_balanced: false; use rolling")
        return self

    @model_validator(mode="after")
    def _backup_copy_region(self) -> Stack:
        if self.backup.copy_region and self.backup.copy_region == self.region:
            raise ValueError(f"backup.copy_region: {self.backup.copy_region} is the stack's own region; a copy "
                             f"protects against a regional outage only in another region")
        return self

    @model_validator(mode="after")
    def _app_secrets(self) -> Stack:
        for name in self.app_secrets:
            if not re.fullmatch(APP_SECRET_NAME, name):
                raise ValueError(f"app_secrets: name {name!r} must be 2-64 characters of a-z, 0-9 and '-', "
                                 f"starting with a letter")
        for service, svc in self.services.items():
            for variable, ref in svc.secrets.items():
                wanted = app_secret_name(ref)
                if wanted is not None and wanted not in self.app_secrets:
                    raise ValueError(f"services.{service}.secrets.{variable}: {ref} names no entry of app_secrets "
                                     f"({', '.join(self.app_secrets) or 'none declared'}); declare it there")
        return self

    @model_validator(mode="after")
    def _pipeline_images(self) -> Stack:
        if self.pipeline is None or self.pipeline.images is None:
            return self
        named = [i.service for i in self.pipeline.images]
        unknown = sorted(set(named) - set(self.services))
        if unknown:
            raise ValueError(f"pipeline.images names {', '.join(unknown)}, which is not in services "
                             f"({', '.join(self.services)})")
        if len(set(named)) != len(named):
            raise ValueError(f"pipeline.images: each service once, got {named}")
        return self

    @model_validator(mode="after")
    def _region_azs(self) -> Stack:
        if self.region:
            for az in self.network.availability_zones:
                if not az.startswith(self.region):
                    raise ValueError(f"network.availability_zones: {az} is not in region {self.region}")
        return self

    @property
    def is_prod(self) -> bool:
        return self.env in ("prod", "production")

    @property
    def nat_mode(self) -> str:
        return self.network.nat_gateways or ("per_az" if self.is_prod else "single")

    @property
    def deletion_protection(self) -> bool:
        d = self.database.deletion_protection
        return self.is_prod if d is None else d

    @property
    def log_retention_days(self) -> int:
        days = self.cluster.log_retention_days
        return (365 if self.is_prod else 90) if days is None else days

    @property
    def public_url(self) -> str | None:
        lb = self.load_balancer
        if lb.public_url:
            return lb.public_url.rstrip("/")
        return f"https://{lb.domain}" if lb.domain and not lb.domain.startswith("*.") else None

    @property
    def uses_app_database_user(self) -> bool:
        """Some service takes the application user's secret: the DB initialisation makes that user."""
        return any(s.uses_app_database_secret for s in self.services.values())

    @property
    def alb_deletion_protection(self) -> bool:
        d = self.load_balancer.deletion_protection
        return self.is_prod if d is None else d

    @property
    def capacity_strategy(self) -> list[CapacityShare]:
        if self.cluster.capacity_strategy is not None:
            return self.cluster.capacity_strategy
        if self.is_prod:
            return [CapacityShare(provider="FARGATE", base=1, weight=1)]
        return [CapacityShare(provider="FARGATE", base=1, weight=1),
                CapacityShare(provider="FARGATE_SPOT", weight=3)]

    def provision_problems(self) -> list[str]:
        """What `up` and `plan` need beyond a valid file (other phases, e.g. images, do not)."""
        lb = self.load_balancer
        if self.is_prod and not (lb.domain or lb.certificate_arn):
            return ["load_balancer: production HTTPS needs a real certificate: set load_balancer.domain (ecsflow "
                    "requests an ACM certificate, validated by DNS) or load_balancer.certificate_arn (an existing "
                    "one); only non-prod stacks fall back to a self-signed certificate"]
        return []
