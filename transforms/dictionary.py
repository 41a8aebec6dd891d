"""The data dictionary: every output table and column, with its type, unit, nullability and definition.

Types come from `transforms.schemas` (never repeated here); the words follow `docs/metrics.md` and
`shared/metrics.md`. The same descriptions are written into every Parquet file as Arrow field
metadata (`flows.storage.commit.to_arrow`). Pure: no I/O.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import polars as pl

from transforms.schemas import ADDED_COLUMNS, SCHEMA_VERSION, TABLES


@dataclass(frozen=True)
class Column:
    """One column of one table."""

    name: str
    type: str  # the polars type, from the schema
    unit: str
    nullable: bool
    null_when: str  # when the value is null; "never" when not nullable
    definition: str
    since: int = 1  # schema version that added the column (`schemas.ADDED_COLUMNS`)

    @property
    def description(self) -> str:
        """One paragraph: definition, unit, when null. Stored as the Arrow field's `description`."""
        null = f"Null {self.null_when}." if self.nullable else "Never null."
        return f"{self.definition} Unit: {self.unit}. {null}"


@dataclass(frozen=True)
class Table:
    """One output table: what a row is, and its columns in schema order."""

    name: str
    description: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class _Text:
    unit: str
    null_when: str | None  # None: never null
    definition: str


_NOT_SUCCEEDED = "unless `status` is `succeeded`"
_NO_ITEMS = f"{_NOT_SUCCEEDED}, and when the transcription has no valid item"
# A column added in schema version 2 is absent from files written before; readers that fill it show null.
_BEFORE_V2 = "in rows of schema version 1 files (written before the column existed; readers fill it with null)"

_TABLE_TEXT: dict[str, str] = {
    "transcriptions": (
        "One row per requested transcription id, whatever its outcome (succeeded, failed, ongoing, not_found, "
        "error, expired), in its latest state. The first eight columns describe the outcome; the metric columns "
        "are computed from the valid items only and are null unless `status` is `succeeded`."
    ),
    "speaker_metrics": (
        "One row per transcription and speaker with at least one valid item (so only for succeeded "
        "transcriptions; a speaker without valid items has no row, not a row of zeros). Talk-time, word, turn, "
        "overlap and conversation metrics of that speaker in that transcription."
    ),
    "transcript_items": (
        "One row per valid transcript item (an utterance of one speaker with a start and an end, in "
        "milliseconds from the start of the audio), of succeeded transcriptions."
    ),
    "rejected_items": (
        "One row per transcript item that breaks a validity rule, with the first rule it breaks and the item as "
        "received. Rejected items take part in no metric; every item of a succeeded transcription is in exactly "
        "one of `transcript_items` and `rejected_items`."
    ),
}

