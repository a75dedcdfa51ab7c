"""Training entry point: `python -m worldmodels.train [overrides]` (a Hydra application)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from worldmodels.checkpoint import save_checkpoint
from worldmodels.config import validate
from worldmodels.driver import Driver
from worldmodels.errors import UserError
from worldmodels.logger import Logger
from worldmodels.replay import Replay
from worldmodels.setup import CONFIG_DIR, check_overrides, make_agent, make_env, seed_everything, set_threads, to_torch


def prepare_run_dir(cfg: DictConfig) -> Path:
    """The run's folder: run.dir, or a fresh runs/<suite>-<task>-<time>. Refuses to overwrite a trained run."""
    if cfg.run.dir:
        run_dir = Path(cfg.run.dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.env.suite}-{cfg.env.id}-{stamp}".replace("/", "-")
    if (run_dir / "checkpoints" / "latest").exists():
        raise UserError(f"run folder {run_dir} already holds a trained run; pick another run.dir")
    return run_dir


class Trainer:
    """Collect with the current policy, train at the configured ratio, evaluate, log and checkpoint."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.env = make_env(cfg.env, cfg.seed)
        self.eval_env = make_env(cfg.env, cfg.seed + 10_000)
        self.agent = make_agent(cfg, self.env)
        if cfg.run.compile:
            self.agent.compile_steps()
        self.replay = Replay(cfg.replay.capacity, seed=cfg.seed)
        repeat = cfg.env.action_repeat
        self.driver = Driver(self.env, self.agent, "sample", repeat)
        self.eval_driver = Driver(self.eval_env, self.agent, cfg.run.eval_mode, repeat)
        self.step = 0
        self.updates = 0
        self.train_from: int | None = None  # env step at which training started (train-ratio accounting)

    def save(self) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / "latest",
            {
                "config": OmegaConf.to_container(self.cfg, resolve=True),
                "step": self.step,
                "updates": self.updates,
                "agent": self.agent.state_dict(),
                "optimizer": self.agent.opt.state_dict(),
            },
        )

    def evaluate(self) -> float:
        returns = [s["return"] for s in self.eval_driver.episodes(self.cfg.run.eval_episodes)]
        return float(np.mean(returns))

    def train_updates(self) -> dict[str, list[float]]:
        """Run the updates owed at the current env step: updates * B * T ~= train_ratio * env steps."""
        cfg = self.cfg
        metrics: dict[str, list[float]] = defaultdict(list)
        if self.step < cfg.run.train_start or len(self.replay) < cfg.batch.length:
            return metrics
        if self.train_from is None:
            self.train_from = self.step
        replayed = cfg.batch.size * cfg.batch.length
        due = 1 + int((self.step - self.train_from) * cfg.run.train_ratio / replayed)
        while self.updates < due:
            batch = to_torch(self.replay.sample(cfg.batch.size, cfg.batch.length), self.agent.device)
            for key, value in self.agent.train_step(batch).items():
                metrics[key].append(value)
            self.updates += 1
        return metrics

    def run(self) -> None:
        cfg = self.cfg
        total = cfg.run.steps
        logger = Logger(self.run_dir, total, progress=cfg.run.progress)
        pending: dict[str, list[float]] = defaultdict(list)
        episodes: list[float] = []
        last_return = eval_return = None
        next_log, next_eval, next_save = cfg.run.log_every, cfg.run.eval_every, cfg.run.save_every
        start, start_step = time.time(), self.step
        try:
            while self.step < total:
                taken, done = self.driver.step(self.replay.add)
                self.step += taken
                if done is not None:
                    episodes.append(done["return"])
                    last_return = done["return"]
                for key, values in self.train_updates().items():
                    pending[key].extend(values)
                final = self.step >= total
                line: dict[str, float] = {}
                if cfg.run.eval_every and self.step >= next_eval or final:
                    eval_return = self.evaluate()
                    line["eval/return"] = eval_return
                    next_eval += cfg.run.eval_every
                if cfg.run.log_every and self.step >= next_log or final or line:
                    elapsed = max(time.time() - start, 1e-9)
                    line.update({k: float(np.mean(v)) for k, v in pending.items()})
                    if episodes:
                        line["episode/return"] = float(np.mean(episodes))
                        line["episode/count"] = len(episodes)
                    line.update({"train/updates": self.updates, "train/env_steps_per_s": (self.step - start_step) / elapsed})
                    logger.write(self.step, line)
                    pending.clear()
                    episodes.clear()
                    while next_log <= self.step:
                        next_log += cfg.run.log_every or total
                if cfg.run.save_every and self.step >= next_save:
                    self.save()
                    next_save += cfg.run.save_every
                postfix = {"updates": self.updates}
                if last_return is not None:
                    postfix["return"] = last_return
                if eval_return is not None:
                    postfix["eval"] = eval_return
                logger.progress(min(self.step, total), **postfix)
            self.save()
        finally:
            logger.close()
            self.env.close()
            self.eval_env.close()


def train(cfg: DictConfig) -> Path:
    """Validate, build, train; returns the run folder. Bad input raises UserError before anything is written."""
    validate(cfg)
    seed_everything(cfg.seed)
    set_threads(cfg.run.threads)
    run_dir = prepare_run_dir(cfg)
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg, False)
    cfg.run.dir = str(run_dir)
    trainer = Trainer(cfg, run_dir)  # builds envs and agent: raises on bad input before the folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    print(f"run folder: {run_dir}", file=sys.stderr)
    trainer.run()
    print(f"done: {trainer.step} env steps, {trainer.updates} updates; checkpoint {run_dir / 'checkpoints' / 'latest'}", file=sys.stderr)
    return run_dir


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
