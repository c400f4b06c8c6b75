"""The deploy tests' ECS stand-in: ecsflow/ecs_standin.py (the product's local stand-in for what ECS
does and moto cannot: run each service's image as a local container, report the rollout done) over
the fault proxy, so a test can inject AWS faults into the same calls."""

from __future__ import annotations

from ecsflow.ecs_standin import LABEL, EcsTasks, LocalLoadBalancer
from tests.support.faultproxy import FaultProxy

__all__ = ["LABEL", "EcsStandIn", "LocalLoadBalancer"]


class EcsStandIn(EcsTasks, FaultProxy):
    def __enter__(self) -> EcsStandIn:
        self.start()
        return self
