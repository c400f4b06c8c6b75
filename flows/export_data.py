"""`ecsflow export-data`: `pg_dump -Fc` of the application database to the stack's encrypted,
versioned export bucket, then (by default) the proof that the dump restores: `pg_restore` into a
scratch database with row counts equal to those taken in the dump's own snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.common import StackRun, open_stack
from flows.run_history import notify
from tasks import export, kms, pgcheck


class ExportRun(StackRun):
    restore_check: bool = Field(True, description="Restore the new dump into a scratch database on the same server "
                                "and compare row counts.")


@flow(name="export-data", description="pg_dump (custom format) of the application database to the SSE-KMS, "
      "versioned export bucket, and a restore check of the dump into a scratch database.")
def export_data_flow(params: ExportRun = ExportRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    logger = get_run_logger()
    now = datetime.now(UTC)
    try:
        key = kms.ensure_key(ctx, "rds")
        bucket = export.ensure_export_bucket(spec, ctx, key)
        target = pgcheck.production_target(spec, ctx)
        dump = pgcheck.dump_to_s3(target, ctx, bucket, key, list(spec.backup.restore_test.key_tables), now)
        check = pgcheck.restore_dump_check(target, ctx, bucket.name, dump["key"]) if params.restore_check else None
        result = {"dump": dump, "restore_check": check}
        create_markdown_artifact(key=f"export-data-{ctx.prefix}", markdown=export_markdown(ctx.prefix, result),
                                 description=f"Data export of {ctx.prefix}")
        if check is not None and not check["ok"]:
            raise pgcheck.VerificationFailed(f"the dump {dump['key']} restored with other row counts: "
                                             f"{check['mismatches']}")
    except Exception as exc:
        notify(spec, ctx, "export.failed", f"data export of {ctx.prefix} failed", str(exc))
        raise
    logger.info("exported %s (%d bytes) to s3://%s", dump["key"], dump["bytes"], dump["bucket"])
    return result


def export_markdown(prefix: str, result: dict[str, Any]) -> str:
    dump, check = result["dump"], result["restore_check"]
    lines = [f"# Data export of {prefix}", "",
             f"- dump: `s3://{dump['bucket']}/{dump['key']}` (version {dump.get('version_id')})",
             f"- size: {dump['bytes']} bytes, sha256 `{dump['sha256']}`, encryption {dump.get('encryption')}",
             f"- restore check: {'not run' if check is None else 'passed' if check['ok'] else '**FAILED**'}",
             "", "| table | rows in the dump | rows restored |", "|---|---|---|"]
    restored = (check or {}).get("row_counts_restored", {})
    lines += [f"| {t} | {n} | {restored.get(t, '-')} |" for t, n in dump["row_counts"].items()]
    return "\n".join(lines) + "\n"
