"""The kill -9 hook around `Store` (never in product code), and the choice of kill points.

Light on purpose: a driver process that only needs the hook (forget, compact) imports this and
`flows.storage`, not the ingest machinery of `tests.crash_driver`, so each killed process starts in
about a third of the time.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from flows.storage.store import Store

CRASH_ENV = "TALKTIME_CRASH_AFTER_OPS"
MUTATING = (
    *("write_bytes", "put_file", "move", "place", "delete", "delete_many", "delete_dir"),
    *("create_if_absent", "replace_if_match", "delete_if_match"),  # the writer's lease
)
_ops = 0
_lock = threading.Lock()


def _counted(method: Callable[..., Any], crash_at: int) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _ops
        with _lock:
            _ops += 1
            if crash_at and _ops >= crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return method(*args, **kwargs)

    return wrapper


def install_counter(crash_at: int = 0) -> None:
    """Count (and with `crash_at`, crash at) every mutating storage operation of this process."""
    for name in MUTATING:
        current = getattr(Store, name)
        original = getattr(current, "_uncounted", current)  # Store's own method (with its I/O error translation)
        setattr(Store, name, _counted(original, crash_at))
        getattr(Store, name)._uncounted = original


def operations() -> int:
    """Mutating storage operations counted in this process so far."""
    return _ops


def crash_at_from_environment() -> int:
    return int(os.environ.get(CRASH_ENV, "0") or 0)


Step = tuple[str, tuple[Any, ...]]  # a `Store` call: (method name, positional arguments)


def record_calls(patch: Any, names: Sequence[str], before: Callable[[Step], None] | None = None) -> list[Step]:
    """Every call of these `Store` methods from now on (until `patch`, a `pytest.MonkeyPatch`, is
    undone), in order, as (name, arguments); `before` sees each call before it runs."""
    calls: list[Step] = []

    def recording(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before((name, args))
            calls.append((name, args))
            return method(self, *args, **kwargs)

        return wrapper

    for name in names:
        patch.setattr(Store, name, recording(name, getattr(Store, name)))
    return calls


def step_kind(step: Step) -> tuple[str, str]:
    """What a storage step does and where: the method and the area of the path it changes (a data
    table, or the `_talktime/` entry: lease, staging, commits, ledger, erasures, runs, policy)."""
    name, args = step
    if name == "delete_many":
        paths = list(args[0]) if args else []
        path = str(paths[0]) if paths else ""
    elif name in ("move", "place", "put_file"):
        path = str(args[1])
    else:
        path = str(args[0]) if args else ""
    parts = path.split("/")
    if not path:
        area = "nothing"
    elif parts[0] == "_talktime":
        area = parts[1].removesuffix(".json") if len(parts) > 1 else "_talktime"
    else:
        area = "data"
    return name, area


def one_point_per_kind(steps: Sequence[Step], first: int = 1) -> list[int]:
    """Kill points (N = killed right before step N) from `first` on: the first step of each kind."""
    seen: set[tuple[str, str]] = set()
    points = []
    for number, step in enumerate(steps, 1):
        if number >= first and step_kind(step) not in seen:
            seen.add(step_kind(step))
            points.append(number)
    return points


def spread_points(total_ops: int, count: int, seed: str) -> list[int]:
    """`count` kill points in 1..total_ops, one drawn at random (seeded) in each of `count` equal stretches."""
    rng = random.Random(seed)
    count = min(count, total_ops)
    bounds = [1 + total_ops * k // count for k in range(count + 1)]
    return [rng.randrange(low, high) for low, high in itertools.pairwise(bounds)]
