"""Steps an environment with the agent's policy and turns Gymnasium transitions into flat step dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

Step = dict[str, Any]


class Driver:
    """One environment, one step at a time.

    Each recorded step holds the observation, the action the policy took there, the reward received on
    arriving there, and the flags `is_first`, `is_last`, `is_terminal`. The final observation of an
    episode is recorded too (with `is_last`), so the world model sees where episodes end.

    Args:
        env: Gymnasium env with a Dict observation space and a normalised action space.
        agent: anything with `policy(obs, carry, mode)` and `env_action(action)` (see Agent).
        mode: "sample" to explore, "mode" for greedy evaluation.
        action_repeat: environment steps per agent step, for counting env steps.
    """

    def __init__(self, env: gym.Env, agent: Any, mode: str = "sample", action_repeat: int = 1):
        self.env, self.agent, self.mode, self.repeat = env, agent, mode, action_repeat
        self.carry = None
        self.pending: Step | None = None  # the next observation to act on, with its flags
        self.episode_return = 0.0
        self.episode_length = 0

    def _observe(self, obs: dict[str, np.ndarray], reward: float, first: bool, last: bool, terminal: bool) -> Step:
        step = {k: np.asarray(v) for k, v in obs.items()}
        step.update(reward=np.float32(reward), is_first=first, is_last=last, is_terminal=terminal)
        return step

    def step(self, on_step: Callable[[Step], None] | None = None) -> tuple[int, dict[str, float] | None]:
        """Act once. Returns (env steps taken, episode stats when an episode ended else None)."""
        if self.pending is None:
            obs, _ = self.env.reset()
            self.pending = self._observe(obs, 0.0, True, False, False)
            self.episode_return, self.episode_length = 0.0, 0
        step = self.pending
        batch = {k: np.asarray(v)[None] for k, v in step.items()}
        action, self.carry = self.agent.policy(batch, self.carry, self.mode)
        step["action"] = action[0].cpu().numpy().astype(np.float32)
        if on_step is not None:
            on_step(step)
        if step["is_last"]:
            self.pending = None
            return 0, {"return": self.episode_return, "length": self.episode_length}
        obs, reward, terminated, truncated, _ = self.env.step(self.agent.env_action(action)[0])
        self.episode_return += float(reward)
        self.episode_length += 1
        self.pending = self._observe(obs, reward, False, bool(terminated or truncated), bool(terminated))
        return self.repeat, None

    def episodes(self, count: int) -> list[dict[str, float]]:
        """Run `count` whole episodes from fresh resets (for evaluation); returns their stats."""
        self.pending, self.carry, stats = None, None, []
        while len(stats) < count:
            _, done = self.step()
            if done is not None:
                stats.append(done)
        return stats
