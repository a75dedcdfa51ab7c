"""Replay persisted to disk as it fills: atomic chunk files, oldest-first eviction, damage-tolerant loading."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


class ChunkStore:
    """A folder of `NNNNNNNNNN-LLLL.npz` chunks (sequence number, length), each a run of consecutive steps.

    Chunks are written to a temporary name and renamed, so a crash leaves whole chunks or nothing;
    they hold plain arrays and load with `allow_pickle=False`, so a file cannot run code. A chunk that
    cannot be read is skipped with a warning naming it, and the chunk after a gap starts with
    `is_first`, so no sampled sequence joins steps that were not consecutive.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp*"):  # left by a crash mid-write: never a complete chunk
            stale.unlink(missing_ok=True)
        self.next_seq = max((self._seq(p) for p in self.files()), default=-1) + 1

    @staticmethod
    def _seq(path: Path) -> int:
        return int(path.stem.split("-")[0])

    def files(self) -> list[Path]:
        return sorted((p for p in self.dir.glob("*.npz") if p.stem.split("-")[0].isdigit()), key=self._seq)

    def write(self, steps: dict[str, np.ndarray]) -> Path:
        """Write one chunk of steps (arrays with a leading time axis) atomically."""
        length = len(next(iter(steps.values())))
        path = self.dir / f"{self.next_seq:010d}-{length}.npz"
        _save_atomically(path, steps, compressed=True)
        self.next_seq += 1
        return path

    STATE_FILE = "state.npz"  # the replay's state that changes after its steps are written (Replay.save_state)

    def write_state(self, arrays: dict[str, np.ndarray]) -> None:
        _save_atomically(self.dir / self.STATE_FILE, arrays, compressed=False)

    def read_state(self) -> dict[str, np.ndarray] | None:
        """The state file's arrays; None when there is none, or (with a warning naming it) when it is unreadable."""
        path = self.dir / self.STATE_FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as e:  # noqa: BLE001 - a damaged state file costs the rewrites, not the replay
            warnings.warn(f"replay state {path} is unreadable and was skipped ({type(e).__name__}: {e})", stacklevel=2)
            return None

    def evict(self, keep_steps: int) -> None:
        """Delete the oldest chunks that hold only steps beyond the newest `keep_steps`."""
        files = self.files()
        lengths = [int(p.stem.split("-")[1]) for p in files]
        total = sum(lengths)
        for path, length in zip(files, lengths):
            if total - length < keep_steps:
                break
            path.unlink(missing_ok=True)
            total -= length

    def load(self, keep_steps: int, with_seq: bool = False) -> list:
        """The readable chunks, oldest first, limited to about the newest `keep_steps` steps; with
        `with_seq`, (sequence number, chunk) pairs."""
        chunks: list[dict[str, np.ndarray]] = []
        expected, gap = None, False
        for path in self.files():
            seq = self._seq(path)
            try:
                with np.load(path, allow_pickle=False) as data:
                    chunk = {k: data[k] for k in data.files}
                if "is_first" not in chunk or len({len(v) for v in chunk.values()}) != 1:
                    raise ValueError("not a chunk of steps")
            except Exception as e:  # noqa: BLE001 - any damage: skip the chunk, keep the rest
                warnings.warn(f"replay chunk {path} is unreadable and was skipped ({type(e).__name__}: {e})", stacklevel=2)
                gap = True
                continue
            if chunks and (gap or seq != expected):  # steps are missing before this chunk: start afresh
                chunk["is_first"] = chunk["is_first"].copy()
                chunk["is_first"][0] = True
            chunks.append((seq, chunk))
            expected, gap = seq + 1, False
        total, first = 0, 0
        for i in range(len(chunks) - 1, -1, -1):
            total += len(chunks[i][1]["is_first"])
            if total >= keep_steps:
                first = i
                break
        return chunks[first:] if with_seq else [chunk for _, chunk in chunks[first:]]


def _save_atomically(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> None:
    """Write an .npz to a temporary name, sync it and rename it: a crash leaves the whole file or none."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
