"""`ecsflow demo`: the whole mission on one machine.

A moto server stands in for AWS and a local Prefect server (SQLite) records every run. On them:
`up` provisions every phase of the stack; when a Docker engine, Debian's docker-registry and
busybox-static are here, the sample app (examples/demo-app, a FROM-scratch stand-in for the
Laravel/Nuxt app, whose base images cannot be pulled) is built, pushed to a local registry and
deployed, with the ECS stand-in (ecsflow/ecs_standin.py) running its containers behind a local load
balancer that the deploy's health check probes; then a backup, a restore test and the security
audit. With wait (the default), the deployments are served and the GitHub webhook receiver listens,
and the demo prints a command that sends it a signed push, until Ctrl+C stops everything.

Everything it writes lives under .ecsflow/demo/: the demo copy of the stack, the app repository,
the webhook secret (mode 0600, never printed), the servers' logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecsflow.local import (
    LocalServer,
    MotoServer,
    PrefectServer,
    free_port,
    port_free,
    prefect_api_healthy,
    stop_on_ctrl_c_and_term,
    wait_http,
)

STATE_DIR = Path(".ecsflow") / "demo"
APP_SOURCE = Path(__file__).resolve().parent.parent / "examples" / "demo-app"
BUSYBOX = Path("/bin/busybox")
INSTALL_HINT = ("apt-get install -y docker.io docker-registry busybox-static apache2-utils, then start the engine "
                "as root: dockerd --iptables=false --ip6tables=false --bridge=none &")
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "demo",
            "ECSFLOW_POLL_SECONDS": "0.2", "ECSFLOW_RETRY_BASE_SECONDS": "0.5"}
WEBHOOK_SECRET_BLOCK = "ecsflow-demo-webhook-secret"  # its own name: never overwrite a real receiver's secret
DEPLOY_DEPLOYMENT = "deploy_app/deploy-app"
RESTORE_DB = "ecsflow_demo_library"
RESTORE_ROLE = "ecsflow_demo"


def run_demo(stack_file: str, *, port: int = 4200, wait: bool = True) -> int:
    servers: list[Any] = []  # each has stop(); stopped in reverse order
    stop_on_ctrl_c_and_term()
    try:
        print("ecsflow demo: starting the local AWS emulator (moto server)...", flush=True)
        moto = MotoServer(STATE_DIR)
        servers.append(moto)
        os.environ.update(FAKE_AWS, AWS_ENDPOINT_URL=moto.url)
        os.environ.pop("AWS_PROFILE", None)

        api_url = os.environ.get("PREFECT_API_URL", "")
        if not (api_url and prefect_api_healthy(api_url)):
            print("ecsflow demo: starting a local Prefect server (SQLite; about 15 s)...", flush=True)
            prefect = PrefectServer(STATE_DIR / "prefect", port if port_free(port) else free_port())
            servers.append(prefect)
            api_url = prefect.api_url
        os.environ["PREFECT_API_URL"] = api_url
        ui_url = api_url.removesuffix("/api")

        from prefect.settings import PREFECT_API_URL, temporary_settings

        from ecsflow.cli import load

        spec = load(stack_file)
        site = _app_site(spec, moto.url, servers)
        restore_note = _restore_standin(spec)
        demo_stack = write_demo_stack(stack_file, app=site, restore=restore_note.override)

        from ecsflow.cli import RunFailed, render_outputs, run_flow
        from flows.provision import ProvisionRun, provision_flow

        print(f"ecsflow demo: provisioning {demo_stack} (a copy of {stack_file}; watch it at {ui_url})", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            try:
                outputs = run_flow(provision_flow, ProvisionRun(stack_file=str(demo_stack), skip_images=True))
            except RunFailed as exc:
                print(f"ecsflow demo: the run failed: {exc}", file=sys.stderr)
                return 1
        print(render_outputs(outputs), flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            lines = [_deploy(str(demo_stack), site, run_flow, RunFailed)]
            lines += _operate(str(demo_stack), restore_note, run_flow, RunFailed)
        print(f"""
{chr(10).join(lines)}
Prefect UI:       {ui_url}   (flow runs, task runs, the outputs; deploy, backup, restore-test and audit artifacts)
AWS emulator:     {moto.url}{"" if site is None else f"   (through the ECS stand-in: {site.standin.url})"}
Stack file:       {demo_stack}   (the demo's copy of {stack_file})
Look around:      AWS_ENDPOINT_URL={os.environ["AWS_ENDPOINT_URL"]} AWS_ACCESS_KEY_ID=demo \\
                    AWS_SECRET_ACCESS_KEY=demo PREFECT_API_URL={api_url} ecsflow status --stack {demo_stack}
""", flush=True)
        if wait:
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                print(_serve(demo_stack, spec, site, ui_url, servers), flush=True)
            print("Press Ctrl+C to stop the servers.", flush=True)
            # Short naps: the kernel may hand Ctrl+C to any thread (Prefect runs several), and Python
            # only acts on it when the main thread next wakes; a long sleep would ignore it for that long.
            while True:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"ecsflow demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _flush_prefect_logs()
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
        if servers:
            print("ecsflow demo: stopped the servers.", flush=True)


# ---------------------------------------------------------------- the sample app


def app_prerequisites() -> list[str]:
    """What the sample app's build and deploy need and this machine lacks (empty: all here)."""
    missing = []
    if not _is_static(BUSYBOX):
        missing.append(f"a static {BUSYBOX} (Debian's busybox-static) for the FROM-scratch images")
    for binary, package in (("docker-registry", "docker-registry"), ("htpasswd", "apache2-utils")):
        if shutil.which(binary) is None:
            missing.append(f"{binary} (Debian's {package}) for the local registry standing in for ECR")
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        missing.append(f"a Docker engine answering at {where} ({type(exc).__name__})")
    return missing


def _is_static(path: Path) -> bool:
    """A binary that runs in a FROM-scratch image: no ELF interpreter (the dynamic loader) named."""
    try:
        head = path.read_bytes()[:8192]
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"/ld-linux" not in head and b"/ld-musl" not in head


class LocalRegistry(LocalServer):
    """Debian's docker-registry on 127.0.0.1, basic auth from a fresh htpasswd entry (as an ECR login
    needs credentials), standing in for ECR: deploys push here through ECSFLOW_REGISTRY."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.username, self.password = "ecsflow-demo", secrets.token_urlsafe(18)
        entry = subprocess.run(["htpasswd", "-Bbn", self.username, self.password], check=True,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        (home / "htpasswd").write_text(entry + "\n")
        (home / "htpasswd").chmod(0o600)
        port, debug = free_port(), free_port()
        self.host = f"127.0.0.1:{port}"
        config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": str((home / "data").resolve())},
                              "delete": {"enabled": True}},
                  "http": {"addr": self.host, "debug": {"addr": f"127.0.0.1:{debug}"},
                           "secret": secrets.token_hex(16)},
                  "auth": {"htpasswd": {"realm": "ecsflow-demo", "path": str((home / "htpasswd").resolve())}}}
        (home / "config.yml").write_text(yaml.safe_dump(config))
        (home / "config.yml").chmod(0o600)
        super().__init__(["docker-registry", "serve", str(home / "config.yml")], f"http://127.0.0.1:{debug}",
                         "/debug/health", home / "registry.log", dict(os.environ), timeout=30)


@dataclass
class AppSite:
    """Where the sample app goes: its git repository, the registry, the ECS stand-in, its public URL."""

    repo: Path
    services: list[str]
    registry: LocalRegistry
    standin: Any  # ecsflow.ecs_standin.EcsStandIn
    public_url: str


def _app_site(spec: Any, moto_url: str, servers: list[Any]) -> AppSite | None:
    services = [s for s in spec.services if (APP_SOURCE / s / "Dockerfile").is_file()]
    missing = app_prerequisites()
    if not services:
        print(f"ecsflow demo: no sample app for the services of {spec.name} ({', '.join(spec.services)}; "
              f"{APP_SOURCE} has backend and frontend): build and deploy skipped", flush=True)
        return None
    if missing:
        print("ecsflow demo: build and deploy of the sample app skipped; this machine lacks:\n"
              + "".join(f"  - {m}\n" for m in missing)
              + f"  To get them (Debian, as root): {INSTALL_HINT}\n  The rest of the demo runs.", flush=True)
        return None
    from ecsflow.ecs_standin import EcsStandIn

    print("ecsflow demo: starting a local registry (standing in for ECR) and the ECS stand-in...", flush=True)
    registry = LocalRegistry(STATE_DIR / "registry")
    servers.append(registry)
    public_port = free_port()
    standin = EcsStandIn(moto_url, registry=registry.host, app_port=public_port, region=spec.region,
                         load_balancer=True,
                         registry_auth={"username": registry.username, "password": registry.password})
    standin.start()
    servers.append(standin)
    os.environ.update(AWS_ENDPOINT_URL=standin.url, ECSFLOW_REGISTRY=registry.host,
                      ECSFLOW_REGISTRY_USERNAME=registry.username, ECSFLOW_REGISTRY_PASSWORD=registry.password)
    return AppSite(_app_repository(services), services, registry, standin, f"http://127.0.0.1:{public_port}")


def _app_repository(services: list[str]) -> Path:
    """.ecsflow/demo/app: the sample app as a git repository of its own (standing in for
    example-org/library-app), so its images carry a commit SHA, as CI's would."""
    repo = (STATE_DIR / "app").resolve()
    for service in services:
        target = repo / service
        shutil.copytree(APP_SOURCE / service, target, dirs_exist_ok=True)
        shutil.copy2(BUSYBOX, target / "busybox")
    (repo / ".dockerignore").write_text(".git\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()

    if not (repo / ".git").exists():
        git("init", "-q", "-b", "main")
    # The repository's own identity: the printed `git commit` for a second rollout works on any machine.
    git("config", "user.name", "ecsflow demo")
    git("config", "user.email", "demo@example.com")
    git("add", "-A")
    if git("status", "--porcelain"):
        git("commit", "-q", "-m", "the demo's stand-in app (examples/demo-app)")
    return repo


def write_demo_stack(stack_file: str, *, app: AppSite | None, restore: dict[str, Any] | None) -> Path:
    """.ecsflow/demo/<name>.yaml: the stack file, with build contexts made relative to its new place,
    the sample app's services building from the app repository, the public URL at the local load
    balancer, and the restore test's stand-in PostgreSQL when there is one."""
    source = Path(stack_file).resolve()
    data = yaml.safe_load(source.read_text())
    target = (STATE_DIR / source.name).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    for name, service in (data.get("services") or {}).items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("context"):
            build["context"] = os.path.relpath((source.parent / build["context"]).resolve(), target.parent)
        if app is not None and name in app.services:
            service["build"] = {"context": os.path.relpath(app.repo / name, target.parent)}
            if service.get("migration_command"):
                # moto records the migration task without running it; the stand-in image has no artisan
                service["migration_command"] = "/bin/busybox true"
    if app is not None:
        data.setdefault("load_balancer", {})["public_url"] = app.public_url
        deploy = data.setdefault("deploy", {})
        deploy.setdefault("stability_timeout_seconds", 60)
        deploy.setdefault("verify_timeout_seconds", 30)
    if restore is not None:
        data.setdefault("backup", {})["endpoint_override"] = restore
    header = (f"# Written by `ecsflow demo` from {stack_file}: a copy for the local emulator (build contexts, "
              f"public URL, restore-test database). Rewritten on each demo run.\n")
    target.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return target


def _deploy(stack_file: str, site: AppSite | None, run_flow: Any, run_failed: type[Exception]) -> str:
    if site is None:
        return ("Sample app:       not deployed (no Docker engine, registry or busybox-static here; see above). "
                "`ecsflow deploy` needs them (docs/deploy.md).")
    from flows.deploy_app import DeployRun, deploy_app_flow

    print(f"ecsflow demo: building and deploying the sample app ({', '.join(site.services)}) from {site.repo}...",
          flush=True)
    try:
        result = run_flow(deploy_app_flow, DeployRun(stack_file=stack_file, services=site.services,
                                                     ref="refs/heads/main"))
    except run_failed as exc:
        return f"Sample app:       deploy failed: {str(exc).splitlines()[0]}"
    revisions = ", ".join(f"{s} {_number(r['before'])} -> {_number(r['after'])}"
                          for s, r in result.get("revisions", {}).items())
    health = "; ".join(f"{s}: {p}" for s, p in _probes(stack_file, site).items())
    return (f"Sample app:       deployed {result['commit'][:12]} ({revisions}); health verified, {health}\n"
            f"                  open {site.public_url}/ and {site.public_url}/api/books. This is a STAND-IN app "
            f"(examples/demo-app: busybox httpd FROM scratch,\n                  because base images cannot be "
            f"pulled here); to deploy the real Laravel/Nuxt app, point the services' build.context at it\n"
            f"                  and run `ecsflow deploy` where docker/backend and docker/frontend can build "
            f"(docs/demo.md).")


def _number(revision: str) -> str:
    """`library-prod-backend:2` -> `2` (the task definition revision)."""
    return revision.rsplit(":", 1)[-1]


def _probes(stack_file: str, site: AppSite) -> dict[str, str]:
    """Each service's health URL through the local load balancer, as a user would open it."""
    import urllib.request

    from spec import load_stack

    spec = load_stack(stack_file)
    found = {}
    for service in site.services:
        url = f"{site.public_url}{spec.services[service].health_check_path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                found[service] = f"{url} -> HTTP {resp.status}"
        except Exception as exc:
            found[service] = f"{url} -> {exc}"
    return found


# ---------------------------------------------------------------- backup, restore test, audit


@dataclass
class RestoreStandIn:
    override: dict[str, Any] | None  # backup.endpoint_override for the demo stack, or None
    why_not: str  # when None: why the restore test's verification cannot reach a database


def _restore_standin(spec: Any) -> RestoreStandIn:
    """moto's RDS instances are records: nothing answers at their endpoints. When a local PostgreSQL
    runs and this user may create a role there (root, through `su postgres`), a database with sample
    library rows stands in for the restored instance in the verification (backup.endpoint_override)."""
    import socket

    no_db = "moto's RDS runs no PostgreSQL, so nothing can verify the restored copy"
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return RestoreStandIn(None, f"{no_db} (no local PostgreSQL on 127.0.0.1:5432 to stand in for it)")
    if os.geteuid() != 0 or shutil.which("psql") is None:
        return RestoreStandIn(None, f"{no_db} (a local PostgreSQL runs, but the demo creates its role as root "
                                    f"through `su postgres -c psql`)")
    password = secrets.token_urlsafe(18)
    statement = (f"do $$ begin if not exists (select from pg_roles where rolname = '{RESTORE_ROLE}') then "
                 f"create role {RESTORE_ROLE} login; end if; end $$; "
                 f"alter role {RESTORE_ROLE} with login password '{password}';\n"
                 f"drop database if exists {RESTORE_DB} with (force);\n"
                 f"create database {RESTORE_DB} owner {RESTORE_ROLE};\n")
    made = subprocess.run(["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -q"], input=statement, text=True,
                          capture_output=True, timeout=60, check=False)
    if made.returncode != 0:
        return RestoreStandIn(None, f"{no_db} (could not prepare the local PostgreSQL: "
                                    f"{made.stderr.strip()[:200]})")
    import boto3
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=5432, dbname=RESTORE_DB, user=RESTORE_ROLE, password=password,
                             connect_timeout=5) as conn:
            conn.execute(SAMPLE_LIBRARY)
            conn.commit()
    except psycopg.Error as exc:  # e.g. pg_hba.conf refuses password logins over TCP
        return RestoreStandIn(None, f"{no_db} (the local PostgreSQL refused the demo's role: "
                                    f"{str(exc).strip().splitlines()[0][:200]})")
    secrets_manager = boto3.client("secretsmanager", region_name=spec.region)
    value = json.dumps({"username": RESTORE_ROLE, "password": password})
    try:
        arn = secrets_manager.create_secret(Name="ecsflow-demo/restore-test-postgres", SecretString=value)["ARN"]
    except secrets_manager.exceptions.ResourceExistsException:
        arn = secrets_manager.put_secret_value(SecretId="ecsflow-demo/restore-test-postgres",
                                               SecretString=value)["ARN"]
    return RestoreStandIn({"host": "127.0.0.1", "port": 5432, "db_name": RESTORE_DB, "secret_arn": arn,
                           "sslmode": "disable"}, "")


SAMPLE_LIBRARY = """
create table books (id serial primary key, isbn text unique not null, title text not null, author text not null,
                    created_at timestamptz not null default now());
create table members (id serial primary key, name text not null, email text unique not null,
                      created_at timestamptz not null default now());
create table loans (id serial primary key, book_id int not null references books(id),
                    member_id int not null references members(id), due_on date not null, returned_at timestamptz,
                    created_at timestamptz not null default now());
insert into books (isbn, title, author) select 'isbn-' || i, 'Book ' || i, 'Author ' || (i % 17)
  from generate_series(1, 120) i;
insert into members (name, email) select 'Member ' || i, 'm' || i || '@example.org' from generate_series(1, 45) i;
insert into loans (book_id, member_id, due_on) select 1 + i % 120, 1 + i % 45, current_date + (i % 21)
  from generate_series(1, 300) i;
"""


def _operate(stack_file: str, restore: RestoreStandIn, run_flow: Any, run_failed: type[Exception]) -> list[str]:
    """Day-2 runs on the fresh stack: a backup (snapshot + copy), a restore test and the security
    audit. Their outcome is reported, not fatal: the demo's point is to show them in the UI."""
    from flows.audit import AuditRun, audit_flow
    from flows.backup import BackupRun, backup_flow

    lines = []
    print("ecsflow demo: backing up the database (snapshot, copy to the second region)...", flush=True)
    try:
        report = run_flow(backup_flow, BackupRun(stack_file=stack_file))
        copy = report.get("copy")
        copy = f", copied to {copy['region']}" if isinstance(copy, dict) else ""
        lines.append(f"Backup:           snapshot {report['snapshot']}{copy}")
    except run_failed as exc:
        lines.append(f"Backup:           failed: {exc}")
    print("ecsflow demo: restore test (the newest snapshot to a temporary instance, verify, delete)...", flush=True)
    lines.append(_restore_test(stack_file, restore))
    print("ecsflow demo: auditing the live stack against the security rules...", flush=True)
    try:
        rows = run_flow(audit_flow, AuditRun(stack_file=stack_file))
        lines.append(f"Audit:            {len(rows)} checks, all passed")
    except run_failed as exc:
        lines.append(f"Audit:            {str(exc).splitlines()[0]}")
    return lines


def _restore_test(stack_file: str, restore: RestoreStandIn) -> str:
    from flows.restore_test import RestoreTestRun, restore_test_flow

    state = restore_test_flow(RestoreTestRun(stack_file=stack_file), return_state=True)
    try:
        result = state.result(raise_on_failure=False)
    except Exception:
        result = None
    if not isinstance(result, dict):
        # A failed run raises its own error; the published artifact has the details.
        with contextlib.suppress(Exception):
            state.result()
        return (f"Restore test:     NOT verified ({state.name}: {str(state.message or '').splitlines()[0][:300]}); "
                f"{restore.why_not or 'see the restore-test artifact'}")
    if result.get("ok"):
        return (f"Restore test:     passed: {result['snapshot']} restored to {result['temporary_instance']} "
                f"(deleted); RTO {result['rto_seconds']} s, RPO {result['rpo_seconds']} s;\n"
                f"                  verified against the local PostgreSQL standing in for the restored copy "
                f"({', '.join(f'{t} {n} rows' for t, n in result['verification']['row_counts'].items())})")
    return f"Restore test:     NOT verified: {result.get('error')}; {restore.why_not}"


# ---------------------------------------------------------------- serving the deploy pipeline


class _Runner:
    """`python -m deployments.serve`: runs the deploy runs the webhook starts (and the UI's runs)."""

    def __init__(self, stack_file: Path) -> None:
        self.log_path = STATE_DIR / "deployments.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "deployments.serve", "--stack", str(stack_file)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     # a pushed deploy starts within ~2 s instead of Prefect's default 10
                                     env=dict(os.environ, PREFECT_RUNNER_POLL_FREQUENCY="2"),
                                     start_new_session=True)

    def wait_registered(self, deployment: str, timeout: float = 120) -> None:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while True:
                with contextlib.suppress(Exception):
                    client.read_deployment_by_name(deployment)
                    return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the deployments were not served (see {self.log_path})")
                time.sleep(0.5)

    def stop(self) -> None:
        from ecsflow.serving import _stop

        _stop(self.proc)
        self._log.close()


