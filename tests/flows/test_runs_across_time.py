"""`talktime run` over several runs: the ledger, resuming after the API was down, expiry."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer, load_responses
from tests.conftest import FLOW_TEST_MARKS, PRIMOCK

pytestmark = FLOW_TEST_MARKS


@pytest.fixture
def responses() -> dict[str, dict]:
    return dict(list(load_responses([PRIMOCK]).items())[:8])


def run(server: EmulatorServer, ids_file: Path, out: Path, *extra: str) -> int:
    return main(
        ["run", "--api-url", server.api_url, "--ids", str(ids_file), "--out", str(out), "--api-key", DEFAULT_API_KEY,
         "--batch-size", "3", "--max-wait", "0", *extra]
    )  # fmt: skip


def transcriptions(out: Path) -> pl.DataFrame:
    return pl.read_parquet(f"{out}/transcriptions/**/*.parquet")


def ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def test_the_same_manifest_again_fetches_nothing_and_changes_nothing(tmp_path: Path, responses: dict) -> None:
    manifest = ids_file(tmp_path, [*responses, "00000000-0000-4000-8000-000000000404"])
    with EmulatorServer(EmulatorConfig(responses=responses)) as server:
        assert run(server, manifest, tmp_path / "out") == 0
        first = transcriptions(tmp_path / "out").drop("fetched_at").sort("transcription_id")
        requests = sum(server.app.requests.values())
        assert run(server, manifest, tmp_path / "out") == 0
        assert sum(server.app.requests.values()) == requests
    assert transcriptions(tmp_path / "out").drop("fetched_at").sort("transcription_id").equals(first)


def test_ongoing_then_succeeded_in_a_later_run(tmp_path: Path, responses: dict) -> None:
    manifest = ids_file(tmp_path, list(responses))
    with EmulatorServer(EmulatorConfig(responses=responses, ongoing_polls=1)) as server:
        assert run(server, manifest, tmp_path / "out") == 0
        assert set(transcriptions(tmp_path / "out")["status"]) == {"ongoing"}
        assert run(server, manifest, tmp_path / "out") == 0
    final = transcriptions(tmp_path / "out")
    assert final.height == len(responses) and set(final["status"]) == {"succeeded"}
    assert pl.read_parquet(f"{tmp_path}/out/transcript_items/**/*.parquet")["transcription_id"].n_unique() == len(
        responses
    )


def test_api_down_stops_early_then_a_clean_resume(tmp_path: Path, responses: dict) -> None:
    manifest = ids_file(tmp_path, list(responses))
    config = EmulatorConfig(responses=responses, down=True)
    with EmulatorServer(config) as server:
        code = run(
            server, manifest, tmp_path / "out", "--max-attempts", "2", "--give-up-after", "0.3", "--concurrency", "1"
        )
        assert code == 1
        written = (
            transcriptions(tmp_path / "out") if list((tmp_path / "out").glob("transcriptions/**/*.parquet")) else None
        )
        assert written is None or set(written["status"]) <= {"error"}
        config.down = False
        assert run(server, manifest, tmp_path / "out") == 0
    final = transcriptions(tmp_path / "out")
    assert sorted(final["transcription_id"]) == sorted(responses)
    assert set(final["status"]) == {"succeeded"}


def test_ids_pending_too_long_expire(tmp_path: Path, responses: dict) -> None:
    manifest = ids_file(tmp_path, list(responses)[:2])
    with EmulatorServer(EmulatorConfig(responses=responses, ongoing_polls=1000)) as server:
        assert run(server, manifest, tmp_path / "out") == 0
        before = sum(server.app.requests.values())
        assert run(server, manifest, tmp_path / "out", "--expire-after", "0s") == 0
        assert sum(server.app.requests.values()) == before
    final = transcriptions(tmp_path / "out")
    assert final["status"].to_list() == ["expired", "expired"]
