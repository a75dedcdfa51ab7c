"""Tests for worldmodels.replay.Replay: FIFO capacity, window contiguity, uniform sampling, episodes."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodels.replay import Replay


def step(i: int, episode: int = 0, first: bool = False) -> dict:
    return {
        "count": np.int64(i),
        "episode": np.int64(episode),
        "state": np.full(3, i, np.float32),
        "image": np.full((2, 2, 1), i % 256, np.uint8),
        "action": np.eye(2, dtype=np.float32)[i % 2],
        "reward": np.float32(i * 0.5),
        "is_first": bool(first),
        "is_last": False,
        "is_terminal": False,
    }


def fill(replay: Replay, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        replay.add(step(i))


def test_rejects_non_positive_capacity():
    with pytest.raises(ValueError):
        Replay(0)
    with pytest.raises(ValueError):
        Replay(-5)


def test_len_grows_then_stays_at_capacity():
    replay = Replay(10)
    assert len(replay) == 0
    for i in range(25):
        replay.add(step(i))
        assert len(replay) == min(i + 1, 10)


def test_oldest_dropped_first():
    replay = Replay(10, seed=0)
    fill(replay, 23)
    # the full buffer as a single window holds exactly the 10 newest steps, oldest first
    batch = replay.sample(3, 10)
    for b in range(3):
        assert batch["count"][b].tolist() == list(range(13, 23))


def test_sample_shapes_and_dtypes():
    replay = Replay(50, seed=1)
    fill(replay, 30)
    batch = replay.sample(4, 7)
    assert batch["count"].shape == (4, 7) and batch["count"].dtype == np.int64
    assert batch["state"].shape == (4, 7, 3) and batch["state"].dtype == np.float32
    assert batch["image"].shape == (4, 7, 2, 2, 1) and batch["image"].dtype == np.uint8
    assert batch["action"].shape == (4, 7, 2) and batch["action"].dtype == np.float32
    assert batch["reward"].shape == (4, 7) and batch["reward"].dtype == np.float32
    assert batch["is_first"].shape == (4, 7) and batch["is_first"].dtype == np.bool_
    # the values belong together: every key of a step came from the same add() call
    c = batch["count"]
    np.testing.assert_array_equal(batch["state"][..., 0], c.astype(np.float32))
    np.testing.assert_array_equal(batch["reward"], c.astype(np.float32) * 0.5)
    np.testing.assert_array_equal(batch["action"].argmax(-1), c % 2)


def test_sample_returns_copies():
    replay = Replay(10, seed=2)
    fill(replay, 10)
    batch = replay.sample(2, 3)
    batch["state"][:] = -1
    again = replay.sample(50, 3)
    assert (again["state"] >= 0).all()


@pytest.mark.parametrize("capacity,added,length", [(20, 15, 5), (20, 20, 20), (20, 57, 6), (7, 100, 7), (16, 33, 1)])
def test_windows_are_consecutive_and_never_cross_write_position(capacity, added, length):
    replay = Replay(capacity, seed=3)
    fill(replay, added)
    batch = replay.sample(500, length)
    c = batch["count"]
    assert c.shape == (500, length)
    if length > 1:
        assert (np.diff(c, axis=1) == 1).all()
    oldest = added - min(added, capacity)
    assert c.min() >= oldest and c.max() <= added - 1


def test_every_valid_start_is_drawn_uniformly():
    capacity, added, length, n = 12, 31, 5, 14000
    replay = Replay(capacity, seed=4)
    fill(replay, added)
    starts = replay.sample(n, length)["count"][:, 0]
    oldest = added - capacity
    valid = np.arange(oldest, added - length + 1)  # 8 windows that do not cross the write position
    counts = np.array([(starts == s).sum() for s in valid])
    assert counts.sum() == n  # nothing outside the valid starts
    expected = n / len(valid)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 7 degrees of freedom: P(chi2 > 30) is about 1e-4
    assert chi2 < 30, (counts, chi2)
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


def test_uniform_before_wrap_around():
    replay = Replay(100, seed=5)
    fill(replay, 10)
    starts = replay.sample(9000, 4)["count"][:, 0]
    counts = np.bincount(starts, minlength=7)
    assert len(counts) == 7  # starts 0 .. 6
    expected = 9000 / 7
    assert ((counts - expected) ** 2 / expected).sum() < 25, counts


def test_episode_boundaries_carry_is_first():
    rng = np.random.default_rng(6)
    replay = Replay(53, seed=6)
    i = 0
    for episode in range(40):
        for t in range(int(rng.integers(1, 9))):
            replay.add(step(i, episode, first=(t == 0)))
            i += 1
    assert i > 53  # wrapped around, the oldest stored step is (likely) mid-episode
    batch = replay.sample(400, 12)
    ep, first = batch["episode"], batch["is_first"]
    changed = ep[:, 1:] != ep[:, :-1]
    assert changed.any()
    # wherever the episode changes inside a window, the new episode's first step is marked
    assert first[:, 1:][changed].all()
    # and is_first inside a window only appears where the episode changes
    assert changed[first[:, 1:]].all()
    assert (np.diff(ep, axis=1) >= 0).all()


def test_sampling_more_steps_than_stored_raises():
    replay = Replay(10)
    with pytest.raises(ValueError):
        replay.sample(1, 1)  # empty
    fill(replay, 5)
    with pytest.raises(ValueError):
        replay.sample(2, 6)
    replay.sample(2, 5)
    fill(replay, 20, start=5)
    with pytest.raises(ValueError):
        replay.sample(2, 11)


def test_sampling_is_seeded():
    a, b = Replay(30, seed=7), Replay(30, seed=7)
    fill(a, 45)
    fill(b, 45)
    np.testing.assert_array_equal(a.sample(8, 4)["count"], b.sample(8, 4)["count"])


def test_rejects_changed_keys():
    replay = Replay(5)
    replay.add({"x": 1.0, "y": 2.0})
    with pytest.raises(KeyError):
        replay.add({"x": 1.0})
