"""Environment throughput: env steps per second of each adapter, with and without pixels (random actions).

Prints a table and saves benchmarks/results/env_speed.json.

    python benchmarks/env_speed.py --steps 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import envs

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("gym", "CartPole-v1", {"obs": "state"}),
    ("gym", "Pendulum-v1", {"obs": "state"}),
    ("gym", "HalfCheetah-v5", {"obs": "state"}),
    ("gym", "HalfCheetah-v5", {"obs": "pixels"}),
    ("dmc", "cartpole-swingup", {"obs": "proprio"}),
    ("dmc", "cartpole-swingup", {"obs": "pixels"}),
    ("dmc", "walker-walk", {"obs": "proprio"}),
    ("dmc", "walker-walk", {"obs": "pixels"}),
]


def measure(suite: str, task: str, options: dict, steps: int) -> float:
    """Env steps (after action repeat) per second, resets included."""
    env = envs.make(suite, task, seed=0, **options)
    repeat = options.get("action_repeat", 2 if suite == "dmc" else 1)
    env.reset()
    began, agent_steps = time.perf_counter(), 0
    while agent_steps * repeat < steps:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        agent_steps += 1
        if terminated or truncated:
            env.reset()
    rate = agent_steps * repeat / (time.perf_counter() - began)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "env_speed.json")
    args = parser.parse_args()
    rows = []
    for suite, task, options in CASES:
        try:
            rate = measure(suite, task, options, args.steps)
        except (ValueError, RuntimeError) as e:
            print(f"{suite}/{task} {options['obs']}: skipped ({e})")
            continue
        rows.append({"suite": suite, "task": task, **options, "env_steps_per_s": rate})
        print(f"{suite}/{task:<18} {options['obs']:<8} {rate:10.0f} env steps/s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "results": rows}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
