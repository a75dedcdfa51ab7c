"""Replay of one stream of environment steps, sampled as fixed-length sequences."""

from __future__ import annotations

from typing import Any

import numpy as np


class Replay:
    """FIFO ring buffer of steps; samples (B, T) windows uniformly among all stored windows.

    Steps are stored in the order they happened, so a window is a real piece of experience.
    Windows may cross episode boundaries: the step that starts an episode carries `is_first`,
    which resets the world model's state. A window never crosses the write position, where the
    newest and the oldest data meet.

    Args:
        capacity: steps kept; the oldest are dropped first.
        seed: seed of the sampling generator.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"replay.capacity must be a positive integer, got {capacity}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0  # steps stored
        self.added = 0  # steps ever added

    def __len__(self) -> int:
        return self.size

    def add(self, step: dict[str, Any]) -> None:
        """Store one step: a flat dict of arrays or scalars (same keys, shapes and dtypes every time)."""
        if not self.data:
            for key, value in step.items():
                value = np.asarray(value)
                self.data[key] = np.zeros((self.capacity, *value.shape), value.dtype)
        elif step.keys() != self.data.keys():
            raise KeyError(f"replay step keys {sorted(step)} differ from the stored keys {sorted(self.data)}")
        index = self.added % self.capacity
        for key, value in step.items():
            self.data[key][index] = value
        self.added += 1
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
        """`batch` windows of `length` consecutive steps: arrays (B, T, ...)."""
        if length > self.size:
            raise ValueError(f"cannot sample sequences of {length} steps from a replay holding {self.size}")
        # Logical position 0 is the oldest stored step; windows start at 0 .. size - length.
        starts = self.rng.integers(0, self.size - length + 1, size=batch)
        oldest = self.added - self.size
        index = (oldest + starts[:, None] + np.arange(length)[None]) % self.capacity
        return {key: values[index] for key, values in self.data.items()}
