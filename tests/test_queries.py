"""The example queries of docs/queries.md run, and their polars, DuckDB and pandas versions agree.

Every fenced code block whose opening fence carries `title="<query>-<engine>"` (engine `polars`,
`duckdb` or `pandas`) is extracted and run as it is, in a temporary folder outside the checkout
holding an output `out` built from the bundled samples (the ingest flow's body, no Prefect), by an
analyst's interpreter: the venv's Python with its packages but without talktime's editable install,
the checkout or PYTHONPATH on its path, so a block that imports talktime fails as it would for an
analyst (and the blocks' imports are checked too). Python blocks leave their answer in
`result`; a DuckDB block is one query. The three answers of a query must have the same columns and
the same rows (sorted, floats rounded), and are compared with values computed here from the raw
files. The output is made realistic: one `speaker_metrics` file is rewritten as schema version 1
(without the columns version 2 added), as in an output written before the upgrade.
"""

from __future__ import annotations

import ast
import glob
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
import sysconfig
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from tests.conftest import SAMPLES
from transforms.schemas import ADDED_COLUMNS, SPEAKER_METRICS

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "docs" / "queries.md"
ENGINES = ("polars", "duckdb", "pandas")
QUERY_IDS = ("read", "q1", "q2", "q3", "q4", "q4v2", "q5a", "q5b")
TAGGED_FENCE = re.compile(r'^```(\w+) title="([\w-]+)"\s*$')
MESSY = "d0e702ce-a68b-532d-81c8-80e4bdaf7d94"  # demo_extra.ndjson's "demo-messy-items"

Row = tuple[Any, ...]
Answer = tuple[list[str], list[Row]]


# --- the blocks -------------------------------------------------------------------------------


def tagged_blocks(text: str) -> dict[str, tuple[str, str]]:
    """{tag: (language, code)} of every fenced block whose fence carries a title."""
    blocks: dict[str, tuple[str, str]] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("```") and "title=" in line:
            match = TAGGED_FENCE.match(line)
            assert match, f"docs/queries.md:{number + 1}: malformed tagged fence {line!r}"
            language, tag = match.groups()
            end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
            assert tag not in blocks, f"docs/queries.md:{number + 1}: tag {tag} used twice"
            blocks[tag] = (language, "\n".join(lines[number + 1 : end]) + "\n")
    return blocks


BLOCKS = tagged_blocks(QUERIES.read_text(encoding="utf-8"))


