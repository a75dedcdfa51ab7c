"""One imagination step of each latent dynamics backend, as imagination runs it: all B x T = 1024 start states of a
16 x 64 batch at once, no gradient, eager and compiled (run.compile compiles it inside Agent._imagine_step). Every
configuration is built in one process and timed in turns (round-robin), so the machine's drift hits all alike;
medians, and ratios to the compiled RSSM. glibc's malloc keeps freed memory, as `python -m worldmodels.train` has it
by default (run.keep_memory; without it every step page-faults its fresh key/value cache in). Saves
benchmarks/results/imagine_step.json.

    python benchmarks/imagine_step.py --size size1m --rounds 7 \\
        --configs "dynamics=rssm" "dynamics=transformer" "dynamics=transformer dynamics.d_model=128 dynamics.heads=4"
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from speed import VectorTask

from worldmodels.cpu.memory import keep_freed_memory
from worldmodels.runtime.setup import CONFIG_DIR, make_agent

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="size1m")
    parser.add_argument("--states", type=int, default=1024, help="start states stepped at once (B x T)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-keep-memory", dest="keep_memory", action="store_false", help="leave glibc's malloc as it is")
    parser.add_argument("--configs", nargs="+", default=["dynamics=rssm", "dynamics=transformer"],
                        help="one quoted string of overrides per configuration")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "imagine_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_memory:
        keep_freed_memory()
    steps = {}
    for config in args.configs:
        with initialize_config_dir(CONFIG_DIR, version_base=None):
            cfg = compose("config", [f"model={args.size}", *config.split()])
        torch.manual_seed(0)
        agent = make_agent(cfg, VectorTask)
        dynamics = agent.wm.dynamics
        action = torch.rand(args.states, agent.action_dim) * 2 - 1
        with torch.no_grad():
            state = dynamics.initial(args.states, "cpu")
            for _ in range(8):  # a full key/value cache for the Transformer
                state = dynamics.imagine_step(state, action)
        for mode, step in (("eager", dynamics.imagine_step), ("compiled", torch.compile(dynamics.imagine_step, dynamic=False))):
            def run(step=step, state=state, action=action) -> None:
                with torch.no_grad():
                    step(state, action)

            run(), run()  # warm-up (and compilation)
            steps[f"{config} ({mode})"] = run
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, run in steps.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians.get("dynamics=rssm (compiled)", next(iter(medians.values())))
    for name, median in medians.items():
        print(f"{name:70s} {median * 1e3:8.1f} ms  ({median / base:.2f}x)")
    record = {"size": args.size, "states": args.states, "rounds": args.rounds, "threads": args.threads, "keep_memory": args.keep_memory,
              "torch": torch.__version__,
              "ms_median": {name: m * 1e3 for name, m in medians.items()}, "vs_first_compiled": {n: m / base for n, m in medians.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
