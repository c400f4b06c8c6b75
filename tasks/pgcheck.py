"""PostgreSQL work of the backup flows: verification queries, `pg_dump` to S3, and the check that a
dump restores (`pg_restore` into a scratch database, row counts compared).

Credentials come from Secrets Manager at run time (the RDS-managed master secret of the instance,
or the secret `backup.endpoint_override` names) and go to psycopg as a keyword and to pg_dump /
pg_restore through PGPASSWORD in the child's environment only: never into a log line, a task
parameter, a result or an artifact. A `PgTarget` names where to connect and which secret to read,
nothing more.

The runner needs network access to the database (run these flows on an ECS work pool inside the
VPC in production, see docs/runbooks/) and pg_dump / pg_restore of at least the server's major
version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from spec import Stack
from tasks.aws import AwsContext, EcsflowError, call, progress
from tasks.contract import Observed, aws_task

CONNECT_TIMEOUT = 15
STATEMENT_TIMEOUT_MS = 120_000
SCRATCH_COMMENT = "ecsflow scratch database for the dump restore check"


class VerificationFailed(EcsflowError):
    """The restored database does not answer as it should."""


@dataclass(frozen=True)
class PgTarget:
    """Where to connect, and which secret holds the user name and password (never the password itself)."""

    host: str
    port: int
    dbname: str
    secret_arn: str
    sslmode: str
    what: str  # e.g. "temporary instance library-prod-restore-test-..." for messages

    def __str__(self) -> str:
        return f"{self.what} ({self.host}:{self.port}/{self.dbname})"


def override_target(spec: Stack) -> PgTarget | None:
    o = spec.backup.endpoint_override
    if o is None:
        return None
    return PgTarget(host=o.host, port=o.port, dbname=o.db_name or spec.database.db_name, secret_arn=o.secret_arn,
                    sslmode=o.sslmode, what=f"stand-in PostgreSQL {o.host}:{o.port} (backup.endpoint_override)")


def instance_target(spec: Stack, instance: Observed) -> PgTarget:
    """An RDS instance through its managed master secret. rds.force_ssl is on: TLS is required."""
    endpoint, secret = instance.attrs.get("endpoint"), instance.attrs.get("master_secret_arn")
    if not endpoint or not secret:
        raise EcsflowError(f"DB instance {instance.name} has no endpoint or no managed master secret yet")
    return PgTarget(host=endpoint, port=int(instance.attrs.get("port") or spec.database.port),
                    dbname=spec.database.db_name, secret_arn=secret, sslmode="require",
                    what=f"DB instance {instance.name}")


def production_target(spec: Stack, ctx: AwsContext) -> PgTarget:
    """The database the export dumps: the stand-in when the stack names one, else production's instance."""
    target = override_target(spec)
    if target is not None:
        return target
    from tasks import database

    instance = database.find_db_instance(spec, ctx)
    if instance is None:
        raise EcsflowError(f"no DB instance {database.instance_identifier(ctx)}; run `ecsflow up` first")
    return instance_target(spec, instance)


def _credentials(ctx: AwsContext, target: PgTarget) -> tuple[str, str]:
    got = call(f"read the database credentials for {target.what}", ctx.client("secretsmanager").get_secret_value,
               SecretId=target.secret_arn)
    try:
        value = json.loads(got["SecretString"])
        return str(value["username"]), str(value["password"])
    except (KeyError, TypeError, ValueError):
        # the message names the secret, never its content
        raise EcsflowError(f"secret {target.secret_arn} is not JSON with username and password") from None


