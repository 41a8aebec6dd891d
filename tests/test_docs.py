"""The documentation is self-contained and describes what the code does.

- every relative link of README.md, docs/*.md and data/samples/README.md leads to a file of the
  repository that users have (not git-ignored), and its anchor to a heading of that file;
- the README, the front door, keeps the test command CI runs (`make test`), and docs/README.md
  links every page of docs/;
- no Markdown file of the repository points at notes outside it (`shared/...`, `../shared`);
- docs/metrics.md documents every column of every table of `transforms.schemas.TABLES`, with its
  type, in that table's section, and every rejection reason the validity rules of
  `transforms/items.py` can produce;
- the worked example of docs/metrics.md and the examples of docs/api-contract.md (both dialects,
  a failed answer, a signed webhook event) are recomputed with the code.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl
import pytest

import transforms.items
from transforms.flatten import Transcript, flatten_transcripts
from transforms.items import parse_items
from transforms.schemas import SPEAKER_METRICS, TABLES, TRANSCRIPTION_METRICS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METRICS = DOCS / "metrics.md"
API_CONTRACT = DOCS / "api-contract.md"
OPERATING = DOCS / "operating.md"
DOC_PAGES = (
    "README.md",
    "api-contract.md",
    "metrics.md",
    "dictionary.md",
    "queries.md",
    "data.md",
    "operating.md",
    "patient-data.md",
    "storage.md",
    "benchmarks.md",
    "development.md",
)
LINKED_PAGES = sorted({ROOT / "README.md", ROOT / "data" / "samples" / "README.md", *DOCS.glob("*.md")})

# A path into the project's notes outside the repository, which users do not have.
OUTSIDE_NOTES = re.compile(r"(?<![\w./-])(?:\.\./)*shared/|(?<![\w./-])(?:\.\./)+shared\b|/work/shared\b")
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
CODE_SPAN = re.compile(r"``.*?``|`[^`]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
TABLE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")


# --- Markdown helpers -------------------------------------------------------------------------


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, content) of every fenced code block, in order."""
    blocks: list[tuple[str, str]] = []
    info, content = None, []
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and info is None:
            info, content = fence.group(2), []
        elif fence:
            blocks.append((info, "\n".join(content)))
            info = None
        elif info is not None:
            content.append(line)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link into this Markdown file can name (duplicates get -1, -2 … as on GitHub)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
        found += [(number, target) for target in INLINE_LINK.findall(CODE_SPAN.sub("", line))]
    return found


def is_git_ignored(path: Path) -> bool:
    """Whether git ignores the path (a clone does not have it); False when git cannot tell."""
    try:
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], check=False)
    except OSError:
        return False
    return result.returncode == 0


def markdown_files() -> list[Path]:
    """The repository's Markdown files: tracked or new, not ignored; at least the pages users read."""
    pages = {ROOT / "README.md", ROOT / "data" / "samples" / "README.md", *DOCS.glob("*.md")}
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        pages.update(ROOT / name for name in listed)
    except (OSError, subprocess.CalledProcessError):
        pages.update(
            p for p in ROOT.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
        )
    return sorted(p for p in pages if p.is_file())


def section(text: str, heading: str) -> str:
    """The text under the heading line `heading` (exact), up to the next heading of its level or above."""
    lines = text.splitlines()
    assert heading in lines, f"no heading {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    start = end = lines.index(heading) + 1
    fenced = False
    while end < len(lines):
        if FENCE.match(lines[end]):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(lines[end])) and len(match.group(1)) <= level:
            break
        end += 1
    return "\n".join(lines[start:end])


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table outside code blocks: a list of rows (header first), each a list of cells."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for _, line in [*prose_lines(text), (0, "")]:
        row = TABLE_ROW.match(line)
        if row:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.group(1))]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def code_in(cell: str) -> str:
    """The first code span of a cell, without its backticks."""
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"no `code` in table cell {cell!r}"
    return match.group(1)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the pages exist, link each other, and reach only what users have -------------------------


