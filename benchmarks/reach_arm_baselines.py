"""Reference returns of the example robot (examples/reach_arm.py, state observation) without learning: no torque,
uniform random torques, full torque, and a scripted controller (inverse kinematics of the two links, then a PD law
on the joint angles). They bound what a learning curve on it means. Mean return over --episodes seeded episodes.

    python benchmarks/reach_arm_baselines.py --episodes 10
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.reach_arm import ReachArm

LINK = 0.1  # both links' length in the example's XML


def scripted(observation: dict[str, np.ndarray]) -> np.ndarray:
    """Joint angles that put the fingertip on the target (elbow one way), reached by a PD law on the angle error."""
    x, y = observation["target"]
    elbow = np.arccos(np.clip((x * x + y * y - 2 * LINK * LINK) / (2 * LINK * LINK), -1.0, 1.0))
    shoulder = np.arctan2(y, x) - np.arctan2(LINK * np.sin(elbow), LINK + LINK * np.cos(elbow))
    joints = observation["joints"]
    angles, velocities = np.arctan2(joints[2:4], joints[:2]), joints[4:]
    error = (np.array([shoulder, elbow]) - angles + np.pi) % (2 * np.pi) - np.pi
    return np.clip(3.0 * error - 0.5 * velocities, -1.0, 1.0)


def mean_return(env: ReachArm, policy: Callable[[dict[str, np.ndarray]], np.ndarray], episodes: int) -> float:
    returns = []
    for seed in range(episodes):
        observation, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy(observation))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    env, rng = ReachArm(camera=False), np.random.default_rng(0)
    policies = {"no torque": lambda o: np.zeros(2), "random torques": lambda o: rng.uniform(-1, 1, 2),
                "full torque": lambda o: np.ones(2), "scripted IK + PD": scripted}
    for name, policy in policies.items():
        print(f"{name:18s} {mean_return(env, policy, args.episodes):7.1f}")
    env.close()


if __name__ == "__main__":
    main()
