"""The notifier block and the `notify` task, on the session's Prefect server, sending to a real
local HTTP receiver: a Slack-compatible webhook URL and an apprise json:// URL both arrive; no
block configured sends nothing; a target that refuses, or a block that does not exist, is a
warning in the run's log and the run still completes; the URL never reaches the log."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from prefect import flow

from blocks.notifier import EcsflowNotifier, NotificationFailed
from spec import Stack
from tasks.notify import notify
from tests.images.conftest import stack_yaml
from tests.support.receiver import Receiver

pytestmark = pytest.mark.prefect


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


def make_stack(block: str | None) -> Stack:
    return Stack.model_validate(stack_yaml("shop", {"web": {}}, notifications={"block": block}))


def save_block(url: str) -> str:
    name = f"notifier-{secrets.token_hex(4)}"
    EcsflowNotifier(url=url).save(name, overwrite=True, _sync=True)  # type: ignore[arg-type, call-arg]
    return name


@flow(name="notify-check")
def notify_flow(spec: Stack, event: str, subject: str, body: str) -> bool:
    return notify(spec, None, event, subject, body)


def run_logs(state: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    flow_run = LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=flow_run))
    return "\n".join(log.message for log in logs)


def test_a_slack_compatible_webhook_gets_the_subject_and_body(receiver: Receiver) -> None:
    secret_path = f"/services/T000/B000/{secrets.token_hex(8)}"
    spec = make_stack(save_block(receiver.url("http", secret_path)))
    state = notify_flow(spec, "deploy.succeeded", "deploy of abc123 succeeded", "https://shop.example.com",
                        return_state=True)
    assert state.is_completed() and state.result() is True
    [got] = receiver.wait_for(1)
    assert got.path == secret_path and got.content_type == "application/json"
    assert got.json() == {"text": "*[shop-dev] deploy of abc123 succeeded*\nhttps://shop.example.com"}
    logs = run_logs(state)
    assert "sent the deploy.succeeded notification" in logs
    assert secret_path not in logs


def test_an_apprise_json_url_gets_title_and_message(receiver: Receiver) -> None:
    spec = make_stack(save_block(receiver.url("json", "/apprise")))
    assert notify_flow(spec, "backup.failed", "backup failed", "snapshot refused") is True
    [got] = receiver.wait_for(1)
    assert got.path == "/apprise"
    payload = got.json()
    assert payload["title"] == "[shop-dev] backup failed" and payload["message"] == "snapshot refused"


def test_no_block_configured_sends_nothing_and_says_so(receiver: Receiver) -> None:
    state = notify_flow(make_stack(None), "deploy.started", "deploy started", "", return_state=True)
    assert state.is_completed() and state.result() is False
    assert "notifications are off for shop-dev" in run_logs(state)
    assert receiver.wait_for(1, timeout=0.3) == []


def test_a_refusing_target_or_a_missing_block_is_a_warning_not_a_failure() -> None:
    with Receiver(status=500) as refusing:
        secret_path = f"/services/{secrets.token_hex(8)}"
        spec = make_stack(save_block(refusing.url("http", secret_path)))
        state = notify_flow(spec, "deploy.failed", "deploy failed", "rolled back", return_state=True)
        assert state.is_completed() and state.result() is False
        assert len(refusing.wait_for(1)) == 1
    logs = run_logs(state)
    assert "the deploy.failed notification through block" in logs and "answered HTTP 500" in logs
    assert secret_path not in logs

    missing = notify_flow(make_stack("no-such-notifier"), "deploy.failed", "x", "y", return_state=True)
    assert missing.is_completed() and missing.result() is False
    assert "could not load the notifier block 'no-such-notifier'" in run_logs(missing)


def test_the_block_refuses_an_unknown_scheme_without_showing_the_url() -> None:
    with pytest.raises(NotificationFailed) as caught:
        EcsflowNotifier(url="nosuchscheme://user:hunter2@example.com/x").send("s", "b")  # type: ignore[arg-type]
    assert "nosuchscheme://" in str(caught.value) and "hunter2" not in str(caught.value)