def test_the_docs_folder_has_its_pages() -> None:
    assert {p.name for p in DOCS.glob("*.md")} >= set(DOC_PAGES)


def test_the_readme_set_up_gives_the_test_command_ci_runs() -> None:
    """`.ci/run` runs the README's test command: it must stay exactly `make test`."""
    text = section((ROOT / "README.md").read_text(encoding="utf-8"), "## Set-up: two commands")
    (block,) = [content for info, content in code_blocks(text) if info == "sh"]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_docs_index_links_every_page_of_the_folder() -> None:
    linked = {(DOCS / unquote(t.partition("#")[0])).resolve() for _, t in links(DOCS / "README.md")}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=rel)
def test_relative_links_lead_to_files_of_the_repository(page: Path) -> None:
    problems = []
    for number, target in links(page):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a URL: not a file of the repository
        raw_path, _, anchor = target.partition("#")
        raw_path = unquote(raw_path)
        resolved = ((ROOT / raw_path.lstrip("/")) if raw_path.startswith("/") else (page.parent / raw_path)).resolve()
        where = f"{rel(page)}:{number}: {target}"
        if not raw_path:
            resolved = page
        elif not resolved.is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
            continue
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        elif is_git_ignored(resolved):
            problems.append(f"{where}: git-ignored, so not in a clone")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {rel(resolved)}")
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_finds_links_and_headings() -> None:
    # Guards the checker itself: a regex that matched nothing would pass every page.
    assert {"api-contract.md", "metrics.md", "../README.md"} <= {t for _, t in links(DOCS / "README.md")}
    assert {"worked-example", "validity-rules-and-rejection-reasons", "speaker_metrics"} <= anchors(METRICS)
    assert "webhooks-push-delivery" in anchors(API_CONTRACT)
    assert OUTSIDE_NOTES.search("see `../shared/metrics.md`") and OUTSIDE_NOTES.search("as shared/api-contract.md says")
    assert not OUTSIDE_NOTES.search("requests in flight, shared by all the batches; docs/metrics.md")


