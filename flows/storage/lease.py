"""One writer per output location: a lease object, `_talktime/lease.json`, taken before writing.

The lease names its owner (host, pid, a random token, the run or flow-run name) and when it was
acquired and expires (`DEFAULT_LEASE_TTL` after its last renewal). Every talktime command that
writes (`run`, `ingest`, `compact`) takes it before anything else, recovers what a crashed writer
left only while holding it (so whatever it finds in staging was left by a dead writer), renews it
right before each commit and every `ttl / RENEWALS_PER_TTL` in between, and releases it at the
end, also after a failure. A second writer gets `LeaseHeldError` and changes nothing.

Every change of the lease is atomic against the version read just before (`flows.storage.store`):

- **acquire**: create-if-absent. S3: `PUT` with `If-None-Match: *`. Local disk: `link()` of a
  fully written, fsynced temporary file to `lease.json`, which fails if the name exists (like
  `O_CREAT | O_EXCL`, and a reader can never see a half-written lease). Two acquirers: one
  creates the object, the other's create fails and it reads the winner's lease.
- **take over** a lease that has expired, or whose owner is a process that is gone (same
  machine: same boot id and pid namespace, and that pid no longer exists or has another start
  time): compare-and-swap against the stale version read. S3: `PUT` with `If-Match: <etag>`.
  Local disk: under an exclusive `flock` of `_talktime/.lease.json.lock`, re-read `lease.json`,
  replace it (temporary file + rename) only if its content is still the stale version. Two
  takers of the same stale lease: the first swap wins; the second's precondition fails (S3: 412;
  disk: it holds the flock second, and reads the winner's lease), it reads the winner's fresh
  lease and gets `LeaseHeldError`. Renaming the stale file aside and then creating would not do:
  a slower taker could rename aside the *winner's* fresh lease. The flock only guards the few
  microseconds of a swap; the kernel drops it if its process dies, so a crash never leaves it.
- **renew**: compare-and-swap against this writer's own last version. If another writer took
  the lease over meanwhile (it had expired: this process was stalled), the swap fails and the
  writer stops with `LeaseLostError`, committing nothing more. A failed swap is first compared
  with what is stored: when the stored lease is this very renewal (same owner token, same
  expiry), the request had succeeded but its answer was lost and the retry was refused (S3:
  412), so the renewal stands.
- **release**: delete only if still this writer's own version (S3: `DELETE` with `If-Match`;
  disk: under the flock), so a writer never removes someone else's lease.

Limits, as for any lease: expiry compares the reader's clock to the owner's (clocks must agree
to well within the TTL), and a writer stalled for longer than the TTL between its check and its
commit record (a 10-minute freeze inside a sub-second step) could still overlap the next one;
storage offers no fencing token to rule that out. Filesystems other than local disk and S3 have
no conditional writes: writing there is refused rather than left unguarded.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from flows.errors import StorageError
from flows.storage.store import Store

LEASE_PATH = "_talktime/lease.json"
DEFAULT_LEASE_TTL = timedelta(minutes=10)
RENEWALS_PER_TTL = 4  # a live writer renews 4 times per TTL: 3 renewals can fail before it lapses
ACQUIRE_ATTEMPTS = 5  # when the lease changes under us that often, someone else is writing


class LeaseError(StorageError):
    """This process is not, or no longer, the output's one writer."""


class LeaseHeldError(LeaseError):
    """Another live writer holds the output location."""


class LeaseLostError(LeaseError):
    """This writer's lease expired and another writer took it over (or it was removed)."""


@dataclass(frozen=True)
class Owner:
    """Who holds a lease; `machine` and `started` tell whether that process still exists."""

    host: str
    pid: int
    token: str
    run: str
    machine: str | None = None
    started: str | None = None

    @classmethod
    def this_process(cls, run: str) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, uuid.uuid4().hex, run, _machine(), _start_time(pid))

    def is_gone(self) -> bool:
        """Whether this owner is a process of this machine that has ended (False when unsure)."""
        if self.machine is None or self.machine != _machine():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists, as another user
        started = _start_time(self.pid)
        return started is not None and started != self.started  # the pid was reused


