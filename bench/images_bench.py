"""A warm rebuild + push after a one-line change: ecsflow's images phase against plain
`docker build` + `docker push` of the same context, in the same run. A benchmark, not a test.

    uv run python -m bench.images_bench [--rounds 7] [--app-mb 40] [--compile-rounds 0] [--json PATH]

Needs a Docker engine (DOCKER_HOST or /var/run/docker.sock), Debian's docker-registry and
htpasswd, /bin/busybox (busybox-static). Starts its own moto server, Prefect server and
registry (basic auth, 127.0.0.1, temporary storage).

The app: FROM scratch, busybox, `--app-mb` of static assets in one layer (unchanged between
rounds, so cached) and the app's code in a small last layer. With `--compile-rounds N` a
RUN step after the code stands in for an asset build (`gzip -9` of the assets N times, CPU
work that reruns on every code change, as `npm run build` does); without it the warm
rebuild is only Docker's own bookkeeping, the worst case for any fixed overhead. Each round changes one line of
the code and commits it (the tag is the commit SHA), then times, one after the other in
alternating order:

- ecsflow: the images flow as `ecsflow up` runs it (Prefect server, check, build, smoke test,
  push, digest read back, record on the ECR repository in moto);
- plain: `docker build` + `docker push` of the same context with the docker CLI (classic
  builder, as ecsflow uses) to another repository of the same registry.

Both start warm: one untimed round of each primes the layer cache and the registry. The
headline is the ratio of medians (goal <= 1.2); the breakdown shows where ecsflow's extra
time goes (the smoke test is work plain docker does not do).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from ecsflow.local import MotoServer, PrefectServer, free_port

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY assets /www/assets
COPY app /www
{compile}ENV PORT=8080
USER 65534:65534
ENTRYPOINT ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p \\"$PORT\\" -h /www"]
"""

STACK = """\
name: {name}
env: bench
region: ap-northeast-1
network:
  availability_zones: [ap-northeast-1a, ap-northeast-1c]
  public_subnets: [10.0.0.0/24, 10.0.1.0/24]
  private_subnets: [10.0.10.0/24, 10.0.11.0/24]
services:
  web:
    port: 8080
    health_check_path: /health
    cpu: 256
    memory: 512
    build:
      context: app
"""


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


class Registry:
    def __init__(self, workdir: Path) -> None:
        self.username, self.password = "bench", secrets.token_urlsafe(12)
        entry = run("htpasswd", "-Bbn", self.username, self.password)
        (workdir / "htpasswd").write_text(entry.strip() + "\n")
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        (workdir / "config.yml").write_text(
            f"version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n"
            f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}}}\n"
            f"http: {{addr: '{self.host}'}}\n"
            f"auth: {{htpasswd: {{realm: bench, path: {workdir / 'htpasswd'}}}}}\n")
        self.log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


COMPILE = ('RUN ["/bin/busybox", "sh", "-c", "for i in $(/bin/busybox seq {rounds}); do for f in /www/assets/*; '
           'do /bin/busybox gzip -9 -c \\"$f\\" > /dev/null; done; done; /bin/busybox date > /www/built.txt"]\n')


