"""`talktime dictionary`, and the descriptions every written Parquet file carries per column."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.outcomes import Outcome
from tests.helpers import FETCHED_AT, TID, commit_outcomes, item
from transforms.dictionary import as_json, as_markdown, descriptions, dictionary
from transforms.schemas import TABLES

# The query docs/data.md gives: DuckDB does not decode Arrow field metadata (it lives inside the
# base64 `ARROW:schema` blob), so talktime also writes each description as file key-value metadata.
DUCKDB_DESCRIPTIONS = """
SELECT DISTINCT replace(decode(key), 'talktime.description.', '') AS column_name, decode(value) AS description
FROM parquet_kv_metadata('{glob}')
WHERE decode(key) LIKE 'talktime.description.%'
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    items = [item("doctor", 0, 4000, "Any fever?"), item("patient", 4500, 9000, "No."), item("doctor", 20, 10)]
    commit_outcomes(
        str(out),
        [
            Outcome(TID, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items),
            Outcome("0b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e02", "failed", FETCHED_AT, error_code="422"),
        ],
    )
    return out


def files(out: Path, table: str) -> list[Path]:
    found = sorted((out / table).rglob("*.parquet"))
    assert found, f"no {table} file"
    return found


@pytest.mark.parametrize("table", list(TABLES))
def test_each_field_carries_its_description(out: Path, table: str) -> None:
    expected = {c.name: c.description for t in dictionary() if t.name == table for c in t.columns}
    for path in files(out, table):
        schema = pq.read_schema(path)
        assert schema.names == list(TABLES[table])
        for name in schema.names:
            assert schema.field(name).metadata == {b"description": expected[name].encode()}, name
        assert schema.metadata[b"talktime.table"] == table.encode()


@pytest.mark.parametrize("table", list(TABLES))
def test_duckdb_shows_the_descriptions_through_parquet_kv_metadata(out: Path, table: str) -> None:
    glob = f"{out}/{table}/**/*.parquet"
    rows = dict(duckdb.sql(DUCKDB_DESCRIPTIONS.format(glob=glob)).fetchall())
    assert rows == descriptions(table)
    # DESCRIBE shows no comment for a Parquet column (DuckDB 2.0.0): the reason for the query above.
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()
    assert not any(text in map(str, row) for row in described for text in descriptions(table).values())


def test_text_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dictionary"]) == 0
    text = capsys.readouterr().out
    for table, schema in TABLES.items():
        assert table in text
        for name, dtype in schema.items():
            assert f"\n{name}  ({dtype})" in text


def test_json_parses_and_lists_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dictionary", "--format", "json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    tables = {t["name"]: {c["name"]: c["type"] for c in t["columns"]} for t in parsed["tables"]}
    for table, schema in TABLES.items():
        assert {name: tables[table][name] for name in schema} == {name: str(dtype) for name, dtype in schema.items()}
    assert parsed == json.loads(as_json())


def test_markdown_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dictionary.md"
    assert main(["dictionary", "--format", "markdown", "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    written = target.read_text(encoding="utf-8")
    assert written == as_markdown()
    for schema in TABLES.values():
        for name in schema:
            assert f"| `{name}` |" in written


def test_an_unwritable_output_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dictionary", "--output", str(tmp_path / "missing" / "dictionary.txt")]) == 2
    assert "cannot write" in capsys.readouterr().err
