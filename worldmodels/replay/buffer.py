"""Replay of environment steps, sampled as fixed-length sequences: one stream (`Replay`), or one stream per env
(`ReplayStreams`) when many environments are stepped at once."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.replay.store import ChunkStore


class Replay:
    """FIFO ring buffer of steps; samples (B, T) windows uniformly among all stored windows.

    Steps are stored in the order they happened, so a window is a real piece of experience.
    Windows may cross episode boundaries: the step that starts an episode carries `is_first`,
    which resets the world model's state. A window never crosses the write position, where the
    newest and the oldest data meet.

    Online queue (the official `replay.online`): with `online=L`, every L new steps the window of the
    newest L steps is queued, and `sample` takes queued windows first, so every new sequence is trained
    on at least once, however large the replay has grown.

    Stored values can be rewritten after the fact with `update` (the latent states of replay context).
    `save_state`/`load` keep the queue and those rewrites across a resume.

    Args:
        capacity: steps kept; the oldest are dropped first.
        seed: seed of the sampling generator.
        store: where to persist steps (see ChunkStore); None keeps them in memory only.
        chunk: steps per chunk file; at most this many steps are lost when the process dies.
        online: window length of the online queue; 0 turns it off.
    """

    def __init__(self, capacity: int, seed: int = 0, store: ChunkStore | None = None, chunk: int = 1024, online: int = 0):
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
        self.online = int(online)
        self.queue: deque[int] = deque()  # start (in `added` numbering) of each queued window
        self.since_queued = 0  # steps added since the last window was queued

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
        if self.online:
            self.since_queued += 1
            if self.since_queued >= self.online:
                self.queue.append(self.added - self.online)
                self.since_queued = 0
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
        """Refill from the store (on resume); returns the number of steps loaded.

        Where the store holds a state file (`save_state`), the queue and rewritten values it recorded are
        restored onto the steps that were stored when it was written."""
        if self.store is None:
            return 0
        state = self.store.read_state()
        loaded = before_state = 0  # steps loaded, and those of them written before the state file
        for seq, chunk in self.store.load(self.capacity, with_seq=True):
            length = len(chunk["is_first"])
            for i in range(length):
                self._add_quietly({key: values[i] for key, values in chunk.items()})
            loaded += length
            if state is not None and seq < int(state["seq_end"]):
                before_state += length
        self.flushed = self.added
        if state is not None and loaded == self.added:  # loaded into an empty replay, as on resume
            self._apply_state(state, end=before_state)
        return loaded

    # -- state that changes after steps are written: the online queue and rewritten values -------------
    def save_state(self, keys: tuple[str, ...] = ()) -> None:
        """Write the online queue and the current values of `keys` (for every stored step) beside the
        chunks, atomically; call after `flush`, so the file describes exactly the steps on disk."""
        if self.store is None:
            return
        order = self._recent(self.size)
        arrays = {f"value/{key}": self.data[key][order] for key in keys if key in self.data}
        arrays.update(
            seq_end=np.int64(self.store.next_seq),
            queue_age=np.asarray([self.added - start for start in self.queue], np.int64),
            since_queued=np.int64(self.since_queued),
        )
        self.store.write_state(arrays)

    def _apply_state(self, state: dict[str, np.ndarray], end: int) -> None:
        """Restore the saved queue and values onto loaded steps 0 .. end - 1 (those the file describes;
        the load started from an empty replay, so a step's `added` number is its place in the load)."""
        oldest = self.added - self.size
        for key, values in state.items():
            if key.startswith("value/") and key[6:] in self.data:
                count = min(len(values), end - oldest)
                if count > 0:
                    self.data[key[6:]][(end - count + np.arange(count)) % self.capacity] = values[len(values) - count:]
        self.queue = deque(int(end - age) for age in state["queue_age"] if end - age >= oldest)
        self.since_queued = int(state["since_queued"])

    def ready(self, length: int) -> bool:
        """Whether a window of `length` steps can be sampled."""
        return self.size >= length

    def update(self, index: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Rewrite stored values at ring positions `index` (as returned by `sample_index`)."""
        for key, value in values.items():
            self.data[key][index] = value

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

    def sample(self, batch: int, length: int, online: bool = False) -> dict[str, np.ndarray]:
        """`batch` windows of `length` consecutive steps: arrays (B, T, ...); see `sample_index`."""
        data, _ = self.sample_index(batch, length, online)
        return data

    def sample_index(self, batch: int, length: int, online: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Windows as in `sample`, with their ring positions (B, T), for `update`.

        With `online` (training batches), queued online windows come first, one per batch row while the
        queue lasts; the rest, and every window of other callers (reports), are drawn uniformly among
        all stored windows."""
        if length > self.size:
            raise ValueError(f"cannot sample sequences of {length} steps from a replay holding {self.size}")
        oldest = self.added - self.size
        queued = []
        while online and self.queue and len(queued) < batch:
            start = self.queue.popleft()
            if oldest <= start and start + length <= self.added:  # still stored, and long enough
                queued.append(start)
        # Logical position 0 is the oldest stored step; windows start at 0 .. size - length.
        starts = np.concatenate([np.asarray(queued, np.int64), oldest + self.rng.integers(0, self.size - length + 1, size=batch - len(queued))])
        index = (starts[:, None] + np.arange(length)[None]) % self.capacity
        return {key: values[index] for key, values in self.data.items()}, index


class ReplayStreams:
    """One Replay per environment (its stream), sampled as one replay: a window is a piece of one env's experience and
    never runs from one env's steps into another's.

    Windows are drawn uniformly among every stream's windows (so a stream is drawn in proportion to the windows it
    holds); with `online`, the streams' queued windows come first, taken from the streams in turn. `sample_index`
    returns global positions, stream * stride + ring position, which `update` sends back to the right stream (the
    latent states of replay context). `add`, `mark_last` name the stream; the rest is Replay's interface.
    """

    def __init__(self, streams: list[Replay], seed: int = 0):
        if not streams:
            raise ValueError("ReplayStreams needs at least one stream")
        self.streams = list(streams)
        self.rng = np.random.default_rng(seed)
        self.stride = max(stream.capacity for stream in self.streams)

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams)

    @property
    def added(self) -> int:
        return sum(stream.added for stream in self.streams)

    def ready(self, length: int) -> bool:
        return any(stream.ready(length) for stream in self.streams)

    def add(self, step: dict[str, Any], stream: int) -> None:
        self.streams[stream].add(step)

    def mark_last(self, stream: int) -> None:
        self.streams[stream].mark_last()

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def save_state(self, keys: tuple[str, ...] = ()) -> None:
        for stream in self.streams:
            stream.save_state(keys)

    def load(self) -> int:
        return sum(stream.load() for stream in self.streams)

    def update(self, index: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Rewrite stored values at the global positions `index` (as returned by `sample_index`)."""
        which, position = np.divmod(index, self.stride)
        for s in np.unique(which):
            rows = which == s
            self.streams[s].update(position[rows], {key: value[rows] for key, value in values.items()})

    def sample(self, batch: int, length: int, online: bool = False) -> dict[str, np.ndarray]:
        data, _ = self.sample_index(batch, length, online)
        return data

    def sample_index(self, batch: int, length: int, online: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`batch` windows of `length` consecutive steps of one stream each: arrays (B, T, ...), and their global
        positions (B, T)."""
        rows: list[tuple[int, int]] = []  # (stream, start in that stream's `added` numbering)
        while online and len(rows) < batch and any(stream.queue for stream in self.streams):
            for s, stream in enumerate(self.streams):
                if len(rows) < batch and stream.queue:
                    start = stream.queue.popleft()
                    if stream.added - stream.size <= start and start + length <= stream.added:  # still stored, long enough
                        rows.append((s, start))
        sizes = np.asarray([stream.size for stream in self.streams], np.int64)
        windows = np.maximum(sizes - length + 1, 0)
        draws = batch - len(rows)
        if draws and not windows.sum():
            raise ValueError(f"cannot sample sequences of {length} steps from replay streams holding at most {sizes.max()}")
        ends = np.cumsum(windows)
        drawn = self.rng.integers(0, max(int(ends[-1]), 1), size=draws)
        which = np.searchsorted(ends, drawn, side="right")
        oldest = np.asarray([stream.added - stream.size for stream in self.streams], np.int64)
        starts = oldest[which] + drawn - (ends - windows)[which]
        which = np.concatenate([np.asarray([s for s, _ in rows], np.int64), which])
        starts = np.concatenate([np.asarray([start for _, start in rows], np.int64), starts])
        capacity = np.asarray([stream.capacity for stream in self.streams], np.int64)
        ring = (starts[:, None] + np.arange(length)[None]) % capacity[which][:, None]
        template = next(stream.data for stream in self.streams if stream.data)
        data = {key: np.empty((batch, length, *values.shape[1:]), values.dtype) for key, values in template.items()}
        for s in np.unique(which):
            picked = which == s
            for key, values in self.streams[s].data.items():
                data[key][picked] = values[ring[picked]]
        return data, which[:, None] * self.stride + ring


def make_replay(capacity: int, seed: int, directory: Path | None, chunk: int, online: int, streams: int = 1) -> Replay | ReplayStreams:
    """The replay of a run: one Replay (persisted in `directory`, None: in memory only), or with `streams` > 1 one stream
    per env, each holding capacity // streams steps (persisted in `directory`/env<i>)."""
    if streams == 1:
        return Replay(capacity, seed=seed, store=ChunkStore(directory) if directory else None, chunk=chunk, online=online)
    each = capacity // streams
    return ReplayStreams(
        [Replay(each, seed=seed + i, store=ChunkStore(directory / f"env{i}") if directory else None, chunk=chunk, online=online)
         for i in range(streams)],
        seed=seed,
    )
