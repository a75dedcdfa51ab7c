"""Rules for option values, each written once: the config validation (runtime/config.py) and the constructors that
take the options (dynamics backends, objectives) call the same function.

A rule returns the value or raises a one-line ValueError `<key>=<value> is invalid: <why>`; runtime/config.py turns
it into `config value ...`, a UserError (exit status 2). Configs arrive as YAML, so types are checked too: True is
not an integer, "3" is not a number.
"""

from __future__ import annotations

import importlib
from typing import Any

INF = float("inf")


def invalid(key: str, value: Any, why: str) -> ValueError:
    """The error of a rule: `raise invalid("dynamics.heads", 3, "must divide dynamics.d_model=32")`."""
    return ValueError(f"{key}={value!r} is invalid: {why}")


def integer(key: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(key, value, f"expected an integer >= {low}")
    return value


def number(key: str, value: Any, low: float = 0.0, high: float = INF, strict: bool = False) -> float:
    """A number >= low (> low when `strict`) and <= high."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and (value > low if strict else value >= low) and value <= high):
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high != INF else "")
        raise invalid(key, value, f"expected a number {bound}")
    return value


def choice(key: str, value: Any, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise invalid(key, value, f"expected one of {', '.join(choices)}")
    return value


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(key, value, "expected true or false")
    return value


def load_class(key: str, path: str) -> type:
    """The class named by `package.module:Class`, imported on first use (dreamerv3's 'module:Class' tables)."""
    module, sep, name = str(path).partition(":")
    if not (sep and module and name):
        raise invalid(key, path, "expected package.module:Class")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise invalid(key, path, f"cannot import it ({reason})") from None
    if not isinstance(found, type):
        raise invalid(key, path, f"{name} is a {type(found).__name__}, not a class")
    return found
