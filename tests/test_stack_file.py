"""Bad stack files: exit 2, a message naming the file and the field, and not one AWS call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ecsflow.cli import main
from tasks.aws import CALLS
from tests.conftest import LIBRARY_STACK


def library() -> dict:
    return yaml.safe_load(LIBRARY_STACK.read_text())


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def broken(mutate) -> dict:
    data = library()
    mutate(data)
    return data


CASES = {
    "unknown key": (broken(lambda d: d["network"].update(vpc_cidrr="10.0.0.0/16")),
                    "network.vpc_cidrr", "unknown key"),
    "bad cidr": (broken(lambda d: d["network"].update(vpc_cidr="10.0.0.300/16")),
                 "network.vpc_cidr", "not an IPv4 network"),
    "subnet outside the vpc": (broken(lambda d: d["network"].update(private_subnets=["10.0.10.0/24", "10.9.0.0/24"])),
                               "network", "not inside vpc_cidr"),
    "overlapping subnets": (broken(lambda d: d["network"].update(private_subnets=["10.0.0.0/25", "10.0.11.0/24"])),
                            "network", "subnets overlap"),
    "one az": (broken(lambda d: d["network"].update(availability_zones=["ap-northeast-1a", "ap-northeast-1a"])),
               "network", "two distinct zones"),
    "missing service port": (broken(lambda d: d["services"]["backend"].pop("port")),
                             "services.backend.port", "required field is missing"),
    "fargate size": (broken(lambda d: d["services"]["frontend"].update(cpu=256, memory=4096)),
                     "services.frontend", "not allowed with cpu 256"),
    "az outside the region": (broken(lambda d: d["network"].update(availability_zones=["us-east-1a", "us-east-1b"])),
                              "network.availability_zones", "not in region ap-northeast-1"),
    "yaml syntax": ("name: library\nnetwork: [unclosed\n", "", "YAML syntax error at line"),
    "image of no service": (broken(lambda d: d["pipeline"].update(images=[{"service": "api", "context": "api"}])),
                            "pipeline", "names api, which is not in services"),
    "check without commands": (broken(lambda d: d["pipeline"]["checks"][0].pop("run")),
                               "pipeline.checks[0].run", "required"),
    "php extensions without php": (broken(lambda d: d["pipeline"]["checks"][1].update(php_extensions="intl")),
                                   "pipeline.checks[1]", "php_extensions needs php_version"),
    "two checks of one name": (broken(lambda d: d["pipeline"]["checks"][1].update(name="backend")),
                               "pipeline.checks", "a name of its own"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_stack_file_exits_2_naming_the_field_with_no_aws_call(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, field, problem = CASES[case]
    path = write(tmp_path, data)
    CALLS.reset()
    for verb in (["plan"], ["up"], ["down", "--yes"], ["status", "--json"]):
        assert main([*verb, "--stack", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err
        assert field in err
        assert problem in err
    assert not CALLS.calls, "validation must come before any AWS call"


def test_unreadable_file_and_unknown_option_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--stack", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the stack file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["up", "--stack", str(LIBRARY_STACK), "--no-such-flag"])
    assert exc.value.code == 2


def test_down_without_yes_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    CALLS.reset()
    assert main(["down", "--stack", str(LIBRARY_STACK)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert not CALLS.calls


def test_schema_is_printed_and_describes_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Stack"
    assert {"name", "env", "network", "services"} <= set(schema["required"])
    assert schema["additionalProperties"] is False


def test_library_stack_is_valid_and_prod_defaults_are_safe() -> None:
    from spec import load_stack

    stack = load_stack(LIBRARY_STACK)
    assert stack.region == "ap-northeast-1" and stack.env == "prod"
    assert stack.services["backend"].port == 8080 and stack.services["backend"].health_check_path == "/api/health"
    assert stack.services["frontend"].port == 80 and stack.services["frontend"].health_check_path == "/health"
    assert stack.nat_mode == "per_az" and stack.deletion_protection is True


def test_defaults_assume_no_framework_the_library_names_its_own() -> None:
    """Without a stack file saying so, nothing is cached at the edge and errors are the usual upper-case
    level words; the library's stack file names its Nuxt/Laravel paths and Monolog's format."""
    from spec import Stack, load_stack

    data = library()
    for section, keys in (("monitoring", ["app_error_pattern"]), ("pipeline", ["checks"])):
        for key in keys:
            data[section].pop(key)
    data["load_balancer"].pop("cdn")
    neutral = Stack.model_validate(data)
    assert neutral.load_balancer.cdn.static_paths == [] and neutral.load_balancer.cdn.uncached_paths == []
    assert neutral.monitoring.app_error_pattern == "?ERROR ?CRITICAL ?FATAL"
    assert neutral.pipeline is not None and neutral.pipeline.checks == []
    assert [(i.service, i.context) for i in neutral.pipeline.images_for(list(neutral.services))] == [
        ("backend", "backend"), ("frontend", "frontend")]

    stack = load_stack(LIBRARY_STACK)
    assert stack.load_balancer.cdn.static_paths == ["/_nuxt/*", "/assets/*"]
    assert stack.load_balancer.cdn.uncached_paths == ["/api/*"]
    assert stack.monitoring.app_error_pattern == '?".ERROR:" ?".CRITICAL:" ?".ALERT:" ?".EMERGENCY:"'