@pytest.mark.parametrize("page", markdown_files(), ids=rel)
def test_no_markdown_file_points_outside_the_repository(page: Path) -> None:
    found = [
        f"{rel(page)}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not found, "references to notes outside the repository (use docs/ instead):\n" + "\n".join(found)


# --- docs/metrics.md documents every column and every rejection reason ------------------------


def type_name(dtype: pl.DataType) -> str:
    """A schema type as metrics.md writes it: Int32, String, Datetime(us, UTC)…"""
    if isinstance(dtype, pl.Datetime):
        return f"Datetime({dtype.time_unit}, {dtype.time_zone})"
    return str(dtype)


def test_every_column_of_every_table_is_in_metrics_md() -> None:
    text = METRICS.read_text(encoding="utf-8")
    assert set(TABLES) == {"transcriptions", "speaker_metrics", "transcript_items", "rejected_items"}
    missing = [
        f"{table}.{column}" for table, schema in TABLES.items() for column in schema if f"`{column}`" not in text
    ]
    assert not missing, f"columns missing from docs/metrics.md: {missing}"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_each_table_section_documents_exactly_its_columns_with_their_types(table: str) -> None:
    text = section(METRICS.read_text(encoding="utf-8"), f"### `{table}`")
    documented = {
        code_in(row[0]): row[1]
        for rows in tables(text)
        if [c.lower() for c in rows[0][:2]] == ["column", "type"]
        for row in rows[1:]
    }
    expected = {column: type_name(dtype) for column, dtype in TABLES[table].items()}
    assert documented == expected, (
        f"docs/metrics.md, section `{table}`: missing {sorted(expected.keys() - documented.keys())}, "
        f"not in the schema {sorted(documented.keys() - expected.keys())}, wrong type "
        f"{sorted(c for c in expected.keys() & documented.keys() if expected[c] != documented[c])}"
    )


def _is_pl_lit(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "lit"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pl"
        and bool(node.args)
    )


def rejection_reasons_in_code() -> set[str]:
    """Every reason `transforms.items.rejection_reason` can return, read from its source.

    The reasons are the string literals of `pl.lit(...)` in that function and the functions it
    calls; an f-string literal (`f"missing_{label}"`) is expanded with the constant arguments of
    every call of its function.
    """
    tree = ast.parse(inspect.getsource(transforms.items))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    reached: set[str] = set()
    pending = ["rejection_reason"]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending += [
                n.func.id
                for n in ast.walk(functions[name])
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
            ]
    calls = [
        n
        for name in reached
        for n in ast.walk(functions[name])
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    reasons: set[str] = set()
    for name in reached:
        function = functions[name]
        parameters = [a.arg for a in function.args.args]
        for lit in (n for n in ast.walk(function) if _is_pl_lit(n)):
            value = lit.args[0]
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                reasons.add(value.value)
            elif isinstance(value, ast.JoinedStr):
                for call in (c for c in calls if c.func.id == name):
                    bound = dict(zip(parameters, call.args, strict=False)) | {k.arg: k.value for k in call.keywords}
                    parts = []
                    for part in value.values:
                        if isinstance(part, ast.FormattedValue):
                            argument = bound.get(part.value.id) if isinstance(part.value, ast.Name) else None
                            assert isinstance(argument, ast.Constant), f"cannot read a reason template of {name}"
                            part = argument
                        assert isinstance(part, ast.Constant)
                        parts.append(str(part.value))
                    reasons.add("".join(parts))
    return reasons


# Items that break the rules, to hold the reasons read from the source to what the code returns.
PROBES: list[Any] = [
    7,
    {"speaker": "doctor", "end_time_ms": 1},
    {"speaker": "doctor", "start_time_ms": 2**70, "end_time_ms": 1},
    {"speaker": "doctor", "start_time_ms": "1", "end_time_ms": 2},
    {"speaker": "doctor", "start_time_ms": 1.0, "end_time_ms": 2},
    {"speaker": "doctor", "start_time_ms": 1},
    {"speaker": "doctor", "start_time_ms": 1, "end_time_ms": 2**70},
    {"speaker": "doctor", "start_time_ms": 1, "end_time_ms": True},
    {"speaker": "doctor", "start_time_ms": -1, "end_time_ms": 2},
    {"speaker": "doctor", "start_time_ms": 3_600_001, "end_time_ms": 3_600_002},
    {"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 3_600_001},
    {"speaker": "doctor", "start_time_ms": 20000, "end_time_ms": 19000},
    {"speaker": 5, "start_time_ms": 1, "end_time_ms": 2},
    {"speaker_type": "NURSE", "start_offset_ms": 1, "end_offset_ms": 2},
    {"speaker": "doctor", "start_time_ms": 1, "end_time_ms": 2, "text": ["a"]},
    {"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 3_600_000, "text": None},  # valid
]


def test_the_reasons_read_from_the_source_are_those_the_code_returns() -> None:
    raw = flatten_transcripts([Transcript("5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e01", None, PROBES)])
    returned = set(parse_items(raw).collect()["reason"].drop_nulls())
    in_source = rejection_reasons_in_code()
    assert len(returned) >= 12
    assert returned <= in_source, f"reasons the source reading missed: {sorted(returned - in_source)}"


def test_every_rejection_reason_is_in_metrics_md() -> None:
    text = METRICS.read_text(encoding="utf-8")
    reasons = rejection_reasons_in_code()
    assert {"end_before_start", "start_time_out_of_range", "end_time_out_of_range"} <= reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in text)
    assert not missing, f"rejection reasons missing from docs/metrics.md: {missing}"


def test_the_rules_table_lists_exactly_the_reasons_of_the_code() -> None:
    text = section(METRICS.read_text(encoding="utf-8"), "### Validity rules and rejection reasons")
    (rules,) = [t for t in tables(text) if t[0][:2] == ["order", "reason"]]
    assert {code_in(row[1]) for row in rules[1:]} == rejection_reasons_in_code()


# --- the worked examples agree with the code --------------------------------------------------


def documented_value(cell: str) -> tuple[float, float]:
    """The interval a number as written can stand for: `0.472222…` is truncated, `0.5` exact."""
    text = cell.strip("` ")
    if text.endswith("…"):
        digits = text.rstrip("…")
        decimals = len(digits.partition(".")[2])
        return float(digits), float(digits) + 10.0**-decimals
    return float(text), float(text)


def assert_matches(where: str, cell: str, actual: Any) -> None:
    low, high = documented_value(cell)
    assert actual is not None, f"{where}: documented {cell}, the code gives null"
    assert low - 1e-9 <= actual <= high + 1e-9 if low != high else actual == pytest.approx(low, abs=1e-12), (
        f"{where}: documented {cell}, the code gives {actual}"
    )


def test_the_worked_example_of_metrics_md_is_what_the_code_computes() -> None:
    from tests.helpers import tables_for

    text = section(METRICS.read_text(encoding="utf-8"), "## Worked example")
    tid = re.search(r"Transcription `([0-9a-f-]{36})`", text)
    assert tid, "the worked example names no transcription id"
    items_table, speakers_table, row_table = tables(text)
    assert items_table[0][:5] == ["item_index", "speaker", "start_time_ms", "end_time_ms", "text"]
    rows = items_table[1:]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    items = [
        {"speaker": r[1], "start_time_ms": int(r[2]), "end_time_ms": int(r[3]), "text": code_in(r[4])} for r in rows
    ]
    computed = tables_for(items, tid.group(1))

    rejected = {int(r[0]): code_in(r[5]) for r in rows if r[5].startswith("rejected")}
    assert dict(computed["rejected_items"].select("item_index", "reason").iter_rows()) == rejected
    assert sorted(computed["transcript_items"]["item_index"]) == [int(r[0]) for r in rows if r[5] == "valid"]

    header = speakers_table[0]
    assert header == [c for c in SPEAKER_METRICS if c != "transcription_id"], "a speaker_metrics column lacks its value"
    by_speaker = {row["speaker"]: row for row in computed["speaker_metrics"].to_dicts()}
    assert sorted(by_speaker) == sorted(r[0] for r in speakers_table[1:])
    for cells in speakers_table[1:]:
        for column, cell in zip(header[1:], cells[1:], strict=True):
            assert_matches(f"speaker_metrics {cells[0]}.{column}", cell, by_speaker[cells[0]][column])

    documented = {code_in(r[0]): r[1] for r in row_table[1:]}
    assert list(documented) == list(TRANSCRIPTION_METRICS), "a transcriptions metric lacks its value"
    (row,) = computed["transcriptions"].to_dicts()
    for column, cell in documented.items():
        assert_matches(f"transcriptions.{column}", cell, row[column])


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def json_blocks(text: str) -> list[Any]:
    return [json.loads(content) for info, content in code_blocks(text) if info == "json"]


def test_the_api_examples_are_answers_talktime_reads() -> None:
    from flows.decode import api_version_of
    from flows.outcomes import outcome_from_response

    answers = [b for b in json_blocks(API_CONTRACT.read_text(encoding="utf-8")) if "status" in b]
    statuses = set()
    for body in answers:
        outcome = outcome_from_response(body, fetched_at=datetime.now(UTC), api_version=api_version_of(body))
        statuses.add((outcome.status, outcome.api_version))
    assert {("ongoing", "2024-04-22"), ("failed", "2024-04-22"), ("succeeded", "2024-04-22")} <= statuses
    assert {("succeeded", "2024-10-01"), ("failed", "2024-10-01")} <= statuses


def test_the_two_dialect_example_gives_the_documented_rows_in_both_dialects() -> None:
    from flows.decode import api_version_of
    from flows.outcomes import outcome_from_response
    from flows.transform import transform_outcomes

    text = section(API_CONTRACT.read_text(encoding="utf-8"), "## Worked example: one transcription in both dialects")
    dialect_a, dialect_b, failed = json_blocks(text)
    fetched_at = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)

    def rows(body: dict[str, Any]) -> dict[str, pl.DataFrame]:
        outcome = outcome_from_response(body, fetched_at=fetched_at, api_version=api_version_of(body))
        return transform_outcomes([outcome])

    a, b = rows(dialect_a), rows(dialect_b)
    assert (a["transcriptions"]["api_version"][0], b["transcriptions"]["api_version"][0]) == (
        "2024-04-22",
        "2024-10-01",
    )
    for table in TABLES:
        assert a[table].drop("api_version", strict=False).equals(b[table].drop("api_version", strict=False)), table

    row = a["transcriptions"].to_dicts()[0]
    first_bullet = text.split("- `transcriptions`:", 1)[1].split("\n- ", 1)[0]
    pairs = re.findall(r"`(\w+)`\s+(\d[\d.]*…?)", first_bullet)
    assert {c for c, _ in pairs} == set(TRANSCRIPTION_METRICS), "the example lacks a transcriptions metric"
    for column, value in pairs:
        assert_matches(f"api-contract example: transcriptions.{column}", value, row[column])
    assert f"`transcription_id` `{row['transcription_id']}`" in first_bullet

    (failure,) = rows(failed)["transcriptions"].to_dicts()
    assert failure["status"] == "failed"
    assert f"`error_code` `{failure['error_code']}`" in text
    assert f"`{failure['error_payload']}`" in text.replace("\n", " ")


def test_the_webhook_example_signature_is_what_the_receiver_accepts() -> None:
    from flows.webhook.receiver import parse_event, signature_is_valid

    text = section(API_CONTRACT.read_text(encoding="utf-8"), "## Webhooks (push delivery)")
    secret_named = re.search(r"the secret `([^`]+)`", text)
    timestamp_named = re.search(r"the timestamp\s+`([^`]+)`", text)
    assert secret_named and timestamp_named, "the webhook example names no secret or timestamp"
    secret, timestamp = secret_named.group(1), timestamp_named.group(1)
    blocks = [content for info, content in code_blocks(text) if info == ""]
    (body,) = [b.encode() for b in blocks if is_json_object(b)]
    (signature,) = [b for b in blocks if re.fullmatch(r"[0-9a-f]{64}", b)]

    assert datetime.fromisoformat(timestamp.replace("Z", "+00:00")).tzinfo is not None  # ISO-8601, not Unix seconds
    assert hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest() == signature
    assert signature_is_valid(secret, timestamp, body, f"0000, {signature}")  # one of several comma-separated
    assert not signature_is_valid(secret, timestamp, body + b" ", signature)
    assert parse_event(body)["type"] in ("transcribe_async.succeeded", "transcribe_async.failed")


def test_the_prefect_set_up_waits_for_the_server_before_using_it() -> None:
    """`prefect work-pool create` right after `prefect server start` fails while the server is starting."""
    operating = OPERATING.read_text(encoding="utf-8")
    block = operating.split("## Running on Prefect", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    start = next(i for i, c in enumerate(commands) if c.startswith(".venv/bin/prefect server start"))
    wait = commands.index("until curl -fsS http://127.0.0.1:4200/api/health >/dev/null 2>&1; do sleep 1; done")
    first_use = next(i for i, c in enumerate(commands) if "work-pool create" in c)
    assert start < wait < first_use
