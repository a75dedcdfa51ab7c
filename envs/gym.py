"""Gymnasium suite: registered environments with vector observations, MuJoCo camera images, and Discrete or Box actions."""

from __future__ import annotations

import difflib

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.wrappers import DictObs, NormalizeAction, RenderObservation, default_mujoco_gl, first_line, wrap_common

OBS_MODES = ("state", "pixels", "both")
RENDER_OPTIONS = ("render_mode", "width", "height")


def make_gym(
    task: str,
    obs: str = "state",
    action_repeat: int = 1,
    time_limit: int = 0,
    seed: int | None = None,
    size: int = 64,
    **kwargs,
) -> gymnasium.Env:
    """Build Gymnasium's `task` (kwargs go to gymnasium.make) adapted to the agent's contract.

    obs: "state" puts the vector observation under "state"; "pixels" puts a uint8 (size, size, 3) render under "image"
    instead; "both" keeps both. Pixels need a task that renders rgb_array frames at a chosen width and height, which
    Gymnasium's MuJoCo tasks do (e.g. Hopper-v5, HalfCheetah-v5, Walker2d-v5); rendering costs far more than a step.
    time_limit counts agent steps (after action repeat) and comes on top of the limit Gymnasium registers.
    """
    if obs not in OBS_MODES:
        raise ValueError(f"obs={obs!r} is not supported: the gym suite has obs='state', 'pixels' or 'both'")
    pixels = obs != "state"
    if pixels:
        if int(size) != size or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        clash = sorted(set(RENDER_OPTIONS) & set(kwargs))
        if clash:
            raise ValueError(f"obs={obs!r} sets {', '.join(clash)} itself (use size=); do not pass them")
        default_mujoco_gl()
        env = _make_rendering(task, int(size), **kwargs)
    else:
        env = _make_registered(task, **kwargs)
    try:
        _check_spaces(env.observation_space if obs != "pixels" else None, env.action_space)
    except ValueError:
        env.close()
        raise
    if obs != "pixels":
        env = DictObs(env, key="state")
    if pixels:
        env = RenderObservation(env, int(size), key="image", keep=obs == "both")
    env = NormalizeAction(env)
    return wrap_common(env, action_repeat, time_limit, seed)


def _make_registered(task: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make with one-line errors for an unknown id or a missing dependency instead of Gymnasium's long ones."""
    try:
        return gymnasium.make(task, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv):
        close = difflib.get_close_matches(task, list(gymnasium.registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown Gymnasium environment id {task!r}{hint}") from None
    except gymnasium.error.DependencyNotInstalled as error:
        raise ValueError(f"Gymnasium environment {task!r} needs a missing package: {first_line(error)}") from None
    except ModuleNotFoundError as error:
        raise ValueError(
            f"Gymnasium environment {task!r} needs the missing package {error.name!r} "
            "(MuJoCo tasks: pip install 'gymnasium[mujoco]')"
        ) from None


def _make_rendering(task: str, size: int, **kwargs) -> gymnasium.Env:
    """Builds `task` to render size x size rgb_array frames; a task that cannot take width/height is not a MuJoCo one."""
    try:
        return _make_registered(task, render_mode="rgb_array", width=size, height=size, **kwargs)
    except TypeError as error:
        if not any(f"unexpected keyword argument '{name}'" in first_line(error) for name in RENDER_OPTIONS):
            raise
        raise ValueError(
            f"obs='pixels' needs a Gymnasium MuJoCo task (e.g. Hopper-v5) that renders at a chosen size: "
            f"{task!r} does not accept width/height"
        ) from None


def _check_spaces(observation_space: spaces.Space | None, action_space: spaces.Space) -> None:
    """Reject what the wrappers cannot turn into the agent's contract, naming the space found (None: obs unused)."""
    if observation_space is not None and not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1):
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
