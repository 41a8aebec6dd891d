"""Which Prefect server a CLI run will use, checked before the flow starts.

With PREFECT_API_URL set (in the environment or the current Prefect profile), a run reports to
that server: when nothing healthy answers there, the run stops at once with one line that names
the URL and what to do, instead of Prefect's error from deep inside its client. Without it, Prefect
starts a temporary server for the run, which takes tens of seconds: the CLI says so first.
"""

from __future__ import annotations

import ssl
import sys

import httpx

from flows.api.reply import network_cause
from flows.errors import ConfigurationError

HEALTH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TEMPORARY_SERVER_NOTICE = "talktime: starting a temporary Prefect server (set PREFECT_API_URL to use yours)"


def check_prefect_server(*, announce: bool = True) -> None:
    """Stop (ConfigurationError) when the configured Prefect API does not answer its health check;
    without one configured, say on stderr that a temporary server starts (when `announce`)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        if announce:
            print(TEMPORARY_SERVER_NOTICE, file=sys.stderr, flush=True)
        return
    problem = _health_problem(api.url, api.key.get_secret_value() if api.key else None, _verify(api))
    if problem:
        shown = shown_url(api.url)
        raise ConfigurationError(
            f"no Prefect server answers at PREFECT_API_URL={shown} ({problem}): start it "
            "(`prefect server start`), or unset PREFECT_API_URL (`prefect config unset PREFECT_API_URL`) "
            "to run on a temporary server"
        )


def _verify(api: object) -> bool | ssl.SSLContext:
    """TLS verification as Prefect's client does it (PREFECT_API_TLS_INSECURE_SKIP_VERIFY, …_SSL_CERT_FILE)."""
    if getattr(api, "tls_insecure_skip_verify", False):
        return False
    cert_file = getattr(api, "ssl_cert_file", None)
    return ssl.create_default_context(cafile=cert_file) if cert_file else True


def _health_problem(url: str, key: str | None, verify: bool | ssl.SSLContext) -> str | None:
    """Why `url`/health is not a healthy Prefect API (None when it is); never the key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(timeout=HEALTH_TIMEOUT, verify=verify, follow_redirects=False) as http:
            response = http.get(f"{url.rstrip('/')}/health", headers=headers)
    except httpx.TransportError as exc:
        return network_cause(exc, url)
    if response.status_code != 200:
        return f"its /health answered HTTP {response.status_code}; is it a Prefect API URL, ending in /api?"
    return None


def shown_url(url: str) -> str:
    """The URL without credentials, query or fragment (safe to print)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(an invalid URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def hide_refusals_on_console() -> None:
    """The flow's `talktime: error: …` line goes to the flow run's log only: the CLI prints it last."""
    from flows.pipeline import leave_refusals_to_the_caller

    leave_refusals_to_the_caller()
