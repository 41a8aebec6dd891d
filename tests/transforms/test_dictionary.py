"""The data dictionary covers every column of every table, with the schemas' own types."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from transforms import dictionary as dd
from transforms import schemas
from transforms.schemas import ADDED_COLUMNS, SCHEMA_VERSION, TABLES


def test_every_table_is_described() -> None:
    assert [table.name for table in dd.dictionary()] == list(TABLES)
    for table in dd.dictionary():
        assert table.description.startswith("One row per ")


@pytest.mark.parametrize("table", list(TABLES))
def test_every_column_has_an_entry_and_every_entry_names_a_column(table: str) -> None:
    described = next(t for t in dd.dictionary() if t.name == table)
    names = [column.name for column in described.columns]
    assert set(names) == set(TABLES[table])
    assert names == list(TABLES[table])  # in schema order, each once


def test_check_finds_nothing() -> None:
    assert dd.check() == []


def test_types_are_the_schemas_types() -> None:
    for table in dd.dictionary():
        schema = TABLES[table.name]
        for column in table.columns:
            assert column.type == str(schema[column.name]), (table.name, column.name)
            assert column.since == ADDED_COLUMNS.get(table.name, {}).get(column.name, 1) <= SCHEMA_VERSION


def test_entries_are_complete() -> None:
    for table in dd.dictionary():
        for c in table.columns:
            assert c.unit and c.definition.endswith(".") and c.null_when, (table.name, c.name)
            assert (c.null_when == "never") == (not c.nullable)
            assert c.definition in c.description and c.unit in c.description


def test_ratios_name_their_denominators() -> None:
    columns = {(t.name, c.name): c for t in dd.dictionary() for c in t.columns}
    share = columns["speaker_metrics", "talk_share"].definition
    assert "sum of `talk_time_ms` over all speakers of the transcription" in share
    assert "consultation's duration" in share  # ... that it is not a share of
    assert "own talk time" in columns["speaker_metrics", "words_per_minute"].definition
    assert "span in minutes" in columns["transcriptions", "switches_per_minute"].definition
    assert "patient's talk time" in columns["transcriptions", "doctor_patient_ratio"].definition
    for key in [("speaker_metrics", "talk_share"), ("speaker_metrics", "words_per_minute")]:
        assert columns[key].nullable


def test_markdown_and_json_contain_every_column() -> None:
    markdown = dd.as_markdown()
    text = dd.as_text()
    parsed = json.loads(dd.as_json())
    assert parsed["schema_version"] == SCHEMA_VERSION
    by_table = {t["name"]: t for t in parsed["tables"]}
    assert list(by_table) == list(TABLES)
    for table in TABLES:
        assert f"## `{table}`" in markdown
        json_columns = {c["name"]: c for c in by_table[table]["columns"]}
        assert set(json_columns) == set(TABLES[table])
        for name in set(TABLES[table]):
            assert f"| `{name}` |" in markdown
            assert f"\n{name}  (" in text
        for name, dtype in TABLES[table].items():
            assert json_columns[name]["type"] == str(dtype)
            assert f"| `{name}` | {dtype} |" in markdown


def test_descriptions_are_those_of_the_dictionary() -> None:
    for table in dd.dictionary():
        stored = dd.descriptions(table.name)
        assert list(stored) == list(TABLES[table.name])
        assert stored == {column.name: column.description for column in table.columns}


def test_a_column_added_without_a_definition_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    wider = pl.Schema({**TABLES["speaker_metrics"], "new_metric": pl.Float64()})
    monkeypatch.setitem(schemas.TABLES, "speaker_metrics", wider)
    assert "speaker_metrics.new_metric: column without a definition" in dd.check()
    with pytest.raises(KeyError, match="new_metric"):
        dd.dictionary()
    monkeypatch.undo()
    assert not [problem for problem in dd.check() if "without" in problem]


def test_a_table_added_without_a_description_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(schemas.TABLES, "new_table", pl.Schema({"transcription_id": pl.String()}))
    assert "new_table: table without a description" in dd.check()


def test_a_definition_without_a_column_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    narrower = pl.Schema({k: v for k, v in TABLES["rejected_items"].items() if k != "raw_item"})
    monkeypatch.setitem(schemas.TABLES, "rejected_items", narrower)
    assert dd.check() == ["rejected_items.raw_item: defined but not in the schema"]


def test_docs_dictionary_is_generated_from_the_code() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "dictionary.md"
    assert page.read_text(encoding="utf-8") == dd.as_markdown(), (
        "regenerate: talktime dictionary --format markdown --output docs/dictionary.md"
    )
