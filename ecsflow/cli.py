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

    _add_deploy_verbs(verbs)
    _add_backup_verbs(verbs)
    _add_security_verbs(verbs)
    _add_serving_verbs(verbs)
    return parser


def _add_backup_verbs(verbs: Any) -> None:
    p = verbs.add_parser("backup", help="snapshot the database, copy it to the second region, prune old snapshots")
    _stack_arg(p)
    p = verbs.add_parser("restore-test", help="restore the newest snapshot to a temporary instance, verify it, "
                         "measure RTO/RPO, delete it (exit 1 when verification fails)")
    _stack_arg(p)
    p.add_argument("--snapshot", metavar="ID", help="restore this backup snapshot instead of the newest")
    p = verbs.add_parser("export-data", help="pg_dump the application database to the export bucket and check "
                         "that the dump restores")
    _stack_arg(p)
    p.add_argument("--skip-restore-check", action="store_true", help="only dump, do not restore the dump")
    p = verbs.add_parser("load-test", help="bounded load against the stack's own public URL (p50/p95/p99, "
                         "throughput, error rate)")
    _stack_arg(p)
    p.add_argument("--url", help="a URL under load_balancer.public_url (default: backup.load_test.path)")
    p.add_argument("--duration", type=int, metavar="SECONDS", help="default: backup.load_test.duration_seconds")
    p.add_argument("--requests", type=int, metavar="N", help="default: backup.load_test.requests")
    p.add_argument("--concurrency", type=int, metavar="N", help="default: backup.load_test.concurrency")


def cmd_backup(args: argparse.Namespace) -> int:
    load(args.stack)
    from flows.backup import BackupRun, backup_flow

    report = run_flow(backup_flow, BackupRun(stack_file=args.stack))
    print(f"Snapshot {report['snapshot']} taken.")
    if report["copy"]:
        print(f"  copied to {report['copy']['region']}")
    for region, names in report["pruned"].items():
        print(f"  pruned in {region}: {', '.join(names) or 'nothing'}")
    return EXIT_OK


def cmd_restore_test(args: argparse.Namespace) -> int:
    load(args.stack)
    from flows.restore_test import RestoreTestRun, restore_test_flow

    result = run_flow(restore_test_flow, RestoreTestRun(stack_file=args.stack, snapshot=args.snapshot))
    print(f"Restore test passed: {result['snapshot']} restored and verified; RTO {result['rto_seconds']:.1f} s, "
          f"RPO {result['rpo_seconds']:.0f} s; temporary instance {result['temporary_instance']} deleted.")
    return EXIT_OK


def cmd_export_data(args: argparse.Namespace) -> int:
    load(args.stack)
    from flows.export_data import ExportRun, export_data_flow

    result = run_flow(export_data_flow, ExportRun(stack_file=args.stack, restore_check=not args.skip_restore_check))
    dump = result["dump"]
    print(f"Exported s3://{dump['bucket']}/{dump['key']} ({dump['bytes']} bytes).")
    if result["restore_check"]:
        print(f"  restore check passed: {len(dump['row_counts'])} tables with equal row counts")
    return EXIT_OK


