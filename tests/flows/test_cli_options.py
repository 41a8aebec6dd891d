"""`talktime run` and `ingest` take their options from the settings models: each option is declared once.

A field added to RunSettings or IngestSettings gets its flag, with the field's description and
default as its help, or is marked deployment-only; a flag's value reaches its field; an option left
out takes the field's default (argparse holds none of its own).
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from flows.cli.commands import build_parser, ingest_settings, run_settings
from flows.cli.common import parse_duration
from flows.cli.options import DEPLOYMENT_ONLY
from flows.settings import IngestSettings, RunSettings

REQUIRED = {
    "run": ["--api-url", "http://127.0.0.1:9/v1", "--ids", "ids.txt", "--out", "out"],
    "ingest": ["--input", "a.ndjson", "--out", "out"],
}
MODELS: dict[str, type[BaseModel]] = {"run": RunSettings, "ingest": IngestSettings}
SETTINGS_OF = {"run": run_settings, "ingest": ingest_settings}


def options(command: str) -> dict[str, argparse.Action]:
    """The options of a sub-command, by destination."""
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices[command]._actions}


def settings(command: str, *argv: str) -> BaseModel:
    return SETTINGS_OF[command](build_parser().parse_args([command, *REQUIRED[command], *argv]))


@pytest.mark.parametrize("command", MODELS)
def test_every_settings_field_has_a_flag_or_is_deployment_only(command: str) -> None:
    fields, actions = set(MODELS[command].model_fields), options(command)
    assert not fields - DEPLOYMENT_ONLY - set(actions), "fields without a flag and not deployment-only"
    assert not DEPLOYMENT_ONLY & set(actions), "deployment-only fields with a flag"
    assert DEPLOYMENT_ONLY & fields, "nothing deployment-only: the check above checks nothing"


@pytest.mark.parametrize("command", MODELS)
def test_each_flag_takes_its_help_and_default_from_its_field(command: str) -> None:
    actions = options(command)
    for name, field in MODELS[command].model_fields.items():
        if name in DEPLOYMENT_ONLY:
            continue
        action = actions[name]
        assert action.default is argparse.SUPPRESS, f"{name}: argparse holds a default of its own"
        assert field.description and field.description in (action.help or "").replace("%%", "%"), name
        default = field.get_default()
        if field.is_required() or default is None or default == ():
            assert "default" not in (action.help or ""), name
        elif action.type is parse_duration:
            shown = (action.help or "").rsplit("default ", 1)[1].rstrip(")")
            assert parse_duration(shown) == default, name
        else:
            assert f"(default: {default})" in (action.help or ""), name


@pytest.mark.parametrize("command", MODELS)
def test_options_left_out_take_the_fields_defaults(command: str) -> None:
    given = settings(command)
    model = MODELS[command]
    required = {name: getattr(given, name) for name, field in model.model_fields.items() if field.is_required()}
    assert given == model(**required)


def _other_value(field_name: str, annotation: Any, default: Any) -> tuple[str, Any]:
    """A command-line text for the field and the value it must give, different from the default."""
    if field_name == "refetch":
        return "not_found,failed", ("not_found", "failed")
    if typing.get_origin(annotation) is Literal:
        choice = next(c for c in typing.get_args(annotation) if c != default)
        return choice, choice
    if annotation is int:
        return str(default + 1), default + 1
    if annotation in (float, float | None):
        return "0.05", 0.05
    return "tcp://127.0.0.1:1" if field_name == "dask_address" else "x-other", None


@pytest.mark.parametrize("command", MODELS)
def test_each_flag_sets_its_field(command: str) -> None:
    actions = options(command)
    model = MODELS[command]
    checked = 0
    for name, field in model.model_fields.items():
        if name in DEPLOYMENT_ONLY or field.is_required():
            continue
        flag = actions[name].option_strings[0]
        if field.annotation is bool:
            flag = next(s for s in actions[name].option_strings if s.startswith("--no-") == field.get_default())
            assert getattr(settings(command, flag), name) is not field.get_default(), name
        else:
            text, expected = _other_value(name, field.annotation, field.get_default())
            value = getattr(settings(command, flag, text), name)
            assert value == (text if expected is None else expected) != field.get_default(), name
        checked += 1
    assert checked >= (15 if command == "run" else 4)


def test_a_dask_address_implies_the_dask_runner() -> None:
    assert IngestSettings(inputs=["x"], out="o", dask_address="tcp://h:1").task_runner == "dask"
    assert settings("run", "--dask-address", "tcp://h:1").task_runner == "dask"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="dask_address is for task_runner dask"):
        IngestSettings(inputs=["x"], out="o", dask_address="tcp://h:1", task_runner="threads")


def test_every_fields_type_has_a_command_line_form() -> None:
    from flows.cli.options import Flag, add_settings_options

    class Odd(BaseModel):
        ratio: complex = 1j

    with pytest.raises(TypeError, match="no command-line form for the field ratio"):
        add_settings_options(argparse.ArgumentParser(), Odd, {}, frozenset())
    with pytest.raises(TypeError, match="has no field"):
        add_settings_options(argparse.ArgumentParser(), Odd, {"ratios": Flag()}, frozenset())
