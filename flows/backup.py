"""`ecsflow backup`: a manual snapshot of the database, its copy in the second region, and the
pruning of our snapshots past the stack's retention (daily in prefect.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import StackRun, open_stack
from flows.run_history import notify
from tasks import backup, kms
from tasks.aws import EcsflowError


class BackupRun(StackRun):
    """Which stack to back up."""


@flow(name="backup", description="Manual RDS snapshot tagged with the stack and date, copied to the second region "
      "with that region's KMS key; our snapshots past the retention are pruned (never automated or foreign ones).")
def backup_flow(params: BackupRun = BackupRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    logger = get_run_logger()
    now = datetime.now(UTC)
    retention = spec.backup.snapshot_retention_days
    report: dict[str, Any] = {"snapshot": backup.snapshot_identifier(ctx, now), "copy": None, "pruned": {}}
    if spec.backup.copy_region == ctx.region:  # the stack file left the region to AWS_REGION
        raise EcsflowError(f"backup.copy_region {ctx.region} is the region the stack runs in; name another region")
    try:
        snapshot = backup.create_snapshot(spec, ctx, now)
        report["snapshot_created"] = snapshot.attrs.get("created")
        prunes = [backup.prune_snapshots.submit(ctx, retention, now)]
        if spec.backup.copy_region:
            copy_ctx = backup.region_context(ctx, spec.backup.copy_region)
            key = kms.ensure_key(copy_ctx, backup.COPY_KEY_PURPOSE)
            copied = backup.copy_snapshot(snapshot, copy_ctx, key)
            report["copy"] = {"region": copy_ctx.region, "snapshot": copied.id, "kms_key": key.id}
            # the copy region is pruned only once today's copy is there
            prunes.append(backup.prune_snapshots.submit(copy_ctx, retention, now))
        for future, region in zip(prunes, [ctx.region, spec.backup.copy_region], strict=False):
            report["pruned"][region] = future.result()
    except Exception as exc:
        notify(spec, ctx, "backup.failed", f"backup of {ctx.prefix} failed", str(exc))
        raise
    logger.info("backup %s done: copy %s, pruned %s", report["snapshot"], report["copy"], report["pruned"])
    create_markdown_artifact(key=f"backup-{ctx.prefix}", markdown=backup_markdown(ctx.prefix, retention, report),
                             description=f"Backup of {ctx.prefix}")
    return report


def backup_markdown(prefix: str, retention: int, report: dict[str, Any]) -> str:
    copy = report["copy"]
    lines = [f"# Backup of {prefix}", "",
             f"- snapshot: `{report['snapshot']}` (taken {report.get('snapshot_created')})",
             f"- copy: `{copy['snapshot']}` in {copy['region']}" if copy else "- copy: none (no backup.copy_region)",
             f"- retention: {retention} days", "", "| region | pruned snapshots |", "|---|---|"]
    lines += [f"| {region} | {', '.join(names) or 'none'} |" for region, names in report["pruned"].items()]
    return "\n".join(lines) + "\n"
