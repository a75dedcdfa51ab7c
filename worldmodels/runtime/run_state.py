"""What a run saves and continues from: its counters, the agent's weights and optimiser, the random streams and the
replay, saved so that a crash at any moment leaves a whole checkpoint; under torchrun, every rank's part of one save."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from worldmodels.agent.agent import Agent
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.runtime import distributed
from worldmodels.runtime.checkpoint import load_agent_state, load_checkpoint, save_checkpoint
from worldmodels.runtime.driver import VectorDriver
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.logger import truncate_metrics
from worldmodels.runtime.rng import rng_state, set_rng_state
from worldmodels.runtime.run_folder import rank_checkpoints


def stop_error(cause: BaseException, step: int, checkpoints: Path, saved: bool) -> UserError:
    """The one line a run ends with when an env broke for good (EnvFailure) or a signal stopped it, saying whether
    a checkpoint of this step was saved or the last one stands."""
    if isinstance(cause, KeyboardInterrupt):
        kept = "checkpoint saved" if saved else "the last checkpoint is kept"
        return UserError(f"interrupted at step {step}; {kept}, rerun the same command to resume")
    return UserError(f"{cause}; checkpoint saved in {checkpoints}" if saved else f"{cause}; the last checkpoint in {checkpoints} is kept")


@dataclass
class Progress:
    """The run's counters."""

    step: int = 0  # env steps (frames after action repeat): what run.steps and every logged step count
    stored: int = 0  # replay items stored, one per agent step: what the train ratio counts
    updates: int = 0
    train_from: int | None = None  # items stored when training started (train-ratio accounting)
    wall_s: float = 0.0  # seconds of training before this process (summed over resumes)
    saves: int = 0  # checkpoints written under torchrun: pairs each rank's own state with rank 0's checkpoint
    started: float = field(default_factory=time.time)

    def wall_seconds(self) -> float:
        return self.wall_s + time.time() - self.started


class RunCheckpoint:
    """Saves the run into <run>/checkpoints (latest, previous) and restores it from there; the training driver's
    count of rebuilt envs goes with it."""

    def __init__(self, cfg: DictConfig, run_dir: Path, world: distributed.World, progress: Progress, agent: Agent,
                 replay: Replay | ReplayStreams, driver: VectorDriver):
        self.cfg, self.run_dir, self.world, self.progress = cfg, run_dir, world, progress
        self.agent, self.replay, self.driver = agent, replay, driver

    def state(self) -> dict[str, Any]:
        p = self.progress
        state = {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "step": p.step,
            "stored": p.stored,
            "updates": p.updates,
            "train_from": p.train_from,
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.opt.state_dict(),
            "env_failures": self.driver.failures,
            "wall_s": p.wall_seconds(),
            "rng": rng_state(self.replay),
        }
        if self.world.size > 1:  # a resume needs as many processes, and each rank's own state of the same save
            state.update(world_size=self.world.size, saves=p.saves)
        return state

    def rank_state(self) -> dict[str, Any]:
        """What rank r > 0 keeps beside rank 0's checkpoint: its own counters and RNG states (its replay is in its shard)."""
        p = self.progress
        return {"rank": self.world.rank, "saves": p.saves, "step": p.step, "stored": p.stored,
                "env_failures": self.driver.failures, "rng": rng_state(self.replay)}

    def save(self) -> None:
        """Replay first, then the checkpoint: the checkpoint never refers to steps that are not on disk.

        Under torchrun every rank saves together: its replay shard and (ranks > 0) its own state, numbered by
        `saves`; once every rank has, rank 0 alone writes the checkpoint."""
        self.replay.flush()
        self.replay.save_state(self.agent.latent_keys)  # the online queue and the latents rewritten by training
        if self.world.size > 1:
            self.progress.saves += 1
            if not self.world.main:
                save_checkpoint(rank_checkpoints(self.run_dir, self.world.rank) / "latest", self.rank_state())
            distributed.barrier(self.agent.device)
            if not self.world.main:
                return
        save_checkpoint(self.run_dir / "checkpoints" / "latest", self.state())

    def start(self, payload: dict[str, Any] | None) -> None:
        """Fill the run folder to train in: continue from `payload` (a checkpoint) or start fresh, reusing the replay
        a run that died before its first checkpoint collected; then the same weights on every rank and config.yaml."""
        main = self.world.main
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if payload is not None:
            self.restore(payload)
            if main:
                truncate_metrics(self.run_dir / "metrics.jsonl", self.progress.step)
                print(f"resuming {self.run_dir} at step {self.progress.step} ({len(self.replay)} replay steps)", file=sys.stderr)
        else:
            if main:
                truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            loaded = self.replay.load()
            if main:
                print(f"run folder: {self.run_dir}" + (f" ({loaded} replay steps reused)" if loaded else ""), file=sys.stderr)
        if self.world.size > 1:
            # Rank 0's weights, normaliser and slow critic on every rank. Also the point after which rank 0 writes to
            # the folder: every rank has read what it needed from it.
            distributed.broadcast_(list(self.agent.state_dict().values()))
        if main:
            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint: counters, networks, optimiser, RNG states and the replay on disk."""
        p = self.progress
        load_agent_state(self.agent, payload.get("agent", {}), self.run_dir / "checkpoints")
        try:
            self.agent.opt.load_state_dict(payload["optimizer"])
            p.step, p.updates, p.train_from = payload["step"], payload["updates"], payload["train_from"]
            if "stored" in payload:
                p.stored = payload["stored"]
            else:  # checkpoints before 0.3 counted the train ratio in env steps: convert to agent steps
                repeat = self.cfg.env.action_repeat
                p.stored = p.step // repeat
                p.train_from = None if p.train_from is None else p.train_from // repeat
            self.driver.failures = payload.get("env_failures", 0)
            p.wall_s = float(payload.get("wall_s", 0.0))
            set_rng_state(payload["rng"], self.replay)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise UserError(f"checkpoint in {self.run_dir} does not fit this run ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.replay.load()
        p.saves = payload.get("saves", 0)
        if self.world.rank:
            self._restore_rank()

    def _restore_rank(self) -> None:
        """Rank r > 0: its own counters and RNG states, from the file it wrote with the checkpoint being resumed."""
        folder = rank_checkpoints(self.run_dir, self.world.rank)
        for name in ("latest", "previous"):  # `previous` where rank 0 died before its checkpoint of `latest` landed
            try:
                state = load_checkpoint(folder / name)
            except UserError:
                continue
            if state.get("saves") == self.progress.saves:
                break
        else:
            raise UserError(f"cannot resume {self.run_dir}: rank {self.world.rank} has no state saved with its checkpoint ({folder})")
        self.progress.step, self.progress.stored = state["step"], state["stored"]
        self.driver.failures = state["env_failures"]
        set_rng_state(state["rng"], self.replay)