@contextmanager
def connect(ctx: AwsContext, target: PgTarget, dbname: str | None = None,
            autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    user, password = _credentials(ctx, target)
    try:
        conn = psycopg.connect(host=target.host, port=target.port, dbname=dbname or target.dbname, user=user,
                               password=password, sslmode=target.sslmode, connect_timeout=CONNECT_TIMEOUT,
                               application_name="ecsflow", autocommit=autocommit,
                               options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
    except psycopg.Error as exc:
        raise EcsflowError(f"cannot connect to {target}: {_first_line(exc)}") from None
    try:
        yield conn
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _pg_env(user: str, password: str, target: PgTarget) -> dict[str, str]:
    """The child's environment: the password only here, never on its command line (visible in ps)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, PGUSER=user, PGSSLMODE=target.sslmode, PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
               PGAPPNAME="ecsflow")
    return env


# ---------------------------------------------------------------- queries


def list_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' "
        "and table_schema not in ('pg_catalog', 'information_schema') order by 1, 2").fetchall()
    return [name if schema == "public" else f"{schema}.{name}" for schema, name in rows]


def _identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split(".", 1))


def row_counts(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    counts = {}
    for table in tables:
        row = conn.execute(sql.SQL("select count(*) from {}").format(_identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return str(value)


@aws_task(task_run_name="verify {target.what}")
def verify_database(target: PgTarget, ctx: AwsContext, key_tables: list[str],
                    verify_query: str | None) -> dict[str, Any]:
    """Connect, list the tables, count the key tables' rows, run the stack's query (read-only).
    Returns every check with its outcome; `ok` is False when any failed (it does not raise, so the
    report shows what passed and what did not)."""
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"target": str(target), "checks": checks, "tables": [], "row_counts": {},
                              "query_result": None, "newest_data": None}

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append({"check": name, "ok": ok, "detail": detail})
        return ok

    try:
        with connect(ctx, target) as conn:
            version = conn.execute("show server_version").fetchone()
            check("connect", True, f"PostgreSQL {version[0] if version else '?'}")
            tables = list_tables(conn)
            report["tables"] = tables
            check("list tables", bool(tables), f"{len(tables)} tables" if tables else "no tables at all")
            for table in key_tables:
                try:
                    count = row_counts(conn, [table])[table]
                    report["row_counts"][table] = count
                    check(f"rows of {table}", True, f"{count} rows")
                except psycopg.Error as exc:
                    conn.rollback()
                    check(f"rows of {table}", False, _first_line(exc))
            if verify_query:
                _run_query(conn, verify_query, report, check)
            conn.rollback()
    except EcsflowError as exc:
        check("connect", False, str(exc))
    report["ok"] = all(c["ok"] for c in checks)
    return report


def _run_query(conn: psycopg.Connection[Any], query: str, report: dict[str, Any], check: Any) -> None:
    try:
        conn.rollback()
        conn.execute("set transaction read only")
        row = conn.execute(query).fetchone()  # the stack author's SQL, read-only by the transaction
        value = row[0] if row else None
        report["query_result"] = _jsonable(value)
        if isinstance(value, datetime):
            newest = value if value.tzinfo else value.replace(tzinfo=UTC)
            report["newest_data"] = newest.astimezone(UTC).isoformat()
        check("verify query", value is not None and value is not False, f"returned {_jsonable(value)!r}")
    except psycopg.Error as exc:
        conn.rollback()
        check("verify query", False, _first_line(exc))


# ---------------------------------------------------------------- pg_dump to S3


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise EcsflowError(f"{name} is not installed on this runner; install the PostgreSQL client "
                           f"(e.g. `apt-get install postgresql-client`) of at least the server's major version")
    return path


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=6 * 60 * 60, check=False)
    if done.returncode != 0:
        raise EcsflowError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump_key(ctx: AwsContext, dbname: str, now: datetime) -> str:
    now = now.astimezone(UTC)
    return f"pg_dump/{dbname}/{now:%Y/%m/%d}/{ctx.prefix}-{dbname}-{now:%Y%m%dT%H%M%SZ}.dump"


@aws_task(task_run_name="pg_dump {target.dbname} to s3")
def dump_to_s3(target: PgTarget, ctx: AwsContext, bucket: Observed, kms_key: Observed, key_tables: list[str],
               now: datetime) -> dict[str, Any]:
    """`pg_dump -Fc` of the database, uploaded SSE-KMS with a manifest (sha256, row counts).

    The row counts are taken in the very snapshot pg_dump reads (pg_export_snapshot), so the restore
    check can demand equal counts even while the application keeps writing."""
    pg_dump = _tool("pg_dump")
    user, password = _credentials(ctx, target)
    key = dump_key(ctx, target.dbname, now)
    with tempfile.TemporaryDirectory(prefix="ecsflow-dump-") as tmp, connect(ctx, target) as conn:
        conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        snapshot_row = conn.execute("select pg_export_snapshot()").fetchone()
        tables = key_tables or list_tables(conn)
        counts = row_counts(conn, tables)
        path = Path(tmp) / "dump"
        progress(f"pg_dump of {target} ({len(tables)} tables counted)")
        _run([pg_dump, "--format=custom", f"--file={path}", f"--host={target.host}", f"--port={target.port}",
              f"--dbname={target.dbname}", f"--snapshot={snapshot_row[0] if snapshot_row else ''}",
              "--no-password"], _pg_env(user, password, target), f"pg_dump of {target}")
        conn.rollback()
        size, sha = path.stat().st_size, _sha256(path)
        s3 = ctx.s3()
        sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key.id}
        call(f"upload {key} to {bucket.name}", s3.upload_file, Filename=str(path), Bucket=bucket.name, Key=key,
             ExtraArgs={**sse, "Metadata": {"sha256": sha}})
        manifest = {"database": target.dbname, "source": str(target), "taken_at": now.astimezone(UTC).isoformat(),
                    "bytes": size, "sha256": sha, "row_counts": counts, "format": "pg_dump custom (-Fc)"}
        call(f"upload the manifest of {key}", s3.put_object, Bucket=bucket.name, Key=f"{key}.json",
             Body=json.dumps(manifest, indent=2).encode(), ContentType="application/json", **sse)
        head = call(f"read back {key}", s3.head_object, Bucket=bucket.name, Key=key)
    return {"bucket": bucket.name, "key": key, "version_id": head.get("VersionId"), "bytes": size, "sha256": sha,
            "encryption": head.get("ServerSideEncryption"), "row_counts": counts}


def scratch_name(dbname: str) -> str:
    return f"{dbname[:40]}_ecsflow_restore_check"


def _drop_scratch(admin: psycopg.Connection[Any], name: str) -> None:
    row = admin.execute("select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
                        (name,)).fetchone()
    if row is None:
        return
    if row[0] != SCRATCH_COMMENT:
        raise EcsflowError(f"database {name} exists and is not ecsflow's scratch database; rename it")
    admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


@aws_task(task_run_name="restore check of {key}")
def restore_dump_check(target: PgTarget, ctx: AwsContext, bucket: str, key: str) -> dict[str, Any]:
    """Download the dump, check its sha256, `pg_restore` it into a scratch database on the same server,
    and compare the row counts with the manifest's. The scratch database is dropped afterwards."""
    pg_restore = _tool("pg_restore")
    user, password = _credentials(ctx, target)
    s3 = ctx.s3()
    manifest = json.loads(call(f"read the manifest of {key}", s3.get_object, Bucket=bucket,
                               Key=f"{key}.json")["Body"].read())
    scratch = scratch_name(target.dbname)
    with tempfile.TemporaryDirectory(prefix="ecsflow-restore-") as tmp:
        path = Path(tmp) / "dump"
        call(f"download {key}", s3.download_file, Bucket=bucket, Key=key, Filename=str(path))
        if _sha256(path) != manifest["sha256"]:
            raise VerificationFailed(f"{key}: the downloaded dump's sha256 differs from its manifest's")
        with connect(ctx, target, dbname="postgres", autocommit=True) as admin:
            _drop_scratch(admin, scratch)
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
            admin.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(scratch),
                                                                         sql.Literal(SCRATCH_COMMENT)))
            try:
                progress(f"pg_restore of {key} into scratch database {scratch} on {target.host}")
                _run([pg_restore, f"--host={target.host}", f"--port={target.port}", f"--dbname={scratch}",
                      "--no-owner", "--no-privileges", "--exit-on-error", "--no-password", str(path)],
                     _pg_env(user, password, target), f"pg_restore of {key}")
                with connect(ctx, target, dbname=scratch) as conn:
                    restored = row_counts(conn, list(manifest["row_counts"]))
            finally:
                _drop_scratch(admin, scratch)
    expected = manifest["row_counts"]
    mismatches = {t: {"dump": expected[t], "restored": restored.get(t)} for t in expected
                  if restored.get(t) != expected[t]}
    return {"key": key, "scratch_database": scratch, "row_counts_dump": expected, "row_counts_restored": restored,
            "mismatches": mismatches, "ok": not mismatches}
