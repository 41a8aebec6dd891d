"""A batch's decoded responses -> the four output tables (the only caller of transforms/).

`Decoded` is what both decoders produce (the polars fast path and the Python fallback in
`flows.decode`): the responses (one row per outcome), the flattened items with each field's
JSON kind, and the raw JSON of the items that will be rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from flows.outcomes import Outcome, responses_frame, transcripts_of
from transforms.flatten import LANDED_HASH_FIELD, flatten_transcripts, raw_items_json
from transforms.metrics import TIME_ORDER, metric_tables
from transforms.pipeline import collect_tables, item_tables, rejected_keys
from transforms.schemas import RESPONSES, SORT_KEYS, conform
from transforms.text import TextPolicyName, apply_text_policy

RAW_JSON_SCHEMA = pl.Schema({"transcription_id": pl.String(), "item_index": pl.Int32(), "raw_item": pl.String()})


@dataclass(frozen=True)
class TextPolicy:
    """What the item tables keep of the text (transforms.text): `keep`, `drop`, or `hash` with its key."""

    name: TextPolicyName = "keep"
    key: bytes | None = field(default=None, repr=False)


KEEP_TEXT = TextPolicy()


@dataclass(frozen=True)
class Decoded:
    """One batch, decoded: `responses` (RESPONSES), `raw_items` (RAW_ITEMS_SCHEMA), `raw_json`."""

    responses: pl.DataFrame
    raw_items: pl.DataFrame
    raw_json: pl.DataFrame

    def with_outcomes(self, outcomes: list[Outcome]) -> Decoded:
        """This batch and these outcomes (of ids it does not hold: those it holds keep their rows)."""
        known = set(self.responses["transcription_id"].to_list())
        extra = decode_outcomes([o for o in outcomes if o.transcription_id not in known])
        return Decoded(
            pl.concat([self.responses, extra.responses]),
            pl.concat([self.raw_items, extra.raw_items]),
            pl.concat([self.raw_json, extra.raw_json]),
        )

    def only(self, ids: pl.Series) -> Decoded:
        """The part of the batch that belongs to these ids."""
        keep = pl.col("transcription_id").is_in(ids.implode())
        return Decoded(self.responses.filter(keep), self.raw_items.filter(keep), self.raw_json.filter(keep))


def decode_outcomes(outcomes: list[Outcome]) -> Decoded:
    """Outcomes decoded by Python (their transcripts as JSON values) -> Decoded."""
    transcripts = transcripts_of(outcomes)
    raw = flatten_transcripts(transcripts).collect()
    raw_json = raw_items_json(transcripts, rejected_keys(raw.lazy()).collect())
    return Decoded(conform(responses_frame(outcomes), RESPONSES).collect(), raw, raw_json)


assert SORT_KEYS["transcript_items"] == TIME_ORDER  # the metrics sweep reads the items table's order
TRANSFORM_CHUNK = 1000  # transcriptions per metrics pass (one sweep: about 200 B per item at the peak)


def build_tables(
    decoded: Decoded, *, chunk: int = TRANSFORM_CHUNK, text: TextPolicy = KEEP_TEXT
) -> dict[str, pl.DataFrame]:
    """The four tables of a decoded batch, sorted for writing, computed `chunk` transcriptions at a time,
    their text as the output's `text` policy says (applied after every metric is computed).

    The metrics' working memory is several times their input; chunking bounds it whatever the
    batch's size, so batches can be large (fewer tasks and commits) without memory growing.
    """
    ids = decoded.responses["transcription_id"]
    if ids.len() <= chunk:
        return _tables(decoded, text)
    parts = [_tables(decoded.only(ids.slice(start, chunk)), text) for start in range(0, ids.len(), chunk)]
    return {name: pl.concat([part[name] for part in parts]).sort(*SORT_KEYS[name]) for name in parts[0]}


def _tables(decoded: Decoded, text: TextPolicy) -> dict[str, pl.DataFrame]:
    items = collect_tables(item_tables(decoded.raw_items.lazy(), decoded.raw_json.lazy()))
    # sorted once: the items table's order is the time order the metrics sweep
    valid = items["transcript_items"].sort(*SORT_KEYS["transcript_items"])
    rejected = items["rejected_items"]
    responses = conform(decoded.responses.lazy(), RESPONSES)
    metrics = collect_tables(metric_tables(valid.lazy(), responses, rejected.lazy(), presorted=True))
    tables = {**metrics, "transcript_items": valid, "rejected_items": rejected}
    tables = apply_text_policy(tables, text.name, text.key, _landed_hashes(decoded) if text.name == "hash" else None)
    # cheap on the sorted items (a join of apply_text_policy need not keep their order)
    return {name: frame.sort(*SORT_KEYS[name]) for name, frame in tables.items()}


def _landed_hashes(decoded: Decoded) -> pl.DataFrame:
    """The hashes a webhook landing kept of the texts it replaced by their shape (transforms.text)."""
    return decoded.raw_items.filter(pl.col(f"{LANDED_HASH_FIELD}__kind") == "string").select(
        "transcription_id", "item_index", LANDED_HASH_FIELD
    )


def transform_outcomes(outcomes: list[Outcome], text: TextPolicy = KEEP_TEXT) -> dict[str, pl.DataFrame]:
    """The four tables for a batch of outcomes."""
    return build_tables(decode_outcomes(outcomes), text=text)
