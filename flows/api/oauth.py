"""OAuth2 client credentials with an RS256 JWT client assertion (dialect B, 2024-10-01+).

The assertion is signed by PyJWT (`iss` = `sub` = client id, `aud` = the token URL, a 60 s
`exp`); the access token is cached and renewed shortly before `expires_in` runs out, or once
after a 401. The private key and the tokens never appear in logs or exception messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx2
import jwt

from flows.errors import AuthenticationError, TransientApiError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 60
RENEW_MARGIN_S = 60.0


class OAuthClientCredentials:
    """Obtains, caches and renews access tokens from `{api_url}/oauth/token`."""

    renewable = True

    def __init__(
        self, api_url: str, client_id: str, private_key_pem: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.token_url = f"{api_url.rstrip('/')}/oauth/token"
        self._client_id = client_id
        self._private_key = private_key_pem
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"OAuthClientCredentials(client_id={self._client_id!r}, key=<redacted>)"

    def client_assertion(self) -> str:
        """A freshly signed RS256 JWT asserting this client's identity to the token URL."""
        now = int(time.time())  # claims use wall-clock time; the token cache uses `clock`
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._private_key, algorithm="RS256")

    async def authorization(self, http: httpx2.AsyncClient) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                await self._fetch_token(http)
            return f"Bearer {self._token}"

    async def renew(self, http: httpx2.AsyncClient, rejected: str) -> None:
        async with self._lock:
            if rejected == f"Bearer {self._token}":  # not already renewed by a concurrent request
                self._token = None

    async def _fetch_token(self, http: httpx2.AsyncClient) -> None:
        body = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
        body["client_assertion"] = self.client_assertion()
        try:
            response = await http.post(self.token_url, json=body)
        except httpx2.TransportError as exc:
            raise TransientApiError(f"token endpoint unreachable ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientApiError(
                f"token endpoint answered HTTP {response.status_code}", status_code=response.status_code
            )
        if response.status_code != 200:
            raise AuthenticationError(
                f"the token endpoint refused the client assertion (HTTP {response.status_code}): check the OAuth"
                " client id, that its public key is registered, and the machine's clock",
                status_code=response.status_code,
            )
        self._store(response)

    def _store(self, response: httpx2.Response) -> None:
        try:
            payload = response.json()
            token, expires_in = str(payload["access_token"]), float(payload["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise AuthenticationError("the token endpoint answered without access_token/expires_in") from None
        self._token = token
        self._renew_at = self._clock() + expires_in - min(RENEW_MARGIN_S, expires_in / 2)
        self.tokens_fetched += 1