_COLUMN_TEXT: dict[str, dict[str, _Text]] = {
    "transcriptions": {
        "transcription_id": _Text(
            "id (UUID, lower-case)", None, "The requested id, lower-cased (an id that is not a UUID is kept as given)."
        ),
        "client_request_id": _Text(
            "id",
            "when the answer has none, or when there is no answer (`not_found`, `error`, `expired`)",
            "The answer's `client_request_id`, when it is a string.",
        ),
        "status": _Text(
            "category: succeeded, failed, ongoing, not_found, error, expired",
            None,
            "The outcome of the id: the transcription's status as the API gave it, or what talktime made of the "
            "answer (see docs/api-contract.md).",
        ),
        "error_code": _Text(
            "code (text)",
            "for `succeeded` and `ongoing`, and for `not_found` without a code",
            "`failed`: the code in the vendor's payload, as text; `not_found`: the error body's `code`; `error`: "
            "talktime's reason (`invalid_id`, `retries_exhausted`, `malformed_response`, `id_mismatch`, "
            "`response_too_large`) or the API's `code` / `http_<status>`; `expired`: `expired`. At most 64 "
            "characters of `[A-Za-z0-9_.:-]`: any other code from the API is stored as its first 55 such characters "
            "(every run of other characters replaced by `_`), `~` and 8 hex digits of its SHA-256, so a code holds "
            "`~` exactly when talktime changed it.",
        ),
        "error_message": _Text(
            "text",
            "when there is no error, or no message",
            "The human message matching `error_code` (the vendor's for `failed`): at most 1,000 characters (a "
            "longer one is cut and ends with `…`), each run of control characters replaced by one space.",
        ),
        "error_payload": _Text(
            "JSON text", "unless `status` is `failed`", "The vendor's whole error payload as strict JSON, keys sorted."
        ),
        "api_version": _Text(
            "API version date (YYYY-MM-DD)",
            "when no request was made",
            "`talktime run`: the `X-Nabla-Api-Version` sent; `talktime ingest`: `2024-10-01` when the status was "
            "upper-case, else `2024-04-22`.",
        ),
        "fetched_at": _Text(
            "UTC timestamp (microseconds)",
            None,
            "When talktime received the answer (`run`), read the record (`ingest`), or decided the id expired.",
        ),
        "item_count": _Text("count (items)", _NOT_SUCCEEDED, "Number of valid items."),
        "rejected_item_count": _Text(
            "count (items)", _NOT_SUCCEEDED, "Number of rejected items (rows in `rejected_items`)."
        ),
        "speaker_count": _Text(
            "count (speakers, 0 to 3)", _NOT_SUCCEEDED, "Number of distinct speakers with at least one valid item."
        ),
        "first_start_ms": _Text(
            "ms from the start of the audio", _NO_ITEMS, "Smallest `start_time_ms` over the valid items."
        ),
        "last_end_ms": _Text(
            "ms from the start of the audio", _NO_ITEMS, "Largest `end_time_ms` over the valid items."
        ),
        "span_ms": _Text(
            "ms",
            _NO_ITEMS,
            "`last_end_ms - first_start_ms`: from the first word to the last. Not the audio's or the "
            "consultation's duration: silence before the first item and after the last is outside it.",
        ),
        "total_talk_ms": _Text(
            "ms",
            _NOT_SUCCEEDED,
            "Length of the union of all valid item intervals: the time during which someone is talking (0 without "
            "valid items).",
        ),
        "silence_ms": _Text(
            "ms", _NO_ITEMS, "`span_ms - total_talk_ms`: time within the span during which nobody talks."
        ),
        "overlap_ms": _Text(
            "ms",
            _NOT_SUCCEEDED,
            "Length of the time during which two or more distinct speakers talk at once (one speaker's own "
            "overlapping items are not overlap).",
        ),
        "speaker_switches": _Text(
            "count (switches)",
            _NOT_SUCCEEDED,
            "Number of boundaries between consecutive turns (the number of turns - 1; 0 without valid items). A "
            "turn is a maximal run of consecutive items, in time order, with the same speaker.",
        ),
        "switches_per_minute": _Text(
            "switches/min (ratio)",
            f"{_NOT_SUCCEEDED}, and when `span_ms` is 0 or null",
            "`speaker_switches / (span_ms / 60000)`: the denominator is the span in minutes (first start to last "
            "end, silences included), not the audio's duration.",
        ),
        "doctor_patient_ratio": _Text(
            "ratio (0 or more, unbounded)",
            f"{_NOT_SUCCEEDED}, when the doctor or the patient has no valid item, and when the patient's "
            "talk time is 0",
            "`talk_time_ms(doctor) / talk_time_ms(patient)`: the denominator is the patient's talk time "
            "(`unspecified` is in neither); 0.0 when the doctor's items all last 0 ms.",
        ),
    },
    "speaker_metrics": {
        "transcription_id": _Text("id (UUID, lower-case)", None, "The transcription."),
        "speaker": _Text("category: doctor, patient, unspecified", None, "The speaker."),
        "item_count": _Text("count (items)", None, "The speaker's valid items (zero-length ones included)."),
        "talk_time_ms": _Text(
            "ms",
            None,
            "Length of the union of the speaker's item intervals: overlapping or repeated items of one speaker are "
            "not counted twice; zero-length items add nothing.",
        ),
        "talk_share": _Text(
            "ratio 0-1",
            "when the sum of every speaker's `talk_time_ms` in the transcription is 0",
            "`talk_time_ms` / the sum of `talk_time_ms` over all speakers of the transcription (time when two "
            "speakers talk at once counted once for each). Not a share of `total_talk_ms`, of `span_ms` or of the "
            "consultation's duration. The shares of a transcription sum to 1.",
        ),
        "word_count": _Text("words", None, "Sum of the word counts of the speaker's valid items."),
        "words_per_minute": _Text(
            "words/min",
            "when `talk_time_ms` is 0",
            "`word_count / (talk_time_ms / 60000)`: the denominator is the speaker's own talk time in minutes, not "
            "the span nor the transcription's talk time.",
        ),
        "turn_count": _Text(
            "count (turns)",
            None,
            "Number of the speaker's turns; a turn is a maximal run of consecutive items, in time order, with the "
            "same speaker.",
        ),
        "mean_turn_ms": _Text(
            "ms",
            None,
            "Mean duration of the speaker's turns (sum of the turn durations / `turn_count`); a turn lasts from its "
            "earliest start to its latest end, pauses inside it included.",
        ),
        "longest_turn_ms": _Text("ms", None, "The longest of the speaker's turn durations (the longest monologue)."),
        "overlap_ms": _Text(
            "ms",
            None,
            "Length of (union of the speaker's intervals) ∩ (union of every other speaker's intervals): time spent "
            "talking while someone else talks.",
        ),
        "interruption_count": _Text(
            "count (items)",
            None,
            "Number of the speaker's items whose start falls strictly inside an item of another speaker "
            "(`other.start < item.start < other.end`); starting at the same moment, or exactly when the other "
            "ends, is not an interruption.",
        ),
        "question_count": _Text(
            "count (items)",
            _BEFORE_V2,
            "Number of the speaker's valid items whose `text`, with trailing whitespace removed (whitespace as for "
            "word counts), ends with `?`; a null text is not a question.",
        ),
        "first_turn_ms": _Text(
            "ms",
            _BEFORE_V2,
            "Duration of the speaker's first turn in time order (its earliest start to its latest end): for the "
            "patient, the opening statement.",
        ),
        "mean_response_gap_ms": _Text(
            "ms",
            "when the speaker has no turn that follows a turn of another speaker (its only turn opens the "
            f"transcription), and {_BEFORE_V2}",
            "Over the speaker's turns that follow a turn of another speaker (every turn but the transcription's "
            "first), the mean of `max(0, turn start - previous turn's end)`, a turn's end being its latest item "
            "end (an answer that starts before the other speaker finished counts as 0).",
        ),
    },
    "transcript_items": {
        "transcription_id": _Text("id (UUID, lower-case)", None, "The transcription."),
        "client_request_id": _Text(
            "id",
            "when the transcription's `client_request_id` is null",
            "The transcription's `client_request_id`, repeated on every item.",
        ),
        "item_index": _Text("index (0-based)", None, "Position of the item in the API's `transcript` array."),
        "speaker": _Text(
            "category: doctor, patient, unspecified",
            None,
            "The item's speaker (`speaker`, or `speaker_type` in dialect B), lower-cased; `unspecified` when "
            "absent or null.",
        ),
        "text": _Text(
            "text",
            "when the item's text is absent or null, and always under the text policy `drop`",
            "The transcribed text as received (a lone surrogate escape is repaired to U+FFFD), under the output's "
            "text policy `keep`; under `hash`, the lower-case hex HMAC-SHA256 of that text under the output's key "
            "(the same text gives the same hash within the output). Patient data: see the README.",
        ),
        "start_time_ms": _Text(
            "ms from the start of the audio",
            None,
            "Start of the item (dialect B: `start_offset_ms`); the interval is half-open.",
        ),
        "end_time_ms": _Text(
            "ms from the start of the audio", None, "End of the item, excluded (dialect B: `end_offset_ms`)."
        ),
        "duration_ms": _Text("ms", None, "`end_time_ms - start_time_ms` (0 or more)."),
        "word_count": _Text(
            "words",
            None,
            "Number of maximal runs of non-whitespace characters in `text`, as Python's `str.split()` counts them "
            "(markup such as `[noise]` counts; a null text has 0 words).",
        ),
    },
    "rejected_items": {
        "transcription_id": _Text("id (UUID, lower-case)", None, "The transcription."),
        "item_index": _Text("index (0-based)", None, "Position of the item in the API's `transcript` array."),
        "reason": _Text(
            "category: rejection reason",
            None,
            "The first validity rule the item breaks, in the order of docs/metrics.md (`not_an_object`, "
            "`missing_start_time`, …, `text_not_string`).",
        ),
        "raw_item": _Text(
            "JSON text",
            "only when the item's JSON was not given to the transform (never in what talktime run and ingest write)",
            "The item as received, re-serialised as compact strict JSON (NaN and Infinity become `null`), "
            "under the text policy `keep`; under `drop` and `hash`, only its speaker and time members and its "
            "`text` member as null (`drop`) or hashed like `transcript_items.text` (`hash`); an item that is not "
            "an object is `null`.",
        ),
    },
}


