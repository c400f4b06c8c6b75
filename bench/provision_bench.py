"""How close does `up` get to its critical path? A benchmark, not a test.

    uv run python -m bench.provision_bench [--latency 0.025] [--scale 1.0] [--json PATH]
                                           [--skip-images] [--timeline] [--verbose]

Starts its own moto server and Prefect server (temporary directories), puts a FaultProxy
in front of moto that adds a per-call latency and holds AWS's slow operations for a while
(SLOW_OPERATIONS below), then:

1. runs `provision_flow` (the product's real DAG, default thread pool) on an empty account:
   makespan, API calls;
2. reads what Prefect recorded for that flow run (task runs, their start/end times and
   `task_inputs`), builds the dependency graph and its critical path (the longest chain of
   task durations), and shows where the rest of the makespan went;
3. runs `up` again on the same account: a no-op, so zero mutating calls, and at most 2 calls per
   resource `ecsflow plan` lists (counted by a plan run after it, not measured);
4. resets moto and runs the same flow with a one-thread task runner: the sequential baseline.

Before each run moto's service backends are warmed (moto builds them on a service's first
request, ~3 s for EC2: AWS has no such cost) and ecsflow's cached boto3 clients are dropped
(each run starts like a fresh `ecsflow up` process, which builds its clients).

Headline figures are ratios (makespan / critical path, goal <= 1.15; sequential / parallel);
absolute seconds depend on the machine and on the injected delays. The critical path comes
from the durations Prefect recorded in the parallel run, which CPU contention stretches; the
"uncontended" critical path uses each task's duration from the one-worker run instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

from ecsflow.local import MotoServer, PrefectServer
from tests.support.faultproxy import FaultProxy

# Seconds each of these operations is held by the proxy (times --scale), standing in for AWS's
# slow operations. Real AWS takes ~5-15 min for a Multi-AZ RDS instance and ~1-3 min for a NAT
# gateway; the ratios between them, not the absolute times, are what shape the DAG.
SLOW_OPERATIONS: dict[str, float] = {
    "CreateDBInstance": 6.0,  # the slowest: the database is the critical path in AWS
    "CreateNatGateway": 3.0,
    "CreateVpc": 0.5,
    "CreateRepository": 0.5,
    "CreateKey": 0.5,
    "CreateDBSubnetGroup": 0.5,
    "CreateFlowLogs": 0.5,
}
DEFAULT_LATENCY = 0.025  # seconds added to every API call (a round trip to a nearby AWS region)
MAKESPAN_GOAL = 1.15  # makespan / critical path
READS_PER_RESOURCE_GOAL = 2.0  # calls of a no-op re-run per resource `ecsflow plan` lists

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "stacks" / "library.yaml"


# ---------------------------------------------------------------- what Prefect recorded


@dataclass
class TaskSpan:
    id: str
    name: str
    start: float  # epoch seconds
    end: float
    upstream: list[str]  # task runs of this flow run it waited for: its parameters and wait_for
    parents: list[str]  # __parents__: task runs it ran inside (submitted from a task); not waited for
    state: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class RunRecord:
    label: str
    flow_run_id: str
    wall: float  # client-side wall time of the flow call
    called: float  # epoch seconds when the flow was called and when the call returned
    returned: float
    flow_start: float  # the server's flow run start/end (epoch seconds)
    flow_end: float
    tasks: list[TaskSpan]
    calls_total: int = 0
    calls_mutating: int = 0
    mutating_calls: dict[str, int] = field(default_factory=dict)
    proxy_calls: dict[str, int] = field(default_factory=dict)

    @property
    def first_start(self) -> float:
        return min(t.start for t in self.tasks)

    @property
    def last_end(self) -> float:
        return max(t.end for t in self.tasks)

    @property
    def task_span(self) -> float:
        return self.last_end - self.first_start

    @property
    def flow_span(self) -> float:
        return self.flow_end - self.flow_start


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def read_run(flow_run_id: UUID, timeout: float = 60.0) -> tuple[float, float, list[TaskSpan]]:
    """The flow run's start/end and its task runs, once the server has recorded all of them
    (task states reach the server as events, a little after the flow call returns)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    deadline = time.monotonic() + timeout
    previous: int | None = None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            runs: list[Any] = []
            while True:
                page = client.read_task_runs(
                    task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])),
                    limit=200, offset=len(runs))
                runs += page
                if len(page) < 200:
                    break
            settled = (flow_run.end_time is not None and runs
                       and all(r.state is not None and r.state.is_final() and r.start_time and r.end_time
                               for r in runs))
            if settled and previous == len(runs):
                break
            previous = len(runs) if settled else None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server had not recorded flow run {flow_run_id} after {timeout:.0f}s")
            time.sleep(0.5)

    ids = {str(r.id) for r in runs}
    tasks = []
    for r in runs:
        linked = {key: {str(i.id) for i in inputs if getattr(i, "input_type", None) == "task_run" and str(i.id) in ids}
                  for key, inputs in r.task_inputs.items()}
        parents = linked.pop("__parents__", set())
        upstream = set().union(*linked.values()) - parents
        tasks.append(TaskSpan(id=str(r.id), name=r.name, start=_epoch(r.start_time) or 0.0,
                              end=_epoch(r.end_time) or 0.0, upstream=sorted(upstream), parents=sorted(parents),
                              state=r.state.name))
    tasks.sort(key=lambda t: t.start)
    return _epoch(flow_run.start_time) or 0.0, _epoch(flow_run.end_time) or 0.0, tasks


