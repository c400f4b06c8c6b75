"""The monthly cost estimate: figures for the library stack worked out by hand from the price table
(tasks/prices/ap-northeast-1.yaml: 730 h a month), the capacity-strategy split, and what it says
when it cannot price something. (`ecsflow plan` printing it, and its artifact in the Prefect UI:
tests/test_ui.py.)"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from spec import Stack, load_stack
from tasks import cost
from tests.conftest import LIBRARY_STACK, ROOT

H = 730


def library(edit: Any = None) -> Stack:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    if edit:
        edit(data)
    return Stack.model_validate(data)


def lines(est: cost.Estimate) -> dict[str, float | None]:
    return {line.item: line.monthly_usd for line in est.lines}


def test_library_stack_by_hand() -> None:
    est = cost.estimate(load_stack(LIBRARY_STACK))
    got = lines(est)
    # Fargate x86 on-demand: $0.05056 per vCPU-hour, $0.00553 per GB-hour. The strategy's base of 2
    # on FARGATE applies per service, so both services' 2 tasks run on-demand.
    assert got["Fargate backend"] == pytest.approx(2 * (0.5 * 0.05056 + 1 * 0.00553) * H)  # 44.98
    assert got["Fargate frontend"] == pytest.approx(2 * (0.25 * 0.05056 + 0.5 * 0.00553) * H)  # 22.49
    # db.t4g.medium $0.100/h, Multi-AZ doubles the instance and the 20 GB of gp3 at $0.138.
    assert got["RDS instance"] == pytest.approx(0.100 * H * 2)  # 146.00
    assert got["RDS storage"] == pytest.approx(20 * 0.138 * 2)  # 5.52
    # per_az: 2 NAT gateways at $0.062/h, 50 GB assumed at $0.062/GB; 2 NAT + 2 ALB public IPv4 at $0.005/h.
    assert got["NAT gateways"] == pytest.approx(2 * 0.062 * H)  # 90.52
    assert got["NAT data"] == pytest.approx(50 * 0.062)
    assert got["Public IPv4"] == pytest.approx(4 * 0.005 * H)  # 14.60
    assert got["ALB"] == pytest.approx(0.0243 * H)
    assert got["ALB capacity"] == pytest.approx(1 * 0.008 * H)
    # Logs: 2 services x 5 GB + 2 GB flow logs ingested at $0.76; stored: 12 months (365-day retention,
    # capped at 12) of each, at $0.033.
    assert got["CloudWatch logs"] == pytest.approx(12 * 0.76 + (10 * 12 + 2 * 12) * 0.033)  # 13.87
    assert got["CloudWatch alarms"] == pytest.approx((4 * 2 + 6) * 0.10)
    assert got["ECR storage"] == pytest.approx(2 * 20 * 0.3 * 0.10)  # 1.20
    assert est.total == pytest.approx(367.26, abs=0.01)
    assert est.complete and est.as_of == "2026-11-28" and est.region == "ap-northeast-1"
    text = cost.render_text(est)
    assert text.startswith("Estimated monthly cost: $367.26, ap-northeast-1 prices as of 2026-11-28. "
                           "An estimate, not a bill.")
    assert "not included: data transfer out" in text


def test_spot_share_single_nat_and_single_az() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["env"] = "staging"
        del data["cluster"]["capacity_strategy"]  # staging default: FARGATE base 1 + FARGATE_SPOT weight 3
        data["network"]["nat_gateways"] = "single"
        data["database"]["multi_az"] = False
        data["services"]["backend"]["autoscaling"] = {"min_count": 5, "max_count": 10}
        data["load_balancer"] = {}
        data["cluster"]["log_retention_days"] = 30

    got = lines(cost.estimate(library(edit)))
    # 5 backend tasks: 1 on-demand (the base), the other 4 split 1:3 -> 1 more on-demand, 3 on Spot
    # at 70 % off.
    task = (0.5 * 0.05056 + 1 * 0.00553) * H
    assert got["Fargate backend"] == pytest.approx(2 * task + 3 * task * 0.3)
    assert cost.task_split(5, [("FARGATE", 1, 1), ("FARGATE_SPOT", 3, 0)]) == {"FARGATE": 2.0, "FARGATE_SPOT": 3.0}
    assert got["NAT gateways"] == pytest.approx(1 * 0.062 * H)
    assert got["Public IPv4"] == pytest.approx(3 * 0.005 * H)
    assert got["RDS instance"] == pytest.approx(0.100 * H)
    assert got["RDS storage"] == pytest.approx(20 * 0.138)


def test_unknown_instance_class_is_reported_not_guessed() -> None:
    est = cost.estimate(library(lambda d: d["database"].update(instance_class="db.x2iedn.24xlarge")))
    assert lines(est)["RDS instance"] is None
    assert not est.complete
    assert est.unknown == ["database.instance_class db.x2iedn.24xlarge is not in the price table "
                           "(tasks/prices/ap-northeast-1.yaml); add its hourly price to estimate it"]
    text = cost.render_text(est)
    assert "(incomplete: see unknown)" in text and "RDS instance" in text and "unknown" in text
    # The total is everything else, not a guess for the database.
    assert est.total == pytest.approx(367.26 - 146.00, abs=0.01)
    assert "| RDS instance | db.x2iedn.24xlarge Multi-AZ: unknown price | unknown |" in cost.render_markdown(est)


def test_region_without_a_price_table_says_so() -> None:
    spec = library(lambda d: d.update(region="eu-west-1") or d["network"].update(
        availability_zones=["eu-west-1a", "eu-west-1b"]))
    est = cost.estimate(spec)
    assert est.lines == [] and not est.complete
    assert cost.render_text(est) == ("Estimated monthly cost: not available (no price table for region eu-west-1: "
                                     "ecsflow has ap-northeast-1; add tasks/prices/eu-west-1.yaml to estimate "
                                     "this stack)")


def test_price_table_states_region_date_and_source() -> None:
    table = yaml.safe_load((ROOT / "tasks" / "prices" / "ap-northeast-1.yaml").read_text())
    assert table["region"] == "ap-northeast-1" and table["as_of"] and table["source"]
