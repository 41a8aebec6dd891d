"""The response bodies one batch of `talktime run` holds, counted against its share of the memory budget.

A batch's `BatchBytes` counts the bodies it receives as they stream in (after decompression, as the
per-response cap counts them), and gives back the bytes of a body it does not keep (an error status,
an `ongoing` or `failed` answer, a body refused for its size, a transfer cut short). A request starts
only while the batch holds less than its `limit` (`RunSettings.batch_bytes`); after that, each id whose
turn comes is handed back (`deferred`) for a later batch, unanswered, never decoded.

Requests already under way when the limit is reached finish: at most `concurrency` of them, each at
most the per-response cap (`max_response_mb`, lowered to `limit`). So a batch keeps less than
`limit + concurrency × cap` bytes of bodies, and every batch that hands ids back has kept at least
one answer first (a run always moves on).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class BatchFullError(Exception):
    """Raised inside the client when a request would start in a batch already holding its limit.

    Control flow, never an API error: it is caught where the id's outcome would be collected, and
    the id is handed back.
    """


@dataclass
class BatchBytes:
    """The bytes of response bodies a batch holds now, its limit, and the ids it handed back."""

    limit: int
    held: int = 0
    peak: int = 0  # the most it held at once
    deferred: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        """True once the batch holds its limit: it starts no more requests."""
        return self.held >= self.limit

    def received(self, size: int) -> None:
        """Count `size` more bytes of a body streaming in."""
        self.held += size
        self.peak = max(self.peak, self.held)

    def released(self, size: int) -> None:
        """Give back the bytes of a body the batch does not keep."""
        self.held -= size

    def check_room(self) -> None:
        """BatchFullError when the batch holds its limit (before a request is sent)."""
        if self.full:
            raise BatchFullError
