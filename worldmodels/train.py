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

import gymnasium as gym
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from worldmodels.agent.agent import LATENT_KEYS, host_arrays
from worldmodels.cpu.memory import keep_freed_memory
from worldmodels.evaluation.imagination import WorldModelPredictor
from worldmodels.evaluation.report import replay_openloop
from worldmodels.evaluation.video import add_gif, save_gif
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.runtime import distributed
from worldmodels.runtime.checkpoint import load_agent_state, load_checkpoint, save_checkpoint
from worldmodels.runtime.config import resume_conflict, validate
from worldmodels.runtime.driver import Driver, EnvFailure, VectorDriver
from worldmodels.runtime.errors import UserError, exit_with
from worldmodels.runtime.logger import Logger, NullLogger, truncate_metrics
from worldmodels.runtime.setup import (
    CONFIG_DIR,
    entry_point,
    make_agent,
    make_env,
    make_replay,
    make_updater,
    make_vector_env,
    process_settings,
    seed_everything,
    to_torch,
)

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


def replay_dir(run_dir: Path, rank: int = 0) -> Path:
    """Where a rank keeps its replay: rank 0 (and a single process) in <run>/replay, rank r in <run>/replay/rank<r>."""
    return run_dir / "replay" / f"rank{rank}" if rank else run_dir / "replay"


def rank_checkpoints(run_dir: Path, rank: int) -> Path:
    """Where rank r > 0 keeps its own counters and RNG states (latest, previous), next to rank 0's checkpoint."""
    return run_dir / "checkpoints" / f"rank{rank}"


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


