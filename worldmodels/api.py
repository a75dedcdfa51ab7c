"""Training from Python (notebooks, scripts): `worldmodels.fit(env, overrides) -> run folder`.

    import worldmodels
    from examples.reach_arm import ReachArm

    run = worldmodels.fit(ReachArm, ["model=debug", "run.steps=500"])
    print(run / "metrics.jsonl")

It is named `fit`, not `train`, because `worldmodels.train` is the module that `python -m worldmodels.train` runs:
a function bound to that name in the package would be what `import worldmodels.train as m` gives (Python reads
`import a.b as m` as the attribute `b` of the package `a` once `a.b` is imported), breaking code that imports the
module that way. This module imports nothing heavy until `fit` is called, so `import worldmodels` stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["fit"]


def fit(env: str | Callable[..., Any] | None = None, overrides: Sequence[str] = (), *, name: str | None = None) -> Path:
    """Train (or resume, when `run.dir` holds a checkpoint) and return the run folder.

    env: a factory, i.e. a gymnasium.Env class or a function that returns a new env (called with `env.kwargs`, once
        for training, once for evaluation, again after an env failure); or a name the gym suite takes (a Gymnasium
        id, `module:EnvId`, `package.module:Class`); or None for the env the overrides pick (default CartPole-v1).
        Either way it goes through the gym suite: every `env.` option (keys, exclude, action_repeat, ...) applies.
    overrides: command-line overrides, as `python -m worldmodels.train` takes them (["model=debug", "run.steps=500"]).
    name: the env's name in the config and the run folder's name (default: the factory's name). A factory's env is
        only known to this process: rebuild it the same way (same name) to resume a run.
    Bad input raises worldmodels.runtime.errors.UserError with a one-line message, before anything is written.
    """
    from hydra import compose, initialize_config_dir

    from worldmodels.envs.load import register_factory
    from worldmodels.runtime.errors import UserError
    from worldmodels.runtime.setup import CONFIG_DIR, check_overrides, register_env_suites
    from worldmodels.train import train

    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"fit overrides must be a list of strings like 'run.steps=500', got {overrides!r}")
    overrides = list(overrides)
    if env is not None:
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key in ("env", "env.id", "env.suite"):
                raise UserError(f"fit(env=...) sets the environment itself: leave {override!r} out of the overrides")
        overrides = ["env=gym", *overrides]
        if isinstance(env, str):
            overrides.append(f"env.id='{env}'")
    register_env_suites()
    check_overrides(overrides)
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides)
    if env is None or isinstance(env, str):
        return train(cfg)
    import gymnasium

    if isinstance(env, gymnasium.Env) or not callable(env):
        kind = type(env).__name__
        raise UserError(
            f"fit needs a class or function that builds the env (training and evaluation each build their own), not "
            f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind} instance: pass the class, or e.g. `lambda: {kind}(...)`"
        )
    name = name or _factory_name(env)
    cfg.env.id = name
    with register_factory(name, env):
        return train(cfg)


def _factory_name(factory: Any) -> str:
    """A factory's name, fit for a folder name: the function's or class's name (`<lambda>` -> `lambda`)."""
    base = getattr(factory, "__name__", None) or type(factory).__name__
    return re.sub(r"[^A-Za-z0-9_.-]+", "", str(base)) or "env"
