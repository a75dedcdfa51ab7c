"""Replay of one stream of environment steps, sampled as fixed-length sequences."""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodels.replay_store import ChunkStore


class Replay:
    """FIFO ring buffer of steps; samples (B, T) windows uniformly among all stored windows.

    Steps are stored in the order they happened, so a window is a real piece of experience.
    Windows may cross episode boundaries: the step that starts an episode carries `is_first`,
    which resets the world model's state. A window never crosses the write position, where the
    newest and the oldest data meet.

    Args:
        capacity: steps kept; the oldest are dropped first.
        seed: seed of the sampling generator.
        store: where to persist steps (see ChunkStore); None keeps them in memory only.
        chunk: steps per chunk file; at most this many steps are lost when the process dies.
    """

    def __init__(self, capacity: int, seed: int = 0, store: ChunkStore | None = None, chunk: int = 1024):
        if capacity < 1:
            raise ValueError(f"replay.capacity must be a positive integer, got {capacity}")
        if chunk < 1:
            raise ValueError(f"replay.chunk must be a positive integer, got {chunk}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0  # steps stored
        self.added = 0  # steps ever added
        self.store, self.chunk = store, min(int(chunk), self.capacity)
        self.flushed = 0  # steps ever added that are on disk

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
        if self.store is not None and self.added - self.flushed >= self.chunk:
            self.flush()

    def _recent(self, count: int) -> np.ndarray:
        """Ring indices of the newest `count` steps, oldest first."""
        return (self.added - count + np.arange(count)) % self.capacity

    def flush(self) -> None:
        """Write the steps added since the last flush as one chunk, then drop chunks beyond capacity."""
        if self.store is None or self.added == self.flushed:
            return
        index = self._recent(min(self.added - self.flushed, self.size))
        self.store.write({key: values[index] for key, values in self.data.items()})
        self.flushed = self.added
        self.store.evict(self.capacity)

    def load(self) -> int:
        """Refill from the store (on resume); returns the number of steps loaded."""
        if self.store is None:
            return 0
        loaded = 0
        for chunk in self.store.load(self.capacity):
            for i in range(len(chunk["is_first"])):
                self._add_quietly({key: values[i] for key, values in chunk.items()})
                loaded += 1
        self.flushed = self.added
        return loaded

    def _add_quietly(self, step: dict[str, Any]) -> None:
        store, self.store = self.store, None
        try:
            self.add(step)
        finally:
            self.store = store

    def mark_last(self) -> None:
        """End the episode at the newest step (its environment failed): no transition is invented.

        Only the copy in memory changes when the step was already written to disk; the next step
        starts an episode with `is_first` either way, so no sequence runs across the failure.
        """
        if self.size:
            index = (self.added - 1) % self.capacity
            self.data["is_last"][index] = True

    def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
        """`batch` windows of `length` consecutive steps: arrays (B, T, ...)."""
        if length > self.size:
            raise ValueError(f"cannot sample sequences of {length} steps from a replay holding {self.size}")
        # Logical position 0 is the oldest stored step; windows start at 0 .. size - length.
        starts = self.rng.integers(0, self.size - length + 1, size=batch)
        oldest = self.added - self.size
        index = (oldest + starts[:, None] + np.arange(length)[None]) % self.capacity
        return {key: values[index] for key, values in self.data.items()}
