"""GitHub push webhook -> a `deploy_app` flow run (the open-source Prefect server has no webhooks).

    ecsflow webhook serve --stack stacks/library.yaml [--host 127.0.0.1] [--port 8787]

`POST /github` takes GitHub's webhook deliveries (content type `application/json`):
- the `X-Hub-Signature-256` HMAC-SHA256 of the raw body is checked against the secret held in a
  Prefect `Secret` block, in constant time, before anything else in the request is trusted;
- unsigned or badly signed -> 401, body over the limit -> 413 (read in chunks, stops early),
  missing event or delivery header / malformed JSON -> 400, another content type -> 415;
- `ping` -> 200; other events, pushes to other branches or repositories, tag pushes and branch
  deletions -> 200 with the reason, no run;
- a push to the configured branch starts the deployment (default `deploy_app/deploy-app`) with
  the commit SHA and answers 202 with the flow run id;
- redeliveries (same `X-GitHub-Delivery`) start nothing: seen ids are kept in a small SQLite
  file (bounded), and the run is created with the delivery as Prefect's idempotency key too.

Logs name the delivery id, event, repository, ref and SHA, never the secret or the payload.
`GET /healthz` answers 200 once the secret is loaded.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, and fastapi is
# imported inside create_app() so that the `ecsflow` CLI does not pay for it on every verb.
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger("ecsflow.webhook")

DEFAULT_SECRET_BLOCK = "ecsflow-webhook-secret"
DEFAULT_DEPLOYMENT = "deploy_app/deploy-app"
DEFAULT_PORT = 8787
# GitHub caps deliveries at 25 MB; a push payload lists at most 20 commits in full, so a few MB
# is generous and still keeps one request from holding much memory.
DEFAULT_MAX_BODY = 5 * 1024 * 1024
DEFAULT_STATE_FILE = Path(".ecsflow") / "webhook-deliveries.sqlite"
DEFAULT_KEEP_DELIVERIES = 10_000
SECRET_TTL_SECONDS = 300.0  # a rotated secret is picked up within this long
ZERO_SHA = "0" * 40

_SHA = re.compile(r"^[0-9a-f]{40}$")
_DELIVERY = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ReceiverConfigError(ValueError):
    """The receiver cannot start as configured; the message says which setting to fix."""


@dataclass(frozen=True)
class ReceiverConfig:
    stack_file: str
    repository: str  # owner/name, as GitHub's `repository.full_name`
    branch: str = "main"
    secret_block: str = DEFAULT_SECRET_BLOCK
    deployment: str = DEFAULT_DEPLOYMENT
    max_body_bytes: int = DEFAULT_MAX_BODY
    state_file: Path = DEFAULT_STATE_FILE
    keep_deliveries: int = DEFAULT_KEEP_DELIVERIES
    run_tags: tuple[str, ...] = field(default=("ecsflow", "webhook"))

    def __post_init__(self) -> None:
        if not _REPOSITORY.match(self.repository):
            raise ReceiverConfigError(f"repository {self.repository!r}: expected owner/name, e.g. acme/library")
        if not self.branch or self.branch.startswith("refs/"):
            raise ReceiverConfigError(f"branch {self.branch!r}: expected a branch name such as main")
        if "/" not in self.deployment:
            raise ReceiverConfigError(f"deployment {self.deployment!r}: expected flow-name/deployment-name")
        if self.max_body_bytes < 1024:
            raise ReceiverConfigError(f"max body {self.max_body_bytes} bytes: use at least 1024")

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"


def config_from_stack(stack_file: str, *, repository: str | None = None, branch: str | None = None,
                      secret_block: str | None = None, **options: Any) -> ReceiverConfig:
    """Repository, branch and secret block from the stack file's `pipeline` section, unless given here."""
    from spec import load_stack  # raises StackFileError naming the field

    stack = load_stack(stack_file)
    pipeline = getattr(stack, "pipeline", None)
    repository = repository or getattr(pipeline, "github_repository", None)
    branch = branch or getattr(pipeline, "branch", None) or "main"
    secret_block = secret_block or getattr(pipeline, "webhook_secret_block", None) or DEFAULT_SECRET_BLOCK
    if not repository:
        raise ReceiverConfigError(f"{stack_file}: no GitHub repository to accept pushes from: set "
                                  f"pipeline.github_repository in the stack file or pass --repository owner/name")
    return ReceiverConfig(stack_file=stack_file, repository=repository, branch=branch, secret_block=secret_block,
                          **options)


