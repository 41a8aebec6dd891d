"""Hostile responses: bodies that break a naive reader, and odd Retry-After headers.

Each must end as one outcome for its id (or be ignored), never abort the run, and never put
body content into a message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from flows.api.retry import MAX_RETRY_AFTER_S, RetryPolicy, parse_retry_after
from flows.decode import decode_polled
from flows.transform import build_tables
from tests.flows.api.test_client import TID, FakeClock, run, succeeded

SECRET_TEXT = "PATIENT-SECRET-TEXT"
DEEP = 5000
DIGITS = 5000


def deep_body(tid: str = TID) -> bytes:
    """A succeeded response with an unknown field nested far deeper than a recursive parser goes."""
    return (
        f'{{"id": "{tid}", "status": "succeeded", "payload": {{"transcript": [], '
        f'"note": "{SECRET_TEXT}", "x": {"[" * DEEP}{"]" * DEEP}}}}}'
    ).encode()


def huge_int_body(tid: str = TID) -> bytes:
    """A succeeded response with an integer longer than Python converts, in an item."""
    item = f'{{"text": "{SECRET_TEXT}", "speaker": "doctor", "start_time_ms": {"9" * DIGITS}, "end_time_ms": 5}}'
    return f'{{"id": "{tid}", "status": "succeeded", "payload": {{"transcript": [{item}]}}}}'.encode()


def deep_error_body() -> bytes:
    return f'{{"code": "gone", "message": "{SECRET_TEXT}", "x": {"[" * DEEP}{"]" * DEEP}}}'.encode()


def huge_int_error_body() -> bytes:
    return f'{{"code": {"7" * DIGITS}, "message": "{SECRET_TEXT}"}}'.encode()


FAST_RETRY = RetryPolicy(max_attempts=3)


# 1. Poison pills ------------------------------------------------------------------------------


def test_a_200_nested_too_deep_ends_as_malformed_response_after_retries() -> None:
    calls: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(200, content=deep_body())

    outcomes, down = run(handler, [TID], retry=FAST_RETRY)
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "malformed_response")]
    assert (len(calls), down) == (3, None)
    assert SECRET_TEXT not in (outcomes[0].error_message or "")


def test_a_200_with_a_huge_integer_is_read_and_keeps_its_body() -> None:
    outcomes, down = run(lambda r: httpx2.Response(200, content=huge_int_body()), [TID])
    assert [o.status for o in outcomes] == ["succeeded"] and down is None
    assert outcomes[0].body == huge_int_body()
    assert outcomes[0].items is not None and len(outcomes[0].items) == 1


@pytest.mark.parametrize(
    "body", [deep_error_body(), huge_int_error_body(), b"<html>", b""], ids=["deep", "huge_int", "html", "empty"]
)
def test_an_unreadable_404_body_still_counts_as_not_found(body: bytes) -> None:
    outcomes, _ = run(lambda r: httpx2.Response(404, content=body), [TID])
    assert [(o.status, o.error_code) for o in outcomes] == [("not_found", None)]


@pytest.mark.parametrize("body", [deep_error_body(), huge_int_error_body()], ids=["deep", "huge_int"])
def test_an_unreadable_400_body_is_its_error_row_without_a_code(body: bytes) -> None:
    outcomes, _ = run(lambda r: httpx2.Response(400, content=body), [TID])
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "http_400")]
    assert SECRET_TEXT not in (outcomes[0].error_message or "")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("invalid_api_version", "invalid_api_version"),
        (40001, "40001"),
        (True, "http_400"),
        ({"nested": "x"}, "http_400"),
        (["a"], "http_400"),
        (1.5, "http_400"),
        (None, "http_400"),
    ],
    ids=["str", "int", "bool", "object", "array", "float", "null"],
)
def test_only_a_string_or_integer_code_is_used(code: Any, expected: str) -> None:
    outcomes, _ = run(lambda r: httpx2.Response(400, json={"code": code, "message": "m"}), [TID])
    assert [(o.status, o.error_code) for o in outcomes] == [("error", expected)]


def test_an_unreadable_503_body_is_retried() -> None:
    answers = iter([httpx2.Response(503, content=deep_error_body()), httpx2.Response(200, json=succeeded())])
    outcomes, _ = run(lambda r: next(answers), [TID])
    assert [o.status for o in outcomes] == ["succeeded"]


def test_poison_bodies_are_not_an_outage() -> None:
    """Ids answering 200 with unreadable bodies for longer than down_after_s: the API is up."""
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]
    clock = FakeClock()
    outcomes, down = run(
        lambda r: httpx2.Response(200, content=deep_body(r.url.path.rsplit("/", 1)[1])),
        ids,
        clock,
        retry=FAST_RETRY,
        down_after_s=1.0,
        concurrency=1,
    )
    assert clock.now > 1.0, "the test must run past down_after_s"
    assert down is None
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "malformed_response")] * len(ids)


def test_one_poison_body_among_several_ids_leaves_the_others_whole() -> None:
    """Fetch, decode and build the tables of a batch in which two ids answer poison bodies."""
    good = [f"00000000-0000-4000-8000-{n:012d}" for n in range(4)]
    deep_id, huge_id = "00000000-0000-4000-8000-00000000dee9", "00000000-0000-4000-8000-0000000b16b1"
    item = {"text": "hello", "speaker": "doctor", "start_time_ms": 0, "end_time_ms": 1000}

    def handler(request: httpx2.Request) -> httpx2.Response:
        tid = request.url.path.rsplit("/", 1)[1]
        if tid == deep_id:
            return httpx2.Response(200, content=deep_body(tid))
        if tid == huge_id:
            return httpx2.Response(200, content=huge_int_body(tid))
        return httpx2.Response(200, json={"id": tid, "status": "succeeded", "payload": {"transcript": [item]}})

    outcomes, down = run(handler, [*good[:2], deep_id, huge_id, *good[2:]], retry=FAST_RETRY)
    assert down is None
    statuses = {o.transcription_id: (o.status, o.error_code) for o in outcomes}
    assert statuses == {
        **dict.fromkeys(good, ("succeeded", None)),
        deep_id: ("error", "malformed_response"),
        huge_id: ("succeeded", None),
    }
    tables = build_tables(decode_polled(outcomes, datetime.now(UTC)))
    items = tables["transcript_items"]
    assert sorted(items["transcription_id"].unique().to_list()) == sorted(good)
    rejected = tables["rejected_items"]
    assert rejected["transcription_id"].to_list() == [huge_id]


# 2. Retry-After ------------------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),
        ("²", None),
        ("٣", None),
        ("１２", None),
        ("-5", None),
        ("+5", None),
        ("1.5", None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        ("", None),
        ("soon", None),
        ("Thu, 01 Jan 99999 12:00:30 GMT", None),
        (None, None),
    ],
    ids=[
        "seconds",
        "padded",
        "zero",
        "future_date",
        "past_date",
        "superscript_two",
        "arabic_indic_three",
        "fullwidth_digits",
        "negative",
        "plus_sign",
        "fraction",
        "exponent",
        "inf",
        "nan",
        "empty",
        "word",
        "date_out_of_range",
        "absent",
    ],
)
def test_retry_after_counts_only_ascii_seconds_or_a_date(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize("digits", [400, 5000], ids=["beyond_float", "beyond_int_conversion"])
def test_an_absurd_retry_after_is_capped_not_an_overflow(digits: int) -> None:
    assert parse_retry_after("9" * digits, now=NOW) == MAX_RETRY_AFTER_S
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize(
    "header", ["\u00b2".encode(), "\u0663".encode(), b"soon"], ids=["superscript_two", "arabic_indic_three", "word"]
)
def test_a_429_with_an_unusable_retry_after_is_retried_on_backoff(header: bytes) -> None:
    answers = iter([httpx2.Response(429, headers=[(b"Retry-After", header)]), httpx2.Response(200, json=succeeded())])
    clock = FakeClock()
    outcomes, _ = run(lambda r: next(answers), [TID], clock)
    assert [o.status for o in outcomes] == ["succeeded"]
    assert len(clock.sleeps) == 1 and 0 < clock.sleeps[0] <= RetryPolicy().backoff_max_s


def test_a_429_asking_for_an_absurd_wait_is_an_error_row_not_a_crash() -> None:
    """A wait beyond max_retry_wait_s is not waited for: the id ends as retries_exhausted at once."""
    clock = FakeClock()
    outcomes, down = run(lambda r: httpx2.Response(429, headers={"Retry-After": "9" * 5000}), [TID], clock)
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "retries_exhausted")]
    assert (clock.sleeps, down) == ([], None)
