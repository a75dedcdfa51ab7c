"""Speed benchmark: seconds per train update (world model + actor + critic) and env steps per second.

Vector observations (17-D, 6-D continuous actions, as in MuJoCo locomotion), batch 16 x 64, float32 (or
bf16 compute with `--precision bf16`, run.precision: float32 weights, bfloat16 matmuls under torch.autocast).
Prints the machine (CPU model and its vector flags, threads, the measured matmul throughput; the GPU on
`--device cuda`) and a line per size, and saves `benchmarks/results/speed.json`. Results of different
machines are not compared here: the machine is recorded beside them instead.

    python benchmarks/speed.py --sizes size1m size12m --threads 2
    python benchmarks/speed.py --sizes size1m --compile steps dynamics=transformer   # any config override; on a CPU also
                                                                                     # peak resident memory (one size per process)
    python benchmarks/speed.py --device cuda --sizes size12m --compile update   # also peak GPU memory; no env steps
    python benchmarks/speed.py --device cuda --sizes size12m --precision bf16

`--compile` takes run.compile's modes (none, steps, update, auto; a bare `--compile` is `steps`); with `update` it
also prints the graph breaks dynamo meets in the whole update (0: one graph).

`benchmarks/gpu_check.sh` runs the GPU configurations one process each and prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import resource
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from worldmodels.agent.agent import PRECISIONS
from worldmodels.cpu.matmul import linear, onednn_enabled, set_onednn
from worldmodels.cpu.memory import keep_freed_memory
from worldmodels.runtime.driver import Driver
from worldmodels.runtime.setup import CONFIG_DIR, compile_mode, make_agent, make_env, make_updater
from worldmodels.strategies.compile import COMPILE_MODES, graph_breaks

ROOT = Path(__file__).resolve().parents[1]
# CPU flags worth knowing beside a speed (vector width, bf16/int8 matrix units); the rest of /proc/cpuinfo's list is left out.
NOTABLE_CPU_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "sve", "sve2", "bf16", "i8mm",  # aarch64 (the 'Features' line)
)


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


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work, so a timer reads finished work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cpu_info() -> dict:
    """The CPU from /proc/cpuinfo: model name, notable flags (AVX-512, bf16, AMX, ...), logical CPUs."""
    info = {"model": platform.processor() or platform.machine(), "arch": platform.machine(), "flags": [], "logical_cpus": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    model, flags = None, None
    for line in text.splitlines():  # the first processor's lines are enough
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and model is None:
            model = info["model"] = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    flags = flags or set()
    info["flags"] = [f for f in NOTABLE_CPU_FLAGS if f in flags]
    return info


def gpu_info(device: str) -> dict | None:
    """The GPU of a cuda device (name, compute capability, memory) and the CUDA version torch was built with."""
    if torch.device(device).type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
    }


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """What Agent.autocast enters for `precision`, for the matmul throughput measured outside an agent."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_gflops(device: str, precision: str = "float32") -> float:
    """This machine's matmul throughput on a head-sized product, through the same `linear` the networks use
    (oneDNN or MKL on the CPU, see worldmodels/cpu/matmul.py; F.linear on a GPU), in the update's precision
    (bf16: float32 operands under autocast, as the networks' layers): the ceiling for an update."""
    a, b = torch.randn(16384, 2560, device=device), torch.randn(256, 2560, device=device)
    with autocast(device, precision):
        began = time.perf_counter()
        linear(a, b)
        sync(device)
        first = time.perf_counter() - began
        # 3 warm-up calls and 10 timed ones, unless a call takes over a second (bf16 on a CPU without bf16
        # instructions: about 5 s at 2 threads of AVX2); then 2 timed calls after this one.
        slow = first > 1.0
        for _ in range(0 if slow else 2):
            linear(a, b)
        sync(device)  # the warm-up must not run into the timed part
        calls = 2 if slow else 10
        began = time.perf_counter()
        for _ in range(calls):
            linear(a, b)
        sync(device)
    return calls * 2 * a.shape[0] * a.shape[1] * b.shape[0] / (time.perf_counter() - began) / 1e9


