"""deployments/ecs-work-pool.json: a base job template the prefect-aws ECS worker accepts, whose
defaults run flows as Fargate tasks in private subnets without a public IP."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

pytestmark = pytest.mark.prefect  # rendering a job template asks the API for block references
TEMPLATE = Path(__file__).resolve().parent.parent / "deployments" / "ecs-work-pool.json"


def template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text()))


def test_the_template_keeps_every_variable_of_the_installed_ecs_worker() -> None:
    """An upgrade of prefect-aws that adds or renames a variable fails here: refresh the file from
    `prefect work-pool get-default-base-job-template --type ecs` and put the defaults back."""
    default = ECSWorker.get_default_base_job_template()
    ours = template()
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    assert set(ours["job_configuration"]) == set(default["job_configuration"])


def test_the_rendered_job_runs_in_private_subnets_without_a_public_ip() -> None:
    values = {"vpc_id": "vpc-0abc", "cluster": "library-prod-runner",
              "network_configuration": {"subnets": ["subnet-0a", "subnet-0b"], "securityGroups": ["sg-0runner"],
                                        "assignPublicIp": "DISABLED"}}
    config = asyncio.run(ECSJobConfiguration.from_template_and_values(template(), values))
    assert isinstance(config, ECSJobConfiguration)
    assert config.network_configuration == values["network_configuration"]
    assert config.vpc_id == "vpc-0abc"
    assert config.task_definition["networkMode"] == "awsvpc"
    assert config.task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert config.task_definition["executionRoleArn"].endswith(":role/ecsflow-runner-execution")
    assert config.task_run_request["overrides"]["taskRoleArn"].endswith(":role/ecsflow-runner-task")
    assert config.task_run_request["launchType"] == "FARGATE"
    assert config.task_run_request["cluster"] == "library-prod-runner"
    assert config.configure_cloudwatch_logs is True
    assert config.cloudwatch_logs_options["awslogs-create-group"] == "false"
    assert config.env["ECSFLOW_HOME"] == "/opt/ecsflow"

    # Left to its defaults the template never asks for a public IP either.
    defaults = asyncio.run(ECSJobConfiguration.from_template_and_values(template(), {}))
    assert defaults.network_configuration["assignPublicIp"] == "DISABLED"


def test_the_prefect_server_accepts_it_as_an_ecs_pool() -> None:
    name = f"ecsflow-test-ecs-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="ecs", base_job_template=template()))
        pool = client.read_work_pool(name)
        client.delete_work_pool(name)
    assert pool.type == "ecs"
    variables = pool.base_job_template["variables"]["properties"]
    assert variables["network_configuration"]["default"]["assignPublicIp"] == "DISABLED"
