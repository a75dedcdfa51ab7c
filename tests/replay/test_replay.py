"""Tests for worldmodels.replay.buffer.Replay: FIFO capacity, window contiguity, uniform sampling, episodes."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodels.replay.buffer import Replay


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


# -- online queue, rewritten values and their persistence (replay context) -------------------------------
def test_online_queue_serves_every_new_window_first_then_uniform():
    replay = Replay(1000, seed=8, online=5)
    fill(replay, 12)  # windows 0..4 and 5..9 are queued; steps 10, 11 wait for the next one
    assert len(replay.sample(3, 5)["count"]) == 3 and len(replay.queue) == 2  # other callers leave the queue alone
    batch, index = replay.sample_index(3, 5, online=True)
    assert batch["count"][0].tolist() == [0, 1, 2, 3, 4]
    assert batch["count"][1].tolist() == [5, 6, 7, 8, 9]
    assert np.array_equal(batch["count"], np.stack([replay.data["count"][i] for i in index]))
    assert not replay.queue
    fill(replay, 3, start=12)  # 10..14 completes the third window
    assert replay.sample(1, 5, online=True)["count"][0].tolist() == [10, 11, 12, 13, 14]


def test_online_windows_dropped_from_the_ring_are_skipped():
    replay = Replay(8, seed=9, online=4)
    fill(replay, 16)  # windows at 0, 4, 8, 12 queued; only 8.. is still stored
    batch = replay.sample(2, 4, online=True)
    assert batch["count"][0].tolist() == [8, 9, 10, 11]
    assert batch["count"][1].tolist() == [12, 13, 14, 15]


def test_update_rewrites_the_sampled_positions_only():
    replay = Replay(20, seed=10)
    fill(replay, 20)
    batch, index = replay.sample_index(2, 4)
    replay.update(index[:, 1:], {"state": np.full((2, 3, 3), -1.0, np.float32)})
    changed = {int(c) for c in replay.data["count"][(replay.data["state"] == -1.0).all(-1)]}
    assert changed == {int(c) for c in batch["count"][:, 1:].ravel()}


def test_state_file_restores_queue_and_rewritten_values_on_load(tmp_path):
    from worldmodels.replay.store import ChunkStore

    replay = Replay(100, seed=11, store=ChunkStore(tmp_path), chunk=10, online=6)
    fill(replay, 40)
    replay.sample(2, 6, online=True)  # consumes two of the six queued windows
    replay.update(np.array([[3, 4], [30, 31]]), {"state": np.full((2, 2, 3), 7.0, np.float32)})
    replay.flush()
    replay.save_state(("state",))
    fill(replay, 10, start=40)  # written after the state file: kept, with the values they were stored with
    replay.flush()
    again = Replay(100, seed=11, store=ChunkStore(tmp_path), chunk=10, online=6)
    assert again.load() == 50
    assert np.array_equal(again.data["state"][:40], replay.data["state"][:40])
    assert (again.data["state"][[3, 4, 30, 31]] == 7.0).all() and again.data["state"][40, 0] == 40
    assert list(again.queue) == [12, 18, 24, 30]  # the four windows not yet trained on when the file was saved
    assert again.since_queued == 4


def test_state_file_of_a_smaller_replay_fits_the_newest_steps(tmp_path):
    from worldmodels.replay.store import ChunkStore

    replay = Replay(100, seed=12, store=ChunkStore(tmp_path), chunk=10)
    fill(replay, 30)
    replay.data["state"][:] = -np.arange(100, dtype=np.float32)[:, None]
    replay.flush()
    replay.save_state(("state",))
    again = Replay(20, seed=12, store=ChunkStore(tmp_path), chunk=10)
    again.load()
    assert sorted(again.data["state"][:, 0].tolist()) == sorted((-np.arange(10, 30)).tolist())
