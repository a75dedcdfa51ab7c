"""The run folder: where a run lives, whether it starts or resumes, and where each torchrun rank keeps its part."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from worldmodels.runtime import distributed
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.config import resume_conflict
from worldmodels.runtime.errors import UserError


def has_checkpoint(run_dir: Path) -> bool:
    checkpoints = run_dir / "checkpoints"
    return (checkpoints / "latest").exists() or (checkpoints / "previous").exists()


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, dict[str, Any] | None]:
    """The run's folder and, when it holds a checkpoint, that checkpoint (to resume from).

    `resume=<folder>` must name a folder with a checkpoint; `run.dir` resumes when it holds one and
    starts fresh otherwise; with neither, a fresh folder runs/<suite>-<task>-<time> is used.
    """
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if not has_checkpoint(run_dir):
            raise UserError(f"cannot resume: {run_dir} holds no checkpoint (checkpoints/latest)")
    elif cfg.run.dir:
        run_dir = Path(cfg.run.dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.env.suite}-{cfg.env.id}-{stamp}".replace("/", "-")
    if not has_checkpoint(run_dir):
        saved = run_dir / "config.yaml"
        if saved.exists():  # a run that died before its first checkpoint: start again, keeping its replay
            conflict = resume_conflict(OmegaConf.load(saved), cfg)
            if conflict:
                raise UserError(f"cannot reuse {run_dir}: {conflict}; use another run.dir for a new run")
        return run_dir, None
    payload = load_checkpoint(run_dir / "checkpoints")
    conflict = resume_conflict(OmegaConf.create(payload["config"]), cfg)
    if conflict:
        raise UserError(f"cannot resume {run_dir}: {conflict}; use another run.dir for a new run")
    return run_dir, payload


def open_run(cfg: DictConfig, world: distributed.World) -> tuple[Path, dict[str, Any] | None, DictConfig]:
    """The run folder, the checkpoint to resume from (None: a fresh run) and the config this process runs: the folder
    fixed in `run.dir` (so config.yaml resumes as it is) and rank r's seed (rank 0 saves the run's own)."""
    run_dir, payload = prepare_run_dir(cfg)
    trained_by = world.size if payload is None else payload.get("world_size", 1)
    if trained_by != world.size:
        raise UserError(f"cannot resume {run_dir}: it was trained by {trained_by} process(es) (torchrun world size) and this run "
                        f"has {world.size}; resume it with {trained_by}")
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg, False)
    cfg.run.dir = str(run_dir)
    cfg.resume = None
    cfg.seed = distributed.rank_seed(cfg.seed, world.rank)
    return run_dir, payload, cfg


def replay_dir(run_dir: Path, rank: int = 0) -> Path:
    """Where a rank keeps its replay: rank 0 (and a single process) in <run>/replay, rank r in <run>/replay/rank<r>."""
    return run_dir / "replay" / f"rank{rank}" if rank else run_dir / "replay"


def rank_checkpoints(run_dir: Path, rank: int) -> Path:
    """Where rank r > 0 keeps its own counters and RNG states (latest, previous), next to rank 0's checkpoint."""
    return run_dir / "checkpoints" / f"rank{rank}"
