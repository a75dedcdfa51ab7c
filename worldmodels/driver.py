"""Steps an environment with the agent's policy and turns Gymnasium transitions into flat step dicts."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from envs.sim_state import get_sim_state

Step = dict[str, Any]


class EnvFailure(RuntimeError):
    """The environment kept failing: more consecutive errors in reset/step than allowed."""


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
        recreate: builds a fresh env after an exception in reset or step; None lets exceptions through.
        max_failures: consecutive failures tolerated before EnvFailure is raised.
        on_failure: called when a step failed mid-episode (the replay marks its newest step as the last).
    """

    def __init__(
        self,
        env: gym.Env,
        agent: Any,
        mode: str = "sample",
        action_repeat: int = 1,
        recreate: Callable[[], gym.Env] | None = None,
        max_failures: int = 10,
        on_failure: Callable[[], None] | None = None,
    ):
        self.env, self.agent, self.mode, self.repeat = env, agent, mode, action_repeat
        self.recreate, self.max_failures, self.on_failure = recreate, max_failures, on_failure
        self.carry = None
        self.pending: Step | None = None  # the next observation to act on, with its flags
        self.episode_return = 0.0
        self.episode_length = 0
        self.capture_sim_state = False  # record the simulator state with each step (see record)
        self.failures = 0  # all environment failures so far
        self.consecutive = 0  # failures since the last successful step

    def _fail(self, error: Exception, mid_episode: bool) -> None:
        """Count the failure, end the broken episode where it stands, and rebuild the environment."""
        self.failures += 1
        self.consecutive += 1
        warnings.warn(f"environment failed ({type(error).__name__}: {error}); recreating it", stacklevel=3)
        if mid_episode and self.on_failure is not None:
            self.on_failure()
        self.pending, self.carry = None, None
        if self.consecutive > self.max_failures:
            raise EnvFailure(f"the environment failed {self.consecutive} times in a row; last error: {type(error).__name__}: {error}")
        try:
            self.env.close()
        except Exception:  # noqa: BLE001, S110 - a broken env may also fail to close
            pass
        try:
            self.env = self.recreate()
        except Exception as e:  # noqa: BLE001 - counted like any other failure
            self._fail(e, mid_episode=False)

    def _observe(self, obs: dict[str, np.ndarray], reward: float, first: bool, last: bool, terminal: bool) -> Step:
        step = {k: np.asarray(v) for k, v in obs.items()}
        step.update(reward=np.float32(reward), is_first=first, is_last=last, is_terminal=terminal)
        if self.capture_sim_state:
            state = get_sim_state(self.env)
            if state is not None:
                step["sim_state"] = state
        return step

    def step(self, on_step: Callable[[Step], None] | None = None) -> tuple[int, dict[str, float] | None]:
        """Act once. Returns (env steps taken, episode stats when an episode ended else None)."""
        if self.pending is None:
            try:
                obs, _ = self.env.reset()
            except Exception as e:
                if self.recreate is None:
                    raise
                self._fail(e, mid_episode=False)
                return 0, None
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
        try:
            obs, reward, terminated, truncated, _ = self.env.step(self.agent.env_action(action)[0])
        except Exception as e:
            if self.recreate is None:
                raise
            self._fail(e, mid_episode=True)
            return 0, None
        self.consecutive = 0
        self.episode_return += float(reward)
        self.episode_length += 1
        self.pending = self._observe(obs, reward, False, bool(terminated or truncated), bool(terminated))
        return self.repeat, None

    def episodes(self, count: int, on_step: Callable[[Step], None] | None = None) -> list[dict[str, float]]:
        """Run `count` whole episodes from fresh resets (for evaluation); returns their stats."""
        self.pending, self.carry, stats = None, None, []
        while len(stats) < count:
            _, done = self.step(on_step)
            if done is not None:
                stats.append(done)
        return stats

    def record(self, count: int, sim_state: bool = False) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]]]:
        """Run `count` whole episodes and keep their steps: one dict of arrays (L, ...) per episode.

        With `sim_state`, environments that expose their simulator state (MuJoCo, DMC) add it under
        `sim_state`, so actions can later be replayed from any recorded step.
        """
        steps: list[Step] = []
        self.capture_sim_state = sim_state
        try:
            stats = self.episodes(count, steps.append)
        finally:
            self.capture_sim_state = False
        starts = [i for i, s in enumerate(steps) if s["is_first"]] + [len(steps)]
        episodes = [
            {key: np.stack([s[key] for s in steps[a:b]]) for key in steps[a]} for a, b in itertools.pairwise(starts) if b > a
        ]
        return episodes, stats
