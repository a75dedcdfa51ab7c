"""Chaos check of crash-safe training: kill -9 a training run at random moments, resume, repeat.

Some kills are aimed at the moment a checkpoint or a replay chunk is being written (the script waits
for the temporary file to appear). After every resume it checks that the step counter never went
back past the last checkpoint, and at the end that every replay chunk loads and that no kill lost
more env steps than the checkpoint interval. Prints the figures and saves benchmarks/results/chaos.json.

    python benchmarks/chaos.py --kills 12
    python benchmarks/chaos.py --kills 6 --num-envs 2 --save-every 10 --chunk 10 --startup 15 --out benchmarks/results/chaos_2envs.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def last_step(metrics: Path) -> int:
    """The newest env step in metrics.jsonl (ignoring a torn last line)."""
    step = 0
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                step = max(step, json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError):
                pass
    return step


def wait_for_write(run_dir: Path, target: str, timeout: float) -> bool:
    """Poll until a temporary checkpoint or replay file exists (a write is in progress)."""
    folder, pattern = (run_dir / "checkpoints", ".latest.tmp-*") if target == "checkpoint" else (run_dir / "replay", ".*.tmp")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if folder.exists() and any(folder.rglob(pattern)):  # rglob: replay/env<i>/ with several envs
            return True
        time.sleep(0.0005)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--save-every", type=int, default=40, help="env steps between checkpoints (the flush interval)")
    parser.add_argument("--chunk", type=int, default=20, help="replay steps per chunk file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=1, help="env.num_envs (env steps are summed over the envs)")
    parser.add_argument("--startup", type=float, default=4.0, help="seconds a run is left to start before a kill is aimed")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "chaos")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chaos.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.run_dir.exists():
        import shutil

        shutil.rmtree(args.run_dir)
    final_steps = 100_000
    cmd = [sys.executable, "-m", "worldmodels.train", "env=dummy", "model=debug", "run.progress=false", "run.eval_every=0",
           "run.log_every=5", f"run.save_every={args.save_every}", f"replay.chunk={args.chunk}", "run.threads=1",
           f"env.num_envs={args.num_envs}", f"run.dir={args.run_dir}"]
    kills, resumed_steps, problems = [], [], []
    warnings_seen = 0
    for k in range(args.kills):
        proc = subprocess.Popen([*cmd, f"run.steps={final_steps}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        mode = ["random", "checkpoint", "replay"][k % 3]
        started = time.time()
        time.sleep(args.startup)  # start-up: imports and building the agent (and the env workers)
        if mode == "random":
            time.sleep(rng.uniform(0.5, 6.0))
            hit = True
        else:
            hit = wait_for_write(args.run_dir, mode, timeout=30.0)
        reached = last_step(args.run_dir / "metrics.jsonl")
        os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        warnings_seen += stderr.count("unreadable") + stderr.count("instead")
        resumed = [line for line in stderr.splitlines() if line.startswith("resuming")]
        # None: killed before it got as far as resuming (it then changed nothing on disk).
        resumed_steps.append(int(resumed[0].split(" at step ")[1].split()[0]) if resumed else None)
        kills.append({"mode": mode, "hit_write": hit, "seconds": round(time.time() - started, 1), "last_logged_step": reached})
        print(f"kill {k + 1}: {mode}{'' if hit else ' (no write seen, killed anyway)'} at logged step {reached}", flush=True)
    # Final resume, run a little further to completion.
    probe = subprocess.run([*cmd, "run.steps=1"], cwd=ROOT, capture_output=True, text=True, check=False)  # resumes, nothing to do
    start = int(probe.stderr.split(" at step ")[1].split()[0]) if " at step " in probe.stderr else 0
    done = subprocess.run([*cmd, f"run.steps={start + 2 * args.save_every}"], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        problems.append(f"final resume failed: {done.stderr.strip().splitlines()[-1]}")
    warnings_seen += done.stderr.count("unreadable") + done.stderr.count("instead")
    # Steps lost per kill: what was logged before the kill minus where the next run resumed.
    # The process started after kill k is number k + 1; the first one that got as far as resuming
    # tells where kill k's run was picked up again.
    lost = []
    after_kill = [*resumed_steps[1:], start]
    for k, kill in enumerate(kills):
        resumed_at = next(step for step in after_kill[k:] if step is not None)
        lost.append(max(0, kill["last_logged_step"] - resumed_at))
        if resumed_at + args.save_every + args.num_envs - 1 < kill["last_logged_step"]:  # a step takes num_envs env steps
            problems.append(f"kill at step {kill['last_logged_step']} resumed at {resumed_at}")
    resumes = [step for step in after_kill if step is not None]
    if any(b < a for a, b in itertools.pairwise(resumes)):
        problems.append(f"step counter went backwards: {resumes}")
    steps = [json.loads(line)["step"] for line in (args.run_dir / "metrics.jsonl").read_text().splitlines()]
    if steps != sorted(steps):
        problems.append("metrics.jsonl steps are not monotone")
    corrupt = 0
    chunks = sorted((args.run_dir / "replay").rglob("*.npz"))  # replay/env<i>/ with several envs
    for path in chunks:
        try:
            with np.load(path, allow_pickle=False) as data:
                _ = [data[key] for key in data.files]
        except Exception:  # noqa: BLE001
            corrupt += 1
    if corrupt:
        problems.append(f"{corrupt} replay chunks do not load")
    result = {
        "kills": len(kills),
        "kills_during_checkpoint_write": sum(k["mode"] == "checkpoint" and k["hit_write"] for k in kills),
        "kills_during_replay_write": sum(k["mode"] == "replay" and k["hit_write"] for k in kills),
        "resumed_at": resumes,
        "steps_lost_per_kill": lost,
        "max_steps_lost": max(lost) if lost else 0,
        "flush_interval": args.save_every,
        "num_envs": args.num_envs,
        "replay_chunks": len(chunks),
        "replay_chunks_corrupt": corrupt,
        "damage_warnings": warnings_seen,
        "final_step": last_step(args.run_dir / "metrics.jsonl"),
        "problems": problems,
        "details": kills,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        f"kills survived: {len(kills)} ({result['kills_during_checkpoint_write']} during checkpoint writes, "
        f"{result['kills_during_replay_write']} during replay writes); steps lost per kill: max {result['max_steps_lost']} "
        f"(flush interval {args.save_every}), mean {np.mean(lost):.1f}; replay chunks {len(chunks)}, corrupt {corrupt}; "
        f"problems: {problems or 'none'}"
    )
    print(f"saved {args.out}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