def normalise(value: Any) -> Any:
    """A comparable value: floats rounded, an int stays an int (3 and 3.0 differ)."""
    if isinstance(value, float):
        return None if math.isnan(value) else ("float", round(value, 9))
    if isinstance(value, datetime):
        raise AssertionError(f"a query answered a datetime {value!r}: answer dates")
    if isinstance(value, bool) or value is None or isinstance(value, int | str | date):
        return value
    raise AssertionError(f"unexpected value {value!r} of type {type(value)}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `out`: the bundled samples ingested, one speaker_metrics file version 1."""
    from tests.crash_driver import ingest_without_prefect

    root = tmp_path_factory.mktemp("queries")
    ingest_without_prefect(str(root / "out"), 8, [str(SAMPLES / "responses")])
    first = sorted(glob.glob(f"{root}/out/speaker_metrics/**/*.parquet", recursive=True))[0]
    old = pl.read_parquet(first).drop(list(ADDED_COLUMNS.get("speaker_metrics", {})))
    assert old.height > 0
    old.write_parquet(first)  # glob order: the first file a reader opens is a version 1 file
    return root


@pytest.fixture(scope="module")
def weeks(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's transcriptions spread over several weeks, around Sunday/Monday midnights UTC."""
    root = tmp_path_factory.mktemp("weeks")
    transcriptions = pl.read_parquet(f"{demo}/out/transcriptions/**/*.parquet")
    monday = datetime(2026, 11, 2, tzinfo=UTC)
    offsets = [timedelta(microseconds=-1), timedelta(0), timedelta(days=3, hours=5), timedelta(days=6, hours=23)]
    moments = [monday + timedelta(weeks=i % 3) + offsets[i % 4] for i in range(transcriptions.height)]
    transcriptions = transcriptions.with_columns(fetched_at=pl.Series(moments, dtype=pl.Datetime("us", "UTC")))
    for table, frame in (
        ("transcriptions", transcriptions),
        ("speaker_metrics", read_raw(demo, "speaker_metrics")),
    ):
        (root / "out" / table / "fetched_date=2026-11-24").mkdir(parents=True)
        frame.write_parquet(root / "out" / table / "fetched_date=2026-11-24" / "part-x.parquet")
    return root


# An analyst's interpreter: the venv's packages, without the .pth files that put talktime's editable
# install on the path (-S), without the checkout, the current folder or PYTHONPATH on it (-I). Every
# requested block runs in a fresh namespace; the answers come back pickled, per tag, or the error.
BLOCK_RUNNER = """
import importlib.util, os, pickle, sys, traceback

site_packages, checkout, answers_file = sys.argv[1:]
sys.path.append(site_packages)
assert os.path.realpath(checkout) not in {os.path.realpath(entry or ".") for entry in sys.path}, sys.path
assert importlib.util.find_spec("transforms") is None and importlib.util.find_spec("flows") is None


def run(tag, language, code):
    if language == "sql":
        import duckdb

        with duckdb.connect() as connection:
            connection.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14: weeks must be UTC
            relation = connection.sql(code)
            return "duckdb", list(relation.columns), relation.fetchall()
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"docs/queries.md[{tag}]", "exec"), namespace)
    result = namespace["result"]
    kind = type(result).__module__.split(".")[0]
    if kind == "polars":
        return kind, result.columns, result.rows()
    if kind == "pandas":
        import pyarrow as pa

        table = pa.Table.from_pandas(result, preserve_index=False)
        return kind, table.column_names, [tuple(row.values()) for row in table.to_pylist()]
    raise TypeError(f"result is a {type(result).__qualname__}, not a DataFrame")


answers = {}
for tag, (language, code) in pickle.load(sys.stdin.buffer).items():
    try:
        answers[tag] = ("ok", run(tag, language, code))
    except Exception as exc:
        answers[tag] = ("error", f"{type(exc).__name__}: {exc}\\n{traceback.format_exc()}")
with open(answers_file, "wb") as file:
    pickle.dump(answers, file)
"""
ANALYST_PACKAGES = frozenset({"polars", "duckdb", "pandas", "pyarrow"})


class BlockError(Exception):
    """A documented block that failed in the analyst's interpreter."""


def run_blocks(tags: list[str], root: Path) -> dict[str, Answer]:
    """Run tagged blocks in `root` (a folder outside the checkout) with an analyst's interpreter: their answers."""
    assert not root.resolve().is_relative_to(ROOT), f"{root} is inside the checkout"
    answers_file = root / ".answers.pickle"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BLOCK_RUNNER, sysconfig.get_paths()["purelib"], str(ROOT),
         str(answers_file)],
        input=pickle.dumps({tag: BLOCKS[tag] for tag in tags}), cwd=root, env=env, capture_output=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    with answers_file.open("rb") as file:
        results = pickle.load(file)
    answers_file.unlink()
    answers: dict[str, Answer] = {}
    for tag, (outcome, value) in results.items():
        if outcome == "error":
            raise BlockError(f"docs/queries.md[{tag}] failed outside the checkout: {value}")
        kind, columns, rows = value
        assert kind == tag.rsplit("-", 1)[1], f"{tag} answers a {kind} result"
        answers[tag] = (columns, rows)
    return answers


def run_block(tag: str, root: Path) -> Answer:
    """Run one tagged block in `root` with an analyst's interpreter: its columns and rows."""
    return run_blocks([tag], root)[tag]


@pytest.fixture(scope="module")
def answer(demo: Path) -> Callable[[str], Answer]:
    """The answer of a tagged block on the demo output (every block runs once, in one analyst's interpreter)."""
    cache: dict[str, Answer] = {}

    def get(tag: str) -> Answer:
        if not cache:
            cache.update(run_blocks(sorted(BLOCKS), demo))
        return cache[tag]

    return get


def imported_modules(code: str) -> set[str]:
    """The top-level names of every module a Python block imports."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add((node.module or "").split(".")[0])
    return found


def agreed(query: str, get: Callable[[str], Answer]) -> list[dict[str, Any]]:
    """The three versions' answer, once they are checked to agree: rows as dicts, floats rounded."""
    answers = {engine: get(f"{query}-{engine}") for engine in ENGINES}
    columns, _ = answers["polars"]
    for engine, (engine_columns, rows) in answers.items():
        assert engine_columns == columns, f"{query}-{engine} answers other columns"
        assert rows, f"{query}-{engine} answers no row"
    normalised = {
        engine: sorted((tuple(normalise(value) for value in row) for row in rows), key=repr)
        for engine, (_, rows) in answers.items()
    }
    assert normalised["duckdb"] == normalised["polars"], f"{query}: DuckDB and polars differ"
    assert normalised["pandas"] == normalised["polars"], f"{query}: pandas and polars differ"
    return [dict(zip(columns, row, strict=True)) for row in answers["polars"][1]]


def read_raw(root: Path, table: str) -> pl.DataFrame:
    """Every file of a table, read one by one (files of several schema versions)."""
    files = sorted(glob.glob(f"{root}/out/{table}/**/*.parquet", recursive=True))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12))


