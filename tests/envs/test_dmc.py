"""Tests for the DeepMind Control suite adapter: spaces, episode flags, action repeat, pixels, seeding, errors.

Each test takes a few steps (a render costs ~30 ms on a CPU), so the file stays fast on a busy machine.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from gymnasium import spaces

from worldmodels.envs.wrappers import default_mujoco_gl, rendering_error

default_mujoco_gl()  # MuJoCo picks its GL backend at first import, so this must precede importing dm_control here
try:
    from dm_control import suite
    from dm_control.mujoco import engine
except ImportError:  # the tests that build a task skip (and fail under CI, see test_dm_control_is_installed_under_ci)
    suite = engine = None
needs_dmc = pytest.mark.skipif(suite is None, reason="dm-control is not installed: pip install -e '.[dmc]'")

from tests.envtools import assert_same_trace, rollout
from worldmodels import envs
from worldmodels.envs.dmc import KeptCameras, episode_flags, make_dmc, split_task


@pytest.fixture
def built():
    """Closes every env a test builds, so GL contexts are freed before the interpreter exits."""
    made = []

    def build(task: str, **options):
        env = make_dmc(task, **options)
        made.append(env)
        return env

    yield build
    for env in made:
        env.close()


# ---- spaces and contract ---------------------------------------------------------------------------------


@needs_dmc
@pytest.mark.parametrize("task, state_dim, action_dim", [("walker-walk", 24, 6), ("cartpole-swingup", 5, 1)])
def test_proprio_spaces(built, task, state_dim, action_dim):
    env = built(task)
    assert list(env.observation_space.spaces) == ["state"]
    assert env.observation_space["state"] == spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    assert env.action_space == spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    observation, info = env.reset(seed=0)
    assert observation["state"].dtype == np.float32 and observation["state"].shape == (state_dim,) and info == {}
    observation, reward, terminated, truncated, info = env.step(np.full(action_dim, 2.0, np.float32))  # clipped to 1
    assert env.observation_space.contains(observation)
    assert isinstance(reward, float) and terminated is False and truncated is False and isinstance(info, dict)


@needs_dmc
def test_both_has_state_and_image(built):
    env = built("cartpole-swingup", obs="both", size=48)
    assert set(env.observation_space.spaces) == {"state", "image"}
    assert env.observation_space["image"] == spaces.Box(0, 255, (48, 48, 3), np.uint8)
    observation, _ = env.reset(seed=0)
    assert observation["state"].shape == (5,) and observation["image"].shape == (48, 48, 3)


@needs_dmc
def test_pixels_image(built):
    env = built("cartpole-swingup", obs="pixels")
    assert list(env.observation_space.spaces) == ["image"]
    first, _ = env.reset(seed=0)
    second = env.step(np.ones(1, np.float32))[0]
    for image in (first["image"], second["image"]):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
        assert image.min() < image.max()  # a real picture, not a blank buffer
    assert first["image"] is not second["image"]


@needs_dmc
def test_quadruped_defaults_to_camera_two(built):
    env = built("quadruped-walk", obs="pixels", size=16)
    assert env.unwrapped._camera == 2
    assert built("walker-walk", obs="pixels", size=16).unwrapped._camera == 0


@needs_dmc
@pytest.mark.parametrize("task, obs", [("walker-walk", "proprio"), ("cartpole-swingup", "pixels")])
def test_check_env_passes(built, task, obs):
    envs.check_env(built(task, obs=obs, time_limit=3), steps=7)  # time_limit makes check_env cross episode ends


@needs_dmc
def test_registered_as_suite():
    env = envs.make("dmc", "point_mass-easy", action_repeat=1)
    assert env.observation_space["state"].shape == (4,)
    env.close()


# ---- action repeat and episode ends ------------------------------------------------------------------------


@needs_dmc
def test_action_repeat_sums_rewards(built):
    repeated, single = built("walker-walk", action_repeat=2, seed=3), built("walker-walk", action_repeat=1, seed=3)
    np.testing.assert_array_equal(repeated.reset()[0]["state"], single.reset()[0]["state"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        observation, reward, _, _, _ = repeated.step(action)
        (_, first, *_), (expected, second, *_) = single.step(action), single.step(action)
        np.testing.assert_array_equal(observation["state"], expected["state"])
        assert reward == pytest.approx(first + second) and reward != 0.0


@needs_dmc
def test_time_limit_truncates(built):
    env = built("cartpole-swingup", time_limit=3)
    env.reset()
    assert [env.step(np.zeros(1, np.float32))[2:4] for _ in range(3)] == [(False, False)] * 2 + [(False, True)]


@needs_dmc
def test_dmc_limit_truncates_after_1000_control_steps(built):
    env = built("cartpole-swingup")  # action_repeat=2: 500 agent steps (cartpole's physics is cheap)
    env.reset(seed=0)
    action = np.zeros(1, np.float32)
    flags = [env.step(action)[2:4] for _ in range(500)]
    assert flags[:-1] == [(False, False)] * 499 and flags[-1] == (False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)
    env.reset()
    assert env.step(action)[2:4] == (False, False)


def time_step(last: bool, discount: float | None) -> SimpleNamespace:
    """A stand-in for dm_env's TimeStep: what episode_flags reads of it."""
    return SimpleNamespace(last=lambda: last, discount=discount)


