"""Seconds per update of each representation objective (objective=recon, masked, contrastive, selfpred).

One agent per objective, all built first, then their updates timed in turns (round-robin, so the machine's drift
hits every objective alike); the median per objective and its ratio to recon. Two observation kinds: a 17-D
vector (MuJoCo locomotion-like) and a 64x64 RGB image (DMC from pixels). Saves benchmarks/results/objective_speed.json.

    python benchmarks/objective_speed.py --size size1m --batch 16 64 --rounds 5 --threads 2 --compile
    python benchmarks/objective_speed.py --size size1m --batch 16 16 exp=small   # any config override
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from worldmodels.cpu.matmul import set_onednn
from worldmodels.cpu.memory import keep_freed_memory
from worldmodels.objectives import OBJECTIVES
from worldmodels.runtime.setup import CONFIG_DIR, make_agent
from worldmodels.strategies.compile import compile_steps

ROOT = Path(__file__).resolve().parents[1]
OBS = {
    "vector": gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)}),
    "pixels": gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)}),
}


class Task:
    """Only the spaces are needed to build an agent."""

    def __init__(self, obs: gym.spaces.Dict):
        self.observation_space = obs
        self.action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)


def batch_for(obs: gym.spaces.Dict, B: int, T: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {key: (torch.randint(0, 256, (B, T, *space.shape), generator=g, dtype=torch.uint8) if space.dtype == np.uint8
                   else torch.randn(B, T, *space.shape, generator=g)) for key, space in obs.spaces.items()}
    batch.update(action=torch.rand(B, T, 6, generator=g) * 2 - 1, reward=torch.randn(B, T, generator=g),
                 is_first=torch.zeros(B, T, dtype=torch.bool), is_last=torch.zeros(B, T, dtype=torch.bool),
                 is_terminal=torch.zeros(B, T, dtype=torch.bool))
    batch["is_first"][:, 0] = True
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="size1m")
    parser.add_argument("--batch", nargs=2, type=int, default=[16, 64], metavar=("B", "T"))
    parser.add_argument("--rounds", type=int, default=5, help="timed updates per objective, taken in turns")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the recurrent step functions (run.compile)")
    parser.add_argument("--obs", nargs="+", choices=sorted(OBS), default=["vector", "pixels"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "objective_speed.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for every agent, e.g. dynamics=transformer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_onednn(True)  # as `python -m worldmodels.train` does by default (run.onednn, run.keep_memory)
    keep_freed_memory()
    B, T = args.batch
    results = {}
    for kind in args.obs:
        batch = batch_for(OBS[kind], B, T)
        agents = {}
        for name in OBJECTIVES:
            with initialize_config_dir(CONFIG_DIR, version_base=None):
                cfg = compose("config", [f"model={args.size}", f"objective={name}", *args.overrides])
            torch.manual_seed(0)
            agents[name] = make_agent(cfg, Task(OBS[kind]))
            if args.compile:
                compile_steps(agents[name])
            for _ in range(2):  # warm-up
                agents[name].train_step(batch)
        times = {name: [] for name in agents}
        for _ in range(args.rounds):
            for name, agent in agents.items():
                began = time.perf_counter()
                agent.train_step(batch)
                times[name].append(time.perf_counter() - began)
        medians = {name: float(np.median(t)) for name, t in times.items()}
        results[kind] = {name: {"s_per_update_median": medians[name], "s_per_update_min": float(np.min(times[name])),
                                "vs_recon": medians[name] / medians["recon"]} for name in agents}
        for name, row in results[kind].items():
            print(f"{kind:7s} {name:12s} {row['s_per_update_median']:.3f} s/update  ({row['vs_recon']:.2f}x recon)")
    record = {"size": args.size, "batch": f"{B} x {T}", "threads": args.threads, "rounds": args.rounds, "compile": args.compile,
              "overrides": list(args.overrides), "torch": torch.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
