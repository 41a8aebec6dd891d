"""Credentials for the two API deployments. Secrets enter here and never leave.

- Dialect A (2024-04-22): a server API key sent as a bearer token.
- Dialect B (2024-10-01+): OAuth2 client credentials with an RS256 JWT client assertion
  (see `oauth.py`), cached and renewed before it expires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # for annotations only: `talktime --help` need not import httpx2
    import httpx2


class Auth(Protocol):
    """Supplies the Authorization header; may be renewed once after a 401."""

    renewable: bool

    async def authorization(self, http: httpx2.AsyncClient) -> str:
        """The Authorization header value to send now."""
        ...

    async def renew(self, http: httpx2.AsyncClient, rejected: str) -> None:
        """Drop the cached credentials if they are still the `rejected` header's."""
        ...


class ApiKeyAuth:
    """A fixed server API key, sent as `Bearer <key>`; a 401 cannot be fixed by renewing."""

    renewable = False

    def __init__(self, api_key: str) -> None:
        self._header = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return "ApiKeyAuth(<redacted>)"

    async def authorization(self, http: httpx2.AsyncClient) -> str:
        return self._header

    async def renew(self, http: httpx2.AsyncClient, rejected: str) -> None:
        return None
