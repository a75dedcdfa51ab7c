"""Environments for the agent: every suite returns a Gymnasium Env with a Dict observation space
and a normalised action space (Discrete, or Box in [-1, 1]); see `check_env` for the full contract."""

from __future__ import annotations

import importlib

import gymnasium

from envs.check import check_env

__all__ = ["SUITES", "check_env", "make"]

# Backends are imported by name on demand, so a suite's heavy dependencies load only when it is used
# and adding a suite is one line here.
SUITES: dict[str, str] = {
    "dmc": "envs.dmc:make_dmc",
    "dummy": "envs.dummy:make_dummy",
    "gym": "envs.gym:make_gym",
}


def make(suite: str, task: str, **options) -> gymnasium.Env:
    """Build `task` from `suite`; `options` go to the suite's factory (e.g. action_repeat, time_limit, seed)."""
    if suite not in SUITES:
        raise ValueError(f"unknown environment suite {suite!r}; known suites: {', '.join(sorted(SUITES))}")
    module_name, _, function_name = SUITES[suite].partition(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory(task, **options)
