"""Command-line options built from the settings models: a run option is declared once, as a field.

Each field of `RunSettings` / `IngestSettings` becomes an option named after it (`batch_size` ->
`--batch-size`) with the field's type, and its description and default as the help. A command's
table of `Flag`s says only where the command line differs: another name (`ids_file` -> `--ids`),
a parser (durations such as `90m`), a metavar, a help group. Fields a command line does not set
(names of Secret blocks) are listed as deployment-only. An option left out is left out of the
parsed arguments too, so the model fills in its default: argparse holds no default of its own.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flows.cli.common import parse_duration, settings_error

Settings = TypeVar("Settings", bound=BaseModel)
# Names of Secret blocks: a deployment's choice; a command line gives the secret by the environment
# (or uses the block of the default name).
DEPLOYMENT_ONLY = frozenset({"api_key_secret", "private_key_secret", "storage_secret_prefix", "text_key_secret"})


@dataclass(frozen=True)
class Flag:
    """How a settings field differs on the command line; nothing here repeats the field."""

    name: str | None = None  # when it is not --field-name
    parse: Callable[[str], Any] | None = None  # when the field's own type cannot parse the text
    metavar: str | None = None  # when the flag's name in capitals is not telling
    examples: str | None = None  # durations: how to write one, e.g. "90m, 24h, 2d"
    group: str | None = None  # a help section of its own


def duration(examples: str, name: str | None = None, **more: Any) -> Flag:
    """A field in seconds that the command line also takes as 90s, 5m, 24h or 2d."""
    return Flag(name=name, parse=parse_duration, examples=examples, **more)


def flag_name(field: str, flags: Mapping[str, Flag]) -> str:
    """The option of a settings field: `--field-name` unless its Flag names another."""
    spec = flags.get(field, Flag())
    return spec.name or "--" + field.replace("_", "-")


def add_settings_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], flags: Mapping[str, Flag], deployment_only: frozenset[str]
) -> None:
    """One option per field of `model` not in `deployment_only`: required ones first; the model's own fields
    before those it inherits; otherwise in the order the model declares them."""
    unknown = set(flags) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no field {sorted(unknown)}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    fields = [(n, f) for n, f in model.model_fields.items() if n not in deployment_only]
    inherited = {name for base in model.__mro__[1:] for name in getattr(base, "__pydantic_fields__", {})}
    for name, field in sorted(fields, key=lambda item: (not item[1].is_required(), item[0] in inherited)):
        spec = flags.get(name, Flag())
        target = groups.setdefault(spec.group, parser.add_argument_group(spec.group)) if spec.group else parser
        target.add_argument(flag_name(name, flags), dest=name, **_argument(name, field, spec))


def _argument(name: str, field: FieldInfo, spec: Flag) -> dict[str, Any]:
    """add_argument's keywords for one field: its type, its help with the default, and no default of argparse's."""
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": field_help(field, spec)}
    if field.is_required():
        kwargs["required"] = True
    annotation = _without_none(field.annotation)
    if annotation is bool:
        return kwargs | {"action": argparse.BooleanOptionalAction}
    metavar = spec.metavar or (spec.name or "--" + name.replace("_", "-")).lstrip("-").replace("-", "_").upper()
    if spec.parse is not None:
        return kwargs | {"type": spec.parse, "metavar": metavar}
    if typing.get_origin(annotation) is Literal:
        return kwargs | {"choices": list(typing.get_args(annotation))}
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return kwargs | {"nargs": "+", "metavar": metavar}
    if annotation in (int, float, str):
        return kwargs | {"type": annotation, "metavar": metavar}
    raise TypeError(f"no command-line form for the field {name} ({field.annotation}): give it a Flag(parse=...)")


def _without_none(annotation: Any) -> Any:
    """X for `X | None`, else the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def field_help(field: FieldInfo, spec: Flag) -> str:
    """The field's description, then its default (a duration as 24h); '%' escaped for argparse."""
    text = (field.description or "").replace("%", "%%")
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if spec.examples:
        shown = f"; default {shown_duration(default)}" if default is not None else ""
        return f"{text} (seconds, or e.g. {spec.examples}{shown})"
    if default is None or default in ((), []):
        return text
    return f"{text} (default: {default})"


def shown_duration(seconds: float) -> str:
    """Seconds as the command line writes them: in the largest of h, m, s that divides them evenly."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def settings_from(model: type[Settings], args: argparse.Namespace) -> Settings:
    """The settings from the options given (the model's defaults for the others); one line if invalid."""
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    return build_settings(model, given)


def build_settings(model: type[Settings], values: Mapping[str, Any]) -> Settings:
    """`model(**values)`, a ConfigurationError naming each invalid field (never its value) if invalid."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise settings_error(exc) from None
