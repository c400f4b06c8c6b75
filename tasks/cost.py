"""The stack's estimated monthly cost, from the price table kept in tasks/prices/{region}.yaml.

Pure: no AWS call (no Price List API, no Cost Explorer). It prices what the stack file
configures at its steady state: each service's configured task count (autoscaling may run
more), split between Fargate and Fargate Spot by the cluster's capacity strategy; the RDS
instance (Multi-AZ doubles instance and storage); the NAT gateways and the public IPv4
addresses; the ALB; CloudWatch logs and alarms; ECR storage. Usage the file cannot know
(NAT data, LCUs, log volume, image size) comes from the table's stated assumptions.

An instance class or region missing from the table is reported as unknown and left out of
the total (which then says it is incomplete); nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from spec import Stack

PRICES_DIR = Path(__file__).with_name("prices")
NOT_INCLUDED = ("data transfer out to the internet", "KMS keys", "Secrets Manager secrets",
                "Container Insights metrics", "backup storage beyond the free allowance", "Route 53 / ACM / WAF",
                "savings plans, reserved instances and the free tier")


@dataclass(frozen=True)
class CostLine:
    item: str
    detail: str
    monthly_usd: float | None  # None: not in the price table


@dataclass
class Estimate:
    region: str
    as_of: str | None
    source: str | None
    lines: list[CostLine] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return round(sum(line.monthly_usd for line in self.lines if line.monthly_usd is not None), 2)

    @property
    def complete(self) -> bool:
        return not self.unknown


@cache
def price_table(region: str) -> dict[str, Any] | None:
    path = PRICES_DIR / f"{region}.yaml"
    if not path.is_file():
        return None
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def task_split(count: float, strategy: list[tuple[str, int, int]]) -> dict[str, float]:
    """Tasks per capacity provider for one service: the base first, the rest by weight.
    strategy: (provider, weight, base). ECS applies a strategy's base per service."""
    split = dict.fromkeys((p for p, _, _ in strategy), 0.0)
    rest = float(count)
    for provider, _, base in strategy:
        placed = min(rest, float(base))
        split[provider] += placed
        rest -= placed
    weights = sum(w for _, w, _ in strategy)
    for provider, weight, _ in strategy:
        split[provider] += rest * weight / weights if weights else 0.0
    return split


def configured_count(spec: Stack, service: str) -> int:
    """The count the service runs at once it has an image (autoscaling's min when it is on)."""
    svc = spec.services[service]
    if not svc.autoscaling.enabled:
        return svc.desired_count
    low, high = svc.scaling_bounds
    return min(max(svc.desired_count, low), high)


