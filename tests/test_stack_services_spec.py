"""Stack-file rules of the cluster, services and load balancer sections: every bad input exits 2,
names the file and the field, and makes no AWS call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ecsflow.cli import main
from spec import load_stack
from tasks.aws import CALLS
from tests.conftest import LIBRARY_STACK


def library() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LIBRARY_STACK.read_text())
    return data


def broken(mutate: Any) -> dict[str, Any]:
    data = library()
    mutate(data)
    return data


def backend(**settings: Any) -> Any:
    return lambda d: d["services"]["backend"].update(settings)


CASES = {
    "invalid cpu/memory pair": (broken(backend(cpu=512, memory=512)), "services.backend", "not allowed with cpu 512"),
    "path pattern collision": (broken(lambda d: d["services"]["frontend"].update(path_patterns=["/api/*"])),
                               "services", "path pattern collision: '/api/*' is in services.backend.path_patterns "
                                           "and services.frontend.path_patterns"),
    "two default routes": (broken(backend(path_patterns=["/*"])), "services", "path pattern collision: '/*'"),
    "no health check path": (broken(lambda d: d["services"]["backend"].pop("health_check_path")),
                             "services.backend.health_check_path", "required field is missing"),
    "unknown database secret key": (broken(backend(secrets={"DB_HOST": "database:host"})),
                                    "services.backend.secrets", "DB_HOST: unknown secret reference 'database:host'"),
    "unknown secret reference": (broken(backend(secrets={"API_KEY": "vault:kv/api"})),
                                 "services.backend.secrets", "API_KEY: unknown secret reference 'vault:kv/api'"),
    "secret in plain environment too": (broken(backend(environment={"DB_PASSWORD": "x"})),
                                        "services.backend", "DB_PASSWORD set in both environment and secrets"),
    "catch-all beside other patterns": (broken(lambda d: d["services"]["frontend"].update(
        path_patterns=["/*", "/assets/*"])), "services.frontend.path_patterns", "must be the service's only"),
    "writable root": (broken(backend(writable_paths=["/"])), "services.backend.writable_paths",
                      "absolute directory other than /"),
    "autoscaling bounds": (broken(backend(autoscaling={"min_count": 4, "max_count": 2})),
                           "services.backend.autoscaling", "max_count (2) must be at least min_count (4)"),
    "health check timeout": (broken(backend(health_check_timeout_seconds=20, health_check_interval_seconds=15)),
                             "services.backend", "must be less than health_check_interval_seconds"),
    "two capacity bases": (broken(lambda d: d["cluster"].update(capacity_strategy=[
        {"provider": "FARGATE", "base": 1}, {"provider": "FARGATE_SPOT", "base": 1}])),
        "cluster.capacity_strategy", "only one capacity provider"),
    "short prod log retention": (broken(lambda d: d["cluster"].update(log_retention_days=30)),
                                 "cluster.log_retention_days", "below the 365 days"),
    "domain and certificate": (broken(lambda d: d["load_balancer"].update(
        certificate_arn="arn:aws:acm:ap-northeast-1:123456789012:certificate/abc-123")),
        "load_balancer", "either domain"),
    "non-TLS 1.3 policy": (broken(lambda d: d["load_balancer"].update(ssl_policy="ELBSecurityPolicy-2016-08")),
                           "load_balancer.ssl_policy", "ELBSecurityPolicy-TLS13-"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_service_or_load_balancer_settings_exit_2_naming_the_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, field, problem = CASES[case]
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data))
    CALLS.reset()
    for verb in (["plan"], ["up"], ["down", "--yes"], ["status", "--json"]):
        assert main([*verb, "--stack", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and field in err and problem in err, err
    assert not CALLS.calls, "validation must come before any AWS call"


def test_prod_up_and_plan_need_a_certificate_source_other_phases_and_envs_do_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = library()
    del data["load_balancer"]
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data))
    load_stack(path)  # a valid file: the images phase, status and down can use it
    CALLS.reset()
    for verb in ("plan", "up"):
        assert main([verb, "--stack", str(path)]) == 2
        err = capsys.readouterr().err
        assert "load_balancer.domain" in err and "load_balancer.certificate_arn" in err, err
    assert not CALLS.calls
    data["env"] = "staging"
    data["cluster"].pop("log_retention_days", None)
    path.write_text(yaml.safe_dump(data))
    assert load_stack(path).provision_problems() == [], "outside prod a self-signed certificate stands in"


def test_library_stack_routes_api_to_the_backend_and_the_rest_to_the_frontend() -> None:
    from tasks.load_balancer import default_service, rule_priorities

    stack = load_stack(LIBRARY_STACK)
    assert default_service(stack) == "frontend"
    assert rule_priorities(stack) == {"backend": 10}
    backend_service = stack.services["backend"]
    assert backend_service.uses_database_secret and backend_service.scaling_bounds == (2, 8)
    assert [(s.provider, s.base, s.weight) for s in stack.capacity_strategy] == [("FARGATE", 2, 3),
                                                                                ("FARGATE_SPOT", 0, 1)]
    assert stack.alb_deletion_protection and stack.log_retention_days == 365


def test_priorities_follow_specificity_and_do_not_depend_on_file_order() -> None:
    from tasks.load_balancer import rule_priorities

    data = library()
    data["services"]["admin"] = {**data["services"]["backend"], "path_patterns": ["/api/admin/*"]}
    data["services"]["assets"] = {**data["services"]["frontend"], "path_patterns": ["/assets/*", "/img/*"]}
    first = rule_priorities(load_stack_from(data))
    data["services"] = dict(reversed(list(data["services"].items())))
    assert rule_priorities(load_stack_from(data)) == first == {"admin": 10, "assets": 20, "backend": 30}


def load_stack_from(data: dict[str, Any]) -> Any:
    from spec import Stack

    return Stack.model_validate(data)
