"""Factories that turn the validated config into the objects of a run (shared by train and evaluate)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import envs
from worldmodels.agent import Agent
from worldmodels.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def make_env(env_cfg: DictConfig, seed: int) -> gym.Env:
    """Build the configured environment; bad names or unsupported spaces become one-line UserErrors."""
    options: dict[str, Any] = {k: v for k, v in OmegaConf.to_container(env_cfg, resolve=True).items() if k not in ("suite", "id")}
    try:
        return envs.make(env_cfg.suite, env_cfg.id, seed=seed, **options)
    except (ValueError, TypeError) as e:
        raise UserError(f"env: {e}") from None


def make_agent(cfg: DictConfig, env: gym.Env) -> Agent:
    try:
        return Agent(
            env.observation_space,
            env.action_space,
            OmegaConf.to_container(cfg.model, resolve=True),
            OmegaConf.to_container(cfg.agent, resolve=True),
            device=cfg.device,
        )
    except ValueError as e:
        raise UserError(f"env {cfg.env.suite}/{cfg.env.id}: {e}") from None


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Replay arrays -> tensors; flags stay boolean, everything else becomes float32 (uint8 images stay)."""
    out = {}
    for key, value in batch.items():
        tensor = torch.as_tensor(value)
        if tensor.dtype not in (torch.bool, torch.uint8):
            tensor = tensor.float()
        out[key] = tensor.to(device, non_blocking=True)
    return out