@dataclass(frozen=True)
class LeaseRecord:
    """The content of `lease.json`."""

    owner: Owner
    acquired_at: datetime
    expires_at: datetime

    def to_json(self) -> bytes:
        times = {k: getattr(self, k).isoformat() for k in ("acquired_at", "expires_at")}
        return json.dumps({"owner": asdict(self.owner), **times}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LeaseRecord:
        raw = json.loads(data)
        at = datetime.fromisoformat
        return cls(Owner(**raw["owner"]), at(raw["acquired_at"]), at(raw["expires_at"]))

    def is_live(self, now: datetime) -> bool:
        """Whether its writer may still be writing: not expired, and not a process known to be gone."""
        return self.expires_at > now and not self.owner.is_gone()

    def describe(self) -> str:
        owner = self.owner
        return f"owner {owner.host}:{owner.pid}, run {owner.run}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """This process's claim to be the one writer of `store`'s output location."""

    def __init__(
        self, store: Store, run: str, *, ttl: timedelta = DEFAULT_LEASE_TTL, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.owner = Owner.this_process(run)
        self.record: LeaseRecord | None = None
        self.tag: str | None = None
        self.lost: LeaseLostError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.tag is not None and self.lost is None

    def acquire(self) -> LeaseRecord | None:
        """Become the writer (LeaseHeldError if another live writer is); the stale lease taken over, if any."""
        now = self.clock()
        record = LeaseRecord(self.owner, now, now + self.ttl)
        for _ in range(ACQUIRE_ATTEMPTS):
            tag = self.store.create_if_absent(LEASE_PATH, record.to_json())
            if tag is not None:
                self._hold(record, tag)
                return None
            current = self._read()
            if current is None:
                continue  # released in between: try to create it again
            (stale, stale_tag) = current
            if stale.owner.token == self.owner.token:  # our own create, answered late (a retried request)
                self._hold(stale, stale_tag)
                return None
            if stale.is_live(now):
                raise LeaseHeldError(self._held_message(stale))
            tag = self.store.replace_if_match(LEASE_PATH, record.to_json(), stale_tag)
            if tag is not None:
                self._hold(record, tag)
                return stale
        raise LeaseHeldError(f"could not take the lease on {self.store.location}: other writers kept changing it")

    def refuse_if_held(self) -> None:
        """LeaseHeldError if a live writer holds the output now, without taking the lease.

        A courtesy check before a run starts (one clean line, no flow run created); `acquire`
        is what enforces one writer.
        """
        current = self._read()
        if current is not None and current[0].is_live(self.clock()):
            raise LeaseHeldError(self._held_message(current[0]))

    def renew(self) -> None:
        """Check this writer still holds the lease and extend it by the TTL (LeaseLostError if not)."""
        with self._lock:
            if self.lost is not None:
                raise self.lost
            if self.record is None or self.tag is None:
                raise LeaseLostError(f"{self.store.location}: this process does not hold the writer's lease")
            record = replace(self.record, expires_at=self.clock() + self.ttl)
            tag = self.store.replace_if_match(LEASE_PATH, record.to_json(), self.tag)
            if tag is None:
                tag = self._own_write(record)
            if tag is None:
                self.lost = LeaseLostError(self._lost_message())
                raise self.lost
            self.record, self.tag = record, tag

    def _own_write(self, record: LeaseRecord) -> str | None:
        """After a failed swap: the lease's tag if what is stored is this very renewal (a request whose
        answer was lost, retried, and refused because the first attempt had already swapped), else None."""
        current = self._read()
        if current is None:
            return None
        stored, tag = current
        same = stored.owner.token == self.owner.token and stored.expires_at == record.expires_at
        return tag if same else None

    def release(self) -> None:
        """Give the lease up if this writer still holds it; never someone else's."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        with self._lock:
            if self.tag is not None and self.lost is None:
                self.store.delete_if_match(LEASE_PATH, self.tag)
            self.tag = None

    def keep_alive(self, interval_s: float | None = None) -> None:
        """Renew the lease in a background thread until it is released (or lost)."""
        interval = interval_s if interval_s is not None else self.ttl.total_seconds() / RENEWALS_PER_TTL
        self._renewer = threading.Thread(target=self._renew_until_stopped, args=(interval,), daemon=True)
        self._renewer.name = "talktime-lease"
        self._renewer.start()

    def __enter__(self) -> Lease:
        self.acquire()
        self.keep_alive()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def _renew_until_stopped(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.renew()
            except LeaseLostError:
                return  # the next commit's renew() raises it
            except (StorageError, OSError):
                continue  # unreachable storage for a moment: the lease lasts several intervals

    def _hold(self, record: LeaseRecord, tag: str) -> None:
        self.record, self.tag, self.lost = record, tag, None
        self._stop.clear()

    def _read(self) -> tuple[LeaseRecord, str] | None:
        current = self.store.read_tagged(LEASE_PATH)
        if current is None:
            return None
        try:
            return LeaseRecord.from_json(current[0]), current[1]
        except (ValueError, KeyError, TypeError):
            raise StorageError(
                f"unreadable writer's lease {self._lease_location()}; remove it if no talktime writer is running"
            ) from None

    def _held_message(self, other: LeaseRecord) -> str:
        until = other.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"another talktime writer holds {self.store.location} ({other.describe()}) until {until}; "
            f"wait for it or remove {self._lease_location()} if that writer is dead"
        )

    def _lost_message(self) -> str:
        try:
            current = self._read()
        except StorageError:
            current = None
        what = f"another writer took it over ({current[0].describe()})" if current else "its lease was removed"
        return f"this writer lost its lease on {self.store.location}: {what}; it commits nothing more"

    def _lease_location(self) -> str:
        return f"{self.store.location}/{LEASE_PATH}"


def _machine() -> str | None:
    """This boot of this machine and this pid namespace: where a pid names one process (Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None
