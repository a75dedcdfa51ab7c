"""Shared helpers of the environment tests: fixed-action rollouts and comparing their traces."""

from __future__ import annotations

import numpy as np


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