def signature_of(secret: str | bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for this body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    # Headers arrive as latin-1 text; compare bytes so odd characters cannot raise.
    return hmac.compare_digest(signature_of(secret, body).encode(), header.encode("latin-1", "replace"))


def _safe(value: object, limit: int = 80) -> str:
    """A value from the request, fit for a log line (no control characters, bounded)."""
    text = str(value)
    return re.sub(r"[^\x21-\x7e]", "?", text)[:limit]


class DeliveryLog:
    """Seen delivery ids in SQLite, so a restarted receiver still recognises a redelivery.
    A claim is an INSERT on the primary key: two receivers sharing the file cannot both win."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "delivery TEXT UNIQUE NOT NULL, flow_run_id TEXT, received REAL NOT NULL)")

    def _db(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(self.path, timeout=10, isolation_level=None))

    def claim(self, delivery: str) -> tuple[bool, str | None]:
        """(True, None) if this delivery is new and now ours; else (False, its flow run id or None)."""
        with self._lock, self._db() as db:
            cur = db.execute("INSERT OR IGNORE INTO deliveries (delivery, received) VALUES (?, ?)",
                             (delivery, time.time()))
            if cur.rowcount == 1:
                db.execute("DELETE FROM deliveries WHERE seq <= (SELECT MAX(seq) FROM deliveries) - ?",
                           (self.keep,))
                return True, None
            row = db.execute("SELECT flow_run_id FROM deliveries WHERE delivery = ?", (delivery,)).fetchone()
            return False, (row[0] if row else None)

    def record(self, delivery: str, flow_run_id: str | None) -> None:
        with self._lock, self._db() as db:
            db.execute("UPDATE deliveries SET flow_run_id = ? WHERE delivery = ?", (flow_run_id, delivery))

    def release(self, delivery: str) -> None:
        """Forget a claim whose run could not be started, so GitHub's redelivery can try again."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM deliveries WHERE delivery = ?", (delivery,))


class SecretSource:
    """The webhook secret from a Prefect Secret block, cached for a few minutes."""

    def __init__(self, block_name: str, ttl: float = SECRET_TTL_SECONDS) -> None:
        self.block_name = block_name
        self.ttl = ttl
        self._value: str | None = None
        self._loaded_at = 0.0

    async def get(self) -> str:
        if self._value is None or time.monotonic() - self._loaded_at > self.ttl:
            try:
                self._value = await load_secret(self.block_name)
            except Exception as exc:
                if self._value is None:
                    raise
                # The Prefect API is briefly away: keep verifying with the secret we have.
                log.warning("webhook secret not refreshed (%s); using the one loaded before", type(exc).__name__)
            self._loaded_at = time.monotonic()
        return self._value

    @property
    def loaded(self) -> bool:
        return self._value is not None


async def load_secret(block_name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        block = cast("Secret[Any]", await Secret.aload(block_name))
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise ReceiverConfigError(
            f"no Prefect Secret block named {block_name!r}: create it in the Prefect UI (Blocks > Secret) or with "
            f"`python -c \"from prefect.blocks.system import Secret; Secret(value='...').save('{block_name}')\"`, "
            f"using the same secret as the GitHub webhook") from exc
    value = block.get()
    if not isinstance(value, str) or len(value) < 16:
        raise ReceiverConfigError(f"Secret block {block_name!r} must hold a string of at least 16 characters")
    return value


class RunNotStarted(Exception):
    pass


async def start_deploy(config: ReceiverConfig, *, delivery: str, commit: str, ref: str) -> str:
    """Create the flow run of the deploy deployment; the worker or `serve` process picks it up."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    parameters = {"params": {"stack_file": config.stack_file, "commit": commit, "ref": ref}}
    try:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(config.deployment)
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters, tags=list(config.run_tags),
                name=f"{config.branch}-{commit[:7]}",
                # A second layer of dedup: the server returns the same run for the same key.
                idempotency_key=f"github-delivery:{delivery}",
            )
    except ObjectNotFound:
        raise RunNotStarted(f"deployment {config.deployment} is not on the Prefect server: deploy it "
                            f"(`prefect deploy --all` or `ecsflow serve`)") from None
    except Exception as exc:  # the Prefect API is unreachable or refused: GitHub may redeliver later
        raise RunNotStarted(f"the Prefect API did not create the run ({type(exc).__name__})") from None
    return str(run.id)


def _answer(code: int, /, **body: Any) -> "JSONResponse":
    from fastapi.responses import JSONResponse

    return JSONResponse(body, status_code=code)


async def _read_limited(request: "Request", limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: ReceiverConfig, *, require_secret: bool = True) -> "FastAPI":
    """The receiver. With require_secret=False it starts without the Secret block and answers 503
    until the block exists (for `ecsflow serve` on a fresh local Prefect server)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    secrets = SecretSource(config.secret_block)
    deliveries = DeliveryLog(config.state_file, config.keep_deliveries)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await secrets.get()  # fail at start, not at the first push, when the block is missing
        except ReceiverConfigError as exc:
            if require_secret:
                raise
            log.warning("webhook receiver: %s; answering 503 until it exists", exc)
        log.info("webhook receiver: pushes to %s %s start %s", config.repository, config.ref, config.deployment)
        yield

    app = FastAPI(title="ecsflow webhook receiver", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.config = config
    app.state.deliveries = deliveries

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not secrets.loaded:
            return _answer(503, status="starting")
        return _answer(200, status="ok", repository=config.repository, branch=config.branch,
                       deployment=config.deployment)

    @app.post("/github")
    async def github(request: Request) -> JSONResponse:
        headers = request.headers
        raw_delivery = headers.get("x-github-delivery", "")
        delivery = raw_delivery if _DELIVERY.match(raw_delivery) else None
        who = f"delivery {delivery or '?'}"

        # Nothing of the request is trusted (or even read) before its signature is checked.
        signature = headers.get("x-hub-signature-256")
        if not signature:
            log.warning("%s: rejected, no X-Hub-Signature-256 header", who)
            return _answer(401, error="missing X-Hub-Signature-256 header")
        body = await _read_limited(request, config.max_body_bytes)
        if body is None:
            log.warning("%s: rejected, body over %d bytes", who, config.max_body_bytes)
            return _answer(413, error=f"body over {config.max_body_bytes} bytes")
        try:
            secret = await secrets.get()
        except Exception as exc:
            log.error("%s: the webhook secret could not be loaded (%s)", who, type(exc).__name__)
            return _answer(503, error="the webhook secret could not be loaded; try again later")
        if not signature_ok(secret, body, signature):
            log.warning("%s: rejected, bad signature", who)
            return _answer(401, error="bad X-Hub-Signature-256")

        event = headers.get("x-github-event")
        if not event:
            return _answer(400, error="missing X-GitHub-Event header")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            log.warning("%s: rejected, content type %s", who, _safe(content_type))
            return _answer(415, error="set the webhook's content type to application/json")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _answer(400, error="the body is not valid JSON")
        if not isinstance(payload, dict):
            return _answer(400, error="the body is not a JSON object")
        if delivery is None:
            return _answer(400, error="missing or malformed X-GitHub-Delivery header")

        if event == "ping":
            log.info("%s: ping", who)
            return _answer(200, status="pong")
        if event != "push":
            log.info("%s: %s event ignored", who, _safe(event, 40))
            return _answer(200, status="ignored", reason=f"{_safe(event, 40)} events do not deploy")
        return await _push(who, delivery, payload)

    async def _push(who: str, delivery: str, payload: dict[str, Any]) -> JSONResponse:
        repo = payload.get("repository")
        full_name = repo.get("full_name") if isinstance(repo, dict) else None
        ref, after = payload.get("ref"), payload.get("after")
        if not isinstance(full_name, str) or not isinstance(ref, str) or not isinstance(after, str):
            return _answer(400, error="a push payload needs repository.full_name, ref and after")
        where = f"{who}: push {_safe(full_name)} {_safe(ref, 120)} {_safe(after, 40)[:12]}"
        if full_name.lower() != config.repository.lower():
            log.info("%s ignored (not %s)", where, config.repository)
            return _answer(200, status="ignored", reason=f"pushes to {_safe(full_name)} do not deploy here")
        if ref != config.ref:
            log.info("%s ignored (not %s)", where, config.ref)
            kind = "tag pushes" if ref.startswith("refs/tags/") else f"pushes to {_safe(ref, 120)}"
            return _answer(200, status="ignored", reason=f"{kind} do not deploy; only {config.ref}")
        if payload.get("deleted") is True or after == ZERO_SHA:
            log.info("%s ignored (branch deleted)", where)
            return _answer(200, status="ignored", reason="the branch was deleted")
        if not _SHA.match(after):
            return _answer(400, error="after is not a commit SHA")

        new, known_run = deliveries.claim(delivery)
        if not new:
            log.info("%s: redelivery, nothing started (flow run %s)", where, known_run or "being started")
            return _answer(200, status="duplicate", flow_run_id=known_run)
        try:
            run_id = await start_deploy(config, delivery=delivery, commit=after, ref=ref)
        except RunNotStarted as exc:
            deliveries.release(delivery)
            log.error("%s: no run started: %s", where, exc)
            return _answer(503, error=str(exc))
        deliveries.record(delivery, run_id)
        log.info("%s: started flow run %s of %s", where, run_id, config.deployment)
        return _answer(202, status="started", flow_run_id=run_id, deployment=config.deployment, commit=after)

    return app


def serve(config: ReceiverConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
          require_secret: bool = True) -> None:
    """Run the receiver in this process until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    # proxy_headers: behind the ALB or another HTTPS proxy the access log shows the client's address.
    uvicorn.run(create_app(config, require_secret=require_secret), host=host, port=port, proxy_headers=True,
                server_header=False, log_level="info")
