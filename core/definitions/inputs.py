"""Validate user-given inputs (and hold fields) against their declarations."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .names import did_you_mean
from .objects import InputSpec

SECRET_MASK = "***"
# Matching a value against an input's pattern may take this long (a pattern such as
# `^(a|aa)+$` backtracks for ever on a long enough value): past it the value is refused.
PATTERN_TIMEOUT_S = 0.1


class InputError(ValueError):
    """One clear line; `name` is the input or field it is about (a form shows it there)."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """Compile an input's `pattern:` with `regex` (it can stop a match that takes too long)."""
    import regex

    try:
        return regex.compile(pattern)
    except (regex.error, ValueError, TypeError, RecursionError, OverflowError) as e:
        raise ValueError(str(e) or type(e).__name__) from None


def coerce_one(spec: InputSpec, raw: Any) -> Any:
    """Turn a raw value (string from the command line, or YAML scalar) into the declared type.

    Errors never show a secret's value: it would land in a terminal, a CI log or history.
    """
    text = str(raw)
    shown = "the value" if spec.secret else f"'{text if len(text) <= 60 else text[:40] + '…'}'"
    if isinstance(raw, str):
        check_travels(raw)
    if spec.type == "int":
        if isinstance(raw, bool):
            raise ValueError(f"{shown} is not an integer")
        text = str(raw).strip()
        if len(text) > 20:  # 64-bit integers at most: never parse a thousand digits
            raise ValueError(f"{shown} is not an integer of at most 19 digits")
        try:
            value: Any = int(text)
        except ValueError:
            raise ValueError(f"{shown} is not an integer") from None
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{shown} is not an integer of at most 19 digits")
    elif spec.type == "bool":
        if isinstance(raw, bool):
            value = raw
        elif str(raw).lower() in ("true", "yes", "1", "on"):
            value = True
        elif str(raw).lower() in ("false", "no", "0", "off"):
            value = False
        else:
            raise ValueError(f"{shown} is not true or false")
    else:
        value = (
            raw
            if isinstance(raw, str)
            else ("true" if raw is True else "false" if raw is False else str(raw))
        )
    if spec.enum is not None:
        allowed = [coerce_enum(spec, e) for e in spec.enum]
        if value not in allowed:
            raise ValueError(f"{shown} is not one of {', '.join(str(a) for a in allowed)}")
    if spec.pattern is not None:
        try:
            matched = compile_pattern(spec.pattern).search(str(value), timeout=PATTERN_TIMEOUT_S)
        except TimeoutError:
            raise ValueError(
                f"matching {shown} against pattern {spec.pattern} took too long "
                f"(over {PATTERN_TIMEOUT_S:g}s); simplify the pattern"
            ) from None
        if not matched:
            raise ValueError(f"{shown} does not match pattern {spec.pattern}")
    return value


def check_travels(text: str) -> None:
    """A value reaches its command as an environment variable: it cannot hold a NUL, and must be
    text (an argument of bytes that are not UTF-8 arrives as lone surrogates)."""
    if "\0" in text:
        raise ValueError("contains a NUL character, which cannot travel in an environment variable")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains bytes that are not UTF-8 text") from None


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
    out: dict[str, Any] = {}
    for key in given:
        if key not in specs:
            known = ", ".join(specs) or "none"
            raise InputError(f"unknown {what} '{key}'{did_you_mean(key, specs)} (known: {known})", key)
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            try:
                out[name] = coerce_one(spec, given[name])
            except ValueError as e:
                raise InputError(f"{what} '{name}': {e}", name) from None
        elif spec.default is not None:
            out[name] = spec.default
        elif spec.required:
            raise InputError(
                f"missing required {what} '{name}' (pass --{'field' if what == 'field' else 'input'} {name}=VALUE)",
                name,
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
