"""Talktime's own calls to Prefect's API (artifacts, progress), each bounded: when the API goes away, a
run warns once and goes on; it never waits on Prefect for long.

Prefect's client retries a failed request with a growing backoff (PREFECT_CLIENT_MAX_RETRIES, 2, 4,
8… s): against an API that was gone, one progress update took over a minute, once per batch, and
an artifact call that finally raised failed a run whose data was all committed. Here each call runs
in a thread of its own (with the caller's context, so an artifact still belongs to its flow run) and
is waited for at most CALL_DEADLINE_S; the first call that fails or does not answer in time marks
Prefect's API as unreachable for the rest of the process, and talktime makes no further call.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")
CALL_DEADLINE_S = 10.0
_unreachable: str | None = None
_lock = threading.Lock()


def prefect_unreachable() -> str | None:
    """Why Prefect's API was found unreachable by one of talktime's calls in this process, or None."""
    return _unreachable


def forget_unreachable() -> None:
    """Try Prefect's API again (a new run in the same process, tests)."""
    global _unreachable
    _unreachable = None


def call_prefect(what: str, call: Callable[[], T], log: Any = None, *, deadline_s: float = CALL_DEADLINE_S) -> T | None:
    """`call()` (a call to Prefect's API), waited for at most `deadline_s`; None when it failed, did not
    answer in time, or Prefect's API was already found unreachable (then it is not called at all).

    The first failure is logged once, as a warning, on `log` (a logger; by default `talktime`).
    """
    if _unreachable is not None:
        return None
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # reported by its type only, below
            outcome["error"] = exc

    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=f"talktime-{what}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        _mark_unreachable(f"{what}: no answer within {deadline_s:.0f} s", log)
        return None
    if "error" in outcome:
        _mark_unreachable(f"{what}: {type(outcome['error']).__name__}", log)
        return None
    return cast(T, outcome["value"])


def stop_retrying_prefect() -> None:
    """Prefect's client makes no more retries in this process (PREFECT_CLIENT_MAX_RETRIES 0 from now on).

    For the end of a run whose data is committed and whose report found Prefect's API unreachable:
    what is left (the flow run's final state, the log lines still queued) then fails at once instead
    of after the client's backoff, call after call.
    """
    from prefect.settings import get_current_settings

    get_current_settings().client.max_retries = 0


def _mark_unreachable(reason: str, log: Any) -> None:
    global _unreachable
    with _lock:
        first = _unreachable is None
        _unreachable = _unreachable or reason
    if first:
        (log or logging.getLogger("talktime")).warning(
            "Prefect's API did not answer (%s): no more artifacts or progress updates this run; "
            "the data is committed as usual",
            reason,
        )
