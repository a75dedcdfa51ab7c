"""Tests for the background distraction of DMC pixels (env.distract): the robot's pixels are kept exactly, the sky
and floor are replaced by a pattern that moves every step, is redrawn every episode and follows the seed.

Every env takes a few 64x64 steps of cartpole-swingup (a render costs ~40 ms on a CPU), so the file stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from worldmodels.envs.distract import Distractor, background_mask, composite
from worldmodels.envs.wrappers import default_mujoco_gl
from worldmodels.runtime.config import resume_conflict
from worldmodels.runtime.setup import CONFIG_DIR

default_mujoco_gl()  # MuJoCo picks its GL backend at first import, so this must precede importing dm_control here
pytest.importorskip("dm_control", reason="dm-control is not installed: pip install -e '.[dmc]'")

import mujoco  # dm_control's own dependency

from worldmodels.envs.dmc import make_dmc

PATTERNS = ("noise", "color")
ACTIONS = [np.array([a], np.float32) for a in (1.0, -0.5, 0.3)]


def play(distract: str, seed: int, episodes: int = 1, masks: bool = True) -> dict[str, Any]:
    """Images of `episodes` episodes of len(ACTIONS) steps; with `masks`, the cart-and-pole mask of each (from the
    segmentation render, by geom name: independent of envs.distract); render() after the last step; and the first
    image after reset(seed=seed + 1)."""
    env = make_dmc("cartpole-swingup", obs="pixels", size=64, seed=seed, distract=distract, time_limit=len(ACTIONS))
    physics = env.unwrapped._env.physics
    robot = [physics.model.name2id(name, "geom") for name in ("rail1", "rail2", "cart", "pole_1")]

    def mask() -> np.ndarray:
        segmentation = physics.render(height=64, width=64, camera_id=0, segmentation=True)
        return (segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(segmentation[..., 0], robot)

    images, robots = [], []
    try:
        for _ in range(episodes):
            images.append(env.reset()[0]["image"])
            robots += [mask()] if masks else []
            for action in ACTIONS:
                images.append(env.step(action)[0]["image"])
                robots += [mask()] if masks else []
        last = env.render()
        return {"images": images, "robot": robots, "render": last, "reseeded": env.reset(seed=seed + 1)[0]["image"]}
    finally:
        env.close()


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    return play("none", 3)


@pytest.fixture(scope="module", params=PATTERNS)
def distracted(request) -> tuple[str, dict[str, Any]]:
    return request.param, play(request.param, 3, episodes=2)


def test_robot_kept_background_replaced(plain, distracted):
    _, trace = distracted
    for t, (clean, image, robot) in enumerate(zip(plain["images"], trace["images"], plain["robot"])):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(trace["robot"][t], robot)  # the same physics: distraction only paints
        assert robot.sum() > 50  # the cart and pole are in view
        np.testing.assert_array_equal(image[robot], clean[robot])
        changed = np.any(image != clean, axis=-1)[~robot]
        assert changed.mean() > 0.9, f"step {t}: only {changed.mean():.0%} of the background was replaced"


def test_pattern_moves_and_changes_every_episode(distracted):
    kind, trace = distracted
    images, robots = trace["images"], trace["robot"]
    steps = len(ACTIONS) + 1
    for t in range(len(images) - 1):
        if t % steps == steps - 1:  # the next image starts a new episode: a new pattern altogether
            continue
        both = ~robots[t] & ~robots[t + 1]
        moved = np.any(images[t] != images[t + 1], axis=-1)[both]
        assert moved.mean() > 0.3, f"{kind}, step {t}: only {moved.mean():.0%} of the background moved"
    first, second = images[0], images[steps]  # two episodes' first frames
    background = ~robots[0] & ~robots[steps]
    assert np.abs(first.astype(int) - second.astype(int))[background].mean() > 10


def test_render_shows_what_the_agent_sees(distracted):
    _, trace = distracted
    np.testing.assert_array_equal(trace["render"], trace["images"][-1])


def test_seeded(distracted):
    kind, trace = distracted
    again = play(kind, 3, episodes=2, masks=False)  # the second episode's pattern too
    assert len(again["images"]) == len(trace["images"])
    for a, b in zip(trace["images"], again["images"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again["reseeded"], trace["reseeded"])
    assert not np.array_equal(trace["reseeded"], trace["images"][0])  # seed 4, not 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"obs": "pixels", "distract": "video"}, r"distract='video' is not supported.*'none', 'noise' or 'color'"),
        ({"obs": "proprio", "distract": "noise"}, r"distract='noise' needs pixels: set obs='pixels' or 'both'"),
        ({"distract": "color"}, r"distract='color' needs pixels"),  # proprio is the default
    ],
)
def test_bad_values(options, message):
    with pytest.raises(ValueError, match=message) as info:
        make_dmc("cartpole-swingup", **options)
    assert "\n" not in str(info.value)


def test_config_option_and_resume():
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "env" / "dmc.yaml")
    assert cfg.distract == "none"
    skip = ("suite", "id", "task", "num_envs", "vector")  # what worldmodels.runtime.setup.env_options leaves out
    options = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in skip}
    with pytest.raises(ValueError, match=r"^distract='noise' needs pixels"):  # the config's key is make_dmc's argument
        make_dmc(cfg.task, **{**options, "distract": "noise"})
    # Runs saved before env.distract existed resume without it, and only then.
    saved = OmegaConf.create({"env": {"suite": "dmc", "obs": "pixels"}})
    assert resume_conflict(saved, OmegaConf.create({"env": {"suite": "dmc", "obs": "pixels", "distract": "none"}})) is None
    assert "env.distract was 'none'" in resume_conflict(saved, OmegaConf.create({"env": {"suite": "dmc", "obs": "pixels",
                                                                                          "distract": "noise"}}))


# ---- the pieces, on hand-made arrays ---------------------------------------------------------------------


def test_composite_replaces_masked_pixels_only():
    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    background = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[0], mask[2, 3] = True, True
    out = composite(frame, mask, background)
    assert out.dtype == np.uint8 and out.shape == frame.shape and out is not frame
    np.testing.assert_array_equal(out[mask], background[mask])
    np.testing.assert_array_equal(out[~mask], frame[~mask])
    assert frame[0, 0, 0] == 0  # the input is left alone


def test_background_mask_is_sky_and_planes():
    geom, site = int(mujoco.mjtObj.mjOBJ_GEOM), int(mujoco.mjtObj.mjOBJ_SITE)
    planes = np.array([True, False, False])  # geom 0 is the floor
    ids = np.array([[-1, 0, 1], [2, 0, -1]])
    types = np.array([[-1, geom, geom], [geom, site, -1]])  # (1, 1): site 0, not the floor geom 0
    mask = background_mask(np.stack([ids, types], -1), planes)
    np.testing.assert_array_equal(mask, [[True, True, False], [False, False, True]])


@pytest.mark.parametrize("kind", PATTERNS)
def test_distractor_patterns(kind):
    first, second = Distractor(kind, 8, 12, seed=0), Distractor(kind, 8, 12, seed=0)
    first.reset(), second.reset()
    start = first.background()
    assert start.shape == (8, 12, 3) and start.dtype == np.uint8 and start.std() > 0
    assert first.background() is start  # cached until the next step: render() costs no new pattern
    first.advance(), second.advance()
    assert not np.array_equal(first.background(), start)
    np.testing.assert_array_equal(first.background(), second.background())
    with pytest.raises(ValueError, match="distract='none' is not a pattern"):
        Distractor("none", 8, 8)
