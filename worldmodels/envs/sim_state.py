"""Saving and restoring a simulator's state, for environments that allow it (DeepMind Control, Gymnasium MuJoCo).

Used to replay actions in the real environment from a recorded state, e.g. to compare imagined and
real returns under the same actions. Other environments return None / False: callers fall back.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def get_sim_state(env: Any) -> np.ndarray | None:
    """The full physics state of the env's simulator as one float64 vector, or None where unsupported."""
    inner = env.unwrapped
    physics = getattr(getattr(inner, "_env", None), "physics", None)
    if physics is not None:  # dm_control
        return np.array(physics.get_state(), dtype=np.float64)
    data = getattr(inner, "data", None)
    if data is not None and hasattr(inner, "set_state"):  # Gymnasium MuJoCo
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)
    return None


def set_sim_state(env: Any, state: np.ndarray) -> bool:
    """Put the simulator into `state` (from get_sim_state); False where the env cannot be set."""
    inner = env.unwrapped
    physics = getattr(getattr(inner, "_env", None), "physics", None)
    if physics is not None:
        with physics.reset_context():
            physics.set_state(np.asarray(state))
        return True
    data = getattr(inner, "data", None)
    if data is not None and hasattr(inner, "set_state"):
        nq = inner.model.nq
        inner.set_state(np.asarray(state[:nq]), np.asarray(state[nq:]))
        return True
    return False