# ---------------------------------------------------------------- critical path


def critical_path(tasks: list[TaskSpan], durations: dict[str, float] | None = None) -> tuple[float, list[TaskSpan]]:
    """The longest chain of task durations through the dependency graph (gaps ignored).
    A task run inside another (`__parents__`) may start when its parent could start: its time
    is part of the parent's. `durations` (by task name) replaces the recorded ones, e.g. with
    those of another run."""
    by_id = {t.id: t for t in tasks}
    durations = durations or {}
    ready: dict[str, float] = {}
    via: dict[str, str | None] = {}

    def earliest(task_id: str) -> float:  # the DAG is shallow (< 10 levels): recursion is fine
        if task_id not in ready:
            task = by_id[task_id]
            best, best_up = 0.0, None
            for up in task.upstream:
                if longest(up) > best:
                    best, best_up = longest(up), up
            for parent in task.parents:
                if earliest(parent) > best:
                    best, best_up = earliest(parent), via[parent]
            ready[task_id], via[task_id] = best, best_up
        return ready[task_id]

    def longest(task_id: str) -> float:
        return earliest(task_id) + durations.get(by_id[task_id].name, by_id[task_id].duration)

    end_id = max(by_id, key=longest)
    chain: list[TaskSpan] = []
    cursor: str | None = end_id
    while cursor is not None:
        chain.append(by_id[cursor])
        cursor = via[cursor]
    return longest(end_id), chain[::-1]


def realised_chain(tasks: list[TaskSpan]) -> list[TaskSpan]:
    """What actually held the run up: from the task that ended last, back through the
    upstream that ended last, to a task with no upstream."""
    by_id = {t.id: t for t in tasks}
    cursor: TaskSpan | None = max(tasks, key=lambda t: t.end)
    chain = []
    while cursor is not None:
        chain.append(cursor)
        cursor = max((by_id[u] for u in cursor.upstream), key=lambda t: t.end, default=None)
    return chain[::-1]


def start_delays(record: RunRecord) -> list[tuple[float, TaskSpan]]:
    """For every task: start minus the moment it could have started (its last upstream's end,
    its parent's start, or the first task start for a root). Large values on roots mean submit
    order or pool size."""
    by_id = {t.id: t for t in record.tasks}
    delays = []
    for t in record.tasks:
        ready = max([*(by_id[u].end for u in t.upstream), *(by_id[p].start for p in t.parents)],
                    default=record.first_start)
        delays.append((t.start - ready, t))
    return sorted(delays, key=lambda d: -d[0])


