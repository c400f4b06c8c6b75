"""Images: build each service's image, smoke-test it, push it, wait for its scan, record it.

One pipeline per service (the `image {service}` task), each step its own task so the
Prefect UI shows where time goes and where a run failed:

    check image  ->  build image  ->  smoke test image  ->  push image  ->  scan image  ->  record image

- check: work out the tag (the build context's git commit SHA, or one given), look the
  tag up in the target registry (present: nothing to build), else decide whether this
  machine can build it at all (see `BUILDABILITY RULE` below).
- build: the Docker SDK's classic builder, host networking, OCI labels (revision, source,
  created), tagged `{registry}/{repository}:{tag}` directly.
- smoke test: run the image with host networking on a free port (the image must listen
  on $PORT), wait for the service's health path to answer 2xx; on failure raise with the
  container's last log lines. A failed smoke test means no push.
- push: to the stack's ECR repository (login with GetAuthorizationToken) or to the
  override registry (ECSFLOW_REGISTRY / `images.registry`), then read the pushed digest
  back from the registry.
- scan: ECR only (an override registry has no scanner, which the log and the artifact
  say): wait for the scan-on-push findings, fail or warn at the stack's threshold.
- record: the `ecsflow:image` tag on the ECR repository holds `{tag}@{digest}`, the image
  the services should run. AWS tags are the record, whichever registry holds the bytes.

BUILDABILITY RULE. `ecsflow up` must not fail on a machine that cannot build, so a
service is *skipped with a warning* (and its ECS service later starts at desired count
0) when, and only when:
  1. no Docker engine is reachable (DOCKER_HOST, else the default socket);
  2. its build context directory or its Dockerfile is missing;
  3. a file the Dockerfile COPYs/ADDs from the context is missing (the app's source is not
     checked out next to the Dockerfile, as with docker/backend in this repository);
  4. a base image (FROM, COPY --from=image) is neither present in the engine nor pullable.
Everything else that goes wrong (a RUN step fails, a bad instruction, a failed smoke test,
a refused push, scan findings) fails the run with a message naming the service.
`strict=True` (the images flow's parameter) turns the four skips into failures too.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from glob import has_magic
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from spec import Stack
from tasks.aws import (
    TAG_STACK,
    AwsContext,
    EcsflowError,
    PermissionDenied,
    TransientAwsError,
    call,
    call_or_none,
    error_code,
    progress,
    tag_map,
    translate,
    wait_until,
)
from tasks.contract import Change, Observed, aws_task
from tasks.registry import repository_name

if TYPE_CHECKING:
    import docker

IMAGE_RESOURCE = "image"
IMAGE_TAG_KEY = "ecsflow:image"  # on the ECR repository: "{tag}@{digest}" of the image to run
SEVERITY_RANK = {"CRITICAL": 5, "HIGH": 4, "MEDIUM": 3, "LOW": 2, "INFORMATIONAL": 1, "UNDEFINED": 0,
                 "UNTRIAGED": 0}
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])
LOG_TAIL = 40


# ---------------------------------------------------------------- errors


class ImageError(EcsflowError):
    """A service's image could not be built, checked or published."""


class NotBuildable(ImageError):
    """This machine cannot build the service's image (strict mode turns the skip into this)."""


class BuildFailed(ImageError):
    """The Docker build of a buildable context failed."""


class SmokeTestFailed(ImageError):
    """The built image never answered its health check; it was not pushed."""


class PushFailed(ImageError):
    """The registry refused the image."""


class RegistryAuthFailed(PermissionDenied, ImageError):
    """The registry refused the credentials (retrying will not help)."""


class RegistryUnreachable(TransientAwsError, ImageError):
    """The registry did not answer; retried like a transient AWS error."""


class ScanFindings(ImageError):
    """ECR's scan found vulnerabilities at or above the stack's threshold."""


# ---------------------------------------------------------------- where images go


