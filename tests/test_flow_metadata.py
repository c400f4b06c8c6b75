"""What the Prefect UI shows of each flow, deployment and task: names, descriptions, tags and a
parameter form that explains every field. Pure imports: no server."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow, Task
from pydantic import BaseModel

import flows
import tasks
from tests.conftest import ROOT

DEPLOYMENTS: list[dict[str, Any]] = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def flows_in(module_name: str) -> dict[str, Flow[Any, Any]]:
    module = importlib.import_module(module_name)
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, Flow) and obj.fn.__module__ == module_name}


def every_flow() -> dict[str, Flow[Any, Any]]:
    """Each flow of flows/*.py and each flow a deployment names, by module:function."""
    found = {f"flows.{m.name}:{name}": f for m in pkgutil.iter_modules(flows.__path__)
             for name, f in flows_in(f"flows.{m.name}").items()}
    for deployment in DEPLOYMENTS:
        path, function = deployment["entrypoint"].split(":")
        module = Path(path).with_suffix("").as_posix().replace("/", ".")
        found[f"{module}:{function}"] = getattr(importlib.import_module(module), function)
    return found


FLOWS = every_flow()


def test_the_flows_are_found() -> None:
    names = {f.name for f in FLOWS.values()}
    assert {"provision", "plan", "teardown", "deploy_app", "audit", "restore-test", "backup"} <= names
    assert len(FLOWS) >= len(DEPLOYMENTS)


@pytest.mark.parametrize("where", sorted(FLOWS))
def test_each_flow_has_a_name_a_description_and_one_parameter_model(where: str) -> None:
    flow = FLOWS[where]
    assert isinstance(flow, Flow), f"{where} is not a Prefect flow"
    assert flow.name and flow.name != flow.fn.__name__, f"{where}: give @flow an explicit name="
    assert flow.description and len(flow.description) > 20, f"{where}: give @flow a description= the UI shows"
    parameters = list(inspect.signature(flow.fn).parameters.values())
    assert len(parameters) == 1, f"{where}: one parameter, a pydantic model (the UI renders it as a form)"
    model = parameters[0].annotation
    if isinstance(model, str):
        model = flow.fn.__globals__[model]
    assert isinstance(model, type) and issubclass(model, BaseModel), f"{where}: the parameter is not a pydantic model"
    undescribed = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not undescribed, f"{where}: {model.__name__} fields without a description: {undescribed}"
    assert parameters[0].default is not inspect.Parameter.empty, f"{where}: the model needs a default"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_each_deployment_has_tags_and_a_description(deployment: dict[str, Any]) -> None:
    assert len((deployment.get("description") or "").strip()) > 20, deployment["name"]
    tags = deployment.get("tags") or []
    assert "ecsflow" in tags and len(tags) >= 2, f"{deployment['name']}: tags say what it is beside 'ecsflow'"
    flow = FLOWS[deployment["entrypoint"].replace("/", ".").replace(".py:", ":")]
    assert deployment["name"] in {flow.name, flow.name.replace("_", "-")}, (
        f"deployment {deployment['name']} runs flow {flow.name}: name them alike")


def every_task() -> dict[str, Task[Any, Any]]:
    found = {}
    for m in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{m.name}")
        found |= {f"tasks.{m.name}.{name}": obj for name, obj in vars(module).items()
                  if isinstance(obj, Task) and obj.fn.__module__ == module.__name__}
    return found


TASKS = every_task()


def test_every_task_run_name_says_what_it_acts_on() -> None:
    assert len(TASKS) > 50
    unnamed = [where for where, task in TASKS.items() if not isinstance(task.task_run_name, str)]
    assert not unnamed, f"tasks without a task_run_name: {unnamed}"
    # A task given a found resource (`observed`) names it: "delete db instance library-prod-db".
    vague = [f"{where}: {task.task_run_name!r}" for where, task in TASKS.items()
             if _annotation(task, "observed") == "Observed"
             and not re.search(r"\{observed\.(name|id)\}", str(task.task_run_name))]
    assert not vague, vague
    # Each placeholder is a parameter of the task (else the run fails to start).
    for where, task in TASKS.items():
        for placeholder in re.findall(r"\{(\w+)", str(task.task_run_name)):
            assert placeholder in inspect.signature(task.fn).parameters, f"{where}: {{{placeholder}}}"


def _annotation(task: Task[Any, Any], parameter: str) -> str | None:
    found = inspect.signature(task.fn).parameters.get(parameter)
    return None if found is None else str(getattr(found.annotation, "__name__", found.annotation))
