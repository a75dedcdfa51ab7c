"""The process's random streams (torch, NumPy, Python) and the replay's sampler, as plain values a checkpoint keeps."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from worldmodels.replay.buffer import Replay, ReplayStreams


def _numpy_state() -> dict[str, Any]:
    """NumPy's global RNG state with plain lists instead of arrays, so checkpoints stay weights-only."""
    state = np.random.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return state


def rng_state(replay: Replay | ReplayStreams) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
        "replay": replay.rng.bit_generator.state,
    }


def set_rng_state(state: dict[str, Any], replay: Replay | ReplayStreams) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32), "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    random.setstate(state["python"])
    replay.rng.bit_generator.state = state["replay"]
