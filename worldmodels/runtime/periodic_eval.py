"""The evaluations a training run logs as it goes: greedy (run.eval_mode) episodes with optional videos, and the
open-loop prediction errors of the world model on replayed windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.agent.agent import Agent
from worldmodels.evaluation.imagination import WorldModelPredictor
from worldmodels.evaluation.report import replay_openloop
from worldmodels.evaluation.video import add_gif, save_gif
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.runtime.driver import Driver, VectorDriver


def episode_returns(driver: Driver | VectorDriver, episodes: int, video_dir: Path | None = None, tb: Any = None,
                    step: int = 0) -> float:
    """Mean return of `episodes` episodes; with `video_dir`, the first one of each image key is saved as
    <video_dir>/eval_<step>_<key>.gif and as an animated image in TensorBoard `tb` (Images tab)."""
    if video_dir is None:
        return float(np.mean([s["return"] for s in driver.episodes(episodes)]))
    recorded, stats = driver.record(episodes)
    for key, frames in recorded[0].items():
        if frames.ndim == 4 and frames.dtype == np.uint8:
            save_gif(frames, video_dir / f"eval_{step}_{key}.gif")
            if tb is not None:
                add_gif(tb, f"eval/video_{key}", frames, step)
    return float(np.mean([s["return"] for s in stats]))


def openloop_errors(agent: Agent, replay: Replay | ReplayStreams, context: int, horizon: int, windows: int = 64) -> dict[str, float]:
    """Open-loop prediction errors on windows sampled from the replay (no env steps, forward passes only); {} until
    the replay holds a whole window."""
    if not replay.ready(context + horizon):
        return {}
    return replay_openloop(WorldModelPredictor(agent), replay.sample(windows, context + horizon), context)