def estimate(spec: Stack, region: str | None = None) -> Estimate:
    region = region or spec.region or ""
    table = price_table(region)
    if table is None:
        known = sorted(p.stem for p in PRICES_DIR.glob("*.yaml"))
        return Estimate(region=region, as_of=None, source=None,
                        unknown=[f"no price table for region {region or '(unset)'}: ecsflow has {', '.join(known)}; "
                                 f"add tasks/prices/{region or 'REGION'}.yaml to estimate this stack"])
    hours = float(table["hours_per_month"])
    assume = table["assumptions"]
    est = Estimate(region=region, as_of=str(table["as_of"]), source=table.get("source"), assumptions=dict(assume))
    add = est.lines.append

    strategy: list[tuple[str, int, int]] = [(s.provider, s.weight, s.base) for s in spec.capacity_strategy]
    spot_factor = 1.0 - float(table["fargate"]["spot_discount"])
    for name, svc in spec.services.items():
        rates = table["fargate"][svc.cpu_architecture]
        count = configured_count(spec, name)
        split = task_split(count, strategy)
        vcpu, gb = svc.cpu / 1024, svc.memory / 1024
        per_task = (vcpu * rates["vcpu"] + gb * rates["gb"]) * hours
        cost = per_task * (split.get("FARGATE", 0.0) + split.get("FARGATE_SPOT", 0.0) * spot_factor)
        shares = ", ".join(f"{n:g} {p}" for p, n in split.items() if n)
        add(CostLine(f"Fargate {name}",
                     f"{count} x {vcpu:g} vCPU / {gb:g} GB {svc.cpu_architecture} ({shares or '0'})", cost))

    db = spec.database
    copies = 2 if db.multi_az else 1
    az = "Multi-AZ" if db.multi_az else "Single-AZ"
    hourly = table["rds_postgresql"].get(db.instance_class)
    if hourly is None:
        est.unknown.append(f"database.instance_class {db.instance_class} is not in the price table "
                           f"(tasks/prices/{region}.yaml); add its hourly price to estimate it")
        add(CostLine("RDS instance", f"{db.instance_class} {az}: unknown price", None))
    else:
        add(CostLine("RDS instance", f"{db.instance_class} {az}", float(hourly) * hours * copies))
    add(CostLine("RDS storage", f"{db.allocated_storage_gb} GB gp3 {az}",
                 db.allocated_storage_gb * float(table["rds_gp3_gb_month"]) * copies))

    nats = len(spec.network.availability_zones) if spec.nat_mode == "per_az" else 1
    add(CostLine("NAT gateways", f"{nats} x {hours:g} h", nats * float(table["nat_gateway_hour"]) * hours))
    add(CostLine("NAT data", f"{assume['nat_gb_month']:g} GB processed (assumed)",
                 float(assume["nat_gb_month"]) * float(table["nat_gateway_gb"])))
    ips = nats + int(assume["alb_public_ips"])
    add(CostLine("Public IPv4", f"{ips} addresses ({nats} NAT, {assume['alb_public_ips']} ALB)",
                 ips * float(table["public_ipv4_hour"]) * hours))

    add(CostLine("ALB", f"{hours:g} h", float(table["alb_hour"]) * hours))
    add(CostLine("ALB capacity", f"{assume['alb_lcu']:g} LCU (assumed)",
                 float(assume["alb_lcu"]) * float(table["alb_lcu_hour"]) * hours))

    ingest = float(assume["log_gb_month_per_service"]) * len(spec.services)
    flow = float(assume["flow_log_gb_month"]) if spec.network.flow_logs.enabled else 0.0
    cap = float(assume["log_months_kept_max"])
    stored = (ingest * min(spec.log_retention_days / 30, cap)
              + flow * min(spec.network.flow_logs.retention_days / 30, cap))
    add(CostLine("CloudWatch logs", f"{ingest + flow:g} GB/month ingested, {stored:.0f} GB stored (assumed)",
                 (ingest + flow) * float(table["logs_ingest_gb"]) + stored * float(table["logs_storage_gb_month"])))
    alarms = int(assume["alarms_per_service"]) * len(spec.services) + int(assume["alarms_per_stack"])
    add(CostLine("CloudWatch alarms", f"{alarms} alarms (assumed)", alarms * float(table["alarm_month"])))

    images = len(spec.services) * spec.registry.keep_releases * float(assume["image_gb"])
    add(CostLine("ECR storage", f"{images:g} GB ({spec.registry.keep_releases} releases x {len(spec.services)} "
                 f"repositories, assumed {assume['image_gb']:g} GB each)",
                 images * float(table["ecr_storage_gb_month"])))
    return est


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def headline(est: Estimate) -> str:
    if est.as_of is None:
        return "Estimated monthly cost: not available (" + "; ".join(est.unknown) + ")"
    partial = " (incomplete: see unknown)" if est.unknown else ""
    return (f"Estimated monthly cost: {_usd(est.total)}{partial}, {est.region} prices as of {est.as_of}. "
            f"An estimate, not a bill.")


def render_text(est: Estimate) -> str:
    lines = [headline(est)]
    width = max((len(line.item) for line in est.lines), default=0)
    lines += [f"  {line.item:<{width}}  {_usd(line.monthly_usd):>11}  {line.detail}" for line in est.lines]
    lines += [f"  unknown: {u}" for u in est.unknown if est.as_of is not None]
    if est.as_of is not None:
        lines.append(f"  not included: {', '.join(NOT_INCLUDED)}")
    return "\n".join(lines)


def render_markdown(est: Estimate) -> str:
    lines = ["## Estimated monthly cost", "", f"**{headline(est)}**", ""]
    if est.as_of is None:
        return "\n".join(lines) + "\n"
    lines += ["| item | detail | USD / month |", "|---|---|---:|"]
    lines += [f"| {line.item} | {line.detail} | {_usd(line.monthly_usd)} |" for line in est.lines]
    lines += [f"| **total** | {'incomplete' if est.unknown else ''} | **{_usd(est.total)}** |", ""]
    lines += [f"- unknown: {u}" for u in est.unknown]
    lines += [f"- price table: tasks/prices/{est.region}.yaml ({est.source}; as of {est.as_of})",
              "- assumptions: " + ", ".join(f"{k} {v}" for k, v in est.assumptions.items()),
              f"- not included: {', '.join(NOT_INCLUDED)}"]
    return "\n".join(lines) + "\n"


def as_dict(est: Estimate) -> dict[str, Any]:
    """For JSON and flow results: plain values only."""
    return {"region": est.region, "as_of": est.as_of, "total_usd": est.total, "complete": est.complete,
            "lines": [{"item": line.item, "detail": line.detail, "monthly_usd": line.monthly_usd}
                      for line in est.lines],
            "unknown": list(est.unknown), "estimate": True}