def mean_metrics(values: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """The mean of each metric's device tensors, read back in one transfer."""
    if not values:
        return {}
    means = torch.stack([torch.stack(v).float().mean() for v in values.values()]).tolist()
    return dict(zip(values, means))


class Trainer:
    """Collect with the current policy, train at the configured ratio, evaluate, log and checkpoint."""

    def __init__(self, cfg: DictConfig, run_dir: Path, world: distributed.World | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.world = world or distributed.World()  # this process's rank among torchrun's processes (alone: rank 0 of 1)
        # env.num_envs copies (or an env that is already batched, as it is): one policy call and N stored steps per step
        self.env = make_vector_env(cfg.env, cfg.seed, cfg.run.max_env_failures, make_env)
        self.eval_env = make_env(cfg.env, cfg.seed + 10_000)
        self.agent = make_agent(cfg, self.env)  # with the CPU strategy on a CPU (worldmodels/strategies/cpu.py)
        self.agent.precision = cfg.run.precision  # compute precision of updates and acting (Agent.autocast)
        if self.world.size > 1:  # gradients averaged over the ranks (worldmodels/runtime/distributed.py)
            distributed.data_parallel(self.agent)
        self.updater = make_updater(cfg, self.agent)  # run.compile: eager, compiled steps or one graph
        # Updates run without reading the device back: their skip flags and posterior latents wait here until
        # flush_updates, after the next env step (whose acting has waited for the device anyway).
        self.unflushed: list[tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]] = []
        self.skipped_run = torch.zeros((), device=self.agent.device)  # consecutive skipped updates, on the device
        self.context = cfg.replay.context
        self.window = cfg.batch.length + self.context  # replayed windows: the context steps, then the trained ones
        # One replay stream per env (replay/env<i> when there are several): windows never mix two envs' steps.
        self.replay = make_replay(cfg, replay_dir(run_dir, self.world.rank), self.env.num_envs, self.window)
        self.streams = self.replay.streams if isinstance(self.replay, ReplayStreams) else [self.replay]
        repeat = cfg.env.action_repeat
        self.driver = VectorDriver(
            self.env,
            self.agent,
            "sample",
            repeat,
            recreate=lambda: make_vector_env(cfg.env, cfg.seed + 1000 + self.driver.failures, cfg.run.max_env_failures, make_env),
            max_failures=cfg.run.max_env_failures,
            on_failure=lambda index: self.streams[index].mark_last(),
        )
        self.eval_driver = (VectorDriver if isinstance(self.eval_env, gym.vector.VectorEnv) else Driver)(
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
        self.wall = 0.0  # seconds of training before this process (summed over resumes)
        self.started = time.time()
        self.saves = 0  # checkpoints written under torchrun: pairs each rank's own state with rank 0's checkpoint
        self.agreed = {"step": 0, "stored": 0, "ready": False}  # under torchrun: what every rank acts on (lockstep)
        self.stop = threading.Event()  # under torchrun: a signal asked this rank to stop (distributed.stop_on_signals)

    def wall_seconds(self) -> float:
        return self.wall + time.time() - self.started

    def state(self) -> dict[str, Any]:
        state = {
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
        if self.world.size > 1:  # a resume needs as many processes, and each rank's own state of the same save
            state.update(world_size=self.world.size, saves=self.saves)
        return state

    def rank_state(self) -> dict[str, Any]:
        """What rank r > 0 keeps beside rank 0's checkpoint: its own counters and RNG states (its replay is in its shard)."""
        return {"rank": self.world.rank, "saves": self.saves, "step": self.step, "stored": self.stored,
                "env_failures": self.driver.failures, "rng": rng_state(self.replay)}

    def restore_rank(self) -> None:
        """Rank r > 0: its own counters and RNG states, from the file it wrote with the checkpoint being resumed."""
        folder = rank_checkpoints(self.run_dir, self.world.rank)
        for name in ("latest", "previous"):  # `previous` where rank 0 died before its checkpoint of `latest` landed
            try:
                state = load_checkpoint(folder / name)
            except UserError:
                continue
            if state.get("saves") == self.saves:
                break
        else:
            raise UserError(f"cannot resume {self.run_dir}: rank {self.world.rank} has no state saved with its checkpoint ({folder})")
        self.step, self.stored, self.driver.failures = state["step"], state["stored"], state["env_failures"]
        set_rng_state(state["rng"], self.replay)

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
        self.saves = payload.get("saves", 0)
        if self.world.rank:
            self.restore_rank()

    def save(self) -> None:
        """Replay first, then the checkpoint: the checkpoint never refers to steps that are not on disk.

        Under torchrun every rank saves together: its replay shard and (ranks > 0) its own state, numbered by
        `saves`; once every rank has, rank 0 alone writes the checkpoint."""
        self.flush_updates()
        self.replay.flush()
        self.replay.save_state(LATENT_KEYS)  # the online queue and the latents rewritten by training
        if self.world.size > 1:
            self.saves += 1
            if not self.world.main:
                save_checkpoint(rank_checkpoints(self.run_dir, self.world.rank) / "latest", self.rank_state())
            distributed.barrier(self.agent.device)
            if not self.world.main:
                return
        save_checkpoint(self.run_dir / "checkpoints" / "latest", self.state())

    def openloop_report(self) -> dict[str, float]:
        """Open-loop prediction errors on windows sampled from the replay (no env steps, forward passes only)."""
        context, horizon = self.cfg.report.context, self.cfg.report.horizon
        if not self.replay.ready(context + horizon):
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

    def collect(self, steps: list[tuple[int, dict[str, Any]]]) -> None:
        """Store one agent step of each env in its replay stream (the driver's `on_step`), with the latent state the
        policy reached there when replay context is on (the start of later replayed windows until trained on)."""
        entries = self.agent.replay_entry(self.driver.carry) if self.context else {}
        for index, step in steps:
            step.update({k: v[index] for k, v in entries.items()})
            self.streams[index].add(step)
            self.stored += 1

    def ready(self) -> bool:
        """Whether training may start: `run.train_start` steps stored and a whole window in the replay."""
        return self.stored >= self.cfg.run.train_start and self.replay.ready(self.window)

    @property
    def slowest_step(self) -> int:
        """The env step the end of the run follows: this process's; under torchrun the lowest of any rank's
        (as of the last lockstep), so every rank steps at least run.steps."""
        return self.agreed["step"] if self.world.size > 1 else self.step

    def lockstep(self, save: bool) -> bool:
        """Under torchrun, once per loop iteration: one all-reduce gives every rank the same view, so all ranks
        run the same updates, save together and stop at the same iteration. Training counts the fewest steps any
        rank has stored and starts when every rank's replay is ready; the run ends when every rank has stepped
        run.steps; rank 0's `save` decides for all; a signal to any rank makes every rank save and stop.
        Returns whether to save now."""
        low = distributed.all_min([self.step, self.stored, self.ready(), -save, -self.stop.is_set()], self.agent.device)
        self.agreed = {"step": int(low[0]), "stored": int(low[1]), "ready": low[2] > 0}
        if low[4] < 0:
            self.save()
            raise UserError(f"interrupted at step {self.step}; checkpoint saved, rerun the same command to resume")
        return low[3] < 0

    def train_updates(self) -> dict[str, list[torch.Tensor]]:
        """Run the updates owed so far: updates * B * T ~= train_ratio * stored steps. Returns their metrics as device
        tensors (read back when a log line is due).

        As in the official code, the ratio counts replay items (one per agent step), not env frames: with
        an action repeat of 2, the same ratio replays each stored step as often as with a repeat of 1."""
        cfg = self.cfg
        self.flush_updates()
        metrics: dict[str, list[torch.Tensor]] = defaultdict(list)
        # Under torchrun every rank runs the same updates (their gradients are averaged), counted from the fewest
        # steps any rank had stored at the last lockstep: each rank trains at the ratio on its own data.
        stored, ready = (self.agreed["stored"], self.agreed["ready"]) if self.world.size > 1 else (self.stored, self.ready())
        if not ready:
            return metrics
        if self.train_from is None:
            self.train_from = stored
        replayed = cfg.batch.size * cfg.batch.length
        due = 1 + int((stored - self.train_from) * cfg.run.train_ratio / replayed)
        while self.updates < due:
            sample, index = self.replay.sample_index(cfg.batch.size, self.window, online=True)
            batch, start = to_torch(sample, self.agent.device), None
            if self.context:
                batch, start = self.agent.split_context(batch, self.context)
            result, latents = self.updater(batch, start)
            skipped = result["train/nonfinite"]
            self.skipped_run = (self.skipped_run + 1) * skipped
            self.unflushed.append((index[:, self.context:], latents if self.context else {}, skipped))
            for key, value in result.items():
                metrics[key].append(value)
            self.updates += 1
        return metrics

    def flush_updates(self) -> None:
        """Read back what the queued updates left: their posterior latents go into the replay (replay context; not
        those of skipped updates), and a run of `run.max_nonfinite` skipped updates stops training."""
        if not self.unflushed:
            return
        pending, self.unflushed = self.unflushed, []
        skipped = torch.stack([s for _, _, s in pending]).tolist()
        for (index, latents, _), skip in zip(pending, skipped):
            if latents and not skip:
                self.replay.update(index, host_arrays(latents))
        run = int(self.skipped_run)
        if run >= self.cfg.run.max_nonfinite:
            raise UserError(
                f"training stopped: {run} updates in a row had a non-finite loss or gradient; "
                f"the last good checkpoint is kept in {self.run_dir / 'checkpoints'}"
            )

    def run(self) -> None:
        cfg = self.cfg
        total = cfg.run.steps
        main = self.world.main  # rank 0 alone logs, evaluates and reports
        logger = self.logger = Logger(self.run_dir, total, initial_step=self.step, progress=cfg.run.progress) if main else NullLogger()
        pixels = any(len(shape) == 3 for shape in self.agent.obs_keys.values())

        def after(every: int) -> int:
            return (self.step // every + 1) * every if every else total + 1

        pending: dict[str, list[torch.Tensor]] = defaultdict(list)  # update metrics, on the device until logged
        episodes: list[float] = []
        per_env: dict[int, list[float]] = defaultdict(list)  # returns by env, logged when there are several
        last_return = eval_return = None
        next_log, next_eval, next_save = after(cfg.run.log_every), after(cfg.run.eval_every), after(cfg.run.save_every)
        saved_at = clock()  # checkpoints come every save_every env steps or save_seconds, whichever is first
        next_report, next_video = after(cfg.report.every), after(cfg.run.video_every)
        start, start_step = time.time(), self.step
        try:
            if self.world.size > 1:
                self.lockstep(save=False)  # the counters every rank starts from
            while self.slowest_step < total:
                taken, done = self.driver.step(self.collect)
                self.step += taken
                for ended in done:
                    episodes.append(ended["return"])
                    per_env[ended["env"]].append(ended["return"])
                    last_return = ended["return"]
                for key, values in self.train_updates().items():
                    pending[key].extend(values)
                save = self.step >= next_save or (cfg.run.save_seconds and clock() - saved_at >= cfg.run.save_seconds)
                if self.world.size > 1:
                    save = self.lockstep(main and save)  # rank 0's steps and clock decide when every rank saves
                final = self.slowest_step >= total
                line: dict[str, float] = {}
                if main and (self.step >= next_eval or final):
                    video = pixels and (self.step >= next_video or final) and cfg.run.video_every > 0
                    eval_return = self.evaluate(video)
                    next_video = after(cfg.run.video_every) if video else next_video
                    line["eval/return"] = eval_return
                    next_eval = after(cfg.run.eval_every)
                if main and self.step >= next_report and self.updates:
                    line.update(self.openloop_report())
                    next_report, next_video = after(cfg.report.every), after(cfg.run.video_every)
                if self.step >= next_log or final or line:
                    elapsed = max(time.time() - start, 1e-9)
                    line.update(mean_metrics(pending))
                    if episodes:
                        line["episode/return"] = float(np.mean(episodes))
                        line["episode/count"] = len(episodes)
                    if self.env.num_envs > 1 and episodes:  # per env: up to 16, then the spread only
                        line.update({"episode/return_min": min(episodes), "episode/return_max": max(episodes)})
                        if self.env.num_envs <= 16:
                            line.update({f"episode/return_env{i}": float(np.mean(r)) for i, r in sorted(per_env.items())})
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
                    per_env.clear()
                    next_log = after(cfg.run.log_every)
                if save:
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
            if self.world.size > 1:  # the other ranks cannot join a save from here: the last checkpoint stands
                raise UserError(f"{e}; the last checkpoint in {self.run_dir / 'checkpoints'} is kept") from None
            self.save()
            raise UserError(f"{e}; checkpoint saved in {self.run_dir / 'checkpoints'}") from None
        except KeyboardInterrupt:
            if self.world.size > 1:
                raise UserError(f"interrupted at step {self.step}; the last checkpoint is kept, rerun the same command to resume") from None
            self.save()
            raise UserError(f"interrupted at step {self.step}; checkpoint saved, rerun the same command to resume") from None
        finally:
            logger.close()
            self.driver.close()
            self.eval_driver.close()


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
    with process_settings(cfg.run.threads, cfg.run.onednn), distributed.process_group(cfg.device) as world:
        return _train(cfg, world)


def _train(cfg: DictConfig, world: distributed.World) -> Path:
    seed_everything(distributed.rank_seed(cfg.seed, world.rank))
    if cfg.run.keep_memory:
        keep_freed_memory()
    run_dir, payload = prepare_run_dir(cfg)
    trained_by = world.size if payload is None else payload.get("world_size", 1)
    if trained_by != world.size:
        raise UserError(f"cannot resume {run_dir}: it was trained by {trained_by} process(es) (torchrun world size) and this run "
                        f"has {world.size}; resume it with {trained_by}")
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg, False)
    cfg.run.dir = str(run_dir)
    cfg.resume = None
    cfg.seed = distributed.rank_seed(cfg.seed, world.rank)  # rank r's envs and replay sampling; rank 0 saves the run's seed
    trainer = Trainer(cfg, run_dir, world)  # builds envs and agent: raises on bad input before the folder is touched
    run_dir.mkdir(parents=True, exist_ok=True)
    if payload is not None:
        trainer.restore(payload)
        if world.main:
            truncate_metrics(run_dir / "metrics.jsonl", trainer.step)
            print(f"resuming {run_dir} at step {trainer.step} ({len(trainer.replay)} replay steps)", file=sys.stderr)
    else:
        if world.main:
            truncate_metrics(run_dir / "metrics.jsonl", 0)
        loaded = trainer.replay.load()  # steps a run that died before its first checkpoint already collected
        if world.main:
            print(f"run folder: {run_dir}" + (f" ({loaded} replay steps reused)" if loaded else ""), file=sys.stderr)
    if world.size > 1:
        # Rank 0's weights, normaliser and slow critic on every rank. Also the point after which rank 0 writes to
        # the folder: every rank has read what it needed from it.
        distributed.broadcast_(list(trainer.agent.state_dict().values()))
    if world.main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    with sigterm_as_interrupt() if world.size == 1 else distributed.stop_on_signals(trainer.stop):
        trainer.run()
    if world.main:
        print(f"done: {trainer.step} env steps, {trainer.updates} updates; checkpoint {run_dir / 'checkpoints' / 'latest'}",
              file=sys.stderr)
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
