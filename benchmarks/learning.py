"""Learning benchmark: return against env steps on Gymnasium and DMC tasks, several seeds.

Each (task, seed) is a real `python -m worldmodels.train` run in its own subprocess (`--threads` torch
threads each, `--parallel` at a time); the curves come from the runs' metrics.jsonl. Two returns per eval
point: `eval`, the greedy evaluation episodes (run.eval_mode), and `train`, the training episodes (actions
sampled from the policy) that ended since the previous eval point. The published DreamerV3 scores are
training-episode returns, so they are compared with `train`. Prints a table and saves
`benchmarks/results/learning.json` and `learning.png`. With --report-only, a run whose folder is gone is
taken from the learning.json already in --out (its training return unknown if that file predates it).

    python benchmarks/learning.py --tasks Pendulum-v1 CartPole-v1 --seeds 0 1 2 --steps 20000
    python benchmarks/learning.py --tasks Pendulum-v1 --seeds 0 --parallel 1 --threads 2 \
        --out benchmarks/results/pendulum_solo --runs runs/bench-solo    # wall-clock of one run alone
    python benchmarks/learning.py --suite dmc --tasks cartpole-swingup walker-walk --seeds 0 1 --steps 100000 \
        --eval-every 10000 --out benchmarks/results/dmc_proprio --runs runs/bench-dmc-proprio exp=dmc_proprio
    python benchmarks/learning.py --suite dmc --tasks cartpole-swingup --seeds 0 1 --steps 100000 \
        --eval-every 5000 --out benchmarks/results/dmc_small --runs runs/bench-dmc-small model=size1m exp=small
    python benchmarks/learning.py --suite dmc --tasks cartpole-swingup --seeds 0 1 --steps 100000 \
        --eval-every 10000 --out benchmarks/results/dmc_vision --runs runs/bench-dmc-vision exp=dmc_vision
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The settings the README recommends for small vector tasks on a CPU (see README, "Benchmarks").
RECOMMENDED = {"gym": ["model=size1m", "exp=small"], "dmc": []}  # for dmc, pass exp=dmc_proprio or exp=dmc_vision
TARGETS = {"Pendulum-v1": -200.0, "CartPole-v1": 475.0}
# Official DreamerV3 scores (mean over seeds) at env steps, from REFERENCE.md, drawn beside our curves;
# by observation kind, since the pixel (vision) scores of a DMC task differ from its proprio ones.
PUBLISHED = {
    "proprio": {"cartpole-swingup": {10_000: 63, 50_000: 322, 100_000: 528, 200_000: 788, 490_000: 856},
                "walker-walk": {500_000: 938}},
    "pixels": {"cartpole-swingup": {1_000_000: 860}, "walker-walk": {1_000_000: 960}},
}


def published(overrides: list[str]) -> dict[str, dict[int, float]]:
    """The published curves that match the runs' observations (DMC pixels through env.obs or exp=dmc_vision)."""
    pixels = any(o in ("env.obs=pixels", "exp=dmc_vision") for o in overrides)
    return PUBLISHED["pixels" if pixels else "proprio"]


def curve(run_dir: Path) -> list[tuple[int, float]]:
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval/return" in row:
            points.append((row["step"], row["eval/return"]))
    return points


def train_curve(metrics: Path, ends: list[int]) -> list[tuple[int, float | None]]:
    """Mean return of the training episodes that ended in each window (previous end, end], None where none did.

    The trainer logs `episode/return`, the mean over the `episode/count` episodes that ended since its previous line.
    """
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [(r["step"], r["episode/return"], r["episode/count"]) for r in rows if r.get("episode/count")]
    points, start = [], float("-inf")
    for end in ends:
        window = [(ret, n) for step, ret, n in rows if start < step <= end]
        count = sum(n for _, n in window)
        points.append((end, sum(ret * n for ret, n in window) / count if count else None))
        start = end
    return points


