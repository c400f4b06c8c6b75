"""The `ecsflow` command: plan, up, status, down, demo, schema, and the later phases' verbs.

Exit codes: 0 success, 1 a run failed, 2 bad input (unreadable or invalid stack file,
unknown option). The stack file is validated before anything talks to AWS or Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_STACK = "stacks/library.yaml"


class BadInput(Exception):
    """Input the user can fix; exit 2 with nothing created."""


def _stack_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--stack", metavar="FILE", required=required, default=None if required else DEFAULT_STACK,
                        help="the stack file (YAML) describing the app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecsflow",
        description="Provision and operate an AWS ECS Fargate environment from one stack file, with Prefect flows.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("plan", help="show what `up` would change (read-only)")
    _stack_arg(p)
    p.add_argument("--json", action="store_true", help="print the changes as JSON")

    p = verbs.add_parser("up", help="provision or reconcile the whole stack")
    _stack_arg(p)
    p.add_argument("--skip-images", action="store_true", help="provision everything but the images phase")

    p = verbs.add_parser("status", help="list the resources ecsflow made for the stack")
    _stack_arg(p)
    p.add_argument("--json", action="store_true", help="print the resources as JSON")

    p = verbs.add_parser("down", help="delete everything ecsflow made for the stack")
    _stack_arg(p)
    p.add_argument("--yes", action="store_true", help="confirm the deletion (required)")
    p.add_argument("--skip-final-snapshot", action="store_true",
                   help="do not take a final database snapshot (prod takes one by default)")

    p = verbs.add_parser("schema", help="print the stack file's JSON Schema")

    p = verbs.add_parser("demo", help="run everything locally: AWS emulator + local Prefect server")
    _stack_arg(p, required=False)
    p.add_argument("--no-wait", action="store_true", help="exit after the run instead of keeping the UI up")
    p.add_argument("--port", type=int, default=4200, help="Prefect UI port (default 4200)")

    for verb, what in (("deploy", "build, push and roll out the app's images"),
                       ("backup", "snapshot the database"),
                       ("restore-test", "restore the newest snapshot and verify it"),
                       ("audit", "check the live stack against the security rules")):
        p = verbs.add_parser(verb, help=what)
        _stack_arg(p)
    return parser


def load(path: str) -> Any:
    from spec import StackFileError, load_stack

    try:
        return load_stack(path)
    except StackFileError as exc:
        raise BadInput(str(exc)) from None


def load_provisionable(path: str) -> Any:
    """`load`, plus what `plan` and `up` need beyond a valid file (e.g. a certificate source)."""
    stack = load(path)
    problems = stack.provision_problems()
    if problems:
        raise BadInput(f"{path}: cannot provision this stack\n" + "\n".join(f"  {p}" for p in problems))
    return stack


def run_flow(flow_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a flow in this process and return its result; a failed run raises RunFailed."""
    state = flow_fn(*args, return_state=True, **kwargs)
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:
            raise RunFailed(f"{getattr(flow_fn, 'name', 'run')} {state.name.lower()}: {exc}") from exc
        raise RunFailed(f"{getattr(flow_fn, 'name', 'run')} ended {state.name}")
    return state.result()


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------- verbs


def cmd_schema(args: argparse.Namespace) -> int:
    from spec import Stack

    print(json.dumps(Stack.model_json_schema(), indent=2))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    load_provisionable(args.stack)
    from flows.common import StackRun
    from flows.plan_stack import plan_flow

    rows = run_flow(plan_flow, StackRun(stack_file=args.stack))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_plan(rows))
    return EXIT_OK


def render_plan(rows: list[dict[str, Any]]) -> str:
    lines = []
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["action"]] = counts.get(row["action"], 0) + 1
        if row["action"] == "no-op":
            continue
        lines.append(f"  {row['action']:<8} {row['resource']:<22} {row['name']}")
        lines += [f"             {change}" for change in row["changes"]]
        if row.get("note"):
            lines.append(f"             ({row['note']})")
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    head = "Plan: nothing to change." if not lines else "Plan:"
    return "\n".join([head, *lines, f"({summary})"])


def cmd_up(args: argparse.Namespace) -> int:
    load_provisionable(args.stack)
    from flows.provision import ProvisionRun, provision_flow

    outputs = run_flow(provision_flow, ProvisionRun(stack_file=args.stack, skip_images=args.skip_images))
    print(render_outputs(outputs))
    return EXIT_OK


def render_outputs(outputs: dict[str, Any]) -> str:
    lines = ["Stack outputs:"]
    for key, value in outputs.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    stack = load(args.stack)
    from tasks.aws import AwsContext, EcsflowError
    from tasks.inventory import inventory_rows

    try:
        rows = inventory_rows(AwsContext.for_stack(stack))
    except EcsflowError as exc:
        raise RunFailed(str(exc)) from exc
    if args.json:
        print(json.dumps({"stack": stack.name, "env": stack.env, "resources": rows}, indent=2))
    else:
        print(f"{stack.name}-{stack.env}: {len(rows)} resources")
        for row in rows:
            print(f"  {row['family']:<9} {row['kind']:<22} {row['id']:<40} {row['name']}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    stack = load(args.stack)
    if not args.yes:
        raise BadInput(f"`down` deletes every resource of {stack.name}-{stack.env}; add --yes to confirm")
    from flows.teardown import TeardownRun, teardown_flow

    report = run_flow(teardown_flow, TeardownRun(stack_file=args.stack, confirm=True,
                                                 final_snapshot=not args.skip_final_snapshot))
    print(f"Deleted {report['deleted']} resources of {stack.name}-{stack.env}.")
    for kept in report.get("kept", []):
        print(f"  kept: {kept}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    load(args.stack)
    from ecsflow.demo import run_demo

    return run_demo(args.stack, port=args.port, wait=not args.no_wait)


def cmd_later(args: argparse.Namespace) -> int:
    load(args.stack)
    print(f"ecsflow {args.verb}: this phase is not built yet; `ecsflow up` provisions the foundation.",
          file=sys.stderr)
    return EXIT_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "schema": cmd_schema, "plan": cmd_plan, "up": cmd_up, "status": cmd_status, "down": cmd_down,
    "demo": cmd_demo, "deploy": cmd_later, "backup": cmd_later, "restore-test": cmd_later, "audit": cmd_later,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on an unknown option
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    try:
        return COMMANDS[args.verb](args)
    except BadInput as exc:
        print(f"ecsflow: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailed as exc:
        print(f"ecsflow: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("ecsflow: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())



