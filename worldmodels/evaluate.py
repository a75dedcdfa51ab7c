"""Evaluation entry point: `python -m worldmodels.evaluate checkpoint=<run>/checkpoints/latest episodes=10`.

Loads a checkpoint (weights only, no code executed), runs the policy for N episodes in a fresh
environment built from the run's saved config, prints the returns and saves them as JSON in
`<run>/eval/<step>/summary.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from worldmodels.checkpoint import load_checkpoint
from worldmodels.driver import Driver
from worldmodels.errors import UserError
from worldmodels.setup import CONFIG_DIR, check_overrides, make_agent, make_env, seed_everything


def evaluate(checkpoint: str, episodes: int, seed: int = 0, device: str = "cpu", mode: str = "mode") -> dict:
    """Mean, std, min and max return of the checkpoint's policy over `episodes` episodes."""
    path = Path(checkpoint)
    payload = load_checkpoint(path, map_location=device)
    cfg = OmegaConf.create(payload["config"])
    cfg.device = device
    seed_everything(seed)
    env = make_env(cfg.env, seed + 20_000)
    agent = make_agent(cfg, env)
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {path} does not match its own config ({str(e).splitlines()[0]})") from None
    agent.eval()
    stats = Driver(env, agent, mode, cfg.env.action_repeat).episodes(episodes)
    env.close()
    returns = np.array([s["return"] for s in stats], dtype=np.float64)
    summary = {
        "checkpoint": str(path),
        "env": f"{cfg.env.suite}/{cfg.env.id}",
        "step": int(payload["step"]),
        "episodes": episodes,
        "mode": mode,
        "policy/return_mean": float(returns.mean()),
        "policy/return_std": float(returns.std()),
        "policy/return_min": float(returns.min()),
        "policy/return_max": float(returns.max()),
        "policy/length_mean": float(np.mean([s["length"] for s in stats])),
        "returns": returns.tolist(),
    }
    run_dir = path.parent.parent if path.is_file() else path.parent
    out = run_dir / "eval" / str(summary["step"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["saved"] = str(out / "summary.json")
    return summary


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        if not cfg.checkpoint:
            raise UserError("missing checkpoint=<run>/checkpoints/latest")
        if isinstance(cfg.episodes, bool) or not isinstance(cfg.episodes, int) or cfg.episodes < 1:
            raise UserError(f"config value episodes={cfg.episodes!r} is invalid: expected an integer >= 1")
        s = evaluate(str(cfg.checkpoint), cfg.episodes, cfg.seed, cfg.device, cfg.run.eval_mode)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{s['env']} at step {s['step']}: return {s['policy/return_mean']:.1f} +- {s['policy/return_std']:.1f} "
        f"(min {s['policy/return_min']:.1f}, max {s['policy/return_max']:.1f}) over {s['episodes']} episodes; saved {s['saved']}"
    )


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