def record(run_dir: Path, returncode: int | None, wall_s: float, **extra) -> dict:
    """A run's entry in learning.json: eval curve and training-episode curve at the same steps."""
    points = curve(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    train = train_curve(run_dir / "metrics.jsonl", [step for step, _ in points]) if points else []
    return {"returncode": returncode, "wall_s": wall_s, "curve": points, "train_curve": train, "run_dir": str(run_dir), **extra}


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def show(value: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


def table(results: dict, scores: dict[str, dict[int, float]]) -> str:
    """Per task and eval step, the means over seeds of both returns, and the published score where there is one."""
    lines = []
    for task, seeds in sorted(results.items()):
        evals, trains = defaultdict(list), defaultdict(list)
        for run in seeds.values():
            for step, value in run["curve"]:
                evals[step].append(value)
            for step, value in run.get("train_curve", []):  # absent from learning.json files older than it
                trains[step].append(value)
        published_here = {s: v for s, v in scores.get(task, {}).items() if evals and s <= max(evals)}
        lines.append(f"{task}, mean over seeds. eval: greedy eval episodes; train: training episodes ended since the "
                     "previous eval point, the kind DreamerV3 publishes (compare published with train)")
        lines.append(f"{'step':>9} {'eval':>9} {'train':>9} {'published':>9}")
        for step in sorted(set(evals) | set(published_here)):
            lines.append(f"{step:>9} {show(mean(evals[step]))} {show(mean(trains[step]))} {show(published_here.get(step))}")
    return "\n".join(lines)


def finished(run_dir: Path, steps: int) -> bool:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    lines = metrics.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1])["step"] >= steps


