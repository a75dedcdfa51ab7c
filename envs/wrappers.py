"""Small composable wrappers that adapt an environment to the agent's contract (see envs.check)."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces


class DictObs(gymnasium.ObservationWrapper):
    """Puts a Box observation under `key` as float32, so every suite hands the agent the same Dict layout."""

    def __init__(self, env: gymnasium.Env, key: str = "state"):
        super().__init__(env)
        if not key or not isinstance(key, str):
            raise ValueError(f"DictObs key must be a non-empty string, got {key!r}")
        self._key = key
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            self._passthrough = True
            return
        if not isinstance(space, spaces.Box):
            raise TypeError(f"DictObs needs a Box or Dict observation space, got {space}")
        self._passthrough = False
        with np.errstate(over="ignore"):  # float64 bounds beyond float32's range become +-inf, which is what they mean
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.observation_space = spaces.Dict({key: spaces.Box(low, high, space.shape, np.float32)})

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        if self._passthrough:
            return observation
        return {self._key: np.asarray(observation, dtype=np.float32)}


class NormalizeAction(gymnasium.ActionWrapper):
    """Exposes a Box action space as [-1, 1] and rescales to the env's bounds.

    The agent's continuous policy is an unsquashed normal, so its samples can leave [-1, 1]; clipping
    happens here, before rescaling, so the env never sees an out-of-bounds action. Non-Box spaces
    (e.g. Discrete) pass through unchanged.
    """

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        space = env.action_space
        self._box = isinstance(space, spaces.Box)
        if not self._box:
            return
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"NormalizeAction needs finite action bounds, got {space}")
        self._low = space.low.astype(np.float64)
        self._high = space.high.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, space.shape, np.float32)

    def action(self, action: Any) -> Any:
        if not self._box:
            return action
        inner = self.env.action_space
        action = np.asarray(action, dtype=np.float64)
        if action.size != self._low.size:
            raise ValueError(f"action has {action.size} elements, expected shape {inner.shape}")
        if np.isnan(action).any():
            raise ValueError("action contains NaN")
        action = np.clip(action.reshape(inner.shape), -1.0, 1.0)
        scaled = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        # Clip again so rounding can never step outside the bounds.
        return np.clip(scaled, self._low, self._high).astype(inner.dtype)


class ActionRepeat(gymnasium.Wrapper):
    """Repeats each action `repeat` times and sums the rewards; stops as soon as the episode ends."""

    def __init__(self, env: gymnasium.Env, repeat: int):
        super().__init__(env)
        if int(repeat) != repeat or repeat < 1:
            raise ValueError(f"action repeat must be an integer >= 1, got {repeat!r}")
        self._repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self._repeat):
            observation, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return observation, total, terminated, truncated, info


class TimeLimit(gymnasium.Wrapper):
    """Truncates after `max_steps` agent steps (counted after action repeat, if that wraps inside).

    A step that terminates keeps the inner truncated flag, so the agent bootstraps only on true truncation.
    """

    def __init__(self, env: gymnasium.Env, max_steps: int):
        super().__init__(env)
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"time limit max_steps must be an integer >= 1, got {max_steps!r}")
        self._max_steps = int(max_steps)
        self._steps = 0

    def reset(self, **kwargs) -> tuple[Any, dict[str, Any]]:
        self._steps = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self._steps >= self._max_steps and not terminated:
            truncated = True
        return observation, reward, terminated, truncated, info


class SeedOnFirstReset(gymnasium.Wrapper):
    """Uses `seed` for the first reset() that gives none, and seeds the spaces, so a seeded env is reproducible.

    Later resets without a seed continue the env's own generator, so episodes differ but stay deterministic.
    """

    def __init__(self, env: gymnasium.Env, seed: int):
        super().__init__(env)
        self._seed: int | None = int(seed)
        self.action_space.seed(self._seed)
        self.observation_space.seed(self._seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = self._seed
        self._seed = None
        return self.env.reset(seed=seed, options=options)


def wrap_common(env: gymnasium.Env, action_repeat: int = 1, time_limit: int = 0, seed: int | None = None) -> gymnasium.Env:
    """The options every suite shares, in one order: action repeat, then the time limit (in agent steps), then seeding."""
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if time_limit:
        env = TimeLimit(env, time_limit)
    if seed is not None:
        env = SeedOnFirstReset(env, seed)
    return env
