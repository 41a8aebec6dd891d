"""`talktime dictionary`: print the data dictionary of the four output tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.cli.common import AddCommand
from flows.errors import ConfigurationError


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime dictionary`'s options."""
    dic = add(
        "dictionary",
        "print the data dictionary: every table and column, its type, unit, nullability and definition",
        description="The data dictionary of the four output tables (the same descriptions are stored in every "
        "Parquet file: Arrow field metadata `description`, and file key-value metadata "
        "`talktime.description.<column>`).",
    )
    dic.add_argument(
        "--format", choices=["text", "markdown", "json"], default="text", help="text for a terminal, markdown or json"
    )
    dic.add_argument("--output", metavar="FILE", help="write to FILE (UTF-8) instead of stdout")


def cmd_dictionary(args: argparse.Namespace) -> int:
    from transforms.dictionary import as_json, as_markdown, as_text

    text = {"text": as_text, "markdown": as_markdown, "json": as_json}[args.format]()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot write {args.output}: {exc}") from exc
        print(f"talktime dictionary: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
