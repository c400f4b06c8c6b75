"""`ecsflow restore-test`: restore the newest backup into a temporary instance, verify it, measure
the restore time (RTO) and the data's age (RPO), delete the instance (always), publish the result.

The result is a markdown artifact (this run and the trend) plus a table artifact under one stable
key per stack, `restore-test-history-{stack}-{env}`, whose versions are the history in the UI;
the history itself lives in a Prefect variable (flows/run_history.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows import run_history
from flows.common import StackRun, open_stack
from tasks import backup, pgcheck
from tasks.aws import EcsflowError

HISTORY = "restore_test"


class RestoreTestRun(StackRun):
    snapshot: str | None = Field(None, description="Restore this snapshot of ours instead of the newest backup.")


@flow(name="restore-test", description="Restore the newest snapshot to a temporary private instance, verify it, "
      "measure RTO and RPO, delete the instance, publish the result.")
def restore_test_flow(params: RestoreTestRun = RestoreTestRun()) -> dict[str, Any]:  # noqa: B008
    spec, ctx = open_stack(params)
    logger = get_run_logger()
    started = datetime.now(UTC)
    clock = time.monotonic()
    identifier = backup.restore_identifier(ctx, started)
    checks = spec.backup.restore_test
    result: dict[str, Any] = {"stack": ctx.prefix, "started_at": started.isoformat(), "temporary_instance": identifier,
                              "snapshot": None, "ok": False}
    failure: BaseException | None = None
    try:
        snapshot = (backup.find_newest_backup(ctx) if params.snapshot is None
                    else _named_snapshot(ctx, params.snapshot))
        result.update(snapshot=snapshot.name, snapshot_time=backup.created_at(snapshot).isoformat())
        instance = backup.restore_temporary_instance(spec, ctx, snapshot, identifier)
        result["restore_seconds"] = round(time.monotonic() - clock, 2)
        target = pgcheck.override_target(spec) or pgcheck.instance_target(spec, instance)
        report = pgcheck.verify_database(target, ctx, list(checks.key_tables), checks.verify_query)
        result["verification"] = report
        if not report["ok"]:
            failed = [f"{c['check']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
            raise pgcheck.VerificationFailed(f"the restored database failed verification ({'; '.join(failed)})")
        verified = datetime.now(UTC)
        result["rto_seconds"] = round(time.monotonic() - clock, 2)
        result["rpo_seconds"] = round((verified - backup.created_at(snapshot)).total_seconds(), 1)
        if report.get("newest_data"):
            newest = datetime.fromisoformat(report["newest_data"])
            result["newest_data_age_seconds"] = round((verified - newest).total_seconds(), 1)
        result["ok"] = True
    except BaseException as exc:
        failure = exc
        result["error"] = str(exc) or type(exc).__name__
    finally:
        # Always: a verification failure, a timeout or a cancellation must not leave the copy running.
        try:
            result["temporary_instance_deleted"] = backup.delete_temporary_instance(identifier, ctx)
        except Exception as exc:
            result["temporary_instance_deleted"] = False
            result["cleanup_error"] = str(exc)
            failure = failure or exc
        result["finished_at"] = datetime.now(UTC).isoformat()
        try:
            _publish(spec, ctx, result)
        except Exception as exc:  # never hide the run's own outcome behind a reporting error
            logger.error("could not publish the restore test's result: %s", exc)
            failure = failure or exc
    if failure is not None:
        logger.error("restore test of %s failed: %s", ctx.prefix, result.get("error") or result.get("cleanup_error"))
        raise failure
    logger.info("restore test of %s passed: RTO %.1f s, RPO %.0f s", ctx.prefix, result["rto_seconds"],
                result["rpo_seconds"])
    return result


def _named_snapshot(ctx: Any, name: str) -> Any:
    found = backup.find_snapshot(ctx, name)
    if found is None or not backup.is_our_backup(ctx, found):
        raise EcsflowError(f"snapshot {name} is not a backup of {ctx.prefix} in {ctx.region}")
    return found


def _publish(spec: Any, ctx: Any, result: dict[str, Any]) -> None:
    entry = {"at": result["started_at"][:16] + "Z", "ok": result["ok"], "snapshot": result["snapshot"],
             "rto_s": result.get("rto_seconds"), "rpo_s": result.get("rpo_seconds"),
             "restore_s": result.get("restore_seconds")}
    try:
        history = run_history.append(HISTORY, ctx.prefix, entry)
    except Exception as exc:  # the history is a convenience; the run's own artifact still tells
        get_run_logger().warning("could not update the restore-test history: %s", exc)
        history = [entry]
    create_markdown_artifact(key=f"restore-test-{ctx.prefix}", markdown=restore_markdown(result, history),
                             description=f"Restore test of {ctx.prefix}: RTO, RPO, verification")
    create_table_artifact(key=f"restore-test-history-{ctx.prefix}", table=list(reversed(history)),
                          description=f"Measured restore times of {ctx.prefix}, newest first")
    verdict = "passed" if result["ok"] else "FAILED"
    run_history.notify(spec, ctx, "restore_test.passed" if result["ok"] else "restore_test.failed",
                       f"restore test {verdict}", restore_markdown(result, history[-5:]))


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def restore_markdown(result: dict[str, Any], history: list[dict[str, Any]]) -> str:
    verdict = "passed" if result["ok"] else "**FAILED**"
    lines = [f"# Restore test of {result['stack']}: {verdict}", "",
             "| measure | value |", "|---|---|",
             f"| RTO (restore start to verified) | {_seconds(result.get('rto_seconds'))} |",
             f"| RPO (snapshot age when verified) | {_seconds(result.get('rpo_seconds'))} |",
             f"| restore alone | {_seconds(result.get('restore_seconds'))} |",
             f"| newest data age | {_seconds(result.get('newest_data_age_seconds'))} |",
             f"| snapshot | `{result.get('snapshot')}` ({result.get('snapshot_time', '-')}) |",
             f"| temporary instance | `{result['temporary_instance']}` "
             f"({'deleted' if result.get('temporary_instance_deleted') else 'NOT deleted: delete it by hand'}) |"]
    for key in ("error", "cleanup_error"):
        if result.get(key):
            lines += ["", f"**{key.replace('_', ' ')}:** {result[key]}"]
    report = result.get("verification")
    if report:
        lines += ["", "## Verification", "", f"Against {report['target']}", "", "| check | ok | detail |",
                  "|---|---|---|"]
        lines += [f"| {c['check']} | {'yes' if c['ok'] else '**no**'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", "## History (newest first)", "", "| when | ok | RTO | RPO | snapshot |", "|---|---|---|---|---|"]
    lines += [f"| {h.get('at')} | {'yes' if h.get('ok') else 'no'} | {_seconds(h.get('rto_s'))} | "
              f"{_seconds(h.get('rpo_s'))} | {h.get('snapshot') or '-'} |" for h in reversed(history)]
    return "\n".join(lines) + "\n"