def wall_time(run_dir: Path) -> float:
    """Seconds of training the run reports (`train/wall_s`, summed over resumed segments by the trainer)."""
    metrics = run_dir / "metrics.jsonl"
    last = json.loads(metrics.read_text().splitlines()[-1])
    if "train/wall_s" in last:
        return float(last["train/wall_s"])
    return metrics.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime  # runs from before the field existed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="gym", choices=["gym", "dmc"])
    parser.add_argument("--tasks", nargs="+", default=["Pendulum-v1", "CartPole-v1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--report-only", action="store_true", help="start nothing: summarise the runs as they are (unfinished ones too)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(task, seed) for task in args.tasks for seed in args.seeds]
    running: list[tuple[str, int, Path, subprocess.Popen, float]] = []
    results: dict[str, dict] = {}
    saved = args.out / "learning.json"
    previous = json.loads(saved.read_text())["tasks"] if args.report_only and saved.exists() else {}
    while jobs or running:
        while jobs and len(running) < args.parallel:
            task, seed = jobs.pop(0)
            run_dir = args.runs / f"{task}-seed{seed}"
            if finished(run_dir, args.steps):  # a finished run is reused, so the benchmark can be resumed
                results.setdefault(task, {})[str(seed)] = record(run_dir, 0, wall_time(run_dir))
                print(f"reuse: {run_dir}", flush=True)
                continue
            if args.report_only:
                if (run_dir / "metrics.jsonl").exists():
                    results.setdefault(task, {})[str(seed)] = record(run_dir, None, wall_time(run_dir), unfinished=True)
                elif str(seed) in previous.get(task, {}):  # the run folder is gone: keep what was saved of it
                    results.setdefault(task, {})[str(seed)] = previous[task][str(seed)]
                continue
            # An unfinished run (the benchmark was stopped) resumes from its checkpoint: same command, same folder.
            cmd = [sys.executable, "-m", "worldmodels.train", f"env={args.suite}", f"env.id={task}", f"seed={seed}",
                   f"run.steps={args.steps}", f"run.eval_every={args.eval_every}", "run.eval_episodes=5",
                   f"run.threads={args.threads}", "run.progress=false", f"run.dir={run_dir}", *RECOMMENDED[args.suite], *args.overrides]
            print("start:", " ".join(cmd[2:]), flush=True)
            args.runs.mkdir(parents=True, exist_ok=True)
            log = open(args.runs / f"{run_dir.name}.log", "a")  # noqa: SIM115 - closed with the process
            running.append((task, seed, run_dir, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log), time.time()))
        time.sleep(5)
        for item in list(running):
            task, seed, run_dir, proc, began = item
            if proc.poll() is None:
                continue
            running.remove(item)
            wall = wall_time(run_dir) if (run_dir / "metrics.jsonl").exists() else time.time() - began
            run = results.setdefault(task, {})[str(seed)] = record(run_dir, proc.returncode, wall)
            final = run["curve"][-1][1] if run["curve"] else None
            train = run["train_curve"][-1][1] if run["train_curve"] else None
            print(f"done: {task} seed {seed}: final eval return {show(final, 0)}, training-episode return {show(train, 0)}, "
                  f"{wall / 60:.1f} min, rc {proc.returncode}", flush=True)
            save(results, args)
    summary = save(results, args)
    print(table(results, published(args.overrides)))
    for task, row in summary.get("final", {}).items():
        target = TARGETS.get(task)
        verdict = "" if target is None else f" ({'meets' if row['mean'] >= target else 'misses'} target {target})"
        print(f"{task}: mean final eval return {row['mean']:.1f} over {row['seeds']} seeds{verdict}, "
              f"training-episode return {show(row['train_mean'], 0)}, {row['wall_min_mean']:.1f} min per run; "
              f"per seed: eval {row['per_seed']}, train {row['train_per_seed']}")
    print(f"saved {args.out / 'learning.json'} and {args.out / 'learning.png'}")


def save(results: dict, args: argparse.Namespace) -> dict:
    scores = published(args.overrides)
    summary = {"settings": RECOMMENDED[args.suite] + list(args.overrides), "steps": args.steps, "targets": TARGETS,
               "published": {t: scores[t] for t in results if t in scores}, "tasks": results}
    for task, seeds in results.items():
        done = {seed: s for seed, s in sorted(seeds.items()) if s["curve"] and not s.get("unfinished")}
        finals = [s["curve"][-1][1] for s in done.values()]
        trains = {seed: s["train_curve"][-1][1] if s.get("train_curve") else None for seed, s in done.items()}
        if finals:
            summary.setdefault("final", {})[task] = {
                "mean": sum(finals) / len(finals),
                "seeds": len(finals),
                "per_seed": {seed: round(s["curve"][-1][1], 1) for seed, s in done.items()},
                "train_mean": mean(list(trains.values())),  # training episodes: what the published scores are
                "train_per_seed": {seed: None if v is None else round(v, 1) for seed, v in trains.items()},
                "unfinished_seeds": sorted(seed for seed, s in seeds.items() if s.get("unfinished")),
                "wall_min_mean": sum(s["wall_s"] for s in seeds.values() if not s.get("unfinished")) / len(finals) / 60,
            }
    (args.out / "learning.json").write_text(json.dumps(summary, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
        for ax, (task, seeds) in zip(axes[0], sorted(results.items())):
            for seed, run in sorted(seeds.items()):
                note = " (unfinished)" if run.get("unfinished") else ""
                color = None
                if run.get("train_curve"):  # training episodes, the published scores' kind: solid
                    xs, ys = zip(*[(x, float("nan") if y is None else y) for x, y in run["train_curve"]])
                    color = ax.plot(xs, ys, marker="o", ms=4, label=f"seed {seed} train{note}")[0].get_color()
                if run["curve"]:  # greedy eval episodes: dotted, in the seed's colour
                    xs, ys = zip(*run["curve"])
                    ax.plot(xs, ys, marker=".", ls=":", color=color, alpha=0.7, label=f"seed {seed} eval{note}")
            if task in TARGETS:
                ax.axhline(TARGETS[task], color="k", ls="--", lw=1, label="target")
            points = [(x, y) for x, y in scores.get(task, {}).items() if x <= args.steps]
            if points:  # walker-walk is only published at 500k steps: nothing to draw within 100k
                xs, ys = zip(*points)
                ax.plot(xs, ys, "k*", ms=9, label="DreamerV3 published (train episodes)")
            ax.set(title=task, xlabel="env steps", ylabel="return (solid: train episodes, dotted: eval)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out / "learning.png", dpi=100)
        plt.close(fig)
    except Exception as e:  # noqa: BLE001 - the JSON is the result; the plot is a convenience
        print(f"plot failed: {e}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
