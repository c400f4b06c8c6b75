"""A STAND-IN for what ECS does and moto cannot: run the tasks.

moto records services and task definitions but starts nothing: a rollout never completes,
no task runs, no target is registered (see docs/deploy.md). Deploy tests put this proxy in front
of moto (it is a FaultProxy, so faults can be injected too). For each service a DescribeServices
call reads, it does what ECS would have done by then:

- runs the image the service's task definition names as a real local container (the local
  registry's copy of the ECR image, host networking, the task definition's environment,
  read-only root with volumes at its mount points), on the port of the stack's public URL,
  replacing the container of the previous revision (a rollout), or none at desired count 0;
- registers that task in the service's target group (moto marks registered targets healthy);
- answers with the rollout COMPLETED: one PRIMARY deployment of the current task definition,
  runningCount = desiredCount.

Whether the app is healthy is then decided where it should be: by the HTTP probe of the public
URL, answered by the real container.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import boto3

from tests.support.faultproxy import FaultProxy


@dataclass
class _Task:
    task_definition: str
    container: Any | None


class EcsStandIn(FaultProxy):
    def __init__(self, moto_url: str, *, registry: str, app_port: int, region: str) -> None:
        super().__init__(moto_url)
        self.registry = registry
        self.app_port = app_port
        self.region = region
        self.started: list[str] = []  # task definitions whose task was started, in order
        self._tasks: dict[str, _Task] = {}
        self._ecs_lock = threading.Lock()

    def _client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.target_url)  # type: ignore[call-overload]

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        status, reason, resp_headers, data = super()._forward(method, path, headers, body)
        target = next((v for k, v in headers if k.lower() == "x-amz-target"), "")
        if status == 200 and target.endswith(".DescribeServices"):
            doc = json.loads(data)
            with self._ecs_lock:
                for service in doc.get("services", []):
                    self._run(service)
            data = json.dumps(doc).encode()
        return status, reason, resp_headers, data

    def _run(self, service: dict[str, Any]) -> None:
        if service.get("status") != "ACTIVE":
            return
        name, definition = service["serviceName"], service["taskDefinition"]
        desired = int(service.get("desiredCount") or 0)
        current = self._tasks.get(name)
        wanted = definition if desired else ""
        if current is None or current.task_definition != wanted:
            if current is not None and current.container is not None:
                self._remove(current.container)
            container = self._start(service, definition) if desired else None
            self._tasks[name] = _Task(wanted, container)
            if desired:
                self.started.append(definition)
        service["runningCount"], service["pendingCount"] = desired, 0
        service["deployments"] = [{
            "id": f"ecs-svc/standin-{definition.rsplit(':', 1)[-1]}", "status": "PRIMARY",
            "taskDefinition": definition, "desiredCount": desired, "runningCount": desired, "pendingCount": 0,
            "failedTasks": 0, "rolloutState": "COMPLETED", "rolloutStateReason": "ECS deployment completed."}]

    def _start(self, service: dict[str, Any], definition: str) -> Any:
        import docker
        from docker.types import Mount

        td = self._client("ecs").describe_task_definition(taskDefinition=definition)["taskDefinition"]
        container = td["containerDefinitions"][0]
        # ECR's host is not reachable here; the images went to the local registry under the same name.
        image = f"{self.registry}/{container['image'].split('/', 1)[1]}"
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        env["PORT"] = str(self.app_port)
        volumes = {v["name"] for v in td.get("volumes", [])}
        mounts = [Mount(target=m["containerPath"], source=None, type="volume")
                  for m in container.get("mountPoints", []) if m["sourceVolume"] in volumes]
        client = docker.from_env()
        try:
            run = client.containers.run(image, detach=True, network_mode="host", environment=env,
                                        read_only=bool(container.get("readonlyRootFilesystem")), mounts=mounts,
                                        labels={"io.ecsflow.test": "ecs-standin"})
        finally:
            client.close()
        for lb in service.get("loadBalancers", []):
            self._client("elbv2").register_targets(TargetGroupArn=lb["targetGroupArn"],
                                                   Targets=[{"Id": "10.0.10.10", "Port": lb["containerPort"]}])
        return run

    @staticmethod
    def _remove(container: Any) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)

    def stop(self) -> None:
        with self._ecs_lock:
            for task in self._tasks.values():
                if task.container is not None:
                    self._remove(task.container)
            self._tasks.clear()
        super().stop()
