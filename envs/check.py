"""Checks the environment contract the agent relies on, so a broken env fails early with a clear message."""

from __future__ import annotations

from numbers import Real
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


def check_env(env: gymnasium.Env, steps: int = 50) -> None:
    """Reset and step `env` with random actions (its own spaces' generators are left untouched).

    Contract: Dict observation space of Box values; every observation matches it in keys, dtype and shape;
    action space Discrete (from 0) or a float Box within [-1, 1]; step returns a real reward and bool flags;
    reset works after an episode ends. Raises AssertionError (or ValueError for bad arguments).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"check_env steps must be an integer >= 1, got {steps!r}")
    _check_observation_space(env.observation_space)
    _check_action_space(env.action_space)
    rng = np.random.default_rng(0)
    observation, info = _unpack_reset(env.reset(seed=0))
    _check_observation(env.observation_space, observation, "reset")
    for index in range(int(steps)):
        result = env.step(_random_action(env.action_space, rng))
        assert isinstance(result, tuple) and len(result) == 5, f"step must return a 5-tuple, got {type(result).__name__}"
        observation, reward, terminated, truncated, info = result
        where = f"step {index}"
        _check_observation(env.observation_space, observation, where)
        assert isinstance(reward, Real) and not isinstance(reward, (bool, np.bool_)), (
            f"{where}: reward must be a real scalar, got {type(reward).__name__}"
        )
        assert np.isfinite(reward), f"{where}: reward is not finite ({reward})"
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            assert isinstance(flag, (bool, np.bool_)), f"{where}: {name} must be a bool, got {type(flag).__name__}"
        assert isinstance(info, dict), f"{where}: info must be a dict, got {type(info).__name__}"
        if terminated or truncated:
            observation, info = _unpack_reset(env.reset())
            _check_observation(env.observation_space, observation, f"reset after {where}")
    # Reset also works mid-episode (the agent may restart envs at any time).
    observation, info = _unpack_reset(env.reset())
    _check_observation(env.observation_space, observation, "final reset")


def _check_observation_space(space: spaces.Space) -> None:
    assert isinstance(space, spaces.Dict), f"observation space must be a Dict, got {space}"
    assert len(space.spaces) > 0, "observation space Dict is empty"
    for key, value in space.spaces.items():
        assert isinstance(value, spaces.Box), f"observation space key {key!r} must be a Box, got {value}"


def _check_action_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Discrete):
        assert space.start == 0, f"Discrete action space must start at 0, got {space}"
        return
    assert isinstance(space, spaces.Box), f"action space must be Discrete or Box, got {space}"
    assert np.issubdtype(space.dtype, np.floating), f"Box action space must have a float dtype, got {space.dtype}"
    assert np.all(space.low >= -1.0) and np.all(space.high <= 1.0), f"Box action space must lie within [-1, 1], got {space}"


def _unpack_reset(result: Any) -> tuple[Any, dict]:
    assert isinstance(result, tuple) and len(result) == 2, (
        f"reset must return (observation, info), got {type(result).__name__}"
    )
    observation, info = result
    assert isinstance(info, dict), f"reset info must be a dict, got {type(info).__name__}"
    return observation, info


def _check_observation(space: spaces.Dict, observation: Any, where: str) -> None:
    assert isinstance(observation, dict), f"{where}: observation must be a dict, got {type(observation).__name__}"
    assert set(observation) == set(space.spaces), (
        f"{where}: observation keys {sorted(observation)} differ from the space's {sorted(space.spaces)}"
    )
    for key, box in space.spaces.items():
        value = observation[key]
        assert isinstance(value, np.ndarray), f"{where}: observation {key!r} must be a numpy array, got {type(value).__name__}"
        assert value.dtype == box.dtype, f"{where}: observation {key!r} has dtype {value.dtype}, expected {box.dtype}"
        assert value.shape == box.shape, f"{where}: observation {key!r} has shape {value.shape}, expected {box.shape}"
        assert box.contains(value), f"{where}: observation {key!r} is outside its space {box}"


def _random_action(space: spaces.Space, rng: np.random.Generator) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)
