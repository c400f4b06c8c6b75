"""`ecsflow up`: every phase as one DAG, so independent work runs side by side.

    keys (rds, ecr, logs) ─┐
    vpc ─> subnets ─┬─> db subnet group ─> db instance   (the critical path in AWS)
                    ├─> nat gateways ─> route tables ─> s3 endpoint
    vpc ─> security groups ─> rules
    ecr key ─> repositories                               (beside everything)
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.common import StackRun, open_stack, settle
from flows.phase_database import database_outputs, submit_database
from flows.phase_network import network_outputs, submit_network
from flows.phase_registry import submit_registry
from tasks import kms


class ProvisionRun(StackRun):
    skip_images: bool = Field(False, description="Provision everything but the images phase.")


@flow(name="provision", description="Provision or reconcile the whole stack: network, database, registry.")
def provision_flow(params: ProvisionRun = ProvisionRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    keys = {purpose: kms.ensure_key.submit(ctx, purpose) for purpose in ("logs", "rds", "ecr")}
    registry = submit_registry(spec, ctx, keys["ecr"])
    net = submit_network(spec, ctx, keys["logs"])
    db = submit_database(spec, ctx, private_subnets=net.tier("private"),
                         rds_security_group=net.security_groups["sg-rds"], rds_key=keys["rds"])
    settle([*keys.values(), *registry.all(), *net.all(), *db.all()])

    outputs: dict[str, Any] = {"stack": f"{spec.name}-{spec.env}", "region": ctx.region}
    outputs.update(network_outputs(net))
    outputs.update(database_outputs(db))
    outputs["repositories"] = {s: f.result().attrs["uri"] for s, f in registry.repositories.items()}
    publish_outputs(outputs)
    return outputs


def publish_outputs(outputs: dict[str, Any]) -> None:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in outputs.items())
    create_markdown_artifact(key=f"outputs-{outputs['stack']}", description="Stack outputs (no secrets)",
                             markdown=f"# {outputs['stack']} outputs\n\n| output | value |\n|---|---|\n{rows}\n")
