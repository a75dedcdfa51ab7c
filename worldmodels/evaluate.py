"""Evaluation entry point: the policy's returns and how well the world model predicts the world.

    python -m worldmodels.evaluate checkpoint=runs/<run>/checkpoints/latest episodes=10
    python -m worldmodels.evaluate 'checkpoint=[runs/a/checkpoints/latest,runs/b/checkpoints/latest]'

Loads each checkpoint (weights only, no code executed), runs its policy for N episodes in a fresh
environment built from the run's saved config, and writes `<run>/eval/<step>/`: summary.json (every
scalar and per-horizon curve), openloop_error.png, openloop_trajectories.png, reward.png, and the
same scalars to the run's TensorBoard. Given several checkpoints, the open-loop report of every one
is computed on the same episodes and a comparison table and plot are written too.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from worldmodels.evaluation.imagination import WorldModelPredictor
from worldmodels.evaluation.report import build_report, plot_curves, table, write_report
from worldmodels.runtime.checkpoint import load_agent_state, load_checkpoint
from worldmodels.runtime.config import chosen
from worldmodels.runtime.driver import Driver, VectorDriver
from worldmodels.runtime.errors import UserError, exit_with
from worldmodels.runtime.setup import CONFIG_DIR, entry_point, make_agent, make_env, seed_everything


def run_dir_of(path: Path) -> Path:
    return path.parent.parent if path.is_file() or path.name in ("latest", "previous") else path.parent


def load_agent(checkpoint: str, payload: dict[str, Any], device: str) -> tuple[DictConfig, Any, dict[str, Any]]:
    path = Path(checkpoint)
    cfg = OmegaConf.create(payload["config"])
    cfg.device = device
    env = make_env(cfg.env, 0)
    agent = make_agent(cfg, env)
    env.close()
    load_agent_state(agent, payload.get("agent", {}), path)
    agent.eval()
    return cfg, agent, payload


def policy_episodes(cfg: DictConfig, agent: Any, episodes: int, seed: int, mode: str) -> tuple[list, dict[str, Any]]:
    """Recorded episodes of the policy and its return statistics. An env that is already batched (a
    gymnasium.vector.VectorEnv) runs them in its envs at once (VectorDriver.record), with no simulator states."""
    seed_everything(seed)
    env = make_env(cfg.env, seed + 20_000)
    driver = (VectorDriver if isinstance(env, gym.vector.VectorEnv) else Driver)(env, agent, mode, cfg.env.action_repeat)
    try:
        recorded, stats = driver.record(episodes, sim_state=True)
    finally:
        driver.close()
    returns = np.array([s["return"] for s in stats], dtype=np.float64)
    policy = {
        "policy/return_mean": float(returns.mean()),
        "policy/return_std": float(returns.std()),
        "policy/return_min": float(returns.min()),
        "policy/return_max": float(returns.max()),
        "policy/length_mean": float(np.mean([s["length"] for s in stats])),
        "returns": returns.tolist(),
    }
    return recorded, policy


def fit_horizon(episodes: list[dict[str, np.ndarray]], context: int, horizon: int) -> int:
    """The open-loop horizon the recorded episodes allow: `horizon`, or less (with a warning) where
    even the longest episode is shorter than context + horizon; 0 where it is too short for any."""
    longest = max(len(ep["reward"]) for ep in episodes)
    fitted = min(horizon, longest - context)
    if fitted < 1:
        print(f"warning: no open-loop report: the longest evaluation episode has {longest} steps, "
              f"not more than report.context={context}", file=sys.stderr)
        return 0
    if fitted < horizon:
        print(f"warning: open-loop horizon lowered from report.horizon={horizon} to {fitted}: the longest "
              f"evaluation episode has {longest} steps", file=sys.stderr)
    return fitted


def evaluate(
    checkpoints: list[str],
    episodes: int = 10,
    seed: int = 0,
    device: str = "cpu",
    mode: str = "mode",
    context: int = 5,
    horizon: int = 45,
    starts: int = 256,
    out: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Report every checkpoint; open-loop metrics use the first checkpoint's episodes for all of them."""
    if context < 1 or horizon < 1:
        raise UserError(f"report.context={context} and report.horizon={horizon} must both be >= 1")
    if starts < 1:
        raise UserError(f"report.starts={starts} must be >= 1")
    payloads = [load_checkpoint(c, map_location=device) for c in checkpoints]
    envs = {f"{p['config']['env']['suite']}/{p['config']['env']['id']}" for p in payloads}
    if len(envs) > 1:
        raise UserError(f"checkpoints of different environments cannot be compared: {', '.join(sorted(envs))}")
    loaded = [(c, *load_agent(c, p, device)) for c, p in zip(checkpoints, payloads)]
    shared, fitted = None, 0
    done: list[tuple[Path, dict[str, Any]]] = []
    for checkpoint, cfg, agent, payload in loaded:
        recorded, policy = policy_episodes(cfg, agent, episodes, seed, mode)
        if shared is None:  # every checkpoint is reported on the first one's episodes
            shared, fitted = recorded, fit_horizon(recorded, context, horizon)
        report = {}
        if fitted:
            # imagined actions are replayed here from recorded simulator states (none from a batched env: no replayed_*)
            replay_env = make_env(cfg.env, seed + 30_000) if "sim_state" in shared[0] else None
            try:
                report = build_report(WorldModelPredictor(agent), shared, context, fitted, starts, replay_env)
            finally:
                if replay_env is not None:
                    replay_env.close()
        report = {"checkpoint": checkpoint, "env": f"{cfg.env.suite}/{cfg.env.id}", "step": int(payload["step"]),
                  "episodes": episodes, "mode": mode, **policy, **report}
        run_dir = run_dir_of(Path(checkpoint))
        target = run_dir / "eval" / str(report["step"])
        write_report(report, target, run_dir / "tb", report["step"])
        report["saved"] = str(target)
        done.append((run_dir, report))
    reports = dict(zip(report_names([(d, r["step"]) for d, r in done]), (r for _, r in done)))
    if len(reports) > 1:
        folder = Path(out) if out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        folder.mkdir(parents=True, exist_ok=True)
        if fitted:
            plot_curves(reports, folder / "compare_error.png")
        public = {name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in reports.items()}
        (folder / "compare.json").write_text(json.dumps(public, indent=2))
        (folder / "compare.txt").write_text(table(reports) + "\n")
        for report in reports.values():
            report["compare"] = str(folder)
    return reports


