"""`talktime report`: a self-contained HTML page of charts over the whole output."""

from __future__ import annotations

import argparse

from flows.cli.common import AddCommand


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime report`'s options."""
    rep = add(
        "report",
        "write a self-contained HTML page of charts over the whole output (opens offline)",
        description="One HTML file of static SVG charts over every id of an output (not one run): talk share, "
        "doctor:patient ratio, words per minute, silence and overlap, the patient's opening statement, response "
        "gaps, outcomes by status and error code, rejected items by reason, and who spoke when in a few "
        "transcriptions. No script, no external resource, no transcript text.",
    )
    rep.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    rep.add_argument("--html", required=True, metavar="FILE", help="the HTML file to write")
    rep.add_argument(
        "--timeline",
        action="append",
        default=[],
        metavar="ID",
        help="a transcription to draw in 'who spoke when' (repeatable; default: those at the 10th, 50th and "
        "90th percentile of the doctor's talk share)",
    )


def cmd_report(args: argparse.Namespace) -> int:
    from flows.report import write_report

    report = write_report(str(args.out), args.html, args.timeline)
    print(
        f"talktime report: {report.path} ({report.size_bytes / 1024:,.0f} KiB; {report.transcriptions} "
        f"transcriptions, {report.succeeded} succeeded)"
    )
    return 0