def make_app(app: Path, assets_mb: int, compile_rounds: int) -> None:
    app.mkdir(parents=True)
    shutil.copy2("/bin/busybox", app / "busybox")
    assets = app / "assets"
    assets.mkdir()
    for i in range(max(assets_mb, 1)):  # incompressible, like images and fonts
        (assets / f"asset-{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    (app / "app").mkdir()
    (app / "app" / "health").write_text("ok\n")
    for i in range(50):
        (app / "app" / f"page-{i}.html").write_text(f"<h1>page {i}</h1>\n" * 20)
    (app / "app" / "version.txt").write_text("version 0\n")
    compile_step = COMPILE.format(rounds=compile_rounds) if compile_rounds else ""
    (app / "Dockerfile").write_text(DOCKERFILE.format(compile=compile_step))
    (app / ".dockerignore").write_text(".git\n")
    run("git", "init", "-q", "-b", "main", str(app))
    commit(app, "first")


def commit(app: Path, message: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@example.com")
    run("git", "-C", str(app), "add", "-A", env=env)
    run("git", "-C", str(app), "commit", "-q", "-m", message, env=env)
    return run("git", "-C", str(app), "rev-parse", "HEAD").strip()


def one_line_change(app: Path, round_no: int, who: str) -> None:
    (app / "app" / "version.txt").write_text(f"version {round_no} {who} {uuid.uuid4()}\n")


def time_ecsflow(stack_file: Path) -> tuple[float, dict[str, Any]]:
    from flows.phase_images import ImagesRun, images_flow

    started = time.perf_counter()
    state = images_flow(ImagesRun(stack_file=str(stack_file)), return_state=True)
    elapsed = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"images flow failed: {state.message}")
    return elapsed, {"flow_run_id": str(state.state_details.flow_run_id), "image": state.result()["web"]}


def time_plain(app: Path, registry: Registry, tag: str, docker_env: dict[str, str]) -> tuple[float, dict[str, float]]:
    ref = f"{registry.host}/plain-web:{tag}"
    started = time.perf_counter()
    run("docker", "build", "-q", "-t", ref, str(app), env=docker_env)
    built = time.perf_counter()
    run("docker", "push", "-q", ref, env=docker_env)
    done = time.perf_counter()
    return done - started, {"build": built - started, "push": done - built}


def step_times(flow_run_id: str) -> dict[str, float]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))
    out = {}
    for r in runs:
        if r.start_time and r.end_time:
            out[r.name.removesuffix(" web").removesuffix(" image")] = (r.end_time - r.start_time).total_seconds()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app-mb", type=int, default=40, help="static assets in the image (MB, cached layer)")
    parser.add_argument("--compile-rounds", type=int, default=0,
                        help="add an asset-build step (gzip -9 of the assets this many times) after the code")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

    work = Path(tempfile.mkdtemp(prefix="ecsflow-images-bench-"))
    servers: list[Any] = []
    try:
        moto = MotoServer(work / "moto")
        servers.append(moto)
        prefect = PrefectServer(work / "prefect")
        servers.append(prefect)
        (work / "registry").mkdir()
        registry = Registry(work / "registry")
        servers.append(registry)
        os.environ.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_REGION="ap-northeast-1", PREFECT_API_URL=prefect.api_url,
                          ECSFLOW_REGISTRY=registry.host, ECSFLOW_REGISTRY_USERNAME=registry.username,
                          ECSFLOW_REGISTRY_PASSWORD=registry.password, ECSFLOW_POLL_SECONDS="0.2")
        os.environ.pop("AWS_PROFILE", None)
        import prefect.context

        prefect.context.refresh_global_settings_context()

        name = f"b{secrets.token_hex(3)}"
        stack_file = work / "stack.yaml"
        stack_file.write_text(STACK.format(name=name))
        app = work / "app"
        make_app(app, args.app_mb, args.compile_rounds)

        # The repository the registry phase makes (moto), so the images phase finds it.
        from flows.common import StackRun
        from flows.phase_registry import registry_flow

        registry_flow(StackRun(stack_file=str(stack_file)))

        docker_env = dict(os.environ, DOCKER_CONFIG=str(work / "docker-config"), DOCKER_BUILDKIT="0")
        subprocess.run(["docker", "login", "-u", registry.username, "--password-stdin", registry.host],
                       input=registry.password, text=True, env=docker_env, check=True, capture_output=True)

        # Warm-up: both paths build and push once, untimed.
        time_ecsflow(stack_file)
        time_plain(app, registry, "warmup", docker_env)

        ours: list[float] = []
        plain: list[float] = []
        breakdown: list[dict[str, float]] = []
        plain_breakdown: list[dict[str, float]] = []
        for round_no in range(1, args.rounds + 1):
            order = ("ecsflow", "plain") if round_no % 2 else ("plain", "ecsflow")
            for who in order:
                one_line_change(app, round_no, who)
                sha = commit(app, f"round {round_no} {who}")
                if who == "ecsflow":
                    seconds, info = time_ecsflow(stack_file)
                    assert sha in info["image"], info
                    ours.append(seconds)
                    breakdown.append(step_times(info["flow_run_id"]))
                else:
                    seconds, parts = time_plain(app, registry, sha, docker_env)
                    plain.append(seconds)
                    plain_breakdown.append(parts)
                print(f"round {round_no}: {who:<8} {seconds:6.2f} s", flush=True)

        med_ours, med_plain = statistics.median(ours), statistics.median(plain)
        steps = {k: statistics.median(b.get(k, 0.0) for b in breakdown) for k in breakdown[0]}
        result = {
            "rounds": args.rounds, "app_mb": args.app_mb, "compile_rounds": args.compile_rounds,
            "ecsflow_seconds": ours, "plain_seconds": plain,
            "ecsflow_median": round(med_ours, 3), "plain_median": round(med_plain, 3),
            "ratio": round(med_ours / med_plain, 3),
            "ecsflow_steps_median": {k: round(v, 3) for k, v in sorted(steps.items())},
            "plain_steps_median": {k: round(statistics.median(b[k] for b in plain_breakdown), 3)
                                   for k in ("build", "push")},
        }
        # The same figure without Prefect's flow-run bookkeeping (the `image` task alone), and
        # without the smoke test too: what the build-and-push path itself costs against docker's.
        pipeline = steps.get("image", med_ours)
        result["ratio_image_task"] = round(pipeline / med_plain, 3)
        result["ratio_image_task_without_smoke_test"] = round((pipeline - steps.get("smoke test", 0.0)) / med_plain, 3)
        print(json.dumps(result, indent=2))
        print(f"\nwarm rebuild + push after a one-line change: ecsflow {med_ours:.2f} s, plain docker "
              f"{med_plain:.2f} s, ratio {med_ours / med_plain:.2f} (goal <= 1.2); the image task alone "
              f"{result['ratio_image_task']:.2f}, without its smoke test "
              f"{result['ratio_image_task_without_smoke_test']:.2f}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {server}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
