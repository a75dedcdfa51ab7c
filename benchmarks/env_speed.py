"""Environment throughput: env steps per second of each adapter, with and without pixels (random actions); and of many
envs at once (env.num_envs 1, 2, 4, sync and async) with the acting of a size1m agent included.

Prints tables and saves benchmarks/results/env_speed.json: `results` (one env, random actions) and `vector` (many envs,
the agent acting through worldmodels.runtime.driver.VectorDriver, one batched policy call per step). A part not run keeps
what the file held.

    python benchmarks/env_speed.py --steps 400                       # both parts
    python benchmarks/env_speed.py --part vector --vector-steps 300   # many envs only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from worldmodels import envs

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
# Many envs at once: (suite, task, obs), each at every (num_envs, vector) setting.
VECTOR_CASES = [("dmc", "cartpole-swingup", "pixels"), ("gym", "HalfCheetah-v5", "state")]
VECTOR_SETTINGS = [(1, "sync"), (2, "sync"), (2, "async"), (4, "sync"), (4, "async")]


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


def measure_vector(suite: str, task: str, obs: str, num_envs: int, vector: str, steps: int, threads: int) -> dict:
    """Env steps per second, summed over `num_envs` envs, with a size1m agent acting (sampled actions) in all of them:
    what training's collection costs without the updates. Start-up (building the envs and agent, the first steps) is
    not timed."""
    import torch
    from hydra import compose, initialize_config_dir

    from worldmodels.runtime.driver import VectorDriver
    from worldmodels.runtime.setup import CONFIG_DIR, make_agent, make_vector_env

    torch.set_num_threads(threads)
    env_overrides = [f"env.task={task}"] if suite == "dmc" else [f"env.id={task}"]
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [f"env={suite}", *env_overrides, f"env.obs={obs}", f"env.num_envs={num_envs}",
                                 f"env.vector={vector}", "model=size1m"])
    env = make_vector_env(cfg.env, 0)
    agent = make_agent(cfg, env)
    driver = VectorDriver(env, agent, "sample", cfg.env.action_repeat)
    for _ in range(3):
        driver.step()
    began, taken, calls = time.perf_counter(), 0, 0
    while taken < steps:
        n, _ = driver.step()
        taken, calls = taken + n, calls + 1
    seconds = time.perf_counter() - began
    driver.close()
    return {"suite": suite, "task": task, "obs": obs, "num_envs": num_envs, "vector": vector, "agent": "size1m",
            "env_steps": taken, "policy_calls": calls, "env_steps_per_s": taken / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="env steps per single-env case")
    parser.add_argument("--vector-steps", type=int, default=300, help="env steps (summed over envs) per many-envs setting")
    parser.add_argument("--part", choices=("all", "single", "vector"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the acting agent")
    parser.add_argument("--note", default="", help="a note saved with the many-envs figures (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "env_speed.json")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.part in ("all", "single"):
        rows = []
        for suite, task, options in CASES:
            try:
                rate = measure(suite, task, options, args.steps)
            except (ValueError, RuntimeError) as e:
                print(f"{suite}/{task} {options['obs']}: skipped ({e})")
                continue
            rows.append({"suite": suite, "task": task, **options, "env_steps_per_s": rate})
            print(f"{suite}/{task:<18} {options['obs']:<8} {rate:10.0f} env steps/s", flush=True)
        saved.update(steps=args.steps, results=rows)
    if args.part in ("all", "vector"):
        rows = []
        print(f"{'task':<26} {'obs':<7} {'envs':>4} {'vector':<6} {'env steps/s':>12} {'x one env':>10}")
        for suite, task, obs in VECTOR_CASES:
            one = None
            for num_envs, vector in VECTOR_SETTINGS:
                try:
                    row = measure_vector(suite, task, obs, num_envs, vector, args.vector_steps, args.threads)
                except Exception as e:  # noqa: BLE001 - report and go on with the other settings
                    print(f"{suite}/{task} {obs} x{num_envs} {vector}: skipped ({type(e).__name__}: {e})")
                    continue
                one = row["env_steps_per_s"] if num_envs == 1 else one
                row["speedup"] = row["env_steps_per_s"] / one if one else None
                rows.append(row)
                speedup = f"{row['speedup']:9.2f}x" if one else ""
                print(f"{suite + '/' + task:<26} {obs:<7} {num_envs:>4} {vector:<6} {row['env_steps_per_s']:12.1f} {speedup:>10}",
                      flush=True)
        saved["vector"] = {"steps": args.vector_steps, "threads": args.threads, "cpus": os.cpu_count(), "note": args.note,
                           "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(saved, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
