"""`talktime demo`: the whole pipeline on the bundled sample, via the emulator."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from flows.cli.common import AddCommand, announces
from flows.cli.jobs import outcome

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLES = PROJECT_ROOT / "data" / "samples"
TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime demo`'s options."""
    demo = add("demo", "run the whole pipeline on the bundled sample via the emulator", (job,))
    demo.add_argument("--out", default="data/output", help="output directory (its tables are rewritten)")
    demo.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="the sample folder")


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.cli.commands import build_parser  # commands imports this module
    from flows.cli.run import run_checked
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import EmulatorServer, load_responses

    samples = Path(args.samples)
    out = Path(args.out)
    for owned in (*TABLE_NAMES, "_talktime"):
        shutil.rmtree(out / owned, ignore_errors=True)
    config = EmulatorConfig(responses=load_responses([samples / "responses"]), ongoing_polls=1)
    with EmulatorServer(config) as server:
        print(f"talktime demo: emulator on {server.api_url}", flush=True)
        demo_args = build_parser().parse_args(
            ["run", "--api-url", server.api_url, "--ids", str(samples / "ids.txt"), "--out", str(out),
             "--api-key", config.api_key, "--batch-size", "25", "--max-wait", "3"]
            + (["--quiet"] if args.quiet else [])
        )  # fmt: skip
        state = run_checked(demo_args, announces(args))
    code = outcome(state, args, str(out))
    if code == 0:
        from flows.report import write_report

        print(f"talktime demo: report {write_report(str(out), out / 'report.html').path}")
    return code