def analyse(record: RunRecord, baseline: RunRecord) -> dict[str, Any]:
    cp_length, cp_chain = critical_path(record.tasks)
    # The same DAG with each task's duration from the one-worker run, where nothing competed
    # for the CPU: how much contention in the parallel run stretched the critical path itself.
    alone = {t.name: t.duration for t in baseline.tasks}
    cp_alone, cp_alone_chain = critical_path(record.tasks, alone)
    chain = realised_chain(record.tasks)
    gaps = [b.start - a.end for a, b in pairwise(chain)]
    delays = start_delays(record)
    root_delays = [d for d, t in delays if not t.upstream and not t.parents]
    edge_delays = [d for d, t in delays if t.upstream]
    return {
        "critical_path_s": cp_length,
        "critical_path": [{"task": t.name, "seconds": round(t.duration, 3)} for t in cp_chain],
        "makespan_over_critical_path": record.wall / cp_length,
        "task_span_over_critical_path": record.task_span / cp_length,
        "critical_path_uncontended_s": cp_alone,
        "critical_path_uncontended": [{"task": t.name, "seconds": round(alone.get(t.name, t.duration), 3)}
                                      for t in cp_alone_chain],
        "makespan_over_uncontended_critical_path": record.wall / cp_alone,
        "breakdown_s": {
            # wall = before + head + chain work + chain gaps + tail + after
            "call_to_flow_run_start": record.flow_start - record.called,
            "flow_start_to_first_task": chain[0].start - record.flow_start,
            "realised_chain_work": sum(t.duration for t in chain),
            "realised_chain_gaps": sum(gaps),
            "last_task_to_flow_end": record.flow_end - chain[-1].end,
            "flow_run_end_to_return": record.returned - record.flow_end,
        },
        "realised_chain": [{"task": t.name, "seconds": round(t.duration, 3),
                            "gap_before": round(t.start - chain[i - 1].end, 3) if i else None}
                           for i, t in enumerate(chain)],
        "start_delay_s": {
            "roots_max": max(root_delays, default=0.0),
            "edges_mean": sum(edge_delays) / len(edge_delays) if edge_delays else 0.0,
            "edges_max": max(edge_delays, default=0.0),
            "worst": [{"task": t.name, "seconds": round(d, 3)} for d, t in delays[:5]],
        },
    }


# ---------------------------------------------------------------- running


