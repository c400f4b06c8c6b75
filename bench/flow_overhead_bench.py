"""What does running a function as a Prefect task cost? A benchmark, not a test.

    uv run python -m bench.flow_overhead_bench [--sizes 50 200] [--rounds 5] [--latency 0.025] [--json PATH]

Starts its own moto server (behind the fault proxy, `--latency` seconds per AWS call, as
provision_bench does) and Prefect server in a temporary directory, then times, in the same run
and interleaved round by round:

- a flow of N tasks called one after the other, and the same N functions called plainly;
- a flow of N tasks submitted at once (the default thread-pool task runner, as ecsflow's flows
  use), and the same N functions on a thread pool of the same width;

for two task bodies: a trivial one (returns its input plus one), and one real AWS call (an SSM
GetParameter through the proxy, the size of most of ecsflow's reads). Tasks are declared as
ecsflow declares its AWS tasks (no cache, no persisted result).

Figures (medians over the rounds): the wall time of each, the ratio flow / plain, and the
overhead per task in milliseconds, (flow - plain) / N. After each flow run the benchmark also
waits until the server has recorded every task run as final: that catch-up after the flow
returned, per task, is the server's share (it records task runs from events, in the background).
The load average is printed before and after: on a shared 2-core machine every figure stretches
with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.provision_bench import (
    DEFAULT_LATENCY,
    drain_prefect,
    quiet_prefect_console,
    set_environment,
    signals_deferred,
    warm_up,
)
from ecsflow.local import MotoServer, PrefectServer
from tests.support.faultproxy import FaultProxy

PARAMETER = "/ecsflow-bench/flow-overhead"
REGION = "ap-northeast-1"


# ---------------------------------------------------------------- the task bodies


def trivial(i: int) -> int:
    return i + 1


_SSM: list[Any] = []  # one client for every call (boto3 clients are thread-safe), made before timing


def one_aws_call(i: int) -> int:
    answer = _SSM[0].get_parameter(Name=PARAMETER)
    return i + len(answer["Parameter"]["Value"])


BODIES: dict[str, Callable[[int], int]] = {"trivial": trivial, "one AWS call": one_aws_call}


# ---------------------------------------------------------------- the four ways to run N of them


def plain_sequential(fn: Callable[[int], int], n: int) -> None:
    for i in range(n):
        fn(i)


def plain_parallel(fn: Callable[[int], int], n: int) -> None:
    # As wide as Prefect's default thread-pool runner is for N submissions (unbounded: a thread each).
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(fn, range(n)))


def make_flows(fn: Callable[[int], int]) -> tuple[Any, Any]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    # Declared as tasks.contract.aws_task declares ecsflow's AWS tasks (retries do not run here).
    as_task = task(fn, name=f"bench {fn.__name__}", cache_policy=NO_CACHE, persist_result=False,  # type: ignore[call-overload]
                   retries=4)

    @flow(name=f"bench-sequential-{fn.__name__}")
    def sequential(n: int) -> None:
        for i in range(n):
            as_task(i)

    @flow(name=f"bench-submitted-{fn.__name__}")
    def submitted(n: int) -> None:
        futures = [as_task.submit(i) for i in range(n)]
        for future in futures:
            future.result()

    return sequential, submitted


def recorded_completed(flow_run_id: UUID) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    wanted = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]),
                           state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])))
    counted = 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(task_run_filter=wanted, limit=200, offset=counted)
            counted += len(page)
            if len(page) < 200:
                return counted


def run_flow(flow_fn: Any, n: int, timeout: float = 300.0) -> tuple[float, float]:
    """(client wall time of the flow call, seconds after it returned until the server had all N
    task runs recorded as completed)."""
    started = time.perf_counter()
    state = flow_fn(n, return_state=True)
    wall = time.perf_counter() - started
    if not state.is_completed():
        state.result()
        raise RuntimeError(f"{flow_fn.name} ended {state.name}")
    returned = time.perf_counter()
    deadline = returned + timeout
    while recorded_completed(state.state_details.flow_run_id) < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the Prefect server had not recorded {n} task runs of {flow_fn.name} "
                               f"after {timeout:.0f}s")
        time.sleep(0.05)
    return wall, time.perf_counter() - returned


# ---------------------------------------------------------------- the benchmark


def timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def benchmark(args: argparse.Namespace, workdir: Path, cleanup: list[Any]) -> dict[str, Any]:
    load_before = os.getloadavg()
    print(f"starting moto and Prefect servers in {workdir} ...", flush=True)
    with signals_deferred():
        moto = MotoServer(workdir / "moto")
        cleanup.append(moto.stop)
    proxy = FaultProxy(moto.url).start()
    cleanup.append(proxy.stop)
    with signals_deferred():
        prefect_server = PrefectServer(workdir / "prefect-server")
        cleanup.append(prefect_server.stop)
    set_environment(proxy.url, prefect_server.api_url, workdir / "prefect-home")
    cleanup.append(drain_prefect)  # stopped last to first: drained before the server stops

    import boto3

    boto3.client("ssm", region_name=REGION, endpoint_url=moto.url).put_parameter(
        Name=PARAMETER, Value="x" * 32, Type="String")
    _SSM[:] = [boto3.client("ssm", region_name=REGION)]  # through the proxy (AWS_ENDPOINT_URL)
    proxy.latency = args.latency
    warm_up()
    if not args.verbose:  # after the first flow run: Prefect sets its console handlers up then
        quiet_prefect_console()

    flows = {body: make_flows(fn) for body, fn in BODIES.items()}
    # One untimed pass of everything: imports, connections, thread start-up, moto's SSM backend.
    for body, fn in BODIES.items():
        plain_sequential(fn, 5)
        plain_parallel(fn, 5)
        for flow_fn in flows[body]:
            run_flow(flow_fn, 5)

    samples: dict[str, dict[str, list[float]]] = {}
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds}", flush=True)
        for body, fn in BODIES.items():
            sequential_flow, submitted_flow = flows[body]
            for n in args.sizes:
                for mode, plain, flow_fn in (("sequential", plain_sequential, sequential_flow),
                                             ("submitted", plain_parallel, submitted_flow)):
                    key = f"{body} | {mode} | N={n}"
                    got = samples.setdefault(key, {"plain_s": [], "flow_s": [], "server_catch_up_s": []})
                    # Alternate which goes first, so a slow spell of the machine hits both sides.
                    first_plain = round_no % 2 == 1
                    plain_run = partial(plain, fn, n)
                    if first_plain:
                        got["plain_s"].append(timed(plain_run))
                    wall, catch_up = run_flow(flow_fn, n)
                    got["flow_s"].append(wall)
                    got["server_catch_up_s"].append(catch_up)
                    if not first_plain:
                        got["plain_s"].append(timed(plain_run))

    results = []
    for key, got in samples.items():
        body, mode, size = key.split(" | ")
        n = int(size.removeprefix("N="))
        plain_s, flow_s = statistics.median(got["plain_s"]), statistics.median(got["flow_s"])
        catch_up = statistics.median(got["server_catch_up_s"])
        per_task = statistics.median((f - p) / n for f, p in zip(got["flow_s"], got["plain_s"], strict=True))
        results.append({"body": body, "mode": mode, "n": n, "plain_s": plain_s, "flow_s": flow_s,
                        "flow_over_plain": flow_s / plain_s, "overhead_per_task_ms": per_task * 1000,
                        "plain_per_task_ms": plain_s / n * 1000,
                        "server_catch_up_s": catch_up, "server_catch_up_per_task_ms": catch_up / n * 1000,
                        "samples": got})
    return {
        "settings": {"latency_s": args.latency, "sizes": args.sizes, "rounds": args.rounds, "cpus": os.cpu_count(),
                     "aws_call": "ssm GetParameter through the fault proxy",
                     "load_average": {"before": load_before, "after": os.getloadavg()}},
        "results": results,
    }


# ---------------------------------------------------------------- report


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    before, after = s["load_average"]["before"], s["load_average"]["after"]
    lines = [
        "",
        f"ecsflow flow-overhead benchmark: {s['cpus']} CPUs, {s['rounds']} rounds (medians), AWS call = "
        f"{s['aws_call']} (+{s['latency_s'] * 1000:g} ms)",
        f"  load average (1/5/15 min): before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}",
        "",
        f"  {'task body':<13} {'mode':<10} {'N':>4}  {'plain s':>8}  {'flow s':>8}  {'flow/plain':>10}  "
        f"{'ms/task':>8}  {'plain ms/task':>13}  {'server catch-up':>16}",
    ]
    for x in r["results"]:
        lines.append(
            f"  {x['body']:<13} {x['mode']:<10} {x['n']:>4}  {x['plain_s']:>8.3f}  {x['flow_s']:>8.3f}  "
            f"{x['flow_over_plain']:>9.2f}x  {x['overhead_per_task_ms']:>8.2f}  {x['plain_per_task_ms']:>13.2f}  "
            f"{x['server_catch_up_s']:>7.2f} s ({x['server_catch_up_per_task_ms']:.1f} ms/task)")
    lines += [
        "",
        "  ms/task: (flow - plain) / N, the client-side cost of a task run. flow/plain: against the same",
        "  functions called plainly (sequential) or on a thread pool as wide (submitted). Server catch-up:",
        "  seconds after the flow returned until the server had every task run recorded as completed.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_overhead_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="tasks per flow (default 50 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; figures are medians (default 5)")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY,
                        help=f"seconds the fault proxy adds to every AWS call (default {DEFAULT_LATENCY})")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    parser.add_argument("--verbose", action="store_true", help="keep Prefect's per-task console logs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or any(n < 1 for n in args.sizes) or args.latency < 0:
        parser.error("--rounds and --sizes must be at least 1, --latency at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ecsflow-bench-"))
    cleanup: list[Any] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped below
    try:
        results = benchmark(args, workdir, cleanup)
        print(report(results))
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
