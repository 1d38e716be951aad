"""Validate user-given inputs (and hold fields) against their declarations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .objects import InputSpec

SECRET_MASK = "***"


class InputError(ValueError):
    pass


def coerce_one(spec: InputSpec, raw: Any) -> Any:
    """Turn a raw value (string from the command line, or YAML scalar) into the declared type."""
    if spec.type == "int":
        if isinstance(raw, bool):
            raise ValueError(f"'{raw}' is not an integer")
        try:
            value: Any = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"'{raw}' is not an integer") from None
    elif spec.type == "bool":
        if isinstance(raw, bool):
            value = raw
        elif str(raw).lower() in ("true", "yes", "1", "on"):
            value = True
        elif str(raw).lower() in ("false", "no", "0", "off"):
            value = False
        else:
            raise ValueError(f"'{raw}' is not true or false")
    else:
        value = (
            raw
            if isinstance(raw, str)
            else ("true" if raw is True else "false" if raw is False else str(raw))
        )
    if spec.enum is not None:
        allowed = [coerce_enum(spec, e) for e in spec.enum]
        if value not in allowed:
            raise ValueError(f"'{raw}' is not one of {', '.join(str(a) for a in allowed)}")
    if spec.pattern is not None and not re.search(spec.pattern, str(value)):
        raise ValueError(f"'{raw}' does not match pattern {spec.pattern}")
    return value


def coerce_enum(spec: InputSpec, e: Any) -> Any:
    if spec.type == "int":
        try:
            return int(e)
        except (TypeError, ValueError):
            return e
    if spec.type == "bool":
        return e if isinstance(e, bool) else str(e).lower() == "true"
    return e if isinstance(e, str) else str(e)


def validate_inputs(
    specs: Mapping[str, InputSpec], given: Mapping[str, Any], what: str = "input"
) -> dict[str, Any]:
    """Validate given values, fill defaults; raises InputError with one clear line."""
    from .loader import did_you_mean

    out: dict[str, Any] = {}
    for key in given:
        if key not in specs:
            known = ", ".join(specs) or "none"
            raise InputError(f"unknown {what} '{key}'{did_you_mean(key, specs)} (known: {known})")
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            try:
                out[name] = coerce_one(spec, given[name])
            except ValueError as e:
                raise InputError(f"{what} '{name}': {e}") from None
        elif spec.default is not None:
            out[name] = spec.default
        elif spec.required:
            raise InputError(
                f"missing required {what} '{name}' (pass --{'field' if what == 'field' else 'input'} {name}=VALUE)"
            )
    return out


def parse_pairs(pairs: list[str] | None, flag: str = "--input") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} '{pair}' must look like KEY=VALUE")
        if key in out:
            raise InputError(f"{flag} '{key}' given twice")
        out[key] = value
    return out


def masked(specs: Mapping[str, InputSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (SECRET_MASK if k in specs and specs[k].secret else v) for k, v in values.items()}


def env_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)