def cmd_load_test(args: argparse.Namespace) -> int:
    stack = load(args.stack)
    from flows.load_test import LoadTestRun, load_test_flow
    from tasks.loadgen import ForeignTarget, resolve_target

    for name in ("duration", "requests", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BadInput(f"--{name} must be at least 1")
    try:  # refused before anything is sent
        resolve_target(stack.public_url, stack.backup.load_test.path, args.url)
        params = LoadTestRun(stack_file=args.stack, url=args.url, duration_seconds=args.duration,
                             requests=args.requests, concurrency=args.concurrency)
    except ForeignTarget as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    r = run_flow(load_test_flow, params)
    print(f"{r['requests']} requests to {r['url']} in {r['duration_seconds']} s: {r['throughput_rps']} req/s, "
          f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms, error rate {100 * r['error_rate']:.2f} %")
    return EXIT_OK


def _add_security_verbs(verbs: Any) -> None:
    p = verbs.add_parser("audit", help="check the live stack against the security rules (exit 1 on a failed check)")
    _stack_arg(p)
    p.add_argument("--json", action="store_true", help="print every check as JSON")
    p.add_argument("--rule", action="append", metavar="ID", help="check only this rule (repeatable)")
    p = verbs.add_parser("iam-policy", help="print the IAM policy the runner of ecsflow's flows needs")
    _stack_arg(p)
    p.add_argument("--account", metavar="ID", help="AWS account id (default: asked of STS; * when unreachable)")
    p.add_argument("--split", action="store_true", help="print a JSON list of documents, each within IAM's "
                   "6,144-character managed-policy limit (attach them all)")


def cmd_audit(args: argparse.Namespace) -> int:
    load(args.stack)
    from flows.audit import AuditFailed, AuditRun, audit_flow
    from tasks.audit import RULE_IDS

    unknown = sorted(set(args.rule or []) - set(RULE_IDS))
    if unknown:
        raise BadInput(f"--rule {', '.join(unknown)}: no such rule; known: {', '.join(RULE_IDS)}")
    state = audit_flow(AuditRun(stack_file=args.stack, rules=args.rule or []), return_state=True)
    result: Any = state.result(raise_on_failure=False)
    if isinstance(result, AuditFailed):
        rows: list[dict[str, Any]] = result.findings
    elif state.is_completed():
        rows = result
    else:
        raise RunFailed(f"audit {str(state.name).lower()}: {result}")
    failed = [r for r in rows if not r["passed"]]
    if args.json:
        print(json.dumps({"passed": not failed, "failed": len(failed), "findings": rows}, indent=2))
    else:
        for r in sorted(rows, key=lambda r: (r["passed"], r["rule"])):
            mark = "pass" if r["passed"] else "FAIL"
            print(f"  {mark} {r['rule']:<14} {r['resource']}" + ("" if r["passed"] else f"\n         {r['message']}"))
        print(f"{len(failed)} failed of {len(rows)} checks." if failed else f"All {len(rows)} checks passed.")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_iam_policy(args: argparse.Namespace) -> int:
    stack = load(args.stack)
    from tasks.aws import AwsContext, EcsflowError
    from tasks.runner_policy import runner_policy, split_policy

    if args.account is not None and not (args.account.isdigit() and len(args.account) == 12):
        raise BadInput(f"--account {args.account!r} is not a 12-digit AWS account id")
    ctx = AwsContext.for_stack(stack)
    account = args.account
    if account is None:
        try:
            account = ctx.account_id()
        except EcsflowError:
            account = "*"
    policy = runner_policy(stack, ctx.region, account)
    print(json.dumps(split_policy(policy) if args.split else policy, indent=2))
    return EXIT_OK


def _add_serving_verbs(verbs: Any) -> None:
    from ecsflow.serving import add_receiver_options

    p = verbs.add_parser("webhook", help="the GitHub webhook receiver that starts deploys")
    actions = p.add_subparsers(dest="webhook_action", required=True, metavar="ACTION")
    w = actions.add_parser("serve", help="run the receiver (POST /github, GET /healthz)")
    _stack_arg(w)
    add_receiver_options(w)
    w = actions.add_parser("secret", help="store the webhook secret (read from stdin) in its Prefect Secret block")
    w.add_argument("--secret-block", default=os.environ.get("ECSFLOW_WEBHOOK_SECRET_BLOCK", "ecsflow-webhook-secret"),
                   help="Prefect Secret block name (default ecsflow-webhook-secret)")
    w.add_argument("--generate", action="store_true", help="generate a secret, store it and print it once")

    p = verbs.add_parser("serve", help="run locally: Prefect server (when PREFECT_API_URL is unset), "
                                       "the deployments and the webhook receiver")
    _stack_arg(p)
    add_receiver_options(p)
    p.add_argument("--prefect-port", type=int, default=4200, help="port of the local Prefect server (default 4200)")
    p.add_argument("--no-webhook", action="store_true", help="serve the deployments only")


def _add_deploy_verbs(verbs: Any) -> None:
    p = verbs.add_parser("deploy", help="build, push and roll out a commit; verify; roll back on failure")
    _stack_arg(p)
    p.add_argument("--commit", metavar="SHA", help="commit to deploy (default: the build context's HEAD)")
    p.add_argument("--ref", metavar="REF", help="the git ref being deployed, for the record (e.g. refs/heads/main)")
    p.add_argument("--services", metavar="A,B", help="only these services (default: all with a build context here)")
    p.add_argument("--no-migrations", action="store_true", help="do not run the migration tasks")

    p = verbs.add_parser("rollback", help="put services back on an earlier task-definition revision")
    _stack_arg(p)
    p.add_argument("--to", metavar="REVISION", type=int, help="revision number (default: the newest earlier "
                                                               "revision a deploy verified)")
    p.add_argument("--services", metavar="A,B", help="only these services (default: all)")


def _service_list(stack: Any, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in stack.services]
    if not names or unknown:
        raise BadInput(f"--services: {', '.join(unknown) or repr(value)} is not a service of the stack file "
                       f"(it has {', '.join(stack.services)})")
    return names


def cmd_deploy(args: argparse.Namespace) -> int:
    import re

    stack = load(args.stack)
    services = _service_list(stack, args.services)
    if args.commit is not None and not re.fullmatch(r"[0-9a-f]{7,64}", args.commit):
        raise BadInput(f"--commit {args.commit!r} is not a git commit SHA (7-64 lower-case hex digits)")
    from flows.deploy_app import DeployRun, deploy_app_flow

    result = run_flow(deploy_app_flow, DeployRun(stack_file=args.stack, commit=args.commit, ref=args.ref,
                                                 services=services, run_migrations=not args.no_migrations))
    if result["status"] == "already live":
        print(f"{result['message']}.")
        return EXIT_OK
    print(f"Deployed {result['commit']} to {stack.name}-{stack.env} in {result['seconds']} s"
          + (f"; {result['url']}" if result.get("url") else ""))
    for service, revisions in result["revisions"].items():
        print(f"  {service}: {revisions['before']} -> {revisions['after']}  {result['images'][service]}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    stack = load(args.stack)
    services = _service_list(stack, args.services)
    if args.to is not None and args.to < 1:
        raise BadInput(f"--to {args.to}: a revision number is 1 or more")
    from flows.rollback import RollbackRun, rollback_flow

    result = run_flow(rollback_flow, RollbackRun(stack_file=args.stack, services=services, to_revision=args.to))
    if result["status"] == "nothing to do":
        print(f"Nothing to roll back: {', '.join(f'{s} runs {r}' for s, r in result['revisions'].items())}.")
        return EXIT_OK
    print(f"Rolled back {stack.name}-{stack.env} in {result['seconds']} s:")
    for service, revisions in result["revisions"].items():
        print(f"  {service}: {revisions['before']} -> {revisions['after']}")
    return EXIT_OK


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
    stack = load_provisionable(args.stack)
    from flows.common import StackRun
    from flows.plan_stack import plan_flow
    from tasks import cost

    rows = run_flow(plan_flow, StackRun(stack_file=args.stack))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        region = stack.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        print(render_plan(rows, cost_text=cost.render_text(cost.estimate(stack, region))))
    return EXIT_OK


def render_plan(rows: list[dict[str, Any]], cost_text: str | None = None) -> str:
    """The plan as text; `cost_text` (the estimated monthly cost) goes under it."""
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
    return "\n".join([head, *lines, f"({summary})", *(["", cost_text] if cost_text else [])])


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


def cmd_webhook(args: argparse.Namespace) -> int:
    from deployments.webhook import ReceiverConfigError
    from ecsflow import serving

    try:
        if args.webhook_action == "secret":
            return serving.webhook_secret(args)
        load(args.stack)
        return serving.webhook_serve(args)
    except ReceiverConfigError as exc:
        raise BadInput(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.webhook import ReceiverConfigError
    from ecsflow import serving

    load(args.stack)
    try:
        return serving.serve_all(args)
    except ReceiverConfigError as exc:
        raise BadInput(str(exc)) from None


COMMANDS.update(webhook=cmd_webhook, serve=cmd_serve)
COMMANDS.update(deploy=cmd_deploy, rollback=cmd_rollback)
COMMANDS.update({"audit": cmd_audit, "iam-policy": cmd_iam_policy})
COMMANDS.update({"backup": cmd_backup, "restore-test": cmd_restore_test, "export-data": cmd_export_data,
                 "load-test": cmd_load_test})


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



