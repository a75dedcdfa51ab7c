"""Tests for the envs package: spaces, wrappers, determinism and error messages (fast, CPU-only)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from tests.envtools import assert_same_trace, rollout
from worldmodels import envs
from worldmodels.envs.dummy import make_dummy
from worldmodels.envs.gym import make_gym
from worldmodels.envs.wrappers import ActionRepeat, DictObs, NormalizeAction, TimeLimit, default_mujoco_gl

# MuJoCo picks its GL backend when first imported (its EGL backend sets PYOPENGL_PLATFORM then): both at collection,
# as test_dmc's imports do, so the pixel tests below leave the environment as they found it when this file runs alone.
default_mujoco_gl()
try:
    import mujoco  # noqa: F401
except ImportError:  # test_gym_mujoco_pixels skips
    pass

ALL_ENVS = [("gym", "CartPole-v1"), ("gym", "Pendulum-v1"), ("dummy", "discrete"), ("dummy", "continuous")]


class RecordingEnv(gymnasium.Env):
    """Tiny env that records the actions it receives and terminates after `terminate_at` steps (0: never)."""

    def __init__(self, action_space: spaces.Space, terminate_at: int = 0, observation_space: spaces.Space | None = None):
        self.action_space = action_space
        self.observation_space = observation_space or spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.terminate_at = terminate_at
        self.actions: list = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.actions = []
        return self.observation_space.sample() * 0, {}

    def step(self, action):
        self.actions.append(action)
        terminated = len(self.actions) == self.terminate_at
        return self.observation_space.sample() * 0, float(len(self.actions)), terminated, False, {}


@pytest.fixture
def registered():
    """Registers test-only Gymnasium ids and removes them afterwards, so the global registry stays clean."""
    added = []

    def register(env_id: str, **env_kwargs) -> str:
        gymnasium.register(id=env_id, entry_point=lambda: RecordingEnv(**env_kwargs))
        added.append(env_id)
        return env_id

    yield register
    for env_id in added:
        del gymnasium.registry[env_id]


# ---- spaces and contract ---------------------------------------------------------------------------------


def test_cartpole_spaces():
    env = envs.make("gym", "CartPole-v1")
    assert isinstance(env.observation_space, spaces.Dict) and list(env.observation_space.spaces) == ["state"]
    state = env.observation_space["state"]
    assert state.shape == (4,) and state.dtype == np.float32
    assert env.action_space == spaces.Discrete(2)
    observation, _ = env.reset(seed=0)
    assert observation["state"].dtype == np.float32 and observation["state"].shape == (4,)


def test_pendulum_spaces():
    env = envs.make("gym", "Pendulum-v1")
    state = env.observation_space["state"]
    assert state.shape == (3,) and state.dtype == np.float32
    assert env.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
    observation, _ = env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(np.array([0.5], np.float32))
    assert observation["state"].dtype == np.float32
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)


@pytest.mark.parametrize(
    "task, action_space", [("discrete", spaces.Discrete(3)), ("continuous", spaces.Box(-1, 1, (2,), np.float32))]
)
def test_dummy_spaces(task, action_space):
    env = envs.make("dummy", task, obs_dim=5)
    assert env.observation_space["state"] == spaces.Box(-1.0, 1.0, (5,), np.float32)
    assert env.action_space == action_space


@pytest.mark.parametrize("suite, task", ALL_ENVS)
def test_check_env_passes(suite, task):
    envs.check_env(envs.make(suite, task, time_limit=20), steps=50)  # time_limit makes check_env cross episode ends


def test_check_env_names_bad_dtype():
    env = DictObs(RecordingEnv(spaces.Discrete(2)))
    env.observation = lambda observation: {"state": np.zeros(2, np.float64)}  # wrong dtype
    with pytest.raises(AssertionError, match="'state'.*dtype float64.*float32"):
        envs.check_env(env)


def test_check_env_rejects_unnormalised_box():
    with pytest.raises(AssertionError, match=r"within \[-1, 1\]"):
        envs.check_env(DictObs(RecordingEnv(spaces.Box(-2.0, 2.0, (1,), np.float32))))


# ---- wrappers --------------------------------------------------------------------------------------------


def test_dict_obs_casts_and_passes_dict_through():
    env = DictObs(RecordingEnv(spaces.Discrete(2)), key="vec")
    assert env.observation_space["vec"].dtype == np.float32
    observation, _ = env.reset()
    assert observation["vec"].dtype == np.float32
    inner = RecordingEnv(spaces.Discrete(2), observation_space=spaces.Dict({"a": spaces.Box(0, 1, (1,), np.float32)}))
    assert DictObs(inner).observation_space is inner.observation_space


def test_normalize_action_maps_and_clips():
    inner = RecordingEnv(spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), (2,), np.float64))
    env = NormalizeAction(inner)
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    env.reset()
    for action, expected in [([-1, -1], [-2, 0]), ([1, 1], [2, 10]), ([0, 0], [0, 5]), ([5, -7], [2, 0])]:
        env.step(np.array(action, np.float32))
        np.testing.assert_allclose(inner.actions[-1], expected)
        assert inner.actions[-1].dtype == np.float64 and inner.action_space.contains(inner.actions[-1])


def test_normalize_action_discrete_passthrough_and_errors():
    inner = RecordingEnv(spaces.Discrete(3))
    env = NormalizeAction(inner)
    assert env.action_space is inner.action_space
    env.reset()
    env.step(2)
    assert inner.actions == [2]
    with pytest.raises(ValueError, match="finite"):
        NormalizeAction(RecordingEnv(spaces.Box(-np.inf, np.inf, (1,), np.float32)))
    boxed = NormalizeAction(RecordingEnv(spaces.Box(-2.0, 2.0, (1,), np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        boxed.step(np.array([np.nan]))


def test_action_repeat_sums_rewards_like_manual_loop():
    repeated = ActionRepeat(make_dummy("continuous", length=10), repeat=3)
    manual = make_dummy("continuous", length=10)
    repeated.reset()
    manual.reset()
    rng = np.random.default_rng(0)
    for _ in range(4):  # 3 + 3 + 3 + 1 inner steps: the last call is cut short by truncation at 10
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        observation, reward, terminated, truncated, _ = repeated.step(action)
        total, done = 0.0, False
        for _ in range(3):
            expected_obs, inner_reward, expected_term, expected_trunc, _ = manual.step(action)
            total += inner_reward
            if expected_term or expected_trunc:
                done = True
                break
        np.testing.assert_array_equal(observation["state"], expected_obs["state"])
        assert reward == pytest.approx(total) and (terminated, truncated) == (expected_term, expected_trunc)
    assert done and truncated  # DummyEnv raises if stepped past its end, so reaching here proves the early stop


def test_action_repeat_stops_at_termination():
    inner = RecordingEnv(spaces.Discrete(2), terminate_at=2)
    env = ActionRepeat(inner, repeat=4)
    env.reset()
    _, reward, terminated, truncated, _ = env.step(1)
    assert inner.actions == [1, 1] and reward == 1.0 + 2.0 and terminated and not truncated


def test_time_limit_truncates_and_keeps_termination_distinct():
    env = TimeLimit(make_dummy("discrete", length=100), max_steps=5)
    env.reset()
    flags = [env.step(0)[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    env.reset()  # the counter restarts
    assert env.step(0)[2:4] == (False, False)

    terminating = TimeLimit(RecordingEnv(spaces.Discrete(2), terminate_at=3), max_steps=3)
    terminating.reset()
    flags = [terminating.step(0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (True, False)]

    later = TimeLimit(RecordingEnv(spaces.Discrete(2), terminate_at=3), max_steps=10)
    later.reset()
    assert [later.step(0)[2:4] for _ in range(3)][-1] == (True, False)


def test_make_options_apply_repeat_and_limit():
    env = envs.make("dummy", "discrete", length=100, action_repeat=2, time_limit=3)
    env.reset()
    rewards = []
    for _ in range(3):
        _, reward, _, truncated, _ = env.step(0)
        rewards.append(reward)
    assert truncated and rewards == [1.0, 1.0, 0.0]  # inner t = 0,1 | 2,3 | 4,5; action 0 is rewarded when t % 3 == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda env: ActionRepeat(env, 0), "repeat"),
        (lambda env: TimeLimit(env, 0), "max_steps"),
        (lambda env: DictObs(env, key=""), "key"),
    ],
)
def test_wrapper_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_dummy())


# ---- dummy env ---------------------------------------------------------------------------------------------


def test_dummy_rewards_are_learnable_from_observation():
    env = make_dummy("discrete", length=12)
    observation, _ = env.reset()
    total, truncated, t = 0.0, False, 0
    while not truncated:
        _, reward, terminated, truncated, _ = env.step(t % 3)
        total, t = total + reward, t + 1
        assert not terminated
    assert total == 12 and t == 12

    env = make_dummy("continuous", length=6)
    observation, _ = env.reset()
    for _ in range(6):
        observation, reward, _, _, _ = env.step(0.5 * observation["state"][:2])
        assert reward == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))


def test_dummy_bad_inputs():
    with pytest.raises(ValueError, match="unknown dummy task 'foo'"):
        envs.make("dummy", "foo")
    with pytest.raises(ValueError, match="unknown options.*colour"):
        envs.make("dummy", "discrete", colour="red")
    env = make_dummy("discrete")
    env.reset()
    with pytest.raises(ValueError, match="integer in"):
        env.step(3)


# ---- determinism -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["CartPole-v1", "Pendulum-v1"])
def test_seeded_gym_envs_are_deterministic(task):
    first, second = make_gym(task, seed=7, time_limit=15), make_gym(task, seed=7, time_limit=15)
    actions = [first.action_space.sample() for _ in range(40)]
    assert all(np.array_equal(a, b) for a, b in zip(actions, [second.action_space.sample() for _ in range(40)]))
    trace_a, trace_b = rollout(first, actions), rollout(second, actions)
    assert len(trace_a) == len(trace_b) > 41  # episodes ended and reset inside the rollout
    assert_same_trace(trace_a, trace_b)
    other = make_gym(task, seed=8)
    assert not np.array_equal(other.reset()[0]["state"], make_gym(task, seed=7).reset()[0]["state"])


# ---- errors ------------------------------------------------------------------------------------------------


def test_unknown_suite():
    with pytest.raises(ValueError, match=r"unknown environment suite 'xyz'; known suites: dmc, dummy, gym"):
        envs.make("xyz", "anything")


def test_unknown_gym_id():
    with pytest.raises(ValueError, match=r"unknown Gymnasium environment id 'Foo-v0'") as info:
        envs.make("gym", "Foo-v0")
    assert "\n" not in str(info.value)


def test_gym_pixels_need_a_mujoco_task():
    with pytest.raises(ValueError, match=r"obs='pixels' needs a Gymnasium MuJoCo task.*'CartPole-v1'") as info:
        envs.make("gym", "CartPole-v1", obs="pixels")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"obs='rgb' is not supported.*'state', 'pixels' or 'both'"):
        envs.make("gym", "CartPole-v1", obs="rgb")
    with pytest.raises(ValueError, match="sets width itself"):
        envs.make("gym", "CartPole-v1", obs="pixels", width=32)


def test_gym_mujoco_pixels():
    default_mujoco_gl()  # before MuJoCo's first import, which fixes its GL backend, as make_gym does for pixels
    try:
        import gymnasium.envs.mujoco  # noqa: F401
    except ImportError as error:
        pytest.skip(f"Gymnasium's MuJoCo tasks do not import ({error}): pip install 'gymnasium[mujoco]'")
    env = make_gym("Hopper-v5", obs="pixels", time_limit=3, seed=0)
    try:
        assert env.observation_space == spaces.Dict({"image": spaces.Box(0, 255, (64, 64, 3), np.uint8)})
        observation, _ = env.reset()
        image = observation["image"]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.min() < image.max()
        assert env.step(env.action_space.sample())[0]["image"].shape == (64, 64, 3)
        envs.check_env(env, steps=4)
    finally:
        env.close()
    both = make_gym("Hopper-v5", obs="both", size=32)
    try:
        observation, _ = both.reset(seed=0)
        assert observation["state"].shape == (11,) and observation["state"].dtype == np.float32
        assert observation["image"].shape == (32, 32, 3)
    finally:
        both.close()


def test_gym_takes_images_and_refuses_those_the_cnn_cannot(registered):
    """Any Gymnasium space is taken as it is (tests/envs/test_spaces.py has every kind); an image the CNN cannot take is
    refused in one line naming the key."""
    square = registered("WorldmodelsTestImage-v0", action_space=spaces.Discrete(2),
                        observation_space=spaces.Box(0, 255, (16, 16, 3), np.uint8))
    assert envs.make("gym", square).observation_space == spaces.Dict({"image": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    atari = registered("WorldmodelsTestAtari-v0", action_space=spaces.Discrete(2),
                       observation_space=spaces.Box(0, 255, (210, 160, 3), np.uint8))
    with pytest.raises(ValueError, match=r"observation 'image' Box\(0, 255, \(210, 160, 3\), uint8\) is not supported: images "
                                         r"must be square with a power-of-two side >= 8") as info:
        envs.make("gym", atari)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "action_space, adapted",
    [
        (spaces.MultiDiscrete([2, 3]), spaces.Discrete(6)),
        (spaces.Box(-1.0, 1.0, (2, 2), np.float32), spaces.Box(-1.0, 1.0, (4,), np.float32)),
        (spaces.Discrete(3, start=1), spaces.Discrete(3)),
        (spaces.MultiBinary(2), spaces.Discrete(4)),
    ],
)
def test_gym_takes_every_action_kind(registered, action_space, adapted):
    env = envs.make("gym", registered("WorldmodelsTestAction-v0", action_space=action_space), time_limit=5)
    assert env.action_space == adapted
    envs.check_env(env, steps=10)


@pytest.mark.parametrize(
    "action_space",
    [spaces.Box(-np.inf, np.inf, (1,), np.float32), spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))],
)
def test_gym_rejects_unsupported_actions(registered, action_space):
    env_id = registered("WorldmodelsTestAction-v0", action_space=action_space)
    with pytest.raises(ValueError, match=r"action (Box|Tuple)\(.*\) is not supported") as info:
        envs.make("gym", env_id)
    assert "\n" not in str(info.value)


def test_entry_points_of_the_old_top_level_envs_package_still_load():
    """Before 0.5 the environments were a top-level `envs` package; a saved `env.entry_point=envs....` still loads."""
    from worldmodels.envs.dummy import DummyEnv
    from worldmodels.envs.load import load_object

    assert load_object("envs.dummy:DummyEnv") is DummyEnv


def test_the_configs_ship_inside_the_package():
    """The Hydra configs live in worldmodels/configs, so an installed wheel finds them from any folder."""
    from pathlib import Path

    import worldmodels
    from worldmodels.runtime.setup import CONFIG_DIR

    assert Path(CONFIG_DIR).parent == Path(worldmodels.__file__).parent
    assert (Path(CONFIG_DIR) / "config.yaml").is_file() and (Path(CONFIG_DIR) / "model" / "debug.yaml").is_file()


def test_the_contract_checks_hold_under_python_O():
    """`python -O` strips assert statements; the checker's contract checks are not asserts, so they still fire."""
    import subprocess
    import sys

    code = ("import gymnasium as gym\nfrom worldmodels.envs.check import check_env\n"
            "try:\n    check_env(gym.make('CartPole-v1'))\nexcept AssertionError as e:\n    print('caught:', e)\n")
    result = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("caught: observation space must be a Dict"), result.stdout
