"""`talktime webhook`: receive the vendor's webhook events into a landing folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli.common import AddCommand
from flows.errors import ConfigurationError

if TYPE_CHECKING:
    from flows.webhook.receiver import ReceiverLimits

TEXT_CHOICES = ("keep", "drop", "hash")


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime webhook`'s options."""
    hook = add("webhook", "receive the vendor's webhook events into a landing folder")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on")
    hook.add_argument("--port", type=int, default=8766, help="port to listen on")
    hook.add_argument("--landing", required=True, help="folder where events land as NDJSON files")
    hook.add_argument("--secret-env", required=True, help="name of the environment variable holding the secret")
    _add_text_option(hook)
    hook.add_argument(
        "--max-body-mb", type=float, metavar="MB", help="refuse event bodies over this many MiB with 413 (default 16)"
    )
    hook.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="close a connection whose request headers, or whose body, take longer than S seconds (408)",
    )
    hook.add_argument(
        "--max-concurrent-bodies",
        type=int,
        default=8,
        metavar="N",
        help="read at most N request bodies at once (at most N x --max-body-mb held); more wait 1 s, then 503",
    )
    hook.add_argument(
        "--max-connections", type=int, default=256, metavar="N", help="answer 503 and close connections beyond N"
    )


def _add_text_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text",
        choices=TEXT_CHOICES,
        default="keep",
        help="what a landed event keeps of transcript text (patient data): keep it, drop it, or hash it (HMAC-SHA256 "
        "keyed with $TALKTIME_TEXT_HMAC_KEY or the Secret block 'talktime-text-hmac-key'); drop is recommended",
    )


def cmd_webhook(args: argparse.Namespace) -> int:
    import uvicorn

    from flows.webhook.receiver import WebhookApp
    from flows.webhook.server import uvicorn_options

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise ConfigurationError(f"the webhook secret variable {args.secret_env} is not set")
    limits = webhook_limits(args)
    text_key = None
    if args.text == "hash":
        from flows.textpolicy import TEXT_KEY_ENV, text_key_from_environment

        text_key = text_key_from_environment()
        if text_key is None:
            raise ConfigurationError(f"--text hash needs a key: set {TEXT_KEY_ENV} (16 characters at least)")
    app = WebhookApp(Path(args.landing), secret, limits=limits, text=args.text, text_key=text_key)
    print(f"talktime webhook: landing events in {args.landing} from http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(limits))
    return 0


def webhook_limits(args: argparse.Namespace) -> ReceiverLimits:
    """The receiver's limits from `talktime webhook`'s options; ConfigurationError naming a bad one."""
    from flows.webhook.receiver import DEFAULT_MAX_EVENT_BYTES, ReceiverLimits

    max_body = DEFAULT_MAX_EVENT_BYTES if args.max_body_mb is None else args.max_body_mb * 1024 * 1024
    if not 1 <= max_body < 2**53:  # also refuses nan and inf
        raise ConfigurationError("--max-body-mb must be a positive number of MiB")
    if not 0 < args.read_timeout < 86400:  # also refuses nan and inf
        raise ConfigurationError("--read-timeout must be a positive number of seconds (at most a day)")
    for option, value in (("--max-concurrent-bodies", args.max_concurrent_bodies),
                          ("--max-connections", args.max_connections)):  # fmt: skip
        if value < 1:
            raise ConfigurationError(f"{option} must be at least 1")
    return ReceiverLimits(
        max_body_bytes=int(max_body),
        read_timeout_s=args.read_timeout,
        max_concurrent_bodies=args.max_concurrent_bodies,
        max_connections=args.max_connections,
    )
