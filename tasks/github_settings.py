"""Write the app repository's GitHub Actions variables and secret through GitHub's REST API
(optional: `pipeline.write_github_settings`).

deploy.yml reads:
    variables  AWS_REGION, ECSFLOW_CI_ROLE_ARN, ECSFLOW_ECR_REGISTRY, ECSFLOW_REPOSITORY_PREFIX
               (`{stack}-{env}-`: a service's repository is the prefix + its name), ECSFLOW_WEBHOOK_URL
               (when pipeline.webhook_url is set), ECSFLOW_IMAGES (pipeline.images, as JSON)
    secret     ECSFLOW_WEBHOOK_SECRET (the receiver's HMAC secret, from pipeline.webhook_secret_block;
               written only with a webhook_url, which is what it signs for)
test.yml reads ECSFLOW_CHECKS (pipeline.checks, as JSON) and ECSFLOW_IMAGES.

A secret is sealed for the repository (libsodium sealed box with the repository's public key,
GET .../actions/secrets/public-key) before it leaves this process; GitHub never returns it, so it
is written on every run. A variable is read first and written only when it differs. The token
comes from a Prefect Secret block; neither it nor the secret value reach logs or results.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from nacl.public import PublicKey, SealedBox
from prefect import task
from prefect.cache_policies import NO_CACHE

from spec import Stack
from tasks.aws import AwsContext, EcsflowError, progress, retry_delays
from tasks.contract import Observed

API_VERSION = "2022-11-28"
TIMEOUT = httpx.Timeout(20.0)


class GitHubTransient(EcsflowError):
    """GitHub answered 5xx or rate-limited us: worth another try."""


def _retry_github(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except GitHubTransient:
        return True
    except Exception:
        return False
    return False


def seal(public_key_b64: str, value: str) -> str:
    """What GitHub's API takes as `encrypted_value`: a sealed box for the repository's key, base64."""
    box = SealedBox(PublicKey(base64.b64decode(public_key_b64)))
    return base64.b64encode(box.encrypt(value.encode())).decode()


def load_secret_block(name: str, what: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg, union-attr]
    except ValueError as exc:
        raise EcsflowError(f"no Prefect Secret block named {name!r} ({what}): create it in the Prefect UI "
                           f"(Blocks > Secret) or change the stack file's pipeline section") from exc
    if not isinstance(value, str) or not value:
        raise EcsflowError(f"Prefect Secret block {name!r} ({what}) must hold a non-empty string")
    return value


def wanted_variables(spec: Stack, ctx: AwsContext, role_arn: str, repositories: dict[str, Observed]) -> dict[str, str]:
    assert spec.pipeline is not None
    uris = {service: str(repo.attrs.get("uri") or "") for service, repo in sorted(repositories.items())}
    registry = next((uri.split("/", 1)[0] for uri in uris.values() if "/" in uri), "")
    prefix = f"{ctx.prefix}-"
    odd = sorted(repo.name for service, repo in repositories.items() if repo.name != prefix + service)
    if odd:  # names are only cut beyond 256 characters, which stack, env and service names cannot reach
        raise EcsflowError(f"repositories {', '.join(odd)} are not named {prefix}SERVICE; deploy.yml cannot find them")
    variables = {
        "AWS_REGION": ctx.region,
        "ECSFLOW_CI_ROLE_ARN": role_arn,
        "ECSFLOW_ECR_REGISTRY": registry,
        "ECSFLOW_REPOSITORY_PREFIX": prefix,
    }
    if spec.pipeline.webhook_url:
        variables["ECSFLOW_WEBHOOK_URL"] = spec.pipeline.webhook_url
    # test.yml's jobs and both templates' image matrix come from the stack file, not from the templates.
    variables["ECSFLOW_CHECKS"] = json.dumps([c.model_dump(exclude_none=True) for c in spec.pipeline.checks],
                                             separators=(",", ":"))
    variables["ECSFLOW_IMAGES"] = json.dumps([i.model_dump(exclude_none=True)
                                              for i in spec.pipeline.images_for(list(spec.services))],
                                             separators=(",", ":"))
    return variables


class GitHubRepo:
    """The few Actions endpoints of one repository."""

    def __init__(self, api_url: str, repository: str, token: str) -> None:
        self.repository = repository
        self.base = f"{api_url.rstrip('/')}/repos/{repository}/actions"
        self.client = httpx.Client(timeout=TIMEOUT, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION, "User-Agent": "ecsflow"})

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, doing: str, body: dict[str, Any] | None = None,
              ok: tuple[int, ...] = (200, 201, 204)) -> httpx.Response:
        try:
            resp = self.client.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise GitHubTransient(f"{doing}: cannot reach GitHub ({type(exc).__name__}); retrying") from None
        if resp.status_code in ok:
            return resp
        if resp.status_code >= 500 or resp.status_code == 429 or (
                resp.status_code == 403 and resp.headers.get("x-ratelimit-remaining") == "0"):
            raise GitHubTransient(f"{doing}: GitHub answered HTTP {resp.status_code}; retrying")
        if resp.status_code in (401, 403, 404):
            raise EcsflowError(
                f"{doing}: GitHub answered HTTP {resp.status_code}. The token in pipeline.github_token_block "
                f"must be valid and allowed to write {self.repository}'s Actions secrets and variables "
                f"(fine-grained token: Secrets and Variables read/write; classic: repo scope)")
        raise EcsflowError(f"{doing}: GitHub answered HTTP {resp.status_code}: {resp.text[:200]}")

    def ensure_variable(self, name: str, value: str) -> bool:
        """True when written (created or changed), False when it already held the value."""
        doing = f"write the Actions variable {name} of {self.repository}"
        got = self._call("GET", f"/variables/{name}", doing, ok=(200, 404))
        if got.status_code == 404:
            self._call("POST", "/variables", doing, {"name": name, "value": value})
            return True
        if got.json().get("value") == value:
            return False
        self._call("PATCH", f"/variables/{name}", doing, {"name": name, "value": value})
        return True

    def put_secret(self, name: str, value: str) -> None:
        doing = f"write the Actions secret {name} of {self.repository}"
        key = self._call("GET", "/secrets/public-key", doing).json()
        self._call("PUT", f"/secrets/{name}", doing,
                   {"encrypted_value": seal(key["key"], value), "key_id": key["key_id"]})


@task(task_run_name="write github settings {spec.pipeline.github_repository}", cache_policy=NO_CACHE,
      persist_result=False, retries=3, retry_delay_seconds=retry_delays()[:3], retry_condition_fn=_retry_github)
def write_github_settings(spec: Stack, ctx: AwsContext, role: Observed,
                          repositories: dict[str, Observed]) -> dict[str, list[str]]:
    """Write the variables deploy.yml reads and the webhook secret. Returns the names written
    and unchanged (never a secret's value)."""
    pipeline = spec.pipeline
    assert pipeline is not None and pipeline.github_token_block
    token = load_secret_block(pipeline.github_token_block, "the GitHub token")
    gh = GitHubRepo(pipeline.github_api_url, pipeline.github_repository, token)
    written: list[str] = []
    unchanged: list[str] = []
    try:
        for name, value in wanted_variables(spec, ctx, role.id, repositories).items():
            (written if gh.ensure_variable(name, value) else unchanged).append(name)
        if pipeline.webhook_url:
            secret = load_secret_block(pipeline.webhook_secret_block, "the webhook secret")
            gh.put_secret("ECSFLOW_WEBHOOK_SECRET", secret)
            written.append("ECSFLOW_WEBHOOK_SECRET")
        else:
            progress("pipeline.webhook_url is not set: ECSFLOW_WEBHOOK_SECRET and ECSFLOW_WEBHOOK_URL not written "
                     "(deploy.yml's deploy job needs both)")
    finally:
        gh.close()
    progress(f"GitHub Actions settings of {pipeline.github_repository}: wrote {', '.join(written) or 'nothing'}; "
             f"unchanged {', '.join(unchanged) or 'nothing'}")
    return {"written": written, "unchanged": unchanged}