def test_episode_flags_map_discount():
    assert episode_flags(time_step(False, None)) == (False, False)  # dm_env.restart
    assert episode_flags(time_step(False, 1.0)) == (False, False)  # dm_env.transition
    assert episode_flags(time_step(True, 0.0)) == (True, False)  # dm_env.termination: discount 0
    assert episode_flags(time_step(True, 1.0)) == (False, True)  # dm_env.truncation, the time limit: discount 1


@needs_dmc
def test_episode_flags_match_dm_env():
    import dm_env  # dm_control's own dependency

    observation = {"x": np.zeros(1)}
    assert episode_flags(dm_env.restart(observation)) == (False, False)
    assert episode_flags(dm_env.termination(1.0, observation)) == (True, False)
    assert episode_flags(dm_env.truncation(1.0, observation)) == (False, True)


def test_split_task_keeps_underscores_and_suggests_close_names():
    tasks = [("ball_in_cup", "catch"), ("walker", "walk"), ("walker", "run")]
    assert split_task("ball_in_cup-catch", tasks) == ("ball_in_cup", "catch")
    with pytest.raises(ValueError, match=r"^unknown DeepMind Control task 'walker-wlak'; did you mean 'walker-walk' or 'walker-run'\?$"):
        split_task("walker-wlak", tasks)
    with pytest.raises(ValueError, match=r"^unknown DeepMind Control task 'cheetah'; names are 'domain-task', e.g. 'walker-walk'$"):
        split_task("cheetah", tasks)


def test_dm_control_is_installed_under_ci():
    """The test command installs the dmc extra: under CI a missing dm_control fails here instead of skipping the file."""
    if suite is None and not os.environ.get("CI"):
        pytest.skip("dm-control is not installed: pip install -e '.[dmc]'")
    assert suite is not None, "dm-control is not installed although CI is set: the test command installs '.[dmc]'"


# ---- determinism -----------------------------------------------------------------------------------------


@needs_dmc
def test_seeded_envs_are_identical(built):
    first, second = built("walker-walk", seed=5), built("walker-walk", seed=5)
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1, 1, 6).astype(np.float32) for _ in range(4)]
    trace_a, trace_b = rollout(first, actions), rollout(second, actions)
    assert_same_trace(trace_a, trace_b)
    other = built("walker-walk", seed=6)
    assert not np.array_equal(other.reset()[0]["state"], trace_a[0])
    # A later seeded reset restarts the same random stream.
    np.testing.assert_array_equal(first.reset(seed=5)[0]["state"], trace_a[0])


@needs_dmc
def test_seeded_pixels_are_identical(built):
    first, second = built("cartpole-swingup", obs="pixels", seed=2), built("cartpole-swingup", obs="pixels", seed=2)
    np.testing.assert_array_equal(first.reset()[0]["image"], second.reset()[0]["image"])


# ---- rendering through a kept camera ----------------------------------------------------------------------


@needs_dmc
@pytest.mark.parametrize(
    "task, size, camera",
    [("cartpole-swingup", 64, 0), ("walker-walk", 64, 0), ("cartpole-swingup", 84, 1), ("walker-walk", 84, 1)],
)
def test_pixels_equal_physics_render(built, task, size, camera):
    """Every frame, across steps of a moving task and a new episode, is bit for bit what physics.render gives for the
    same state (which builds a new Camera per call); one Camera serves the env's life, and suite envs keep their
    physics object across reset()."""
    env = built(task, obs="pixels", size=size, camera=camera, seed=0, action_repeat=1)
    physics = env.unwrapped._env.physics
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(2):  # the second reset starts a new episode
        observation = env.reset()[0]
        assert env.unwrapped._env.physics is physics
        for step in range(5):
            frames.append(observation["image"])
            np.testing.assert_array_equal(frames[-1], physics.render(size, size, camera_id=camera))
            if step < 4:
                observation = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))[0]
        np.testing.assert_array_equal(env.render(), physics.render(size, size, camera_id=camera))
    assert len({frame.tobytes() for frame in frames}) > 5  # the task moves: a stale frame would show
    assert list(env.unwrapped._cameras._cameras) == [(size, size, camera)]


@needs_dmc
def test_close_frees_the_kept_camera(built):
    env = built("cartpole-swingup", obs="pixels", seed=0)
    env.reset()
    cameras = env.unwrapped._cameras
    assert len(cameras._cameras) == 1
    env.close()
    assert cameras._cameras == {} and cameras._physics is None
    env.close()  # a second close is a no-op, as before


