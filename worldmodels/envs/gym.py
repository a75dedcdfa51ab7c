"""Gymnasium suite: any Gymnasium environment as it is (a registered id, "module:EnvId", or an unregistered class by
"package.module:Class"), with its observation and action spaces put in the agent's form by envs.spaces, and
optionally MuJoCo camera images from render()."""

from __future__ import annotations

from typing import Any

import gymnasium

from worldmodels.envs.load import build
from worldmodels.envs.spaces import DEFAULT_JOINT_ACTIONS, adapt
from worldmodels.envs.vector import adapt_vector
from worldmodels.envs.wrappers import RenderObservation, default_mujoco_gl, first_line, wrap_common

OBS_MODES = ("state", "pixels", "both")
RENDER_OPTIONS = ("render_mode", "width", "height")


def make_gym(
    task: str,
    obs: str = "state",
    action_repeat: int = 1,
    time_limit: int = 0,
    seed: int | None = None,
    size: int = 64,
    keys: str = ".*",
    exclude: str = "",
    joint_actions: int = DEFAULT_JOINT_ACTIONS,
    entry_point: str | None = None,
    kwargs: dict[str, Any] | None = None,
    **extra,
) -> gymnasium.Env:
    """Build `task` (see envs.load.build; `entry_point` builds an unregistered class instead) adapted to the agent.

    kwargs (and any extra keyword) go to the constructor or gymnasium.make. obs: "state" keeps the env's own
    observation, every leaf of any supported space (envs.spaces), selected by the `keys` and `exclude` regexes;
    "pixels" puts a uint8 (size, size, 3) render under "image" instead; "both" adds it to the env's own. Pixels need an
    env that renders rgb_array frames at a chosen width and height, which Gymnasium's MuJoCo tasks do (e.g. Hopper-v5);
    rendering costs far more than a step. joint_actions: see envs.spaces.FlatAction. time_limit counts agent steps
    (after action repeat) and comes on top of the env's own limit.
    """
    if obs not in OBS_MODES:
        raise ValueError(f"obs={obs!r} is not supported: the gym suite has obs='state', 'pixels' or 'both'")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"kwargs={kwargs!r} is invalid: expected a mapping of constructor arguments, e.g. env.kwargs={{size:32}}")
    options = {**(kwargs or {}), **extra}
    pixels = obs != "state"
    if pixels:
        if int(size) != size or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        clash = sorted(set(RENDER_OPTIONS) & set(options))
        if clash:
            raise ValueError(f"obs={obs!r} sets {', '.join(clash)} itself (use size=); do not pass them")
        default_mujoco_gl()
        env = _make_rendering(task, entry_point, int(size), options)
    else:
        env = build(task, entry_point, options)
    if isinstance(env, gymnasium.vector.VectorEnv):  # already batched: used as it is (envs.vector)
        return adapt_vector(env, keys, exclude, joint_actions, action_repeat, time_limit, seed, obs)
    env = adapt(env, keys, exclude, joint_actions, observation=obs != "pixels")
    if pixels:
        try:
            env = RenderObservation(env, int(size), key="image", keep=obs == "both")
        except (ValueError, TypeError):
            env.close()
            raise
    return wrap_common(env, action_repeat, time_limit, seed)


def _make_rendering(task: str, entry_point: str | None, size: int, options: dict[str, Any]) -> gymnasium.Env:
    """Builds `task` to render size x size rgb_array frames; a task that cannot take width/height is not a MuJoCo one."""
    try:
        return build(task, entry_point, {"render_mode": "rgb_array", "width": size, "height": size, **options})
    except TypeError as error:
        if not any(f"unexpected keyword argument '{name}'" in first_line(error) for name in RENDER_OPTIONS):
            raise
        raise ValueError(
            f"obs='pixels' needs a Gymnasium MuJoCo task (e.g. Hopper-v5), or an env of yours, that renders at a chosen size: "
            f"{entry_point or task!r} does not accept width/height"
        ) from None