@dataclass(frozen=True)
class Target:
    """Where one service's images live: `{host}/{repository}`."""

    kind: Literal["ecr", "override"]
    host: str
    repository: str
    registry_id: str = ""  # ECR's account id

    @property
    def image(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def has_scanner(self) -> bool:
        return self.kind == "ecr"


def override_registry(spec: Stack) -> str | None:
    """ECSFLOW_REGISTRY (host:port) wins over the stack's `images.registry`."""
    value = (os.environ.get("ECSFLOW_REGISTRY") or spec.images.registry or "").strip()
    if not value:
        return None
    value = value.removeprefix("https://").removeprefix("http://").rstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(:\d{1,5})?", value):
        raise ImageError(f"ECSFLOW_REGISTRY / images.registry {value!r} is not a registry host[:port]")
    return value


def registry_target(spec: Stack, repository: Observed) -> Target:
    """The stack's ECR repository, or the same repository name on the override registry."""
    override = override_registry(spec)
    if override:
        return Target("override", override, repository.name)
    uri = str(repository.attrs.get("uri") or "")
    if "/" not in uri:
        raise ImageError(f"repository {repository.name} has no URI; run `ecsflow up` to create it")
    host, path = uri.split("/", 1)
    return Target("ecr", host, path, str(repository.attrs.get("registry_id") or ""))


def registry_credentials(spec: Stack, ctx: AwsContext, target: Target) -> dict[str, str] | None:
    """Docker auth for the target: an ECR token, or the override's username/password
    (ECSFLOW_REGISTRY_USERNAME/PASSWORD, else a Prefect Secret block), or None (anonymous)."""
    if target.kind == "ecr":
        kwargs: dict[str, Any] = {"registryIds": [target.registry_id]} if target.registry_id else {}
        resp = call(f"get an ECR login for {target.host}", ctx.ecr().get_authorization_token, **kwargs)
        data = resp["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return {"username": user, "password": password, "serveraddress": data.get("proxyEndpoint", target.host)}
    env_user = os.environ.get("ECSFLOW_REGISTRY_USERNAME")
    env_password = os.environ.get("ECSFLOW_REGISTRY_PASSWORD")
    if env_user or env_password:
        return {"username": env_user or "", "password": env_password or "", "serveraddress": target.host}
    block = os.environ.get("ECSFLOW_REGISTRY_CREDENTIALS_BLOCK") or spec.images.registry_credentials_block
    if block:
        from prefect.blocks.system import Secret

        try:
            secret: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
            value = secret.get()
        except ValueError as exc:
            raise RegistryAuthFailed(f"cannot load the registry credentials block {block!r}: {exc}") from exc
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if not isinstance(value, dict) or "username" not in value or "password" not in value:
            raise RegistryAuthFailed(f"Secret block {block!r} must hold {{\"username\": ..., \"password\": ...}}")
        return {"username": str(value["username"]), "password": str(value["password"]),
                "serveraddress": target.host}
    return None


def _credentials_hint(target: Target) -> str:
    if target.kind == "ecr":
        return "check that the runner's AWS credentials may push to this repository (ecr:PutImage etc.)"
    return ("set ECSFLOW_REGISTRY_USERNAME / ECSFLOW_REGISTRY_PASSWORD (or images.registry_credentials_block) "
            f"to an account of {target.host} that may push to {target.repository}")


# ---------------------------------------------------------------- registry lookups


@dataclass(frozen=True)
class RemoteImage:
    digest: str
    size_bytes: int | None


# Requests to this machine never go through an HTTP proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "::1", "[::1]") or name.startswith("127.")


def _registry_get(target: Target, path: str, creds: dict[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    """One request to a Docker registry's v2 API (basic auth, as Docker's registry and most
    self-hosted ones take it). Loopback registries speak plain HTTP, as Docker allows."""
    scheme = "http" if _is_loopback(target.host) else "https"
    request = urllib.request.Request(f"{scheme}://{target.host}/v2/{path}", headers={"Accept": MANIFEST_TYPES})
    if creds:
        token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = _LOCAL if _is_loopback(target.host) else urllib.request.build_opener()
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryUnreachable(f"cannot reach the registry {target.host} ({reason}); is it running, and is "
                                  f"ECSFLOW_REGISTRY right?") from exc


def _manifest_size(body: bytes) -> int | None:
    try:
        manifest = json.loads(body)
    except ValueError:
        return None
    if "layers" not in manifest:
        return None  # an index: per-platform sizes only
    return int(manifest.get("config", {}).get("size", 0)) + sum(int(x.get("size", 0)) for x in manifest["layers"])


def lookup_image(ctx: AwsContext, target: Target, tag: str, creds: dict[str, str] | None) -> RemoteImage | None:
    """The image `tag` in the target repository, or None. ECR: DescribeImages; an override
    registry: its manifest API (a refused login is an error here, before anything is built)."""
    if target.kind == "ecr":
        resp = call_or_none(f"look up {target.image}:{tag}", ctx.ecr().describe_images,
                            repositoryName=target.repository, imageIds=[{"imageTag": tag}])
        details = resp.get("imageDetails", []) if resp else []
        if not details:
            return None
        return RemoteImage(details[0]["imageDigest"], details[0].get("imageSizeInBytes"))
    status, headers, body = _registry_get(target, f"{target.repository}/manifests/{tag}", creds)
    if status == 200:
        digest = {k.lower(): v for k, v in headers.items()}.get("docker-content-digest")
        return RemoteImage(digest or f"sha256:{hashlib.sha256(body).hexdigest()}", _manifest_size(body))
    if status == 404:
        return None
    if status in (401, 403):
        who = f"user {creds['username']!r}" if creds else "anonymous access"
        raise RegistryAuthFailed(f"the registry {target.host} refused {who} (HTTP {status}); "
                                 f"{_credentials_hint(target)}")
    if status >= 500:
        raise RegistryUnreachable(f"the registry {target.host} answered HTTP {status}; retrying")
    raise ImageError(f"the registry {target.host} answered HTTP {status} for {target.repository}:{tag}: "
                     f"{body[:200]!r}")


# ---------------------------------------------------------------- the tag: what source is this?


@dataclass(frozen=True)
class Revision:
    tag: str
    revision: str  # the commit SHA, or the context's content digest outside git
    created: str  # ISO 8601: the commit's time (reproducible labels), else now
    source: str  # the repository URL without credentials, else the context path


def _git(context: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(context), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    return re.sub(r"^(\w+://)[^/@]+@", r"\1", url)


def dockerignore_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def context_digest(context: Path, dockerfile: str, args: dict[str, str]) -> str:
    """A digest of what a build would see: the files the .dockerignore lets through (names,
    executable bits, contents), the Dockerfile and the build args."""
    from docker.utils.build import exclude_paths

    digest = hashlib.sha256()
    for rel in sorted(exclude_paths(str(context), dockerignore_patterns(context), dockerfile=dockerfile)):
        path = context / rel
        if path.is_symlink():
            digest.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(f"F {rel} {os.access(path, os.X_OK)}\n".encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    dockerfile_path = context / dockerfile
    if dockerfile_path.is_file():
        digest.update(b"D " + dockerfile_path.read_bytes())
    digest.update(json.dumps(sorted(args.items())).encode())
    return digest.hexdigest()


def source_revision(context: Path, dockerfile: str, args: dict[str, str], explicit_tag: str | None = None) -> Revision:
    """The tag for a build context: its git commit SHA; `{sha}-dirty-{digest}` when the
    context has uncommitted changes (never reuse a clean commit's tag for other bytes);
    `src-{digest}` outside git. An explicit tag wins (CI passes its commit SHA)."""
    commit = _git(context, "rev-parse", "HEAD")
    if commit and re.fullmatch(r"[0-9a-f]{40,64}", commit):
        created = _git(context, "log", "-1", "--format=%cI", "HEAD") or _now()
        remote = _git(context, "config", "--get", "remote.origin.url")
        source = _strip_credentials(remote) if remote else str(context)
        dirty = _git(context, "status", "--porcelain", "--", ".")
        if explicit_tag:
            return Revision(explicit_tag, commit, created, source)
        if dirty:
            return Revision(f"{commit}-dirty-{context_digest(context, dockerfile, args)[:12]}", commit, _now(),
                            source)
        return Revision(commit, commit, created, source)
    digest = context_digest(context, dockerfile, args)
    return Revision(explicit_tag or f"src-{digest[:20]}", digest, _now(), str(context))


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# ---------------------------------------------------------------- reading a Dockerfile


@dataclass
class DockerfileFacts:
    """What a build needs from outside: base images and files from the context."""

    bases: list[str] = field(default_factory=list)  # external images, ARGs substituted
    unresolved_bases: list[str] = field(default_factory=list)  # e.g. FROM ${BASE} with no value
    context_sources: list[str] = field(default_factory=list)  # COPY/ADD sources from the context


_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?(?P<op>[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def _substitute(text: str, values: dict[str, str | None]) -> str | None:
    """Dockerfile variable substitution ($X, ${X}, ${X:-word}, ${X:+word}); None if a variable
    has no value and no default."""
    unresolved = False

    def one(match: re.Match[str]) -> str:
        nonlocal unresolved
        name = match.group("braced") or match.group("plain")
        value = values.get(name)
        op, word = match.group("op"), match.group("word")
        if op == "-":
            return value if value else (word or "")
        if op == "+":
            return (word or "") if value else ""
        if value is None:
            unresolved = True
            return ""
        return value

    result = _VAR.sub(one, text)
    return None if unresolved else result


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with continuations joined, comments and heredoc bodies dropped."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines[:5]:  # parser directives come first
        directive = re.fullmatch(r"#\s*escape\s*=\s*(\S)\s*", line.strip())
        if directive:
            escape = directive.group(1)
    current = ""
    heredoc: str | None = None
    for raw in lines:
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith(escape):
            current += stripped[:-1] + " "
            continue
        current += stripped
        marker = re.search(r"<<-?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?", current)
        if marker and current.split(None, 1)[0].upper() in ("RUN", "COPY", "ADD"):
            heredoc = marker.group(1)
        yield current
        current = ""
    if current:
        yield current


def _split_args(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(rest)
            if isinstance(parsed, list):
                return [str(p) for p in parsed]
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def parse_dockerfile(text: str, build_args: dict[str, str]) -> DockerfileFacts:
    """Read the base images and context sources of a Dockerfile (ARGs substituted as the
    builder would: build args over ARG defaults)."""
    facts = DockerfileFacts()
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] = {}
    stages: set[str] = set()
    seen_from = False
    for line in _logical_lines(text):
        parts = line.split(None, 1)
        instruction, rest = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
        if instruction == "ARG":
            for item in _split_args(rest):
                name, eq, default = item.partition("=")
                value = build_args.get(name, default if eq else None)
                if seen_from:
                    inherited = global_args.get(name)
                    stage_args[name] = value if value is not None else inherited
                else:
                    global_args[name] = value
        elif instruction == "FROM":
            seen_from = True
            stage_args = {}
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                continue
            image = _substitute(words[0], global_args)
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
            if image is None:
                facts.unresolved_bases.append(words[0])
            elif image.lower() != "scratch" and image.lower() not in stages:
                facts.bases.append(image)
        elif instruction in ("COPY", "ADD"):
            flags = []
            while rest.lstrip().startswith("--"):
                flag, _, rest = rest.lstrip().partition(" ")
                flags.append(flag)
            paths = _split_args(rest)
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage.lower() not in stages and not source_stage.isdigit():
                    image = _substitute(source_stage, {**global_args, **stage_args})
                    if image and image.lower() not in stages:
                        facts.bases.append(image)
                continue
            for source in paths[:-1]:
                if "<<" in source or re.match(r"^(https?|git)://|^git@", source):
                    continue
                resolved = _substitute(source, {**global_args, **stage_args})
                if resolved:
                    facts.context_sources.append(resolved)
    facts.bases = list(dict.fromkeys(facts.bases))
    return facts


def missing_sources(context: Path, sources: list[str]) -> list[str]:
    missing = []
    for source in sources:
        rel = source.lstrip("/") or "."
        found = any(context.glob(rel)) if has_magic(rel) else (context / rel).exists()
        if not found:
            missing.append(source)
    return missing


# ---------------------------------------------------------------- Docker engine


def docker_client(timeout: int = 3600) -> docker.DockerClient:
    """The engine at DOCKER_HOST (else the default socket). Raises NotBuildable if none answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise NotBuildable(f"no Docker engine is reachable at {where} ({_first_line(exc)})") from exc
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def base_available(client: docker.DockerClient, image: str) -> str | None:
    """None if the base image is in the engine or could be pulled, else why not."""
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(image)
        return None
    except ImageNotFound:
        pass
    except DockerException as exc:
        return _first_line(exc)
    progress(f"pulling base image {image}")
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    try:
        client.images.pull(repo, tag=tag or "latest")
        return None
    except DockerException as exc:
        return _first_line(exc)


# ---------------------------------------------------------------- results passed between steps


@dataclass(frozen=True)
class ImagePlan:
    service: str
    action: Literal["build", "present", "skip"]
    target: Target
    tag: str = ""
    revision: str = ""
    created: str = ""
    source: str = ""
    reason: str = ""
    digest: str = ""
    size_bytes: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.target.image}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    image_id: str
    size_bytes: int
    build_seconds: float


@dataclass(frozen=True)
class ImageResult:
    """One row of the images artifact and of `up`'s outputs."""

    service: str
    status: Literal["pushed", "present", "skipped"]
    uri: str = ""  # {registry}/{repository}:{tag}
    digest: str = ""
    size_bytes: int | None = None
    build_seconds: float | None = None
    scan: str = ""
    reason: str = ""

    @property
    def pinned(self) -> str:
        """What a task definition should name: the tag for people, the digest for certainty."""
        return f"{self.uri}@{self.digest}" if self.digest else ""


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger("ecsflow.images")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _paths(spec: Stack, service: str, stack_dir: str) -> tuple[Path, str]:
    build = spec.services[service].build
    return (Path(stack_dir) / build.context).resolve(), build.dockerfile


# ---------------------------------------------------------------- step 1: check


def plan_image(spec: Stack, ctx: AwsContext, service: str, repository: Observed, stack_dir: str, *,
               tag: str | None = None, pull: bool = True) -> ImagePlan:
    """Is the image for this source already in the registry (present), can this machine build
    it (build), or not (skip, with the reason)? Read-only for AWS and the registry; with
    `pull`, a missing base image is pulled into the local engine (as the build would)."""
    target = registry_target(spec, repository)
    context, dockerfile = _paths(spec, service, stack_dir)
    build = spec.services[service].build
    if tag is not None and not TAG_PATTERN.fullmatch(tag):
        raise ImageError(f"{tag!r} is not a valid image tag (letters, digits, _ . -; at most 128)")
    if not context.is_dir():
        revision = Revision(tag, tag, _now(), str(context)) if tag else None
        if revision is None:
            return ImagePlan(service, "skip", target, reason=f"its build context {context} does not exist")
    else:
        revision = source_revision(context, dockerfile, build.args, tag)
    creds = registry_credentials(spec, ctx, target) if target.kind == "override" else None
    found = lookup_image(ctx, target, revision.tag, creds)
    plan = ImagePlan(service, "build", target, revision.tag, revision.revision, revision.created, revision.source)
    if found is not None:
        return replace(plan, action="present", digest=found.digest, size_bytes=found.size_bytes)
    reason = unbuildable_reason(context, dockerfile, build.args, pull=pull)
    return replace(plan, action="skip", reason=reason) if reason else plan


def unbuildable_reason(context: Path, dockerfile: str, args: dict[str, str], *, pull: bool = True) -> str | None:
    """The buildability rule (see the module's docstring), checked in order; None if buildable.
    Without `pull`, base images are not looked at (a plan must not change the engine)."""
    if not context.is_dir():
        return f"its build context {context} does not exist"
    path = context / dockerfile
    if not path.is_file():
        return f"{path} does not exist"
    facts = parse_dockerfile(path.read_text(), args)
    missing = missing_sources(context, facts.context_sources)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        return f"its Dockerfile copies {shown} from {context}, which is not there (the app's source is not " \
               f"checked out next to the Dockerfile)"
    if facts.unresolved_bases:
        return f"its base image {facts.unresolved_bases[0]} names a build arg with no value"
    if not pull:
        facts.bases = []
    try:
        client = docker_client(timeout=600)
    except NotBuildable as exc:
        return str(exc)
    try:
        for base in facts.bases:
            why = base_available(client, base)
            if why:
                return f"its base image {base} is not in the Docker engine and cannot be pulled ({why})"
    finally:
        client.close()
    return None


def plan_images(spec: Stack, ctx: AwsContext, stack_dir: str, *, tag: str | None = None) -> list[Change]:
    """For `ecsflow plan`: per service, build + push (create), already there (no-op), or not
    buildable on this machine (no-op, with the reason). Pulls nothing, pushes nothing."""
    from tasks.registry import find_repository

    changes = []
    for service in spec.services:
        repo = find_repository(spec, ctx, service)
        if repo is None:  # made by the registry phase of the same `up`, before the images phase
            name = repository_name(ctx, service)
            repo = Observed(id="", name=name, attrs={
                "uri": f"{ctx.account_id()}.dkr.ecr.{ctx.region}.amazonaws.com/{name}"})
        plan = plan_image(spec, ctx, service, repo, stack_dir, tag=tag, pull=False)
        name = plan.ref if plan.tag else plan.target.image
        if plan.action == "present":
            changes.append(Change(IMAGE_RESOURCE, name, "no-op", note=f"in the registry as {plan.digest}"))
        elif plan.action == "build":
            steps = "build, smoke test, push" + (", scan" if plan.target.has_scanner else "")
            changes.append(Change(IMAGE_RESOURCE, name, "create", note=steps))
        else:
            changes.append(Change(IMAGE_RESOURCE, name, "no-op", note=f"not built on this machine: {plan.reason}"))
    return changes


@aws_task(task_run_name="check image {service}")
def check_image(spec: Stack, ctx: AwsContext, service: str, repository: Observed, stack_dir: str, *,
                tag: str | None = None, strict: bool = False) -> ImagePlan:
    plan = plan_image(spec, ctx, service, repository, stack_dir, tag=tag)
    log = _logger()
    if plan.action == "present":
        log.info("%s: %s is already in the registry (%s); nothing to build", service, plan.ref, plan.digest)
    elif plan.action == "build":
        log.info("%s: will build %s", service, plan.ref)
    elif strict:
        raise NotBuildable(f"cannot build the image of service {service}: {plan.reason}")
    else:
        log.warning("%s: not building its image: %s. Its ECS service will start at desired count 0 until an "
                    "image is pushed (ecsflow deploy, or `ecsflow up` where it can build).", service, plan.reason)
    return plan


# ---------------------------------------------------------------- step 2: build


def oci_labels(spec: Stack, service: str, plan: ImagePlan) -> dict[str, str]:
    return {
        "org.opencontainers.image.revision": plan.revision,
        "org.opencontainers.image.source": plan.source,
        "org.opencontainers.image.created": plan.created,
        "org.opencontainers.image.version": plan.tag,
        "org.opencontainers.image.title": f"{spec.name}-{service}",
        "io.ecsflow.stack": f"{spec.name}-{spec.env}",
        "io.ecsflow.service": service,
    }


def _stream_error(item: dict[str, Any]) -> str | None:
    if "error" in item or "errorDetail" in item:
        return str(item.get("error") or item.get("errorDetail", {}).get("message", "unknown error")).strip()
    return None


@task(task_run_name="build image {service}", cache_policy=NO_CACHE, persist_result=False)
def build_image(spec: Stack, service: str, plan: ImagePlan, stack_dir: str) -> BuiltImage:
    """`docker build` of the service's context through the Docker SDK (classic builder),
    tagged straight to its registry name. A failure names the service and shows the output."""
    from docker.errors import APIError, DockerException

    log = _logger()
    context, dockerfile = _paths(spec, service, stack_dir)
    client = docker_client()
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    image_id = ""
    error: str | None = None
    try:
        stream = client.api.build(path=str(context), dockerfile=dockerfile, tag=plan.ref,
                                  buildargs=dict(spec.services[service].build.args),
                                  labels=oci_labels(spec, service, plan), network_mode="host", rm=True,
                                  forcerm=True, decode=True)
        for item in stream:
            text = str(item.get("stream", "")).rstrip()
            if text:
                tail.append(text)
                if text.startswith("Step "):
                    log.info("%s: %s", service, text)
            if "aux" in item and "ID" in item["aux"]:
                image_id = item["aux"]["ID"]
            error = _stream_error(item) or error
    except (APIError, DockerException) as exc:
        error = getattr(exc, "explanation", None) or _first_line(exc)
    finally:
        if error or not image_id:
            client.close()
    if error or not image_id:
        shown = "\n".join(tail) or "(no output)"
        raise BuildFailed(f"the image of service {service} failed to build from {context / dockerfile}: "
                          f"{error or 'the builder returned no image'}\n--- last build output ---\n{shown}")
    try:
        size = int(client.images.get(image_id).attrs.get("Size", 0))
    finally:
        client.close()
    seconds = time.monotonic() - started
    log.info("%s: built %s (%s, %.1f MB) in %.1fs", service, plan.ref, image_id[:19], size / 1e6, seconds)
    return BuiltImage(plan.ref, image_id, size, round(seconds, 2))


# ---------------------------------------------------------------- step 3: smoke test


def _probe(url: str) -> tuple[bool, str]:
    try:
        with _LOCAL.open(url, timeout=2) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def _probe_shell(container: Any, command: str) -> tuple[bool, str]:
    from docker.errors import DockerException

    try:
        code, output = container.exec_run(["/bin/sh", "-c", command])
    except DockerException as exc:  # not running (yet, or any more): the caller looks at its status
        return False, _first_line(exc)
    return code == 0, f"exit {code}" + (f": {output.decode(errors='replace').strip()[-200:]}" if output else "")


def _run_container(client: docker.DockerClient, built: BuiltImage, svc: Any, service: str, port: int,
                   mount: Any) -> Any:
    read_only = bool(svc.read_only_root_filesystem)
    return client.containers.run(
        built.image_id, shlex.split(svc.command) if svc.command else None, detach=True, network_mode="host",
        environment={**svc.environment, "PORT": str(port)}, read_only=read_only,
        mounts=[mount(target=path, source=None, type="volume") for path in svc.writable_paths] if read_only else None,
        mem_limit=f"{svc.memory}m", name=f"ecsflow-smoke-{service}-{uuid.uuid4().hex[:8]}",
        labels={"io.ecsflow.smoke": service})


def _remove_container(client: docker.DockerClient, container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except Exception as exc:
        logging.getLogger("ecsflow.images").warning("could not remove smoke-test container %s: %s", container.name, exc)
    finally:
        client.close()


@task(task_run_name="smoke test image {service}", cache_policy=NO_CACHE, persist_result=False)
def smoke_test_image(spec: Stack, service: str, built: BuiltImage) -> float:
    """Run the image as ECS will (the service's plain environment, a read-only root file
    system with anonymous volumes at its writable paths when the stack says so, its memory
    as the limit), with host networking and PORT set to a free port; wait for the health
    path to answer 2xx. Failure: the container's last log lines in the error, and no push."""
    from docker.errors import DockerException
    from docker.types import Mount

    svc = spec.services[service]
    timeout = spec.images.smoke_test_timeout_seconds
    client = docker_client()
    port = _free_port()
    url = f"http://127.0.0.1:{port}{svc.health_check_path}"
    # A worker (load_balanced: false) has no health path: its container health check command
    # runs inside the container, as ECS runs it (CMD-SHELL).
    shell_check = None if svc.load_balanced else svc.container_health_check
    if shell_check:
        url = f"`{shell_check}`"
    started = time.monotonic()
    # Anonymous volumes, like Fargate's task volumes, start with what the image holds there.
    try:
        container = _run_container(client, built, svc, service, port, Mount)
    except DockerException as exc:
        client.close()
        raise SmokeTestFailed(f"the image of service {service} ({built.ref}) could not be started for its smoke "
                              f"test and was not pushed: {_first_line(exc)}") from exc
    failure = ""
    try:
        last = "not started"
        while True:
            healthy, last = _probe_shell(container, shell_check) if shell_check else _probe(url)
            if healthy:
                break
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                failure = f"the container exited with code {code} before {url} answered"
                break
            if time.monotonic() - started > timeout:
                failure = (f"its health check {url} did not exit 0 within {timeout}s (last: {last})" if shell_check
                           else f"GET {url} did not answer 2xx within {timeout}s (last: {last}); the image must "
                           f"listen on $PORT (ecsflow passed PORT={port})")
                break
            time.sleep(0.25 if shell_check else 0.05)
        if failure:
            logs = container.logs(tail=LOG_TAIL).decode(errors="replace").rstrip() or "(no output)"
            raise SmokeTestFailed(f"the image of service {service} ({built.ref}) failed its smoke test and was not "
                                  f"pushed: {failure}\n--- container's last log lines ---\n{logs}")
    except BaseException:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
        client.close()
        raise
    # Healthy: remove the container beside the push instead of before it (~0.2-0.3 s). A
    # non-daemon thread, so the removal finishes even if the process is about to exit.
    threading.Thread(target=_remove_container, args=(client, container), name=f"remove {container.name}").start()
    seconds = time.monotonic() - started
    _logger().info("%s: %s answered %s after %.2fs", service, url, last, seconds)
    return round(seconds, 2)


# ---------------------------------------------------------------- step 4: push


@aws_task(task_run_name="push image {service}")
def push_image(spec: Stack, ctx: AwsContext, service: str, plan: ImagePlan, built: BuiltImage) -> RemoteImage:
    """Push to the target registry and read the digest back from it."""
    from docker.errors import APIError

    target = plan.target
    creds = registry_credentials(spec, ctx, target)
    client = docker_client()
    repository, _, tag = built.ref.rpartition(":")
    digest = ""
    error: str | None = None
    try:
        for item in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=creds):
            error = _stream_error(item) or error
            if "aux" in item and item["aux"].get("Digest"):
                digest = item["aux"]["Digest"]
    except APIError as exc:
        error = str(exc.explanation or exc)
    finally:
        client.close()
    if error:
        lowered = error.lower()
        if any(word in lowered for word in ("unauthorized", "authentication required", "denied", "no basic auth")):
            who = f"user {creds['username']!r}" if creds else "anonymous access"
            raise RegistryAuthFailed(f"push of service {service}'s image to {built.ref} refused for {who}: {error}; "
                                     f"{_credentials_hint(target)}")
        if any(word in lowered for word in ("connection refused", "dial tcp", "i/o timeout", "connection reset",
                                            "503", "502", "500 internal")):
            raise RegistryUnreachable(f"push of service {service}'s image to {built.ref} failed: {error}; retrying")
        raise PushFailed(f"push of service {service}'s image to {built.ref} failed: {error}")
    found = lookup_image(ctx, target, tag, creds if target.kind == "override" else None)
    if found is None:
        raise PushFailed(f"push of {built.ref} reported success but the registry does not list the tag")
    if digest and found.digest != digest:
        raise PushFailed(f"{built.ref}: the registry holds {found.digest}, the push reported {digest}")
    _logger().info("%s: pushed %s@%s", service, built.ref, found.digest)
    return found


# ---------------------------------------------------------------- step 5: scan


def scan_verdict(counts: dict[str, int], threshold: str) -> tuple[int, str]:
    """How many findings are at or above the threshold, and a one-line summary."""
    floor = SEVERITY_RANK[threshold]
    over = sum(n for sev, n in counts.items() if SEVERITY_RANK.get(sev, 0) >= floor)
    shown = ", ".join(f"{sev} {n}" for sev, n in sorted(counts.items(), key=lambda kv: -SEVERITY_RANK.get(kv[0], 0))
                      if n)
    return over, shown or "no findings"


def read_scan(ctx: AwsContext, target: Target, digest: str) -> dict[str, Any] | None:
    """The scan findings once the scan is done (COMPLETE, or ACTIVE for enhanced scanning);
    None while it has not started or is in progress."""
    try:
        resp = ctx.ecr().describe_image_scan_findings(repositoryName=target.repository,
                                                      imageId={"imageDigest": digest})
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) == "ScanNotFoundException":  # scan on push has not started yet
            return None
        raise translate(exc, f"read the scan findings of {target.image}@{digest}") from exc
    status = resp.get("imageScanStatus", {}).get("status")
    if status in ("COMPLETE", "ACTIVE", "FAILED", "UNSUPPORTED_IMAGE", "FINDINGS_UNAVAILABLE"):
        return dict(resp)
    return None


def _never_scanned(ctx: AwsContext, target: Target, digest: str) -> bool:
    try:
        ctx.ecr().describe_image_scan_findings(repositoryName=target.repository, imageId={"imageDigest": digest})
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) == "ScanNotFoundException":
            return True
        raise translate(exc, f"read the scan findings of {target.image}@{digest}") from exc
    return False


@aws_task(task_run_name="scan image {service}")
def scan_image(spec: Stack, ctx: AwsContext, service: str, plan: ImagePlan, digest: str) -> str:
    """Wait for ECR's scan-on-push findings; fail or warn (stack setting) at the threshold."""
    target = plan.target
    log = _logger()
    if not target.has_scanner:
        note = f"no scanner: {target.host} is an override registry (ECSFLOW_REGISTRY); ECR scans on push"
        log.info("%s: %s", service, note)
        return note
    if not spec.registry.scan_on_push:
        log.info("%s: registry.scan_on_push is off for this stack; not waiting for findings", service)
        return "scan on push off"
    if plan.action == "present" and _never_scanned(ctx, target, digest):
        # Pushed before scan on push covered it: scan it now (ECR allows one manual scan a day).
        resp = call_or_none(f"start the ECR scan of {plan.ref}", ctx.ecr().start_image_scan,
                            repositoryName=target.repository, imageId={"imageDigest": digest})
        started = resp["imageScanStatus"].get("status", "?") if resp and "imageScanStatus" in resp else "?"
        log.info("%s: %s had never been scanned; scan started (%s)", service, plan.ref, started)
    found = wait_until(f"the ECR scan of {plan.ref}", lambda: read_scan(ctx, target, digest),
                       timeout=spec.images.scan_timeout_seconds, poll=max(ctx.poll_seconds, 0.05))
    status = found.get("imageScanStatus", {})
    if status.get("status") not in ("COMPLETE", "ACTIVE"):
        note = f"not scanned: {status.get('status')} ({status.get('description', '')})"
        log.warning("%s: %s", service, note)
        return note
    counts = dict(found.get("imageScanFindings", {}).get("findingSeverityCounts", {}))
    threshold = spec.images.scan_severity_threshold
    over, summary = scan_verdict(counts, threshold)
    if over:
        message = (f"the image of service {service} ({plan.ref}) has {over} scan finding(s) at or above {threshold} "
                   f"({summary})")
        if spec.images.on_findings == "fail":
            raise ScanFindings(f"{message}; fix them and rebuild, or set images.on_findings: warn (or raise "
                               f"images.scan_severity_threshold)")
        log.warning("%s: %s; going on (images.on_findings: warn)", service, message)
        return f"{summary} (warned)"
    log.info("%s: scan complete: %s", service, summary)
    return summary


# ---------------------------------------------------------------- step 6: record


def recorded_value(tag: str, digest: str) -> str:
    return f"{tag}@{digest}"


@aws_task(task_run_name="record image {service}")
def record_image(ctx: AwsContext, service: str, repository: Observed, tag: str, digest: str) -> None:
    """Set the repository's `ecsflow:image` tag to `{tag}@{digest}` (only if it differs)."""
    tags = call(f"read the tags of {repository.name}", ctx.ecr().list_tags_for_resource,
                resourceArn=repository.id).get("tags", [])
    value = recorded_value(tag, digest)
    if tag_map(tags).get(IMAGE_TAG_KEY) == value:
        return
    call(f"record the image of {service} on {repository.name}", ctx.ecr().tag_resource,
         resourceArn=repository.id, tags=[{"Key": IMAGE_TAG_KEY, "Value": value}])


def find_image(spec: Stack, ctx: AwsContext, service: str) -> Observed | None:
    """The image recorded for the service (what its ECS service should run), or None if no
    image was ever pushed. Observed.name is `{registry}/{repository}:{tag}`, .id the digest."""
    from tasks.registry import find_repository

    repo = find_repository(spec, ctx, service, fresh_tags=True)  # the recorded image, as it is now
    if repo is None or IMAGE_TAG_KEY not in repo.tags:
        return None
    tag, _, digest = repo.tags[IMAGE_TAG_KEY].partition("@")
    target = registry_target(spec, repo)
    return Observed(id=digest, name=f"{target.image}:{tag}", tags=repo.tags,
                    attrs={"tag": tag, "digest": digest, "uri": f"{target.image}:{tag}",
                           "pinned": f"{target.image}:{tag}@{digest}"})


@aws_task(task_run_name="find repository {service}")
def require_repository(spec: Stack, ctx: AwsContext, service: str) -> Observed:
    """The service's ECR repository, for the images phase run on its own."""
    from tasks.registry import find_repository

    repo = find_repository(spec, ctx, service)
    if repo is None:
        raise ImageError(f"the ECR repository {repository_name(ctx, service)} of service {service} does not "
                         f"exist; run `ecsflow up` first")
    if repo.tags.get(TAG_STACK) != ctx.stack:
        raise ImageError(f"the ECR repository {repo.name} is not ecsflow's (no {TAG_STACK} tag); not pushing to it")
    return repo


# ---------------------------------------------------------------- the pipeline


@task(task_run_name="image {service}", cache_policy=NO_CACHE, persist_result=False)
def publish_image(spec: Stack, ctx: AwsContext, service: str, repository: Observed, stack_dir: str, *,
                  tag: str | None = None, strict: bool = False) -> ImageResult:
    """check -> build -> smoke test -> push -> scan -> record, each a task of its own."""
    plan = check_image(spec, ctx, service, repository, stack_dir, tag=tag, strict=strict)
    if plan.action == "skip":
        return ImageResult(service, "skipped", reason=plan.reason)
    built: BuiltImage | None = None
    if plan.action == "build":
        built = build_image(spec, service, plan, stack_dir)
        smoke_test_image(spec, service, built)
        pushed = push_image(spec, ctx, service, plan, built)
        digest, size = pushed.digest, pushed.size_bytes
    else:
        digest, size = plan.digest, plan.size_bytes
    if plan.target.has_scanner:
        scan = scan_image(spec, ctx, service, plan, digest)
    else:
        scan = f"no scanner ({plan.target.host} is an override registry)"
        _logger().info("%s: not scanned: %s is an override registry with no scanner; ECR scans on push",
                       service, plan.target.host)
    record_image(ctx, service, repository, plan.tag, digest)
    return ImageResult(service, "pushed" if built else "present", uri=plan.ref, digest=digest, size_bytes=size,
                       build_seconds=built.build_seconds if built else None, scan=scan)


def result_row(result: ImageResult) -> dict[str, str]:
    size = f"{result.size_bytes / 1e6:.1f} MB" if result.size_bytes else ""
    build = f"{result.build_seconds:.1f} s" if result.build_seconds is not None else ""
    return {"service": result.service, "status": result.status, "image URI": result.uri, "digest": result.digest,
            "size (compressed)": size, "build time": build, "scan": result.scan, "note": result.reason}

