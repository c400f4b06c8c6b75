"""The stack file, as pydantic models: what to build, and nothing about how.

Every model forbids unknown keys so a typo is an error, not a silently ignored
setting. Cross-field rules (CIDRs inside the VPC, distinct AZs, Fargate sizes)
live next to the fields they check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

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

    @model_validator(mode="after")
    def _storage(self) -> Database:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(
                f"max_allocated_storage_gb ({self.max_allocated_storage_gb}) must be at least "
                f"allocated_storage_gb ({self.allocated_storage_gb})"
            )
        if not re.fullmatch(r"\d+(\.\d+)?", self.engine_version):
            raise ValueError(f"engine_version {self.engine_version!r} is not a PostgreSQL version like 16.4")
        return self

    @property
    def major_version(self) -> str:
        return self.engine_version.split(".")[0]


class Registry(Model):
    keep_releases: int = Field(20, ge=1, le=1000, description="Tagged release images kept per repository.")
    untagged_expiry_days: int = Field(1, ge=1)
    scan_on_push: bool = True


class Build(Model):
    context: str = Field(".", description="Docker build context, relative to the stack file.")
    dockerfile: str = Field("Dockerfile", description="Dockerfile path inside the context.")
    args: dict[str, str] = Field(default_factory=dict)


class Service(Model):
    port: int = Field(..., ge=1, le=65535, description="Container port the app listens on.")
    health_check_path: str = Field("/health", pattern=r"^/")
    cpu: int = Field(512, description="Fargate CPU units (256, 512, 1024, ...).")
    memory: int = Field(1024, description="MiB; must be a Fargate pair with cpu.")
    desired_count: int = Field(2, ge=0, le=1000)
    path_patterns: list[str] = Field(default_factory=lambda: ["/*"])
    build: Build = Build()

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
        return self


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
    services: dict[str, Service] = Field(..., min_length=1)

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
        return value

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
