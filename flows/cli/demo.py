"""`talktime demo`: the whole pipeline on the bundled sample, via the emulator."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from flows.cli.common import AddCommand, announces
from flows.cli.jobs import outcome
from flows.cli.options import build_settings
from flows.cli.run import run_checked
from flows.secrets import API_KEY_ENV
from flows.settings import RunSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLES = PROJECT_ROOT / "data" / "samples"
TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime demo`'s options."""
    demo = add("demo", "run the whole pipeline on the bundled sample via the emulator", (job,))
    demo.add_argument("--out", default="data/output", help="output directory (its tables are rewritten)")
    demo.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="the sample folder")


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import EmulatorServer, load_responses

    samples = Path(args.samples)
    out = Path(args.out)
    for owned in (*TABLE_NAMES, "_talktime"):
        shutil.rmtree(out / owned, ignore_errors=True)
    config = EmulatorConfig(responses=load_responses([samples / "responses"]), ongoing_polls=1)
    with EmulatorServer(config) as server:
        print(f"talktime demo: emulator on {server.api_url}", flush=True)
        settings = build_settings(RunSettings, {"api_url": server.api_url, "ids_file": str(samples / "ids.txt"),
                                                "out": str(out), "batch_size": 25, "max_wait_s": 3})  # fmt: skip
        os.environ[API_KEY_ENV] = config.api_key  # the emulator's key, for this process only
        state = run_checked(settings, announces(args))
    code = outcome(state, args, str(out))
    if code == 0:
        from flows.report import write_report

        print(f"talktime demo: report {write_report(str(out), out / 'report.html').path}")
    return code
