"""Driver: the flat step dicts it records follow the replay's conventions."""

from __future__ import annotations

import numpy as np
import torch

from worldmodels import envs
from worldmodels.runtime.driver import Driver


class FixedAgent:
    """Always takes action 1 (one-hot over 3)."""

    def policy(self, obs, carry, mode="sample"):
        action = torch.zeros(len(obs["is_first"]), 3)
        action[:, 1] = 1
        return action, carry

    def env_action(self, action):
        return action.argmax(-1).numpy()


def test_steps_and_episode_boundaries():
    env = envs.make("dummy", "discrete", length=5, seed=0)
    driver = Driver(env, FixedAgent())
    steps, ends = [], []
    for _ in range(13):
        taken, done = driver.step(steps.append)
        if done is not None:
            ends.append(done)
            assert taken == 0
    # Episode of 5 env steps = 6 records: the reset observation plus one per step, the last with is_last.
    firsts = [i for i, s in enumerate(steps) if s["is_first"]]
    lasts = [i for i, s in enumerate(steps) if s["is_last"]]
    assert firsts == [0, 6, 12] and lasts == [5, 11]
    assert all(steps[i]["reward"] == 0 for i in firsts)
    assert not any(s["is_terminal"] for s in steps)  # the dummy env truncates, it never terminates
    assert len(ends) == 2 and ends[0]["length"] == 5
    assert ends[0]["return"] == sum(float(s["reward"]) for s in steps[1:6])
    for s in steps:
        assert s["state"].dtype == np.float32 and s["action"].tolist() == [0.0, 1.0, 0.0]


def test_episodes_runs_whole_episodes_from_reset():
    env = envs.make("dummy", "discrete", length=4, seed=0)
    driver = Driver(env, FixedAgent())
    driver.step()
    stats = driver.episodes(3)
    assert len(stats) == 3 and all(s["length"] == 4 for s in stats)
