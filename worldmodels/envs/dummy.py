"""A deterministic, fast environment for tests, with a reward a learner can pick up from the observation."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from worldmodels.envs.wrappers import wrap_common

TASKS = ("continuous", "discrete")


class DummyEnv(gymnasium.Env):
    """Observation: sin/cos of the step counter t with periods 3, 6, 9, ...; the first pair reveals t % 3.

    Reward for the action taken on seeing step t's observation:
      discrete: 1 if action == t % 3 else 0;
      continuous: -sum((a - target_t)^2), target_t = 0.5 * (sin, cos)(2 pi t / 3) = 0.5 * obs[:2].
    Never terminates; truncates after `length` steps.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, task: str = "discrete", length: int = 100, obs_dim: int = 4):
        if task not in TASKS:
            raise ValueError(f"unknown dummy task {task!r}; known tasks: {', '.join(TASKS)}")
        if int(length) != length or length < 1:
            raise ValueError(f"dummy length must be an integer >= 1, got {length!r}")
        if int(obs_dim) != obs_dim or obs_dim < 1:
            raise ValueError(f"dummy obs_dim must be an integer >= 1, got {obs_dim!r}")
        self._task = task
        self._length = int(length)
        self._periods = 3.0 * (np.arange(int(obs_dim)) // 2 + 1)
        self._phase = np.where(np.arange(int(obs_dim)) % 2 == 0, 0.0, np.pi / 2)  # sin, cos, sin, cos, ...
        self.observation_space = spaces.Dict({"state": spaces.Box(-1.0, 1.0, (int(obs_dim),), np.float32)})
        self.action_space = spaces.Discrete(3) if task == "discrete" else spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._t = 0
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self._t = 0
        self._done = False
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("DummyEnv.step() called before reset() or after the episode ended")
        reward = self._reward(action)
        self._t += 1
        self._done = self._t >= self._length
        return self._observation(), reward, False, self._done, {}

    def _observation(self) -> dict[str, np.ndarray]:
        angles = 2.0 * np.pi * self._t / self._periods + self._phase
        return {"state": np.sin(angles).astype(np.float32)}

    def _reward(self, action: Any) -> float:
        if self._task == "discrete":
            action = np.asarray(action)
            if action.size != 1 or not np.issubdtype(action.dtype, np.integer) or not 0 <= int(action) < 3:
                raise ValueError(f"dummy discrete action must be an integer in [0, 3), got {action!r}")
            return float(int(action) == self._t % 3)
        action = np.asarray(action, dtype=np.float64).reshape(2)
        angle = 2.0 * np.pi * self._t / 3.0
        target = 0.5 * np.array([np.sin(angle), np.cos(angle)])
        return -float(np.sum((action - target) ** 2))


def make_dummy(
    task: str = "discrete",
    length: int = 100,
    obs_dim: int = 4,
    seed: int | None = None,
    obs: str = "state",
    action_repeat: int = 1,
    time_limit: int = 0,
    **kwargs,
) -> gymnasium.Env:
    """Build the dummy env; takes the same common options as other suites and rejects unknown ones."""
    if kwargs:
        raise ValueError(f"unknown options for the dummy suite: {', '.join(sorted(kwargs))}")
    if obs != "state":
        raise ValueError(f"obs={obs!r} is not supported: the dummy suite only has obs='state'")
    env: gymnasium.Env = DummyEnv(task, length, obs_dim)
    return wrap_common(env, action_repeat, time_limit, seed)
