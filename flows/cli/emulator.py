"""`talktime emulator`: serve the local API emulator, with its faults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli.common import AddCommand

if TYPE_CHECKING:
    from flows.emulator.app import Faults
    from flows.emulator.oauth import OAuthServer


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime emulator`'s options."""
    emu = add("emulator", "serve the local API emulator")
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emu.add_argument("--port", type=int, default=8765, help="port to listen on")
    emu.add_argument("--data", nargs="*", default=[], help=".json/.ndjson responses or folders of them")
    emu.add_argument(
        "--verbatim",
        action="store_true",
        help="serve the --data records byte for byte, read from their files on each request, never decoded or "
        "held (large transcripts; API responses only: dialect A, never ongoing)",
    )
    emu.add_argument("--synthetic", type=int, default=0, metavar="N", help="also serve N synthetic transcripts")
    emu.add_argument("--seed", type=int, default=0, help="seed of synthetic data and of faults")
    emu.add_argument("--api-key", default="talktime-dev-key", help="the bearer key the emulator accepts")
    emu.add_argument("--ongoing-polls", type=int, default=0, help="polls answered `ongoing` before the result")
    emu.add_argument("--ongoing-seconds", type=float, default=0.0, help="seconds a result stays `ongoing`")
    emu.add_argument(
        "--ongoing-forever",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of ids (0-1, drawn from --seed) that stay `ongoing` for ever",
    )
    emu.add_argument("--write-ids", help="write the served ids to this file and go on serving")
    emu.add_argument("--oauth-client-id", help="emulate OAuth: accept assertions from this client id")
    emu.add_argument("--oauth-public-key", help="PEM public key that verifies the client's assertions")
    emu.add_argument("--token-ttl", type=float, default=3600.0, help="lifetime of issued access tokens (s)")
    _add_fault_options(emu)


def _add_fault_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fault injection (rates are 0-1, deterministic under --seed)")
    for kind, text in [
        ("rate-limited", "429 with Retry-After"),
        ("server-error", "500"),
        ("unavailable", "503"),
        ("truncated", "200 with a cut-off JSON body"),
        ("not-json", "200 with an HTML body"),
        ("drop", "connection dropped mid-body"),
        ("stall", "no answer for --stall-s seconds"),
    ]:
        g.add_argument(f"--fault-{kind}", type=float, default=0.0, metavar="RATE", help=text)
    g.add_argument("--latency-ms", type=int, default=0, help="fixed latency per request")
    g.add_argument("--jitter-ms", type=int, default=0, help="extra random latency, 0..N ms")
    g.add_argument("--stall-s", type=float, default=60.0, help="length of an injected stall")
    g.add_argument("--retry-after", default="1", help="Retry-After sent with 429s (seconds or HTTP date)")


def _faults(args: argparse.Namespace) -> Faults:
    from flows.emulator.app import Faults

    return Faults(
        rate_limited=args.fault_rate_limited,
        server_error=args.fault_server_error,
        unavailable=args.fault_unavailable,
        truncated=args.fault_truncated,
        not_json=args.fault_not_json,
        drop=args.fault_drop,
        stall=args.fault_stall,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        stall_s=args.stall_s,
        retry_after=args.retry_after,
    )


def cmd_emulator(args: argparse.Namespace) -> int:
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import index_records, load_responses, serve
    from flows.emulator.synthetic import synthetic_responses

    stored = index_records(args.data) if args.verbatim else {}
    responses = ({} if args.verbatim else load_responses(args.data)) | synthetic_responses(args.synthetic, args.seed)
    if args.write_ids:
        Path(args.write_ids).write_text("".join(f"{i}\n" for i in [*stored, *responses]), encoding="utf-8")
    config = EmulatorConfig(
        responses=responses,
        stored=stored,
        api_key=args.api_key,
        ongoing_polls=args.ongoing_polls,
        ongoing_seconds=args.ongoing_seconds,
        ongoing_forever=args.ongoing_forever,
        faults=_faults(args),
        seed=args.seed,
        oauth=_oauth_server(args),
    )
    served = len(stored) + len(responses)
    print(f"talktime emulator: {served} transcriptions on http://{args.host}:{args.port}", flush=True)
    serve(config, args.host, args.port)
    return 0


def _oauth_server(args: argparse.Namespace) -> OAuthServer | None:
    if not args.oauth_client_id:
        return None
    from flows.emulator.oauth import OAuthServer

    if not args.oauth_public_key:
        raise SystemExit("talktime emulator: --oauth-client-id needs --oauth-public-key")
    public_key = Path(args.oauth_public_key).read_text(encoding="utf-8")
    return OAuthServer(args.oauth_client_id, public_key, token_ttl_s=args.token_ttl)
