"""The notifier block: where ecsflow tells people what a run did (deploy started / succeeded /
rolled back, backup and restore-test results).

The target URL is a secret (a Slack incoming-webhook URL carries its token in the path), so it
is a SecretStr and never appears in logs, errors or artifacts; errors name only its scheme and host.

- `http://` / `https://` URLs are Slack-compatible incoming webhooks (Slack, Mattermost,
  Rocket.Chat, Google Chat accept the same `{"text": ...}` POST): sent directly.
- Anything else is an apprise URL (`slack://`, `json://`, `mailto://`, `discord://`, `msteams://`...):
  sent through apprise, which ships with Prefect.

Save one with `EcsflowNotifier(url="https://hooks.slack.com/services/...").save("team-slack")`
(or from the Prefect UI) and name it in the stack file: `notifications: {block: team-slack}`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

SEND_TIMEOUT_SECONDS = 10.0


class NotificationFailed(Exception):
    """The target did not accept the message (the message says which host, never the URL)."""


def _where(url: str) -> str:
    """Scheme and host only: the rest of a webhook URL is its secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


class EcsflowNotifier(Block):
    """Sends ecsflow's run notifications to a Slack incoming webhook or any apprise URL."""

    _block_type_name: ClassVar[str] = "ecsflow-notifier"
    _block_type_slug: ClassVar[str] = "ecsflow-notifier"
    _description: ClassVar[str] = ("Where ecsflow sends deploy, rollback, backup and restore-test notifications: a "
                                   "Slack-compatible incoming webhook (https://...) or any apprise URL (slack://, "
                                   "json://, mailto://...).")

    url: SecretStr = Field(..., title="Target URL", description="A Slack incoming-webhook URL "
                           "(https://hooks.slack.com/services/...) or any apprise URL. Kept secret.")

    def send(self, subject: str, body: str) -> None:
        """Send one message; raise NotificationFailed if the target refuses it."""
        url = self.url.get_secret_value().strip()
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            self._send_webhook(url, subject, body)
        else:
            self._send_apprise(url, subject, body)

    @staticmethod
    def _send_webhook(url: str, subject: str, body: str) -> None:
        payload = json.dumps({"text": f"*{subject}*\n{body}"}).encode()
        request = urllib.request.Request(url, data=payload, method="POST",
                                         headers={"Content-Type": "application/json"})
        host = urllib.parse.urlsplit(url).hostname or ""
        # A webhook on this machine (tests, a local relay) never goes through an HTTP proxy.
        local = host in ("localhost", "::1") or host.startswith("127.")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local \
            else urllib.request.build_opener()
        try:
            with opener.open(request, timeout=SEND_TIMEOUT_SECONDS) as answer:
                if not 200 <= answer.status < 300:
                    raise NotificationFailed(f"{_where(url)} answered HTTP {answer.status}")
        except urllib.error.HTTPError as exc:
            raise NotificationFailed(f"{_where(url)} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotificationFailed(f"cannot reach {_where(url)} ({getattr(exc, 'reason', exc)})") from None

    @staticmethod
    def _send_apprise(url: str, subject: str, body: str) -> None:
        from apprise import Apprise

        client = Apprise()
        if not client.add(url):
            raise NotificationFailed(f"apprise does not understand the notifier's URL (scheme "
                                     f"{urllib.parse.urlsplit(url).scheme or 'none'}://)")
        if not client.notify(title=subject, body=body):
            raise NotificationFailed(f"{_where(url)} did not accept the message (apprise reported a failure)")
