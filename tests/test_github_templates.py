"""The GitHub Actions templates an app repository copies (templates/github/workflows/).

They are checked where an app keeps them (`.github/workflows/` of a scratch repository): by zizmor
(offline, auditor persona: every finding), by checkov's github_actions checks (in an environment of
its own, as for the Dockerfiles), by the rules below, and the deploy job's script is run for real
against a local HTTPS receiver that checks the signature the way GitHub's is checked.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.github_settings import wanted_variables
from tests.conftest import ROOT
from tests.images.test_dockerfiles import CHECKOV

TEMPLATES = ROOT / "templates" / "github" / "workflows"
WORKFLOWS = ("test.yml", "deploy.yml")
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v?\d+\.\d+\.\d+\s*$")


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("app-repo")
    (repo / ".github" / "workflows").mkdir(parents=True)
    for name in WORKFLOWS:
        shutil.copy(TEMPLATES / name, repo / ".github" / "workflows" / name)
    return repo


def load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((TEMPLATES / name).read_text())
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    data["on"] = data.pop(True)
    return data


def test_zizmor_offline_finds_nothing(app_repo: Path) -> None:
    zizmor = Path(sys.executable).with_name("zizmor")
    done = subprocess.run([str(zizmor), "--offline", "--persona", "auditor", "--no-progress",
                           str(app_repo / ".github" / "workflows")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout, done.stdout


def test_checkov_github_actions_checks_pass(app_repo: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to run checkov in its own environment"
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    done = subprocess.run([uv, "tool", "run", "--from", CHECKOV, "checkov", "--framework", "github_actions",
                           "--skip-download", "-o", "json", "-d", str(app_repo)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] > 50, report["summary"]
    # The only skips: the pull request's throwaway scan build has nothing to sign; deploy.yml signs for real.
    skipped = sorted((c["check_id"], Path(c["file_path"]).name) for c in report["results"]["skipped_checks"])
    assert skipped == [("CKV_GHA_5", "test.yml"), ("CKV_GHA_6", "test.yml")]
    assert all(c["check_result"].get("suppress_comment") for c in report["results"]["skipped_checks"])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_action_is_pinned_by_commit_sha_with_its_version(name: str) -> None:
    lines = [line for line in (TEMPLATES / name).read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines
    for line in lines:
        if "./.github/workflows/" in line:
            continue  # the app's own reusable workflow, at the same commit
        assert PINNED.match(line), f"not pinned by full SHA with a version comment: {line.strip()}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_least_privilege_and_no_untrusted_code_with_secrets(name: str) -> None:
    text = (TEMPLATES / name).read_text()
    workflow = load(name)
    assert not {"pull_request_target", "workflow_run"} & set(workflow["on"])
    assert workflow["permissions"] == {}, "top-level permissions: {} (each job asks for what it needs)"
    for job_name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{job_name} must state its permissions"
        allowed = {"contents": "read", "id-token": "write"} if (name, job_name) == ("deploy.yml", "image") else \
            {"contents": "read"}
        assert set(job["permissions"].items()) <= set(allowed.items()), (job_name, job["permissions"])
        for step in job.get("steps", []):
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False, f"{job_name}: checkout keeps no token"
            assert "${{" not in step.get("run", ""), f"{job_name}: pass values through env, not into the script"
    if name == "test.yml":
        assert "secrets." not in text, "pull requests run untrusted code: no secrets in test.yml"


def test_deploy_runs_on_main_only_after_the_tests_and_the_image() -> None:
    deploy, tests = load("deploy.yml"), load("test.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    assert set(tests["on"]) == {"pull_request", "workflow_call"}
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/test.yml"
    assert jobs["image"]["needs"] == "test" and jobs["deploy"]["needs"] == "image"
    assert "environment" not in jobs["image"], "an environment changes the OIDC subject the CI role trusts"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    steps = "\n".join(s.get("run", "") for s in jobs["image"]["steps"])
    assert "cosign sign --yes" in steps and "cosign attest --yes --type spdxjson" in steps
    assert '"$REGISTRY/$REPOSITORY:$TAG"' in steps, "the image is tagged with the commit SHA"


def test_deploy_reads_what_ecsflow_writes() -> None:
    """The variables and secret deploy.yml uses are those the settings writer puts in the repository."""
    import spec
    from tasks.aws import AwsContext
    from tasks.contract import Observed

    stack = spec.load_stack(ROOT / "stacks" / "library.yaml")
    assert stack.pipeline is not None
    stack = stack.model_copy(update={"pipeline": stack.pipeline.model_copy(
        update={"webhook_url": "https://deploy.example.com/github"})})
    ctx = AwsContext(stack="library", env="prod", region="ap-northeast-1")
    repos = {s: Observed(id="", name=f"library-prod-{s}",
                         attrs={"uri": f"123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/library-prod-{s}"})
             for s in stack.services}
    written = wanted_variables(stack, ctx, "arn:aws:iam::123456789012:role/x", repos)
    text = (TEMPLATES / "deploy.yml").read_text()
    used = set(re.findall(r"vars\.([A-Z_]+)", text + (TEMPLATES / "test.yml").read_text()))
    assert used == set(written)
    assert set(re.findall(r"secrets\.([A-Z_]+)", text)) == {"ECSFLOW_WEBHOOK_SECRET"}
    # The image matrix both templates read: one per service, from the directory of its name by default.
    assert json.loads(written["ECSFLOW_IMAGES"]) == [{"service": s, "context": s} for s in stack.services]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_templates_assume_no_framework_or_app_layout(name: str) -> None:
    """What an app runs and where it lives comes from the stack file (ECSFLOW_CHECKS, ECSFLOW_IMAGES)."""
    text = (TEMPLATES / name).read_text().lower()
    for word in ("laravel", "nuxt", "artisan", "composer install", "phpunit", "npm ", "backend", "frontend"):
        assert word not in text, f"{name} assumes {word!r}: move it to the stack file's pipeline section"


def test_a_check_runs_the_stack_files_commands_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    """The check job's step, run by bash the way Actions runs `shell: bash`, with the library's checks as
    ecsflow writes them (ECSFLOW_CHECKS)."""
    import spec

    library = spec.load_stack(ROOT / "stacks" / "library.yaml")
    assert library.pipeline is not None
    assert [c.name for c in library.pipeline.checks] == ["backend", "frontend"]
    assert "php artisan key:generate" in library.pipeline.checks[0].run
    job = load("test.yml")["jobs"]["check"]
    assert job["defaults"]["run"]["shell"] == "bash"
    [step] = [s for s in job["steps"] if "run" in s]
    assert step["env"] == {"CHECK_COMMANDS": "${{ matrix.check.run }}"}

    def run(commands: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path,
                              env={"PATH": os.environ["PATH"], "CHECK_COMMANDS": commands}, capture_output=True,
                              text=True, timeout=30)

    ok = run("echo first > out\n# a comment\nif [ -f missing ]; then exit 9; fi\necho second >> out\n")
    assert ok.returncode == 0 and (tmp_path / "out").read_text() == "first\nsecond\n"
    failed = run("echo one\nfalse\necho never\n")
    assert failed.returncode != 0 and failed.stdout == "one\n"


# ---------------------------------------------------------------- the deploy job's request, for real


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_the_deploy_job_posts_a_push_the_receiver_accepts(tmp_path: Path) -> None:
    """Run the deploy step's script as Actions would, against a local HTTPS endpoint that checks the
    X-Hub-Signature-256 HMAC in constant time, as the webhook receiver does."""
    secret = "s3cret-webhook-key-for-tests"
    seen: list[tuple[Any, bytes, bool]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(expected, self.headers.get("X-Hub-Signature-256", ""))
            seen.append((self.headers, body, ok))  # case-insensitive, as HTTP headers are
            self.send_response(202 if ok else 401)
            self.end_headers()
            self.wfile.write(b'{"flow_run_id": "run-1"}' if ok else b"bad signature")

        def log_message(self, *args: Any) -> None:
            pass

    cert, key = _self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        step = load("deploy.yml")["jobs"]["deploy"]["steps"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
        env.update({
            "WEBHOOK_URL": f"https://localhost:{server.server_address[1]}/github", "WEBHOOK_KEY": secret,
            "REPOSITORY": "example-org/library-app", "REF": "refs/heads/main", "SHA": "a" * 40,
            "DELIVERY": "actions-123-1", "SSL_CERT_FILE": str(cert),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        done = subprocess.run(["bash", "-e", "-c", step["run"]], capture_output=True, text=True, env=env,
                              timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "202" in done.stdout and "run-1" in done.stdout
    headers, body, ok = seen[0]
    assert ok
    assert headers["X-GitHub-Event"] == "push" and headers["X-GitHub-Delivery"] == "actions-123-1"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ref": "refs/heads/main", "after": "a" * 40, "deleted": False,
                                "repository": {"full_name": "example-org/library-app"}}
    assert secret not in done.stdout + done.stderr and secret.encode() not in body
