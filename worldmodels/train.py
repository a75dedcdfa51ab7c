"""Training entry point: `python -m worldmodels.train [overrides]` (a Hydra application).

Rerunning the same command in the same `run.dir` (or passing `resume=<run folder>`) continues a run
where its last checkpoint left it: counters, weights, optimiser, normaliser, RNG states and replay.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from worldmodels.agent import LATENT_KEYS
from worldmodels.checkpoint import load_agent_state, load_checkpoint, save_checkpoint
from worldmodels.config import resume_conflict, validate
from worldmodels.driver import Driver, EnvFailure
from worldmodels.errors import UserError, exit_with
from worldmodels.imagination import WorldModelPredictor
from worldmodels.logger import Logger, truncate_metrics
from worldmodels.memory import keep_freed_memory
from worldmodels.replay import Replay
from worldmodels.replay_store import ChunkStore
from worldmodels.report import replay_openloop
from worldmodels.setup import CONFIG_DIR, entry_point, make_agent, make_env, process_settings, seed_everything, to_torch
from worldmodels.video import add_gif, save_gif

clock = time.monotonic  # wall-clock of the checkpoint interval (a test runs it faster)


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, dict[str, Any] | None]:
    """The run's folder and, when it holds a checkpoint, that checkpoint (to resume from).

    `resume=<folder>` must name a folder with a checkpoint; `run.dir` resumes when it holds one and
    starts fresh otherwise; with neither, a fresh folder runs/<suite>-<task>-<time> is used.
    """
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if not (run_dir / "checkpoints" / "latest").exists() and not (run_dir / "checkpoints" / "previous").exists():
            raise UserError(f"cannot resume: {run_dir} holds no checkpoint (checkpoints/latest)")
    elif cfg.run.dir:
        run_dir = Path(cfg.run.dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.env.suite}-{cfg.env.id}-{stamp}".replace("/", "-")
    checkpoints = run_dir / "checkpoints"
    if not (checkpoints / "latest").exists() and not (checkpoints / "previous").exists():
        saved = run_dir / "config.yaml"
        if saved.exists():  # a run that died before its first checkpoint: start again, keeping its replay
            conflict = resume_conflict(OmegaConf.load(saved), cfg)
            if conflict:
                raise UserError(f"cannot reuse {run_dir}: {conflict}; use another run.dir for a new run")
        return run_dir, None
    payload = load_checkpoint(checkpoints)
    conflict = resume_conflict(OmegaConf.create(payload["config"]), cfg)
    if conflict:
        raise UserError(f"cannot resume {run_dir}: {conflict}; use another run.dir for a new run")
    return run_dir, payload


def _numpy_state() -> dict[str, Any]:
    """NumPy's global RNG state with plain lists instead of arrays, so checkpoints stay weights-only."""
    state = np.random.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return state


def rng_state(replay: Replay) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
        "replay": replay.rng.bit_generator.state,
    }


def set_rng_state(state: dict[str, Any], replay: Replay) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32), "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    random.setstate(state["python"])
    replay.rng.bit_generator.state = state["replay"]