def set_environment(proxy_url: str, api_url: str, home: Path) -> None:
    """AWS through the proxy with fake credentials; Prefect at our server with its own home."""
    os.environ.update({
        "AWS_ENDPOINT_URL": proxy_url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "ap-northeast-1", "AWS_DEFAULT_REGION": "ap-northeast-1",
        "ECSFLOW_POLL_SECONDS": "0.05", "ECSFLOW_RETRY_BASE_SECONDS": "0.05",
        "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    for key in ("AWS_PROFILE", "ECSFLOW_CALL_LOG", "PREFECT_API_KEY", "PREFECT_PROFILE",
                "PREFECT_PROFILES_PATH", "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"):
        os.environ.pop(key, None)
    if "prefect.context" in sys.modules:  # settings are snapshotted at import
        import prefect.context

        prefect.context.refresh_global_settings_context()


def quiet_prefect_console() -> None:
    """Prefect's per-task INFO lines would bury the report; they still go to the server."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.Logger.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)


def warm_up() -> None:
    """One trivial flow run first, so one-off client costs (imports, connections, the events
    socket) fall on neither measured run."""
    from prefect import flow, task

    @task
    def nothing() -> None:
        return None

    @flow(name="bench-warm-up")
    def warm() -> None:
        nothing.submit().result()

    warm()


# Read-only calls that make moto build each service's backend. moto builds them lazily, on a
# service's first request after start or reset, and the first EC2 request then takes ~3 s on
# 2 cores: an emulator artefact that AWS does not have, so no measured run may pay it.
MOTO_WARM_UP: dict[str, tuple[str, dict[str, Any]]] = {
    "ec2": ("describe_vpcs", {}), "kms": ("list_keys", {}), "ecr": ("describe_repositories", {}),
    "rds": ("describe_db_instances", {}), "iam": ("list_roles", {}), "logs": ("describe_log_groups", {}),
    "sts": ("get_caller_identity", {}), "resourcegroupstaggingapi": ("get_resources", {}),
    "ecs": ("list_clusters", {}), "elbv2": ("describe_load_balancers", {}), "acm": ("list_certificates", {}),
    "s3": ("list_buckets", {}), "application-autoscaling": ("describe_scalable_targets", {"ServiceNamespace": "ecs"}),
    "secretsmanager": ("list_secrets", {}), "ssm": ("describe_parameters", {}), "cloudwatch": ("describe_alarms", {}),
    "sns": ("list_topics", {}),
}


def warm_moto(moto_url: str) -> None:
    """Touch every service the flow may use, straight at moto (not through the proxy, not counted)."""
    import boto3

    session = boto3.session.Session(region_name="ap-northeast-1")
    for service, (operation, kwargs) in MOTO_WARM_UP.items():
        client: Any = session.client(service, endpoint_url=moto_url)  # type: ignore[call-overload]
        getattr(client, operation)(**kwargs)


def forget_clients() -> None:
    """Drop ecsflow's cached boto3 sessions, clients and account id, so each measured run
    starts like a fresh `ecsflow up` process (client creation is part of the product's cost)."""
    from tasks import aws

    # Sessions are no longer cached (one per client); clients and account ids are, per key.
    with aws._LOCKS_LOCK:
        aws._CLIENTS.clear()
        aws._ACCOUNTS.clear()


def run_up(label: str, flow_fn: Any, proxy: FaultProxy, moto: MotoServer, skip_images: bool) -> RunRecord:
    from flows.provision import ProvisionRun
    from tasks.aws import CALLS

    warm_moto(moto.url)
    forget_clients()
    CALLS.reset()
    proxy.reset_counts()
    called, started = time.time(), time.perf_counter()
    state = flow_fn(ProvisionRun(stack_file=str(STACK_FILE), skip_images=skip_images), return_state=True)
    wall, returned = time.perf_counter() - started, time.time()
    if not state.is_completed():
        state.result()  # raises the flow's error
        raise RuntimeError(f"{label}: provision ended {state.name}")
    flow_run_id = state.state_details.flow_run_id
    mutating = CALLS.mutating()
    calls_total = sum(CALLS.calls.values())
    proxy_calls = dict(sorted(proxy.calls.items()))
    flow_start, flow_end, tasks = read_run(flow_run_id)
    record = RunRecord(label=label, flow_run_id=str(flow_run_id), wall=wall, called=called, returned=returned,
                       flow_start=flow_start, flow_end=flow_end, tasks=tasks, calls_total=calls_total,
                       calls_mutating=sum(mutating.values()), mutating_calls=dict(sorted(mutating.items())),
                       proxy_calls=proxy_calls)
    print(f"  {label}: {wall:.2f} s, {len(tasks)} task runs, {calls_total} API calls "
          f"({record.calls_mutating} mutating)", flush=True)
    return record


def count_resources() -> int:
    """How many resources `ecsflow plan` lists for the stack (its rows): the denominator of the
    re-run's reads per resource. Run after the re-run, outside the measured runs."""
    from flows.common import StackRun
    from flows.plan_stack import plan_flow

    return len(plan_flow(StackRun(stack_file=str(STACK_FILE))))


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a server starts: interrupted inside its constructor, the child
    would be left running with nothing to stop it. A held signal takes effect on exit. (Python
    handlers, not a blocked signal mask: the servers inherit a mask, and must stay stoppable.)"""
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held:
        signal.raise_signal(held[0])


def benchmark(args: argparse.Namespace, workdir: Path, cleanup: list[Any]) -> dict[str, Any]:
    delays = {op: seconds * args.scale for op, seconds in SLOW_OPERATIONS.items()}
    load_before = os.getloadavg()[0]
    print(f"starting moto and Prefect servers in {workdir} ...", flush=True)
    with signals_deferred():
        moto = MotoServer(workdir / "moto")
        cleanup.append(moto.stop)
    proxy = FaultProxy(moto.url).start()
    cleanup.append(proxy.stop)
    proxy.latency = args.latency
    for op, seconds in delays.items():
        proxy.delay(op, seconds)
    with signals_deferred():
        prefect_server = PrefectServer(workdir / "prefect-server")
        cleanup.append(prefect_server.stop)
    set_environment(proxy.url, prefect_server.api_url, workdir / "prefect-home")

    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

    from flows.provision import provision_flow

    if not args.verbose:
        quiet_prefect_console()
    cleanup.append(drain_prefect)  # stopped last to first: drained before the server stops
    warm_up()

    print("running provision:", flush=True)
    parallel = run_up("up, empty account (parallel)", provision_flow, proxy, moto, args.skip_images)
    rerun = run_up("up again (no-op)", provision_flow, proxy, moto, args.skip_images)
    resources = count_resources()
    moto.reset()
    one_worker: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)
    sequential_flow = provision_flow.with_options(task_runner=one_worker)
    sequential = run_up("up, empty account (1 worker)", sequential_flow, proxy, moto, args.skip_images)

    analysis = analyse(parallel, sequential)
    return {
        "settings": {"latency_s": args.latency, "scale": args.scale, "slow_operations_s": delays,
                     "stack_file": str(STACK_FILE.relative_to(ROOT)), "cpus": os.cpu_count(),
                     "skip_images": args.skip_images,
                     # Other work on the machine stretches every figure: read them with the load in mind.
                     "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}},
        "makespan_s": parallel.wall,
        "flow_run_span_s": parallel.flow_span,
        "task_span_s": parallel.task_span,
        "critical_path_s": analysis["critical_path_s"],
        "critical_path": analysis["critical_path"],
        "makespan_over_critical_path": analysis["makespan_over_critical_path"],
        "task_span_over_critical_path": analysis["task_span_over_critical_path"],
        "goal_makespan_over_critical_path": MAKESPAN_GOAL,
        "critical_path_uncontended_s": analysis["critical_path_uncontended_s"],
        "critical_path_uncontended": analysis["critical_path_uncontended"],
        "makespan_over_uncontended_critical_path": analysis["makespan_over_uncontended_critical_path"],
        "sequential_makespan_s": sequential.wall,
        "sequential_task_span_s": sequential.task_span,
        "sequential_task_work_s": sum(t.duration for t in sequential.tasks),
        "sequential_over_parallel": sequential.wall / parallel.wall,
        "parallel_task_work_s": sum(t.duration for t in parallel.tasks),
        "task_runs": len(parallel.tasks),
        "calls": {
            "up": {"total": parallel.calls_total, "mutating": parallel.calls_mutating},
            "rerun": {"total": rerun.calls_total, "mutating": rerun.calls_mutating},
            "resources_planned": resources,
            "rerun_calls_per_resource": rerun.calls_total / resources,
            "goal_rerun_calls_per_resource": READS_PER_RESOURCE_GOAL,
            "rerun_mutating_calls": rerun.mutating_calls,
            "up_by_operation": parallel.proxy_calls,
            "rerun_by_operation": rerun.proxy_calls,
            "sequential_up": {"total": sequential.calls_total, "mutating": sequential.calls_mutating},
        },
        "rerun_makespan_s": rerun.wall,
        "analysis": {k: analysis[k] for k in ("breakdown_s", "realised_chain", "start_delay_s")},
        "runs": {r.label: {"flow_run_id": r.flow_run_id, "wall_s": r.wall,
                           "tasks": [asdict(t) for t in r.tasks]} for r in (parallel, rerun, sequential)},
    }


def drain_prefect() -> None:
    """Let Prefect's background workers deliver what they hold before the server goes."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=10)
    APILogWorker.drain_all(timeout=10)


# ---------------------------------------------------------------- report


def report(r: dict[str, Any], timeline: bool = False) -> str:
    s, calls, a = r["settings"], r["calls"], r["analysis"]
    b, delays = a["breakdown_s"], a["start_delay_s"]
    goal, ratio = r["goal_makespan_over_critical_path"], r["makespan_over_critical_path"]
    per_resource, reads_goal = calls["rerun_calls_per_resource"], calls["goal_rerun_calls_per_resource"]
    rerun_ok = "ok" if calls["rerun"]["mutating"] == 0 else "NOT A NO-OP: " + json.dumps(calls["rerun_mutating_calls"])
    ops = ", ".join(f"{op} {sec:g} s" for op, sec in s["slow_operations_s"].items())

    def chain(items: list[dict[str, Any]]) -> str:
        return " -> ".join(f"{c['task']} ({c['seconds']:.2f})" for c in items)

    lines = [
        "",
        f"ecsflow provision benchmark: {s['stack_file']}{' (--skip-images)' if s['skip_images'] else ''}, "
        f"{r['task_runs']} task runs, {s['cpus']} CPUs, load average {s['load_average_1min']['before']:.1f} "
        f"before / {s['load_average_1min']['after']:.1f} after",
        f"  injected: {s['latency_s'] * 1000:g} ms per call; {ops}",
        "",
        f"  makespan / critical path      {ratio:5.2f}   (goal <= {goal}: {'ok' if ratio <= goal else 'MISSED'}; "
        f"first task start -> last task end: {r['task_span_over_critical_path']:.2f})",
        f"  makespan / uncontended CP     {r['makespan_over_uncontended_critical_path']:5.2f}   "
        "(critical path with each task's duration from the one-worker run)",
        f"  sequential / parallel         {r['sequential_over_parallel']:5.2f}x  (speed-up)",
        f"  API calls, up                 {calls['up']['total']} total / {calls['up']['mutating']} mutating "
        f"(requests seen by the proxy: {sum(calls['up_by_operation'].values())})",
        f"  API calls, re-run of up       {calls['rerun']['total']} total / {calls['rerun']['mutating']} mutating "
        f"({rerun_ok})",
        f"  re-run calls per resource     {per_resource:5.2f}   ({calls['rerun']['total']} for the "
        f"{calls['resources_planned']} resources `ecsflow plan` lists; goal <= {reads_goal:g}: "
        f"{'ok' if per_resource <= reads_goal else 'MISSED'})",
        "  calls by operation (re-run): " + ", ".join(
            f"{op} {n}" for op, n in sorted(calls["rerun_by_operation"].items(), key=lambda kv: -kv[1])),
        "",
        f"  seconds: makespan {r['makespan_s']:.2f} (flow run {r['flow_run_span_s']:.2f}, first task start -> last "
        f"task end {r['task_span_s']:.2f}); critical path {r['critical_path_s']:.2f} (uncontended "
        f"{r['critical_path_uncontended_s']:.2f}); sequential {r['sequential_makespan_s']:.2f}; no-op re-run "
        f"{r['rerun_makespan_s']:.2f}",
        f"  critical path:  {chain(r['critical_path'])}",
        f"  uncontended:    {chain(r['critical_path_uncontended'])}",
        f"  makespan - critical path = {r['makespan_s'] - r['critical_path_s']:.2f} s: call -> flow run start "
        f"{b['call_to_flow_run_start']:.2f}, flow run start -> first task {b['flow_start_to_first_task']:.2f}, "
        f"realised chain's work minus the critical path {b['realised_chain_work'] - r['critical_path_s']:+.2f}, "
        f"gaps along the realised chain {b['realised_chain_gaps']:.2f}, last task -> flow run end "
        f"{b['last_task_to_flow_end']:.2f}, flow run end -> return {b['flow_run_end_to_return']:.2f}",
        "  realised chain (what the last task waited for): " + " -> ".join(
            (f"[+{c['gap_before']:.2f}] " if c["gap_before"] is not None else "") + f"{c['task']} ({c['seconds']:.2f})"
            for c in a["realised_chain"]),
        f"  start delays (start - ready): roots max {delays['roots_max']:.2f} s; after an upstream mean "
        f"{delays['edges_mean']:.3f} s, max {delays['edges_max']:.2f} s; worst: "
        + ", ".join(f"{w['task']} {w['seconds']:.2f}" for w in delays["worst"][:3]),
        f"  task work summed: parallel run {r['parallel_task_work_s']:.2f} s, one-worker run "
        f"{r['sequential_task_work_s']:.2f} s",
        "  calls by operation (up): " + ", ".join(f"{op} {n}" for op, n in calls["up_by_operation"].items()),
    ]
    if timeline:
        for label, run in r["runs"].items():
            origin = min(t["start"] for t in run["tasks"])
            lines += ["", f"  timeline, {label} (seconds from the first task start):"]
            for t in sorted(run["tasks"], key=lambda t: t["start"]):
                start, end = t["start"] - origin, t["end"] - origin
                lines.append(f"    {start:6.2f} {end:6.2f} {end - start:6.2f}  {t['name']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.provision_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY,
                        help=f"seconds added to every API call (default {DEFAULT_LATENCY})")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="factor on the slow operations' delays (default 1: CreateDBInstance 6 s)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    parser.add_argument("--skip-images", action="store_true",
                        help="run `up --skip-images` (images need a Docker engine once build contexts exist)")
    parser.add_argument("--timeline", action="store_true", help="also print every task run's start and end")
    parser.add_argument("--verbose", action="store_true", help="keep Prefect's per-task console logs")
    args = parser.parse_args(argv)
    if args.latency < 0 or args.scale <= 0:
        parser.error("--latency must be >= 0 and --scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ecsflow-bench-"))
    cleanup: list[Any] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped below
    try:
        results = benchmark(args, workdir, cleanup)
        print(report(results, timeline=args.timeline))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(f"\n  figures written to {args.json}")
        return 0
    finally:
        for stop in reversed(cleanup):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"cleanup: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
