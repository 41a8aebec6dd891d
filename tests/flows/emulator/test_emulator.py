"""The emulator as a real HTTP server on loopback."""

from __future__ import annotations

import httpx
import pytest

from flows.emulator.app import DEFAULT_API_KEY, PREFIX_A, PREFIX_B, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from flows.emulator.synthetic import MAX_ITEMS, MIN_ITEMS, synthetic_responses
from tests.conftest import PRIMOCK

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}


@pytest.fixture(scope="module")
def responses() -> dict[str, dict]:
    return load_responses([PRIMOCK]) | synthetic_responses(3, seed=7)


@pytest.fixture(scope="module")
def server(responses: dict[str, dict]):
    with EmulatorServer(EmulatorConfig(responses=responses)) as s:
        yield s


def get(server: EmulatorServer, path: str, **kw) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=10, **kw)


def test_dialect_a_serves_the_stored_response(server: EmulatorServer, responses: dict[str, dict]) -> None:
    tid = next(iter(responses))
    body = get(server, f"{PREFIX_A}/transcribe-async/{tid.upper()}", headers=AUTH).json()
    assert body == responses[tid]
    assert body["status"] == "succeeded" and "speaker" in body["payload"]["transcript"][0]


def test_dialect_b_by_prefix_and_by_header(server: EmulatorServer, responses: dict[str, dict]) -> None:
    tid = next(iter(responses))
    by_prefix = get(server, f"{PREFIX_B}/transcribe-async/{tid}", headers=AUTH).json()
    by_header = get(
        server, f"{PREFIX_A}/transcribe-async/{tid}", headers=AUTH | {"X-Nabla-Api-Version": "2024-10-01"}
    ).json()
    assert by_prefix == by_header
    first = by_prefix["payload"]["transcript"][0]
    assert by_prefix["status"] == "SUCCEEDED"
    assert {"speaker_type", "start_offset_ms", "end_offset_ms"} <= set(first) and first["speaker_type"].isupper()
    back = get(server, f"{PREFIX_B}/transcribe-async/{tid}?nabla-api-version=2024-04-22", headers=AUTH).json()
    assert back == responses[tid]


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (f"{PREFIX_A}/transcribe-async/{'0' * 8}-0000-4000-8000-{'0' * 12}", {}, 401, "unauthorized"),
        (
            f"{PREFIX_A}/transcribe-async/{'0' * 8}-0000-4000-8000-{'0' * 12}",
            {"Authorization": "Bearer no"},
            401,
            "unauthorized",
        ),
        (f"{PREFIX_A}/transcribe-async/{'0' * 8}-0000-4000-8000-{'0' * 12}", AUTH, 404, "not_found"),
        (f"{PREFIX_A}/transcribe-async/not-a-uuid", AUTH, 400, "invalid_id"),
        (
            f"{PREFIX_A}/transcribe-async/{'0' * 8}-0000-4000-8000-{'0' * 12}",
            AUTH | {"X-Nabla-Api-Version": "1999-01-01"},
            400,
            "invalid_api_version",
        ),
    ],
    ids=["no_key", "wrong_key", "unknown_id", "not_uuid", "unknown_version"],
)
def test_errors(server: EmulatorServer, path: str, headers: dict, status: int, code: str) -> None:
    response = get(server, path, headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_synthetic_transcripts_are_realistic() -> None:
    for response in synthetic_responses(5, seed=3).values():
        items = response["payload"]["transcript"]
        assert MIN_ITEMS <= len(items) <= MAX_ITEMS
        speakers = [i["speaker"] for i in items]
        assert {"doctor", "patient"} <= set(speakers)
        ends = [i["end_time_ms"] for i in items]
        assert all(i["start_time_ms"] < i["end_time_ms"] < 3_600_000 for i in items)
        assert any(b["start_time_ms"] < a_end for a_end, b in zip(ends, items[1:], strict=False)), "some overlap"
    assert synthetic_responses(2, seed=3) == synthetic_responses(2, seed=3)


def test_results_stay_ongoing_for_n_polls(responses: dict[str, dict]) -> None:
    tid = next(iter(responses))
    with EmulatorServer(EmulatorConfig(responses=responses, ongoing_polls=2)) as s:
        statuses = [get(s, f"{PREFIX_A}/transcribe-async/{tid}", headers=AUTH).json()["status"] for _ in range(3)]
    assert statuses == ["ongoing", "ongoing", "succeeded"]


def test_faults_are_deterministic_under_a_seed(responses: dict[str, dict]) -> None:
    faults = Faults(rate_limited=0.2, server_error=0.2, not_json=0.2, retry_after="3")

    def statuses(seed: int) -> list[int]:
        with EmulatorServer(EmulatorConfig(responses=responses, faults=faults, seed=seed)) as s:
            return [
                get(s, f"{PREFIX_A}/transcribe-async/{tid}", headers=AUTH).status_code
                for tid in list(responses)[:15]
                for _ in range(2)
            ]

    first = statuses(1)
    assert first == statuses(1)
    assert first != statuses(2)
    assert {200, 429, 500} <= set(first)


def test_dropped_connection_and_stall_are_real(responses: dict[str, dict]) -> None:
    tid = next(iter(responses))
    dropping = EmulatorServer(EmulatorConfig(responses=responses, faults=Faults(drop=1.0)))
    with dropping as s, pytest.raises(httpx.RemoteProtocolError):
        get(s, f"{PREFIX_A}/transcribe-async/{tid}", headers=AUTH)
    stalling = EmulatorServer(EmulatorConfig(responses=responses, faults=Faults(stall=1.0, stall_s=5)))
    with stalling as s, pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{s.api_url}/transcribe-async/{tid}", headers=AUTH, timeout=0.3)


def test_a_share_of_ids_stays_ongoing_for_ever(responses: dict[str, dict]) -> None:
    config = EmulatorConfig(responses=responses, ongoing_forever=0.5, seed=3)
    with EmulatorServer(config) as s:
        url = f"{PREFIX_A}/transcribe-async/"
        statuses = {t: [get(s, url + t, headers=AUTH).json()["status"] for _ in range(3)] for t in list(responses)[:20]}
    stuck = [tid for tid, seen in statuses.items() if seen == ["ongoing"] * 3]
    assert 3 <= len(stuck) <= 17
    assert all(seen == ["succeeded"] * 3 for tid, seen in statuses.items() if tid not in stuck)


def test_stored_records_are_served_byte_for_byte_from_their_files(tmp_path) -> None:
    from flows.emulator.server import index_records

    ids = ["00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"]
    lines = [
        b'{"id": "%s", "status": "succeeded",   "pad": "%s"}' % (tid.upper().encode(), pad)
        for tid, pad in zip(ids, [b"x" * 10, b"y" * 100_000], strict=True)
    ]
    (tmp_path / "big.ndjson").write_bytes(b"\n".join(lines) + b"\n\n")
    (tmp_path / "one.json").write_bytes(b'{"status": "succeeded", "id": "%s"}' % ids[0].encode())  # the later file wins
    stored = index_records([tmp_path / "big.ndjson", tmp_path / "one.json"])
    assert sorted(stored) == ids
    with EmulatorServer(EmulatorConfig(stored=stored)) as s:
        first = get(s, f"{PREFIX_A}/transcribe-async/{ids[0]}", headers=AUTH)
        second = get(s, f"{PREFIX_A}/transcribe-async/{ids[1]}", headers=AUTH)
        unknown = get(s, f"{PREFIX_A}/transcribe-async/{ids[1][:-1]}c", headers=AUTH)
    assert first.content == (tmp_path / "one.json").read_bytes()
    assert (second.status_code, second.content) == (200, lines[1])
    assert unknown.status_code == 404
