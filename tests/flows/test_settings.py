"""Settings refuse what must never be stored with a run's parameters."""

from __future__ import annotations

import pytest

from flows.cli import main
from flows.cli.commands import build_parser
from flows.settings import IngestSettings, RunSettings

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--api-url", "http://127.0.0.1:9", "--ids", "x", "--out", f"s3://AKIAEXAMPLE:{SECRET}@bucket/out"],
        ["run", "--api-url", f"https://talktime:{SECRET}@api.example.org", "--ids", "x", "--out", "x"],
        ["run", "--api-url", "http://127.0.0.1:9", "--ids", "x", "--out", f"s3://bucket/out?secret_key={SECRET}"],
        ["ingest", "--input", "x", "--out", f"s3://bucket/out?access_key=AKIAEXAMPLE&secret_key={SECRET}"],
        ["run", "--api-url", f"https://api.example.org/v1?api_key={SECRET}", "--ids", "x", "--out", "x"],
    ],
    ids=["s3-userinfo", "api-userinfo", "s3-query-secret", "ingest-s3-query", "api-query-key"],
)
def test_credentials_in_a_url_are_refused_without_echoing_them(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("talktime: error: invalid settings:") and "credentials" in err and err.count("\n") == 1
    assert SECRET not in err


def test_deployments_are_refused_too() -> None:
    with pytest.raises(ValueError, match="credentials"):
        IngestSettings(inputs=["x"], out=f"s3://AKIAEXAMPLE:{SECRET}@bucket/out")
    with pytest.raises(ValueError, match="credentials"):
        RunSettings(api_url=f"https://u:{SECRET}@h", ids_file="x", out="x")


@pytest.mark.parametrize(
    "out", ["s3://bucket/out?endpoint_override=127.0.0.1:9000&scheme=http", "/data/team@clinic/out", "data/output"]
)
def test_urls_and_paths_without_credentials_are_accepted(out: str) -> None:
    assert IngestSettings(inputs=["x"], out=out).out == out


def test_help_warns_that_a_key_on_the_command_line_is_visible(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "visible to other users of this machine" in help_text and "TALKTIME_API_KEY" in help_text