def _column(table: str, name: str, dtype: pl.DataType, text: _Text) -> Column:
    return Column(
        name=name,
        type=str(dtype),
        unit=text.unit,
        nullable=text.null_when is not None,
        null_when=text.null_when or "never",
        definition=text.definition,
        since=ADDED_COLUMNS.get(table, {}).get(name, 1),
    )


def dictionary() -> list[Table]:
    """Every table of `TABLES`, with its columns in schema order.

    A schema column without a definition raises KeyError: `check()` says which ones are missing.
    """
    tables = []
    for table, schema in TABLES.items():
        texts = _COLUMN_TEXT[table]
        columns = [_column(table, name, dtype, texts[name]) for name, dtype in schema.items()]
        tables.append(Table(table, _TABLE_TEXT[table], tuple(columns)))
    return tables


def check(tables: Mapping[str, pl.Schema] | None = None) -> list[str]:
    """Problems between the schemas and the dictionary: columns or tables without a definition,
    definitions naming no column. [] when in step."""
    tables = TABLES if tables is None else tables
    problems = []
    for table, schema in tables.items():
        if table not in _COLUMN_TEXT or table not in _TABLE_TEXT:
            problems.append(f"{table}: table without a description")
            continue
        texts = _COLUMN_TEXT[table]
        problems += [f"{table}.{name}: column without a definition" for name in schema if name not in texts]
        problems += [f"{table}.{name}: defined but not in the schema" for name in texts if name not in schema]
    problems += [f"{table}: described but not a table" for table in _COLUMN_TEXT if table not in tables]
    return problems


