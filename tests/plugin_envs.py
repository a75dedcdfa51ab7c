"""Environments written the way a user writes them, for the plug-in tests (test_plugging_in.py): a small Dict-observation
env, one per common mistake, and a factory of a third-party suite. Importing this module registers the Gymnasium id
`WorldmodelsPlugin-v0` (the "module:EnvId" form); the tests' fixture deregisters it and forgets the module afterwards."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "WorldmodelsPlugin-v0"


class Arm(gymnasium.Env):
    """A tiny goal-reaching task with a nested, goal-conditioned Dict observation and a Box action.

    Observation: {"observation": float64 (n,), "achieved_goal": (2,), "desired_goal": (2,)}; reward: minus the distance
    between the goals; the action moves the achieved goal. Truncates after `length` steps.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(self, n: int = 3, length: int = 20, render_mode: str | None = None, width: int = 16, height: int = 16):
        goal = spaces.Box(-1.0, 1.0, (2,), np.float64)
        self.observation_space = spaces.Dict(
            {"observation": spaces.Box(-np.inf, np.inf, (n,), np.float64), "achieved_goal": goal, "desired_goal": goal}
        )
        self.action_space = spaces.Box(-0.1, 0.1, (2,), np.float32)
        self.n, self.length, self.render_mode, self.size = n, length, render_mode, (height, width)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.pos = self.np_random.uniform(-0.5, 0.5, 2)
        self.goal = self.np_random.uniform(-0.5, 0.5, 2)
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.pos = np.clip(self.pos + np.asarray(action, np.float64), -1.0, 1.0)
        reward = -float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), reward, False, self.t >= self.length, {}

    def _obs(self):
        observation = np.concatenate([self.pos, np.full(self.n - 2, self.t / self.length)])[: self.n]
        return {"observation": observation, "achieved_goal": self.pos.copy(), "desired_goal": self.goal.copy()}

    def render(self):
        return np.zeros((*self.size, 3), np.uint8) if self.render_mode == "rgb_array" else None


def make_arm(**kwargs) -> gymnasium.Env:
    """A factory function (entry point form package.module:function)."""
    return Arm(**kwargs)


def not_an_env(**kwargs) -> object:
    return object()


def make_suite(task: str, **kwargs) -> gymnasium.Env:
    """A third-party suite's factory (entry-point group worldmodels.envs): task 'arm' or 'default'."""
    if task not in ("arm", "default"):
        raise ValueError(f"unknown task {task!r} of the fake suite")
    return Arm(**kwargs)


# ---- one mistake each (envs.check must name it) -----------------------------------------------------------------


class OldApi(Arm):
    """gym < 0.26: reset returns the observation only, step a 4-tuple with `done`."""

    def reset(self, seed=None):  # no options=
        return super().reset(seed=seed)[0]

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, reward, terminated or truncated, info


class WrongDtype(Arm):
    """Declares float32 goals but returns float64 arrays."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        goal = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({**self.observation_space.spaces, "achieved_goal": goal, "desired_goal": goal})


class Unseeded(Arm):
    """Ignores the seed: draws its goal from an unseeded generator."""

    def reset(self, *, seed=None, options=None):
        _, info = super().reset(seed=seed)
        self.goal = np.random.default_rng().uniform(-0.5, 0.5, 2)
        return self._obs(), info


class MissingKey(Arm):
    def _obs(self):
        observation = super()._obs()
        del observation["desired_goal"]
        return observation


class NeverEnds(Arm):
    def step(self, action):
        observation, reward, _, _, info = super().step(action)
        return observation, reward, False, False, info


class BadReward(Arm):
    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, np.array([reward]), int(terminated), truncated, info


class TextObservation(Arm):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.observation_space = spaces.Dict({**self.observation_space.spaces, "instruction": spaces.Text(20)})

    def _obs(self):
        return {**super()._obs(), "instruction": "reach"}


class UnboundedAction(Arm):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)


class BadRender(Arm):
    """Renders 48x64 frames whatever width and height it is given."""

    def render(self):
        return np.zeros((48, 64, 3), np.uint8)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=Arm)
