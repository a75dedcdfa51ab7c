"""Speed benchmark: seconds per train update (world model + actor + critic) and env steps per second.

Vector observations (17-D, 6-D continuous actions, as in MuJoCo locomotion), batch 16 x 64, float32.
Prints a table and saves `benchmarks/results/speed.json`.

    python benchmarks/speed.py --sizes size1m size12m --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from worldmodels.driver import Driver
from worldmodels.matmul import linear, onednn_enabled, set_onednn
from worldmodels.memory import keep_freed_memory
from worldmodels.setup import CONFIG_DIR, make_agent, make_env

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_JAX_S_PER_UPDATE = {"size1m": 0.42, "size12m": 2.5}  # same 2-core CPU, float32 (REFERENCE.md)


class VectorTask:
    """Spaces of a 17-D observation, 6-D action task; only the spaces are needed to build the agent."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)


def fake_batch(B: int, T: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {
        "state": torch.randn(B, T, 17, generator=g),
        "action": torch.rand(B, T, 6, generator=g) * 2 - 1,
        "reward": torch.randn(B, T, generator=g),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_last": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    return {k: v.to(device) for k, v in batch.items()}


def matmul_gflops(device: str) -> float:
    """This machine's float32 matmul throughput on a head-sized product, through the same `linear` the
    networks use (oneDNN or MKL, see worldmodels/matmul.py): the ceiling for an update."""
    a, b = torch.randn(16384, 2560, device=device), torch.randn(256, 2560, device=device)
    for _ in range(3):
        linear(a, b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the warm-up must not run into the timed part
    began = time.perf_counter()
    for _ in range(10):
        linear(a, b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 10 * 2 * a.shape[0] * a.shape[1] * b.shape[0] / (time.perf_counter() - began) / 1e9


def time_updates(size: str, device: str, repeats: int, compile_steps: bool, defer_grads: bool) -> dict[str, float]:
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [f"model={size}", f"device={device}"])
    torch.manual_seed(0)
    agent = make_agent(cfg, VectorTask)
    agent.wm.rssm.defer_grads = defer_grads
    batch = fake_batch(cfg.batch.size, cfg.batch.length, agent.device)
    with FlopCounterMode(display=False) as flops:  # matmul FLOPs of one whole update, forward and backward
        agent.train_step(batch)
    if compile_steps:
        agent.compile_steps()
    began = time.perf_counter()
    for _ in range(2):  # warm-up (and compilation)
        agent.train_step(batch)
    warmup = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        agent.train_step(batch)
        if agent.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return {
        "s_per_update_median": float(np.median(times)),
        "s_per_update_min": float(np.min(times)),
        "warmup_s": warmup,
        "repeats": repeats,
        "gflop_per_update": flops.get_total_flops() / 1e9,
    }


def time_env_steps(size: str, device: str, steps: int) -> float:
    """Acting speed: policy (encoder + RSSM step + actor) and a Pendulum-v1 step, one env."""
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [f"model={size}", f"device={device}", "env.id=Pendulum-v1"])
    env = make_env(cfg.env, 0)
    agent = make_agent(cfg, env)
    driver = Driver(env, agent)
    for _ in range(20):
        driver.step()
    began, taken = time.perf_counter(), 0
    while taken < steps:
        n, _ = driver.step()
        taken += n
    return taken / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=1000)
    parser.add_argument("--compile", action="store_true", help="torch.compile the recurrent step functions")
    parser.add_argument("--no-keep-memory", dest="keep_memory", action="store_false", help="leave glibc's malloc as it is")
    parser.add_argument("--no-onednn", dest="onednn", action="store_false", help="every linear layer through MKL (run.onednn=false)")
    parser.add_argument("--no-defer", dest="defer", action="store_false", help="per-step weight gradients in the observe loop (run.defer_grads=false)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/speed.json (speed_compile.json with --compile)")
    args = parser.parse_args()
    args.out = args.out or ROOT / "benchmarks" / "results" / ("speed_compile.json" if args.compile else "speed.json")
    torch.set_num_threads(args.threads)
    set_onednn(args.onednn)
    if args.keep_memory:  # as `python -m worldmodels.train` does by default (run.keep_memory)
        keep_freed_memory()
    rows = {}
    peak = matmul_gflops(args.device)
    print(f"matmul throughput: {peak:.0f} GFLOP/s (float32, {args.threads} threads)", flush=True)
    for size in args.sizes:
        row = time_updates(size, args.device, args.repeats, args.compile, args.defer)
        # The matmuls alone at the measured throughput: no implementation of the same math can go below it.
        row["matmul_floor_s"] = row["gflop_per_update"] / peak
        row["env_steps_per_s"] = time_env_steps(size, args.device, args.env_steps)
        if size in OFFICIAL_JAX_S_PER_UPDATE and args.device == "cpu":
            row["official_jax_s_per_update"] = OFFICIAL_JAX_S_PER_UPDATE[size]
            row["speedup_vs_official"] = OFFICIAL_JAX_S_PER_UPDATE[size] / row["s_per_update_median"]
        rows[size] = row
        print(
            f"{size}: {row['s_per_update_median']:.3f} s/update (min {row['s_per_update_min']:.3f}), "
            f"{row['env_steps_per_s']:.0f} env steps/s, {row['gflop_per_update']:.0f} GFLOP/update "
            f"(matmul floor {row['matmul_floor_s']:.3f} s)"
            + (f", official JAX {row['official_jax_s_per_update']} s/update -> x{row['speedup_vs_official']:.2f}" if "official_jax_s_per_update" in row else ""),
            flush=True,
        )
    result = {
        "batch": "16 x 64",
        "precision": "float32",
        "device": args.device,
        "threads": args.threads,
        "matmul_gflop_per_s": peak,
        "compile": args.compile,
        "keep_memory": args.keep_memory,
        "onednn": onednn_enabled(),
        "defer_grads": args.defer,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