def _serve(stack_file: Path, spec: Any, site: AppSite | None, ui_url: str, servers: list[Any]) -> str:
    """Serve the deployments and the webhook receiver; the text saying how to send a signed push."""
    from prefect.blocks.system import Secret

    repository = spec.pipeline.github_repository if spec.pipeline else "example-org/library-app"
    secret_file = (STATE_DIR / "webhook-secret").resolve()
    secret_file.touch(mode=0o600)
    secret_file.chmod(0o600)
    value = secrets.token_urlsafe(32)
    secret_file.write_text(value)
    Secret(value=value).save(WEBHOOK_SECRET_BLOCK, overwrite=True)

    print("ecsflow demo: serving the deployments (python -m deployments.serve)...", flush=True)
    runner = _Runner(stack_file)
    servers.append(runner)
    runner.wait_registered(DEPLOY_DEPLOYMENT)
    port = 8787 if port_free(8787) else free_port()
    print("ecsflow demo: starting the GitHub webhook receiver...", flush=True)
    receiver = LocalServer(
        [sys.executable, "-m", "ecsflow.cli", "webhook", "serve", "--stack", str(stack_file), "--port", str(port),
         "--repository", repository, "--secret-block", WEBHOOK_SECRET_BLOCK,
         "--state", str(STATE_DIR / "webhook-deliveries.sqlite")],
        f"http://127.0.0.1:{port}", "/healthz", STATE_DIR / "webhook.log", dict(os.environ), timeout=60)
    servers.append(receiver)
    wait_http(f"{receiver.url}/healthz")
    head = (f"$(git -C {site.repo} rev-parse HEAD)" if site is not None
            else "0123456789abcdef0123456789abcdef01234567")
    change = (f"change the app first for a real rollout, e.g.\n"
              f"  sed -i 's/Library management system/Library (v2)/' {site.repo}/frontend/www/index.html && "
              f"git -C {site.repo} commit -qam v2\n" if site is not None else
              "without the sample app (see above) the run fails at its build step, as it would without a checkout\n")
    return f"""Deployments:      served here (python -m deployments.serve; log {runner.log_path})
Webhook receiver: {receiver.url}/github   (pushes to {repository} refs/heads/main start {DEPLOY_DEPLOYMENT})

Send a signed push, as GitHub would (the HMAC-SHA256 of the exact body with the secret in {secret_file});
{change}then paste:

body='{{"ref":"refs/heads/main","after":"'{head}'","repository":{{"full_name":"{repository}"}},"deleted":false}}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$(cat {secret_file})" -r | cut -d' ' -f1)
curl -sS -w '\\nHTTP %{{http_code}}\\n' -X POST {receiver.url}/github -H 'Content-Type: application/json' \\
  -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \\
  -H "X-Hub-Signature-256: sha256=$sig" --data-binary "$body"

The receiver answers 202 with the flow run id; watch the deploy_app run at {ui_url}/runs
(its artifact: the images, revisions and health), and the app at {site.public_url + "/" if site else "-"}.
"""


def _flush_prefect_logs() -> None:
    """Send the runs' last log lines before the server goes away (else Prefect complains at exit)."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
