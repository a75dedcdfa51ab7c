"""Third-party suites: packages register an env factory under the entry-point group `worldmodels.envs`.

In the package's pyproject.toml:

    [project.entry-points."worldmodels.envs"]
    their_suite = "their_sim.envs:make"

where `make(task: str, **kwargs) -> gymnasium.Env` returns the env as it is (a gymnasium.Env class works too, built as
`Class(**kwargs)`). After `pip install their-sim`, `env=their_suite env.id=<task>` works: `env.kwargs` go to the
factory, and observations, actions, action repeat, time limit and seeding are handled here as in the gym suite.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from typing import Any

import gymnasium

from worldmodels.envs.load import call_factory
from worldmodels.envs.spaces import DEFAULT_JOINT_ACTIONS, adapt
from worldmodels.envs.vector import adapt_vector
from worldmodels.envs.wrappers import first_line, wrap_common

DEFAULT_TASK = "default"


def config_node(suite: str) -> dict[str, Any]:
    """The config of `env=<suite>` for a third-party suite: the options make_plugin takes, with their defaults."""
    return {"suite": suite, "id": DEFAULT_TASK, "keys": ".*", "exclude": "", "joint_actions": DEFAULT_JOINT_ACTIONS,
            "action_repeat": 1, "time_limit": 0, "kwargs": None, "num_envs": 1, "vector": "auto"}


def load_plugin(entry: importlib.metadata.EntryPoint) -> Any:
    """The entry point's factory, with one line naming the suite and the package when it fails to load."""
    package = getattr(getattr(entry, "dist", None), "name", None) or "an installed package"
    try:
        return entry.load()
    except Exception as error:  # noqa: BLE001 - a broken plug-in is reported in one line naming it
        raise ValueError(
            f"environment suite {entry.name!r} ({entry.value!r}, from {package}) failed to load: "
            f"{type(error).__name__}: {first_line(error)}"
        ) from None


def make_plugin(
    suite: str,
    factory: Any,
    task: str = DEFAULT_TASK,
    keys: str = ".*",
    exclude: str = "",
    joint_actions: int = DEFAULT_JOINT_ACTIONS,
    action_repeat: int = 1,
    time_limit: int = 0,
    seed: int | None = None,
    kwargs: dict[str, Any] | None = None,
    **extra,
) -> gymnasium.Env:
    """`factory(task, **kwargs)` (a class: `Class(**kwargs)`) adapted to the agent's contract like the gym suite."""
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"kwargs={kwargs!r} is invalid: expected a mapping of constructor arguments")
    options = {**(kwargs or {}), **extra}
    build = factory if inspect.isclass(factory) else functools.partial(factory, task) if callable(factory) else factory
    env = call_factory(build, f"{suite} suite ({task})", options)
    if isinstance(env, gymnasium.vector.VectorEnv):  # already batched: used as it is (envs.vector)
        return adapt_vector(env, keys, exclude, joint_actions, action_repeat, time_limit, seed)
    env = adapt(env, keys, exclude, joint_actions)
    return wrap_common(env, action_repeat, time_limit, seed)
