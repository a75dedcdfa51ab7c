"""Shared helpers of the environment tests: fixed-action rollouts and comparing their traces, and `PointMass`, a small
env that is already batched, in torch (test_vector_envs.py trains on it, test_plugging_in.py checks it with envs.check,
with variants that each make one mistake)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


def rollout(env, actions: list, key: str = "state") -> list:
    """Observations, rewards and flags for a fixed action sequence, resetting when an episode ends."""
    observation, _ = env.reset()
    trace = [observation[key].copy()]
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        trace.append((observation[key].copy(), reward, terminated, truncated))
        if terminated or truncated:
            observation, _ = env.reset()
            trace.append(observation[key].copy())
    return trace


def assert_same_trace(first: list, second: list) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        if isinstance(a, tuple):
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1:] == b[1:]
        else:
            np.testing.assert_array_equal(a, b)


class PointMass(gymnasium.vector.VectorEnv):
    """`num_envs` point masses on a line, simulated as one batch of torch tensors (as GPU simulators do).

    Observation: {"body": (N, 2) float32 position and velocity, "env": (N, 1) the env's index}; action: a force (N, 1) in
    [-2, 2], which must come as a torch tensor; reward: minus the distance from 0. Env i truncates after `length + i`
    steps, so the envs end their episodes at different steps. `autoreset`: Gymnasium's NextStep, SameStep or Disabled.
    `fail_at`: the vector step at which step() raises once (in this process), to test a failure of the whole env.
    `image`: an "image" observation too, (N, 8, 8, 3) uint8 with a red column where the mass is, for videos.
    """

    metadata: ClassVar[dict[str, Any]] = {}
    failed: ClassVar[list[int]] = []

    def __init__(self, num_envs: int = 3, length: int = 9, autoreset: str = "NextStep", fail_at: int = 0, image: bool = False):
        self.num_envs, self.length, self.fail_at, self.image = num_envs, length, fail_at, image
        self.metadata = {"autoreset_mode": AutoresetMode(autoreset)}
        self.single_observation_space = spaces.Dict({"body": spaces.Box(-np.inf, np.inf, (2,), np.float32),
                                                     "env": spaces.Box(0, num_envs, (1,), np.float32),
                                                     **({"image": spaces.Box(0, 255, (8, 8, 3), np.uint8)} if image else {})})
        self.single_action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.generator = torch.Generator().manual_seed(0)
        self.x, self.v = torch.zeros(num_envs), torch.zeros(num_envs)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.limit = length + torch.arange(num_envs)
        self.needs_reset = torch.zeros(num_envs, dtype=torch.bool)
        self.steps = 0

    def _reset(self, mask: torch.Tensor) -> None:
        self.x[mask] = torch.rand(int(mask.sum()), generator=self.generator) * 2 - 1
        self.v[mask], self.t[mask] = 0.0, 0
        self.needs_reset &= ~mask

    def _obs(self) -> dict[str, torch.Tensor]:
        obs = {"body": torch.stack([self.x, self.v], -1), "env": torch.arange(self.num_envs, dtype=torch.float32)[:, None]}
        if self.image:
            column = ((self.x.clamp(-1, 1) + 1) * 3.5).round().long()
            obs["image"] = torch.zeros(self.num_envs, 8, 8, 3, dtype=torch.uint8)
            obs["image"][torch.arange(self.num_envs), :, column, 0] = 255
        return obs

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.generator.manual_seed(seed)
        mask = (options or {}).get("reset_mask")
        self._reset(torch.ones(self.num_envs, dtype=torch.bool) if mask is None else torch.as_tensor(mask))
        return self._obs(), {}

    def step(self, actions):
        assert isinstance(actions, torch.Tensor) and actions.shape == (self.num_envs, 1), actions
        self.steps += 1
        if self.steps == self.fail_at and not PointMass.failed:
            PointMass.failed.append(self.steps)
            raise RuntimeError("the simulator lost its device")
        mode = self.metadata["autoreset_mode"]
        resetting = self.needs_reset.clone() if mode == AutoresetMode.NEXT_STEP else torch.zeros_like(self.needs_reset)
        assert not (mode == AutoresetMode.DISABLED and self.needs_reset.any()), "stepped an ended env"
        moving = ~resetting
        self.v[moving] += 0.1 * actions[moving, 0].clamp(-2, 2)
        self.x[moving] += 0.1 * self.v[moving]
        self.t[moving] += 1
        reward = torch.where(moving, -self.x.abs(), torch.zeros_like(self.x))
        truncated = moving & (self.t >= self.limit)
        self._reset(resetting)
        self.needs_reset |= truncated
        obs, info = self._obs(), {}
        if mode == AutoresetMode.SAME_STEP and truncated.any():
            info = {"final_obs": {k: v.clone() for k, v in obs.items()}, "_final_obs": truncated.numpy()}
            self._reset(truncated)
            obs = self._obs()
        return obs, reward, torch.zeros_like(truncated), truncated, info


# ---- PointMass with one mistake each, for envs.check (test_plugging_in.py) ------------------------------------------


class UnbatchedTarget(PointMass):
    """A "target" leaf shared by every env, returned without the leading num_envs axis."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.single_observation_space = spaces.Dict({**self.single_observation_space.spaces,
                                                     "target": spaces.Box(-1.0, 1.0, (2,), np.float32)})

    def _obs(self):
        return {**super()._obs(), "target": torch.zeros(2)}


class ColumnReward(PointMass):
    """Rewards as a column, (num_envs, 1), instead of (num_envs,)."""

    def step(self, actions):
        observation, reward, terminated, truncated, info = super().step(actions)
        return observation, reward[:, None], terminated, truncated, info


class NoFinalObs(PointMass):
    """Declares SameStep autoreset, but leaves the final observations out of info."""

    def __init__(self, **kwargs):
        super().__init__(autoreset="SameStep", **kwargs)

    def step(self, actions):
        return (*super().step(actions)[:4], {})