def time_dynamics(agent, batch: dict[str, torch.Tensor], repeats: int) -> dict[str, float]:
    """The latent dynamics alone, as an update uses it: filtering the batch's window (forward and backward, on
    random embeddings) and one imagination step from all of the window's B * T states (no gradient)."""
    dyn, device = agent.wm.dynamics, agent.device
    B, T = batch["reward"].shape
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(B, T, agent.wm.encoder.out_dim, generator=g).to(device).requires_grad_()
    prev_action = torch.rand(B, T, agent.action_dim, generator=g).to(device) * 2 - 1
    start_state = dyn.initial(B, device)

    def observe():
        with agent.autocast():
            post, prior, _ = dyn.observe(embed, prev_action, batch["is_first"], start_state)
            loss = post["deter"].float().square().mean() + prior.mean() + post["logits"].mean()
        loss.backward()
        return post

    post = observe()
    with torch.no_grad():
        start = dyn.starts(post, start_state)
        start = {**start, "classes": start["stoch"].argmax(-1)}
        action = torch.rand(B * T, agent.action_dim, generator=g).to(device) * 2 - 1

    def imagine():
        with torch.no_grad(), agent.autocast():
            dyn.imagine_step(start, action)

    row = {}
    for name, fn in (("observe", observe), ("imagine_step", imagine)):
        fn()  # warm-up (and compilation)
        sync(device)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - began)
        row[f"{name}_s"] = float(np.median(times))
    agent.zero_grad(set_to_none=True)
    return row


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def time_updates(
    size: str, device: str, repeats: int, compile: str, defer_grads: bool, precision: str = "float32", overrides: tuple[str, ...] = ()
) -> dict[str, float | str]:
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [f"model={size}", f"device={device}", f"run.compile={compile}", f"run.defer_grads={defer_grads}",
                                 *overrides])
    cuda = torch.device(device).type == "cuda"
    if cuda:  # peak memory of this size alone: weights, optimiser state and one update's activations
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    rss_before = rss_mib()
    agent = make_agent(cfg, VectorTask)  # the CPU strategy on a CPU, unless the whole update is compiled
    agent.precision = precision  # as the trainer sets run.precision
    batch = fake_batch(cfg.batch.size, cfg.batch.length, agent.device)
    mode = compile_mode(cfg)
    breaks = None
    if mode == "update":  # dynamo's view of the update, on a copy (tracing runs one update)
        breaks, reasons = graph_breaks(copy.deepcopy(agent), batch)
        print(f"{size}: {breaks} graph breaks in the whole update" + "".join(f"\n  {r.splitlines()[0]}" for r in reasons[:5]), flush=True)
    with FlopCounterMode(display=False) as flops:  # matmul FLOPs of one whole update, forward and backward
        agent.train_step(batch)
    update = make_updater(cfg, agent)
    sync(agent.device)
    began = time.perf_counter()
    for _ in range(3 if mode == "update" else 2):  # warm-up and compilation (and on CUDA the graph's capture)
        update(batch)
    sync(agent.device)
    warmup = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        update(batch)
        sync(agent.device)  # the update reads nothing back: wait for its queued work
        times.append(time.perf_counter() - began)
    row = {
        "compile": mode,
        "graph_breaks": breaks,
        "s_per_update_median": float(np.median(times)),
        "s_per_update_min": float(np.min(times)),
        "warmup_s": warmup,
        "repeats": repeats,
        "batch": f"{cfg.batch.size} x {cfg.batch.length}",
        "gflop_per_update": flops.get_total_flops() / 1e9,
    }
    if not cuda:  # the process's peak resident memory (ru_maxrss, KiB on Linux): for one size alone, run one size per process
        row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["rss_before_agent_mib"] = rss_before
    if cuda:
        row["peak_gpu_mem_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["peak_gpu_mem_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    row.update(time_dynamics(agent, batch, repeats))
    return row


def time_env_steps(size: str, device: str, steps: int, precision: str = "float32") -> float:
    """Acting speed: policy (encoder + RSSM step + actor) and a Pendulum-v1 step, one env."""
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [f"model={size}", f"device={device}", "env.id=Pendulum-v1"])
    env = make_env(cfg.env, 0)
    agent = make_agent(cfg, env)
    agent.precision = precision
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
    parser.add_argument("--env-steps", type=int, default=None, help="acting steps timed per size; default 1000 on the CPU, 0 (skipped) on a GPU")
    parser.add_argument("--compile", nargs="?", const="steps", default="none", choices=COMPILE_MODES,
                        help="run.compile: none, steps (bare --compile), update (the whole update as one graph) or auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="compute precision (run.precision); bf16: bfloat16 autocast")
    parser.add_argument("--no-keep-memory", dest="keep_memory", action="store_false", help="leave glibc's malloc as it is")
    parser.add_argument("--no-onednn", dest="onednn", action="store_false", help="every linear layer through MKL (run.onednn=false)")
    parser.add_argument("--no-defer", dest="defer", action="store_false", help="per-step weight gradients in the observe loop (run.defer_grads=false)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/speed.json (speed_compile.json with --compile)")
    parser.add_argument("overrides", nargs="*", help="config overrides for the agent, e.g. dynamics=transformer")
    args = parser.parse_args()
    suffix = {"none": "", "steps": "_compile"}.get(args.compile, f"_compile_{args.compile}") + ("_bf16" if args.precision == "bf16" else "")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"speed{suffix}.json"
    on_cpu = torch.device(args.device).type == "cpu"
    if args.env_steps is None:  # acting one env at a time is a CPU-side measure; on a GPU it times launches and copies
        args.env_steps = 1000 if on_cpu else 0
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU")
    torch.set_num_threads(args.threads)
    set_onednn(args.onednn)
    if args.keep_memory:  # as `python -m worldmodels.train` does by default (run.keep_memory)
        keep_freed_memory()
    rows = {}
    cpu, gpu = cpu_info(), gpu_info(args.device)
    usable = f"{cpu['usable_cpus']} of " if "usable_cpus" in cpu else ""
    print(
        f"machine: {cpu['model']} ({cpu['arch']}), {usable}{cpu['logical_cpus']} logical CPUs, {args.threads} torch threads; "
        f"flags: {' '.join(cpu['flags']) or 'none of note'}",
        flush=True,
    )
    if gpu:
        print(f"gpu: {gpu['name']} (sm {gpu['capability']}, {gpu['memory_gib']:.0f} GiB), torch {torch.__version__}, CUDA {gpu['cuda']}", flush=True)
    peak = matmul_gflops(args.device, args.precision)
    print(f"matmul throughput: {peak:.0f} GFLOP/s ({args.precision}, {args.device}" + (f", {args.threads} threads)" if on_cpu else ")"), flush=True)
    for size in args.sizes:
        row = time_updates(size, args.device, args.repeats, args.compile, args.defer, args.precision, tuple(args.overrides))
        # The matmuls alone at the measured throughput: no implementation of the same math can go below it.
        row["matmul_floor_s"] = row["gflop_per_update"] / peak
        row["env_steps_per_s"] = time_env_steps(size, args.device, args.env_steps, args.precision) if args.env_steps > 0 else None
        rows[size] = row
        print(
            f"{size}: {row['s_per_update_median']:.3f} s/update (compile {row['compile']}) (min {row['s_per_update_min']:.3f}, warm-up {row['warmup_s']:.1f} s), "
            + (f"{row['env_steps_per_s']:.0f} env steps/s, " if row["env_steps_per_s"] is not None else "")
            + f"{row['gflop_per_update']:.0f} GFLOP/update (matmul floor {row['matmul_floor_s']:.3f} s)"
            + (f", peak GPU memory {row['peak_gpu_mem_allocated_mib']:.0f} MiB allocated" if "peak_gpu_mem_allocated_mib" in row else "")
            + (f", peak resident memory {row['peak_rss_mib']:.0f} MiB ({row['rss_before_agent_mib']:.0f} before the agent)" if "peak_rss_mib" in row else "")
            + f"; dynamics: observe window {row['observe_s']:.3f} s (forward + backward), imagination step {row['imagine_step_s'] * 1e3:.1f} ms",
            flush=True,
        )
    result = {
        "batch": "16 x 64",
        "precision": args.precision,
        "device": args.device,
        "threads": args.threads,
        "matmul_gflop_per_s": peak,
        "compile": args.compile,
        "keep_memory": args.keep_memory,
        "onednn": onednn_enabled(),
        "defer_grads": args.defer,
        "overrides": list(args.overrides),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu,
        "gpu": gpu,
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
