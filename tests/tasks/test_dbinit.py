"""The database initialisation: its SQL against the real local PostgreSQL 15 (run by the very
command the ECS task runs), and its AWS side (the app user's secret, the task definition, the
run_task call) against a real moto server."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import psycopg
import pytest
import yaml

from spec import Stack
from tasks import dbinit, logs, services
from tasks.aws import CALLS, AwsContext
from tasks.contract import Observed
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


def stack(db_name: str = "library", app_user: str = "library_app") -> Stack:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["database"].update(db_name=db_name, app_username=app_user)
    data["services"]["backend"]["secrets"] = {"DB_USERNAME": "database_app:username",
                                              "DB_PASSWORD": "database_app:password"}
    return Stack.model_validate(data)


# ------------------------------------------------------------------ the SQL, for real


def superuser_sql(sql: str, database: str = "postgres") -> str:
    """As the cluster's superuser (the tests run as root, like CI)."""
    done = subprocess.run(["su", "postgres", "-c", f"psql -X -At -v ON_ERROR_STOP=1 -d {database}"], input=sql,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Cluster:
    master: str
    master_password: str
    db_name: str
    app_user: str

    def run_init(self, app_password: str) -> subprocess.CompletedProcess[str]:
        """The task's command with the task definition's environment; only the host, port, TLS (the
        local server has no certificate; RDS forces TLS) and the secrets ECS would inject differ."""
        spec = stack(self.db_name, self.app_user)
        database = Observed(id="db", name="db", attrs={"master_secret_arn": "arn:master", "endpoint": "db",
                                                        "port": 5432})
        ctx = AwsContext(stack="library", env="prod", region=REGION)
        definition = dbinit.task_definition(spec, ctx, execution_role_arn="arn:role", database=database,
                                            app_secret_arn="arn:app")
        container = definition["containerDefinitions"][0]
        env = {e["name"]: e["value"] for e in container["environment"]}
        env.update(PGHOST="127.0.0.1", PGPORT="5432", PGSSLMODE="disable", PGUSER=self.master,
                   PGPASSWORD=self.master_password, APP_DB_PASSWORD=app_password, PATH=os.environ["PATH"])
        return subprocess.run(dbinit.COMMAND, env=env, capture_output=True, text=True, timeout=60, check=False)

    def snapshot(self) -> dict[str, str]:
        """Everything the script may change, as the superuser sees it."""
        u, d = self.app_user, self.db_name
        return {
            "role": superuser_sql(f"SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolpassword "
                                  f"FROM pg_authid WHERE rolname = '{u}'"),
            "database": superuser_sql(f"SELECT datname, pg_get_userbyid(datdba), datacl FROM pg_database "
                                      f"WHERE datname = '{d}'"),
            "schema": superuser_sql("SELECT nspacl FROM pg_namespace WHERE nspname = 'public'", d),
            "defaults": superuser_sql("SELECT defaclobjtype, defaclacl FROM pg_default_acl ORDER BY 1", d),
        }


@pytest.fixture
def pg() -> Iterator[Cluster]:
    """A master user like RDS's (CREATEDB, CREATEROLE, not a superuser), removed afterwards."""
    suffix = secrets.token_hex(4)
    cluster = Cluster(master=f"dbinit_master_{suffix}", master_password=secrets.token_urlsafe(16),
                      db_name=f"dbinit_{suffix}", app_user=f"dbinit_app_{suffix}")
    superuser_sql(f"CREATE ROLE {cluster.master} LOGIN CREATEDB CREATEROLE PASSWORD '{cluster.master_password}'")
    yield cluster
    superuser_sql(f"DROP DATABASE IF EXISTS {cluster.db_name} WITH (FORCE)")
    superuser_sql(f"DROP ROLE IF EXISTS {cluster.app_user}")
    superuser_sql(f"DROP ROLE IF EXISTS {cluster.master}")


def connect(cluster: Cluster, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=5432, dbname=cluster.db_name, user=cluster.app_user,
                           password=password, autocommit=True, connect_timeout=5)


def test_init_sql_makes_a_working_unprivileged_app_user_and_a_rerun_changes_nothing(pg: Cluster) -> None:
    password = secrets.token_urlsafe(dbinit.PASSWORD_BYTES)
    first = pg.run_init(password)
    assert first.returncode == 0, first.stderr
    assert password not in first.stdout + first.stderr
    before = pg.snapshot()
    assert before["role"].startswith(f"{pg.app_user}|f|f|f|t|SCRAM-SHA-256$")
    assert before["database"].startswith(f"{pg.db_name}|{pg.master}|")
    assert "{=" not in before["database"] and ",=" not in before["database"]  # PUBLIC lost CONNECT...
    assert f"{pg.app_user}=Tc/{pg.master}" in before["database"]  # ...the app user has them

    with connect(pg, password) as conn:
        conn.execute("CREATE TABLE books (id bigserial PRIMARY KEY, title text NOT NULL)")
        conn.execute("INSERT INTO books (title) VALUES ('Dune')")
        assert conn.execute("SELECT title FROM books").fetchall() == [("Dune",)]
        for forbidden in ("CREATE DATABASE elsewhere", "CREATE ROLE intruder", "SELECT rolpassword FROM pg_authid",
                          "ALTER ROLE CURRENT_USER SUPERUSER", "ALTER ROLE CURRENT_USER CREATEDB"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)

    # The second run (even with another password in the secret) changes nothing: no reset, no new grants.
    second = pg.run_init(secrets.token_urlsafe(dbinit.PASSWORD_BYTES))
    assert second.returncode == 0, second.stderr
    assert pg.snapshot() == before
    with connect(pg, password) as conn:
        assert conn.execute("SELECT count(*) FROM books").fetchone() == (1,)


def test_init_without_the_app_password_fails_before_touching_the_database(pg: Cluster) -> None:
    done = pg.run_init("")
    assert done.returncode != 0 and "APP_DB_PASSWORD" in done.stderr
    assert superuser_sql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{pg.app_user}'") == "0"


# ------------------------------------------------------------------ the AWS side, against moto


@pytest.fixture
def aws_world(aws: MotoServer) -> dict[str, Any]:
    """What the phase hands the task: a cluster, private subnets, sg-ecs, and a DB with its master secret."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [Observed(id=ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24",
                                             AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"], name=az)
               for i, az in enumerate("ac")]
    group = ec2.create_security_group(GroupName="sg-ecs", Description="ecs", VpcId=vpc)["GroupId"]
    cluster = boto3.client("ecs", region_name=REGION).create_cluster(clusterName="library-prod")["cluster"]
    master = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="rds!db-1234", SecretString=json.dumps({"username": "library_admin", "password": "master-pw-123"}))
    database = Observed(id="db", name="library-prod-db", attrs={
        "master_secret_arn": master["ARN"], "endpoint": "library-prod-db.abc.ap-northeast-1.rds.amazonaws.com",
        "port": 5432})
    return {"subnets": subnets, "group": Observed(id=group, name="sg-ecs"),
            "cluster": Observed(id=cluster["clusterArn"], name="library-prod"), "database": database}


def provision(spec: Stack, ctx: AwsContext, world: dict[str, Any]) -> tuple[Observed, Observed, Observed | None]:
    secret = dbinit.ensure_app_secret.fn(spec, ctx)
    role = dbinit.ensure_execution_role.fn(spec, ctx, world["database"], secret)
    group = logs.ensure_log_group.fn(ctx, dbinit.log_group(spec), None)
    td = dbinit.ensure_task_definition.fn(spec, ctx, execution_role=role, database=world["database"],
                                          app_secret=secret, log_group=group)
    ran = dbinit.run_dbinit.fn(spec, ctx, cluster=world["cluster"], task_definition=td,
                               private_subnets=world["subnets"], security_group=world["group"], app_secret=secret)
    return secret, td, ran


def test_first_provision_runs_the_init_task_once_with_secrets_by_arn_only(aws_world: dict[str, Any]) -> None:
    spec = stack()
    ctx = AwsContext.for_stack(spec)
    sm = boto3.client("secretsmanager", region_name=REGION)
    ecs = boto3.client("ecs", region_name=REGION)
    assert [c.action for c in dbinit.plan_app_secret(spec, ctx, None)] == ["create", "create"]

    secret, td, ran = provision(spec, ctx, aws_world)
    assert ran is not None and ran.attrs["exit_code"] == 0
    value = json.loads(sm.get_secret_value(SecretId=secret.id)["SecretString"])
    assert value["username"] == "library_app" and len(value["password"]) == 43
    described = sm.describe_secret(SecretId=secret.id)
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["ecsflow:component"] == "db-app-secret" and tags["project"] == "library-management"
    assert tags[dbinit.DONE_TAG] == dbinit.script_digest(spec)

    [task] = ecs.describe_tasks(cluster=aws_world["cluster"].id, tasks=[ran.id])["tasks"]
    assert task["startedBy"] == "ecsflow-dbinit" and task["taskDefinitionArn"] == td.id
    assert task["overrides"]["containerOverrides"] == [{"name": "dbinit", "command": dbinit.COMMAND}]
    definition = ecs.describe_task_definition(taskDefinition=td.id)["taskDefinition"]
    container = definition["containerDefinitions"][0]
    master = aws_world["database"].attrs["master_secret_arn"]
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "PGUSER": f"{master}:username::", "PGPASSWORD": f"{master}:password::",
        "APP_DB_PASSWORD": f"{secret.id}:password::"}
    everything = json.dumps([definition, task], default=str)
    assert value["password"] not in everything and "master-pw-123" not in everything

    # The execution role reads exactly the two secrets.
    role = boto3.client("iam").get_role_policy(RoleName="library-prod-dbinit-execution", PolicyName="logs-secrets")
    statements = {s["Sid"]: s for s in role["PolicyDocument"]["Statement"]}
    assert statements["ReadDatabaseSecrets"]["Resource"] == sorted([master, secret.id])

    # The backend takes the app user's secret, by ARN and JSON key, and its execution role may read it.
    backend = services.container_definition(spec, ctx, "backend", "img:1", "group", aws_world["database"])
    assert {s["name"]: s["valueFrom"] for s in backend["secrets"]} == {
        "DB_USERNAME": f"{secret.id}:username::", "DB_PASSWORD": f"{secret.id}:password::"}
    assert {"DB_HOST", "DB_PORT", "DB_DATABASE"} <= {e["name"] for e in backend["environment"]}
    assert services.secret_arns(spec, "backend", aws_world["database"]) == [secret.id]

    # The second `up`: nothing runs, nothing changes, and the password is the same.
    CALLS.reset()
    assert provision(spec, ctx, aws_world)[2] is None
    assert CALLS.mutating() == {}
    assert json.loads(sm.get_secret_value(SecretId=secret.id)["SecretString"])["password"] == value["password"]
    assert [c.action for c in dbinit.plan_app_secret(spec, ctx, dbinit.find_app_secret(ctx))] == ["no-op", "no-op"]

    # A renamed database means another script: it runs once more.
    renamed = stack(db_name="catalogue")
    assert provision(renamed, ctx, aws_world)[2] is not None


def test_delete_refuses_a_secret_without_our_tags_and_removes_ours(aws: MotoServer) -> None:
    spec = stack()
    ctx = AwsContext.for_stack(spec)
    secret = dbinit.ensure_app_secret.fn(spec, ctx)
    assert [o.id for o in dbinit.inventory_app_secrets(ctx)] == [secret.id]
    foreign = Observed(id=secret.id, name=secret.name, tags={"ecsflow:stack": "other", "ecsflow:env": "prod"})
    with pytest.raises(Exception, match="refusing to delete"):
        dbinit.delete_app_secret.fn(foreign, ctx)
    dbinit.delete_app_secret.fn(secret, ctx)
    assert dbinit.inventory_app_secrets(ctx) == [] and dbinit.find_app_secret(ctx) is None


# ------------------------------------------------------------------ the stack file


def test_app_database_references_are_valid_and_the_user_must_not_be_the_master() -> None:
    spec = stack()
    backend = spec.services["backend"]
    assert spec.uses_app_database_user and backend.uses_app_database_secret and backend.uses_database_secret
    assert not stack().services["frontend"].uses_database_secret
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    assert not Stack.model_validate(data).uses_app_database_user, "the library stack keeps the master user"
    data["services"]["backend"]["secrets"]["DB_PASSWORD"] = "database_app:token"
    with pytest.raises(ValueError, match="DB_PASSWORD: unknown secret reference 'database_app:token'"):
        Stack.model_validate(data)
    with pytest.raises(ValueError, match=r"app_username .* must differ from master_username"):
        stack(app_user="library_admin")
    assert dbinit.plan_dbinit(Stack.model_validate(yaml.safe_load(LIBRARY_STACK.read_text())),
                              AwsContext(stack="library", env="prod", region=REGION)) == []
