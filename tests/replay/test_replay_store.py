"""Persistent replay: atomic chunks, eviction with the files, and loading past damaged chunks."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodels.replay.buffer import Replay
from worldmodels.replay.store import ChunkStore


def fill(replay: Replay, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        replay.add({"x": np.float32(i), "is_first": i % 7 == 0, "is_last": i % 7 == 6})


def stored_x(replay: Replay) -> np.ndarray:
    return replay.data["x"][replay._recent(replay.size)]


def test_round_trip_restores_the_newest_steps(tmp_path):
    replay = Replay(50, store=ChunkStore(tmp_path), chunk=10)
    fill(replay, 73)
    assert replay.flushed == 70  # three steps still pending: the most a crash could lose is one chunk
    replay.flush()
    again = Replay(50, store=ChunkStore(tmp_path), chunk=10)
    assert again.load() >= 50
    np.testing.assert_array_equal(stored_x(again), np.arange(23, 73, dtype=np.float32))


def test_eviction_removes_files_beyond_capacity(tmp_path):
    store = ChunkStore(tmp_path)
    replay = Replay(30, store=store, chunk=10)
    fill(replay, 100)
    lengths = [int(p.stem.split("-")[1]) for p in store.files()]
    assert sum(lengths) == 30 and len(store.files()) == 3


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".0000000003-10.npz.tmp").write_bytes(b"half a chunk")
    ChunkStore(tmp_path)
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_chunk_is_skipped_and_the_next_one_starts_an_episode(tmp_path, damage):
    replay = Replay(1000, store=ChunkStore(tmp_path), chunk=10)
    fill(replay, 40)
    victim = ChunkStore(tmp_path).files()[1]  # steps 10..19
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "garbage":
        victim.write_bytes(b"\x00" * 64)
    else:
        victim.unlink()
    again = Replay(1000, store=ChunkStore(tmp_path), chunk=10)
    if damage == "delete":
        again.load()
    else:
        with pytest.warns(UserWarning, match=victim.name):
            again.load()
    x = stored_x(again)
    np.testing.assert_array_equal(x, np.concatenate([np.arange(10), np.arange(20, 40)]).astype(np.float32))
    first = again.data["is_first"][again._recent(again.size)]
    assert first[10], "the step after the gap must reset the model"
    # Every sampled window that contains the jump in x has is_first where the jump lands.
    for _ in range(50):
        seq = again.sample(8, 6)
        jumps = np.diff(seq["x"], axis=1) != 1
        assert np.all(seq["is_first"][:, 1:][jumps])


def test_pickled_object_chunk_is_refused(tmp_path):
    replay = Replay(100, store=ChunkStore(tmp_path), chunk=10)
    fill(replay, 10)
    with open(tmp_path / "0000000001-10.npz", "wb") as f:
        np.savez(f, x=np.array([object()] * 10, dtype=object), is_first=np.zeros(10, bool), is_last=np.zeros(10, bool))
    again = Replay(100, store=ChunkStore(tmp_path), chunk=10)
    with pytest.warns(UserWarning, match="0000000001-10.npz"):
        assert again.load() == 10


def test_mark_last_ends_the_newest_step():
    replay = Replay(10)
    fill(replay, 3)
    replay.mark_last()
    assert replay.data["is_last"][2] and not replay.data["is_last"][1]
