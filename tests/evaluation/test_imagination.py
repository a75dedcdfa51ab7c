"""Imagination metrics against models whose errors are known: exact, and noisy with growing error."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from tests.tbtools import tb_images
from worldmodels.evaluation.imagination import imagination_gap, openloop_metrics, windows
from worldmodels.evaluation.report import build_report, write_report


def make_episodes(count: int = 3, length: int = 40, terminal_last: bool = True) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(count):
        n = length + 5 * e
        t = np.arange(n)
        ep = {
            "state": np.stack([np.sin(0.3 * t + e), np.cos(0.2 * t), 0.1 * t], 1).astype(np.float32),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "reward": (np.sin(0.5 * t) + e).astype(np.float32),
            "is_first": t == 0,
            "is_last": t == n - 1,
            "is_terminal": (t == n - 1) & terminal_last,
        }
        episodes.append(ep)
    return episodes


class Oracle:
    """Predicts exactly what happened: zero error by construction."""

    obs_keys: ClassVar[list[str]] = ["state"]

    def open_loop(self, window, context):
        out = {"state": window["state"][:, context:].copy(), "reward": window["reward"][:, context:].astype(np.float64)}
        out["cont"] = 1.0 - window["is_terminal"][:, context:].astype(np.float64)
        return out

    def imagine(self, window, context, horizon):
        return window["reward"][:, context : context + horizon].sum(1), window["action"][:, context - 1 : context - 1 + horizon]


class Drifting(Oracle):
    """Errors that accumulate like a random walk: larger the further it predicts."""

    def __init__(self, scale: float = 0.1):
        self.rng = np.random.default_rng(1)
        self.scale = scale

    def open_loop(self, window, context):
        out = super().open_loop(window, context)
        steps = out["state"].shape[1]
        drift = np.cumsum(self.rng.normal(0, self.scale, (len(out["state"]), steps, 3)), 1)
        out["state"] = out["state"] + drift
        out["reward"] = out["reward"] + drift[..., 0]
        return out

    def imagine(self, window, context, horizon):
        imagined, actions = super().imagine(window, context, horizon)
        return imagined + 1.0, actions


def test_windows_stay_inside_episodes_and_start_fresh():
    eps = make_episodes()
    win = windows(eps, context=5, horizon=10, max_starts=1000)
    assert win["state"].shape[1:] == (15, 3)
    assert win["is_first"][:, 0].all() and not win["is_first"][:, 1:].any()
    # 36 + 41 + 46 valid start points (lengths 40, 45, 50 minus 14).
    assert len(win["reward"]) == (40 - 14) + (45 - 14) + (50 - 14)
    assert len(windows(eps, 5, 10, max_starts=7)["reward"]) == 7


@pytest.mark.parametrize(("context", "horizon", "words"), [(0, 10, "context=0"), (5, 0, "horizon=0"), (5, 60, "longer than")])
def test_windows_reject_out_of_range(context, horizon, words):
    with pytest.raises(ValueError, match=words):
        windows(make_episodes(), context, horizon, 100)


def test_exact_model_has_zero_error():
    win = windows(make_episodes(), 5, 20, 500)
    metrics = openloop_metrics(Oracle(), win, 5)
    assert metrics["obs_mse/state"].shape == (20,)
    for name in ("obs_mse/state", "reward_mse", "reward_mae"):
        np.testing.assert_array_equal(metrics[name], 0.0)
    np.testing.assert_array_equal(metrics["cont_accuracy"], 1.0)
    gap = imagination_gap(Oracle(), win, 5)
    assert gap["gap"] == 0.0 and gap["abs_gap"] == 0.0 and gap["imagined_return"] == gap["real_return"]


def test_drifting_model_errs_more_at_longer_horizons():
    win = windows(make_episodes(), 5, 30, 500)
    metrics = openloop_metrics(Drifting(), win, 5)
    mse = metrics["obs_mse/state"]
    assert mse[0] > 0
    assert mse[-1] > 10 * mse[0]
    assert np.mean(np.diff(mse) > 0) > 0.8  # grows almost every step
    assert metrics["reward_mse"][-1] > metrics["reward_mse"][0]
    assert imagination_gap(Drifting(), win, 5)["gap"] == pytest.approx(1.0)


def test_report_files_are_complete_and_readable(tmp_path):
    import matplotlib.image

    report = build_report(Oracle(), make_episodes(), context=5, horizon=12, max_starts=64)
    files = write_report(report, tmp_path, tmp_path / "tb", step=7)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("openloop/obs_mse/state", "openloop/obs_mse/state_mean", "openloop/obs_mse/state_h1", "openloop/obs_mse/state_h12",
                "openloop/reward_mse", "openloop/reward_mae_mean", "openloop/cont_accuracy_mean", "imagination/imagined_return",
                "imagination/real_return", "imagination/gap", "windows", "context", "horizon"):
        assert key in summary, key
    assert len(summary["openloop/obs_mse/state"]) == 12
    for name in ("openloop_error.png", "openloop_trajectories.png", "reward.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
    assert set(files) >= {tmp_path / "summary.json", tmp_path / "reward.png"}
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


class ImageOracle:
    """Exact on the image key, off by a known constant of 51 pixel values (0.2) on a second one."""

    obs_keys: ClassVar[list[str]] = ["image", "noisy"]

    def open_loop(self, window, context):
        out = {"image": window["image"][:, context:].astype(np.float64)}
        out["noisy"] = np.clip(window["noisy"][:, context:].astype(np.float64) + 51, 0, 255)
        out["reward"] = window["reward"][:, context:].astype(np.float64)
        out["cont"] = np.ones_like(out["reward"])
        return out


def image_episode(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        "noisy": np.zeros((n, 8, 8, 3), np.uint8),
        "action": np.zeros((n, 1), np.float32),
        "reward": np.zeros(n, np.float32),
        "is_first": np.arange(n) == 0,
        "is_last": np.arange(n) == n - 1,
        "is_terminal": np.zeros(n, bool),
    }


def test_image_keys_get_mse_in_unit_range_and_psnr():
    ep = image_episode(30)
    metrics = openloop_metrics(ImageOracle(), windows([ep], 3, 7, 100), 3)
    np.testing.assert_array_equal(metrics["obs_mse/image"], 0.0)
    np.testing.assert_allclose(metrics["psnr/image"], 100.0)
    np.testing.assert_allclose(metrics["obs_mse/noisy"], 0.04)
    np.testing.assert_allclose(metrics["psnr/noisy"], 10 * np.log10(1 / 0.04))


def test_image_report_writes_a_truth_prediction_error_gif(tmp_path):
    from PIL import Image

    ep = image_episode(20)

    class Oracle(ImageOracle):
        def imagine(self, window, context, horizon):
            return np.zeros(len(window["reward"])), np.zeros((len(window["reward"]), horizon, 1))

    report = build_report(Oracle(), [ep], context=4, horizon=6, max_starts=10)
    write_report(report, tmp_path, tb_dir=tmp_path / "tb", step=3)
    gif = Image.open(tmp_path / "openloop_image.gif")
    assert gif.n_frames == 6  # one frame per predicted step
    assert gif.size == (2 * 8 * 3, 2 * 8)  # truth | prediction | error, upscaled twice
    assert not (tmp_path / "openloop_trajectories.png").exists()  # no vector keys to plot
    logged = tb_images(tmp_path / "tb")["report/openloop_image"]  # the same GIF, animated in TensorBoard
    assert [im.step for im in logged] == [3]
    assert logged[0].encoded_image_string == (tmp_path / "openloop_image.gif").read_bytes()


class RandomAgent:
    def __init__(self, dim: int):
        self.rng = np.random.default_rng(0)
        self.dim = dim

    def policy(self, obs, carry, mode="sample"):
        import torch

        return torch.as_tensor(self.rng.uniform(-1, 1, (len(obs["is_first"]), self.dim)), dtype=torch.float32), carry

    def env_action(self, action):
        return action.clamp(-1, 1).numpy()


def test_imagined_actions_are_replayed_from_the_recorded_simulator_state():
    """A model that imagines exactly what was recorded: replaying its actions from the recorded MuJoCo
    state must give back the recorded return, so the replayed gap is zero."""
    from worldmodels import envs
    from worldmodels.runtime.driver import Driver

    env = envs.make("dmc", "cartpole-swingup", seed=0, time_limit=40)
    episodes, _ = Driver(env, RandomAgent(1), action_repeat=2).record(2, sim_state=True)
    assert "sim_state" in episodes[0] and episodes[0]["sim_state"].shape[0] == len(episodes[0]["reward"])
    window = windows(episodes, context=5, horizon=10, max_starts=8)
    replay_env = envs.make("dmc", "cartpole-swingup", seed=1, time_limit=40)
    gap = imagination_gap(Oracle(), window, 5, env=replay_env, replays=8)
    assert gap["replayed_windows"] == 8
    assert gap["replayed_real_return"] == pytest.approx(gap["replayed_imagined_return"], abs=1e-9)
    assert gap["replayed_gap"] == pytest.approx(0.0, abs=1e-9)
    # An environment without simulator state (classic control) falls back to the recorded rollout only.
    plain = envs.make("gym", "Pendulum-v1", seed=0)
    plain_eps, _ = Driver(plain, RandomAgent(1)).record(1, sim_state=True)
    assert "sim_state" not in plain_eps[0]
