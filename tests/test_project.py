"""Project-level guards: pinned versions that matter, deployments that match the flows."""

from __future__ import annotations

import importlib
import inspect
import typing
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_fastapi_is_a_version_prefects_server_works_with() -> None:
    # fastapi >= 0.155 breaks Prefect's server at import; 0.151-0.154 answer 422 to some of its calls.
    major, minor, *_ = (int(p) for p in version("fastapi").split("."))
    assert (major, minor) <= (0, 150)


def _deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_there_is_an_hourly_and_an_adhoc_deployment() -> None:
    by_name = {d["name"]: d for d in _deployments()}
    assert by_name["talktime-hourly"]["schedules"][0]["cron"].split()[1:] == ["*", "*", "*", "*"]
    assert "schedules" not in by_name["talktime-adhoc"]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_deployment_parameters_are_valid_settings(deployment: dict) -> None:
    path, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    (parameter,) = inspect.signature(flow.fn).parameters.values()
    assert set(deployment["parameters"]) == {parameter.name}
    settings = deployment["parameters"][parameter.name]
    model = typing.get_type_hints(flow.fn)[parameter.name]
    model.model_validate(settings)
    assert not any("key" in k and "secret" not in k for k in settings), "no credentials as parameters"
