"""Training entry point: `python -m worldmodels.train [overrides]` (a Hydra application).

The loop reads as the official one: step every env once and store the steps, train at the ratio, log, evaluate,
save. Rerunning the same command in the same `run.dir` (or passing `resume=<run folder>`) continues a run where its
last checkpoint left it (worldmodels/runtime/run_state.py).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from worldmodels.cpu.memory import keep_freed_memory
from worldmodels.replay.buffer import ReplayStreams
from worldmodels.runtime import distributed, setup
from worldmodels.runtime.config import validate
from worldmodels.runtime.driver import EnvFailure
from worldmodels.runtime.errors import UserError, exit_with
from worldmodels.runtime.log_line import Tally
from worldmodels.runtime.logger import Logger, NullLogger
from worldmodels.runtime.pending_updates import PendingUpdates
from worldmodels.runtime.periodic_eval import episode_returns, openloop_errors
from worldmodels.runtime.run_folder import open_run, replay_dir
from worldmodels.runtime.run_state import Progress, RunCheckpoint, stop_error
from worldmodels.runtime.schedule import Every
from worldmodels.runtime.setup import CONFIG_DIR, make_env  # make_env by name here: tests swap it for failing envs
from worldmodels.runtime.signals import sigterm_as_interrupt, stop_on_signals

clock = time.monotonic  # wall-clock of the checkpoint interval (a test runs it faster)


class Trainer:
    """Collect with the current policy, train at the configured ratio, evaluate, log and checkpoint."""

    def __init__(self, cfg: DictConfig, run_dir: Path, world: distributed.World | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.world = world or distributed.World()  # this process's rank among torchrun's processes (alone: rank 0 of 1)
        # env.num_envs copies (or an env that is already batched, as it is): one policy call and N stored steps per step
        self.env = setup.make_vector_env(cfg.env, cfg.seed, cfg.run.max_env_failures, make_env)
        self.eval_env = make_env(cfg.env, cfg.seed + 10_000)
        self.agent = setup.make_agent(cfg, self.env)  # with the CPU strategy on a CPU (worldmodels/strategies/cpu.py)
        self.agent.precision = cfg.run.precision  # compute precision of updates and acting (Agent.autocast)
        if self.world.size > 1:  # gradients averaged over the ranks, through the agent's hooks
            distributed.data_parallel(self.agent)
        self.updater = setup.make_updater(cfg, self.agent)  # run.compile: eager, compiled steps or one graph
        # Updates read nothing back from the device: their skip flags and posterior latents wait here until the
        # flush after the next env step (whose acting has waited for the device anyway).
        self.pending = PendingUpdates(self.agent.device, cfg.run.max_nonfinite, run_dir / "checkpoints")
        self.context = cfg.replay.context
        self.window = cfg.batch.length + self.context  # replayed windows: the context steps, then the trained ones
        # One replay stream per env (replay/env<i> when there are several): windows never mix two envs' steps.
        self.replay = setup.make_replay(cfg, replay_dir(run_dir, self.world.rank), self.env.num_envs, self.window)
        self.streams = self.replay.streams if isinstance(self.replay, ReplayStreams) else [self.replay]
        self.driver, self.eval_driver = setup.make_drivers(cfg, self.agent, self.env, self.eval_env, make_env,
                                                     on_failure=lambda index: self.streams[index].mark_last())
        self.progress = Progress()
        self.checkpoint = RunCheckpoint(cfg, run_dir, self.world, self.progress, self.agent, self.replay, self.driver)
        self.agreed = distributed.Agreement()  # under torchrun: what every rank acts on (lockstep)
        self.stop = threading.Event()  # under torchrun: a signal asked this rank to stop (signals.stop_on_signals)

    def collect(self, steps: list[tuple[int, dict[str, Any]]]) -> None:
        """Store one agent step of each env in its replay stream (the driver's `on_step`), with the latent state the
        policy reached there when replay context is on (the start of later replayed windows until trained on)."""
        entries = self.agent.replay_entry(self.driver.carry) if self.context else {}
        for index, step in steps:
            step.update({k: v[index] for k, v in entries.items()})
            self.streams[index].add(step)
            self.progress.stored += 1

    def ready(self) -> bool:
        """Whether training may start: `run.train_start` steps stored and a whole window in the replay."""
        return self.progress.stored >= self.cfg.run.train_start and self.replay.ready(self.window)

    def lockstep(self, save: bool) -> bool:
        """Under torchrun, once per loop iteration: every rank runs the same updates, saves together (when rank 0's
        `save` asks) and stops together (distributed.agree). Returns whether to save now."""
        p = self.progress
        self.agreed = distributed.agree(p.step, p.stored, self.ready(), save, self.stop.is_set(), self.agent.device)
        if self.agreed.stop:
            self.save()
            raise stop_error(KeyboardInterrupt(), p.step, self.run_dir / "checkpoints", saved=True)
        return self.agreed.save

    @property
    def slowest_step(self) -> int:
        """The env step the end of the run follows: under torchrun the lowest of any rank's, so each steps run.steps."""
        return self.agreed.step if self.world.size > 1 else self.progress.step

    def train_updates(self) -> dict[str, list[torch.Tensor]]:
        """Run the updates owed: updates * B * T ~= train_ratio * stored items (one per agent step, as the official
        code counts, not env frames). Returns their metrics as device tensors, read back when a log line is due."""
        cfg, p = self.cfg, self.progress
        self.pending.flush(self.replay)
        metrics: dict[str, list[torch.Tensor]] = {}
        # Under torchrun every rank runs the same updates, owed on the fewest items any rank had stored.
        stored, ready = (self.agreed.stored, self.agreed.ready) if self.world.size > 1 else (p.stored, self.ready())
        if not ready:
            return metrics
        if p.train_from is None:
            p.train_from = stored
        due = 1 + int((stored - p.train_from) * cfg.run.train_ratio / (cfg.batch.size * cfg.batch.length))
        while p.updates < due:
            sample, index = self.replay.sample_index(cfg.batch.size, self.window, online=True)
            batch, start = setup.to_torch(sample, self.agent.device), None
            if self.context:
                batch, start = self.agent.split_context(batch, self.context)
            result, latents = self.updater(batch, start)
            self.pending.add(index[:, self.context:], latents if self.context else {}, result["train/nonfinite"])
            for key, value in result.items():
                metrics.setdefault(key, []).append(value)
            p.updates += 1
        return metrics

    def save(self) -> None:
        self.pending.flush(self.replay)
        self.checkpoint.save()

    def run(self) -> None:
        cfg, p, main = self.cfg, self.progress, self.world.main  # rank 0 alone logs, evaluates and reports
        total = cfg.run.steps
        logger = Logger(self.run_dir, total, p.step, progress=cfg.run.progress) if main else NullLogger()
        pixels = any(len(shape) == 3 for shape in self.agent.obs_keys.values())
        log, evaluate, save_due, report, video_due = (Every(n, total, p.step) for n in (
            cfg.run.log_every, cfg.run.eval_every, cfg.run.save_every, cfg.report.every, cfg.run.video_every))
        tally, eval_return = Tally(self.env.num_envs), None
        saved_at, started, first_step = clock(), time.time(), p.step  # checkpoints every save_every steps or save_seconds
        try:
            if self.world.size > 1:
                self.lockstep(save=False)  # the counters every rank starts from
            while self.slowest_step < total:
                taken, ended = self.driver.step(self.collect)
                p.step += taken
                tally.add_episodes(ended)
                tally.add_metrics(self.train_updates())
                save = save_due.due(p.step) or bool(cfg.run.save_seconds and clock() - saved_at >= cfg.run.save_seconds)
                if self.world.size > 1:
                    save = self.lockstep(main and save)  # rank 0's steps and clock decide when every rank saves
                final = self.slowest_step >= total
                line: dict[str, float] = {}
                if main and (evaluate.due(p.step) or final):
                    video = pixels and (video_due.due(p.step) or final) and cfg.run.video_every > 0
                    line["eval/return"] = eval_return = episode_returns(
                        self.eval_driver, cfg.run.eval_episodes, self.run_dir / "videos" if video else None, logger.tb, p.step)
                    evaluate.restart(p.step)
                    if video:
                        video_due.restart(p.step)
                if main and report.due(p.step) and p.updates:
                    line.update(openloop_errors(self.agent, self.replay, cfg.report.context, cfg.report.horizon))
                    report.restart(p.step)
                    video_due.restart(p.step)
                if log.due(p.step) or final or line:
                    logger.write(p.step, {**line, **tally.line(), "train/updates": p.updates,
                                          "train/env_steps_per_s": (p.step - first_step) / max(time.time() - started, 1e-9),
                                          "train/env_failures": self.driver.failures + self.eval_driver.failures,
                                          "replay/size": len(self.replay), "train/wall_s": p.wall_seconds()})
                    log.restart(p.step)
                if save:
                    self.save()
                    save_due.restart(p.step)
                    saved_at = clock()
                shown = {"updates": p.updates, "return": tally.last_return, "eval": eval_return}
                logger.progress(min(p.step, total), **{k: v for k, v in shown.items() if v is not None})
            self.save()
        except (EnvFailure, KeyboardInterrupt) as e:
            if self.world.size == 1:  # under torchrun the other ranks cannot join a save from here: the last one stands
                self.save()
            raise stop_error(e, p.step, self.run_dir / "checkpoints", saved=self.world.size == 1) from None
        finally:
            logger.close()
            self.driver.close()
            self.eval_driver.close()


def train(cfg: DictConfig) -> Path:
    """Validate, build, train (or resume); returns the run folder. Bad input raises UserError before anything is written."""
    validate(cfg)
    with setup.process_settings(cfg.run.threads, cfg.run.onednn), distributed.process_group(cfg.device) as world:
        setup.seed_everything(distributed.rank_seed(cfg.seed, world.rank))
        if cfg.run.keep_memory:
            keep_freed_memory()
        run_dir, payload, cfg = open_run(cfg, world)
        trainer = Trainer(cfg, run_dir, world)  # builds envs and agent: raises on bad input before the folder is touched
        trainer.checkpoint.start(payload)
        with sigterm_as_interrupt() if world.size == 1 else stop_on_signals(trainer.stop):
            trainer.run()
        if world.main:
            print(f"done: {trainer.progress.step} env steps, {trainer.progress.updates} updates; "
                  f"checkpoint {run_dir / 'checkpoints' / 'latest'}", file=sys.stderr)
        return run_dir


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserError as e:
        exit_with(e)


def main() -> None:
    setup.entry_point(hydra_main)


if __name__ == "__main__":
    main()
