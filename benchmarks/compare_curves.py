"""Curves of several `benchmarks/learning.py` results side by side: one panel per task, one line per result
and seed, evaluation return solid and training-episode return dashed; prints the final points as a table.

    python benchmarks/compare_curves.py --out benchmarks/results/v030_vs_v022.png \
        0.2.2=benchmarks/results/pendulum_v022/learning.json 0.3.0=benchmarks/results/pendulum_v030/learning.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(spec: str) -> tuple[str, dict]:
    label, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"error: expected LABEL=PATH, got {spec!r}")
    try:
        return label, json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read {path}: {e}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="LABEL=path/to/learning.json")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    results = [load(spec) for spec in args.results]
    tasks = sorted({task for _, result in results for task in result["tasks"]})

    print(f"{'task':<18} {'result':<24} {'seed':>4} {'step':>7} {'eval':>9} {'train':>9}")
    for task in tasks:
        for label, result in results:
            for seed, run in sorted(result["tasks"].get(task, {}).items()):
                if not run["curve"]:
                    continue
                step, value = run["curve"][-1]
                train = dict(map(tuple, run.get("train_curve", []))).get(step)
                shown = "-" if train is None else f"{train:.1f}"
                print(f"{task:<18} {label:<24} {seed:>4} {step:>7} {value:>9.1f} {shown:>9}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes[0], tasks):
        for i, (label, result) in enumerate(results):
            colour = colours[i % len(colours)]
            for seed, run in sorted(result["tasks"].get(task, {}).items()):
                if run["curve"]:
                    ax.plot(*zip(*run["curve"]), color=colour, label=f"{label} seed {seed} eval")
                train = [(s, v) for s, v in run.get("train_curve", []) if v is not None]
                if train:
                    ax.plot(*zip(*train), color=colour, linestyle="--", alpha=0.7, label=f"{label} seed {seed} train")
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
