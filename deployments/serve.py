"""Serve every ecsflow deployment from this process (one machine, no work pool):

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve [--stack stacks/library.yaml]

Runs started from the Prefect UI are executed here. prefect.yaml declares the same
deployments for a work pool.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.deploy_app import deploy_app_flow
from flows.phase_database import database_flow
from flows.phase_network import network_flow
from flows.phase_registry import registry_flow
from flows.plan_stack import plan_flow
from flows.provision import provision_flow
from flows.rollback import rollback_flow
from flows.teardown import teardown_flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", default="stacks/library.yaml", help="default stack file for the run forms")
    args = parser.parse_args()
    stack = {"params": {"stack_file": args.stack}}
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    serve(
        provision_flow.to_deployment("provision", parameters=stack, tags=["ecsflow", "provision"]),
        plan_flow.to_deployment("plan", parameters=stack, tags=["ecsflow", "plan"]),
        teardown_flow.to_deployment("teardown", parameters={"params": {"stack_file": args.stack, "confirm": False}},
                                    tags=["ecsflow", "teardown"]),
        network_flow.to_deployment("network", parameters=stack, tags=["ecsflow", "phase"]),
        database_flow.to_deployment("database", parameters=stack, tags=["ecsflow", "phase"]),
        registry_flow.to_deployment("registry", parameters=stack, tags=["ecsflow", "phase"]),
        # Started by the webhook receiver; one run at a time, a newer push waits (as in prefect.yaml).
        deploy_app_flow.to_deployment("deploy-app", parameters=stack, tags=["ecsflow", "deploy"],
                                      concurrency_limit=one_at_a_time),
        rollback_flow.to_deployment("rollback", parameters=stack, tags=["ecsflow", "deploy", "rollback"],
                                    concurrency_limit=one_at_a_time),
    )


if __name__ == "__main__":
    main()