def report_names(runs: list[tuple[Path, int]]) -> list[str]:
    """One distinct name per (run folder, step): `folder@step`, with as many parent folders as it takes to tell
    apart runs of the same folder name (runs/a/seed0 and runs/b/seed0: a/seed0@..., b/seed0@...)."""
    names: list[str] = []
    for depth in range(1, max(len(d.parts) for d, _ in runs) + 1):
        names = [f"{'/'.join(d.parts[-depth:])}@{step}" for d, step in runs]
        if len(set(names)) == len(names):
            return names
    return [f"{name} ({i + 1})" for i, name in enumerate(names)]  # the same checkpoint given twice


def _overridden(group: str) -> bool:
    """Whether the command line sets `group` or a key under it."""
    try:
        return any(o.split("=")[0].lstrip("+~").split(".")[0] == group for o in HydraConfig.get().overrides.task)
    except ValueError:
        return False


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        if not cfg.checkpoint:
            raise UserError("missing checkpoint=<run>/checkpoints/latest")
        checkpoints = [str(c) for c in cfg.checkpoint] if isinstance(cfg.checkpoint, ListConfig) else [str(cfg.checkpoint)]
        if isinstance(cfg.episodes, bool) or not isinstance(cfg.episodes, int) or cfg.episodes < 1:
            raise UserError(f"config value episodes={cfg.episodes!r} is invalid: expected an integer >= 1")
        # The checkpoint decides the environment, the dynamics backend and the objective; naming others is a mistake.
        check_env = _overridden("env")
        named = {group: says for group, says in (("dynamics", "{} dynamics"), ("objective", "the {} objective")) if _overridden(group)}
        for checkpoint in checkpoints if check_env or named else []:
            saved_cfg = OmegaConf.create(load_checkpoint(checkpoint)["config"])
            for group, says in named.items():
                if (saved_name := chosen(saved_cfg, group)) != cfg[group].name:
                    raise UserError(f"checkpoint {checkpoint} has {says.format(saved_name)}, not {cfg[group].name}")
            if check_env:
                saved = saved_cfg.env
                if OmegaConf.to_container(saved) != OmegaConf.to_container(cfg.env):
                    raise UserError(
                        f"checkpoint {checkpoint} is of environment {saved.suite}/{saved.id}, not {cfg.env.suite}/{cfg.env.id}"
                    )
        r = cfg.report
        reports = evaluate(checkpoints, cfg.episodes, cfg.seed, cfg.device, cfg.run.eval_mode, r.context, r.horizon, r.starts, r.out)
    except UserError as e:
        exit_with(e)
    print(table(reports))
    for name, s in reports.items():
        print(
            f"{name} ({s['env']}): return {s['policy/return_mean']:.1f} +- {s['policy/return_std']:.1f} "
            f"(min {s['policy/return_min']:.1f}, max {s['policy/return_max']:.1f}) over {s['episodes']} episodes; saved {s['saved']}"
        )
    if len(reports) > 1:
        print(f"comparison: {next(iter(reports.values()))['compare']}")


def main() -> None:
    entry_point(hydra_main)


if __name__ == "__main__":
    main()
