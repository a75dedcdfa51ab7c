"""Gymnasium suite: registered environments with vector observations and Discrete or Box actions."""

from __future__ import annotations

import difflib

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.wrappers import DictObs, NormalizeAction, wrap_common


def make_gym(
    task: str,
    obs: str = "state",
    action_repeat: int = 1,
    time_limit: int = 0,
    seed: int | None = None,
    **kwargs,
) -> gymnasium.Env:
    """Build Gymnasium's `task` (kwargs go to gymnasium.make) adapted to the agent's contract.

    time_limit counts agent steps (after action repeat) and comes on top of the limit Gymnasium registers.
    """
    if obs != "state":
        raise ValueError(f"obs={obs!r} is not supported: pixels are not yet supported for the gym suite, use obs='state'")
    env = _make_registered(task, **kwargs)
    try:
        _check_spaces(env.observation_space, env.action_space)
    except ValueError:
        env.close()
        raise
    env = NormalizeAction(DictObs(env, key="state"))
    return wrap_common(env, action_repeat, time_limit, seed)


def _make_registered(task: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make with a one-line error for an unknown id instead of Gymnasium's long one."""
    try:
        return gymnasium.make(task, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv):
        close = difflib.get_close_matches(task, list(gymnasium.registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown Gymnasium environment id {task!r}{hint}") from None


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Reject what the wrappers cannot turn into the agent's contract, naming the space found."""
    if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1):
        raise ValueError(
            f"observation space {observation_space} is not supported: gym suite needs a 1-D Box observation (obs=state)"
        )
    if isinstance(action_space, spaces.Discrete) and action_space.start == 0:
        return
    bounded = isinstance(action_space, spaces.Box) and bool(
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    )
    if not (bounded and len(action_space.shape) == 1):
        raise ValueError(
            f"action space {action_space} is not supported: gym suite needs Discrete (starting at 0) "
            "or a 1-D Box with finite bounds"
        )
