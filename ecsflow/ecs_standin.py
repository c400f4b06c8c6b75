"""A LOCAL STAND-IN for what ECS and the ALB do and moto cannot: run the tasks and route to them.

moto records services and task definitions but starts nothing: a rollout never completes, no
task runs, no target is registered (docs/deploy.md). `ecsflow demo` and the deploy tests put this
proxy between ecsflow and moto (AWS_ENDPOINT_URL points at it; every call is relayed unchanged).
For each service a DescribeServices answer names, it does what ECS would have done by then:

- runs the image the service's task definition names as a real local container (the local
  registry's copy of the ECR image, host networking, the task definition's environment,
  read-only root with volumes at its mount points), replacing the container of the previous
  revision (a rollout), or none at desired count 0;
- registers that task in the service's target group (moto marks registered targets healthy);
- answers with the rollout COMPLETED: one PRIMARY deployment of the current task definition,
  runningCount = desiredCount.

Where the containers listen:
- `load_balancer=False` (one service): on `app_port`, the port of the stack's public URL;
- `load_balancer=True` (several services): each on a port of its own, and a local load balancer
  on `app_port` forwards each request as the ALB's listener rules (read from moto) say: the
  highest-priority rule whose path patterns match, else the default action.

Whether the app is healthy is then decided where it should be: by the deploy's HTTP probe of the
public URL, answered by the real container. Nothing here runs in AWS: it is a local stand-in only
(no secrets are injected, the migration task still only exists in moto, one container per service).
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

LABEL = "io.ecsflow.standin"  # on every container the stand-in starts, so leftovers can be found
LABEL_AT = "io.ecsflow.standin.at"  # which stand-in (its URL) started it: several may run on one engine
# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; lengths are recomputed.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "proxy-connection", "expect"}
Answer = tuple[int, str, list[tuple[str, str]], bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relay(host: str, port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
           timeout: float) -> Answer:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.getheaders(), resp.read()
    finally:
        conn.close()


def forwarded_headers(handler: BaseHTTPRequestHandler) -> list[tuple[str, str]]:
    """The request's headers to pass on: hop-by-hop ones dropped, the length recomputed by `relay`."""
    return [(k, v) for k, v in handler.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"]


def send_relayed(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    """Write an upstream answer back to the caller (no hop-by-hop headers; our own length)."""
    status, reason, headers, data = answer
    handler.send_response(status, reason)
    head = handler.command == "HEAD"
    for name, value in headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP or lname in ("server", "date") or (lname == "content-length" and not head):
            continue
        handler.send_header(name, value)
    if not head:
        handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if not head and data:
        handler.wfile.write(data)


class _HttpRelayServer:
    """A threaded HTTP server on 127.0.0.1 that hands every request to `answer` and sends its reply."""

    def __init__(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]!s}:{self.port}"

    def answer(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        raise NotImplementedError

    def start_serving(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"{type(self).__name__}-{self.port}", daemon=True)
            self._thread.start()

    def stop_serving(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    answer = owner.answer(self.command, self.path, forwarded_headers(self), body)
                except OSError as exc:
                    answer = 502, "Bad Gateway", [("Content-Type", "text/plain")], \
                        f"no answer from upstream: {exc}".encode()
                send_relayed(self, answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        return Handler


class AwsRelay(_HttpRelayServer):
    """Forwards every AWS API call to `target_url` (the moto server) and relays the answer."""

    def __init__(self, target_url: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0) -> None:
        target = urllib.parse.urlsplit(target_url)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"the relay forwards to plain http:// targets, not {target_url!r}")
        self.target_host, self.target_port = target.hostname, target.port or 80
        self.target_url = target_url.rstrip("/")
        self.timeout = timeout
        super().__init__(host, port)

    def answer(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        return self._forward(method, path, headers, body)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        return relay(self.target_host, self.target_port, method, path, headers, body, self.timeout)

    def start(self) -> AwsRelay:
        self.start_serving()
        return self

    def stop(self) -> None:
        self.stop_serving()

    def __enter__(self) -> AwsRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _path_matches(pattern: str, path: str) -> bool:
    """An ALB path-pattern: case-sensitive, `*` any characters (slashes too), `?` exactly one."""
    return fnmatch.fnmatchcase(path, re.sub(r"([\[\]])", r"[\1]", pattern))


class LocalLoadBalancer(_HttpRelayServer):
    """Forwards each request to the container of the target group the ALB's listener rules pick.
    `targets` maps target group ARN -> local port (filled by the ECS stand-in as it starts tasks)."""

    ROUTES_TTL = 2.0  # seconds the listener rules are cached

    def __init__(self, port: int, region: str, endpoint_url: str) -> None:
        self.region, self.endpoint_url = region, endpoint_url
        self.targets: dict[str, int] = {}
        self._routes: list[tuple[list[str] | None, str]] = []  # (path patterns or None for default, TG ARN)
        self._routes_at = 0.0
        self._lock = threading.Lock()
        super().__init__("127.0.0.1", port)

    def _elbv2(self) -> Any:
        return boto3.client("elbv2", region_name=self.region, endpoint_url=self.endpoint_url)

    @staticmethod
    def _forward_target(actions: list[dict[str, Any]]) -> str | None:
        for action in sorted(actions, key=lambda a: a.get("Order", 0)):
            if action.get("Type") != "forward":
                continue
            if action.get("TargetGroupArn"):
                return str(action["TargetGroupArn"])
            groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
            if groups:  # weighted: the heavier group (a blue/green shift is all-or-nothing here)
                return str(max(groups, key=lambda g: g.get("Weight", 1))["TargetGroupArn"])
        return None

    def _read_routes(self) -> list[tuple[list[str] | None, str]]:
        """The production listener's rules in priority order, then its default action. Rules with
        conditions other than path patterns (a blue/green test rule's header) are left out."""
        elbv2 = self._elbv2()
        arns = list(self.targets)
        if not arns:
            return []
        groups = elbv2.describe_target_groups(TargetGroupArns=arns)["TargetGroups"]
        balancers = sorted({lb for g in groups for lb in g.get("LoadBalancerArns", [])})
        routes: list[tuple[list[str] | None, str]] = []
        for balancer in balancers:
            listeners = elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"]
            # The HTTPS listener carries the traffic when there is one (HTTP then only redirects).
            listeners.sort(key=lambda item: (item.get("Protocol") != "HTTPS", item.get("Port", 0)))
            for listener in listeners[:1]:
                rules = elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
                for rule in sorted((r for r in rules if not r.get("IsDefault")), key=lambda r: int(r["Priority"])):
                    conditions = rule.get("Conditions", [])
                    if any(c.get("Field") != "path-pattern" for c in conditions):
                        continue
                    patterns = [p for c in conditions
                                for p in c.get("PathPatternConfig", {}).get("Values") or c.get("Values", [])]
                    target = self._forward_target(rule.get("Actions", []))
                    if target and patterns:
                        routes.append((patterns, target))
                target = self._forward_target(listener.get("DefaultActions", []))
                if target:
                    routes.append((None, target))
        return routes

    def route(self, path: str) -> int | None:
        with self._lock:
            if time.monotonic() - self._routes_at > self.ROUTES_TTL:
                self._routes, self._routes_at = self._read_routes(), time.monotonic()
            routes = list(self._routes)
        bare = urllib.parse.urlsplit(path).path or "/"
        for patterns, target in routes:
            if patterns is None or any(_path_matches(p, bare) for p in patterns):
                return self.targets.get(target)
        return None

    def forget_routes(self) -> None:
        with self._lock:
            self._routes_at = 0.0

    def answer(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        port = self.route(path)
        if port is None:
            return 503, "Service Unavailable", [("Content-Type", "text/plain")], b"no healthy target for this path\n"
        return relay("127.0.0.1", port, method, path, headers, body, 30.0)


@dataclass
class _Task:
    task_definition: str
    container: Any | None
    failure: str = ""  # why its container did not start (not retried until the task definition changes)


class EcsTasks:
    """The ECS part of the stand-in, over any relay to moto that has `_forward` and `target_url`
    (AwsRelay here; the tests' FaultProxy, to inject faults as well)."""

    target_url: str

    def __init__(self, moto_url: str, *, registry: str, app_port: int, region: str,
                 load_balancer: bool = False, registry_auth: dict[str, str] | None = None) -> None:
        super().__init__(moto_url)  # type: ignore[call-arg]
        self.registry = registry
        self.registry_auth = registry_auth  # {"username", "password"}: pulls log in, as ECS's execution role does
        self.app_port = app_port
        self.region = region
        self.started: list[str] = []  # task definitions whose task was started, in order
        self._tasks: dict[str, _Task] = {}
        self._ecs_lock = threading.Lock()
        self.balancer = LocalLoadBalancer(app_port, region, self.target_url) if load_balancer else None
        if self.balancer is not None:
            self.balancer.start_serving()

    def _client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.target_url)  # type: ignore[call-overload]

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        status, reason, resp_headers, data = super()._forward(method, path, headers, body)  # type: ignore[misc]
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
            container, failure = None, ""
            if desired:
                try:
                    container = self._start(service, definition)
                except Exception as exc:  # as ECS: the task does not start, the service says why
                    failure = f"the stand-in could not start {definition}: {str(exc).splitlines()[0][:300]}"
            self._tasks[name] = _Task(wanted, container, failure)
            if container is not None:
                self.started.append(definition)
            current = self._tasks[name]
        running = 0 if current.failure else desired
        service["runningCount"], service["pendingCount"] = running, 0
        service["deployments"] = [{
            "id": f"ecs-svc/standin-{definition.rsplit(':', 1)[-1]}", "status": "PRIMARY",
            "taskDefinition": definition, "desiredCount": desired, "runningCount": running, "pendingCount": 0,
            "failedTasks": desired - running, "rolloutState": "FAILED" if current.failure else "COMPLETED",
            "rolloutStateReason": current.failure or "ECS deployment completed."}]

    def _start(self, service: dict[str, Any], definition: str) -> Any:
        import docker
        from docker.types import Mount

        td = self._client("ecs").describe_task_definition(taskDefinition=definition)["taskDefinition"]
        container = td["containerDefinitions"][0]
        # ECR's host is not reachable here; the images went to the local registry under the same name.
        image = f"{self.registry}/{container['image'].split('/', 1)[1]}"
        balancers = service.get("loadBalancers", [])
        port = _free_port() if self.balancer is not None else self.app_port
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        env["PORT"] = str(port)
        volumes = {v["name"] for v in td.get("volumes", [])}
        mounts = [Mount(target=m["containerPath"], source=None, type="volume")
                  for m in container.get("mountPoints", []) if m["sourceVolume"] in volumes]
        client = docker.from_env()
        try:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:  # built elsewhere (or the registry's port changed): pull it
                client.images.pull(image, auth_config=self.registry_auth)
            run = client.containers.run(image, detach=True, network_mode="host", environment=env,
                                        read_only=bool(container.get("readonlyRootFilesystem")), mounts=mounts,
                                        labels={LABEL: service["serviceName"], LABEL_AT: getattr(self, "url", "")})
        finally:
            client.close()
        # One container answers for every task ECS would run: a target per desired task.
        tasks = max(int(service.get("desiredCount") or 1), 1)
        for lb in balancers:
            self._client("elbv2").register_targets(
                TargetGroupArn=lb["targetGroupArn"],
                Targets=[{"Id": f"10.0.10.{10 + i}", "Port": lb["containerPort"]} for i in range(tasks)])
            if self.balancer is not None:
                self.balancer.targets[lb["targetGroupArn"]] = port
                self.balancer.forget_routes()
        return run

    @staticmethod
    def _remove(container: Any) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)

    def running(self) -> dict[str, str]:
        """Service name -> the task definition its local container runs."""
        with self._ecs_lock:
            return {name: task.task_definition for name, task in self._tasks.items() if task.container is not None}

    def stop(self) -> None:
        with self._ecs_lock:
            for task in self._tasks.values():
                if task.container is not None:
                    self._remove(task.container)
            self._tasks.clear()
        if self.balancer is not None:
            self.balancer.stop_serving()
        super().stop()  # type: ignore[misc]


class EcsStandIn(EcsTasks, AwsRelay):
    """The stand-in over a plain relay: point AWS_ENDPOINT_URL at `.url`."""

    def __enter__(self) -> EcsStandIn:
        self.start()
        return self