# --- the convention ---------------------------------------------------------------------------


def test_every_query_has_its_three_versions_and_nothing_else() -> None:
    assert set(BLOCKS) == {f"{query}-{engine}" for query in QUERY_IDS for engine in ENGINES}


def test_a_broken_block_fails(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tag in ("q2-polars", "q2-duckdb", "q2-pandas"):
        language, code = BLOCKS[tag]
        monkeypatch.setitem(BLOCKS, tag, (language, code.replace("span_ms", "span_msx")))
        with pytest.raises(BlockError, match="span_msx"):
            run_block(tag, demo)


@pytest.mark.parametrize("tag", [tag for tag, (language, _) in BLOCKS.items() if language == "python"])
def test_a_block_imports_only_what_analysts_have(tag: str) -> None:
    """polars, DuckDB, pandas, pyarrow and the standard library: never talktime's own packages."""
    modules = imported_modules(BLOCKS[tag][1])
    assert modules <= ANALYST_PACKAGES | sys.stdlib_module_names, f"{tag} imports {sorted(modules - ANALYST_PACKAGES)}"


def test_a_block_that_imports_talktime_fails_outside_the_checkout(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    language, code = BLOCKS["q5a-polars"]
    monkeypatch.setitem(BLOCKS, "q5a-polars", (language, "import transforms.schemas\n" + code))
    with pytest.raises(BlockError, match="No module named 'transforms'"):
        run_block("q5a-polars", demo)
    assert "transforms" in imported_modules(BLOCKS["q5a-polars"][1])


def test_answers_that_differ_are_caught(answer: Callable[[str], Answer]) -> None:
    columns, rows = answer("q2-pandas")

    def tampered(tag: str) -> Answer:
        return (columns, rows[:-1]) if tag == "q2-pandas" else answer(tag)

    with pytest.raises(AssertionError, match="pandas and polars differ"):
        agreed("q2", tampered)


# --- reading ----------------------------------------------------------------------------------


def test_reading(demo: Path, answer: Callable[[str], Answer]) -> None:
    statuses = Counter(read_raw(demo, "transcriptions")["status"])
    assert {row["status"]: row["transcriptions"] for row in agreed("read", answer)} == statuses
    assert statuses == {"succeeded": 58, "failed": 2, "ongoing": 1}


def test_pandas_keeps_integer_columns_with_nulls_integer(demo: Path) -> None:
    namespace: dict[str, Any] = {}
    cwd = Path.cwd()
    os.chdir(demo)
    try:
        exec(compile(BLOCKS["read-pandas"][1], "docs/queries.md[read-pandas]", "exec"), namespace)
        default = pd.read_parquet(glob.glob("out/transcriptions/**/*.parquet", recursive=True))
    finally:
        os.chdir(cwd)
    transcriptions = namespace["transcriptions"]
    first_start = transcriptions["first_start_ms"]
    assert first_start.isna().sum() == 3 and first_start.notna().sum() == 58  # failed, ongoing: null
    assert first_start.dtype == pd.ArrowDtype(pa.int64())
    assert transcriptions["item_count"].dtype == pd.ArrowDtype(pa.int32())
    assert transcriptions["fetched_at"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))
    assert transcriptions["fetched_date"].dtype == pd.ArrowDtype(pa.date32())
    assert default["first_start_ms"].dtype == "float64"  # what the page warns about
    # the helper reads speaker_metrics of both schema versions with version 2's columns
    os.chdir(demo)
    try:
        metrics = namespace["read"]("speaker_metrics")
    finally:
        os.chdir(cwd)
    assert list(metrics.columns) == [*SPEAKER_METRICS.names(), "fetched_date"]
    assert metrics["first_turn_ms"].dtype == pd.ArrowDtype(pa.int64())
    assert metrics["first_turn_ms"].isna().any() and metrics["first_turn_ms"].notna().any()


# --- the five queries -------------------------------------------------------------------------


def median_doctor_share_by_week(root: Path) -> dict[date, tuple[int, float]]:
    fetched = {r["transcription_id"]: r["fetched_at"] for r in read_raw(root, "transcriptions").iter_rows(named=True)}
    shares: dict[date, list[float]] = defaultdict(list)
    for row in read_raw(root, "speaker_metrics").iter_rows(named=True):
        if row["speaker"] == "doctor" and row["talk_share"] is not None:
            day = fetched[row["transcription_id"]].astimezone(UTC).date()
            shares[day - timedelta(days=day.weekday())].append(row["talk_share"])
    return {week: (len(values), statistics.median(values)) for week, values in shares.items()}


def test_q1_median_doctor_talk_share_by_week(demo: Path, answer: Callable[[str], Answer]) -> None:
    rows = agreed("q1", answer)
    expected = median_doctor_share_by_week(demo)
    assert len(rows) == len(expected) == 1
    for row in rows:
        count, median = expected[row["week"]]
        assert row["week"].weekday() == 0 and row["consultations"] == count == 58
        assert close(row["median_doctor_talk_share"], median)


def test_q1_on_several_weeks(weeks: Path) -> None:
    answers = run_blocks([f"q1-{engine}" for engine in ENGINES], weeks)
    rows = agreed("q1", answers.__getitem__)
    expected = median_doctor_share_by_week(weeks)
    assert len(expected) == 4  # a Sunday 23:59:59.999999 belongs to the week before its Monday
    assert {row["week"]: row["consultations"] for row in rows} == {w: c for w, (c, _) in expected.items()}
    for row in rows:
        assert close(row["median_doctor_talk_share"], expected[row["week"]][1])


def test_q2_patients_who_spoke_least(demo: Path, answer: Callable[[str], Answer]) -> None:
    rows = agreed("q2", answer)
    talk: dict[str, dict[str, int]] = defaultdict(dict)
    for row in read_raw(demo, "speaker_metrics").iter_rows(named=True):
        talk[row["transcription_id"]][row["speaker"]] = row["talk_time_ms"]
    candidates = []
    for row in read_raw(demo, "transcriptions").iter_rows(named=True):
        if row["status"] == "succeeded" and row["span_ms"] >= 300_000 and row["total_talk_ms"] > 0:
            speakers = talk[row["transcription_id"]]
            share = speakers.get("patient", 0) / sum(speakers.values())
            candidates.append((share, row["transcription_id"], row["span_ms"]))
    expected = sorted(candidates)[:10]
    assert len(rows) == 10
    for row, (share, transcription_id, span_ms) in zip(rows, expected, strict=True):
        assert (row["transcription_id"], row["span_ms"]) == (transcription_id, span_ms)
        assert close(row["patient_talk_share"], share)
    assert rows[0]["patient_talk_share"] < rows[-1]["patient_talk_share"]


def test_q3_interruptions_per_consultation(demo: Path, answer: Callable[[str], Answer]) -> None:
    rows = agreed("q3", answer)
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for row in read_raw(demo, "speaker_metrics").iter_rows(named=True):
        expected[row["transcription_id"]][row["speaker"]] += row["interruption_count"]
    assert len(rows) == len(expected) == 58
    for row in rows:
        by = expected[row["transcription_id"]]
        assert row["interruptions"] == sum(by.values())
        assert (row["by_doctor"], row["by_patient"], row["by_unspecified"]) == (
            by["doctor"],
            by["patient"],
            by["unspecified"],
        )
    assert rows[0]["interruptions"] == max(sum(by.values()) for by in expected.values()) > 0
    assert any(row["by_doctor"] and row["by_patient"] for row in rows)


def opening_statements(root: Path) -> dict[str, dict[str, Any]]:
    """Each transcription's first patient turn, walked item by item in time order."""
    items: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_raw(root, "transcript_items").iter_rows(named=True):
        items[row["transcription_id"]].append(row)
    openings = {}
    for transcription_id, rows in items.items():
        rows.sort(key=lambda r: (r["start_time_ms"], r["end_time_ms"], r["item_index"]))
        first = next((i for i, r in enumerate(rows) if r["speaker"] == "patient"), None)
        if first is None:
            continue
        turn = []
        for row in rows[first:]:
            if row["speaker"] != "patient":
                break
            turn.append(row)
        start = min(r["start_time_ms"] for r in turn)
        openings[transcription_id] = {
            "transcription_id": transcription_id,
            "opening_start_ms": start,
            "opening_ms": max(r["end_time_ms"] for r in turn) - start,
            "opening_items": len(turn),
            "opening_words": sum(r["word_count"] for r in turn),
            "opening_text": " ".join(r["text"] for r in turn if r["text"] is not None),
        }
    return openings


def test_q4_the_patients_opening_statement(demo: Path, answer: Callable[[str], Answer]) -> None:
    rows = agreed("q4", answer)
    expected = opening_statements(demo)
    assert {row["transcription_id"]: row for row in rows} == expected
    assert expected[MESSY] == {
        "transcription_id": MESSY,
        "opening_start_ms": 1500,
        "opening_ms": 800,
        "opening_items": 1,
        "opening_words": 1,
        "opening_text": "Thanks.",
    }
    assert any(row["opening_items"] > 1 for row in rows)


def test_q4_from_first_turn_ms_agrees_with_the_derivation(demo: Path, answer: Callable[[str], Answer]) -> None:
    if "first_turn_ms" not in SPEAKER_METRICS:
        pytest.skip("talktime does not write first_turn_ms yet")
    rows = agreed("q4v2", answer)
    derived = {row["transcription_id"]: row["opening_ms"] for row in agreed("q4", answer)}
    assert {row["transcription_id"] for row in rows} == set(derived)
    version_1 = [row for row in rows if row["opening_ms"] is None]  # rows of the version 1 file
    assert 0 < len(version_1) < len(rows)
    for row in rows:
        if row["opening_ms"] is not None:
            assert row["opening_ms"] == derived[row["transcription_id"]]


def test_q5_rejected_items(demo: Path, answer: Callable[[str], Answer]) -> None:
    rejected = read_raw(demo, "rejected_items")
    by_reason = agreed("q5a", answer)
    assert {row["reason"]: row["items"] for row in by_reason} == Counter(rejected["reason"])
    assert {row["reason"]: row["transcriptions"] for row in by_reason} == {
        reason: frame["transcription_id"].n_unique() for (reason,), frame in rejected.group_by("reason")
    }
    assert len(by_reason) == 6  # the messy demo record breaks six different rules

    shares = agreed("q5b", answer)
    assert len(shares) == 58
    assert shares[0] == {
        "transcription_id": MESSY,
        "items_received": 9,
        "rejected_item_count": 6,
        "rejected_share": pytest.approx(6 / 9),
    }
    assert all(row["rejected_share"] == 0 for row in shares[1:])