class Trainer:
    """Collect with the current policy, train at the configured ratio, evaluate, log and checkpoint."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.env = make_env(cfg.env, cfg.seed)
        self.eval_env = make_env(cfg.env, cfg.seed + 10_000)
        self.agent = make_agent(cfg, self.env)
        self.agent.wm.dynamics.defer_grads = cfg.run.defer_grads
        self.agent.precision = cfg.run.precision  # compute precision of updates and acting (Agent.autocast)
        if cfg.run.compile:
            self.agent.compile_steps()
        store = ChunkStore(run_dir / "replay") if cfg.replay.persist else None
        self.context = cfg.replay.context
        self.window = cfg.batch.length + self.context  # replayed windows: the context steps, then the trained ones
        online = self.window if cfg.replay.online else 0
        self.replay = Replay(cfg.replay.capacity, seed=cfg.seed, store=store, chunk=cfg.replay.chunk, online=online)
        repeat = cfg.env.action_repeat
        self.driver = Driver(
            self.env,
            self.agent,
            "sample",
            repeat,
            recreate=lambda: make_env(cfg.env, cfg.seed + 1000 + self.driver.failures),
            max_failures=cfg.run.max_env_failures,
            on_failure=self.replay.mark_last,
        )
        self.eval_driver = Driver(
            self.eval_env,
            self.agent,
            cfg.run.eval_mode,
            repeat,
            recreate=lambda: make_env(cfg.env, cfg.seed + 20_000 + self.eval_driver.failures),
            max_failures=cfg.run.max_env_failures,
        )
        self.step = 0  # env steps (frames after action repeat): what run.steps and every logged step count
        self.stored = 0  # replay items this run stored, one per agent step: what the train ratio counts
        self.updates = 0
        self.train_from: int | None = None  # stored items when training started (train-ratio accounting)
        self.nonfinite = 0  # consecutive skipped updates
        self.wall = 0.0  # seconds of training before this process (summed over resumes)
        self.started = time.time()

    def wall_seconds(self) -> float:
        return self.wall + time.time() - self.started

    def state(self) -> dict[str, Any]:
        return {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "step": self.step,
            "stored": self.stored,
            "updates": self.updates,
            "train_from": self.train_from,
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.opt.state_dict(),
            "env_failures": self.driver.failures,
            "wall_s": self.wall_seconds(),
            "rng": rng_state(self.replay),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint: counters, networks, optimiser, RNG states and the replay on disk."""
        load_agent_state(self.agent, payload.get("agent", {}), self.run_dir / "checkpoints")
        try:
            self.agent.opt.load_state_dict(payload["optimizer"])
            self.step, self.updates, self.train_from = payload["step"], payload["updates"], payload["train_from"]
            if "stored" in payload:
                self.stored = payload["stored"]
            else:  # checkpoints before 0.3 counted the train ratio in env steps: convert to agent steps
                repeat = self.cfg.env.action_repeat
                self.stored = self.step // repeat
                self.train_from = None if self.train_from is None else self.train_from // repeat
            self.driver.failures = payload.get("env_failures", 0)
            self.wall = float(payload.get("wall_s", 0.0))
            set_rng_state(payload["rng"], self.replay)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise UserError(f"checkpoint in {self.run_dir} does not fit this run ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.replay.load()

    def save(self) -> None:
        """Replay first, then the checkpoint: the checkpoint never refers to steps that are not on disk."""
        self.replay.flush()
        self.replay.save_state(LATENT_KEYS)  # the online queue and the latents rewritten by training
        save_checkpoint(self.run_dir / "checkpoints" / "latest", self.state())

    def openloop_report(self) -> dict[str, float]:
        """Open-loop prediction errors on windows sampled from the replay (no env steps, forward passes only)."""
        context, horizon = self.cfg.report.context, self.cfg.report.horizon
        if len(self.replay) < context + horizon:
            return {}
        sample = self.replay.sample(64, context + horizon)
        return replay_openloop(WorldModelPredictor(self.agent), sample, context)

    def evaluate(self, video: bool = False) -> float:
        """Mean return of `run.eval_episodes` evaluation episodes; with `video`, the first one of each image key
        is saved as videos/eval_<step>_<key>.gif and as an animated image in TensorBoard (Images tab)."""
        if not video:
            return float(np.mean([s["return"] for s in self.eval_driver.episodes(self.cfg.run.eval_episodes)]))
        episodes, stats = self.eval_driver.record(self.cfg.run.eval_episodes)
        for key, frames in episodes[0].items():
            if frames.ndim == 4 and frames.dtype == np.uint8:
                save_gif(frames, self.run_dir / "videos" / f"eval_{self.step}_{key}.gif")
                add_gif(self.logger.tb, f"eval/video_{key}", frames, self.step)
        return float(np.mean([s["return"] for s in stats]))

    def collect(self, step: dict[str, Any]) -> None:
        """Store one agent step in the replay (the driver's `on_step`), with the latent state the policy
        reached there when replay context is on (the start of later replayed windows until trained on)."""
        if self.context:
            step.update({k: v[0] for k, v in self.agent.replay_entry(self.driver.carry).items()})
        self.replay.add(step)
        self.stored += 1

    def train_updates(self) -> dict[str, list[float]]:
        """Run the updates owed so far: updates * B * T ~= train_ratio * stored steps.

        As in the official code, the ratio counts replay items (one per agent step), not env frames: with
        an action repeat of 2, the same ratio replays each stored step as often as with a repeat of 1."""
        cfg = self.cfg
        metrics: dict[str, list[float]] = defaultdict(list)
        if self.stored < cfg.run.train_start or len(self.replay) < self.window:
            return metrics
        if self.train_from is None:
            self.train_from = self.stored
        replayed = cfg.batch.size * cfg.batch.length
        due = 1 + int((self.stored - self.train_from) * cfg.run.train_ratio / replayed)
        while self.updates < due:
            sample, index = self.replay.sample_index(cfg.batch.size, self.window, online=True)
            batch, start = to_torch(sample, self.agent.device), None
            if self.context:
                batch, start = self.agent.split_context(batch, self.context)
            result = self.agent.train_step(batch, start)
            if self.context and not result["train/nonfinite"]:
                self.replay.update(index[:, self.context:], self.agent.posterior_entries())
            self.nonfinite = self.nonfinite + 1 if result["train/nonfinite"] else 0
            if self.nonfinite >= cfg.run.max_nonfinite:
                raise UserError(
                    f"training stopped: {self.nonfinite} updates in a row had a non-finite loss or gradient; "
                    f"the last good checkpoint is kept in {self.run_dir / 'checkpoints'}"
                )
            for key, value in result.items():
                metrics[key].append(value)
            self.updates += 1
        return metrics

    def run(self) -> None:
        cfg = self.cfg
        total = cfg.run.steps
        logger = self.logger = Logger(self.run_dir, total, initial_step=self.step, progress=cfg.run.progress)
        pixels = any(len(shape) == 3 for shape in self.agent.obs_keys.values())

        def after(every: int) -> int:
            return (self.step // every + 1) * every if every else total + 1

        pending: dict[str, list[float]] = defaultdict(list)
        episodes: list[float] = []
        last_return = eval_return = None
        next_log, next_eval, next_save = after(cfg.run.log_every), after(cfg.run.eval_every), after(cfg.run.save_every)
        saved_at = clock()  # checkpoints come every save_every env steps or save_seconds, whichever is first
        next_report, next_video = after(cfg.report.every), after(cfg.run.video_every)
        start, start_step = time.time(), self.step
        try:
            while self.step < total:
                taken, done = self.driver.step(self.collect)
                self.step += taken
                if done is not None:
                    episodes.append(done["return"])
                    last_return = done["return"]
                for key, values in self.train_updates().items():
                    pending[key].extend(values)
                final = self.step >= total
                line: dict[str, float] = {}
                if self.step >= next_eval or final:
                    video = pixels and (self.step >= next_video or final) and cfg.run.video_every > 0
                    eval_return = self.evaluate(video)
                    next_video = after(cfg.run.video_every) if video else next_video
                    line["eval/return"] = eval_return
                    next_eval = after(cfg.run.eval_every)
                if self.step >= next_report and self.updates:
                    line.update(self.openloop_report())
                    next_report, next_video = after(cfg.report.every), after(cfg.run.video_every)
                if self.step >= next_log or final or line:
                    elapsed = max(time.time() - start, 1e-9)
                    line.update({k: float(np.mean(v)) for k, v in pending.items()})
                    if episodes:
                        line["episode/return"] = float(np.mean(episodes))
                        line["episode/count"] = len(episodes)
                    line.update(
                        {
                            "train/updates": self.updates,
                            "train/env_steps_per_s": (self.step - start_step) / elapsed,
                            "train/env_failures": self.driver.failures + self.eval_driver.failures,
                            "replay/size": len(self.replay),
                            "train/wall_s": self.wall_seconds(),
                        }
                    )
                    logger.write(self.step, line)
                    pending.clear()
                    episodes.clear()
                    next_log = after(cfg.run.log_every)
                if self.step >= next_save or (cfg.run.save_seconds and clock() - saved_at >= cfg.run.save_seconds):
                    self.save()
                    next_save, saved_at = after(cfg.run.save_every), clock()
                postfix = {"updates": self.updates}
                if last_return is not None:
                    postfix["return"] = last_return
                if eval_return is not None:
                    postfix["eval"] = eval_return
                logger.progress(min(self.step, total), **postfix)
            self.save()
        except EnvFailure as e:
            self.save()
            raise UserError(f"{e}; checkpoint saved in {self.run_dir / 'checkpoints'}") from None
        except KeyboardInterrupt:
            self.save()
            raise UserError(f"interrupted at step {self.step}; checkpoint saved, rerun the same command to resume") from None
        finally:
            logger.close()
            self.driver.env.close()
            self.eval_driver.env.close()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler's preemption, `kill`, a container stop) ends a run like Ctrl-C does: with a
    checkpoint of the current step. Background jobs of a shell ignore SIGINT, so it is often the only
    polite signal that reaches them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(cfg: DictConfig) -> Path:
    """Validate, build, train (or resume); returns the run folder. Bad input raises UserError before anything is written."""
    validate(cfg)
    with process_settings(cfg.run.threads, cfg.run.onednn):
        return _train(cfg)


def _train(cfg: DictConfig) -> Path:
    seed_everything(cfg.seed)
    if cfg.run.keep_memory:
        keep_freed_memory()
    run_dir, payload = prepare_run_dir(cfg)
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg, False)
    cfg.run.dir = str(run_dir)
    cfg.resume = None
    trainer = Trainer(cfg, run_dir)  # builds envs and agent: raises on bad input before the folder is touched
    run_dir.mkdir(parents=True, exist_ok=True)
    if payload is not None:
        trainer.restore(payload)
        truncate_metrics(run_dir / "metrics.jsonl", trainer.step)
        print(f"resuming {run_dir} at step {trainer.step} ({len(trainer.replay)} replay steps)", file=sys.stderr)
    else:
        truncate_metrics(run_dir / "metrics.jsonl", 0)
        loaded = trainer.replay.load()  # steps a run that died before its first checkpoint already collected
        print(f"run folder: {run_dir}" + (f" ({loaded} replay steps reused)" if loaded else ""), file=sys.stderr)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    with sigterm_as_interrupt():
        trainer.run()
    print(f"done: {trainer.step} env steps, {trainer.updates} updates; checkpoint {run_dir / 'checkpoints' / 'latest'}", file=sys.stderr)
    return run_dir


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserError as e:
        exit_with(e)


def main() -> None:
    entry_point(hydra_main)


if __name__ == "__main__":
    main()
