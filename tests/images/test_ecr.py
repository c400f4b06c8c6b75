"""The ECR side of the images phase against a real moto server: the login token, the tag
lookup, the scan wait and its verdict, the record. (A push to ECR itself cannot happen
here: moto's registry host is fake. Everything before and after the push can.)

moto's behaviour, checked here so nobody builds on a wrong picture of it: scan on push is
not emulated (DescribeImageScanFindings raises ScanNotFoundException until someone calls
StartImageScan); after that it answers COMPLETE with one static HIGH finding, or what was
configured through /moto-api/static/ecr/scan-finding-results.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from prefect import flow

import spec
from spec import Stack
from tasks import images, registry
from tasks.aws import CALLS, AwsContext
from tests.images.conftest import stack_yaml, write_app
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


def ecr() -> Any:
    return boto3.client("ecr", region_name=REGION)


def manifest(seed: str) -> str:
    layer = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 100,
                   "digest": "sha256:" + hashlib.sha256(b"config" + seed.encode()).hexdigest()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2000, "digest": layer}],
    })


def make_stack(tmp_path: Path, **images_settings: Any) -> Stack:
    data = stack_yaml("scan", {"backend": {"build": {"context": "backend"}}})
    data["images"].update(images_settings)
    return Stack.model_validate(data)


@pytest.fixture
def setup(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, AwsContext, Any]:
    for var in ("ECSFLOW_REGISTRY", "ECSFLOW_REGISTRY_USERNAME", "ECSFLOW_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    stack = make_stack(tmp_path)
    ctx = AwsContext.for_stack(stack)
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    repo = registry.ensure_repository.fn(stack, ctx, "backend", key)
    return stack, ctx, repo


def put(repository: str, tag: str) -> str:
    digest: str = ecr().put_image(repositoryName=repository, imageManifest=manifest(tag),
                                  imageTag=tag)["image"]["imageId"]["imageDigest"]
    return digest


def configure_findings(moto: MotoServer, repository: str, counts: dict[str, int]) -> None:
    body = json.dumps({"region": REGION, "results": [{
        "registryId": "123456789012", "repositoryName": repository, "imageId": {},
        "imageScanStatus": {"status": "COMPLETE", "description": "done"},
        "imageScanFindings": {"findingSeverityCounts": counts, "findings": []},
    }]}).encode()
    request = urllib.request.Request(f"{moto.url}/moto-api/static/ecr/scan-finding-results", data=body,
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@flow
def in_a_flow(stack: Stack, ctx: AwsContext, repo: Any, directory: str) -> images.ImageResult:
    return images.publish_image(stack, ctx, "backend", repo, directory)


def test_the_ecr_target_and_its_login(setup: tuple[Stack, AwsContext, Any]) -> None:
    stack, ctx, repo = setup
    target = images.registry_target(stack, repo)
    assert target.kind == "ecr" and target.has_scanner
    assert target.host == repo.attrs["uri"].split("/")[0]
    assert target.host.endswith(".dkr.ecr.ap-northeast-1.amazonaws.com")
    assert target.repository == "scan-dev-backend"
    creds = images.registry_credentials(stack, ctx, target)
    assert creds is not None and creds["username"] == "AWS" and creds["password"]
    assert creds["serveraddress"].startswith("https://")


def test_an_override_changes_only_the_host(setup: tuple[Stack, AwsContext, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    stack, _, repo = setup
    monkeypatch.setenv("ECSFLOW_REGISTRY", "127.0.0.1:5000")
    target = images.registry_target(stack, repo)
    assert (target.kind, target.image, target.has_scanner) == ("override", "127.0.0.1:5000/scan-dev-backend", False)
    monkeypatch.delenv("ECSFLOW_REGISTRY")
    in_stack = stack.model_copy(update={"images": stack.images.model_copy(update={"registry": "registry.local:443"})})
    assert images.registry_target(in_stack, repo).image == "registry.local:443/scan-dev-backend"
    monkeypatch.setenv("ECSFLOW_REGISTRY", "not a host")
    with pytest.raises(images.ImageError, match="is not a registry host"):
        images.registry_target(stack, repo)


@pytest.mark.prefect
def test_an_image_already_in_ecr_is_present_without_any_docker(setup: tuple[Stack, AwsContext, Any],
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               aws: MotoServer) -> None:
    stack, ctx, repo = setup
    app = write_app(tmp_path / "backend", version="v1")
    sha = images.source_revision(app, "Dockerfile", {}).tag
    digest = put("scan-dev-backend", sha)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")  # no engine needed for a present image

    plan = images.plan_image(stack, ctx, "backend", repo, str(tmp_path))
    assert (plan.action, plan.tag, plan.digest) == ("present", sha, digest)

    # ECR scans on push; moto does not, so start the scan it would have run.
    ecr().start_image_scan(repositoryName="scan-dev-backend", imageId={"imageDigest": digest})
    configure_findings(aws, "scan-dev-backend", {"LOW": 3})
    result = in_a_flow(stack, ctx, repo, str(tmp_path))
    assert (result.status, result.digest, result.scan) == ("present", digest, "LOW 3")
    assert images.find_image(stack, ctx, "backend").attrs["pinned"] == f"{repo.attrs['uri']}:{sha}@{digest}"

    CALLS.reset()
    in_a_flow(stack, ctx, repo, str(tmp_path))
    assert CALLS.mutating() == {}


@pytest.mark.prefect
def test_a_present_image_that_was_never_scanned_gets_scanned(setup: tuple[Stack, AwsContext, Any],
                                                             tmp_path: Path, aws: MotoServer) -> None:
    stack, ctx, repo = setup
    app = write_app(tmp_path / "backend", version="v2")
    digest = put("scan-dev-backend", images.source_revision(app, "Dockerfile", {}).tag)
    configure_findings(aws, "scan-dev-backend", {"MEDIUM": 2})

    CALLS.reset()
    result = in_a_flow(stack, ctx, repo, str(tmp_path))
    assert (result.status, result.digest, result.scan) == ("present", digest, "MEDIUM 2")
    assert CALLS.mutating()["ecr:StartImageScan"] == 1
    CALLS.reset()
    in_a_flow(stack, ctx, repo, str(tmp_path))
    assert CALLS.mutating() == {}


def test_scan_findings_at_the_threshold_fail_or_warn(setup: tuple[Stack, AwsContext, Any]) -> None:
    stack, ctx, repo = setup
    digest = put("scan-dev-backend", "v1")
    target = images.registry_target(stack, repo)
    plan = images.ImagePlan("backend", "present", target, tag="v1", digest=digest)
    ecr().start_image_scan(repositoryName="scan-dev-backend", imageId={"imageDigest": digest})

    # moto's static answer: one HIGH finding.
    with pytest.raises(images.ScanFindings, match=r"1 scan finding\(s\) at or above HIGH \(HIGH 1\)"):
        images.scan_image.fn(stack, ctx, "backend", plan, digest)
    critical = make_stack(Path("."), scan_severity_threshold="CRITICAL")
    assert images.scan_image.fn(critical, ctx, "backend", plan, digest) == "HIGH 1"
    warn = make_stack(Path("."), on_findings="warn")
    assert images.scan_image.fn(warn, ctx, "backend", plan, digest) == "HIGH 1 (warned)"
    off = stack.model_copy(update={"registry": stack.registry.model_copy(update={"scan_on_push": False})})
    assert images.scan_image.fn(off, ctx, "backend", plan, digest) == "scan on push off"


def test_no_scan_yet_reads_as_not_done(setup: tuple[Stack, AwsContext, Any]) -> None:
    stack, ctx, repo = setup
    digest = put("scan-dev-backend", "v2")  # no scan started: moto answers ScanNotFoundException
    target = images.registry_target(stack, repo)
    assert images.read_scan(ctx, target, digest) is None
    ecr().start_image_scan(repositoryName="scan-dev-backend", imageId={"imageDigest": digest})
    found = images.read_scan(ctx, target, digest)
    assert found is not None and found["imageScanStatus"]["status"] == "COMPLETE"


def test_the_record_is_a_tag_on_the_repository(setup: tuple[Stack, AwsContext, Any]) -> None:
    stack, ctx, repo = setup
    assert images.find_image(stack, ctx, "backend") is None
    images.record_image.fn(ctx, "backend", repo, "abc", "sha256:" + "0" * 64)
    found = images.find_image(stack, ctx, "backend")
    assert found is not None and found.attrs["tag"] == "abc" and found.id == "sha256:" + "0" * 64
    # The registry family's own plan ignores the extra tag: no drift, no change.
    key_arn = repo.attrs["encryption"]["kmsKey"]
    again = registry.find_repository(stack, ctx, "backend")
    assert registry.plan_repository(stack, ctx, "backend", again, key_arn).action == "no-op"


def test_library_stack_services_are_skipped_here_with_their_reason(aws: MotoServer) -> None:
    """The production contexts (docker/backend, docker/frontend) lack the app's source here."""
    from tests.conftest import LIBRARY_STACK

    stack = spec.load_stack(LIBRARY_STACK)
    ctx = AwsContext.for_stack(stack)
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    for service in stack.services:
        repo = registry.ensure_repository.fn(stack, ctx, service, key)
        plan = images.plan_image(stack, ctx, service, repo, str(LIBRARY_STACK.parent))
        assert plan.action == "skip", plan
        assert "the app's source is not checked out next to the Dockerfile" in plan.reason, plan.reason
    planned = images.plan_images(stack, ctx, str(LIBRARY_STACK.parent))
    assert [c.action for c in planned] == ["no-op", "no-op"]
    assert all(c.note.startswith("not built on this machine: its Dockerfile copies") for c in planned)