@needs_dmc
def test_kept_cameras_follow_the_physics_object():
    """A camera is never reused across physics objects (a task that reloaded its model): it is freed and rebuilt."""
    first, second = suite.load("cartpole", "swingup"), suite.load("cartpole", "swingup")
    cameras = KeptCameras()
    try:
        camera = cameras.get(first.physics, 32, 32, 0)
        assert cameras.get(first.physics, 32, 32, 0) is camera and cameras.get(first.physics, 16, 32, 0) is not camera
        rebuilt = cameras.get(second.physics, 32, 32, 0)
        assert rebuilt is not camera and list(cameras._cameras) == [(32, 32, 0)]
        second.physics.data.qpos[:] = 0.5
        second.physics.forward()
        np.testing.assert_array_equal(rebuilt.render(), second.physics.render(32, 32, camera_id=0))
    finally:
        cameras.free()
        first.close()
        second.close()


# ---- names and errors --------------------------------------------------------------------------------------


@needs_dmc
def test_every_suite_task_parses():
    for domain, name in suite.ALL_TASKS:
        assert split_task(f"{domain}-{name}", suite.ALL_TASKS) == (domain, name)


@needs_dmc
@pytest.mark.parametrize(
    "task, domain, name",
    [("ball_in_cup-catch", "ball_in_cup", "catch"), ("point_mass-easy", "point_mass", "easy"),
     ("cartpole-balance_sparse", "cartpole", "balance_sparse"), ("finger-turn_easy", "finger", "turn_easy")],
)
def test_underscore_names_build(built, task, domain, name):
    """Names keep dm_control's underscores and split at the first dash only, so "ball_in_cup-catch" is the suite's
    own (ball_in_cup, catch): the same spaces, the same seeded first observation and the same steps as that task
    loaded directly, while the all-dash spelling is not a task (and the error names the real one)."""
    assert split_task(task, suite.ALL_TASKS) == (domain, name)
    env = built(task, action_repeat=1, seed=3)
    direct = suite.load(domain, name, task_kwargs={"random": 3})
    try:
        keys = sorted(direct.observation_spec())
        spec = direct.action_spec()

        def flat(time_step):
            return np.concatenate([np.asarray(time_step.observation[key], np.float32).ravel() for key in keys])

        first = flat(direct.reset())
        assert env.observation_space["state"].shape == first.shape
        assert env.action_space == spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        np.testing.assert_array_equal(env.reset()[0]["state"], first)
        rng = np.random.default_rng(0)
        for _ in range(3):
            action = rng.uniform(-1, 1, spec.shape).astype(np.float32)
            observation, reward, terminated, truncated, _ = env.step(action)
            time_step = direct.step(spec.minimum + (action.astype(np.float64) + 1.0) / 2.0 * (spec.maximum - spec.minimum))
            np.testing.assert_array_equal(observation["state"], flat(time_step))
            assert reward == float(time_step.reward) and (terminated, truncated) == (False, False)
    finally:
        direct.close()
    with pytest.raises(ValueError, match=f"unknown DeepMind Control task '{task.replace('_', '-')}'; did you mean.*'{task}'"):
        make_dmc(task.replace("_", "-"))


@needs_dmc
def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown DeepMind Control task 'walker-wlak'; did you mean 'walker-walk'") as info:
        make_dmc("walker-wlak")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown DeepMind Control task 'walker'"):
        make_dmc("walker")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"obs": "rgb"}, r"obs='rgb' is not supported.*'proprio', 'pixels' or 'both'"),
        ({"colour": "red"}, "unknown options for the dmc suite: colour"),
        ({"size": 0}, r"^size must be an integer >= 1, got 0$"),
        ({"camera": -2}, r"^camera must be an integer >= 0, or -1 for the domain's default, got -2$"),
        pytest.param({"obs": "pixels", "camera": 9}, "camera 9 does not exist", marks=needs_dmc),
        pytest.param({"action_repeat": 0}, "repeat", marks=needs_dmc),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        make_dmc("cartpole-swingup", **options)


def test_missing_dm_control_is_a_value_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)  # makes `from dm_control import suite` fail as if not installed
    with pytest.raises(ValueError, match=r"dm-control is not installed: pip install -e '\.\[dmc\]'"):
        make_dmc("walker-walk")


@needs_dmc
def test_render_failure_names_debian_packages(built, monkeypatch):
    env = built("cartpole-swingup", obs="pixels")

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'glGetError'\nsecond line")

    monkeypatch.setattr(engine.Camera, "render", broken)  # the env renders through a kept engine.Camera
    with pytest.raises(RuntimeError, match=r"rendering failed.*glGetError.*libegl1 libgl1-mesa-dri.*libosmesa6") as info:
        env.reset()
    assert "\n" not in str(info.value) and "second line" not in str(info.value)
    assert "\n" not in str(rendering_error(ValueError("")))
