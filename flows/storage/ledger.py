"""The ledger: each id's state across runs, stored beside the datasets (`_talktime/ledger.parquet`).

It records when an id was first seen and last polled, how often it was polled, its latest status,
whether that status is final, and which batch's files hold its rows. A run skips final ids,
re-polls `ongoing` and `error` ones, and turns ids pending longer than `expire_after` into
`expired`. Rows are only (re)written when an id's status changes, so running the same manifest
again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from flows.outcomes import Outcome
from flows.storage.store import Store
from transforms.schemas import UTC_TIMESTAMP

LEDGER_PATH = "_talktime/ledger.parquet"
FINAL_STATUSES = ("succeeded", "failed", "not_found", "expired")
NEVER_SENT = "invalid_id"  # an error that no retry can change
DEFAULT_EXPIRE_AFTER = timedelta(hours=24)

LEDGER_SCHEMA = pl.Schema(
    {
        "transcription_id": pl.String(),
        "status": pl.String(),
        "final": pl.Boolean(),
        "first_seen_at": UTC_TIMESTAMP,
        "last_polled_at": UTC_TIMESTAMP,
        "attempts": pl.Int32(),
        "batch_id": pl.String(),
        "fetched_date": pl.String(),
    }
)


def final_expr() -> pl.Expr:
    """`is_final` over a frame with `status` and `error_code`."""
    return pl.col("status").is_in(FINAL_STATUSES) | (pl.col("error_code") == NEVER_SENT).fill_null(False)


def is_final(outcome: Outcome) -> bool:
    """Whether no later poll can change this outcome."""
    return outcome.status in FINAL_STATUSES or outcome.error_code == NEVER_SENT


def load_ledger(store: Store) -> pl.DataFrame:
    """The ledger (empty when the output location is new)."""
    if not store.exists(LEDGER_PATH):
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    return pl.DataFrame(store.read_parquet(LEDGER_PATH)).cast(dict(LEDGER_SCHEMA))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    """What a run will do with its manifest."""

    to_fetch: list[str]
    expired: list[Outcome]
    already_final: int


def plan_run(ledger: pl.DataFrame, ids: list[str], now: datetime, expire_after: timedelta) -> Plan:
    """Skip final ids, expire ids pending too long, fetch the rest (manifest order kept)."""
    manifest = pl.DataFrame({"transcription_id": ids}, schema={"transcription_id": pl.String()})
    known = manifest.join(ledger, on="transcription_id", how="left", maintain_order="left")
    final = pl.col("final").fill_null(False)
    expired = ~final & (pl.col("first_seen_at") < now - expire_after).fill_null(False)
    expired_rows = known.filter(expired).select("transcription_id", "status").iter_rows()
    return Plan(
        to_fetch=known.filter(~final & ~expired)["transcription_id"].to_list(),
        expired=[
            Outcome(
                tid,
                "expired",
                now,
                error_code="expired",
                error_message=f"still {status} {expire_after} after it was first requested",
            )
            for tid, status in expired_rows
        ],
        already_final=known.filter(final).height,
    )


POLLED_SCHEMA = pl.Schema(
    {"transcription_id": pl.String(), "status": pl.String(), "final": pl.Boolean(), "written": pl.Boolean()}
)


def polled_frame(outcomes: list[Outcome], written: set[str]) -> pl.DataFrame:
    """What a batch learnt of each polled id: status, whether final, whether its rows are (re)written."""
    return pl.DataFrame(
        {
            "transcription_id": [o.transcription_id for o in outcomes],
            "status": [o.status for o in outcomes],
            "final": [is_final(o) for o in outcomes],
            "written": [o.transcription_id in written for o in outcomes],
        },
        schema=POLLED_SCHEMA,
    )


def superseded(ledger: pl.DataFrame, ids: pl.Series) -> dict[tuple[str, str], set[str]]:
    """(batch_id, fetched_date) of the files holding earlier rows of these ids -> those ids."""
    earlier = ledger.filter(pl.col("transcription_id").is_in(ids.implode()) & pl.col("batch_id").is_not_null())
    found: dict[tuple[str, str], set[str]] = {}
    for tid, batch, date in earlier.select("transcription_id", "batch_id", "fetched_date").iter_rows():
        found.setdefault((batch, date), set()).add(tid)
    return found


def updated_ledger(
    ledger: pl.DataFrame, polled: pl.DataFrame, batch_id: str, fetched_date: str, now: datetime
) -> pl.DataFrame:
    """The ledger after a batch (`polled`: POLLED_SCHEMA): every polled id's state, and where the
    written ones' rows are."""
    update = polled.select(
        "transcription_id",
        "status",
        "final",
        pl.lit(now, UTC_TIMESTAMP).alias("last_polled_at"),
        pl.when(pl.col("written")).then(pl.lit(batch_id)).otherwise(pl.lit(None, pl.String)).alias("new_batch_id"),
    )
    merged = ledger.join(update, on="transcription_id", how="full", coalesce=True, suffix="_new")
    written_now = pl.col("new_batch_id").is_not_null()
    result = merged.with_columns(
        pl.coalesce("status_new", "status").alias("status"),
        pl.coalesce("final_new", "final").alias("final"),
        pl.coalesce("first_seen_at", pl.lit(now, UTC_TIMESTAMP)).alias("first_seen_at"),
        pl.coalesce("last_polled_at_new", "last_polled_at").alias("last_polled_at"),
        (pl.col("attempts").fill_null(0) + pl.col("status_new").is_not_null().cast(pl.Int32)).alias("attempts"),
        pl.when(written_now).then(pl.col("new_batch_id")).otherwise(pl.col("batch_id")).alias("batch_id"),
        pl.when(written_now).then(pl.lit(fetched_date)).otherwise(pl.col("fetched_date")).alias("fetched_date"),
    )
    return result.select(LEDGER_SCHEMA.names()).cast(dict(LEDGER_SCHEMA)).sort("transcription_id")  # type: ignore[arg-type]
