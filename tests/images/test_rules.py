"""The pure parts of the images phase: reading Dockerfiles, the tag rule, the scan verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks import images
from tests.images.conftest import commit, write_app


def test_from_lines_with_args_stages_and_scratch() -> None:
    text = """\
# escape=\\
ARG PHP_VERSION=8.3
ARG NODE_VERSION
ARG REGISTRY=docker.io/library
FROM ${REGISTRY}/composer:2 AS vendor
COPY composer.json composer.lock ./
FROM node:${NODE_VERSION:-22}-alpine AS assets
COPY package.json \\
     package-lock.json ./
# a comment between instructions
COPY --from=vendor /app/vendor ./vendor
FROM --platform=linux/amd64 php:${PHP_VERSION}-fpm-alpine
COPY --from=vendor /app/vendor /srv/vendor
COPY --from=mlocati/php-extension-installer:2.7 /usr/bin/install-php-extensions /usr/local/bin/
COPY --chown=app:app ["app/", "/srv/app/"]
ADD https://example.com/file.tgz /tmp/
RUN <<EOF
FROM not-an-instruction
EOF
FROM scratch
COPY --from=0 /srv /srv
"""
    facts = images.parse_dockerfile(text, {"PHP_VERSION": "8.4"})
    assert facts.bases == ["docker.io/library/composer:2", "node:22-alpine", "php:8.4-fpm-alpine",
                           "mlocati/php-extension-installer:2.7"]
    assert facts.context_sources == ["composer.json", "composer.lock", "package.json", "package-lock.json", "app/"]
    assert facts.unresolved_bases == []


def test_a_base_without_a_value_is_unresolved() -> None:
    facts = images.parse_dockerfile("ARG BASE\nFROM ${BASE}\n", {})
    assert facts.unresolved_bases == ["${BASE}"] and facts.bases == []
    assert images.parse_dockerfile("ARG BASE\nFROM ${BASE}\n", {"BASE": "alpine:3.20"}).bases == ["alpine:3.20"]


def test_missing_sources_understands_globs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "src").mkdir()
    assert images.missing_sources(tmp_path, ["a.txt", "*.txt", "src/", ".", "/a.txt"]) == []
    assert images.missing_sources(tmp_path, ["b.txt", "*.json", "src/app"]) == ["b.txt", "*.json", "src/app"]


def test_the_tag_is_the_commit_and_a_dirty_context_never_reuses_it(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    sha = subprocess.run(["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    clean = images.source_revision(app, "Dockerfile", {})
    assert (clean.tag, clean.revision) == (sha, sha)
    assert clean.created.startswith("20")

    (app / "www" / "index.html").write_text("changed\n")
    dirty = images.source_revision(app, "Dockerfile", {})
    assert dirty.tag.startswith(f"{sha}-dirty-") and dirty.revision == sha
    (app / "www" / "index.html").write_text("changed again\n")
    assert images.source_revision(app, "Dockerfile", {}).tag != dirty.tag

    new_sha = commit(app, "second")
    assert images.source_revision(app, "Dockerfile", {}).tag == new_sha
    assert images.source_revision(app, "Dockerfile", {}, "v1.2.3").tag == "v1.2.3"


def test_outside_git_the_tag_is_a_digest_of_what_the_build_sees(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", git=False)
    (app / ".dockerignore").write_text("notes/\n")
    first = images.source_revision(app, "Dockerfile", {}).tag
    assert first.startswith("src-") and len(first) == 24
    assert images.source_revision(app, "Dockerfile", {}).tag == first  # stable

    (app / "notes").mkdir()
    (app / "notes" / "todo.md").write_text("ignored by .dockerignore\n")
    assert images.source_revision(app, "Dockerfile", {}).tag == first
    assert images.source_revision(app, "Dockerfile", {"MODE": "debug"}).tag != first
    (app / "www" / "index.html").write_text("changed\n")
    assert images.source_revision(app, "Dockerfile", {}).tag != first


@pytest.mark.parametrize(("counts", "threshold", "over", "summary"), [
    ({}, "HIGH", 0, "no findings"),
    ({"HIGH": 1}, "HIGH", 1, "HIGH 1"),
    ({"MEDIUM": 2, "LOW": 5}, "HIGH", 0, "MEDIUM 2, LOW 5"),
    ({"CRITICAL": 1, "HIGH": 2, "LOW": 1}, "HIGH", 3, "CRITICAL 1, HIGH 2, LOW 1"),
    ({"INFORMATIONAL": 4, "UNDEFINED": 1}, "LOW", 0, "INFORMATIONAL 4, UNDEFINED 1"),
    ({"INFORMATIONAL": 4}, "INFORMATIONAL", 4, "INFORMATIONAL 4"),
])
def test_scan_verdict(counts: dict[str, int], threshold: str, over: int, summary: str) -> None:
    assert images.scan_verdict(counts, threshold) == (over, summary)


def test_credentials_are_stripped_from_the_source_url() -> None:
    assert images._strip_credentials("https://x-access-token:abc@github.com/o/r.git") == "https://github.com/o/r.git"
    assert images._strip_credentials("git@github.com:o/r.git") == "git@github.com:o/r.git"
