"""The emulator's OAuth token endpoint: verifies RS256 client assertions, issues short-lived tokens."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from flows.api.oauth import ASSERTION_TYPE

TOKEN_PATH_SUFFIX = "/v1/core/server/oauth/token"


@dataclass
class OAuthServer:
    """Accepts assertions signed by `public_key_pem` for `client_id`.

    Tokens live `token_ttl_s` on the server; `advertised_ttl_s` (default the same) is what the
    client is told, so a test can make tokens die before the client expects (-> 401 -> renew).
    """

    client_id: str
    public_key_pem: str
    token_ttl_s: float = 3600.0
    advertised_ttl_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    tokens: dict[str, float] = field(default_factory=dict)
    issued: int = 0

    def token_response(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for a POST to the token endpoint."""
        try:
            request = json.loads(body)
            assertion = request["client_assertion"]
            valid_shape = request.get("grant_type") == "client_credentials"
            valid_shape = valid_shape and request.get("client_assertion_type") == ASSERTION_TYPE
        except (ValueError, KeyError, TypeError):
            return 400, {"code": "invalid_request", "message": "malformed token request"}
        if not valid_shape or not self._assertion_is_valid(assertion):
            return 401, {"code": "invalid_client", "message": "client assertion rejected"}
        token = secrets.token_urlsafe(24)
        self.tokens[token] = self.clock() + self.token_ttl_s
        self.issued += 1
        return 200, {"access_token": token, "expires_in": self.advertised_ttl_s or self.token_ttl_s}

    def _assertion_is_valid(self, assertion: str) -> bool:
        try:
            claims = jwt.decode(
                assertion,
                self.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            return False
        audience_ok = isinstance(claims["aud"], str) and claims["aud"].endswith(TOKEN_PATH_SUFFIX)
        return claims["iss"] == claims["sub"] == self.client_id and audience_ok

    def accepts(self, header: str) -> bool:
        """Whether an Authorization header carries a live token."""
        token = header.removeprefix("Bearer ")
        expires = self.tokens.get(token)
        return expires is not None and self.clock() < expires

    def revoke_all(self) -> None:
        """Invalidate every token issued so far."""
        self.tokens.clear()