def descriptions(table: str) -> dict[str, str]:
    """column -> description, for the columns of `table` that have one (as stored in the Parquet files)."""
    schema = TABLES[table]
    texts = _COLUMN_TEXT.get(table, {})
    return {name: _column(table, name, schema[name], texts[name]).description for name in schema if name in texts}


def as_dict() -> dict[str, object]:
    """The dictionary as plain data (what `as_json` serialises)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tables": [
            {
                "name": table.name,
                "description": table.description,
                "columns": [{**asdict(column), "description": column.description} for column in table.columns],
            }
            for table in dictionary()
        ],
    }


def as_json() -> str:
    """The dictionary as JSON (UTF-8 text, indented)."""
    return json.dumps(as_dict(), indent=2, ensure_ascii=False) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_markdown() -> str:
    """The dictionary as a Markdown page: one section per table, one table row per column."""
    lines = [
        "# Data dictionary",
        "",
        "Generated from `transforms/dictionary.py`: do not edit by hand, regenerate with `talktime dictionary "
        f"--format markdown --output docs/dictionary.md`. Schema version {SCHEMA_VERSION}. Each file also carries "
        "these descriptions per column (Arrow field metadata `description`; file key-value metadata "
        "`talktime.description.<column>`). Types are polars types (Int32, Int64, Float64, String, Datetime in "
        "microseconds, UTC). All times are integer milliseconds; an item covers `[start_time_ms, end_time_ms)`; a "
        "minute is 60,000 ms.",
    ]
    for table in dictionary():
        lines += ["", f"## `{table.name}`", "", table.description, ""]
        lines += ["| column | type | unit | null | definition |", "|---|---|---|---|---|"]
        for c in table.columns:
            null = f"yes: {c.null_when}" if c.nullable else "never"
            definition = c.definition + (f" Added in schema version {c.since}." if c.since > 1 else "")
            lines.append(f"| `{c.name}` | {c.type} | {_cell(c.unit)} | {_cell(null)} | {_cell(definition)} |")
    return "\n".join(lines) + "\n"


def as_text(width: int = 100) -> str:
    """The dictionary as a plain listing for a terminal, wrapped at `width` characters."""

    def wrap(text: str, indent: str) -> list[str]:
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)

    lines = [f"talktime data dictionary (schema version {SCHEMA_VERSION})"]
    for table in dictionary():
        lines += ["", "=" * len(table.name), table.name, "=" * len(table.name), *wrap(table.description, "")]
        for c in table.columns:
            null = f"null {c.null_when}" if c.nullable else "never null"
            since = f"; added in schema version {c.since}" if c.since > 1 else ""
            lines += ["", f"{c.name}  ({c.type})", *wrap(f"unit: {c.unit}; {null}{since}", "    ")]
            lines += wrap(c.definition, "    ")
    return "\n".join(lines) + "\n"
