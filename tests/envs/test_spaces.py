"""Any Gymnasium space in the agent's form (envs.spaces): observation leaves by shape and dtype, nested and goal Dicts,
key selection, every action space kind, and one-line refusals naming the key and the space (fast, CPU-only)."""

from __future__ import annotations

import itertools

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from tests.tiny import TINY_AGENT, TINY_MODEL
from worldmodels import envs
from worldmodels.agent.agent import Agent, action_spec, obs_shapes
from worldmodels.envs.spaces import FlatAction, FlatObservation, UnsupportedSpace, adapt

IMAGE = spaces.Box(0, 255, (8, 8, 3), np.uint8)


class SpaceEnv(gymnasium.Env):
    """Returns seeded samples of any observation space and records the actions it gets."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space | None = None, length: int = 5):
        self.observation_space = observation_space
        self.action_space = action_space or spaces.Discrete(2)
        self.length, self.actions = length, []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        self.last = self.observation_space.sample()
        return self.last, {}

    def step(self, action):
        assert self.action_space.contains(action), f"{action!r} is not in {self.action_space}"
        self.actions.append(action)
        self.t += 1
        self.last = self.observation_space.sample()
        return self.last, 0.5, False, self.t >= self.length, {}


@pytest.fixture
def registered():
    """Registers test-only Gymnasium ids and removes them afterwards, so the global registry stays clean."""
    added = []

    def register(env_id: str, observation_space: spaces.Space, action_space: spaces.Space | None = None) -> str:
        gymnasium.register(id=env_id, entry_point=lambda: SpaceEnv(observation_space, action_space))
        added.append(env_id)
        return env_id

    yield register
    for env_id in added:
        del gymnasium.registry[env_id]


def flat(observation_space: spaces.Space, **options) -> FlatObservation:
    return FlatObservation(SpaceEnv(observation_space), **options)


# ---- observations ------------------------------------------------------------------------------------------------


def test_each_leaf_kind_becomes_a_vector_or_an_image():
    env = flat(spaces.Dict({
        "matrix": spaces.Box(-2.0, 2.0, (2, 3), np.float64),
        "scalar": spaces.Box(0, 10, (), np.int32),
        "hwc": IMAGE,
        "chw": spaces.Box(0, 255, (3, 16, 16), np.uint8),
        "mask": spaces.Box(0, 255, (4, 5), np.uint8),  # a 2-D uint8 array is no image: flattened
        "mode": spaces.Discrete(3, start=1),
        "grid": spaces.MultiDiscrete([2, 3]),
        "bits": spaces.MultiBinary([2, 2]),
    }))
    space = env.observation_space
    expected = {"matrix": (6,), "scalar": (1,), "hwc": (8, 8, 3), "chw": (16, 16, 3), "mask": (20,), "mode": (3,),
                "grid": (5,), "bits": (4,)}
    assert {k: v.shape for k, v in space.spaces.items()} == expected
    assert {k for k, v in space.spaces.items() if v.dtype == np.uint8} == {"hwc", "chw"}
    assert space["matrix"].low.tolist() == [-2.0] * 6
    raw, _ = env.env.reset(seed=0)
    observation = env.observation(raw)
    assert space.contains(observation)
    np.testing.assert_array_equal(observation["matrix"], raw["matrix"].reshape(-1).astype(np.float32))
    np.testing.assert_array_equal(observation["chw"], raw["chw"].transpose(1, 2, 0))
    assert observation["chw"].flags.c_contiguous
    assert observation["mode"].tolist() == np.eye(3)[raw["mode"] - 1].tolist()
    grid = np.concatenate([np.eye(2)[raw["grid"][0]], np.eye(3)[raw["grid"][1]]])
    assert observation["grid"].tolist() == grid.tolist()
    assert observation["bits"].tolist() == raw["bits"].reshape(-1).tolist()
    assert obs_shapes(space) == expected  # the agent takes it as it is
    envs.check_env(env, steps=8)


def test_nested_dicts_and_tuples_are_named_by_path():
    env = flat(spaces.Dict({
        "arm": spaces.Dict({"joints": spaces.Box(-1, 1, (2,)), "camera": IMAGE}),
        "goal": spaces.Tuple((spaces.Box(-1, 1, (3,)), spaces.Discrete(4))),
        "v1.2": spaces.Box(-1, 1, (1,)),
    }))
    assert sorted(env.observation_space.spaces) == ["arm/camera", "arm/joints", "goal/0", "goal/1", "v1_2"]
    raw, _ = env.env.reset(seed=1)
    observation = env.observation(raw)
    np.testing.assert_array_equal(observation["arm/camera"], raw["arm"]["camera"])
    np.testing.assert_array_equal(observation["goal/0"], raw["goal"][0])
    envs.check_env(env, steps=8)


@pytest.mark.parametrize(
    "space, names",
    [
        (spaces.Box(-1, 1, (3,)), ["state"]),
        (spaces.Discrete(5), ["state"]),
        (IMAGE, ["image"]),
        (spaces.Tuple((spaces.Discrete(32), spaces.Discrete(11), spaces.Discrete(2))), ["0", "1", "2"]),
    ],
)
def test_top_level_leaves(space, names):
    assert list(flat(space).observation_space.spaces) == names


def test_goal_conditioned_dict_is_ordinary_keys():
    goal = spaces.Box(-1.0, 1.0, (3,), np.float64)
    env = flat(spaces.Dict({"observation": spaces.Box(-5, 5, (10,), np.float64), "achieved_goal": goal, "desired_goal": goal}))
    assert {k: v.shape for k, v in env.observation_space.spaces.items()} == {
        "achieved_goal": (3,), "desired_goal": (3,), "observation": (10,)}
    envs.check_env(env, steps=8)


@pytest.mark.parametrize(
    "keys, exclude, kept",
    [
        (".*", "", ["arm/camera", "arm/joints", "target"]),
        ("arm/joints|target", "", ["arm/joints", "target"]),
        (".*", ".*camera", ["arm/joints", "target"]),
        ("arm/.*", "arm/camera", ["arm/joints"]),
        ("joints", "", None),  # matched against the whole name: 'joints' is not 'arm/joints'
    ],
)
def test_keys_are_selected_and_excluded_by_regex(keys, exclude, kept):
    space = spaces.Dict({"arm": spaces.Dict({"joints": spaces.Box(-1, 1, (2,)), "camera": IMAGE}), "target": spaces.Box(-1, 1, (2,))})
    if kept is None:
        with pytest.raises(UnsupportedSpace, match=r"no observation key is left: keys='joints'.*arm/camera, arm/joints, target"):
            flat(space, keys=keys, exclude=exclude)
        return
    assert sorted(flat(space, keys=keys, exclude=exclude).observation_space.spaces) == kept


def test_bad_regex_is_one_line():
    with pytest.raises(ValueError, match=r"exclude='\(' is not a valid regular expression") as info:
        flat(spaces.Box(-1, 1, (2,)), exclude="(")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "space, message",
    [
        (spaces.Dict({"ok": spaces.Box(-1, 1, (2,)), "note": spaces.Text(8)}),
         (r"observation 'note' Text\(1, 8, charset=.*\) is not supported: a Text space has no fixed-size array form: give "
          r"it one in the env \(e.g. a Box of ids or features\); or drop it with env.exclude=note")),
        (spaces.Dict({"ok": spaces.Box(-1, 1, (2,)), "graph": spaces.Graph(spaces.Box(0, 1, (2,)), None)}),
         r"observation 'graph' Graph\(.*\) is not supported: a Graph space"),
        (spaces.Dict({"ok": spaces.Box(-1, 1, (2,)), "items": spaces.Sequence(spaces.Discrete(3))}),
         r"observation 'items' Sequence\(.*\) is not supported: a Sequence space"),
        (spaces.Dict({"cam": spaces.Box(0, 255, (210, 160, 3), np.uint8)}),
         r"observation 'cam' Box\(0, 255, \(210, 160, 3\), uint8\) is not supported: images must be square with a power-of-two"),
        (spaces.Dict({"reward": spaces.Box(-1, 1, (1,))}), r"observation 'reward' .* is a key every stored step has"),
        (spaces.Dict({"a.b": spaces.Box(-1, 1, (1,)), "a_b": spaces.Box(-1, 1, (1,))}), r"two leaves are both named 'a_b'"),
    ],
)
def test_unsupported_observations_are_refused_in_one_line(space, message):
    with pytest.raises(UnsupportedSpace, match=message) as info:
        flat(space)
    assert "\n" not in str(info.value)


def test_unsupported_keys_can_be_excluded():
    space = spaces.Dict({"ok": spaces.Box(-1, 1, (2,)), "note": spaces.Text(8), "cam": spaces.Box(0, 255, (210, 160, 3), np.uint8)})
    assert list(flat(space, exclude="note|cam").observation_space.spaces) == ["ok"]


# ---- actions -----------------------------------------------------------------------------------------------------


def acting(action_space: spaces.Space, **options) -> tuple[FlatAction, SpaceEnv]:
    inner = SpaceEnv(spaces.Box(-1, 1, (1,)), action_space, length=10**6)
    env = FlatAction(inner, **options)
    env.reset(seed=0)
    return env, inner


def test_discrete_action_with_a_start():
    env, inner = acting(spaces.Discrete(3, start=-1))
    assert env.action_space == spaces.Discrete(3)
    for action in (0, np.int64(2), np.array(1)):
        env.step(action)
    assert inner.actions == [-1, 1, 0]
    with pytest.raises(ValueError, match=r"integer in \[0, 3\)"):
        env.step(3)


def test_box_actions_of_any_shape_are_flat_and_rescaled():
    env, inner = acting(spaces.Box(np.array([[-2.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 10.0], [1.0, 3.0]]), (2, 2), np.float64))
    assert env.action_space == spaces.Box(-1.0, 1.0, (4,), np.float32)
    env.step(np.array([-1.0, 1.0, 0.0, 5.0], np.float32))  # out of range is clipped
    np.testing.assert_allclose(inner.actions[-1], [[-2.0, 10.0], [0.5, 3.0]])
    assert inner.actions[-1].dtype == np.float64
    integers, inner = acting(spaces.Box(0, 4, (2,), np.int64))
    integers.step(np.array([-1.0, 0.1], np.float32))
    assert inner.actions[-1].tolist() == [0, 2] and inner.actions[-1].dtype == np.int64


def test_small_multidiscrete_is_one_discrete_over_every_combination():
    space = spaces.MultiDiscrete([2, 3], start=[0, 1])
    env, inner = acting(space)
    assert env.action_space == spaces.Discrete(6)
    for index in range(6):
        env.step(index)
    assert sorted(map(tuple, inner.actions)) == sorted(itertools.product([0, 1], [1, 2, 3]))  # a bijection


def test_small_multibinary_is_one_discrete_over_every_combination():
    env, inner = acting(spaces.MultiBinary(3))
    assert env.action_space == spaces.Discrete(8)
    for index in range(8):
        env.step(index)
    assert sorted(map(tuple, inner.actions)) == sorted(itertools.product([0, 1], repeat=3))


def test_large_multidiscrete_and_multibinary_are_bucketed_boxes():
    env, inner = acting(spaces.MultiDiscrete([3, 10]), joint_actions=16)
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    for action, expected in [([-1.0, -1.0], [0, 0]), ([1.0, 1.0], [2, 9]), ([-0.34, 0.05], [0, 5]), ([0.0, 7.0], [1, 9])]:
        env.step(np.array(action, np.float32))
        assert inner.actions[-1].tolist() == expected
    binary, inner = acting(spaces.MultiBinary(3), joint_actions=0)
    assert binary.action_space == spaces.Box(-1.0, 1.0, (3,), np.float32)
    binary.step(np.array([-0.5, 0.5, 0.0], np.float32))
    assert inner.actions[-1].tolist() == [0, 1, 1]  # on from 0 up


@pytest.mark.parametrize(
    "space, message",
    [
        (spaces.Box(-np.inf, np.inf, (2,), np.float32), r"action Box\(-inf, inf, \(2,\), float32\) is not supported: .*finite low"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), r"action Tuple\(Discrete\(2\), Discrete\(3\)\) is not supported"),
        (spaces.Text(5), r"action Text\(.*\) is not supported"),
    ],
)
def test_unsupported_actions_are_refused_in_one_line(space, message):
    with pytest.raises(UnsupportedSpace, match=message) as info:
        acting(space)
    assert "\n" not in str(info.value)


# ---- through the gym suite, and into the agent ---------------------------------------------------------------------


def test_gym_suite_takes_a_dict_observation_env(registered):
    env_id = registered("WorldmodelsTestDict-v0", spaces.Dict({
        "arm": spaces.Dict({"joints": spaces.Box(-1, 1, (4,), np.float64), "camera": spaces.Box(0, 255, (3, 8, 8), np.uint8)}),
        "target": spaces.Box(-1, 1, (2,)),
    }), spaces.MultiDiscrete([3, 3]))
    env = envs.make("gym", env_id, time_limit=4, seed=0)
    assert sorted(env.observation_space.spaces) == ["arm/camera", "arm/joints", "target"]
    assert env.action_space == spaces.Discrete(9)
    envs.check_env(env, steps=10)
    selected = envs.make("gym", env_id, keys="arm/.*", exclude=".*camera")
    assert list(selected.observation_space.spaces) == ["arm/joints"]


def test_gym_suite_refuses_in_one_line(registered):
    env_id = registered("WorldmodelsTestText-v0", spaces.Dict({"note": spaces.Text(4)}))
    with pytest.raises(ValueError, match=r"observation 'note' Text\(.*\) is not supported") as info:
        envs.make("gym", env_id)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task, keys", [("Blackjack-v1", ["0", "1", "2"]), ("FrozenLake-v1", ["state"])])
def test_gymnasium_discrete_observation_tasks(task, keys):
    env = envs.make("gym", task, time_limit=10, seed=0)
    assert list(env.observation_space.spaces) == keys
    envs.check_env(env, steps=20)


def test_agent_models_an_adapted_nested_env_unchanged():
    space = spaces.Dict({"arm": spaces.Dict({"joints": spaces.Box(-1, 1, (3,)), "camera": spaces.Box(0, 255, (3, 8, 8), np.uint8)}),
                         "mode": spaces.Discrete(2)})
    env = adapt(SpaceEnv(space, spaces.MultiBinary(2)))
    assert action_spec(env.action_space) == (4, True)
    torch.manual_seed(0)
    agent = Agent(env.observation_space, env.action_space, TINY_MODEL, TINY_AGENT)
    observation, _ = env.reset(seed=0)
    batch = {k: v[None] for k, v in observation.items()}
    batch.update(is_first=np.array([True]))
    with torch.no_grad():
        action, _ = agent.policy(batch, None)
    env.step(agent.env_action(action)[0])
