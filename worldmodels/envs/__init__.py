"""Environments for the agent: every suite returns a Gymnasium Env with a Dict observation space and a normalised
action space (Discrete, or Box in [-1, 1]); see `check_env` for the full contract and `envs.spaces` for how any
Gymnasium space is put in that form.

Suites are found by name: the built-in ones below, then those third-party packages register under the Python
entry-point group `worldmodels.envs` (see envs.plugins), so `pip install their-sim` makes `env=their_suite` work.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

import gymnasium

__all__ = ["ENTRY_POINT_GROUP", "SUITES", "check_env", "make", "plugin_suites", "suite_names"]

# Backends are imported by name on demand, so a suite's heavy dependencies load only when it is used
# and adding a suite is one line here.
SUITES: dict[str, str] = {
    "dmc": "worldmodels.envs.dmc:make_dmc",
    "dummy": "worldmodels.envs.dummy:make_dummy",
    "gym": "worldmodels.envs.gym:make_gym",
}

# Entry-point group of third-party suites: `their_suite = "their_sim.envs:make"` in [project.entry-points."worldmodels.envs"].
ENTRY_POINT_GROUP = "worldmodels.envs"


def plugin_suites() -> dict[str, importlib.metadata.EntryPoint]:
    """Suites installed packages register under ENTRY_POINT_GROUP (name -> entry point, not loaded); built-in names win."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in SUITES and entry.name not in found:
            found[entry.name] = entry
    return found


def suite_names() -> list[str]:
    """Every suite name `make` knows: built-in and installed."""
    return sorted(set(SUITES) | set(plugin_suites()))


def make(suite: str, task: str, **options) -> gymnasium.Env:
    """Build `task` from `suite`; `options` go to the suite's factory (e.g. action_repeat, time_limit, seed)."""
    if suite in SUITES:
        module_name, _, function_name = SUITES[suite].partition(":")
        factory = getattr(importlib.import_module(module_name), function_name)
        return factory(task, **options)
    plugin = plugin_suites().get(suite)
    if plugin is None:
        raise ValueError(f"unknown environment suite {suite!r}; known suites: {', '.join(suite_names())}")
    from worldmodels.envs.plugins import load_plugin, make_plugin

    return make_plugin(suite, load_plugin(plugin), task, **options)


def __getattr__(name: str) -> Any:
    # envs.check is also the `python -m worldmodels.envs.check` program: imported on first use only, so running it does not
    # import it twice (runpy warns when the package has already imported the module it runs).
    if name == "check_env":
        from worldmodels.envs.check import check_env

        return check_env
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
