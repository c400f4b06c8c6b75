"""Shared fixtures: real local servers, started once per session.

- `moto_server` (session): moto in server mode; AWS_ENDPOINT_URL points at it.
- `aws`: a freshly reset moto account for one test.
- `fault_proxy`: a FaultProxy in front of moto for one test (rules and counts reset);
  AWS_ENDPOINT_URL points at the proxy for the test's duration.
- `prefect_server` (session): a real `prefect server start`; PREFECT_API_URL points at it,
  in this process (settings refreshed) and in subprocesses. Use the fixture, or mark a
  test or module with `@pytest.mark.prefect` / `pytestmark = pytest.mark.prefect`.
  Its boot (12-20 s) starts right after collection when any selected test needs it, so
  it overlaps the tests that run before.

Prefect is isolated from the developer's machine: a temporary PREFECT_HOME, no profile,
no inherited PREFECT_API_URL. In this process Prefect may not start an ephemeral server,
so a flow run by a test that did not ask for `prefect_server` fails at once (with a hint)
instead of booting a private server for ~15 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.faultproxy import FaultProxy
from tests.support.servers import MotoServer, PrefectServer

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_STACK = ROOT / "stacks" / "library.yaml"


def library_stack_data() -> dict[str, Any]:
    """The library stack file as data, for a test to change and `write_stack_file`."""
    data: dict[str, Any] = yaml.safe_load(LIBRARY_STACK.read_text())
    return data


def write_stack_file(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "library.yaml"
    path.write_text(yaml.safe_dump(data))
    return path

# Fake credentials: no test may ever reach a real AWS account.
for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "ap-northeast-1",
                   "AWS_DEFAULT_REGION": "ap-northeast-1", "ECSFLOW_POLL_SECONDS": "0.05",
                   "ECSFLOW_RETRY_BASE_SECONDS": "0.05"}.items():
    os.environ[key] = value
os.environ.pop("AWS_PROFILE", None)

# Prefect: never the developer's ~/.prefect, profile or server.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ecsflow-test-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
    os.environ.pop(key, None)

_NO_API_URL = "No Prefect API URL provided"


def _refresh_prefect_settings(forbid_ephemeral: bool = False) -> None:
    """Prefect 3 snapshots the environment into its global settings context when `prefect`
    is first imported; later os.environ changes are invisible to get_current_settings()
    until that context is rebuilt. Only needed once prefect has been imported."""
    if "prefect.context" not in sys.modules:
        return
    import prefect.context

    if not forbid_ephemeral:
        prefect.context.refresh_global_settings_context()
        return
    # The variable is set only while the context is rebuilt: subprocesses (the ecsflow CLI,
    # the demo) keep Prefect's own default.
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    try:
        prefect.context.refresh_global_settings_context()
    finally:
        del os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"]


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still holds before its server goes away (otherwise
    they are printed as '--- Error logging to API ---' at exit)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # best effort at teardown
            worker.drain_all(timeout=10)


# ------------------------------------------------------------------ hooks

_early_prefect: list[PrefectServer] = []
_server_timings: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "prefect: the test needs the session's Prefect server (PREFECT_API_URL)")


def _needs_prefect(item: pytest.Item) -> bool:
    return item.get_closest_marker("prefect") is not None or "prefect_server" in getattr(item, "fixturenames", ())


# The modules that take longest, longest first (measured on two cores: from ~4 minutes down to ~15 s).
# With `--dist loadfile --no-loadscope-reorder` (scripts/test) xdist hands modules out in this order,
# so the two workers end together instead of one starting the longest module last. The first two
# do not wait for the Prefect server, which boots meanwhile. Other modules follow in file order.
SLOWEST_MODULES_FIRST = (
    "tests/test_demo.py",
    "tests/test_github_templates.py",
    "tests/images/test_pipeline.py",
    "tests/test_deploy_app.py",
    "tests/test_provision.py",
    "tests/test_ecs_alb.py",
    "tests/test_second_stack.py",
    "tests/test_webhook.py",
    "tests/tasks/test_monitoring.py",
    "tests/tasks/test_database.py",
    "tests/test_audit.py",
    "tests/test_backup.py",
    "tests/images/test_up.py",
    "tests/test_ui.py",
    "tests/images/test_dockerfiles.py",
    "tests/tasks/test_edge.py",
    "tests/test_faultproxy.py",
    "tests/images/test_worker_smoke.py",
    "tests/test_moto_smoke.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {module: i for i, module in enumerate(SLOWEST_MODULES_FIRST)}
    # A stable sort: each module's tests keep their order (several share one stack in file order).
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_collection_finish(session: pytest.Session) -> None:
    if "PREFECT_API_URL" not in os.environ:
        _refresh_prefect_settings(forbid_ephemeral=True)
    if not session.config.option.collectonly and any(_needs_prefect(i) for i in session.items):
        workdir = Path(tempfile.mkdtemp(prefix="ecsflow-test-prefect-server-"))
        _early_prefect.append(PrefectServer(workdir).start())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _early_prefect:  # booted for a test that never ran (e.g. -x stopped first)
        server = _early_prefect.pop()
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _server_timings:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed and _NO_API_URL in report.longreprtext and not _needs_prefect(item):
        report.sections.append((
            "ecsflow test hint",
            "This test talks to Prefect but did not ask for the session's Prefect server: "
            "use the `prefect_server` fixture or mark it `@pytest.mark.prefect`.",
        ))
    return report


# ------------------------------------------------------------------ AWS


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    os.environ["AWS_ENDPOINT_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> MotoServer:
    """A clean emulated AWS account for one test."""
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def _fault_proxy_session(moto_server: MotoServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def fault_proxy(aws: MotoServer, _fault_proxy_session: FaultProxy,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of a clean moto account; AWS_ENDPOINT_URL points at it
    for this test. `fault_proxy.target_url` is moto itself, for checks that must not be faulted."""
    proxy = _fault_proxy_session
    proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.reset()


# ------------------------------------------------------------------ Prefect


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """The session's Prefect server; PREFECT_API_URL points at it from here on."""
    if _early_prefect:
        server = _early_prefect.pop()
    else:
        server = PrefectServer(Path(tempfile.mkdtemp(prefix="ecsflow-test-prefect-server-"))).start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    _server_timings.append(f"prefect server: ready {server.startup_seconds:.1f} s after its boot began "
                           f"({server.api_url}, log {server.log_path})")
    os.environ["PREFECT_API_URL"] = server.api_url
    _refresh_prefect_settings()
    yield server
    _drain_prefect_workers()
    os.environ.pop("PREFECT_API_URL", None)
    _refresh_prefect_settings(forbid_ephemeral=True)
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _prefect_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("prefect") is not None:
        request.getfixturevalue("prefect_server")
