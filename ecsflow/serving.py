"""`ecsflow webhook serve|secret` and `ecsflow serve`: the long-running side of the deploy pipeline.

`ecsflow serve` brings up, on one machine: a Prefect server (only when PREFECT_API_URL is not
set), the flow runner (`python -m deployments.serve`, which serves every deployment, deploy_app
included) and the GitHub webhook receiver. Ctrl+C stops all three.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from deployments.webhook import (
    DEFAULT_DEPLOYMENT,
    DEFAULT_MAX_BODY,
    DEFAULT_PORT,
    DEFAULT_SECRET_BLOCK,
    DEFAULT_STATE_FILE,
    ReceiverConfig,
    ReceiverConfigError,
    config_from_stack,
    load_secret,
)

SERVE_DIR = Path(".ecsflow") / "serve"


def add_receiver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address the receiver listens on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"receiver port (default {DEFAULT_PORT})")
    p.add_argument("--secret-block", default=os.environ.get("ECSFLOW_WEBHOOK_SECRET_BLOCK"),
                   help="Prefect Secret block holding the GitHub webhook secret (default "
                        f"$ECSFLOW_WEBHOOK_SECRET_BLOCK, the stack's pipeline.webhook_secret_block, "
                        f"or {DEFAULT_SECRET_BLOCK})")
    p.add_argument("--repository", help="owner/name whose pushes deploy (default: the stack's "
                                        "pipeline.github_repository)")
    p.add_argument("--branch", help="branch whose pushes deploy (default: the stack's pipeline.branch, or main)")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT,
                   help=f"Prefect deployment to start (default {DEFAULT_DEPLOYMENT})")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                   help=f"larger deliveries are refused with 413 (default {DEFAULT_MAX_BODY})")
    p.add_argument("--state", type=Path, default=DEFAULT_STATE_FILE,
                   help=f"SQLite file of seen delivery ids (default {DEFAULT_STATE_FILE})")


def receiver_config(args: argparse.Namespace) -> ReceiverConfig:
    """Raises StackFileError or ReceiverConfigError (both: bad input)."""
    return config_from_stack(args.stack, repository=args.repository, branch=args.branch,
                             secret_block=args.secret_block, deployment=args.deployment,
                             max_body_bytes=args.max_body_bytes, state_file=args.state)


def check_secret(config: ReceiverConfig) -> None:
    try:
        asyncio.run(load_secret(config.secret_block))
    except ReceiverConfigError:
        raise
    except Exception as exc:  # the Prefect API is not there: a setting to fix, not a failed run
        from prefect.settings import get_current_settings

        raise ReceiverConfigError(f"cannot read the Secret block {config.secret_block!r} from the Prefect API "
                                  f"({get_current_settings().api.url or 'PREFECT_API_URL is not set'}): "
                                  f"{type(exc).__name__}") from None


def webhook_serve(args: argparse.Namespace) -> int:
    from deployments.webhook import serve

    config = receiver_config(args)
    check_secret(config)  # a missing block is bad input: exit 2 before listening
    serve(config, host=args.host, port=args.port)
    return 0


def webhook_secret(args: argparse.Namespace) -> int:
    """Store the webhook secret in the Secret block; with --generate, make one and print it once."""
    from prefect.blocks.system import Secret

    if args.generate:
        value = secrets.token_urlsafe(32)
    elif sys.stdin.isatty():
        value = getpass.getpass("GitHub webhook secret: ")
    else:
        value = sys.stdin.readline().strip()
    if len(value) < 16:
        raise ReceiverConfigError("the webhook secret must be at least 16 characters (or use --generate)")
    Secret(value=value).save(args.secret_block, overwrite=True)
    print(f"Saved the webhook secret in the Prefect Secret block {args.secret_block!r}.", file=sys.stderr)
    if args.generate:
        print(value)  # once, for GitHub's webhook form; stdout only, never a log
    return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Prefect's `serve` wants a second signal; SIGKILL if it still hangs on."""
    for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def serve_all(args: argparse.Namespace) -> int:
    from ecsflow.local import (
        LocalServer,
        PrefectServer,
        free_port,
        port_free,
        prefect_api_healthy,
        stop_on_ctrl_c_and_term,
    )

    stop_on_ctrl_c_and_term()
    config = None if args.no_webhook else receiver_config(args)
    servers: list[LocalServer] = []
    runner: subprocess.Popen[bytes] | None = None
    try:
        api_url = os.environ.get("PREFECT_API_URL", "")
        if not api_url:
            print("ecsflow serve: starting a local Prefect server (SQLite; about 15 s)...", flush=True)
            port = args.prefect_port if port_free(args.prefect_port) else free_port()
            local = PrefectServer(SERVE_DIR / "prefect", port)
            servers.append(local)
            api_url = local.api_url
            os.environ["PREFECT_API_URL"] = api_url
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        elif not prefect_api_healthy(api_url):
            raise ReceiverConfigError(f"PREFECT_API_URL={api_url} does not answer; start that server or unset "
                                      f"PREFECT_API_URL to let `ecsflow serve` start a local one")

        print(f"ecsflow serve: serving the deployments of {args.stack} (python -m deployments.serve)", flush=True)
        runner = subprocess.Popen([sys.executable, "-m", "deployments.serve", "--stack", args.stack],
                                  env=dict(os.environ, PREFECT_API_URL=api_url), start_new_session=True)
        print(f"Prefect UI: {api_url.removesuffix('/api')}", flush=True)
        if config is None:
            while runner.poll() is None:  # short naps, not wait(): Ctrl+C is acted on when the main thread wakes
                time.sleep(0.5)
            return 0 if runner.returncode in (0, -signal.SIGINT) else 1
        try:
            check_secret(config)
        except ReceiverConfigError as exc:
            # A fresh local server has no blocks yet: keep serving, the receiver answers 503 until it exists.
            print(f"ecsflow serve: {exc}\n  (`ecsflow webhook secret --generate` makes and stores one)", flush=True)
        print(f"Webhook receiver: http://{args.host}:{args.port}/github (pushes to {config.repository} "
              f"{config.ref} start {config.deployment})", flush=True)
        from deployments.webhook import serve

        serve(config, host=args.host, port=args.port, require_secret=False)  # returns on Ctrl+C
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if runner is not None:
            _stop(runner)
        for server in reversed(servers):
            server.stop()
